//! `cordon-sandbox`: the sandbox launcher on its own. `cordon serve` runs it (when it sits
//! next to the `cordon` executable) as `cordon-sandbox sandbox-launch DIR` to build a
//! sandbox; it is the same code as `cordon sandbox-launch`, in a binary small enough
//! that starting it and keeping its forked init resident cost little.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(command), Some(dir)) if command == "sandbox-launch" => {
            let code = cordon_sandbox::launch::main(std::path::Path::new(&dir));
            u8::try_from(code).unwrap_or(1).into()
        }
        _ => {
            eprintln!("usage: cordon-sandbox sandbox-launch DIR (run by `cordon serve`)");
            ExitCode::from(2)
        }
    }
}
