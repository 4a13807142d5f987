//! The artifacts runtime: three classes of artifact with different write rules.
//!
//! - Working state: content-addressed snapshots of a session's workspace (`blob`,
//!   `chunk`, `manifest`, `snapshot`, `restore`, `archive`, `gc`).
//! - Decision evidence: the per-tenant append-only log (`evidence_log`), built on
//!   `cordon-evidence`'s tree math and signed checkpoints.
//! - Release outputs: promoted, immutable, signed in-toto statements (`release`).
//!
//! Knows neither HTTP nor the sandbox runtime: `control` hands it a directory (quiesced)
//! and the store.

pub mod archive;
pub mod blob;
pub mod chunk;
pub mod diff;
pub mod error;
pub mod evidence_log;
mod fsutil;
pub mod gc;
pub mod manifest;
pub mod release;
pub mod restore;
pub mod snapshot;
mod tree;

pub use archive::{
    ArchiveLimits, ListedEntry, ListedKind, Subject, export_tar, file_list, import_tar, read_file,
    subset,
};
pub use blob::{BlobInfo, BlobStore, Hash, S3Config};
pub use diff::{Change, ChangeKind, diff};
pub use error::{ArtifactError, Result};
pub use gc::{GcStats, collect_garbage};
pub use manifest::empty_root;
pub use restore::{RestoreStats, restore};
pub use snapshot::{Limits, Snapshot, SnapshotIndex, snapshot};
