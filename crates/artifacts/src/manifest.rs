//! Directory manifests and chunk lists: the Merkle tree of a workspace version.
//!
//! Every manifest is itself a blob, named by the BLAKE3 of its encoding. A version's
//! root is the hash of its root directory's manifest; the empty workspace's root is
//! the hash of a manifest with no entries ([`empty_root`]).
//!
//! Encoding (all integers little-endian), version 1:
//!
//! ```text
//! directory manifest: "CDIR" 0x01  count:u32  entry*
//! entry:              kind:u8  name_len:u16  name (UTF-8)  then by kind
//!   1 file            mode:u16  size:u64  content hash [32]   (content is one blob)
//!   2 chunked file    mode:u16  size:u64  chunk-list hash [32]
//!   3 directory       mode:u16  manifest hash [32]
//!   4 symlink         target_len:u16  target (UTF-8)
//! chunk list:         "CCHK" 0x01  count:u32  (size:u32  chunk hash [32])*
//! ```
//!
//! Entries are sorted by name bytes, names are unique, non-empty, not `.` or `..`,
//! free of `/` and NUL. Modes are permission bits without setuid and setgid
//! (`& 0o1777`). A file's kind byte says how its hash is to be read: the hash of its
//! content (files up to 1 MiB) or of its chunk list (larger files). Decoding checks all
//! of this, so a manifest that decodes is safe to lay out on disk.

use crate::blob::Hash;
use crate::error::{ArtifactError, Result};

const DIR_MAGIC: &[u8; 4] = b"CDIR";
const CHUNKS_MAGIC: &[u8; 4] = b"CCHK";
const FORMAT_VERSION: u8 = 1;

/// The permission bits a version keeps: rwx for all, and the sticky bit.
pub const MODE_MASK: u32 = 0o1777;
/// Longest name or symlink target a manifest holds.
pub const MAX_NAME_BYTES: usize = u16::MAX as usize;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file stored as one blob; the hash is its content's.
    File { content: Hash },
    /// A regular file stored as chunks; the hash is its chunk list's.
    ChunkedFile { chunks: Hash },
    /// A directory; the hash is its manifest's.
    Dir { manifest: Hash },
    /// A symbolic link and its target, relative and inside the workspace.
    Symlink { target: String },
}

/// One entry of a directory manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// Permission bits (`& MODE_MASK`); 0 for symlinks.
    pub mode: u32,
    /// Content size for files, target length for symlinks, 0 for directories.
    pub size: u64,
}

impl Entry {
    /// The hash this entry refers to: content, chunk list or manifest. `None` for a
    /// symlink.
    pub fn hash(&self) -> Option<Hash> {
        match &self.kind {
            EntryKind::File { content } => Some(*content),
            EntryKind::ChunkedFile { chunks } => Some(*chunks),
            EntryKind::Dir { manifest } => Some(*manifest),
            EntryKind::Symlink { .. } => None,
        }
    }

    /// Whether this is a regular file (chunked or not).
    pub fn is_file(&self) -> bool {
        matches!(
            self.kind,
            EntryKind::File { .. } | EntryKind::ChunkedFile { .. }
        )
    }
}

/// One chunk of a chunked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub size: u32,
    pub hash: Hash,
}

/// Whether `name` may be an entry's name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_BYTES
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// Encodes a directory's entries; they must already be sorted by name and valid.
pub fn encode_dir(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + entries.len() * 64);
    out.extend_from_slice(DIR_MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for entry in entries {
        let tag = match entry.kind {
            EntryKind::File { .. } => 1u8,
            EntryKind::ChunkedFile { .. } => 2,
            EntryKind::Dir { .. } => 3,
            EntryKind::Symlink { .. } => 4,
        };
        out.push(tag);
        out.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
        out.extend_from_slice(entry.name.as_bytes());
        let mode = (entry.mode & MODE_MASK) as u16;
        match &entry.kind {
            EntryKind::File { content: hash } | EntryKind::ChunkedFile { chunks: hash } => {
                out.extend_from_slice(&mode.to_le_bytes());
                out.extend_from_slice(&entry.size.to_le_bytes());
                out.extend_from_slice(&hash.0);
            }
            EntryKind::Dir { manifest } => {
                out.extend_from_slice(&mode.to_le_bytes());
                out.extend_from_slice(&manifest.0);
            }
            EntryKind::Symlink { target } => {
                out.extend_from_slice(&(target.len() as u16).to_le_bytes());
                out.extend_from_slice(target.as_bytes());
            }
        }
    }
    out
}

/// The root of the empty workspace.
pub fn empty_root() -> Hash {
    Hash::of(&encode_dir(&[]))
}

/// Reads bytes off the front of a manifest.
struct Reader<'a> {
    bytes: &'a [u8],
    hash: &'a Hash,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &str) -> ArtifactError {
        ArtifactError::missing(self.hash, format!("not a valid manifest: {what}"))
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < count {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self) -> Result<String> {
        let length = u16::from_le_bytes(self.array()?);
        let bytes = self.take(usize::from(length))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a name is not UTF-8"))
    }

    fn header(&mut self, magic: &[u8; 4]) -> Result<usize> {
        if self.take(4)? != magic {
            return Err(self.corrupt("wrong magic"));
        }
        if self.array::<1>()? != [FORMAT_VERSION] {
            return Err(self.corrupt("unknown format version"));
        }
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }
}

