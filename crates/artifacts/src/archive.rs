//! Tar handoff and read access to a version's files.
//!
//! - [`export_tar`] writes a version as a plain tar (GNU long-name records where a
//!   path or target exceeds 100 bytes): directories, files with their modes, symlinks,
//!   in depth-first name order, owner 0, mtime 0, so one version always gives the same
//!   bytes.
//! - [`import_tar`] records an uploaded tar as a version, refusing anything a
//!   workspace cannot hold faithfully or that would land outside it. Duplicate paths:
//!   the last entry wins between files and symlinks, a repeated directory updates the
//!   mode, and an entry that would turn a directory into a non-directory (or back) is
//!   refused as invalid. Hard links to an earlier regular file are stored as a copy of
//!   it; other hard links are refused. Parents missing from the archive are created
//!   with mode 0755. A pax global header is ignored.
//! - [`file_list`], [`read_file`] and [`subset`] read a version's files; `subset`
//!   builds the tree of a release.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::str::FromStr;

use cordon_core::VersionStats;
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::blob::{BlobStore, Hash, PreparedBlob};
use crate::chunk::{CHUNKING_THRESHOLD, Chunker};
use crate::error::{ArtifactError, Result};
use crate::manifest::{self, ChunkRef, EntryKind, MODE_MASK};
use crate::snapshot::{Snapshot, upload_manifests};
use crate::tree::{self, Content, IO_CONCURRENCY, Node};

/// Compressed blobs an import holds in memory before it starts uploading: an archive
/// whose blobs fit is validated whole before anything is stored.
const PENDING_LIMIT: usize = 64 << 20;

/// How much an uploaded archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Entries of any kind.
    pub max_entries: u64,
    /// Sum of the files' sizes.
    pub max_total_bytes: u64,
    /// Size of one entry.
    pub max_entry_bytes: u64,
    /// Length of an entry's path (and a symlink's target), in bytes.
    pub max_path_bytes: usize,
}

impl Default for ArchiveLimits {
    fn default() -> ArchiveLimits {
        ArchiveLimits {
            max_entries: 100_000,
            max_total_bytes: 4 << 30,
            max_entry_bytes: 1 << 30,
            max_path_bytes: 4096,
        }
    }
}

/// What [`file_list`] reports of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    pub path: String,
    pub kind: ListedKind,
    pub mode: u32,
    /// Content size for files, target length for symlinks, 0 for directories.
    pub size: u64,
    /// A symlink's target.
    pub target: Option<String>,
}

/// A promoted file: what a release statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub path: String,
    /// SHA-256 (hex) of the file's content.
    pub sha256_hex: String,
    pub size: u64,
}

/// Every entry of a version, depth first (a directory before its contents).
pub async fn file_list(blobs: &BlobStore, root: &str) -> Result<Vec<ListedEntry>> {
    let loaded = tree::load_tree(blobs, &Hash::from_str(root)?).await?;
    Ok(loaded
        .flatten()
        .into_iter()
        .map(|item| {
            let (kind, target) = match item.entry.kind {
                EntryKind::File { .. } | EntryKind::ChunkedFile { .. } => (ListedKind::File, None),
                EntryKind::Dir { .. } => (ListedKind::Dir, None),
                EntryKind::Symlink { target } => (ListedKind::Symlink, Some(target)),
            };
            ListedEntry {
                path: item.path,
                kind,
                mode: item.entry.mode,
                size: item.entry.size,
                target,
            }
        })
        .collect())
}

