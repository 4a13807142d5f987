//! Restores: make a directory exactly equal to a version.
//!
//! 1. Load every manifest and chunk list of the version (verified).
//! 2. Find which files already hold the right content (stat against the index, else
//!    hash them) — those are not rewritten.
//! 3. Stage every other file: fetch, verify and write it into a staging directory
//!    inside the workspace. A missing or corrupt blob stops the restore here, and the
//!    workspace is left as it was (only the staging directory, removed again, existed).
//! 4. Apply: remove what the version does not have, create directories, rename staged
//!    files into place, create symlinks, set modes (directories last, so a read-only
//!    directory is filled first). Nothing found in the directory is ever followed: a
//!    symlink where a directory belongs is unlinked and replaced.
//!
//! With an `owner`, every file-system call runs with the thread's fsuid and fsgid set
//! to that uid, so the files belong to it and its permissions apply.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::blob::{self, BlobStore, Hash};
use crate::error::{ArtifactError, Result};
use crate::fsutil::{self, AsUser, Kind};
use crate::manifest::{ChunkRef, Entry, EntryKind};
use crate::snapshot::{self, SnapshotIndex, StatInfo};
use crate::tree::{self, Content, PathEntry, Tree};

/// Files fetched and staged at once.
const FILE_CONCURRENCY: usize = 4;

/// What a restore changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Files whose content was written.
    pub files_written: u64,
    /// Files that already held the right content (their mode may have been fixed).
    pub files_unchanged: u64,
    pub dirs_created: u64,
    pub symlinks_written: u64,
    /// Entries (of any kind, counting a directory once) removed because the version
    /// does not have them, or replaced by an entry of another kind.
    pub removed: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
}

fn join_error(error: tokio::task::JoinError) -> ArtifactError {
    ArtifactError::BlobStore(format!("a worker task failed: {error}"))
}

fn content_of(entry: &Entry) -> Option<Content> {
    match entry.kind {
        EntryKind::File { content } => Some(Content::Blob(content)),
        EntryKind::ChunkedFile { chunks } => Some(Content::Chunked(chunks)),
        _ => None,
    }
}

/// A file to write: its path, mode, size, content and where it is staged.
#[derive(Debug, Clone)]
struct Staged {
    path: String,
    mode: u32,
    content: Content,
    size: u64,
    name: String,
}

