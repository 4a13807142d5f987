//! The process exit codes of `cordon`, documented in docs/cli.md.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// An unexpected failure: a 5xx from the server, a local I/O error, a bug.
pub const INTERNAL: u8 = 1;
/// Bad command-line usage (clap's own code).
#[allow(dead_code, reason = "documents clap's exit code alongside ours")]
pub const USAGE: u8 = 2;
/// The server could not be reached.
pub const UNREACHABLE: u8 = 3;
/// Authentication or authorization failed (401, 403).
pub const DENIED: u8 = 4;
/// The resource does not exist or is not visible to the caller (404).
pub const NOT_FOUND: u8 = 5;
/// The request was refused: invalid input, illegal transition, conflict (400, 409, 413, 415, 422).
pub const REFUSED: u8 = 6;

pub fn code(value: u8) -> ExitCode {
    ExitCode::from(value)
}

/// The exit code for an HTTP error status.
pub fn for_status(status: u16) -> u8 {
    match status {
        401 | 403 => DENIED,
        404 => NOT_FOUND,
        400..=499 => REFUSED,
        _ => INTERNAL,
    }
}
