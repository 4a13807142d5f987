//! The JSON bodies of Cordon's HTTP API v1. Plain data with serde and OpenAPI schema
//! derives; the api crate converts domain records into these at the boundary, and the
//! CLI reads them back. Request types reject unknown fields.

use cordon_core::{Labels, Phase, Role, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