/// Looks a path up by walking down from the root, loading only the manifests on the
/// way. `None` if it is not in the version.
async fn lookup(blobs: &BlobStore, root: &Hash, path: &str) -> Result<Option<manifest::Entry>> {
    let mut manifest = *root;
    let components: Vec<&str> = path.split('/').collect();
    for (i, component) in components.iter().enumerate() {
        if !manifest::valid_name(component) {
            return Ok(None);
        }
        let entries = tree::load_dir(blobs, &manifest).await?;
        let Some(entry) = entries.into_iter().find(|e| e.name == *component) else {
            return Ok(None);
        };
        if i + 1 == components.len() {
            return Ok(Some(entry));
        }
        match entry.kind {
            EntryKind::Dir { manifest: next } => manifest = next,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The content of a file of the version (`a/b.txt`, no leading `/`), verified.
pub async fn read_file(blobs: &BlobStore, root: &str, path: &str) -> Result<Vec<u8>> {
    let root = Hash::from_str(root)?;
    match lookup(blobs, &root, path).await? {
        Some(entry) if entry.is_file() => tree::read_content(blobs, &entry).await,
        _ => Err(ArtifactError::PathNotFound(path.to_owned())),
    }
}

/// SHA-256 of a file's content, reading it a blob at a time.
async fn sha256_of(blobs: &BlobStore, entry: &manifest::Entry) -> Result<String> {
    let mut hasher = Sha256::new();
    match &entry.kind {
        EntryKind::File { content } => hasher.update(blobs.get(content).await?),
        EntryKind::ChunkedFile { chunks } => {
            let list = blobs.get(chunks).await?;
            for chunk in manifest::decode_chunks(chunks, &list, entry.size)? {
                hasher.update(blobs.get(&chunk.hash).await?);
            }
        }
        _ => return Err(ArtifactError::ReleasePathNotFound(entry.name.clone())),
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Builds and stores a version holding only the given files of `root` (every file
/// when `paths` is empty), with their parent directories' modes, and returns its root
/// and the files' SHA-256 digests, sorted by path. A path that is not a file of the
/// version is `RELEASE_PATH_NOT_FOUND`.
pub async fn subset(
    blobs: &BlobStore,
    root: &str,
    paths: &[String],
) -> Result<(String, Vec<Subject>)> {
    let loaded = tree::load_tree(blobs, &Hash::from_str(root)?).await?;
    let flat = loaded.flatten();
    let by_path: HashMap<&str, &manifest::Entry> = flat
        .iter()
        .map(|item| (item.path.as_str(), &item.entry))
        .collect();
    let wanted: Vec<&str> = if paths.is_empty() {
        flat.iter()
            .filter(|item| item.entry.is_file())
            .map(|item| item.path.as_str())
            .collect()
    } else {
        let mut unique: Vec<&str> = paths.iter().map(String::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        unique
    };
    let mut children = BTreeMap::new();
    let mut files = Vec::with_capacity(wanted.len());
    for path in wanted {
        let entry = by_path
            .get(path)
            .filter(|entry| entry.is_file())
            .ok_or_else(|| ArtifactError::ReleasePathNotFound(path.to_owned()))?;
        let components: Vec<&str> = path.split('/').collect();
        let Some((name, parents)) = components.split_last() else {
            return Err(ArtifactError::ReleasePathNotFound(path.to_owned()));
        };
        let mut map = &mut children;
        for (depth, parent) in parents.iter().enumerate() {
            let parent_path = parents[..=depth].join("/");
            let mode = by_path.get(parent_path.as_str()).map_or(0o755, |e| e.mode);
            map = match map
                .entry((*parent).to_owned())
                .or_insert_with(|| Node::Dir {
                    mode,
                    children: BTreeMap::new(),
                }) {
                Node::Dir { children, .. } => children,
                _ => return Err(ArtifactError::ReleasePathNotFound(path.to_owned())),
            };
        }
        let content = match entry.kind {
            EntryKind::ChunkedFile { chunks } => Content::Chunked(chunks),
            EntryKind::File { content } => Content::Blob(content),
            _ => return Err(ArtifactError::ReleasePathNotFound(path.to_owned())),
        };
        map.insert(
            (*name).to_owned(),
            Node::File {
                mode: entry.mode,
                size: entry.size,
                content,
            },
        );
        files.push((path.to_owned(), (*entry).clone()));
    }
    let mut subjects = Vec::with_capacity(files.len());
    for (path, entry) in files {
        subjects.push(Subject {
            sha256_hex: sha256_of(blobs, &entry).await?,
            size: entry.size,
            path,
        });
    }
    subjects.sort_by(|a, b| a.path.cmp(&b.path));
    let (new_root, built) = tree::build(&children, &|_| None)?;
    upload_manifests(blobs, built.manifests).await?;
    blobs.sync().await?;
    Ok((new_root.to_hex(), subjects))
}

/// A tar header with the deterministic fields set.
fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn write_padding(writer: &mut impl Write, size: u64) -> std::io::Result<()> {
    let rest = (512 - (size % 512) as usize) % 512;
    writer.write_all(&[0u8; 512][..rest])
}

/// Writes a GNU long-name (`L`) or long-link (`K`) record for a value over 100 bytes.
fn write_long(writer: &mut impl Write, kind: EntryType, value: &[u8]) -> std::io::Result<()> {
    let mut long = header(kind, 0o644, value.len() as u64 + 1);
    if let Some(gnu) = long.as_gnu_mut() {
        gnu.name[..13].copy_from_slice(b"././@LongLink");
    }
    long.set_cksum();
    writer.write_all(long.as_bytes())?;
    writer.write_all(value)?;
    writer.write_all(&[0])?;
    write_padding(writer, value.len() as u64 + 1)
}

/// Writes one header, with long-name records before it where needed.
fn write_header(
    writer: &mut impl Write,
    mut header: tar::Header,
    path: &str,
    link: Option<&str>,
) -> std::io::Result<()> {
    let name = path.as_bytes();
    if name.len() > 100 {
        write_long(writer, EntryType::GNULongName, name)?;
    }
    if let Some(link) = link.map(str::as_bytes) {
        if link.len() > 100 {
            write_long(writer, EntryType::GNULongLink, link)?;
        }
        if let Some(gnu) = header.as_gnu_mut() {
            let shown = &link[..link.len().min(100)];
            gnu.linkname[..shown.len()].copy_from_slice(shown);
        }
    }
    if let Some(gnu) = header.as_gnu_mut() {
        let shown = &name[..name.len().min(100)];
        gnu.name[..shown.len()].copy_from_slice(shown);
    }
    header.set_cksum();
    writer.write_all(header.as_bytes())
}

/// Writes version `root` as a tar to `writer` and returns the writer. Blobs are
/// fetched (and verified) as it goes; the writes themselves are blocking, so give it
/// a writer that is quick (memory, a local file).
pub async fn export_tar<W: Write>(blobs: &BlobStore, root: &str, mut writer: W) -> Result<W> {
    let loaded = tree::load_tree(blobs, &Hash::from_str(root)?).await?;
    let io = |e: std::io::Error| ArtifactError::io("writing the archive of", root, e);
    for item in loaded.flatten() {
        let entry = &item.entry;
        match &entry.kind {
            EntryKind::Dir { .. } => {
                let path = format!("{}/", item.path);
                write_header(
                    &mut writer,
                    header(EntryType::Directory, entry.mode, 0),
                    &path,
                    None,
                )
                .map_err(io)?;
            }
            EntryKind::Symlink { target } => {
                write_header(
                    &mut writer,
                    header(EntryType::Symlink, 0o777, 0),
                    &item.path,
                    Some(target),
                )
                .map_err(io)?;
            }
            EntryKind::File { content } => {
                let bytes = blobs.get(content).await?;
                write_header(
                    &mut writer,
                    header(EntryType::Regular, entry.mode, entry.size),
                    &item.path,
                    None,
                )
                .map_err(io)?;
                writer.write_all(&bytes).map_err(io)?;
                write_padding(&mut writer, entry.size).map_err(io)?;
            }
            EntryKind::ChunkedFile { chunks } => {
                let list = blobs.get(chunks).await?;
                let chunks = manifest::decode_chunks(chunks, &list, entry.size)?;
                write_header(
                    &mut writer,
                    header(EntryType::Regular, entry.mode, entry.size),
                    &item.path,
                    None,
                )
                .map_err(io)?;
                for chunk in chunks {
                    writer
                        .write_all(&blobs.get(&chunk.hash).await?)
                        .map_err(io)?;
                }
                write_padding(&mut writer, entry.size).map_err(io)?;
            }
        }
    }
    writer.write_all(&[0u8; 1024]).map_err(io)?;
    writer.flush().map_err(io)?;
    Ok(writer)
}

/// Caps how many bytes an import reads in all: entry data plus headers and long-name
/// records (generously counted). Past the cap the archive is too large.
struct CappedReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(TooLarge));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..want])?;
        self.left -= read as u64;
        Ok(read)
    }
}

/// The marker error of [`CappedReader`].
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive is longer than its limits allow")
    }
}

