//! Differences between two versions, walking both trees together and skipping every
//! subtree whose manifest hash is the same on both sides.

use std::str::FromStr;

use crate::blob::{BlobStore, Hash};
use crate::error::Result;
use crate::manifest::{Entry, EntryKind};
use crate::tree;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    /// Same kind, different content (a file's bytes or a symlink's target); the mode
    /// may have changed too.
    Modified,
    /// Same kind and content, different permission bits.
    ModeChanged,
    /// A file became a directory, a directory a symlink, and so on.
    TypeChanged,
}

/// One changed path. Sizes are of files (and symlink targets); `None` where the path
/// is absent on that side, 0 for directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

fn kind_class(entry: &Entry) -> u8 {
    match entry.kind {
        EntryKind::File { .. } | EntryKind::ChunkedFile { .. } => 0,
        EntryKind::Dir { .. } => 1,
        EntryKind::Symlink { .. } => 2,
    }
}

/// The changes that turn version `from_root` into `to_root`, sorted by path. A
/// directory added or removed is listed with everything in it; a path whose kind
/// changed is `TypeChanged`, and what was below it (or is now) is `Removed` (`Added`).
pub async fn diff(blobs: &BlobStore, from_root: &str, to_root: &str) -> Result<Vec<Change>> {
    let from = Hash::from_str(from_root)?;
    let to = Hash::from_str(to_root)?;
    let mut changes = Vec::new();
    // Pairs of directories to compare: (path, from manifest, to manifest).
    let mut pending = vec![(String::new(), from, to)];
    while let Some((path, from, to)) = pending.pop() {
        if from == to {
            continue;
        }
        let (before, after) =
            futures_util::try_join!(tree::load_dir(blobs, &from), tree::load_dir(blobs, &to))?;
        let (mut i, mut j) = (0, 0);
        while i < before.len() || j < after.len() {
            let order = match (before.get(i), after.get(j)) {
                (Some(b), Some(a)) => b.name.cmp(&a.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let entry = &before[i];
                    everything(blobs, &path, entry, ChangeKind::Removed, &mut changes).await?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let entry = &after[j];
                    everything(blobs, &path, entry, ChangeKind::Added, &mut changes).await?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (b, a) = (&before[i], &after[j]);
                    let child = tree::join(&path, &b.name);
                    if kind_class(b) != kind_class(a) {
                        changes.push(Change {
                            path: child.clone(),
                            kind: ChangeKind::TypeChanged,
                            size_before: Some(b.size),
                            size_after: Some(a.size),
                        });
                        if let EntryKind::Dir { manifest } = b.kind {
                            below(blobs, &child, &manifest, ChangeKind::Removed, &mut changes)
                                .await?;
                        }
                        if let EntryKind::Dir { manifest } = a.kind {
                            below(blobs, &child, &manifest, ChangeKind::Added, &mut changes)
                                .await?;
                        }
                    } else if let (
                        EntryKind::Dir { manifest: mb },
                        EntryKind::Dir { manifest: ma },
                    ) = (&b.kind, &a.kind)
                    {
                        if b.mode != a.mode {
                            changes.push(Change {
                                path: child.clone(),
                                kind: ChangeKind::ModeChanged,
                                size_before: Some(0),
                                size_after: Some(0),
                            });
                        }
                        pending.push((child, *mb, *ma));
                    } else if b.kind != a.kind {
                        changes.push(Change {
                            path: child,
                            kind: ChangeKind::Modified,
                            size_before: Some(b.size),
                            size_after: Some(a.size),
                        });
                    } else if b.mode != a.mode {
                        changes.push(Change {
                            path: child,
                            kind: ChangeKind::ModeChanged,
                            size_before: Some(b.size),
                            size_after: Some(a.size),
                        });
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changes)
}

/// `entry` and, for a directory, everything below it, as added or removed.
async fn everything(
    blobs: &BlobStore,
    parent: &str,
    entry: &Entry,
    kind: ChangeKind,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let path = tree::join(parent, &entry.name);
    changes.push(one(path.clone(), entry, kind));
    if let EntryKind::Dir { manifest } = entry.kind {
        below(blobs, &path, &manifest, kind, changes).await?;
    }
    Ok(())
}

/// Everything below a directory, as added or removed.
async fn below(
    blobs: &BlobStore,
    path: &str,
    manifest: &Hash,
    kind: ChangeKind,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let subtree = tree::load_tree(blobs, manifest).await?;
    for item in subtree.flatten() {
        changes.push(one(tree::join(path, &item.path), &item.entry, kind));
    }
    Ok(())
}

fn one(path: String, entry: &Entry, kind: ChangeKind) -> Change {
    let size = Some(entry.size);
    match kind {
        ChangeKind::Removed => Change {
            path,
            kind,
            size_before: size,
            size_after: None,
        },
        _ => Change {
            path,
            kind,
            size_before: None,
            size_after: size,
        },
    }
}