/// Makes `dir` exactly equal to the version `root` and returns what changed and an
/// index of the restored files for the next [`crate::snapshot::snapshot`].
/// `previous`, the index of the directory's last snapshot or restore, lets files whose
/// stat is unchanged be recognised without reading them. `owner`: the uid whose fsuid
/// and fsgid all writes use.
pub async fn restore(
    blobs: &BlobStore,
    root: &str,
    dir: &Path,
    owner: Option<u32>,
    previous: Option<&SnapshotIndex>,
) -> Result<(RestoreStats, SnapshotIndex)> {
    let root_hash = Hash::from_str(root)?;
    let tree = tree::load_tree(blobs, &root_hash).await?;
    let flat = tree.flatten();
    let chunk_lists = Arc::new(
        tree::load_chunk_lists(
            blobs,
            flat.iter().filter_map(|e| match e.entry.kind {
                EntryKind::ChunkedFile { chunks } => Some((chunks, e.entry.size)),
                _ => None,
            }),
        )
        .await?,
    );

    // Open (or create) the workspace and find the files already right.
    let dir_owned = dir.to_path_buf();
    let files: Vec<(String, u32, u64, Content)> = flat
        .iter()
        .filter_map(|e| {
            content_of(&e.entry).map(|c| (e.path.clone(), e.entry.mode, e.entry.size, c))
        })
        .collect();
    let previous_owned = previous.cloned();
    let (root_fd, keep) = tokio::task::spawn_blocking(move || -> Result<_> {
        let _user = AsUser::enter(owner);
        let root_fd = open_or_create(&dir_owned)?;
        let keep: HashSet<String> = files
            .into_iter()
            .filter(|(path, _, size, content)| {
                already_holds(&root_fd, previous_owned.as_ref(), path, *size, *content)
            })
            .map(|(path, ..)| path)
            .collect();
        Ok((root_fd, keep))
    })
    .await
    .map_err(join_error)??;
    let root_fd = Arc::new(root_fd);

    // Stage every file to write.
    let staging_name = format!(
        ".cordon-restore-{}-{}",
        std::process::id(),
        fsutil::now_ns()
    );
    let to_stage: Vec<Staged> = flat
        .iter()
        .filter(|e| !keep.contains(&e.path))
        .filter_map(|e| content_of(&e.entry).map(|content| (e, content)))
        .enumerate()
        .map(|(i, (e, content))| Staged {
            path: e.path.clone(),
            mode: e.entry.mode,
            content,
            size: e.entry.size,
            name: i.to_string(),
        })
        .collect();
    let staging = {
        let root_fd = root_fd.clone();
        let name = staging_name.clone();
        tokio::task::spawn_blocking(move || -> Result<OwnedFd> {
            let _user = AsUser::enter(owner);
            nix::sys::stat::mkdirat(
                root_fd.as_fd(),
                name.as_str(),
                Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| fsutil::errno_error("creating the staging directory", &name, e))?;
            fsutil::open_dir(&*root_fd, &name)
                .map_err(|e| fsutil::errno_error("opening the staging directory", &name, e))
        })
        .await
        .map_err(join_error)??
    };
    let staging = Arc::new(staging);
    let staged = futures_util::stream::iter(to_stage.iter().cloned())
        .map(|file| stage_file(blobs, staging.clone(), chunk_lists.clone(), owner, file))
        .buffer_unordered(FILE_CONCURRENCY)
        .try_collect::<Vec<u64>>()
        .await;
    let bytes_written = match staged {
        Ok(sizes) => sizes.iter().sum::<u64>(),
        Err(error) => {
            let root_fd = root_fd.clone();
            let name = staging_name.clone();
            let cleanup = tokio::task::spawn_blocking(move || {
                let _user = AsUser::enter(owner);
                fsutil::remove_tree(&root_fd, name.as_bytes())
            })
            .await;
            if let Ok(Err(errno)) = cleanup {
                tracing::warn!(%errno, staging = %staging_name, "could not remove the staging directory");
            }
            return Err(error);
        }
    };

    // Apply, then index what is there.
    let staged_names: HashMap<String, String> = to_stage
        .into_iter()
        .map(|file| (file.path, file.name))
        .collect();
    let (mut stats, index) = tokio::task::spawn_blocking(move || -> Result<_> {
        let _user = AsUser::enter(owner);
        let mut apply = Apply {
            tree: &tree,
            staging: &staging,
            staging_name: &staging_name,
            staged: &staged_names,
            stats: RestoreStats::default(),
        };
        let applied = apply.apply_dir(&root_fd, "", tree.root_entries());
        let stats = apply.stats;
        // The staging directory is empty unless applying failed half way.
        let _ = fsutil::remove_tree(&root_fd, staging_name.as_bytes());
        applied?;
        let index = index_of(&root_fd, &tree, &flat);
        Ok((stats, index))
    })
    .await
    .map_err(join_error)??;
    stats.bytes_written = bytes_written;
    Ok((stats, index))
}

fn open_or_create(dir: &Path) -> Result<OwnedFd> {
    let open = || {
        nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    match open() {
        Err(Errno::ENOENT) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| ArtifactError::io("creating the workspace", dir.display(), e))?;
            open()
        }
        other => other,
    }
    .map_err(|e| ArtifactError::io("opening the workspace", dir.display(), e.into()))
}

/// Whether the file at `path` already holds `content`: by its stat against the index
/// when that is trusted, else by hashing it.
fn already_holds(
    root: &OwnedFd,
    index: Option<&SnapshotIndex>,
    path: &str,
    size: u64,
    content: Content,
) -> bool {
    let Ok(fd) = fsutil::open_beneath(root, path, OFlag::O_PATH, 0) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(&fd) else {
        return false;
    };
    if fsutil::kind_of(&stat) != Kind::File || stat.st_size as u64 != size {
        return false;
    }
    if let Some(known) = index.and_then(|i| i.trusted(path, &StatInfo::of(&stat))) {
        return known == content;
    }
    let Ok(file) = fsutil::open_beneath(root, path, OFlag::O_RDONLY, 0) else {
        return false;
    };
    matches!(snapshot::content_hash_of(std::fs::File::from(file), size), Ok(found) if found == content)
}

