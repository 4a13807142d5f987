//! The server's side: starts sandboxes through the launcher, talks to their init
//! processes, applies lifecycle changes with cgroups, and reattaches after a restart.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cordon_core::ReasonCode;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cgroup::{Cgroup, CgroupCounters, CgroupError, CgroupLimits, CgroupRoot, LimitEvents};
use crate::config::{SandboxConfig, WorkloadLimits};
use crate::launch::{LaunchOutcome, LaunchSpec, SANDBOX_UID, SOCKET_FILE};
use crate::protocol::{self, ExecSpec, ProcessRecord, ProtocolError, Reply, Request};
use crate::uid::UidPool;

const RECORD_FILE: &str = "record.json";
/// How long the launcher may take to build a sandbox.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// After a foreground process exits, output still buffered in its pipes is read for at
/// most this long (a background grandchild may hold the pipe open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// Chunk size of streamed output.
const CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandboxes are not available on this server: {0}")]
    Unavailable(String),
    #[error("the session has no sandbox on this server")]
    NotRunning,
    #[error("the sandbox is gone: {0}")]
    Lost(String),
    #[error("the sandbox could not be started: {0}")]
    StartFailed(String),
    #[error("the path leaves /workspace")]
    PathOutsideWorkspace,
    #[error("{0} not found")]
    NotFound(String),
    #[error("the workspace is full")]
    DiskQuota,
    #[error("{0}")]
    Invalid(String),
    #[error("sandbox i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("sandbox cgroup: {0}")]
    Cgroup(#[from] CgroupError),
}

impl SandboxError {
    pub fn reason(&self) -> ReasonCode {
        match self {
            SandboxError::Unavailable(_) | SandboxError::NotRunning => {
                ReasonCode::SandboxUnavailable
            }
            SandboxError::Lost(_) => ReasonCode::SandboxLost,
            SandboxError::StartFailed(_) => ReasonCode::SandboxStartFailed,
            SandboxError::PathOutsideWorkspace => ReasonCode::SandboxPathOutsideWorkspace,
            SandboxError::NotFound(_) => ReasonCode::NotFound,
            SandboxError::DiskQuota => ReasonCode::SandboxDiskQuota,
            SandboxError::Invalid(_) => ReasonCode::ValidationFailed,
            SandboxError::Io(_) | SandboxError::Cgroup(_) => ReasonCode::Internal,
        }
    }
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// What is kept on disk per sandbox, for reattaching after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    sandbox_id: String,
    /// Who the sandbox belongs to (the session's tenant), for reconciliation.
    owner: String,
    uid: u32,
    class: String,
    limits: WorkloadLimits,
    init_pid: i32,
    started_at_micros: i64,
    /// The sandbox's cgroup: its launch id, which differs from `sandbox_id` for a
    /// sandbox taken from the pool.
    #[serde(default)]
    cgroup: String,
}

impl Record {
    fn cgroup_name(&self) -> &str {
        if self.cgroup.is_empty() {
            &self.sandbox_id
        } else {
            &self.cgroup
        }
    }
}

/// Spare sandboxes' ids start with this; an unclaimed spare never outlives a restart.
const SPARE_PREFIX: &str = "spare-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Running,
    Frozen,
    Lost,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub state: SandboxState,
    pub workload_class: String,
    pub limits: WorkloadLimits,
    /// The host uid its processes run as.
    pub host_uid: u32,
    /// Host pid of the sandbox's init (pid 1 inside).
    pub init_pid: i32,
    pub started_at_micros: i64,
    pub counters: Option<CgroupCounters>,
}

#[derive(Debug)]
struct Sandbox {
    record: Record,
    cgroup: Cgroup,
    dir: PathBuf,
    state: Mutex<SandboxState>,
}

impl Sandbox {
    fn state(&self) -> SandboxState {
        self.state.lock().map(|s| *s).unwrap_or(SandboxState::Lost)
    }

    fn set_state(&self, state: SandboxState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }

    /// The sandbox's /workspace as seen from the host.
    fn workspace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/workspace", self.record.init_pid))
    }

    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.record.sandbox_id.clone(),
            state: self.state(),
            workload_class: self.record.class.clone(),
            limits: self.record.limits,
            host_uid: self.record.uid,
            init_pid: self.record.init_pid,
            started_at_micros: self.record.started_at_micros,
            counters: self.cgroup.counters().ok(),
        }
    }
}

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's default environment.
    pub env: Vec<(String, String)>,
    /// Absolute, or relative to /workspace. Default /workspace.
    pub cwd: Option<String>,
    pub stdin: Option<Vec<u8>>,
    /// Default and cap come from the workload class.
    pub timeout: Option<Duration>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// Set when a limit, a timeout or a start failure ended it.
    pub reason: Option<ReasonCode>,
    /// A human-readable explanation when `reason` is set.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExecOutcome),
}

/// A finished command with its (possibly truncated) output.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
    pub outcome: ExecOutcome,
}

/// Result of reattaching at start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Recovery {
    /// Sandboxes whose init answered: running again under this server.
    pub reattached: Vec<String>,
    /// Sandboxes whose init was gone: cleaned up and reported lost.
    pub lost: Vec<String>,
}

/// The sandbox runtime of one server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SandboxManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    cgroups: CgroupRoot,
    uids: UidPool,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Sandboxes found dead at recovery (or since): reported as lost until closed.
    lost: Mutex<HashMap<String, String>>,
    /// Started, unclaimed sandboxes of the default class, handed to the next activations.
    spares: Mutex<Vec<Arc<Sandbox>>>,
    refilling: std::sync::atomic::AtomicBool,
}

