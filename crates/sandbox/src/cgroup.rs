//! Control groups for sandboxes, on cgroup v2 or v1 (detected once at start).
//!
//! Each sandbox gets `<parent>/<name>`: one directory on v2; on v1 one directory in each
//! of the memory, pids, cpu and freezer hierarchies (and cpuacct when it is mounted on
//! its own). Limits, freezing, counters and killing work the same on both.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups unusable: {0}")]
    Unsupported(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad cgroup name `{0}`")]
    BadName(String),
    #[error("cgroup `{0}` exists already")]
    Exists(String),
    #[error("cgroup `{name}`: {what} did not finish within {after:?}")]
    Timeout {
        name: String,
        what: &'static str,
        after: Duration,
    },
}

fn io(path: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Limits applied to a sandbox's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU time per wall second in milliseconds (1000 = one core, 0 = unlimited).
    pub cpu_millis: u64,
}

/// Kernel counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupCounters {
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
    pub cpu_usage_usec: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids_current: u64,
}

/// The counters that tell why a command ended: read before and after every exec, so
/// only the two files they need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitEvents {
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
}

/// The hierarchies' directories for the parent group.
#[derive(Debug, Clone)]
enum Layout {
    V2 {
        parent: PathBuf,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        /// Set when cpuacct is a hierarchy of its own (not joined with cpu).
        cpuacct: Option<PathBuf>,
        freezer: PathBuf,
    },
}

impl Layout {
    fn dirs(&self) -> Vec<&PathBuf> {
        match self {
            Layout::V2 { parent } => vec![parent],
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                let mut dirs = vec![memory, pids, cpu, freezer];
                dirs.extend(cpuacct.iter());
                dirs
            }
        }
    }
}

/// Where sandboxes' groups live.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    layout: Layout,
}

/// A sandbox's group. Cheap to clone: paths only.
#[derive(Debug, Clone)]
pub struct Cgroup {
    name: String,
    layout: Layout,
}

const PERIOD_US: u64 = 100_000;
const FREEZE_WAIT: Duration = Duration::from_secs(5);
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The cgroup mounts of this process's view: (mount point, fstype, super options).
fn cgroup_mounts() -> Result<Vec<(PathBuf, String, String)>, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io(Path::new("/proc/self/mountinfo"), e))?;
    let mut mounts = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let _source = right.next();
        let options = right.next().unwrap_or_default();
        if fstype == "cgroup" || fstype == "cgroup2" {
            mounts.push((
                PathBuf::from(unescape(mount_point)),
                fstype.to_owned(),
                options.to_owned(),
            ));
        }
    }
    Ok(mounts)
}

/// mountinfo escapes spaces and a few other bytes as octal `\NNN`.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(value) = u8::from_str_radix(&text[i + 1..i + 4], 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's largest pids.max (PID_MAX_LIMIT); anything above is `max`.
fn pids_value(pids: u64) -> String {
    if pids >= 4_194_304 {
        "max".to_owned()
    } else {
        pids.to_string()
    }
}

/// CPU quota per period for `millis` of CPU per second; the kernel's minimum is 1 ms.
fn cpu_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(PERIOD_US) / 1000).max(1000)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn valid_parent(parent: &str) -> bool {
    !parent.is_empty() && parent.split('/').all(valid_name)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io(path, e))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// `key value` lines (memory.events, pids.events, cpu.stat, memory.oom_control).
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

