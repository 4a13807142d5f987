//! Snapshots: a workspace directory recorded as a version (a root hash) in the blob
//! store. The walk never follows a symlink and never leaves the directory; files are
//! hashed, chunked and uploaded several at a time; an index of the previous snapshot
//! (like git's index) lets an incremental snapshot re-read only the files whose stat
//! changed.
//!
//! A version holds regular files, directories and symlinks that stay inside the
//! workspace. Anything else (a device, a fifo, a socket, a symlink that is absolute or
//! climbs out, a name that is not UTF-8) is refused with `WORKSPACE_UNSUPPORTED`
//! naming the path, rather than silently dropped: a version restores exactly what it
//! recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use cordon_core::VersionStats;
use futures_util::{StreamExt, TryStreamExt};
use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use crate::blob::{BlobStore, Hash, PreparedBlob};
use crate::chunk::{CHUNKING_THRESHOLD, Chunker};
use crate::error::{ArtifactError, Result};
use crate::fsutil::{self, Kind};
use crate::manifest::{self, ChunkRef};
use crate::tree::{self, Content, IO_CONCURRENCY, Node};

/// Files hashed and uploaded at once: enough to keep two cores busy while others wait
/// on the store.
const FILE_CONCURRENCY: usize = 4;

/// A file's stat is trusted only if its mtime and ctime are older than the index by at
/// least this: file systems stamp times from a clock that advances in ticks (at most
/// 10 ms), so a file changed right after it was read can keep the same mtime.
const RACY_WINDOW_NS: i64 = 20_000_000;

/// How much a snapshot may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries of any kind (files, directories, symlinks).
    pub max_files: u64,
    /// Sum of the files' sizes.
    pub max_total_bytes: u64,
    /// Size of one file.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_files: 200_000,
            max_total_bytes: 16 << 30,
            max_file_bytes: 4 << 30,
        }
    }
}

/// A recorded version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// BLAKE3 (hex) of the root directory manifest.
    pub root: String,
    pub stats: VersionStats,
}

/// What the index remembers of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatInfo {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

impl StatInfo {
    pub(crate) fn of(stat: &FileStat) -> StatInfo {
        StatInfo {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size as u64,
            mtime_ns: fsutil::mtime_ns(stat),
            ctime_ns: fsutil::ctime_ns(stat),
            mode: stat.st_mode & 0o7777,
        }
    }
}

/// An in-memory cache of a directory's files as last recorded: path -> (device,
/// inode, size, mtime, ctime, mode, content hash), plus the directory manifests known
/// to be stored. Made by [`snapshot`] and by [`crate::restore::restore`]; pass it to
/// the next snapshot of the same directory so that unchanged files are not re-read.
///
/// It is valid only while the version it came from is kept (its blobs are what the
/// next snapshot reuses without asking the store): drop it when that version is
/// deleted.
#[derive(Debug, Clone, Default)]
pub struct SnapshotIndex {
    pub(crate) files: HashMap<String, (StatInfo, Content)>,
    pub(crate) manifests: HashSet<Hash>,
    /// Wall-clock time (ns) taken before the stats were read.
    pub(crate) taken_at_ns: i64,
}

impl SnapshotIndex {
    /// Files remembered.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is remembered.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The content of `path` if its stat is unchanged and old enough to be trusted.
    pub(crate) fn trusted(&self, path: &str, now: &StatInfo) -> Option<Content> {
        let (known, content) = self.files.get(path)?;
        let settled = known.mtime_ns.max(known.ctime_ns) + RACY_WINDOW_NS < self.taken_at_ns;
        (settled && known == now).then_some(*content)
    }
}

/// A file the walk found that must be read and hashed.
#[derive(Debug)]
struct ToHash {
    path: String,
}

struct Walk<'a> {
    root: &'a OwnedFd,
    previous: Option<&'a SnapshotIndex>,
    limits: &'a Limits,
    entries: u64,
    total_bytes: u64,
    to_hash: Vec<ToHash>,
    /// Every file seen: path, stat, content (or `Pending(i)` into `to_hash`).
    files: Vec<(String, StatInfo, Content)>,
}

