//! The JSON bodies of Cordon's HTTP API v1. Plain data with serde and OpenAPI schema
//! derives; the api crate converts domain records into these at the boundary, and the
//! CLI reads them back. Request types reject unknown fields.

use cordon_core::{Labels, Phase, Role, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod artifacts;
pub mod egress;
pub mod workflow;

pub use artifacts::{
    ChangeBody, CheckpointRequest, CheckpointResponse, ConsistencyProofBody, DiffBody,
    EvidenceCheckpointBody, EvidenceEntryBody, EvidenceList, ForkRequest, ForkResponse,
    InclusionProofBody, PromoteRequest, PublicKeyBody, ReleaseBody, ReleaseList, RestoreBody,
    RestoreRequest, SubjectBody, VersionBody, VersionList, VersionStatsBody,
};
pub use egress::{
    CreateLeaseRequest, CreateSecretRequest, EgressDecisionBody, EgressDecisionList,
    EgressPolicyBody, LeaseBody, LeaseList, RenewLeaseRequest, SecretBody, SecretList,
};

/// Every error response: `{"error":{"code","message","request_id"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable reason code from docs/reason-codes.md.
    #[schema(example = "SESSION_INVALID_TRANSITION")]
    pub code: String,
    /// A human-readable explanation; wording may change, the code does not.
    pub message: String,
    /// The request's id, also in the `x-request-id` response header and the server log.
    pub request_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// 1 to 63 characters: lowercase letters, digits, `-`, `_`, `.`.
    #[schema(example = "acme")]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantBody {
    #[schema(value_type = String, example = "ten_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The tenant the key acts in; defaults to the caller's tenant.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub role: Role,
    /// A label for people: 1 to 128 characters.
    pub name: String,
}

/// An API key's metadata. The token is never returned after creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyBody {
    #[schema(value_type = String, example = "key_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    #[schema(value_type = String)]
    pub tenant_id: String,
    pub role: Role,
    pub name: String,
    /// True for the deployment's bootstrap key.
    pub system: bool,
    #[schema(value_type = Option<String>)]
    pub created_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

/// Returned once, when a key is created: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub key: KeyBody,
    /// The bearer token. Store it now: it cannot be shown again.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Selects resource limits and policy; 1 to 63 characters of `[a-z0-9._-]`.
    #[schema(example = "coding")]
    pub workload_class: String,
    /// Where the session's actions land, e.g. `dev` or `prod`; same syntax.
    #[schema(example = "dev")]
    pub environment: String,
    /// Up to 64 labels; keys 1 to 63 characters of `[a-zA-Z0-9._/-]`, values up to 255.
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionBody {
    #[schema(value_type = String, example = "ses_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    #[schema(value_type = String)]
    pub tenant_id: String,
    /// The key that created the session.
    #[schema(value_type = String)]
    pub owner: String,
    pub workload_class: String,
    pub environment: String,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: Labels,
    /// The authorization policy set in force when the session was created.
    pub policy_version: String,
    pub phase: Phase,
    /// Number of events in the session's log.
    pub version: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// How the session ended (`succeeded`, `failed`, `abandoned`); set once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionBody>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of a lifecycle action. The body itself is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Why, in a few words (up to 1024 characters); recorded in the event log.
    #[serde(default)]
    pub reason: Option<String>,
    /// Only for `close`: how the session ended, `succeeded` (the default), `failed` or
    /// `abandoned`. It feeds the session success rate (docs/metrics.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    /// Position in the session's log, from 1.
    pub seq: i64,
    /// The key that caused the event, or `system`.
    pub actor: String,
    /// Absent for the creation event.
    pub from: Option<Phase>,
    pub to: Phase,
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok` when healthy or ready.
    pub status: String,
}

/// `POST /v1/sessions/{id}/exec`: a command to run in the session's sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments; a bare program name is searched in PATH.
    pub argv: Vec<String>,
    /// Added to the sandbox's default environment (PATH, HOME=/workspace, LANG, ...).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory: absolute, or relative to /workspace (the default).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes fed to the command's stdin (UTF-8 text); stdin is empty otherwise.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command after this long; the workload class sets the default and cap.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Start the command in the background and return its process at once; its output
    /// goes to `log_path` inside the sandbox.
    #[serde(default)]
    pub background: bool,
}

/// How a command ended, with its output (UTF-8; invalid bytes are replaced).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResponse {
    pub exit_code: i32,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond the workload class's limit was dropped.
    pub truncated: bool,
    pub duration_ms: u64,
    /// Set when a limit, the timeout or a start failure ended the command:
    /// SANDBOX_OOM_KILLED, SANDBOX_PIDS_LIMIT, SANDBOX_DISK_QUOTA, EXEC_TIMEOUT,
    /// EXEC_COMMAND_NOT_FOUND, EXEC_START_FAILED, EXEC_KILLED_BY_SIGNAL.
    pub reason_code: Option<String>,
    /// What `reason_code` means here.
    pub message: Option<String>,
}

/// One line of a streamed exec (`Accept: application/x-ndjson`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecStreamEvent {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: i32,
        signal: Option<i32>,
        duration_ms: u64,
        reason_code: Option<String>,
        message: Option<String>,
    },
}

/// A process started through the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessBody {
    /// Its pid inside the sandbox.
    pub pid: i32,
    pub argv: Vec<String>,
    pub background: bool,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// `running` or `exited`.
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Where a background process's stdout and stderr go, inside the sandbox.
    pub log_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    pub items: Vec<ProcessBody>,
}

/// A file or directory in the sandbox's /workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileBody {
    /// Relative to /workspace.
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Permission bits as an octal string, e.g. "0644".
    pub mode: String,
    #[schema(value_type = String, format = DateTime)]
    pub mtime: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub items: Vec<FileBody>,
}

/// The session's sandbox as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxBody {
    /// `running`, `frozen` or `lost`.
    pub state: String,
    pub workload_class: String,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    pub memory_limit_bytes: u64,
    pub pids_limit: u64,
    pub cpu_millis: u64,
    pub disk_limit_bytes: u64,
    /// Kernel counters of its cgroup, when readable.
    pub memory_bytes: Option<u64>,
    pub cpu_usage_usec: Option<u64>,
    pub pids_current: Option<u64>,
    pub oom_kills: Option<u64>,
}