/// Fetches, verifies and writes one file into the staging directory. Returns its size.
async fn stage_file(
    blobs: &BlobStore,
    staging: Arc<OwnedFd>,
    chunk_lists: Arc<HashMap<Hash, Vec<ChunkRef>>>,
    owner: Option<u32>,
    file: Staged,
) -> Result<u64> {
    let create = {
        let staging = staging.clone();
        let file = file.clone();
        move || -> Result<std::fs::File> {
            let fd = nix::fcntl::openat(
                staging.as_fd(),
                file.name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| fsutil::errno_error("staging", &file.path, e))?;
            Ok(std::fs::File::from(fd))
        }
    };
    let finish = |handle: &std::fs::File, path: &str, mode: u32| -> Result<()> {
        nix::sys::stat::fchmod(handle.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| fsutil::errno_error("setting the mode of", path, e))
    };
    match file.content {
        Content::Blob(hash) => {
            // A local store is read on the blocking thread below.
            let compressed = if blobs.is_local() {
                None
            } else {
                Some(blobs.get_compressed(&hash).await?)
            };
            let local = blobs.clone();
            tokio::task::spawn_blocking(move || -> Result<u64> {
                let compressed = match compressed {
                    Some(bytes) => bytes.to_vec(),
                    None => local
                        .read_local(&hash)
                        .unwrap_or_else(|| Err(ArtifactError::missing(hash, "not local")))?,
                };
                let bytes = blob::decode(&hash, &compressed)?;
                let _user = AsUser::enter(owner);
                let mut handle = create()?;
                handle
                    .write_all(&bytes)
                    .map_err(|e| ArtifactError::io("writing", &file.path, e))?;
                finish(&handle, &file.path, file.mode)?;
                Ok(bytes.len() as u64)
            })
            .await
            .map_err(join_error)?
        }
        Content::Chunked(list) => {
            let chunks = chunk_lists
                .get(&list)
                .cloned()
                .ok_or_else(|| ArtifactError::missing(list, "chunk list not loaded"))?;
            let mut handle = tokio::task::spawn_blocking(move || {
                let _user = AsUser::enter(owner);
                create()
            })
            .await
            .map_err(join_error)??;
            let mut fetched = futures_util::stream::iter(chunks)
                .map(|chunk| async move {
                    let compressed = blobs.get_compressed(&chunk.hash).await?;
                    Ok::<_, ArtifactError>((chunk.hash, compressed))
                })
                .buffered(4);
            while let Some(next) = fetched.next().await {
                let (hash, compressed) = next?;
                let path = file.path.clone();
                handle = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
                    let bytes = blob::decode(&hash, &compressed)?;
                    let _user = AsUser::enter(owner);
                    handle
                        .write_all(&bytes)
                        .map_err(|e| ArtifactError::io("writing", &path, e))?;
                    Ok(handle)
                })
                .await
                .map_err(join_error)??;
            }
            let (path, mode) = (file.path.clone(), file.mode);
            tokio::task::spawn_blocking(move || {
                let _user = AsUser::enter(owner);
                finish(&handle, &path, mode)
            })
            .await
            .map_err(join_error)??;
            Ok(file.size)
        }
        Content::Pending(_) => Ok(0),
    }
}

struct Apply<'a> {
    tree: &'a Tree,
    staging: &'a OwnedFd,
    staging_name: &'a str,
    staged: &'a HashMap<String, String>,
    stats: RestoreStats,
}

