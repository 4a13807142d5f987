//! Records of the egress gateway that the store keeps: policy versions, secrets (only
//! ever as ciphertext), credential leases and decisions.

use crate::id::{CredentialLeaseId, SecretId, SessionId, TenantId};
use crate::model::Timestamp;
use crate::reason::ReasonCode;

/// One version of a tenant's egress policy. `document` is the policy as JSON; the
/// egress crate parses and validates it before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicyVersion {
    pub tenant_id: TenantId,
    /// 1 for a tenant's first stored policy, then one more per change.
    pub version: i64,
    pub document: String,
    /// SHA-256 of `document`, hex.
    pub digest: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// A secret: its value is sealed under the deployment's master key and never leaves the
/// server in plaintext except in the header the gateway injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: SecretId,
    pub tenant_id: TenantId,
    /// Unique among the tenant's secrets that are not deleted.
    pub name: String,
    /// The service class whose requests may carry it.
    pub service_class: String,
    /// The header the gateway sets, e.g. `authorization`.
    pub header_name: String,
    /// The header's value with `{secret}` where the value goes, e.g. `Bearer {secret}`.
    pub header_format: String,
    /// Nonce and AEAD ciphertext of the value, bound to the secret's id and tenant.
    pub sealed_value: Vec<u8>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

/// A secret lent to one session until `expires_at`, renewable up to `max_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialLease {
    pub id: CredentialLeaseId,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub secret_id: SecretId,
    pub issued_by: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The cap: renewals never move `expires_at` past it.
    pub max_expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoke_reason: Option<String>,
}

impl CredentialLease {
    /// Whether the lease lets the gateway inject its secret at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// One decision of the egress gateway, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressDecision {
    /// Assigned by the store, increasing; 0 before it is stored.
    pub seq: i64,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub at: Timestamp,
    /// `http` (forward proxy), `connect` (tunnel), `https` (intercepted TLS request),
    /// `dns`.
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// The address dialled (or that was refused), when resolution got that far.
    pub address: Option<String>,
    pub method: Option<String>,
    /// Path without the query string.
    pub path: Option<String>,
    pub reason: ReasonCode,
    /// `enforce`, or `report` when a report-mode rule let a request through that would
    /// have been refused (then `reason` is the refusal's code).
    pub mode: String,
    pub service_class: Option<String>,
    pub rule: Option<String>,
    pub policy_version: String,
    /// The secret injected into the request, by name, if any.
    pub credential: Option<String>,
    pub status: Option<u16>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_micros: i64,
}

/// Which decisions to list. All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressDecisionFilter {
    pub session_id: Option<SessionId>,
    pub reason: Option<ReasonCode>,
    /// Only decisions with `seq` greater than this (the cursor).
    pub after: Option<i64>,
}
