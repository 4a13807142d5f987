//! Records of the artifacts the store keeps: workspace versions (working state), the
//! per-tenant evidence log (decision evidence) and releases (promoted outputs). Blob
//! bytes live in the blob store; these are the metadata.

use crate::id::{ReleaseId, SessionId, TenantId, VersionId};
use crate::model::Timestamp;

/// What a version holds and what writing it cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
    /// Blobs (chunks and manifests) this version added to the blob store.
    pub blobs_written: u64,
    /// Compressed bytes this version added to the blob store.
    pub bytes_written: u64,
}

/// One version of a session's workspace. Versions of a session form a chain: each
/// names the version that was the session's latest when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceVersion {
    pub id: VersionId,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    /// The session's latest version when this one was made; `None` for the first.
    pub parent: Option<VersionId>,
    /// BLAKE3 (hex) of the root directory manifest.
    pub root: String,
    /// Given by the caller: what the agent was doing.
    pub summary: String,
    pub stats: VersionStats,
    /// How it was made: `checkpoint`, `upload` or `fork`.
    pub origin: String,
    pub created_by: String,
    pub created_at: Timestamp,
    /// Set when retention removed it; a removed version is never listed or restored.
    pub deleted_at: Option<Timestamp>,
}

/// One field of an evidence entry's payload, as stored beside the entry. The entry's
/// leaf commits to `SHA-256(salt || value)`; shredding deletes this record and leaves
/// the commitment, so proofs still verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceField {
    pub name: String,
    /// 16 random bytes, hex.
    pub salt: String,
    /// The value as canonical JSON.
    pub value: String,
}

/// An entry to append to a tenant's evidence log; the store assigns its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvidenceEntry {
    pub tenant_id: TenantId,
    pub session_id: Option<SessionId>,
    /// `lifecycle`, `authz`, `egress`, `exec`, `lease.issue`, `lease.revoke`,
    /// `checkpoint`, `restore`, `promotion`, `retention`, ...
    pub kind: String,
    pub at: Timestamp,
    /// The leaf's bytes: canonical JSON of the entry's committed form.
    pub leaf: String,
    /// RFC 6962 leaf hash of `leaf`.
    pub leaf_hash: [u8; 32],
    pub fields: Vec<EvidenceField>,
}

/// A stored evidence entry. `fields` holds what was not shredded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceEntry {
    pub tenant_id: TenantId,
    /// Leaf index in the tenant's log, from 0, without gaps.
    pub index: u64,
    pub session_id: Option<SessionId>,
    pub kind: String,
    pub at: Timestamp,
    pub leaf: String,
    pub leaf_hash: [u8; 32],
    pub fields: Vec<EvidenceField>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceFilter {
    pub session_id: Option<SessionId>,
    pub kind: Option<String>,
    /// Entries with an index at or above this one.
    pub from_index: u64,
    pub limit: u32,
}

/// A signed tree head of a tenant's evidence log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceCheckpoint {
    pub tenant_id: TenantId,
    pub size: u64,
    pub root: [u8; 32],
    /// The C2SP signed note.
    pub note: String,
    pub at: Timestamp,
}

/// A named, immutable, signed output promoted from a workspace version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: ReleaseId,
    pub tenant_id: TenantId,
    /// Unique in the tenant.
    pub name: String,
    pub session_id: SessionId,
    pub version_id: VersionId,
    /// BLAKE3 (hex) of the manifest of the promoted files (all or chosen paths).
    pub root: String,
    /// The DSSE envelope (JSON) of the in-toto statement.
    pub envelope: String,
    pub created_by: String,
    pub created_at: Timestamp,
    /// Set when retention removed it.
    pub deleted_at: Option<Timestamp>,
}