impl Apply<'_> {
    fn apply_dir(&mut self, dir: &OwnedFd, dir_path: &str, entries: &[Entry]) -> Result<()> {
        let wanted: HashSet<&[u8]> = entries.iter().map(|e| e.name.as_bytes()).collect();
        let existing =
            fsutil::list_dir(dir).map_err(|e| fsutil::errno_error("listing", dir_path, e))?;
        for name in existing {
            let is_staging = dir_path.is_empty() && name == self.staging_name.as_bytes();
            if !is_staging && !wanted.contains(name.as_slice()) {
                fsutil::remove_tree(dir, &name).map_err(|e| {
                    fsutil::errno_error(
                        "removing",
                        &tree::join(dir_path, &String::from_utf8_lossy(&name)),
                        e,
                    )
                })?;
                self.stats.removed += 1;
            }
        }
        for entry in entries {
            let path = tree::join(dir_path, &entry.name);
            let name = entry.name.as_str();
            let existing = match fsutil::stat_at(dir, name.as_bytes()) {
                Ok(stat) => Some(stat),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(fsutil::errno_error("reading the status of", &path, e)),
            };
            let existing_kind = existing.as_ref().map(fsutil::kind_of);
            let remove = |this: &mut Self| -> Result<()> {
                fsutil::remove_tree(dir, name.as_bytes())
                    .map_err(|e| fsutil::errno_error("removing", &path, e))?;
                this.stats.removed += 1;
                Ok(())
            };
            match &entry.kind {
                EntryKind::Dir { manifest } => {
                    match existing_kind {
                        Some(Kind::Dir) => {
                            if existing.is_some_and(|s| s.st_mode & 0o700 != 0o700) {
                                fsutil::make_dir_usable(dir, name.as_bytes())
                                    .map_err(|e| fsutil::errno_error("opening up", &path, e))?;
                            }
                        }
                        other => {
                            if other.is_some() {
                                remove(self)?;
                            }
                            nix::sys::stat::mkdirat(
                                dir.as_fd(),
                                name,
                                Mode::from_bits_truncate(0o700),
                            )
                            .map_err(|e| fsutil::errno_error("creating directory", &path, e))?;
                            self.stats.dirs_created += 1;
                        }
                    }
                    let child = nix::fcntl::openat(
                        dir.as_fd(),
                        name,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| fsutil::errno_error("opening directory", &path, e))?;
                    let children = self.tree.entries(manifest);
                    self.apply_dir(&child, &path, children)?;
                    nix::sys::stat::fchmod(child.as_fd(), Mode::from_bits_truncate(entry.mode))
                        .map_err(|e| fsutil::errno_error("setting the mode of", &path, e))?;
                }
                EntryKind::File { .. } | EntryKind::ChunkedFile { .. } => {
                    match self.staged.get(&path) {
                        Some(staged) => {
                            if existing_kind == Some(Kind::Dir) {
                                remove(self)?;
                            }
                            nix::fcntl::renameat(
                                self.staging.as_fd(),
                                staged.as_str(),
                                dir.as_fd(),
                                name,
                            )
                            .map_err(|e| fsutil::errno_error("moving into place", &path, e))?;
                            self.stats.files_written += 1;
                        }
                        None => {
                            let mode = existing.map(|s| s.st_mode & 0o7777);
                            if existing_kind != Some(Kind::File) {
                                return Err(ArtifactError::WorkspaceUnsupported(format!(
                                    "`{path}` changed while the workspace was being restored"
                                )));
                            }
                            if mode != Some(entry.mode) {
                                nix::sys::stat::fchmodat(
                                    dir.as_fd(),
                                    name,
                                    Mode::from_bits_truncate(entry.mode),
                                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                                )
                                .map_err(|e| {
                                    fsutil::errno_error("setting the mode of", &path, e)
                                })?;
                            }
                            self.stats.files_unchanged += 1;
                        }
                    }
                }
                EntryKind::Symlink { target } => {
                    if existing_kind == Some(Kind::Symlink) {
                        let current = nix::fcntl::readlinkat(dir.as_fd(), name).ok();
                        if current.as_deref() == Some(std::ffi::OsStr::new(target.as_str())) {
                            continue;
                        }
                    }
                    if existing_kind.is_some() {
                        remove(self)?;
                    }
                    nix::unistd::symlinkat(target.as_str(), dir.as_fd(), name)
                        .map_err(|e| fsutil::errno_error("creating symlink", &path, e))?;
                    self.stats.symlinks_written += 1;
                }
            }
        }
        Ok(())
    }
}

/// An index of the files just restored: their stats now, and the version's manifests.
fn index_of(root: &OwnedFd, tree: &Tree, flat: &[PathEntry]) -> SnapshotIndex {
    let taken_at_ns = fsutil::now_ns();
    let mut files = HashMap::new();
    for entry in flat {
        let Some(content) = content_of(&entry.entry) else {
            continue;
        };
        let Ok(fd) = fsutil::open_beneath(root, &entry.path, OFlag::O_PATH, 0) else {
            continue;
        };
        if let Ok(stat) = nix::sys::stat::fstat(&fd) {
            files.insert(entry.path.clone(), (StatInfo::of(&stat), content));
        }
    }
    SnapshotIndex {
        files,
        manifests: tree.dirs.keys().copied().collect(),
        taken_at_ns,
    }
}