impl SandboxManager {
    /// Checks this host can run sandboxes (root, cgroups, the seccomp policy compiles)
    /// and prepares the state directory. Does not touch existing sandboxes: call
    /// [`SandboxManager::recover`] next.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::Unavailable(
                "the server must run as root to build sandboxes".to_owned(),
            ));
        }
        for (class, limits) in &config.classes {
            limits.validate(class).map_err(SandboxError::Invalid)?;
        }
        crate::init::seccomp_filters().map_err(SandboxError::Unavailable)?;
        // A sandbox's init outlives its launcher; as a subreaper this server becomes its
        // parent and reaps it when it is destroyed (not every pid 1 reaps orphans).
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
            SandboxError::Unavailable(format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))
        })?;
        let cgroups = CgroupRoot::detect(&config.cgroup_parent)
            .map_err(|e| SandboxError::Unavailable(format!("cgroups: {e}")))?;
        let uids =
            UidPool::new(&config.uid_dir, config.uid_base, config.uid_count).map_err(|e| {
                SandboxError::Unavailable(format!(
                    "uid claims in {}: {e}",
                    config.uid_dir.display()
                ))
            })?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)?;
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                cgroups,
                uids,
                sandboxes: Mutex::new(HashMap::new()),
                lost: Mutex::new(HashMap::new()),
                spares: Mutex::new(Vec::new()),
                refilling: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// The cgroup version in use, for diagnostics.
    pub fn cgroup_version(&self) -> crate::cgroup::CgroupVersion {
        self.inner.cgroups.version()
    }

    fn owner(&self, id: &str) -> String {
        format!("{}#{id}", self.inner.config.state_dir.display())
    }

    fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        if let Some(sandbox) = self
            .inner
            .sandboxes
            .lock()
            .ok()
            .and_then(|map| map.get(id).cloned())
        {
            return Ok(sandbox);
        }
        match self
            .inner
            .lost
            .lock()
            .ok()
            .and_then(|lost| lost.get(id).cloned())
        {
            Some(why) => Err(SandboxError::Lost(why)),
            None => Err(SandboxError::NotRunning),
        }
    }

    /// The sandbox of `id`, if this server runs one (or knows it was lost).
    pub fn info(&self, id: &str) -> Result<SandboxInfo> {
        Ok(self.get(id)?.info())
    }

    /// Every sandbox this server runs, with the owner it was started for.
    pub fn owners(&self) -> Vec<(String, String)> {
        let mut owners: Vec<(String, String)> = self
            .inner
            .sandboxes
            .lock()
            .map(|map| {
                map.values()
                    .map(|s| (s.record.sandbox_id.clone(), s.record.owner.clone()))
                    .collect()
            })
            .unwrap_or_default();
        owners.sort();
        owners
    }

    /// Starts the sandbox of session `id` with the limits of `class`. Starting one that
    /// runs already is a no-op; a lost one is replaced.
    pub async fn start(&self, id: &str, class: &str, owner: &str) -> Result<()> {
        if let Ok(sandbox) = self.get(id)
            && sandbox.state() != SandboxState::Lost
        {
            return Ok(());
        }
        validate_id(id)?;
        if self.adopt_spare(id, class, owner).await.is_some() {
            return Ok(());
        }
        self.start_cold(id, class, owner).await
    }

    /// Starts a sandbox with the launcher, never from the pool of spares.
    pub async fn start_cold(&self, id: &str, class: &str, owner: &str) -> Result<()> {
        validate_id(id)?;
        // A lost sandbox may have left its state or cgroup behind; clear them first.
        if self.inner.config.state_dir.join(id).exists() || self.inner.cgroups.open(id).is_some() {
            self.cleanup(id).await;
        }
        let limits = self.inner.config.limits_for(class);
        let child = self.spawn_launcher(&self.inner.config.state_dir.join(id))?;
        let uid = self
            .inner
            .uids
            .allocate(&self.owner(id))
            .map_err(|e| SandboxError::StartFailed(format!("no free sandbox uid: {e}")))?;
        let result = self.launch(child, id, class, owner, limits, uid).await;
        if result.is_err() {
            self.cleanup(id).await;
        }
        self.register(id, result?);
        Ok(())
    }

    /// Makes `sandbox` the one of session `id` (no longer lost, if it was).
    fn register(&self, id: &str, sandbox: Arc<Sandbox>) {
        if let Ok(mut map) = self.inner.sandboxes.lock() {
            map.insert(id.to_owned(), sandbox);
        }
        if let Ok(mut lost) = self.inner.lost.lock() {
            lost.remove(id);
        }
    }

    /// Starts the launcher process; it waits for its spec on stdin, so its start-up
    /// overlaps with claiming the uid and creating the cgroup.
    fn spawn_launcher(&self, dir: &Path) -> Result<tokio::process::Child> {
        let config = &self.inner.config;
        tokio::process::Command::new(&config.launcher)
            .arg("sandbox-launch")
            .arg(dir)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SandboxError::StartFailed(format!(
                    "run launcher {}: {e}",
                    config.launcher.display()
                ))
            })
    }

    async fn launch(
        &self,
        mut child: tokio::process::Child,
        id: &str,
        class: &str,
        owner: &str,
        limits: WorkloadLimits,
        uid: u32,
    ) -> Result<Arc<Sandbox>> {
        let config = &self.inner.config;
        let dir = config.state_dir.join(id);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let cgroup = self
            .inner
            .cgroups
            .create(id, &limits.cgroup())
            .map_err(|e| SandboxError::StartFailed(format!("cgroup: {e}")))?;
        let spec = LaunchSpec {
            sandbox_id: id.to_owned(),
            uid,
            system_root: config.system_root.clone(),
            cgroup_procs: cgroup.procs_files(),
            disk_bytes: limits.disk_bytes(),
            tmp_bytes: limits.tmp_bytes(),
            open_files: limits.open_files,
            egress_ca_pem: config.egress.as_ref().map(|e| e.ca_pem.clone()),
        };
        let spec = serde_json::to_vec(&spec).map_err(std::io::Error::other)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&spec).await?;
        }
        // The outcome is the launcher's first line; it exits right after writing it, so
        // its exit is collected in the background instead of waited for.
        let mut stdout = child
            .stdout
            .take()
            .map(tokio::io::BufReader::new)
            .ok_or_else(|| SandboxError::StartFailed("the launcher has no stdout".to_owned()))?;
        let mut line = String::new();
        tokio::time::timeout(LAUNCH_TIMEOUT, stdout.read_line(&mut line))
            .await
            .map_err(|_| SandboxError::StartFailed("the launcher timed out".to_owned()))??;
        let outcome: Option<LaunchOutcome> = serde_json::from_str(line.trim()).ok();
        if outcome.is_none() {
            let output = tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output())
                .await
                .map_err(|_| SandboxError::StartFailed("the launcher timed out".to_owned()))??;
            return Err(SandboxError::StartFailed(format!(
                "the launcher failed ({}): {} {}",
                output.status,
                line.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let Some(outcome) = outcome else {
            return Err(SandboxError::StartFailed(
                "the launcher said nothing".to_owned(),
            ));
        };
        let init_pid = match outcome {
            LaunchOutcome::Ready { pid } => pid,
            LaunchOutcome::Failed { error } => return Err(SandboxError::StartFailed(error)),
        };
        let record = Record {
            sandbox_id: id.to_owned(),
            owner: owner.to_owned(),
            uid,
            class: class.to_owned(),
            limits,
            init_pid,
            started_at_micros: now_micros(),
            cgroup: id.to_owned(),
        };
        write_json(&dir.join(RECORD_FILE), &record)?;
        let sandbox = Arc::new(Sandbox {
            record,
            cgroup,
            dir,
            state: Mutex::new(SandboxState::Running),
        });
        // No hello needed: the launcher bound the socket before init existed and only
        // reports ready once init has set up.
        Ok(sandbox)
    }

    /// Reattaches to the sandboxes a previous run of this server left running; those
    /// whose init is gone are cleaned up (processes, cgroup, uid, state) and reported
    /// lost until their session starts a new one or is closed.
    pub async fn recover(&self) -> Recovery {
        let mut recovery = Recovery::default();
        let Ok(entries) = std::fs::read_dir(&self.inner.config.state_dir) else {
            return recovery;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if validate_id(&id).is_err() {
                continue;
            }
            let dir = entry.path();
            let record: Option<Record> = std::fs::read(dir.join(RECORD_FILE))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if id.starts_with(SPARE_PREFIX) {
                // An unclaimed spare of the previous run: not worth reattaching.
                self.cleanup(&id).await;
                continue;
            }
            let cgroup = self
                .inner
                .cgroups
                .open(record.as_ref().map_or(id.as_str(), Record::cgroup_name));
            let alive = match (&record, &cgroup) {
                (Some(_), Some(_)) => hello(&dir.join(SOCKET_FILE)).await.is_ok(),
                _ => false,
            };
            match (record, cgroup, alive) {
                (Some(record), Some(cgroup), true) => {
                    let frozen = cgroup.is_frozen().unwrap_or(false);
                    let sandbox = Arc::new(Sandbox {
                        record,
                        cgroup,
                        dir,
                        state: Mutex::new(if frozen {
                            SandboxState::Frozen
                        } else {
                            SandboxState::Running
                        }),
                    });
                    if let Ok(mut map) = self.inner.sandboxes.lock() {
                        map.insert(id.clone(), sandbox);
                    }
                    recovery.reattached.push(id);
                }
                _ => {
                    self.cleanup(&id).await;
                    self.mark_lost(&id, "its init process was gone when the server started");
                    recovery.lost.push(id);
                }
            }
        }
        recovery.reattached.sort();
        recovery.lost.sort();
        self.refill_spares();
        recovery
    }

    /// How many started, unclaimed sandboxes wait in the pool.
    pub fn spares(&self) -> usize {
        self.inner.spares.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Tops the pool of spares up to its size, in the background, one at a time.
    fn refill_spares(&self) {
        use std::sync::atomic::Ordering;
        let wanted = self.inner.config.spare_sandboxes;
        if wanted == 0
            || self.spares() >= wanted
            || self.inner.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            while manager.spares() < wanted {
                let id = format!("{SPARE_PREFIX}{}", now_micros());
                let limits = manager.inner.config.limits_for("default");
                match manager.start_cold(&id, "default", "").await {
                    Ok(_) => {
                        let sandbox = manager
                            .inner
                            .sandboxes
                            .lock()
                            .ok()
                            .and_then(|mut map| map.remove(&id));
                        if let (Some(sandbox), Ok(mut spares)) =
                            (sandbox, manager.inner.spares.lock())
                            && sandbox.record.limits == limits
                        {
                            spares.push(sandbox);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot start a spare sandbox");
                        break;
                    }
                }
            }
            manager.inner.refilling.store(false, Ordering::Release);
        });
    }

    /// Gives session `id` a spare whose launch-time limits (disk, tmp, open files) are
    /// the class's: its cgroup limits are set to the class's, its state directory and
    /// uid claim are renamed to the session. None when no spare fits (or adopting one
    /// failed, in which case it is destroyed).
    async fn adopt_spare(&self, id: &str, class: &str, owner: &str) -> Option<()> {
        let limits = self.inner.config.limits_for(class);
        let fits = |s: &Arc<Sandbox>| {
            let l = &s.record.limits;
            l.disk_mib == limits.disk_mib
                && l.tmp_mib == limits.tmp_mib
                && l.open_files == limits.open_files
        };
        let spare = {
            let mut spares = self.inner.spares.lock().ok()?;
            let index = spares.iter().position(fits)?;
            spares.swap_remove(index)
        };
        self.refill_spares();
        let spare_id = spare.record.sandbox_id.clone();
        match self.adopt(&spare, id, class, owner, limits).await {
            Ok(sandbox) => {
                self.register(id, sandbox);
                Some(())
            }
            Err(error) => {
                tracing::warn!(%error, spare = %spare_id, "cannot adopt a spare sandbox; starting one");
                self.cleanup(&spare_id).await;
                None
            }
        }
    }

    async fn adopt(
        &self,
        spare: &Sandbox,
        id: &str,
        class: &str,
        owner: &str,
        limits: WorkloadLimits,
    ) -> Result<Arc<Sandbox>> {
        let cgroup = spare.cgroup.clone();
        let cgroup_limits = limits.cgroup();
        blocking(move || cgroup.set_limits(&cgroup_limits)).await?;
        let dir = self.inner.config.state_dir.join(id);
        // The control socket moves with its directory: init keeps serving it.
        std::fs::rename(&spare.dir, &dir)?;
        self.inner
            .uids
            .reassign(spare.record.uid, &self.owner(id))?;
        let record = Record {
            sandbox_id: id.to_owned(),
            owner: owner.to_owned(),
            class: class.to_owned(),
            limits,
            cgroup: spare.record.cgroup_name().to_owned(),
            ..spare.record.clone()
        };
        write_json(&dir.join(RECORD_FILE), &record)?;
        Ok(Arc::new(Sandbox {
            record,
            cgroup: spare.cgroup.clone(),
            dir,
            state: Mutex::new(SandboxState::Running),
        }))
    }

    fn mark_lost(&self, id: &str, why: &str) {
        if let Ok(mut lost) = self.inner.lost.lock() {
            lost.insert(id.to_owned(), why.to_owned());
        }
    }

    /// Freezes every process of the sandbox and tightens its limits: no new processes,
    /// a trickle of CPU.
    pub async fn suspend(&self, id: &str) -> Result<()> {
        let sandbox = self.get(id)?;
        if sandbox.state() == SandboxState::Lost {
            // Nothing to freeze; staying lost lets the next resume replace it.
            return Err(SandboxError::Lost("its init process died".to_owned()));
        }
        let cgroup = sandbox.cgroup.clone();
        let limits = sandbox.record.limits;
        blocking(move || {
            cgroup.freeze()?;
            let pinned = cgroup
                .counters()
                .map(|c| c.pids_current.max(1))
                .unwrap_or(1);
            cgroup.set_limits(&CgroupLimits {
                pids: pinned,
                cpu_millis: limits.suspended_cpu_millis.max(1),
                ..limits.cgroup()
            })
        })
        .await?;
        sandbox.set_state(SandboxState::Frozen);
        Ok(())
    }

    /// Restores the limits and thaws. A sandbox that was lost is replaced by a new one:
    /// then the answer is `true` (its workspace starts empty).
    pub async fn resume(&self, id: &str, class: &str, owner: &str) -> Result<bool> {
        let sandbox = match self.get(id) {
            Ok(sandbox) => sandbox,
            Err(SandboxError::Lost(_) | SandboxError::NotRunning) => {
                return self.start(id, class, owner).await.map(|()| true);
            }
            Err(other) => return Err(other),
        };
        if !self.alive(&sandbox).await {
            // Lost, so that `start` replaces it rather than taking it for running.
            sandbox.set_state(SandboxState::Lost);
            return self.start(id, class, owner).await.map(|()| true);
        }
        let cgroup = sandbox.cgroup.clone();
        let limits = sandbox.record.limits;
        blocking(move || {
            cgroup.set_limits(&limits.cgroup())?;
            cgroup.thaw()
        })
        .await?;
        sandbox.set_state(SandboxState::Running);
        Ok(false)
    }

    /// Freezes a running sandbox's processes, limits untouched, so its files hold still
    /// while they are read or replaced (a checkpoint, a restore). Answers whether it
    /// froze anything: a suspended sandbox is frozen already and stays as it is.
    /// [`SandboxManager::unquiesce`] thaws it.
    pub async fn quiesce(&self, id: &str) -> Result<bool> {
        let sandbox = self.get(id)?;
        if sandbox.state() != SandboxState::Running {
            return Ok(false);
        }
        let cgroup = sandbox.cgroup.clone();
        blocking(move || cgroup.freeze()).await?;
        Ok(true)
    }

    /// Thaws what [`SandboxManager::quiesce`] froze.
    pub async fn unquiesce(&self, id: &str) -> Result<()> {
        let sandbox = self.get(id)?;
        let cgroup = sandbox.cgroup.clone();
        blocking(move || cgroup.thaw()).await?;
        Ok(())
    }

    async fn alive(&self, sandbox: &Sandbox) -> bool {
        if sandbox.state() == SandboxState::Frozen {
            // A frozen init cannot answer; its pid tells.
            return process_alive(sandbox.record.init_pid);
        }
        hello(&sandbox.socket()).await.is_ok()
    }

    /// Kills every process of the sandbox and removes its cgroup, uid claim and state.
    /// Closing one that does not exist is a no-op.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        if let Ok(mut map) = self.inner.sandboxes.lock() {
            map.remove(id);
        }
        if let Ok(mut lost) = self.inner.lost.lock() {
            lost.remove(id);
        }
        self.cleanup(id).await;
        Ok(())
    }

    /// Removes whatever exists of sandbox `id`: processes, cgroup, uid claim, state dir.
    async fn cleanup(&self, id: &str) {
        let dir = self.inner.config.state_dir.join(id);
        let record: Option<Record> = std::fs::read(dir.join(RECORD_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let cgroup_name = record.as_ref().map_or(id, Record::cgroup_name);
        if let Some(cgroup) = self.inner.cgroups.open(cgroup_name) {
            let removed = blocking(move || cgroup.remove()).await;
            if let Err(error) = removed {
                tracing::warn!(sandbox = id, %error, "cannot remove the sandbox's cgroup");
            }
        }
        // The record names the uid; without one (a crash between claiming the uid and
        // writing the record), the claims are searched by owner.
        let owner = self.owner(id);
        let recorded = record
            .as_ref()
            .filter(|r| self.inner.uids.owner(r.uid).as_deref() == Some(owner.as_str()))
            .map(|r| r.uid);
        if let Some(uid) = recorded {
            let _ = self.inner.uids.release(uid);
        } else if let Ok(claims) = self.inner.uids.claimed() {
            for (uid, claimed_by) in claims {
                if claimed_by == owner {
                    let _ = self.inner.uids.release(uid);
                }
            }
        }
        if let Some(record) = &record {
            reap(record.init_pid);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs a command and streams its output and outcome. Dropping the receiver before
    /// the exit event kills the command.
    pub async fn exec(&self, id: &str, request: ExecRequest) -> Result<mpsc::Receiver<ExecEvent>> {
        let sandbox = self.running_sandbox(id).await?;
        let limits = sandbox.record.limits;
        let timeout = resolve_timeout(request.timeout, &limits)?;
        let spec = ExecSpec {
            argv: request.argv.clone(),
            env: environment(&request.env, self.inner.config.egress.is_some())?,
            cwd: resolve_cwd(request.cwd.as_deref())?,
            background: false,
        };
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let mut channel = Channel::connect(&sandbox.socket())
            .await
            .map_err(|e| self.lost_error(&sandbox, e))?;
        let before = sandbox.cgroup.limit_events().ok();
        let started = Instant::now();
        channel
            .send(
                &Request::Exec(spec),
                &[
                    stdin_read.as_raw_fd(),
                    stdout_write.as_raw_fd(),
                    stderr_write.as_raw_fd(),
                ],
            )
            .await
            .map_err(|e| self.lost_error(&sandbox, e))?;
        drop((stdin_read, stdout_write, stderr_write));
        let (tx, rx) = mpsc::channel(64);
        let pid = match channel
            .receive()
            .await
            .map_err(|e| self.lost_error(&sandbox, e))?
        {
            Reply::Started { pid } => pid,
            Reply::StartFailed { errno, step } => {
                let outcome = start_failure(errno, &step, &request.argv, started.elapsed());
                let _ = tx
                    .send(ExecEvent::Stderr(
                        format!("cordon: {}\n", outcome.message.clone().unwrap_or_default())
                            .into_bytes(),
                    ))
                    .await;
                let _ = tx.send(ExecEvent::Exit(outcome)).await;
                return Ok(rx);
            }
            other => {
                return Err(SandboxError::Io(std::io::Error::other(format!(
                    "unexpected reply {other:?}"
                ))));
            }
        };
        let stdin = request.stdin;
        let stdin_task = tokio::spawn(async move {
            let Ok(mut sender) = tokio::net::unix::pipe::Sender::from_owned_fd(stdin_write) else {
                return;
            };
            if let Some(bytes) = stdin {
                let _ = sender.write_all(&bytes).await;
            }
        });
        let out = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout_read)?;
        let err = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr_read)?;
        let watch = Watch {
            sandbox,
            pid,
            timeout,
            before,
            started,
        };
        tokio::spawn(async move {
            watch.run(channel, out, err, tx).await;
            stdin_task.abort();
        });
        Ok(rx)
    }

    /// Runs a command to completion, keeping at most the class's output limit per stream.
    pub async fn exec_collect(&self, id: &str, request: ExecRequest) -> Result<ExecResult> {
        let limit = self.get(id)?.record.limits.output_limit_bytes();
        let mut events = self.exec(id, request).await?;
        let mut result = ExecResult {
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            outcome: ExecOutcome {
                exit_code: -1,
                signal: None,
                duration_ms: 0,
                reason: None,
                message: None,
            },
        };
        while let Some(event) = events.recv().await {
            match event {
                ExecEvent::Stdout(bytes) => {
                    keep(&mut result.stdout, &bytes, limit, &mut result.truncated)
                }
                ExecEvent::Stderr(bytes) => {
                    keep(&mut result.stderr, &bytes, limit, &mut result.truncated)
                }
                ExecEvent::Exit(outcome) => {
                    result.outcome = outcome;
                    return Ok(result);
                }
            }
        }
        Err(SandboxError::Io(std::io::Error::other(
            "the exec ended without an exit status",
        )))
    }

    /// Starts a background process; its output goes to a log file under /tmp/.cordon.
    pub async fn spawn(&self, id: &str, request: ExecRequest) -> Result<ProcessRecord> {
        let sandbox = self.running_sandbox(id).await?;
        let spec = ExecSpec {
            argv: request.argv.clone(),
            env: environment(&request.env, self.inner.config.egress.is_some())?,
            cwd: resolve_cwd(request.cwd.as_deref())?,
            background: true,
        };
        let reply = self.ask(&sandbox, Request::Exec(spec)).await?;
        match reply {
            Reply::Started { pid } => {
                let processes = self.processes(id).await?;
                processes
                    .into_iter()
                    .find(|p| p.pid == pid)
                    .ok_or_else(|| SandboxError::NotFound(format!("process {pid}")))
            }
            Reply::StartFailed { errno, step } => {
                let outcome = start_failure(errno, &step, &request.argv, Duration::ZERO);
                Err(SandboxError::Invalid(outcome.message.unwrap_or_default()))
            }
            other => Err(SandboxError::Io(std::io::Error::other(format!(
                "unexpected reply {other:?}"
            )))),
        }
    }

    /// The processes init started and remembers (running ones and recent exits).
    pub async fn processes(&self, id: &str) -> Result<Vec<ProcessRecord>> {
        let sandbox = self.running_sandbox(id).await?;
        match self.ask(&sandbox, Request::List).await? {
            Reply::Processes { processes } => Ok(processes),
            other => Err(SandboxError::Io(std::io::Error::other(format!(
                "unexpected reply {other:?}"
            )))),
        }
    }

    /// Signals a process (and its process group).
    pub async fn signal(&self, id: &str, pid: i32, signal: i32) -> Result<()> {
        let sandbox = self.running_sandbox(id).await?;
        match self.ask(&sandbox, Request::Signal { pid, signal }).await? {
            Reply::Ok => Ok(()),
            _ => Err(SandboxError::NotFound(format!("process {pid}"))),
        }
    }

    async fn running_sandbox(&self, id: &str) -> Result<Arc<Sandbox>> {
        let sandbox = self.get(id)?;
        match sandbox.state() {
            SandboxState::Running => Ok(sandbox),
            SandboxState::Frozen => {
                Err(SandboxError::Invalid("the sandbox is suspended".to_owned()))
            }
            SandboxState::Lost => Err(SandboxError::Lost("its init process died".to_owned())),
        }
    }

    async fn ask(&self, sandbox: &Arc<Sandbox>, request: Request) -> Result<Reply> {
        let result = async {
            let mut channel = Channel::connect(&sandbox.socket()).await?;
            channel.send(&request, &[]).await?;
            channel.receive().await
        }
        .await;
        result.map_err(|e| self.lost_error(sandbox, e))
    }

    /// A failure to talk to init means it is gone (it never closes its socket).
    fn lost_error(&self, sandbox: &Arc<Sandbox>, error: ProtocolError) -> SandboxError {
        if process_alive(sandbox.record.init_pid) {
            return SandboxError::Io(std::io::Error::other(error.to_string()));
        }
        sandbox.set_state(SandboxState::Lost);
        let why = format!("its init process is gone ({error})");
        self.mark_lost(&sandbox.record.sandbox_id, &why);
        SandboxError::Lost(why)
    }

    /// The sandbox's egress listeners (made on its loopback by its init), for the
    /// gateway to serve. Asked again after a restart: init keeps them.
    pub async fn network(&self, id: &str) -> Result<NetworkSockets> {
        let sandbox = self.get(id)?;
        if sandbox.state() == SandboxState::Lost {
            return Err(SandboxError::Lost("its init process died".to_owned()));
        }
        let result = async {
            let mut channel = Channel::connect(&sandbox.socket()).await?;
            channel.send(&Request::Network, &[]).await?;
            channel.receive_with_fds().await
        }
        .await;
        let (reply, fds) = result.map_err(|e| self.lost_error(&sandbox, e))?;
        match reply {
            Reply::Network { count } if count == fds.len() && count == 4 => {
                let mut fds = fds.into_iter();
                let mut next = || {
                    fds.next()
                        .ok_or_else(|| SandboxError::Io(std::io::Error::other("missing listener")))
                };
                Ok(NetworkSockets {
                    proxy: next()?,
                    http: next()?,
                    https: next()?,
                    dns: next()?,
                })
            }
            Reply::Network { .. } => Err(SandboxError::Invalid(
                "the sandbox was started without egress".to_owned(),
            )),
            other => Err(SandboxError::Io(std::io::Error::other(format!(
                "unexpected reply to network: {other:?}"
            )))),
        }
    }

    /// The host path of the sandbox's /workspace, for file operations.
    pub fn workspace(&self, id: &str) -> Result<Workspace> {
        let sandbox = self.get(id)?;
        match sandbox.state() {
            SandboxState::Lost => Err(SandboxError::Lost("its init process died".to_owned())),
            _ => Ok(Workspace {
                root: sandbox.workspace(),
                uid: sandbox.record.uid,
            }),
        }
    }
}

/// A sandbox's egress listeners, inside its network namespace: TCP 127.0.0.1:3128 (the
/// forward proxy), :80, :443 and UDP :53.
#[derive(Debug)]
pub struct NetworkSockets {
    pub proxy: OwnedFd,
    pub http: OwnedFd,
    pub https: OwnedFd,
    pub dns: OwnedFd,
}

/// Where a sandbox's files are, seen from the host, and who must own new ones.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub uid: u32,
}