impl Walk<'_> {
    fn walk_dir(&mut self, path: &str) -> Result<BTreeMap<String, Node>> {
        let dir = fsutil::open_dir(self.root, path)
            .map_err(|e| fsutil::errno_error("opening directory", path, e))?;
        let names = fsutil::list_dir(&dir).map_err(|e| fsutil::errno_error("listing", path, e))?;
        let mut children = BTreeMap::new();
        for name in names {
            let name = String::from_utf8(name).map_err(|e| {
                ArtifactError::WorkspaceUnsupported(format!(
                    "`{}` has a name that is not UTF-8",
                    tree::join(path, &String::from_utf8_lossy(e.as_bytes()))
                ))
            })?;
            let child = tree::join(path, &name);
            self.entries += 1;
            if self.entries > self.limits.max_files {
                return Err(ArtifactError::WorkspaceUnsupported(format!(
                    "more than {} entries",
                    self.limits.max_files
                )));
            }
            let stat = fsutil::stat_at(&dir, name.as_bytes())
                .map_err(|e| fsutil::errno_error("reading the status of", &child, e))?;
            let node = match fsutil::kind_of(&stat) {
                Kind::File => {
                    let info = StatInfo::of(&stat);
                    if info.size > self.limits.max_file_bytes {
                        return Err(ArtifactError::WorkspaceUnsupported(format!(
                            "`{child}` has {} bytes, more than the {} a file may have",
                            info.size, self.limits.max_file_bytes
                        )));
                    }
                    self.total_bytes += info.size;
                    if self.total_bytes > self.limits.max_total_bytes {
                        return Err(ArtifactError::WorkspaceUnsupported(format!(
                            "more than {} bytes of files",
                            self.limits.max_total_bytes
                        )));
                    }
                    let content = match self.previous.and_then(|p| p.trusted(&child, &info)) {
                        Some(content) => content,
                        None => {
                            self.to_hash.push(ToHash {
                                path: child.clone(),
                            });
                            Content::Pending(self.to_hash.len() - 1)
                        }
                    };
                    self.files.push((child, info, content));
                    Node::File {
                        mode: stat.st_mode & manifest::MODE_MASK,
                        size: info.size,
                        content,
                    }
                }
                Kind::Dir => Node::Dir {
                    mode: stat.st_mode & manifest::MODE_MASK,
                    children: self.walk_dir(&child)?,
                },
                Kind::Symlink => {
                    let target = nix::fcntl::readlinkat(&dir, name.as_str())
                        .map_err(|e| fsutil::errno_error("reading the symlink", &child, e))?
                        .into_string()
                        .map_err(|_| {
                            ArtifactError::WorkspaceUnsupported(format!(
                                "`{child}` is a symlink whose target is not UTF-8"
                            ))
                        })?;
                    if !tree::symlink_stays_inside(&child, &target) {
                        return Err(ArtifactError::WorkspaceUnsupported(format!(
                            "`{child}` is a symlink to `{target}`, outside the workspace; \
                             only symlinks that stay inside the workspace can be recorded"
                        )));
                    }
                    Node::Symlink { target }
                }
                Kind::Other(what) => {
                    return Err(ArtifactError::WorkspaceUnsupported(format!(
                        "`{child}` is {what}; a version holds only files, directories and symlinks"
                    )));
                }
            };
            children.insert(name, node);
        }
        Ok(children)
    }
}

fn join_error(error: tokio::task::JoinError) -> ArtifactError {
    ArtifactError::BlobStore(format!("a worker task failed: {error}"))
}

/// What hashing one file produced.
struct Hashed {
    content: Content,
    size: u64,
    blobs_written: u64,
    bytes_written: u64,
}

/// Reads, hashes and uploads one file: one blob up to 1 MiB, else its chunks and a
/// chunk list.
async fn hash_file(
    blobs: &BlobStore,
    root: Arc<OwnedFd>,
    path: String,
    max_bytes: u64,
) -> Result<Hashed> {
    let opened_path = path.clone();
    let open = move || -> Result<std::fs::File> {
        let fd = fsutil::open_beneath(&*root, &opened_path, OFlag::O_RDONLY, 0)
            .map_err(|e| fsutil::errno_error("opening", &opened_path, e))?;
        let stat = nix::sys::stat::fstat(&fd)
            .map_err(|e| fsutil::errno_error("reading the status of", &opened_path, e))?;
        if fsutil::kind_of(&stat) != Kind::File {
            return Err(ArtifactError::WorkspaceUnsupported(format!(
                "`{opened_path}` changed kind while it was being recorded"
            )));
        }
        Ok(std::fs::File::from(fd))
    };
    store_stream(blobs, open, max_bytes, &path).await
}

