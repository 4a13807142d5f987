//! Garbage collection of the blob store: mark every blob reachable from the live
//! versions' roots, then delete the unmarked blobs older than a grace period.
//!
//! Marking must be complete before anything is deleted: a live root whose manifest
//! (or a chunk list) cannot be read aborts the collection. The grace period protects
//! what snapshots in flight have written but not yet recorded; it must be longer than
//! the longest snapshot plus [`crate::BlobStore::refresh_after`] (a `put` that finds an
//! old blob rewrites it only when it is older than that, so a reused blob's age
//! restarts). Each candidate's age is read again right before it is deleted.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};

use crate::blob::{BlobStore, Hash};
use crate::error::{ArtifactError, Result};
use crate::manifest::EntryKind;
use crate::tree::{self, IO_CONCURRENCY};

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs kept: reachable, or unreachable but younger than the grace period.
    pub kept: u64,
    pub deleted: u64,
    /// Compressed bytes of the deleted blobs.
    pub bytes_freed: u64,
}

/// Every blob a version refers to: directory manifests, chunk lists, content blobs
/// and chunks. Fails if a manifest or chunk list is missing or corrupt.
pub async fn reachable(blobs: &BlobStore, roots: &[String]) -> Result<HashSet<Hash>> {
    let mut marked = HashSet::new();
    for root in roots {
        let root = Hash::from_str(root)?;
        if marked.contains(&root) {
            continue;
        }
        let loaded = tree::load_tree(blobs, &root).await?;
        let mut lists = Vec::new();
        marked.extend(loaded.dirs.keys().copied());
        for entries in loaded.dirs.values() {
            for entry in entries {
                match entry.kind {
                    EntryKind::File { content } => {
                        marked.insert(content);
                    }
                    EntryKind::ChunkedFile { chunks } => {
                        if marked.insert(chunks) {
                            lists.push((chunks, entry.size));
                        }
                    }
                    EntryKind::Dir { .. } | EntryKind::Symlink { .. } => {}
                }
            }
        }
        let lists = tree::load_chunk_lists(blobs, lists).await?;
        for chunks in lists.values() {
            marked.extend(chunks.iter().map(|c| c.hash));
        }
    }
    Ok(marked)
}

/// Deletes every blob that no live root reaches and that is older than `grace`.
pub async fn collect_garbage(
    blobs: &BlobStore,
    live_roots: &[String],
    grace: Duration,
) -> Result<GcStats> {
    let listed = blobs.list().await?;
    let marked = reachable(blobs, live_roots).await?;
    let now = SystemTime::now();
    let old_enough =
        |modified: SystemTime| now.duration_since(modified).is_ok_and(|age| age >= grace);
    let mut stats = GcStats::default();
    let mut candidates = Vec::new();
    for blob in listed {
        if marked.contains(&blob.hash) || !old_enough(blob.last_modified) {
            stats.kept += 1;
        } else {
            candidates.push(blob.hash);
        }
    }
    let outcomes: Vec<Option<u64>> = futures_util::stream::iter(candidates)
        .map(|hash| async move {
            // Read the age again: a snapshot may have refreshed the blob since the list.
            let current = blobs.list_one(&hash).await?;
            match current {
                Some(info) if old_enough(info.last_modified) => {
                    blobs.delete(&hash).await?;
                    Ok::<_, ArtifactError>(Some(info.size))
                }
                Some(_) => Ok(None),
                None => Ok(Some(0)),
            }
        })
        .buffer_unordered(IO_CONCURRENCY)
        .try_collect()
        .await?;
    for outcome in outcomes {
        match outcome {
            Some(bytes) => {
                stats.deleted += 1;
                stats.bytes_freed += bytes;
            }
            None => stats.kept += 1,
        }
    }
    Ok(stats)
}