/// Watches one foreground exec: forwards output, enforces the timeout, classifies the end.
struct Watch {
    sandbox: Arc<Sandbox>,
    pid: i32,
    timeout: Duration,
    before: Option<LimitEvents>,
    started: Instant,
}

impl Watch {
    async fn run(
        self,
        mut channel: Channel,
        mut out: tokio::net::unix::pipe::Receiver,
        mut err: tokio::net::unix::pipe::Receiver,
        tx: mpsc::Sender<ExecEvent>,
    ) {
        let mut out_buf = vec![0u8; CHUNK];
        let mut err_buf = vec![0u8; CHUNK];
        let (mut out_open, mut err_open) = (true, true);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        let mut status = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            if status.is_some() && (!out_open && !err_open) {
                break;
            }
            let grace = async {
                match drain_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = out.read(&mut out_buf), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => if tx.send(ExecEvent::Stdout(out_buf[..n].to_vec())).await.is_err() { return },
                },
                read = err.read(&mut err_buf), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => if tx.send(ExecEvent::Stderr(err_buf[..n].to_vec())).await.is_err() { return },
                },
                reply = channel.receive(), if status.is_none() => match reply {
                    Ok(Reply::Exited { status: exit, .. }) => {
                        status = Some(exit);
                        drain_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // init is gone: the process went with it.
                        status = Some(protocol::ExitStatus { code: 137, signal: Some(9) });
                        drain_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    }
                },
                () = &mut deadline, if !timed_out && status.is_none() => {
                    timed_out = true;
                    let _ = kill_process(&self.sandbox, self.pid).await;
                }
                () = grace => break,
            }
        }
        let Some(status) = status else { return };
        let after = self.sandbox.cgroup.limit_events().ok();
        let outcome = self.classify(status, timed_out, after);
        if matches!(
            outcome.reason,
            Some(
                ReasonCode::SandboxPidsLimit
                    | ReasonCode::ExecTimeout
                    | ReasonCode::SandboxOomKilled
            )
        ) {
            // A command that hit a limit takes what it left behind in its process group
            // with it (a fork bomb's children outlive their parent).
            let _ = kill_process(&self.sandbox, self.pid).await;
        }
        let _ = tx.send(ExecEvent::Exit(outcome)).await;
    }

    fn classify(
        &self,
        status: protocol::ExitStatus,
        timed_out: bool,
        after: Option<LimitEvents>,
    ) -> ExecOutcome {
        let grew = |f: fn(&LimitEvents) -> u64| match (self.before, after) {
            (Some(before), Some(after)) => f(&after) > f(&before),
            _ => false,
        };
        let (reason, message) = if grew(|c| c.oom_kills) && status.signal.is_some() {
            (
                Some(ReasonCode::SandboxOomKilled),
                Some(format!(
                    "the sandbox hit its memory limit of {} MiB",
                    self.sandbox.record.limits.memory_mib
                )),
            )
        } else if grew(|c| c.pids_limit_hits) {
            (
                Some(ReasonCode::SandboxPidsLimit),
                Some(format!(
                    "the sandbox hit its limit of {} processes",
                    self.sandbox.record.limits.pids
                )),
            )
        } else if timed_out {
            (
                Some(ReasonCode::ExecTimeout),
                Some(format!(
                    "the command ran past its timeout of {} ms",
                    self.timeout.as_millis()
                )),
            )
        } else if status.code != 0 && workspace_full(&self.sandbox) {
            (
                Some(ReasonCode::SandboxDiskQuota),
                Some(format!(
                    "the sandbox's /workspace or /tmp is full (quota {} MiB / {} MiB)",
                    self.sandbox.record.limits.disk_mib, self.sandbox.record.limits.tmp_mib
                )),
            )
        } else if let Some(signal) = status.signal {
            (
                Some(ReasonCode::ExecKilledBySignal),
                Some(format!("the command was killed by signal {signal}")),
            )
        } else {
            (None, None)
        };
        ExecOutcome {
            exit_code: status.code,
            signal: status.signal,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            reason,
            message,
        }
    }
}