impl std::error::Error for TooLarge {}

/// An I/O error while reading the archive: too large if the cap was hit, else invalid.
fn read_error(e: std::io::Error) -> ArtifactError {
    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
        ArtifactError::ArchiveTooLarge("the archive is longer than its limits allow".into())
    } else {
        ArtifactError::ArchiveInvalid(e.to_string())
    }
}

struct Importer {
    handle: tokio::runtime::Handle,
    blobs: BlobStore,
    limits: ArchiveLimits,
    root: BTreeMap<String, Node>,
    entries: u64,
    total_bytes: u64,
    pending: Vec<PreparedBlob>,
    pending_hashes: HashSet<Hash>,
    pending_bytes: usize,
    blobs_written: u64,
    bytes_written: u64,
}

impl Importer {
    /// The components of an entry's path, checked.
    fn components(&self, raw: &[u8], kind: &str) -> Result<Vec<String>> {
        let text =
            std::str::from_utf8(raw).map_err(|_| ArtifactError::ArchiveEntryUnsupported {
                path: String::from_utf8_lossy(raw).into_owned(),
                detail: format!("the {kind} is not UTF-8"),
            })?;
        if raw.len() > self.limits.max_path_bytes {
            return Err(ArtifactError::ArchiveTooLarge(format!(
                "a {kind} of {} bytes, more than {}",
                raw.len(),
                self.limits.max_path_bytes
            )));
        }
        if text.starts_with('/') {
            return Err(ArtifactError::ArchiveEntryEscapes {
                path: text.to_owned(),
                detail: "an absolute path".into(),
            });
        }
        let mut out = Vec::new();
        for component in text.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    return Err(ArtifactError::ArchiveEntryEscapes {
                        path: text.to_owned(),
                        detail: "a `..` component".into(),
                    });
                }
                name if manifest::valid_name(name) => out.push(name.to_owned()),
                _ => {
                    return Err(ArtifactError::ArchiveInvalid(format!(
                        "`{text}` has an invalid name"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The node at `components`, if any.
    fn find(&self, components: &[String]) -> Option<&Node> {
        let (last, parents) = components.split_last()?;
        let mut map = &self.root;
        for parent in parents {
            match map.get(parent)? {
                Node::Dir { children, .. } => map = children,
                _ => return None,
            }
        }
        map.get(last)
    }

    /// Puts a node in the tree, creating missing parents.
    fn insert(&mut self, components: &[String], node: Node) -> Result<()> {
        let path = components.join("/");
        let Some((last, parents)) = components.split_last() else {
            return Err(ArtifactError::ArchiveInvalid(
                "an entry other than a directory names the archive's root".into(),
            ));
        };
        let mut map = &mut self.root;
        for (depth, parent) in parents.iter().enumerate() {
            let shown = || components[..=depth].join("/");
            map = match map.entry(parent.clone()).or_insert_with(|| Node::Dir {
                mode: 0o755,
                children: BTreeMap::new(),
            }) {
                Node::Dir { children, .. } => children,
                Node::Symlink { .. } => {
                    return Err(ArtifactError::ArchiveEntryEscapes {
                        path,
                        detail: format!("it goes through the symlink `{}`", shown()),
                    });
                }
                Node::File { .. } => {
                    return Err(ArtifactError::ArchiveInvalid(format!(
                        "`{path}` goes through the file `{}`",
                        shown()
                    )));
                }
            };
        }
        match (map.get_mut(last), node) {
            (None, node) => {
                map.insert(last.clone(), node);
            }
            (Some(Node::Dir { mode, .. }), Node::Dir { mode: new_mode, .. }) => *mode = new_mode,
            (Some(Node::Dir { .. }), _) | (Some(_), Node::Dir { .. }) => {
                return Err(ArtifactError::ArchiveInvalid(format!(
                    "`{path}` appears twice, once as a directory and once not"
                )));
            }
            (Some(existing), node) => *existing = node,
        }
        Ok(())
    }

    fn hold(&mut self, blob: PreparedBlob) -> Result<()> {
        if self.pending_hashes.insert(blob.hash) {
            self.pending_bytes += blob.compressed.len();
            self.pending.push(blob);
        }
        if self.pending_bytes > PENDING_LIMIT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_hashes.clear();
        self.pending_bytes = 0;
        let blobs = self.blobs.clone();
        let written: Vec<u64> = self.handle.block_on(async {
            use futures_util::{StreamExt, TryStreamExt};
            futures_util::stream::iter(pending)
                .map(|blob| {
                    let blobs = blobs.clone();
                    async move { blobs.put_prepared(blob).await }
                })
                .buffer_unordered(IO_CONCURRENCY)
                .try_collect()
                .await
        })?;
        self.blobs_written += written.iter().filter(|w| **w > 0).count() as u64;
        self.bytes_written += written.iter().sum::<u64>();
        Ok(())
    }

    /// Reads a file entry's data into blobs held for upload.
    fn file_content(&mut self, data: &mut impl Read, path: &str) -> Result<(Content, u64)> {
        let mut first = Vec::new();
        data.take(CHUNKING_THRESHOLD + 1)
            .read_to_end(&mut first)
            .map_err(read_error)?;
        if first.len() as u64 <= CHUNKING_THRESHOLD {
            let blob = PreparedBlob::new(&first)?;
            let content = Content::Blob(blob.hash);
            self.hold(blob)?;
            return Ok((content, first.len() as u64));
        }
        let mut chunker = Chunker::new(std::io::Cursor::new(first).chain(data));
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let blob = match chunker.next_chunk() {
                Ok(Some(chunk)) => PreparedBlob::new(chunk).map(|b| (b, chunk.len()))?,
                Ok(None) => break,
                Err(e) => return Err(read_error(e)),
            };
            size += blob.1 as u64;
            chunks.push(ChunkRef {
                size: blob.1 as u32,
                hash: blob.0.hash,
            });
            self.hold(blob.0)?;
        }
        if size > self.limits.max_entry_bytes {
            return Err(ArtifactError::ArchiveTooLarge(format!(
                "`{path}` has more than {} bytes",
                self.limits.max_entry_bytes
            )));
        }
        let list = PreparedBlob::new(&manifest::encode_chunks(&chunks))?;
        let content = Content::Chunked(list.hash);
        self.hold(list)?;
        Ok((content, size))
    }

    fn read_archive(&mut self, reader: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(read_error)?;
        for entry in entries {
            let mut entry = entry.map_err(read_error)?;
            let kind = entry.header().entry_type();
            if kind == EntryType::XGlobalHeader {
                continue;
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(ArtifactError::ArchiveTooLarge(format!(
                    "more than {} entries",
                    self.limits.max_entries
                )));
            }
            let raw_path = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw_path).into_owned();
            let components = self.components(&raw_path, "path")?;
            let path = components.join("/");
            let mode = entry.header().mode().map_err(read_error)? & MODE_MASK;
            let size = entry.size();
            if size > self.limits.max_entry_bytes {
                return Err(ArtifactError::ArchiveTooLarge(format!(
                    "`{shown}` declares {size} bytes, more than the {} an entry may have",
                    self.limits.max_entry_bytes
                )));
            }
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    self.total_bytes += size;
                    if self.total_bytes > self.limits.max_total_bytes {
                        return Err(ArtifactError::ArchiveTooLarge(format!(
                            "more than {} bytes of files",
                            self.limits.max_total_bytes
                        )));
                    }
                    // Check the place before reading the data.
                    if components.is_empty() {
                        return Err(ArtifactError::ArchiveInvalid(format!(
                            "the file `{shown}` names the archive's root"
                        )));
                    }
                    self.insert(
                        &components,
                        Node::File {
                            mode,
                            size: 0,
                            content: Content::Pending(0),
                        },
                    )?;
                    let (content, size) = self.file_content(&mut entry, &path)?;
                    self.insert(
                        &components,
                        Node::File {
                            mode,
                            size,
                            content,
                        },
                    )?;
                }
                EntryType::Directory => {
                    if !components.is_empty() {
                        self.insert(
                            &components,
                            Node::Dir {
                                mode,
                                children: BTreeMap::new(),
                            },
                        )?;
                    }
                }
                EntryType::Symlink => {
                    let raw_target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    if raw_target.len() > self.limits.max_path_bytes
                        || raw_target.len() > manifest::MAX_NAME_BYTES
                    {
                        return Err(ArtifactError::ArchiveTooLarge(format!(
                            "`{shown}` has a target of {} bytes",
                            raw_target.len()
                        )));
                    }
                    let target = String::from_utf8(raw_target).map_err(|_| {
                        ArtifactError::ArchiveEntryUnsupported {
                            path: shown.clone(),
                            detail: "the symlink's target is not UTF-8".into(),
                        }
                    })?;
                    if !tree::symlink_stays_inside(&path, &target) {
                        return Err(ArtifactError::ArchiveEntryEscapes {
                            path: shown,
                            detail: format!("a symlink to `{target}`, outside the workspace"),
                        });
                    }
                    self.insert(&components, Node::Symlink { target })?;
                }
                EntryType::Link => {
                    let raw_target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let target = self.components(&raw_target, "hard link target")?;
                    let Some(Node::File {
                        mode,
                        size,
                        content,
                    }) = self.find(&target).cloned()
                    else {
                        return Err(ArtifactError::ArchiveEntryUnsupported {
                            path: shown,
                            detail: format!(
                                "a hard link to `{}`, which is not an earlier regular file",
                                target.join("/")
                            ),
                        });
                    };
                    if matches!(content, Content::Pending(_)) {
                        return Err(ArtifactError::ArchiveInvalid(format!(
                            "`{shown}` links to itself"
                        )));
                    }
                    self.total_bytes += size;
                    if self.total_bytes > self.limits.max_total_bytes {
                        return Err(ArtifactError::ArchiveTooLarge(format!(
                            "more than {} bytes of files",
                            self.limits.max_total_bytes
                        )));
                    }
                    self.insert(
                        &components,
                        Node::File {
                            mode,
                            size,
                            content,
                        },
                    )?;
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    return Err(ArtifactError::ArchiveEntryUnsupported {
                        path: shown,
                        detail: "a device or fifo".into(),
                    });
                }
                other => {
                    return Err(ArtifactError::ArchiveEntryUnsupported {
                        path: shown,
                        detail: format!("an entry of type {:?}", other.as_byte() as char),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Records a tar archive as a version. Refused, with nothing recorded, when an entry
/// escapes (absolute path, `..`, through a symlink, a symlink pointing outside), is
/// of an unsupported kind (device, fifo, a hard link to no earlier file), is over the
/// limits, or the input is not a tar. Blobs are held in memory (up to 64 MiB
/// compressed) until the whole archive has been checked, so a refused archive
/// usually stores nothing; a larger one may leave blobs that garbage collection
/// removes.
pub async fn import_tar<R: Read + Send + 'static>(
    blobs: &BlobStore,
    reader: R,
    limits: &ArchiveLimits,
) -> Result<Snapshot> {
    let handle = tokio::runtime::Handle::current();
    let cap = limits
        .max_total_bytes
        .saturating_add(
            limits
                .max_entries
                .saturating_mul(4 * 512 + 2 * limits.max_path_bytes as u64),
        )
        .saturating_add(1 << 20);
    let mut importer = Importer {
        handle,
        blobs: blobs.clone(),
        limits: *limits,
        root: BTreeMap::new(),
        entries: 0,
        total_bytes: 0,
        pending: Vec::new(),
        pending_hashes: HashSet::new(),
        pending_bytes: 0,
        blobs_written: 0,
        bytes_written: 0,
    };
    let importer = tokio::task::spawn_blocking(move || -> Result<Importer> {
        importer.read_archive(CappedReader {
            inner: reader,
            left: cap,
        })?;
        if let Some((path, target)) = tree::find_escaping_symlink(&importer.root) {
            return Err(ArtifactError::ArchiveEntryEscapes {
                path,
                detail: format!(
                    "a symlink to `{target}`, which leads outside through other symlinks"
                ),
            });
        }
        importer.flush()?;
        Ok(importer)
    })
    .await
    .map_err(|e| ArtifactError::BlobStore(format!("the import task failed: {e}")))??;
    let (root, built) = tree::build(&importer.root, &|_| None)?;
    let (manifest_blobs, manifest_bytes) = upload_manifests(blobs, built.manifests).await?;
    blobs.sync().await?;
    Ok(Snapshot {
        root: root.to_hex(),
        stats: VersionStats {
            files: built.files,
            dirs: built.dirs,
            symlinks: built.symlinks,
            bytes: built.bytes,
            blobs_written: importer.blobs_written + manifest_blobs,
            bytes_written: importer.bytes_written + manifest_bytes,
        },
    })
}
