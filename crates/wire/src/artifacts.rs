//! Artifacts: workspace versions (checkpoint, list, diff, restore, fork, tar handoff),
//! the tenant's evidence log (entries, proofs, checkpoints, export bundles) and releases.

use cordon_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sessions/{id}/checkpoint`: snapshots the workspace into a new version and
/// moves the session to `checkpointed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// What the agent was doing; up to 1,024 characters.
    #[serde(default)]
    pub summary: String,
    /// Why, for the session's event log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a version holds and what writing it cost.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct VersionStatsBody {
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

/// One version of a session's workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionBody {
    #[schema(value_type = String, example = "ver_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    #[schema(value_type = String)]
    pub session_id: String,
    /// The session's latest version when this one was made.
    #[schema(value_type = Option<String>)]
    pub parent: Option<String>,
    /// BLAKE3 (hex) of the root directory manifest: equal roots, equal workspaces.
    pub root: String,
    pub summary: String,
    pub stats: VersionStatsBody,
    /// `checkpoint`, `upload` or `fork`.
    pub origin: String,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /v1/sessions/{id}/versions`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionBody>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The answer of a checkpoint: the session after the transition (its fields at the top
/// level, as every lifecycle route answers) and, as `workspace_version`, the version it
/// recorded when the node runs sandboxes and artifacts (the session's own `version` is
/// its event count).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckpointResponse<S> {
    #[serde(flatten)]
    pub session: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_version: Option<VersionBody>,
}

/// One difference between two versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeBody {
    pub path: String,
    /// `added`, `removed`, `modified`, `mode_changed` or `type_changed`.
    pub change: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
}

/// `GET /v1/sessions/{id}/versions/{vid}/diff?against=`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiffBody {
    /// The older side (`against`, or the version's parent).
    #[schema(value_type = Option<String>)]
    pub from: Option<String>,
    #[schema(value_type = String)]
    pub to: String,
    pub changes: Vec<ChangeBody>,
}

/// `POST /v1/sessions/{id}/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The version to restore: one of this session's.
    #[schema(value_type = String)]
    pub version: String,
}

/// What a restore changed in the workspace.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct RestoreBody {
    pub files_written: u64,
    pub files_unchanged: u64,
    pub removed: u64,
    pub dirs_created: u64,
    pub symlinks_created: u64,
    pub duration_ms: f64,
}

/// `POST /v1/sessions/{id}/versions/{vid}/fork`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// Labels of the new session (the source's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// The answer of a fork: the new, active session and its first version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForkResponse<S> {
    pub session: S,
    pub version: VersionBody,
}

/// One entry of the tenant's evidence log. `fields` holds the payload values that were
/// not shredded; the leaf commits to every field either way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceEntryBody {
    pub index: u64,
    #[schema(value_type = Option<String>)]
    pub session_id: Option<String>,
    pub kind: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The leaf's bytes (canonical JSON).
    pub leaf: String,
    /// RFC 6962 leaf hash, hex.
    pub leaf_hash: String,
    /// The payload: field name to value (JSON).
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Fields whose value was shredded (their commitments remain in the leaf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shredded: Vec<String>,
}

/// `GET /v1/evidence`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceList {
    pub entries: Vec<EvidenceEntryBody>,
    /// Pass as `from` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// A signed tree head of the tenant's evidence log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceCheckpointBody {
    pub size: u64,
    /// Tree root, hex.
    pub root: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The C2SP signed note, to verify with the deployment's public key.
    pub note: String,
}

/// `GET /v1/evidence/{index}/proof?size=`: the entry's inclusion proof in the tree of
/// `size` leaves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InclusionProofBody {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    /// Sibling hashes, hex, from the leaf up.
    pub proof: Vec<String>,
    /// The root the proof leads to, hex.
    pub root: String,
}

/// `GET /v1/evidence/consistency?from=&to=`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProofBody {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
    pub from_root: String,
    pub to_root: String,
}

/// `GET /v1/evidence/public-key`: the deployment's signing key in the signed-note
/// verifier format (`name+keyid+base64`), for offline verification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyBody {
    pub key: String,
}

/// `POST /v1/sessions/{id}/releases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Unique in the tenant; 1 to 128 characters of `[a-zA-Z0-9_.-]`.
    #[schema(example = "report-2026-11-28")]
    pub name: String,
    /// The version to promote: one of the session's (its latest when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub version: Option<String>,
    /// Files of the version to release; every file when empty.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// One released file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubjectBody {
    pub name: String,
    pub sha256: String,
}

/// A release: immutable, signed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseBody {
    #[schema(value_type = String, example = "rel_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    pub name: String,
    #[schema(value_type = String)]
    pub session_id: String,
    #[schema(value_type = String)]
    pub version_id: String,
    /// BLAKE3 (hex) of the released files' manifest.
    pub root: String,
    pub subjects: Vec<SubjectBody>,
    /// The DSSE envelope of the in-toto statement (JSON).
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /v1/releases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseList {
    pub releases: Vec<ReleaseBody>,
}