impl CgroupRoot {
    /// Detects v2 (a cgroup2 mount whose root lists the memory and pids controllers) or
    /// v1 (memory, pids, cpu and freezer hierarchies), and creates the parent group.
    pub fn detect(parent: &str) -> Result<Self, CgroupError> {
        if !valid_parent(parent) {
            return Err(CgroupError::BadName(parent.to_owned()));
        }
        let mounts = cgroup_mounts()?;
        let v2 = mounts.iter().find(|(mount, fstype, _)| {
            fstype == "cgroup2"
                && std::fs::read_to_string(mount.join("cgroup.controllers")).is_ok_and(|c| {
                    let c: Vec<&str> = c.split_whitespace().collect();
                    c.contains(&"memory") && c.contains(&"pids")
                })
        });
        let layout = if let Some((mount, _, _)) = v2 {
            let mut dir = mount.clone();
            // Enable the controllers on the way down so the leaf groups get them.
            for part in parent.split('/') {
                let control = dir.join("cgroup.subtree_control");
                for controller in ["+memory", "+pids", "+cpu"] {
                    // Already enabled or not delegatable (cpu): ignore, the limits say.
                    let _ = std::fs::write(&control, controller);
                }
                dir = dir.join(part);
                create_dir(&dir)?;
            }
            let control = dir.join("cgroup.subtree_control");
            for controller in ["+memory", "+pids", "+cpu"] {
                let _ = std::fs::write(&control, controller);
            }
            // Enabling fails quietly where a group on the way holds processes itself
            // (systemd, containers): say so now rather than with a missing file later.
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            let enabled: Vec<&str> = enabled.split_whitespace().collect();
            if !(enabled.contains(&"memory") && enabled.contains(&"pids")) {
                return Err(CgroupError::Unsupported(format!(
                    "cannot enable the memory and pids controllers for {} (a group above \
                     it may hold processes; give cordon a delegated subtree)",
                    dir.display()
                )));
            }
            Layout::V2 { parent: dir }
        } else {
            let hierarchy = |controller: &str| {
                mounts
                    .iter()
                    .find(|(_, fstype, options)| {
                        fstype == "cgroup" && options.split(',').any(|o| o == controller)
                    })
                    .map(|(mount, _, options)| (mount.join(parent), options.clone()))
            };
            let need = |controller: &str| {
                hierarchy(controller).ok_or_else(|| {
                    CgroupError::Unsupported(format!(
                        "no cgroup v2 with memory and pids, and no v1 `{controller}` hierarchy"
                    ))
                })
            };
            let (memory, _) = need("memory")?;
            let (pids, _) = need("pids")?;
            let (cpu, cpu_options) = need("cpu")?;
            let (freezer, _) = need("freezer")?;
            let cpuacct = if cpu_options.split(',').any(|o| o == "cpuacct") {
                None
            } else {
                hierarchy("cpuacct").map(|(dir, _)| dir)
            };
            let layout = Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            };
            for dir in layout.dirs() {
                create_dir(dir)?;
            }
            layout
        };
        Ok(Self { layout })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V2 { .. } => CgroupVersion::V2,
            Layout::V1 { .. } => CgroupVersion::V1,
        }
    }

    fn child(&self, name: &str) -> Cgroup {
        let join = |dir: &PathBuf| dir.join(name);
        let layout = match &self.layout {
            Layout::V2 { parent } => Layout::V2 {
                parent: join(parent),
            },
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => Layout::V1 {
                memory: join(memory),
                pids: join(pids),
                cpu: join(cpu),
                cpuacct: cpuacct.as_ref().map(join),
                freezer: join(freezer),
            },
        };
        Cgroup {
            name: name.to_owned(),
            layout,
        }
    }

    /// Creates group `name` with `limits` applied; refuses one that exists.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        if !valid_name(name) {
            return Err(CgroupError::BadName(name.to_owned()));
        }
        let group = self.child(name);
        let dirs = group.layout.dirs();
        if let Some(first) = dirs.first() {
            match std::fs::create_dir(first) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(CgroupError::Exists(name.to_owned()));
                }
                Err(e) => return Err(io(first, e)),
            }
        }
        for dir in dirs.iter().skip(1) {
            create_dir(dir)?;
        }
        if let Err(error) = group.set_limits(limits) {
            let _ = group.remove();
            return Err(error);
        }
        Ok(group)
    }

    /// An existing group, for recovery after a restart.
    pub fn open(&self, name: &str) -> Option<Cgroup> {
        if !valid_name(name) {
            return None;
        }
        let group = self.child(name);
        group
            .layout
            .dirs()
            .iter()
            .any(|dir| dir.is_dir())
            .then_some(group)
    }

    /// Names of the existing groups under the parent.
    pub fn children(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = std::collections::BTreeSet::new();
        for dir in self.layout.dirs() {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(dir, e)),
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Removes the parent group itself when it holds no groups.
    pub fn remove_parent_if_empty(&self) -> Result<(), CgroupError> {
        if !self.children()?.is_empty() {
            return Ok(());
        }
        for dir in self.layout.dirs() {
            remove_dir(dir)?;
        }
        Ok(())
    }
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir, e)),
    }
}

fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir, e)),
    }
}

