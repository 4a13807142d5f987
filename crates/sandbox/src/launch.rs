//! The launcher: builds one sandbox and leaves its init process running.
//!
//! The server never forks from its own multi-threaded process. It writes the sandbox's
//! spec on the stdin of `cordon sandbox-launch <dir>`, a fresh single-threaded process
//! (root on the host) that:
//! 1. joins the sandbox's cgroup (before the cgroup namespace exists, so the sandbox's
//!    view of cgroups starts at its own group);
//! 2. binds the control socket `<dir>/ctl.sock` (mode 0600, in a 0700 directory);
//! 3. clones a child into new user, mount, pid, net, uts, ipc and cgroup namespaces,
//!    maps the sandbox's host uid/gid to 1000 inside, and waits for the child to report;
//! 4. prints `{"pid": <host pid of init>}` (or `{"error": ...}`) and exits.
//!
//! The child becomes pid 1 of the sandbox (`crate::init`): it builds the root file system
//! (read-only binds of the system directories, generated /etc, minimal /dev, fresh /proc,
//! tmpfs /tmp and /workspace), pivots into it, brings up loopback and serves the control
//! socket. It outlives the launcher and the server.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Gid, Pid, Uid, pipe2};
use serde::{Deserialize, Serialize};

/// The uid and gid sandbox code runs as, inside its user namespace.
pub const SANDBOX_UID: u32 = 1000;
/// The sandbox's host name.
pub const HOSTNAME: &str = "sandbox";

/// What the server tells the launcher, as JSON on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    pub sandbox_id: String,
    /// The host uid (and gid) the sandbox's processes run as.
    pub uid: u32,
    /// Where /usr, /bin, /lib* and the certificate store come from.
    pub system_root: PathBuf,
    /// cgroup.procs files the launcher writes its pid into before cloning.
    pub cgroup_procs: Vec<PathBuf>,
    pub disk_bytes: u64,
    pub tmp_bytes: u64,
    pub open_files: u64,
    /// With egress: the gateway CA (PEM) to trust, and the listeners to make.
    #[serde(default)]
    pub egress_ca_pem: Option<String>,
}

/// What the launcher prints on its stdout, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LaunchOutcome {
    Ready { pid: i32 },
    Failed { error: String },
}

pub const SOCKET_FILE: &str = "ctl.sock";

/// Read-only entries taken from the system root, relative to it. Directories are bound,
/// files are bound, symlinks are copied; missing ones are skipped.
const SYSTEM_ENTRIES: &[&str] = &[
    "usr",
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "etc/alternatives",
    "etc/ssl",
    "etc/ca-certificates",
    "etc/ld.so.cache",
    "etc/localtime",
    "etc/protocols",
    "etc/services",
];

/// Device nodes bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Entry point of `cordon sandbox-launch DIR`. Must run before any thread is started.
/// Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    let outcome = match launch(dir) {
        Ok(pid) => LaunchOutcome::Ready { pid: pid.as_raw() },
        Err(error) => LaunchOutcome::Failed { error },
    };
    let code = match outcome {
        LaunchOutcome::Ready { .. } => 0,
        LaunchOutcome::Failed { .. } => 1,
    };
    let line = serde_json::to_string(&outcome).unwrap_or_else(|_| "{}".to_owned());
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    code
}

fn launch(dir: &Path) -> Result<Pid, String> {
    let mut spec_bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut spec_bytes)
        .map_err(|e| format!("read the spec from stdin: {e}"))?;
    let spec: LaunchSpec =
        serde_json::from_slice(&spec_bytes).map_err(|e| format!("parse the spec: {e}"))?;
    let trace = std::env::var_os("CORDON_LAUNCH_TRACE").is_some();
    let t0 = std::time::Instant::now();
    let mark = |what: &str| {
        if trace {
            eprintln!("launcher: {what} at {} us", t0.elapsed().as_micros());
        }
    };
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        fs::write(procs, &me).map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
    }
    let listener = control_listener(&dir.join(SOCKET_FILE))?;
    mark("spec read, cgroup joined, socket bound");

    // Two pipes: "maps written" to the child, "ready or error text" from it.
    let (go_read, go_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (report_read, report_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;

    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves like fork: the
    // child gets a copy of this single-threaded process (the launcher starts no threads)
    // and continues on its own copy of the stack.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if ret == 0 {
        drop(go_write);
        drop(report_read);
        let code = child(&spec, listener, go_read, report_write);
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // flushing buffers that belong to the launcher.
        unsafe { libc::_exit(code) };
    }
    let pid = Pid::from_raw(i32::try_from(ret).map_err(|e| e.to_string())?);
    mark("cloned");
    drop(go_read);
    drop(report_write);
    drop(listener);
    let result = (|| {
        let host = spec.uid;
        fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{SANDBOX_UID} {host} 1\n"),
        )
        .map_err(|e| format!("write uid_map: {e}"))?;
        fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{SANDBOX_UID} {host} 1\n"),
        )
        .map_err(|e| format!("write gid_map: {e}"))?;
        nix::unistd::write(&go_write, b"g").map_err(|e| format!("signal child: {e}"))?;
        mark("maps written");
        drop(go_write);
        let report = read_all(report_read).map_err(|e| format!("read child report: {e}"))?;
        if report == b"ok" {
            Ok(())
        } else if report.is_empty() {
            Err("the sandbox init died while setting up".to_owned())
        } else {
            Err(String::from_utf8_lossy(&report).into_owned())
        }
    })();
    mark("child reported");
    match result {
        Ok(()) => Ok(pid),
        Err(error) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(error)
        }
    }
}

