//! The sandbox's pid 1. Single-threaded: a poll loop over the control socket, its
//! connections and a signalfd for SIGCHLD. It starts processes (fork, confine, exec),
//! reaps every process of the sandbox (orphans included), reports foreground exits to
//! the connection that asked, and remembers background processes.
//!
//! Confinement of each started process, in order: new session (its own process group),
//! stdio from the request, working directory, rlimits, every capability dropped
//! (bounding, ambient, effective, permitted, inheritable), `no_new_privs`, landlock
//! (read and execute everywhere in the sandbox's root, write only to /workspace, /tmp and
//! device files), the seccomp filters of `policy/seccomp.json`, inherited fds closed on
//! exec.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, path_beneath_rules,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{SockFlag, accept4};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use seccompiler::BpfProgram;

use crate::launch::Setup;
use crate::protocol::{self, ExecSpec, ExitStatus, ProcessRecord, Reply, Request};

/// The seccomp policy, kept as data in the repository.
pub const SECCOMP_POLICY: &str = include_str!("../policy/seccomp.json");
/// Exited background processes remembered for listing.
const KEEP_EXITED: usize = 256;
/// PATH when the request sets none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Compiles the seccomp policy into the filters applied to every sandboxed process, in
/// the order they are installed.
pub fn seccomp_filters() -> Result<Vec<BpfProgram>, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))?;
    let mut map = seccompiler::compile_from_json(SECCOMP_POLICY.as_bytes(), arch)
        .map_err(|e| format!("seccomp policy: {e}"))?;
    ["deny", "enosys"]
        .iter()
        .map(|name| {
            map.remove(*name)
                .ok_or_else(|| format!("seccomp policy lacks filter `{name}`"))
        })
        .collect()
}