impl Cgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cgroup.procs files a process is written into to join this group.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.layout
            .dirs()
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for procs in self.procs_files() {
            write(&procs, &pid.to_string())?;
        }
        Ok(())
    }

    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V2 { parent } => {
                write(&parent.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = parent.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&parent.join("pids.max"), &pids_value(limits.pids))?;
                let cpu = parent.join("cpu.max");
                if cpu.exists() {
                    let quota = if limits.cpu_millis == 0 {
                        "max".to_owned()
                    } else {
                        cpu_quota_us(limits.cpu_millis).to_string()
                    };
                    write(&cpu, &format!("{quota} {PERIOD_US}"))?;
                }
            }
            Layout::V1 {
                memory, pids, cpu, ..
            } => {
                // With swap accounting, memory+swap gets the same limit (no swapping out).
                // The kernel wants memory <= memory+swap at every step: when raising,
                // memory+swap goes first.
                let bytes = limits.memory_bytes.to_string();
                let limit = memory.join("memory.limit_in_bytes");
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if std::fs::write(&limit, &bytes).is_err() && memsw.exists() {
                    write(&memsw, &bytes)?;
                    write(&limit, &bytes)?;
                } else if memsw.exists() {
                    write(&memsw, &bytes)?;
                } else {
                    write(&limit, &bytes)?;
                }
                write(&pids.join("pids.max"), &pids_value(limits.pids))?;
                // cpu.cfs_period_us keeps the kernel's default, 100 ms (PERIOD_US).
                let quota = if limits.cpu_millis == 0 {
                    "-1".to_owned()
                } else {
                    cpu_quota_us(limits.cpu_millis).to_string()
                };
                write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
            }
        }
        Ok(())
    }

    /// Freezes every process and returns once the kernel reports the group frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V2 { parent } => write(&parent.join("cgroup.freeze"), "1")?,
            Layout::V1 { freezer, .. } => write(&freezer.join("freezer.state"), "FROZEN")?,
        }
        self.wait_for(
            "freezing",
            |group| group.is_frozen().unwrap_or(false),
            FREEZE_WAIT,
        )
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V2 { parent } => write(&parent.join("cgroup.freeze"), "0"),
            Layout::V1 { freezer, .. } => write(&freezer.join("freezer.state"), "THAWED"),
        }
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.layout {
            Layout::V2 { parent } => {
                Ok(keyed(&read(&parent.join("cgroup.events"))?, "frozen") == 1)
            }
            Layout::V1 { freezer, .. } => {
                Ok(read(&freezer.join("freezer.state"))?.trim() == "FROZEN")
            }
        }
    }

    fn wait_for(
        &self,
        what: &'static str,
        done: impl Fn(&Self) -> bool,
        limit: Duration,
    ) -> Result<(), CgroupError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        while !done(self) {
            if started.elapsed() > limit {
                return Err(CgroupError::Timeout {
                    name: self.name.clone(),
                    what,
                    after: limit,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn counters(&self) -> Result<CgroupCounters, CgroupError> {
        Ok(match &self.layout {
            Layout::V2 { parent } => {
                let events = read(&parent.join("memory.events"))?;
                let cpu = std::fs::read_to_string(parent.join("cpu.stat")).unwrap_or_default();
                CgroupCounters {
                    oom_kills: keyed(&events, "oom_kill"),
                    pids_limit_hits: keyed(&read(&parent.join("pids.events"))?, "max"),
                    cpu_usage_usec: keyed(&cpu, "usage_usec"),
                    memory_bytes: number(&parent.join("memory.current")),
                    memory_peak_bytes: number(&parent.join("memory.peak")),
                    pids_current: number(&parent.join("pids.current")),
                }
            }
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                ..
            } => {
                let usage = cpuacct.as_ref().unwrap_or(cpu).join("cpuacct.usage");
                CgroupCounters {
                    oom_kills: keyed(&read(&memory.join("memory.oom_control"))?, "oom_kill"),
                    pids_limit_hits: keyed(&read(&pids.join("pids.events"))?, "max"),
                    cpu_usage_usec: number(&usage) / 1000,
                    memory_bytes: number(&memory.join("memory.usage_in_bytes")),
                    memory_peak_bytes: number(&memory.join("memory.max_usage_in_bytes")),
                    pids_current: number(&pids.join("pids.current")),
                }
            }
        })
    }

    /// OOM kills and pids-limit hits so far.
    pub fn limit_events(&self) -> Result<LimitEvents, CgroupError> {
        let (memory, pids) = match &self.layout {
            Layout::V2 { parent } => (parent.join("memory.events"), parent.join("pids.events")),
            Layout::V1 { memory, pids, .. } => {
                (memory.join("memory.oom_control"), pids.join("pids.events"))
            }
        };
        Ok(LimitEvents {
            oom_kills: keyed(&read(&memory)?, "oom_kill"),
            pids_limit_hits: keyed(&read(&pids)?, "max"),
        })
    }

    /// Pids in the group.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let procs = match &self.layout {
            Layout::V2 { parent } => parent.join("cgroup.procs"),
            Layout::V1 { pids, .. } => pids.join("cgroup.procs"),
        };
        let text = match std::fs::read_to_string(&procs) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&procs, e)),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process of the group and returns once it is empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Layout::V2 { parent } = &self.layout {
            let kill = parent.join("cgroup.kill");
            if kill.exists() {
                write(&kill, "1")?;
                return self.wait_for(
                    "killing",
                    |g| g.pids().is_ok_and(|p| p.is_empty()),
                    KILL_WAIT,
                );
            }
        }
        // Freeze first so nothing forks between reading the list and the kills; frozen
        // tasks die as soon as they are thawed.
        let started = Instant::now();
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if started.elapsed() > KILL_WAIT {
                return Err(CgroupError::Timeout {
                    name: self.name.clone(),
                    what: "killing",
                    after: KILL_WAIT,
                });
            }
            // Frozen, the list cannot change (no fork, no exit and reuse of a pid)
            // between reading it and the kills.
            let frozen = self.freeze().is_ok();
            let pids = if frozen { self.pids()? } else { pids };
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if frozen {
                let _ = self.thaw();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the processes and removes the group in every hierarchy. Removing a group
    /// that is gone is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if self.layout.dirs().iter().all(|d| !d.exists()) {
            return Ok(());
        }
        self.kill_all()?;
        let started = Instant::now();
        for dir in self.layout.dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    // The kernel lets go of a group shortly after its last task is gone.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && started.elapsed() < KILL_WAIT =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(io(dir, e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    fn root(tag: &str) -> CgroupRoot {
        CgroupRoot::detect(&format!("cordon-test-{}-{tag}", std::process::id())).unwrap()
    }

    fn limits() -> CgroupLimits {
        CgroupLimits {
            memory_bytes: 64 << 20,
            pids: 16,
            cpu_millis: 500,
        }
    }

    #[test]
    fn names_are_checked() {
        let root = root("names");
        for bad in ["", "..", "a/b", "a b"] {
            assert!(
                matches!(root.create(bad, &limits()), Err(CgroupError::BadName(_))),
                "{bad}"
            );
        }
        let group = root.create("ok", &limits()).unwrap();
        assert!(matches!(
            root.create("ok", &limits()),
            Err(CgroupError::Exists(_))
        ));
        assert_eq!(root.children().unwrap(), ["ok"]);
        group.remove().unwrap();
        group.remove().unwrap();
        assert!(root.children().unwrap().is_empty());
        root.remove_parent_if_empty().unwrap();
    }

    #[test]
    fn freeze_counters_kill_and_remove() {
        let root = root("life");
        let group = root.create("g", &limits()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        group.add_process(child.id() as i32).unwrap();
        assert_eq!(group.pids().unwrap(), [child.id() as i32]);
        assert_eq!(group.counters().unwrap().pids_current, 1);
        group.freeze().unwrap();
        assert!(group.is_frozen().unwrap());
        group.thaw().unwrap();
        assert!(!group.is_frozen().unwrap());
        group.kill_all().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        group.remove().unwrap();
        assert!(root.open("g").is_none());
        root.remove_parent_if_empty().unwrap();
    }

    #[test]
    fn limit_hits_are_counted() {
        let root = root("hits");
        let group = root
            .create(
                "g",
                &CgroupLimits {
                    memory_bytes: 32 << 20,
                    pids: 3,
                    cpu_millis: 0,
                },
            )
            .unwrap();
        // Each shell joins the group before it does anything else.
        let files: Vec<String> = group
            .procs_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let join = format!("for f in {}; do echo $$ > $f; done", files.join(" "));
        for script in [
            format!("{join}; exec /usr/bin/python3 -c 'b = bytearray(256 << 20)'"),
            format!("{join}; sleep 1 & sleep 1 & sleep 1 & sleep 1 & wait"),
        ] {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .stderr(std::process::Stdio::null())
                .status();
        }
        let counters = group.counters().unwrap();
        assert!(counters.pids_limit_hits >= 1, "{counters:?}");
        assert!(counters.oom_kills >= 1, "{counters:?}");
        group.remove().unwrap();
        root.remove_parent_if_empty().unwrap();
    }
}
