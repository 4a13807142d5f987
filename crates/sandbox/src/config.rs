//! Sandbox configuration: where state lives, which host uids and cgroups are used, and
//! the resource limits of each workload class.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupLimits;

const MIB: u64 = 1 << 20;

/// Limits of one workload class. Sizes are in MiB in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadLimits {
    /// Memory of the sandbox's processes plus its files: /workspace and /tmp are
    /// memory-backed and charged to the sandbox's memory cgroup.
    pub memory_mib: u64,
    /// Processes and threads at once.
    pub pids: u64,
    /// CPU time per wall-clock second, in milliseconds (1000 = one core, 0 = no limit).
    pub cpu_millis: u64,
    /// Size of /workspace.
    pub disk_mib: u64,
    /// Size of /tmp (also holds background processes' logs).
    pub tmp_mib: u64,
    /// Exec timeout when the request names none.
    pub exec_timeout_ms: u64,
    /// Longest exec timeout a request may ask for.
    pub exec_timeout_max_ms: u64,
    /// Output kept per stream of a buffered exec; the rest is dropped (`truncated`).
    pub output_limit_kib: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// While suspended: CPU quota (milliseconds per second) the frozen group keeps, and
    /// its pids limit is pinned to the processes it has (nothing new may start).
    pub suspended_cpu_millis: u64,
}

impl Default for WorkloadLimits {
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            pids: 512,
            cpu_millis: 1000,
            disk_mib: 512,
            tmp_mib: 128,
            exec_timeout_ms: 60_000,
            exec_timeout_max_ms: 3_600_000,
            output_limit_kib: 1024,
            open_files: 4096,
            suspended_cpu_millis: 10,
        }
    }
}

impl WorkloadLimits {
    pub fn cgroup(&self) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: self.memory_mib.saturating_mul(MIB),
            pids: self.pids,
            cpu_millis: self.cpu_millis,
        }
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_mib.saturating_mul(MIB)
    }

    pub fn tmp_bytes(&self) -> u64 {
        self.tmp_mib.saturating_mul(MIB)
    }

    pub fn output_limit_bytes(&self) -> usize {
        usize::try_from(self.output_limit_kib.saturating_mul(1024)).unwrap_or(usize::MAX)
    }

    /// Checks the values make sense; the message names the field.
    pub fn validate(&self, class: &str) -> Result<(), String> {
        let checks = [
            (self.memory_mib >= 16, "memory_mib must be at least 16"),
            (self.pids >= 4, "pids must be at least 4"),
            (self.disk_mib >= 1, "disk_mib must be at least 1"),
            (self.tmp_mib >= 1, "tmp_mib must be at least 1"),
            (
                self.exec_timeout_ms >= 1,
                "exec_timeout_ms must be at least 1",
            ),
            (
                self.exec_timeout_max_ms >= self.exec_timeout_ms,
                "exec_timeout_max_ms must not be below exec_timeout_ms",
            ),
            (self.open_files >= 64, "open_files must be at least 64"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(format!("workload class `{class}`: {message}")),
            None => Ok(()),
        }
    }
}

/// The file `cordon serve --sandbox-classes FILE` reads: `{"classes": {"default": {...}}}`.
/// A session whose workload class is not listed gets the `default` class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClassesFile {
    #[serde(default)]
    pub classes: BTreeMap<String, WorkloadLimits>,
}

/// Everything the sandbox manager needs to know.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Per-sandbox state (spec, control socket); `<data-dir>/sandboxes`.
    pub state_dir: PathBuf,
    /// The executable that builds a sandbox: `cordon` itself, run as
    /// `<launcher> sandbox-launch <state-dir of the sandbox>`.
    pub launcher: PathBuf,
    /// Host-wide uid claims (shared by every server on the host).
    pub uid_dir: PathBuf,
    pub uid_base: u32,
    pub uid_count: u32,
    /// Parent cgroup under which each sandbox gets its own group.
    pub cgroup_parent: String,
    /// Where the read-only system directories come from: `/` or a prepared root.
    pub system_root: PathBuf,
    pub classes: BTreeMap<String, WorkloadLimits>,
    /// Sandboxes of the default class kept started and unclaimed, so that activating a
    /// session takes one instead of launching (0: none).
    pub spare_sandboxes: usize,
    /// Egress through the gateway: each sandbox gets the gateway's listeners on its
    /// loopback (proxy on 3128, ports 80 and 443, DNS on 53), proxy variables in every
    /// exec's environment, and this CA (PEM) in its trust store. `None`: no way out.
    pub egress: Option<EgressSetup>,
}

/// What a sandbox needs to send traffic through the egress gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSetup {
    /// The gateway CA's certificate, trusted inside the sandbox.
    pub ca_pem: String,
}

impl SandboxConfig {
    /// Defaults under a data directory: the host's system directories, uids from
    /// `crate::uid::DEFAULT_UID_BASE`, cgroup parent `cordon`.
    pub fn under(data_dir: &std::path::Path, launcher: PathBuf) -> Self {
        Self {
            state_dir: data_dir.join("sandboxes"),
            launcher,
            uid_dir: PathBuf::from("/run/cordon/uids"),
            uid_base: crate::uid::DEFAULT_UID_BASE,
            uid_count: crate::uid::DEFAULT_UID_COUNT,
            cgroup_parent: "cordon".to_owned(),
            system_root: PathBuf::from("/"),
            classes: BTreeMap::new(),
            spare_sandboxes: 2,
            egress: None,
        }
    }

    /// The limits of a workload class (the `default` class, or built-in defaults).
    pub fn limits_for(&self, class: &str) -> WorkloadLimits {
        self.classes
            .get(class)
            .or_else(|| self.classes.get("default"))
            .copied()
            .unwrap_or_default()
    }
}
