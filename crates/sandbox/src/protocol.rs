//! The control protocol between the server and a sandbox's init process.
//!
//! One `SOCK_SEQPACKET` unix socket per sandbox (`<state-dir>/ctl.sock`, reachable only by
//! the server's user). Each packet is one JSON message; file descriptors (the exec's
//! stdin, stdout and stderr pipes) travel with a request as `SCM_RIGHTS`. A connection
//! carries one conversation: a foreground exec keeps its connection until the process
//! exits, and init kills the exec if the server hangs up first.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// Largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 256 << 10;
/// Protocol revision; a server refuses an init that speaks another one.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and identity check, sent on every (re)attach.
    Hello,
    /// Runs a process. Foreground execs carry three fds (stdin, stdout, stderr); a
    /// background exec carries none: init gives it /dev/null and a log file in /tmp.
    Exec(ExecSpec),
    /// Sends `signal` to a process's group.
    Signal { pid: i32, signal: i32 },
    /// The processes init started and has not forgotten.
    List,
    /// The egress listeners init made on the sandbox's loopback; the reply carries them
    /// as fds in the order of [`NETWORK_LISTENERS`].
    Network,
}

/// The listeners a sandbox with egress gets, in the order init sends them: (kind, port).
pub const NETWORK_LISTENERS: [(&str, u16); 4] =
    [("proxy", 3128), ("http", 80), ("https", 443), ("dns", 53)];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// The complete environment (the server merges defaults and the caller's values).
    pub env: Vec<(String, String)>,
    /// Absolute path inside the sandbox.
    pub cwd: String,
    pub background: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        version: u32,
        /// Microseconds since the epoch when init finished setting up.
        started_at_micros: i64,
    },
    /// The process was started (its pid inside the sandbox).
    Started {
        pid: i32,
    },
    /// The process could not be started; `errno` is from the failed step.
    StartFailed {
        errno: i32,
        step: String,
    },
    /// A foreground process exited.
    Exited {
        pid: i32,
        status: ExitStatus,
    },
    Processes {
        processes: Vec<ProcessRecord>,
    },
    /// The egress listeners follow as fds (none if the sandbox has no egress).
    Network {
        count: usize,
    },
    Ok,
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal number when a signal ended the process.
    pub code: i32,
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pid: i32,
    pub argv: Vec<String>,
    pub background: bool,
    pub started_at_micros: i64,
    pub exited: Option<ExitStatus>,
    /// Where a background process's output goes, inside the sandbox.
    pub log_path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the peer hung up")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] nix::Error),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message of {0} bytes is larger than the limit")]
    TooLarge(usize),
}

/// Sends one message with optional fds. Blocking or non-blocking per the socket's mode.
pub fn send<T: Serialize>(fd: RawFd, message: &T, fds: &[RawFd]) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(message)?;
    if bytes.len() > MAX_PACKET {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one message and the fds that came with it (at most 4 are accepted; extra
/// ones are closed). `buffer` must hold `MAX_PACKET` bytes.
pub fn receive<T: for<'de> Deserialize<'de>>(
    fd: RawFd,
    buffer: &mut [u8],
) -> Result<(T, Vec<OwnedFd>), ProtocolError> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(buffer)];
        let message = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = control {
                for raw in received {
                    // SAFETY: the kernel just installed `raw` in this process for us; nobody
                    // else owns it, so taking ownership closes it exactly once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        (message.bytes, fds)
    };
    if len == 0 {
        return Err(ProtocolError::Closed);
    }
    let value = serde_json::from_slice(&buffer[..len])?;
    Ok((value, fds))
}
