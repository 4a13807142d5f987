//! Sandboxes: isolated, stateful tool execution per session.
//!
//! - [`manager::SandboxManager`] is the server's handle: start, exec, files, suspend,
//!   resume, destroy, and reattach after a restart.
//! - [`launch`] is the launcher (`cordon sandbox-launch DIR`) that builds a sandbox in a
//!   fresh single-threaded process; [`init`] is the sandbox's pid 1.
//! - [`cgroup`] and [`uid`] own the host resources each sandbox gets; [`files`] reaches
//!   into a workspace from the host without following paths out of it.
//!
//! Knows nothing of HTTP, the store or other runtimes.
#![allow(
    unsafe_code,
    reason = "namespaces, mounts, fork, openat2 and capabilities need raw system calls; each `unsafe` block says why it is sound"
)]

pub mod cgroup;
pub mod config;
pub mod files;
pub(crate) mod init;
pub mod launch;
pub mod manager;
pub mod protocol;
pub mod uid;

pub use config::{ClassesFile, EgressSetup, SandboxConfig, WorkloadLimits};
pub use files::{FileEntry, FileKind};
pub use init::SECCOMP_POLICY;
pub use manager::{
    ExecEvent, ExecOutcome, ExecRequest, ExecResult, NetworkSockets, Recovery, SandboxError,
    SandboxInfo, SandboxManager, SandboxState, Workspace,
};
pub use protocol::{ExitStatus, ProcessRecord};