/// Stores the bytes of a reader as a file's content (one blob up to 1 MiB, else
/// chunks and a chunk list). More than `max_bytes` is refused. `open` runs on the
/// blocking thread that reads the start, so a small file costs one blocking call.
async fn store_stream<R: Read + Send + 'static>(
    blobs: &BlobStore,
    open: impl FnOnce() -> Result<R> + Send + 'static,
    max_bytes: u64,
    path: &str,
) -> Result<Hashed> {
    let shown = path.to_owned();
    let (first, reader) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut reader = open()?.take(max_bytes.saturating_add(1));
        let mut first = Vec::new();
        (&mut reader)
            .take(CHUNKING_THRESHOLD + 1)
            .read_to_end(&mut first)
            .map_err(|e| ArtifactError::io("reading", &shown, e))?;
        if first.len() as u64 <= CHUNKING_THRESHOLD {
            let blob = PreparedBlob::new(&first)?;
            return Ok((Err((blob, first.len() as u64)), reader));
        }
        Ok((Ok(first), reader))
    })
    .await
    .map_err(join_error)??;
    let first = match first {
        Err((blob, size)) => {
            let content = Content::Blob(blob.hash);
            let written = blobs.put_prepared(blob).await?;
            return Ok(Hashed {
                content,
                size,
                blobs_written: u64::from(written > 0),
                bytes_written: written,
            });
        }
        Ok(first) => first,
    };
    let mut chunker = Chunker::new(std::io::Cursor::new(first).chain(reader));
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut hashed = Hashed {
        content: Content::Pending(0),
        size: 0,
        blobs_written: 0,
        bytes_written: 0,
    };
    loop {
        let shown = path.to_owned();
        let (returned, next) = tokio::task::spawn_blocking(move || {
            let next = match chunker.next_chunk() {
                Ok(Some(chunk)) => PreparedBlob::new(chunk).map(|b| Some((b, chunk.len()))),
                Ok(None) => Ok(None),
                Err(e) => Err(ArtifactError::io("reading", &shown, e)),
            };
            (chunker, next)
        })
        .await
        .map_err(join_error)?;
        chunker = returned;
        let Some((blob, length)) = next? else { break };
        hashed.size += length as u64;
        if hashed.size > max_bytes {
            return Err(ArtifactError::WorkspaceUnsupported(format!(
                "`{path}` has more than the {max_bytes} bytes a file may have"
            )));
        }
        chunks.push(ChunkRef {
            size: length as u32,
            hash: blob.hash,
        });
        let written = blobs.put_prepared(blob).await?;
        hashed.blobs_written += u64::from(written > 0);
        hashed.bytes_written += written;
    }
    let list = PreparedBlob::new(&manifest::encode_chunks(&chunks))?;
    hashed.content = Content::Chunked(list.hash);
    let written = blobs.put_prepared(list).await?;
    hashed.blobs_written += u64::from(written > 0);
    hashed.bytes_written += written;
    Ok(hashed)
}

/// Uploads manifests several at a time; returns (blobs written, bytes written).
pub(crate) async fn upload_manifests(
    blobs: &BlobStore,
    manifests: Vec<(Hash, Vec<u8>)>,
) -> Result<(u64, u64)> {
    let written: Vec<u64> = futures_util::stream::iter(manifests)
        .map(|(_, bytes)| async move {
            let blob = PreparedBlob::new(&bytes)?;
            blobs.put_prepared(blob).await
        })
        .buffer_unordered(IO_CONCURRENCY)
        .try_collect()
        .await?;
    Ok((
        written.iter().filter(|w| **w > 0).count() as u64,
        written.iter().sum(),
    ))
}