/// Decodes and checks a directory manifest. `hash` is its name, for errors: a manifest
/// that does not decode is reported as a corrupt blob (`BlobMissing`).
pub fn decode_dir(hash: &Hash, bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut reader = Reader { bytes, hash };
    let count = reader.header(DIR_MAGIC)?;
    // Every entry takes at least 4 bytes: a count beyond that is a lie.
    if count > bytes.len() / 4 {
        return Err(reader.corrupt("entry count beyond its length"));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = reader.array::<1>()?[0];
        let name = reader.text()?;
        if !valid_name(&name) {
            return Err(reader.corrupt("an invalid name"));
        }
        if entries.last().is_some_and(|last| last.name >= name) {
            return Err(reader.corrupt("entries not sorted or not unique"));
        }
        let entry = match tag {
            1 | 2 => {
                let mode = u32::from(u16::from_le_bytes(reader.array()?));
                let size = u64::from_le_bytes(reader.array()?);
                let hash = Hash(reader.array()?);
                let kind = if tag == 1 {
                    EntryKind::File { content: hash }
                } else {
                    EntryKind::ChunkedFile { chunks: hash }
                };
                Entry {
                    name,
                    kind,
                    mode,
                    size,
                }
            }
            3 => {
                let mode = u32::from(u16::from_le_bytes(reader.array()?));
                let manifest = Hash(reader.array()?);
                Entry {
                    name,
                    kind: EntryKind::Dir { manifest },
                    mode,
                    size: 0,
                }
            }
            4 => {
                let target = reader.text()?;
                if target.is_empty() || target.contains('\0') {
                    return Err(reader.corrupt("an invalid symlink target"));
                }
                Entry {
                    name,
                    size: target.len() as u64,
                    kind: EntryKind::Symlink { target },
                    mode: 0,
                }
            }
            _ => return Err(reader.corrupt("unknown entry kind")),
        };
        if entry.mode & !MODE_MASK != 0 {
            return Err(reader.corrupt("mode bits out of range"));
        }
        entries.push(entry);
    }
    if !reader.bytes.is_empty() {
        return Err(reader.corrupt("trailing bytes"));
    }
    Ok(entries)
}

/// Encodes a chunk list.
pub fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + chunks.len() * 36);
    out.extend_from_slice(CHUNKS_MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        out.extend_from_slice(&chunk.size.to_le_bytes());
        out.extend_from_slice(&chunk.hash.0);
    }
    out
}

/// Decodes a chunk list and checks that its sizes add up to `file_size`.
pub fn decode_chunks(hash: &Hash, bytes: &[u8], file_size: u64) -> Result<Vec<ChunkRef>> {
    let mut reader = Reader { bytes, hash };
    let count = reader.header(CHUNKS_MAGIC)?;
    if count.checked_mul(36) != Some(reader.bytes.len()) {
        return Err(reader.corrupt("chunk count does not match its length"));
    }
    let mut chunks = Vec::with_capacity(count);
    let mut total = 0u64;
    for _ in 0..count {
        let size = u32::from_le_bytes(reader.array()?);
        let hash = Hash(reader.array()?);
        total += u64::from(size);
        chunks.push(ChunkRef { size, hash });
    }
    if total != file_size {
        return Err(reader.corrupt("chunk sizes do not add up to the file's size"));
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_its_encoding_is_stable() {
        let entries = vec![
            Entry {
                name: "a.txt".into(),
                kind: EntryKind::File {
                    content: Hash::of(b"a"),
                },
                mode: 0o644,
                size: 1,
            },
            Entry {
                name: "big".into(),
                kind: EntryKind::ChunkedFile {
                    chunks: Hash::of(b"c"),
                },
                mode: 0o600,
                size: 5 << 20,
            },
            Entry {
                name: "dir".into(),
                kind: EntryKind::Dir {
                    manifest: empty_root(),
                },
                mode: 0o1755,
                size: 0,
            },
            Entry {
                name: "link".into(),
                kind: EntryKind::Symlink {
                    target: "a.txt".into(),
                },
                mode: 0,
                size: 5,
            },
        ];
        let bytes = encode_dir(&entries);
        let hash = Hash::of(&bytes);
        assert_eq!(decode_dir(&hash, &bytes).unwrap(), entries);
        assert_eq!(
            empty_root().to_hex(),
            Hash::of(b"CDIR\x01\x00\x00\x00\x00").to_hex()
        );
    }

    #[test]
    fn hostile_manifests_do_not_decode() {
        let entry = |name: &str| Entry {
            name: name.into(),
            kind: EntryKind::File {
                content: Hash::of(b""),
            },
            mode: 0o644,
            size: 0,
        };
        for entries in [
            vec![entry("..")],
            vec![entry("a/b")],
            vec![entry("b"), entry("a")],
            vec![entry("a"), entry("a")],
        ] {
            let bytes = encode_dir(&entries);
            let error = decode_dir(&Hash::of(&bytes), &bytes).unwrap_err();
            assert_eq!(error.reason(), cordon_core::ReasonCode::BlobMissing);
        }
        let chunks = encode_chunks(&[ChunkRef {
            size: 10,
            hash: Hash::of(b"x"),
        }]);
        assert!(decode_chunks(&Hash::of(&chunks), &chunks, 11).is_err());
        assert!(decode_chunks(&Hash::of(&chunks), &chunks, 10).is_ok());
    }
}
