//! File-system helpers that never follow a symlink and never leave the directory they
//! start from: every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from the workspace's root, every name with the `*at` calls and `O_NOFOLLOW`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::error::ArtifactError;

/// Runs file-system calls on this thread as another user: sets the thread's fsuid and
/// fsgid, and puts the previous ones back when dropped. Files it creates are owned by
/// that user, and its permission checks are that user's (a workspace on a tmpfs
/// mounted in the sandbox's user namespace refuses files created by root with
/// EOVERFLOW).
#[derive(Debug)]
pub(crate) struct AsUser {
    previous: Option<(Uid, Gid)>,
}

impl AsUser {
    pub fn enter(owner: Option<u32>) -> AsUser {
        let previous = owner.map(|uid| {
            let gid = nix::unistd::setfsgid(Gid::from_raw(uid));
            let uid = nix::unistd::setfsuid(Uid::from_raw(uid));
            (uid, gid)
        });
        AsUser { previous }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.previous {
            nix::unistd::setfsuid(uid);
            nix::unistd::setfsgid(gid);
        }
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other(&'static str),
}

pub(crate) fn kind_of(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFCHR => Kind::Other("a character device"),
        SFlag::S_IFBLK => Kind::Other("a block device"),
        SFlag::S_IFIFO => Kind::Other("a fifo"),
        SFlag::S_IFSOCK => Kind::Other("a socket"),
        _ => Kind::Other("of an unknown kind"),
    }
}

/// Nanoseconds since the epoch.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn mtime_ns(stat: &FileStat) -> i64 {
    stat.st_mtime * 1_000_000_000 + stat.st_mtime_nsec
}

pub(crate) fn ctime_ns(stat: &FileStat) -> i64 {
    stat.st_ctime * 1_000_000_000 + stat.st_ctime_nsec
}

/// An errno as an error about `path`.
pub(crate) fn errno_error(op: &'static str, path: &str, errno: Errno) -> ArtifactError {
    let shown = if path.is_empty() { "." } else { path };
    ArtifactError::io(op, shown, std::io::Error::from(errno))
}

/// Opens `path` (relative, `""` for the root itself) beneath `root`, following no
/// symlink anywhere on the way.
pub(crate) fn open_beneath(
    root: impl AsFd,
    path: &str,
    flags: OFlag,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let path = if path.is_empty() { "." } else { path };
    let mut how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    if flags.contains(OFlag::O_CREAT) {
        how = how.mode(Mode::from_bits_truncate(mode));
    }
    loop {
        match nix::fcntl::openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Opens a directory beneath `root` for reading its entries.
pub(crate) fn open_dir(root: impl AsFd, path: &str) -> Result<OwnedFd, Errno> {
    open_beneath(root, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
}

/// The names in a directory, without `.` and `..`, as raw bytes.
pub(crate) fn list_dir(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut listing = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// `lstat` of a name in a directory.
pub(crate) fn stat_at(dir: &OwnedFd, name: &[u8]) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Removes a name from a directory, whatever it is, without following symlinks:
/// directories are emptied first (made writable if they were not).
pub(crate) fn remove_tree(dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    let stat = match stat_at(dir, name) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if kind_of(&stat) == Kind::Dir {
        if stat.st_mode & 0o700 != 0o700 {
            make_dir_usable(dir, name)?;
        }
        let child = nix::fcntl::openat(
            dir.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for entry in list_dir(&child)? {
            remove_tree(&child, &entry)?;
        }
        nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir)
    } else {
        nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
    }
}

/// Gives a directory's owner rwx on it, so that a non-root owner can list and change
/// it (its final mode is set again afterwards). The name was just seen to be a
/// directory; `fchmodat` cannot refuse symlinks on Linux, but a workspace being
/// restored or snapshotted is quiesced.
pub(crate) fn make_dir_usable(dir: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    let stat = stat_at(dir, name)?;
    if kind_of(&stat) != Kind::Dir {
        return Err(Errno::ENOTDIR);
    }
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate((stat.st_mode & 0o7777) | 0o700),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}