/// Records `dir` as a version. With `previous` (the index of the last snapshot or
/// restore of this directory), files whose stat is unchanged are not read again and
/// known directory manifests are not uploaded again. Everything written is made
/// durable ([`BlobStore::sync`]) before this returns, so the caller may then record
/// the version.
pub async fn snapshot(
    blobs: &BlobStore,
    dir: &Path,
    previous: Option<&SnapshotIndex>,
    limits: &Limits,
) -> Result<(Snapshot, SnapshotIndex)> {
    let taken_at_ns = fsutil::now_ns();
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ArtifactError::io("opening the workspace", dir.display(), e.into()))?;
    let root = Arc::new(root);

    let walk_root = root.clone();
    let previous_owned = previous.cloned();
    let limits_owned = *limits;
    let (children, to_hash, files) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut walk = Walk {
            root: &walk_root,
            previous: previous_owned.as_ref(),
            limits: &limits_owned,
            entries: 0,
            total_bytes: 0,
            to_hash: Vec::new(),
            files: Vec::new(),
        };
        let children = walk.walk_dir("")?;
        if let Some((path, target)) = tree::find_escaping_symlink(&children) {
            return Err(ArtifactError::WorkspaceUnsupported(format!(
                "`{path}` is a symlink to `{target}`, which leads outside the workspace \
                 through other symlinks; only symlinks that stay inside can be recorded"
            )));
        }
        Ok((children, walk.to_hash, walk.files))
    })
    .await
    .map_err(join_error)??;

    let max_file_bytes = limits.max_file_bytes;
    let hashed: Vec<(usize, Hashed)> = futures_util::stream::iter(to_hash.into_iter().enumerate())
        .map(|(index, file)| {
            let root = root.clone();
            async move {
                let hashed = hash_file(blobs, root, file.path, max_file_bytes).await?;
                Ok::<_, ArtifactError>((index, hashed))
            }
        })
        .buffer_unordered(FILE_CONCURRENCY)
        .try_collect()
        .await?;
    let mut stats = VersionStats::default();
    let mut resolved: Vec<Option<(Content, u64)>> = vec![None; hashed.len()];
    for (index, file) in hashed {
        stats.blobs_written += file.blobs_written;
        stats.bytes_written += file.bytes_written;
        resolved[index] = Some((file.content, file.size));
    }

    let (root_hash, built) =
        tree::build(&children, &|index| resolved.get(index).copied().flatten())?;
    let manifest_hashes: HashSet<Hash> = built.manifests.iter().map(|(hash, _)| *hash).collect();
    let to_upload: Vec<_> = built
        .manifests
        .into_iter()
        .filter(|(hash, _)| !previous.is_some_and(|p| p.manifests.contains(hash)))
        .collect();
    let (manifest_blobs, manifest_bytes) = upload_manifests(blobs, to_upload).await?;
    stats.blobs_written += manifest_blobs;
    stats.bytes_written += manifest_bytes;
    stats.files = built.files;
    stats.dirs = built.dirs;
    stats.symlinks = built.symlinks;
    stats.bytes = built.bytes;
    blobs.sync().await?;

    let mut index = SnapshotIndex {
        files: HashMap::with_capacity(files.len()),
        manifests: manifest_hashes,
        taken_at_ns,
    };
    for (path, info, content) in files {
        let content = match content {
            Content::Pending(i) => match resolved.get(i).copied().flatten() {
                // A file whose size changed between the walk and the read is left out:
                // the next snapshot reads it again.
                Some((content, size)) if size == info.size => content,
                _ => continue,
            },
            known => known,
        };
        index.files.insert(path, (info, content));
    }
    Ok((
        Snapshot {
            root: root_hash.to_hex(),
            stats,
        },
        index,
    ))
}

/// Hashes a file's content the way a snapshot would, without storing anything.
/// Used by restore to check whether a file already holds what it should.
pub(crate) fn content_hash_of(mut file: std::fs::File, size: u64) -> std::io::Result<Content> {
    if size <= CHUNKING_THRESHOLD {
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file)
            .take(CHUNKING_THRESHOLD + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 <= CHUNKING_THRESHOLD {
            return Ok(Content::Blob(Hash::of(&bytes)));
        }
        file.rewind()?;
    }
    let mut chunker = Chunker::new(file);
    let mut chunks = Vec::new();
    while let Some(chunk) = chunker.next_chunk()? {
        chunks.push(ChunkRef {
            size: chunk.len() as u32,
            hash: Hash::of(chunk),
        });
    }
    if chunks.iter().map(|c| u64::from(c.size)).sum::<u64>() <= CHUNKING_THRESHOLD {
        // Shrank below the threshold while being read: it is not what a version holds.
        return Ok(Content::Pending(0));
    }
    Ok(Content::Chunked(Hash::of(&manifest::encode_chunks(
        &chunks,
    ))))
}
