//! File operations on a sandbox's /workspace from the host, safe against paths and
//! symlinks that try to leave it.
//!
//! Every lookup starts from a directory fd of the workspace root and goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so `..`, absolute symlinks and
//! `/proc` magic links that would leave the workspace fail in the kernel (EXDEV/ELOOP),
//! atomically with the lookup: a sandbox swapping a directory for a symlink between
//! two calls gains nothing. Names are created and removed only relative to a directory
//! fd resolved that way, acting as the sandbox's user (its filesystem uid and gid).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use serde::Serialize;

use crate::manager::{SandboxError, Workspace};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// One entry of a listing, or the result of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative to /workspace.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    /// Modification time, microseconds since the epoch.
    pub mtime_micros: i64,
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Splits a workspace-relative path into its components, refusing absolute paths and
/// `..`. An empty result is the workspace root.
pub fn components(path: &str) -> Result<Vec<&str>> {
    if path.contains('\0') {
        return Err(SandboxError::Invalid(
            "paths must not contain NUL".to_owned(),
        ));
    }
    if path.starts_with('/') {
        return Err(SandboxError::PathOutsideWorkspace);
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(SandboxError::PathOutsideWorkspace),
            name if name.len() > 255 => {
                return Err(SandboxError::Invalid(
                    "a path component is longer than 255 bytes".to_owned(),
                ));
            }
            name => parts.push(name),
        }
    }
    if path.len() > 4096 {
        return Err(SandboxError::Invalid(
            "the path is longer than 4096 bytes".to_owned(),
        ));
    }
    Ok(parts)
}

fn errno_error(errno: Errno, path: &str) -> SandboxError {
    match errno {
        Errno::EXDEV | Errno::ELOOP => SandboxError::PathOutsideWorkspace,
        Errno::ENOENT => SandboxError::NotFound(format!("`{path}`")),
        Errno::ENOSPC | Errno::EDQUOT => SandboxError::DiskQuota,
        Errno::ENOTDIR => SandboxError::Invalid(format!("a parent of `{path}` is not a directory")),
        Errno::EISDIR => SandboxError::Invalid(format!("`{path}` is a directory")),
        Errno::ENOTEMPTY => {
            SandboxError::Invalid(format!("`{path}` is a non-empty directory (use recursive)"))
        }
        Errno::ESRCH => SandboxError::Lost("its init process is gone".to_owned()),
        other => SandboxError::Io(std::io::Error::from(other)),
    }
}

/// Switches this thread's filesystem uid and gid to the sandbox's for the guard's
/// lifetime. The workspace is a tmpfs of the sandbox's user namespace, where the host's
/// root has no mapping (creating a file as root fails with EOVERFLOW); acting as the
/// sandbox's user also means the host side can do nothing its owner could not.
struct AsSandboxUser;

impl AsSandboxUser {
    fn enter(uid: u32) -> Self {
        // SAFETY: setfsuid/setfsgid change only this thread's filesystem ids; they take
        // plain integers and cannot fail in a way that leaves memory unsafe.
        unsafe {
            libc::setfsgid(uid);
            libc::setfsuid(uid);
        }
        AsSandboxUser
    }
}

impl Drop for AsSandboxUser {
    fn drop(&mut self) {
        // SAFETY: as above; back to the thread's real ids (root, for the server).
        unsafe {
            libc::setfsuid(libc::getuid());
            libc::setfsgid(libc::getgid());
        }
    }
}

