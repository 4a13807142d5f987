//! A private PostgreSQL cluster for the test process, used when
//! `CORDON_TEST_DATABASE_URL` is not set.
//!
//! Started lazily by the first PostgreSQL test and shared by all the others: `initdb` into
//! a temporary directory (trust authentication, user `postgres`), then `pg_ctl start` on a
//! free port of 127.0.0.1 with its socket in the same directory. `initdb` refuses to run
//! as root, so as root both run as the `postgres` user through `runuser`.
//!
//! Clean-up: statics are never dropped, so the cluster cannot stop itself when the tests
//! end. Instead a small watchdog shell, started in a process group of its own, blocks
//! reading a pipe whose only writer is this process. When the process ends, however it
//! ends (normal exit, panic, `SIGKILL`), the pipe closes and the watchdog stops the
//! server (`pg_ctl stop -m immediate`) and deletes the directory.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The account the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// How many times to try another port if the server cannot start on the chosen one
/// (another process may take a free port between the probe and the start).
const START_ATTEMPTS: usize = 3;

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

#[derive(Debug)]
struct Cluster {
    admin_url: String,
    /// Never read: holding it keeps the watchdog's stdin open until the process ends.
    _watchdog: Child,
}

/// The admin URL of the process's cluster, starting it on first use. Blocks while it
/// starts (a second or two); every caller gets the same outcome, failure included.
pub(crate) fn shared() -> Result<&'static str, &'static str> {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => Ok(&cluster.admin_url),
        Err(why) => Err(why),
    }
}

fn start() -> Result<Cluster, String> {
    let (initdb, pg_ctl) = find_binaries().ok_or_else(|| {
        "No CORDON_TEST_DATABASE_URL, and no initdb and pg_ctl on PATH or in \
         /usr/lib/postgresql/*/bin."
            .to_owned()
    })?;
    let as_root = running_as_root();
    let dir = tempfile::Builder::new()
        .prefix("cordon-test-pg-")
        .tempdir()
        .map_err(|error| format!("cannot create a temporary directory: {error}"))?
        .keep();
    let data = dir.join("data");
    let log = dir.join("server.log");
    if as_root {
        run(Command::new("chown").arg(SERVER_USER).arg(&dir)).map_err(|error| {
            format!(
                "initdb refuses to run as root and the tests run as root, but the directory \
                 cannot be handed to the `{SERVER_USER}` user: {error}"
            )
        })?;
    }
    // From here on the watchdog owns the directory: it deletes it when this process ends,
    // or as soon as this function fails (the returned error drops the `Child`).
    let mut stop = server_command(as_root, &pg_ctl)?;
    stop.args(["stop", "-m", "immediate", "-D"]).arg(&data);
    let watchdog = spawn_watchdog(&dir, &stop)?;

    run(server_command(as_root, &initdb)?
        .args([
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ])
        .arg("-D")
        .arg(&data))
    .map_err(|error| format!("initdb failed: {error}"))?;

    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.display()
        );
        let started = run(server_command(as_root, &pg_ctl)?
            .args(["start", "-w", "-t", "60", "-o", &options, "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log));
        match started {
            Ok(()) => {
                return Ok(Cluster {
                    admin_url: format!("postgres://{SERVER_USER}@127.0.0.1:{port}/postgres"),
                    _watchdog: watchdog,
                });
            }
            Err(error) => failures.push(format!("port {port}: {error}")),
        }
    }
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    Err(format!(
        "pg_ctl could not start the test cluster in {}:\n{}\nserver log:\n{server_log}",
        dir.display(),
        failures.join("\n")
    ))
}

/// `initdb` and `pg_ctl` from the same directory: the first on `PATH` that has both, else
/// the newest Debian-style `/usr/lib/postgresql/<version>/bin`.
fn find_binaries() -> Option<(PathBuf, PathBuf)> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    on_path
        .into_iter()
        .chain(versioned.into_iter().map(|(_, dir)| dir))
        .find_map(|dir| {
            let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
            (initdb.is_file() && pg_ctl.is_file()).then_some((initdb, pg_ctl))
        })
}

/// The process's effective user is root. `/proc/self` belongs to the effective user; `id
/// -u` answers where there is no procfs.
fn running_as_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(metadata) => metadata.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| output.stdout.trim_ascii() == b"0"),
    }
}

/// A command running `program`, through `runuser` when the tests run as root.
fn server_command(as_root: bool, program: &Path) -> Result<Command, String> {
    if !as_root {
        return Ok(Command::new(program));
    }
    let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| candidate.is_file())
        .ok_or("initdb refuses to run as root, and there is no runuser to switch users")?;
    let mut command = Command::new(runuser);
    command.args(["-u", SERVER_USER, "--"]).arg(program);
    Ok(command)
}

/// Starts the shell that waits for this process to end, then runs `stop` and deletes `dir`.
fn spawn_watchdog(dir: &Path, stop: &Command) -> Result<Child, String> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf -- "$CORDON_TEST_PG_DIR""#)
        .arg("cordon-test-pg-watchdog")
        .arg(stop.get_program())
        .args(stop.get_args())
        .env("CORDON_TEST_PG_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of the test's process group, so that a Ctrl-C aimed at the tests does not
        // kill the watchdog before it has cleaned up.
        .process_group(0);
    command
        .spawn()
        .map_err(|error| format!("cannot start the clean-up watchdog: {error}"))
}

/// Runs `command` to completion; its output is the error if it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {:?}: {error}", command.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{:?} exited with {}:\n{}{}",
        command.get_program(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}
