//! Egress: the tenant's policy, its secrets (metadata only: a value goes in once and
//! never comes back out), credential leases and the gateway's decisions.

use cordon_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The egress policy in force for the caller's tenant. `P` is the document's JSON
/// representation (the server and the CLI use `serde_json::Value`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EgressPolicyBody<P> {
    /// `tenant/<n>` for the tenant's stored version n, `file/<digest>` for the
    /// deployment's policy file, `none` when there is no policy (everything is denied).
    #[schema(example = "tenant/3")]
    pub version: String,
    /// `tenant`, `file` or `none`.
    #[schema(example = "tenant")]
    pub source: String,
    /// The policy document: `{"service_classes": [...], "rules": [...]}`.
    #[schema(value_type = Object)]
    pub policy: P,
    /// When the tenant's version was stored (tenant versions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<Timestamp>,
    /// The key that stored the tenant's version (tenant versions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub created_by: Option<String>,
}

fn default_format() -> String {
    "{secret}".to_owned()
}

/// `POST /v1/secrets`. The value is sealed at once and never returned.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// Unique among the tenant's secrets; 1 to 64 characters of `[a-zA-Z0-9_.-]`.
    #[schema(example = "github-token")]
    pub name: String,
    /// The egress service class whose requests may carry it; same syntax as `name`.
    #[schema(example = "github")]
    pub service_class: String,
    /// The header the gateway sets on those requests.
    #[schema(example = "Authorization")]
    pub header: String,
    /// The header's value, with `{secret}` (exactly once) where the value goes.
    #[serde(default = "default_format")]
    #[schema(example = "Bearer {secret}", default = "{secret}")]
    pub format: String,
    /// The secret: 1 to 8192 characters of visible ASCII, spaces and tabs.
    pub value: String,
}

impl std::fmt::Debug for CreateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecretRequest")
            .field("name", &self.name)
            .field("service_class", &self.service_class)
            .field("header", &self.header)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A secret's metadata. Its value is never shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretBody {
    #[schema(value_type = String, example = "sec_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    pub name: String,
    pub service_class: String,
    pub header: String,
    pub format: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The key that stored it.
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretBody>,
}

/// `POST /v1/sessions/{id}/leases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLeaseRequest {
    /// The secret to lend: its id (`sec_...`) or its name.
    #[schema(example = "github-token")]
    pub secret: String,
    /// How long the lease lasts; the server's default (15 minutes) when absent, at most
    /// the server's maximum (1 hour by default).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /v1/sessions/{id}/leases/{lease_id}/renew`. The body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLeaseRequest {
    /// The lease then lasts this long from now (the server's default when absent), but
    /// never past its `max_expires_at`.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A credential lease: one secret lent to one session until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseBody {
    #[schema(value_type = String, example = "lea_0192f1c2a3b47c3d8e9f001122334455")]
    pub id: String,
    #[schema(value_type = String)]
    pub session_id: String,
    #[schema(value_type = String)]
    pub secret_id: String,
    pub secret_name: String,
    /// The key that issued it.
    pub issued_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Renewals never move `expires_at` past this.
    #[schema(value_type = String, format = DateTime)]
    pub max_expires_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    pub revoke_reason: Option<String>,
    /// Not revoked and not expired: the gateway injects the secret now.
    pub live: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseList {
    pub items: Vec<LeaseBody>,
}

/// One decision of the egress gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EgressDecisionBody {
    /// Position in the tenant's decision log; pass the last one as `after`.
    pub seq: i64,
    #[schema(value_type = String)]
    pub tenant_id: String,
    #[schema(value_type = String)]
    pub session_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `http` (forward proxy), `connect` (tunnel), `https` (intercepted TLS request) or
    /// `dns`.
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// The address dialled or refused, when resolution got that far.
    pub address: Option<String>,
    pub method: Option<String>,
    /// Without the query string.
    pub path: Option<String>,
    /// `EGRESS_ALLOWED` or the refusal's reason code.
    #[schema(example = "EGRESS_DESTINATION_NOT_ALLOWED")]
    pub reason: String,
    /// `enforce`, or `report` when a report-mode rule let through a request that would
    /// have been refused for `reason`.
    pub mode: String,
    pub service_class: Option<String>,
    pub rule: Option<String>,
    pub policy_version: String,
    /// The name of the secret injected into the request, if any.
    pub credential: Option<String>,
    /// The upstream's HTTP status, when there was one.
    pub status: Option<u16>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_micros: i64,
}

/// A page of decisions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EgressDecisionList {
    pub decisions: Vec<EgressDecisionBody>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<i64>,
}