impl Workspace {
    fn root_fd(&self) -> Result<OwnedFd> {
        nix::fcntl::open(
            &self.root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::ENOENT | Errno::ESRCH => {
                SandboxError::Lost("its init process is gone".to_owned())
            }
            other => SandboxError::Io(std::io::Error::from(other)),
        })
    }

    /// openat2 beneath the workspace root.
    fn open_beneath(
        &self,
        root: &OwnedFd,
        parts: &[&str],
        flags: OFlag,
        mode: u32,
    ) -> Result<OwnedFd, Errno> {
        let joined = if parts.is_empty() {
            ".".to_owned()
        } else {
            parts.join("/")
        };
        let path = CString::new(joined).map_err(|_| Errno::EINVAL)?;
        // SAFETY: open_how is plain old data; zero is a valid value for every field.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | OFlag::O_CLOEXEC).bits() as u64;
        how.mode = if flags.contains(OFlag::O_CREAT) {
            u64::from(mode)
        } else {
            0
        };
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 reads the NUL-terminated path and `how` (of the size passed),
        // both alive for the call; it returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Reads a file of at most `max` bytes.
    pub fn read(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let parts = components(path)?;
        let root = self.root_fd()?;
        let _user = AsSandboxUser::enter(self.uid);
        let fd = self
            .open_beneath(&root, &parts, OFlag::O_RDONLY, 0)
            .map_err(|e| errno_error(e, path))?;
        let stat = fstat(&fd).map_err(|e| errno_error(e, path))?;
        if kind(&stat) != FileKind::File {
            return Err(SandboxError::Invalid(format!(
                "`{path}` is not a regular file"
            )));
        }
        if stat.st_size as u64 > max {
            return Err(SandboxError::Invalid(format!(
                "`{path}` has {} bytes, more than the {max} a download may have",
                stat.st_size
            )));
        }
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::with_capacity(stat.st_size as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, max), &mut bytes)?;
        Ok(bytes)
    }

    /// Writes a file (creating missing parent directories), replacing it atomically:
    /// a failed write (quota) leaves the old content in place.
    pub fn write(&self, path: &str, bytes: &[u8], mode: Option<u32>) -> Result<FileEntry> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(SandboxError::Invalid(
                "the path names the workspace itself".to_owned(),
            ));
        };
        let mode = mode.unwrap_or(0o644) & 0o7777 & !0o6000;
        let root = self.root_fd()?;
        let _user = AsSandboxUser::enter(self.uid);
        let parent = self.make_dirs(&root, parents, path)?;
        let temp = format!(".cordon-upload-{}-{}", std::process::id(), unique());
        let fd = nix::fcntl::openat(
            &parent,
            temp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| errno_error(e, path))?;
        let written = (|| -> Result<(), Errno> {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))?;
            let mut offset = 0;
            while offset < bytes.len() {
                offset += nix::unistd::write(&fd, &bytes[offset..])?;
            }
            Ok(())
        })();
        let renamed =
            written.and_then(|()| nix::fcntl::renameat(&parent, temp.as_str(), &parent, *name));
        if let Err(errno) = renamed {
            let _ = nix::unistd::unlinkat(
                &parent,
                temp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(errno_error(errno, path));
        }
        let stat = fstat(&fd).map_err(|e| errno_error(e, path))?;
        Ok(entry(parts.join("/"), &stat))
    }

    /// Opens (creating as needed) each directory of `parents`, beneath the root.
    fn make_dirs(&self, root: &OwnedFd, parents: &[&str], path: &str) -> Result<OwnedFd> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        for depth in 1..=parents.len() {
            match self.open_beneath(root, &parents[..depth], dir_flags, 0) {
                Ok(_) => continue,
                Err(Errno::ENOENT) => {
                    let above = self
                        .open_beneath(root, &parents[..depth - 1], dir_flags, 0)
                        .map_err(|e| errno_error(e, path))?;
                    let name = parents[depth - 1];
                    match nix::sys::stat::mkdirat(&above, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(errno_error(errno, path)),
                    }
                }
                Err(errno) => return Err(errno_error(errno, path)),
            }
        }
        self.open_beneath(root, parents, dir_flags, 0)
            .map_err(|e| errno_error(e, path))
    }

    /// Removes a file, a symlink (not its target) or a directory (`recursive` for a
    /// non-empty one).
    pub fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(SandboxError::Invalid(
                "the workspace itself cannot be removed".to_owned(),
            ));
        };
        let root = self.root_fd()?;
        let _user = AsSandboxUser::enter(self.uid);
        let parent = self
            .open_beneath(&root, parents, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map_err(|e| errno_error(e, path))?;
        remove_at(&parent, name, recursive).map_err(|e| errno_error(e, path))
    }

    /// Lists a directory, sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<FileEntry>> {
        let parts = components(dir)?;
        let root = self.root_fd()?;
        let _user = AsSandboxUser::enter(self.uid);
        let fd = self
            .open_beneath(&root, &parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| errno_error(e, dir))?;
        let prefix = parts.join("/");
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(|e| errno_error(e, dir))?;
        let dir_fd = listing.as_fd().try_clone_to_owned()?;
        let mut entries = Vec::new();
        for item in listing.iter() {
            let item = item.map_err(|e| errno_error(e, dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let Ok(stat) = fstatat(&dir_fd, item.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            entries.push(entry(path, &stat));
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }
}

fn remove_at(parent: &OwnedFd, name: &str, recursive: bool) -> Result<(), Errno> {
    let stat = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if kind(&stat) != FileKind::Directory {
        return nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    if recursive {
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let dir_fd = fd.try_clone().map_err(|_| Errno::EMFILE)?;
        let mut listing = nix::dir::Dir::from_fd(fd)?;
        let names: Vec<String> = listing
            .iter()
            .filter_map(|item| item.ok())
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        for child in names {
            remove_at(&dir_fd, &child, true)?;
        }
    }
    nix::unistd::unlinkat(parent, name, nix::unistd::UnlinkatFlags::RemoveDir)
}

fn kind(stat: &FileStat) -> FileKind {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => FileKind::File,
        SFlag::S_IFDIR => FileKind::Directory,
        SFlag::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn entry(path: String, stat: &FileStat) -> FileEntry {
    FileEntry {
        path,
        kind: kind(stat),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode: stat.st_mode & 0o7777,
        mtime_micros: stat.st_mtime.saturating_mul(1_000_000) + stat.st_mtime_nsec / 1000,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn components_refuse_leaving_the_workspace() {
        assert_eq!(components("a/./b//c").unwrap(), vec!["a", "b", "c"]);
        assert!(components("").unwrap().is_empty());
        assert!(matches!(
            components("/etc/passwd"),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        assert!(matches!(
            components("a/../../b"),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        assert!(matches!(
            components(".."),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        assert!(matches!(components("a\0b"), Err(SandboxError::Invalid(_))));
    }

    #[test]
    fn symlinks_out_of_a_plain_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("../", root.join("up")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink("../sub", root.join("sub/self")).unwrap();
        let ws = Workspace {
            root: root.clone(),
            uid: nix::unistd::getuid().as_raw(),
        };
        assert!(matches!(
            ws.read("out/passwd", 1 << 20),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        assert!(matches!(
            ws.write("up/escape", b"x", None),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        assert!(!dir.path().join("escape").exists());
        assert!(matches!(
            ws.list("out"),
            Err(SandboxError::PathOutsideWorkspace)
        ));
        // A symlink that stays inside is followed.
        ws.write("sub/self/inner.txt", b"hello", Some(0o600))
            .unwrap();
        assert_eq!(ws.read("sub/inner.txt", 100).unwrap(), b"hello");
        let listing = ws.list("sub").unwrap();
        let inner = listing.iter().find(|e| e.path == "sub/inner.txt").unwrap();
        assert_eq!(
            (inner.size, inner.mode, inner.kind),
            (5, 0o600, FileKind::File)
        );
        // Removing a symlink removes the link, never its target.
        ws.remove("out", false).unwrap();
        assert!(std::path::Path::new("/etc/passwd").exists());
        ws.write("deep/a/b/c.txt", b"1", None).unwrap();
        assert!(matches!(
            ws.remove("deep", false),
            Err(SandboxError::Invalid(_))
        ));
        ws.remove("deep", true).unwrap();
        assert!(matches!(
            ws.read("deep/a/b/c.txt", 10),
            Err(SandboxError::NotFound(_))
        ));
        assert!(matches!(ws.read("sub", 10), Err(SandboxError::Invalid(_))));
        assert!(matches!(
            ws.read("sub/inner.txt", 2),
            Err(SandboxError::Invalid(_))
        ));
    }
}