/// Confines init itself, once, after it built the sandbox: every process it starts
/// inherits all of it. rlimits (NOFILE, CORE=0), every capability dropped (bounding,
/// ambient, effective, permitted, inheritable), `no_new_privs`, landlock (read and
/// execute beneath `/`, writes only beneath /workspace and /tmp, device files and
/// /proc), then both seccomp filters.
pub(crate) fn confine_self(setup: &Setup) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    let files = setup.open_files;
    setrlimit(Resource::RLIMIT_NOFILE, files, files).map_err(|e| format!("rlimit nofile: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("rlimit core: {e}"))?;
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    drop_capabilities(last_cap).map_err(|step| format!("drop {step}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    let abi = ABI::V5;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/workspace", "/tmp"],
                AccessFs::from_all(abi),
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev", "/proc"], device)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    for filter in seccomp_filters()? {
        seccompiler::apply_filter(&filter).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Process {
    record: ProcessRecord,
    /// The connection waiting for a foreground process's exit.
    conn: Option<u64>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    fd: OwnedFd,
}

struct Init {
    started_at_micros: i64,
    conns: Vec<Conn>,
    next_conn: u64,
    processes: HashMap<i32, Process>,
    exited: VecDeque<i32>,
    next_log: u64,
    /// The egress listeners, kept for the life of the sandbox so a restarted server can
    /// take them again.
    network: Vec<OwnedFd>,
}

/// Serves the control socket until the sandbox is killed. Returns an exit code only if
/// it cannot start.
pub(crate) fn serve(listener: OwnedFd, network: Vec<OwnedFd>) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_err() {
        return 1;
    }
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        return 1;
    };
    let mut init = Init {
        started_at_micros: now_micros(),
        conns: Vec::new(),
        next_conn: 0,
        processes: HashMap::new(),
        exited: VecDeque::new(),
        next_log: 0,
        network,
    };
    let mut buffer = vec![0u8; protocol::MAX_PACKET];
    loop {
        let (listener_ready, signals_ready, ready_conns) = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                init.conns
                    .iter()
                    .map(|c| PollFd::new(c.fd.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return 1,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let conns: Vec<u64> = fds[2..]
                .iter()
                .zip(&init.conns)
                .filter(|(fd, _)| ready(fd))
                .map(|(_, conn)| conn.id)
                .collect();
            (ready(&fds[0]), ready(&fds[1]), conns)
        };
        if signals_ready {
            while let Ok(Some(_)) = signals.read_signal() {}
            init.reap();
        }
        for id in ready_conns {
            init.serve_conn(id, &mut buffer);
        }
        if listener_ready {
            while let Ok(fd) = accept4(listener.as_fd(), SockFlag::SOCK_CLOEXEC) {
                let id = init.next_conn;
                init.next_conn += 1;
                init.conns.push(Conn { id, fd });
            }
        }
    }
}

impl Init {
    fn conn_fd(&self, id: u64) -> Option<RawFd> {
        self.conns
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.fd.as_raw_fd())
    }

    fn serve_conn(&mut self, id: u64, buffer: &mut [u8]) {
        let Some(fd) = self.conn_fd(id) else { return };
        match protocol::receive::<Request>(fd, buffer) {
            Ok((Request::Network, _)) => {
                let fds: Vec<RawFd> = self.network.iter().map(AsRawFd::as_raw_fd).collect();
                let reply = Reply::Network { count: fds.len() };
                if protocol::send(fd, &reply, &fds).is_err() {
                    self.close_conn(id);
                }
            }
            Ok((request, fds)) => {
                let reply = self.handle(request, fds, id);
                if protocol::send(fd, &reply, &[]).is_err() {
                    self.close_conn(id);
                }
            }
            Err(protocol::ProtocolError::Io(Errno::EAGAIN | Errno::EINTR)) => {}
            Err(_) => self.close_conn(id),
        }
    }

    /// A hung-up connection takes its foreground processes with it.
    fn close_conn(&mut self, id: u64) {
        self.conns.retain(|c| c.id != id);
        for (pid, process) in &self.processes {
            if process.conn == Some(id) {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>, conn: u64) -> Reply {
        match request {
            Request::Hello => Reply::Hello {
                version: protocol::PROTOCOL_VERSION,
                started_at_micros: self.started_at_micros,
            },
            Request::Exec(spec) => self.start(spec, fds, conn),
            Request::Signal { pid, signal } => {
                // Any pid or process group of this pid namespace is the sandbox's own,
                // so a group whose leader already exited can still be ended.
                if pid <= 1 {
                    return Reply::Error {
                        message: format!("no process {pid}"),
                    };
                }
                let Ok(signal) = Signal::try_from(signal) else {
                    return Reply::Error {
                        message: format!("no signal {signal}"),
                    };
                };
                // The whole process group first (the process and what it started).
                let group = kill(Pid::from_raw(-pid), signal);
                let single = kill(Pid::from_raw(pid), signal);
                match (group, single) {
                    (Err(_), Err(error)) => Reply::Error {
                        message: error.to_string(),
                    },
                    _ => Reply::Ok,
                }
            }
            Request::Network => Reply::Error {
                message: "answered by serve_conn".to_owned(),
            },
            Request::List => {
                let mut processes: Vec<ProcessRecord> =
                    self.processes.values().map(|p| p.record.clone()).collect();
                processes.sort_by_key(|p| (p.started_at_micros, p.pid));
                Reply::Processes { processes }
            }
        }
    }

    fn start(&mut self, spec: ExecSpec, fds: Vec<OwnedFd>, conn: u64) -> Reply {
        let failed = |errno: Errno, step: &str| Reply::StartFailed {
            errno: errno as i32,
            step: step.to_owned(),
        };
        if spec.argv.is_empty() {
            return failed(Errno::EINVAL, "argv");
        }
        let path_var = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let Some(program) = resolve(&spec.argv[0], path_var, &spec.cwd) else {
            return failed(Errno::ENOENT, "resolve");
        };
        let Ok(program) = CString::new(program) else {
            return failed(Errno::EINVAL, "argv");
        };
        let argv: Result<Vec<CString>, _> =
            spec.argv.iter().map(|a| CString::new(a.as_str())).collect();
        let env: Result<Vec<CString>, _> = spec
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect();
        let (Ok(argv), Ok(env)) = (argv, env) else {
            return failed(Errno::EINVAL, "argv");
        };
        let Ok(cwd) = CString::new(spec.cwd.as_str()) else {
            return failed(Errno::EINVAL, "cwd");
        };
        let mut log_path = None;
        let stdio: Vec<OwnedFd> = if spec.background {
            self.next_log += 1;
            let path = format!("/tmp/.cordon/process-{}.log", self.next_log);
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .open("/dev/null")
                .and_then(|null| {
                    let log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    let log2 = log.try_clone()?;
                    Ok(vec![
                        OwnedFd::from(null),
                        OwnedFd::from(log),
                        OwnedFd::from(log2),
                    ])
                });
            match opened {
                Ok(fds) => {
                    log_path = Some(path);
                    fds
                }
                Err(error) => {
                    return failed(
                        Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
                        "log",
                    );
                }
            }
        } else if fds.len() == 3 {
            fds
        } else {
            return failed(Errno::EINVAL, "stdio");
        };
        let Ok((report_read, report_write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        else {
            return failed(Errno::EMFILE, "pipe");
        };
        // SAFETY: init is single-threaded, so the child may allocate and run ordinary
        // code until it execs; it never returns from `confine_and_exec`.
        let forked = unsafe { nix::unistd::fork() };
        match forked {
            Err(errno) => failed(errno, "fork"),
            Ok(ForkResult::Child) => {
                drop(report_read);
                let (errno, step) = start_child(&stdio, &cwd, &program, &argv, &env);
                let mut message = (errno as i32).to_le_bytes().to_vec();
                message.extend_from_slice(step.as_bytes());
                let _ = nix::unistd::write(&report_write, &message);
                // SAFETY: ends the forked child at once, without running init's code.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(report_write);
                drop(stdio);
                let mut message = [0u8; 64];
                let len = read_retrying(report_read.as_fd(), &mut message);
                if len >= 4 {
                    let _ = waitpid(child, None);
                    let errno =
                        i32::from_le_bytes([message[0], message[1], message[2], message[3]]);
                    let step = String::from_utf8_lossy(&message[4..len]).into_owned();
                    return Reply::StartFailed { errno, step };
                }
                let pid = child.as_raw();
                self.processes.insert(
                    pid,
                    Process {
                        record: ProcessRecord {
                            pid,
                            argv: spec.argv,
                            background: spec.background,
                            started_at_micros: now_micros(),
                            exited: None,
                            log_path,
                        },
                        conn: (!spec.background).then_some(conn),
                    },
                );
                Reply::Started { pid }
            }
        }
    }

    /// Reaps every exited child: foreground exits are reported, background ones kept.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitStatus { code, signal: None }),
                WaitStatus::Signaled(pid, signal, _) => (
                    pid,
                    ExitStatus {
                        code: 128 + signal as i32,
                        signal: Some(signal as i32),
                    },
                ),
                _ => continue,
            };
            let pid = pid.as_raw();
            let Some(process) = self.processes.get_mut(&pid) else {
                continue;
            };
            match process.conn {
                Some(conn) => {
                    self.processes.remove(&pid);
                    if let Some(fd) = self.conn_fd(conn) {
                        let _ = protocol::send(fd, &Reply::Exited { pid, status: exit }, &[]);
                    }
                }
                None => {
                    process.record.exited = Some(exit);
                    self.exited.push_back(pid);
                    while self.exited.len() > KEEP_EXITED {
                        if let Some(old) = self.exited.pop_front() {
                            self.processes.remove(&old);
                        }
                    }
                }
            }
        }
    }
}

fn read_retrying(fd: BorrowedFd<'_>, buffer: &mut [u8]) -> usize {
    let mut len = 0;
    while len < buffer.len() {
        match nix::unistd::read(fd, &mut buffer[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    len
}

/// Finds the executable the way a shell would: a name with a slash is taken as a path
/// (relative to `cwd`), a bare name is searched in `path_var`.
fn resolve(name: &str, path_var: &str, cwd: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = Path::new(cwd).join(name);
        return executable(&path).then(|| path.to_string_lossy().into_owned());
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}

/// Runs in the forked child (already confined: it inherits init's confinement): its own
/// process group, its stdio, its directory, no other fd across exec. Returns only on
/// failure, with the errno and the step that failed.
fn start_child(
    stdio: &[OwnedFd],
    cwd: &CString,
    program: &CString,
    argv: &[CString],
    env: &[CString],
) -> (Errno, &'static str) {
    if sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).is_err() {
        return (Errno::last(), "sigmask");
    }
    if let Err(errno) = nix::unistd::setsid() {
        return (errno, "setsid");
    }
    for (target, fd) in stdio.iter().enumerate() {
        // SAFETY: dup2 onto 0, 1 and 2, which this child owns; the sources are open fds
        // (received from the server or opened by init), all numbered above 2.
        if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
            return (Errno::last(), "stdio");
        }
    }
    if let Err(errno) = nix::unistd::chdir(cwd.as_c_str()) {
        return (errno, "chdir");
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's fds.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } < 0
    {
        return (Errno::last(), "close_range");
    }
    match nix::unistd::execve(program, argv, env) {
        Err(errno) => (errno, "exec"),
        Ok(never) => match never {},
    }
}

fn drop_capabilities(last_cap: u32) -> Result<(), &'static str> {
    for cap in 0..=last_cap {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes a capability number; unknown numbers fail
        // with EINVAL, which is ignored.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    // SAFETY: clears the ambient set; takes no pointers.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err("capabilities");
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a v3 header and two data structs, which both point to.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } < 0 {
        return Err("capabilities");
    }
    Ok(())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_seccomp_policy_compiles() {
        let filters = seccomp_filters().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    #[test]
    fn resolve_searches_path_and_takes_paths_as_given() {
        assert_eq!(
            resolve("sh", "/nonexistent:/bin", "/"),
            Some("/bin/sh".to_owned())
        );
        assert_eq!(resolve("no-such-tool-here", DEFAULT_PATH, "/"), None);
        assert_eq!(resolve("/bin/sh", "", "/"), Some("/bin/sh".to_owned()));
        assert_eq!(resolve("./sh", "", "/bin"), Some("/bin/./sh".to_owned()));
    }
}