fn read_all(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut file = fs::File::from(fd);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut out)?;
    Ok(out)
}

fn control_listener(path: &Path) -> Result<OwnedFd, String> {
    let _ = fs::remove_file(path);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(path).map_err(|e| format!("socket path: {e}"))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod socket: {e}"))?;
    listen(&fd, Backlog::new(128).map_err(|e| e.to_string())?)
        .map_err(|e| format!("listen: {e}"))?;
    Ok(fd)
}

/// The sandbox's pid 1: sets up, reports, then serves until killed.
fn child(spec: &LaunchSpec, listener: OwnedFd, go: OwnedFd, report: OwnedFd) -> i32 {
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(&go, &mut byte), Ok(1)) {
        return 1;
    }
    drop(go);
    let confined = setup(spec).and_then(|setup| {
        crate::init::confine_self(&setup)?;
        Ok(setup.network)
    });
    let setup_network = match confined {
        Ok(network) => network,
        Err(error) => {
            let _ = nix::unistd::write(&report, error.as_bytes());
            return 1;
        }
    };
    if nix::unistd::write(&report, b"ok").is_err() {
        return 1;
    }
    drop(report);
    crate::init::serve(listener, setup_network)
}

/// What setup hands to the init loop.
#[derive(Debug)]
pub(crate) struct Setup {
    pub open_files: u64,
    /// The egress listeners, in the order of `protocol::NETWORK_LISTENERS`.
    pub network: Vec<OwnedFd>,
}

fn setup(spec: &LaunchSpec) -> Result<Setup, String> {
    let trace = std::env::var_os("CORDON_LAUNCH_TRACE").is_some();
    let t0 = std::time::Instant::now();
    let mark = |what: &str| {
        if trace {
            eprintln!("launch: {what} at {} us", t0.elapsed().as_micros());
        }
    };
    let id = Gid::from_raw(SANDBOX_UID);
    nix::unistd::setresgid(id, id, id).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let uid = Uid::from_raw(SANDBOX_UID);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    nix::unistd::sethostname(HOSTNAME).map_err(|e| format!("sethostname: {e}"))?;

    mount_none("/", MsFlags::MS_REC | MsFlags::MS_PRIVATE, "make / private")?;
    // The new root: a small tmpfs mounted over /tmp in this private mount namespace.
    let root = Path::new("/tmp");
    mount_fs(
        "tmpfs",
        root,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=0755,size=4m,nr_inodes=4096",
    )?;
    mark("private root tmpfs");
    for entry in SYSTEM_ENTRIES {
        bind_system_entry(&spec.system_root.join(entry), &root.join(entry))?;
    }
    mark("system binds");
    write_etc(&root.join("etc"))?;
    if let Some(ca) = &spec.egress_ca_pem {
        trust_egress_ca(&spec.system_root, root, ca)?;
    }
    build_dev(&root.join("dev"))?;
    mark("etc and dev");
    mkdir(&root.join("proc"))?;
    mount_fs(
        "proc",
        &root.join("proc"),
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "",
    )?;
    mkdir(&root.join("tmp"))?;
    mount_fs(
        "tmpfs",
        &root.join("tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        &format!("mode=1777,size={}", spec.tmp_bytes),
    )?;
    mkdir(&root.join("workspace"))?;
    let inodes = (spec.disk_bytes / 2048).clamp(1024, 4 << 20);
    mount_fs(
        "tmpfs",
        &root.join("workspace"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        &format!("mode=0755,size={},nr_inodes={inodes}", spec.disk_bytes),
    )?;

    mark("proc, tmp, workspace");
    nix::unistd::chdir(root).map_err(|e| format!("chdir new root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    mount_none(
        "/",
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        "make / read-only",
    )?;
    fs::create_dir_all("/tmp/.cordon").map_err(|e| format!("mkdir /tmp/.cordon: {e}"))?;
    mark("pivot");
    loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    mark("lo up");
    // Made while this process still holds its capabilities (ports below 1024), before
    // any sandbox code runs, so no sandbox process can take these ports first.
    let network = if spec.egress_ca_pem.is_some() {
        egress_listeners()?
    } else {
        Vec::new()
    };
    quiet_stdio()?;
    // Nobody in the sandbox may read this process's memory or files under /proc/1.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl dumpable: {e}"))?;
    Ok(Setup {
        open_files: spec.open_files,
        network,
    })
}

fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))
}

fn mount_none(target: &str, flags: MsFlags, what: &str) -> Result<(), String> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("{what}: {e}"))
}

fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), String> {
    let data = (!data.is_empty()).then_some(data);
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {}: {e}", target.display()))
}

fn bind_system_entry(source: &Path, target: &Path) -> Result<(), String> {
    let Ok(meta) = fs::symlink_metadata(source) else {
        return Ok(());
    };
    if let Some(parent) = target.parent() {
        mkdir(parent)?;
    }
    if meta.file_type().is_symlink() {
        let link =
            fs::read_link(source).map_err(|e| format!("readlink {}: {e}", source.display()))?;
        return symlink(&link, target).map_err(|e| format!("symlink {}: {e}", target.display()));
    }
    if meta.is_dir() {
        mkdir(target)?;
    } else {
        fs::File::create(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    }
    bind_read_only(source, target)
}

/// Binds `source` at `target` read-only, nosuid, nodev, keeping the flags the kernel
/// locks on mounts inherited into a user namespace (a remount that drops them fails).
fn bind_read_only(source: &Path, target: &Path) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {}: {e}", source.display()))?;
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    if let Ok(stat) = statvfs(source) {
        let locked = stat.flags();
        for (fs_flag, ms_flag) in [
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if locked.contains(fs_flag) {
                flags |= ms_flag;
            }
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remount {} read-only: {e}", target.display()))
}

fn write_etc(etc: &Path) -> Result<(), String> {
    mkdir(etc)?;
    let files: [(&str, String); 6] = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        ("resolv.conf", "nameserver 127.0.0.1\noptions ndots:0\n".to_owned()),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"
                .to_owned(),
        ),
        ("hostname", format!("{HOSTNAME}\n")),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content).map_err(|e| format!("write /etc/{name}: {e}"))?;
    }
    Ok(())
}

fn build_dev(dev: &Path) -> Result<(), String> {
    mkdir(dev)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {}: {e}", host.display()))?;
    }
    mkdir(&dev.join("pts"))?;
    mount_fs(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    for (name, to) in [
        ("ptmx", "pts/ptmx"),
        ("shm", "/tmp"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name)).map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    Ok(())
}

/// Points fds 0-2 at /dev/null so that the launcher's pipes to the server close when the
/// launcher exits.
fn quiet_stdio() -> Result<(), String> {
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(null.as_fd()).map_err(|e| format!("dup2 stdin: {e}"))?;
    nix::unistd::dup2_stdout(null.as_fd()).map_err(|e| format!("dup2 stdout: {e}"))?;
    nix::unistd::dup2_stderr(null.as_fd()).map_err(|e| format!("dup2 stderr: {e}"))?;
    Ok(())
}

/// Where the gateway CA and the bundle with it are, inside the sandbox.
pub const EGRESS_CA_FILE: &str = "/etc/cordon/egress-ca.pem";
pub const CA_BUNDLE_FILE: &str = "/etc/cordon/ca-certificates.crt";
const SYSTEM_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Writes the gateway CA and a bundle of the system's roots plus it under /etc/cordon,
/// and binds the bundle over the system bundle, so tools that read only the system
/// store trust the gateway too.
fn trust_egress_ca(system_root: &Path, root: &Path, ca: &str) -> Result<(), String> {
    let dir = root.join("etc/cordon");
    mkdir(&dir)?;
    let mut bundle = fs::read_to_string(system_root.join(SYSTEM_BUNDLE)).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca);
    fs::write(dir.join("egress-ca.pem"), ca).map_err(|e| format!("write the egress CA: {e}"))?;
    let bundle_path = dir.join("ca-certificates.crt");
    fs::write(&bundle_path, bundle).map_err(|e| format!("write the CA bundle: {e}"))?;
    let system = root.join(SYSTEM_BUNDLE);
    if system.exists() {
        mount(
            Some(&bundle_path),
            &system,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind the CA bundle over the system bundle: {e}"))?;
    }
    Ok(())
}

/// The egress listeners on 127.0.0.1: TCP 3128, 80, 443 and UDP 53.
fn egress_listeners() -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{SockaddrIn, setsockopt, sockopt};
    let mut fds = Vec::new();
    for (kind, port) in crate::protocol::NETWORK_LISTENERS {
        let udp = kind == "dns";
        let fd = socket(
            AddressFamily::Inet,
            if udp {
                SockType::Datagram
            } else {
                SockType::Stream
            },
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("egress {kind} socket: {e}"))?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        let addr = SockaddrIn::new(127, 0, 0, 1, port);
        bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
        if !udp {
            listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
                .map_err(|e| format!("listen 127.0.0.1:{port}: {e}"))?;
        }
        fds.push(fd);
    }
    Ok(fds)
}

/// Sets IFF_UP on `lo`, the only interface of the sandbox's network namespace.
fn loopback_up() -> std::io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = CString::new("lo").map_err(std::io::Error::other)?;
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq naming an interface; SIOCGIFFLAGS fills its
    // flags union member and reads nothing else.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union member `ifru_flags` is the one SIOCGIFFLAGS just wrote.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