async fn kill_process(sandbox: &Sandbox, pid: i32) -> Result<(), ProtocolError> {
    let mut channel = Channel::connect(&sandbox.socket()).await?;
    channel
        .send(
            &Request::Signal {
                pid,
                signal: libc::SIGKILL,
            },
            &[],
        )
        .await?;
    channel.receive().await.map(|_| ())
}

/// True when /workspace or /tmp has (almost) no free blocks or inodes left.
fn workspace_full(sandbox: &Sandbox) -> bool {
    ["workspace", "tmp"].iter().any(|dir| {
        let path = format!("/proc/{}/root/{dir}", sandbox.record.init_pid);
        nix::sys::statvfs::statvfs(path.as_str())
            .is_ok_and(|s| s.blocks_available() < 4 || s.files_available() < 4)
    })
}

/// Whether `pid` is a live process. A dead init whose parent is this server (the
/// subreaper) stays a zombie until [`reap`]: its `/proc/<pid>` exists but it is gone.
fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: comm may hold anything, the state follows its last `)`.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Collects the exit status of a dead init if this process is its parent (it is when
/// this server started it); anything else is left alone.
fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    for _ in 0..50 {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

fn start_failure(errno: i32, step: &str, argv: &[String], elapsed: Duration) -> ExecOutcome {
    let error = std::io::Error::from_raw_os_error(errno);
    let program = argv.first().map(String::as_str).unwrap_or("");
    let (reason, message) = match (step, errno) {
        ("resolve", _) | ("exec", libc::ENOENT) => (
            ReasonCode::ExecCommandNotFound,
            format!("{program}: command not found"),
        ),
        ("exec", libc::EACCES) => (
            ReasonCode::ExecCommandNotFound,
            format!("{program}: permission denied"),
        ),
        ("fork", libc::EAGAIN) => (
            ReasonCode::SandboxPidsLimit,
            "the sandbox hit its process limit".to_owned(),
        ),
        (step, _) => (
            ReasonCode::ExecStartFailed,
            format!("{program}: cannot start ({step}: {error})"),
        ),
    };
    ExecOutcome {
        exit_code: 127,
        signal: None,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        reason: Some(reason),
        message: Some(message),
    }
}

fn keep(buffer: &mut Vec<u8>, bytes: &[u8], limit: usize, truncated: &mut bool) {
    let room = limit.saturating_sub(buffer.len());
    if bytes.len() > room {
        *truncated = true;
    }
    buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn resolve_timeout(requested: Option<Duration>, limits: &WorkloadLimits) -> Result<Duration> {
    let max = Duration::from_millis(limits.exec_timeout_max_ms);
    match requested {
        None => Ok(Duration::from_millis(limits.exec_timeout_ms)),
        Some(t) if t.is_zero() => Err(SandboxError::Invalid(
            "timeout_ms must be at least 1".to_owned(),
        )),
        Some(t) if t > max => Err(SandboxError::Invalid(format!(
            "timeout_ms must not exceed {} for this workload class",
            limits.exec_timeout_max_ms
        ))),
        Some(t) => Ok(t),
    }
}

fn resolve_cwd(cwd: Option<&str>) -> Result<String> {
    let cwd = cwd.unwrap_or("/workspace");
    if cwd.contains('\0') {
        return Err(SandboxError::Invalid("cwd must not contain NUL".to_owned()));
    }
    Ok(if cwd.starts_with('/') {
        cwd.to_owned()
    } else {
        format!("/workspace/{cwd}")
    })
}

/// Where tools find the egress gateway: the usual proxy variables (both cases), npm's,
/// pip's and git's, and the CA bundle variables of curl, OpenSSL, Python and Node.
const EGRESS_ENV: &[(&str, &str)] = &[
    ("HTTP_PROXY", "http://127.0.0.1:3128"),
    ("HTTPS_PROXY", "http://127.0.0.1:3128"),
    ("ALL_PROXY", "http://127.0.0.1:3128"),
    ("http_proxy", "http://127.0.0.1:3128"),
    ("https_proxy", "http://127.0.0.1:3128"),
    ("all_proxy", "http://127.0.0.1:3128"),
    ("NO_PROXY", ""),
    ("no_proxy", ""),
    ("npm_config_proxy", "http://127.0.0.1:3128"),
    ("npm_config_https_proxy", "http://127.0.0.1:3128"),
    ("PIP_PROXY", "http://127.0.0.1:3128"),
    ("GIT_HTTP_PROXY", "http://127.0.0.1:3128"),
    ("SSL_CERT_FILE", crate::launch::CA_BUNDLE_FILE),
    ("REQUESTS_CA_BUNDLE", crate::launch::CA_BUNDLE_FILE),
    ("CURL_CA_BUNDLE", crate::launch::CA_BUNDLE_FILE),
    ("GIT_SSL_CAINFO", crate::launch::CA_BUNDLE_FILE),
    ("PIP_CERT", crate::launch::CA_BUNDLE_FILE),
    ("NODE_EXTRA_CA_CERTS", crate::launch::EGRESS_CA_FILE),
];

/// The default environment with the caller's values on top.
fn environment(extra: &[(String, String)], egress: bool) -> Result<Vec<(String, String)>> {
    let uid = SANDBOX_UID.to_string();
    let mut env: Vec<(String, String)> = [
        ("PATH", crate::init::DEFAULT_PATH),
        ("HOME", "/workspace"),
        ("USER", "sandbox"),
        ("LOGNAME", "sandbox"),
        ("SHELL", "/bin/sh"),
        ("LANG", "C.UTF-8"),
        ("TMPDIR", "/tmp"),
        ("HOSTNAME", crate::launch::HOSTNAME),
        ("UID", uid.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    if egress {
        env.extend(
            EGRESS_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
    }
    for (key, value) in extra {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(SandboxError::Invalid(format!(
                "environment variable `{key}`: names must be non-empty without `=` or NUL, values without NUL"
            )));
        }
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    Ok(env)
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Invalid(format!("bad sandbox id `{id}`")))
    }
}

/// Writes a file whole (temporary file, then rename). Not fsynced on purpose: the
/// state files must survive the server's crash (the page cache does), and a sandbox
/// never survives the host's.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode_0600()
        .open(&tmp)?;
    file.write_all(&bytes)?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CgroupError> + Send + 'static,
) -> Result<T>
where
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Io(std::io::Error::other(e)))?
        .map_err(SandboxError::from)
}

async fn hello(socket: &Path) -> Result<(), ProtocolError> {
    let mut channel = Channel::connect(socket).await?;
    channel.send(&Request::Hello, &[]).await?;
    match channel.receive().await? {
        Reply::Hello { version, .. } if version == protocol::PROTOCOL_VERSION => Ok(()),
        _ => Err(ProtocolError::Io(nix::Error::EPROTO)),
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn io_errno(error: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}

/// One connection to a sandbox's init, driven by tokio.
struct Channel {
    fd: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
}

impl Channel {
    async fn connect(path: &Path) -> Result<Self, ProtocolError> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(nix::Error::EINPROGRESS) => {}
            Err(nix::Error::ENOENT | nix::Error::ECONNREFUSED) => {
                return Err(ProtocolError::Closed);
            }
            Err(error) => return Err(error.into()),
        }
        // SAFETY: `fd` is an open socket that the AsyncFd owns from here on; an OwnedFd
        // always reports the same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| ProtocolError::Io(io_errno(&e.into_parts().1)))?;
        Ok(Self {
            fd,
            buffer: vec![0u8; protocol::MAX_PACKET],
        })
    }

    async fn send(&mut self, message: &Request, fds: &[i32]) -> Result<(), ProtocolError> {
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(|e| ProtocolError::Io(io_errno(&e)))?;
            match protocol::send(guard.get_inner().as_raw_fd(), message, fds) {
                Err(ProtocolError::Io(nix::Error::EAGAIN)) => guard.clear_ready(),
                other => return other,
            }
        }
    }

    async fn receive(&mut self) -> Result<Reply, ProtocolError> {
        self.receive_with_fds().await.map(|(reply, _)| reply)
    }

    async fn receive_with_fds(&mut self) -> Result<(Reply, Vec<OwnedFd>), ProtocolError> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| ProtocolError::Io(io_errno(&e)))?;
            match protocol::receive::<Reply>(guard.get_inner().as_raw_fd(), &mut self.buffer) {
                Err(ProtocolError::Io(nix::Error::EAGAIN)) => guard.clear_ready(),
                Ok((reply, fds)) => return Ok((reply, fds)),
                Err(other) => return Err(other),
            }
        }
    }
}
