//! Egress: the tenant's egress policy, its secrets, the credential leases that lend a
//! secret to a session, the gateway's decisions and its CA certificate. Everything acts
//! inside the caller's tenant; another tenant's secret, session or lease is 404.
//!
//! A secret's value is sealed under the master key the moment it arrives and is never
//! returned, logged or kept in plaintext. Sealing needs the egress runtime, so creating a
//! secret (and fetching the CA) answers 503 `SANDBOX_UNAVAILABLE` on a server that runs
//! without egress; every other route works on the store alone.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cordon_artifacts::evidence_log::Record;
use cordon_control::Egress;
use cordon_core::{
    CredentialLease, CredentialLeaseId, EgressDecision, EgressDecisionFilter, EgressPolicyVersion,
    Phase, ReasonCode, SecretId, SecretRecord, Session, SessionId, TenantId, Timestamp,
};
use cordon_egress::secrets::{secret_context, valid_secret_value, validate_injection};
use cordon_egress::{EgressPolicy, PolicySnapshot};
use cordon_policy::{Action, Resource};
use cordon_store::{StoreError, duration_micros};
use cordon_wire::{
    CreateLeaseRequest, CreateSecretRequest, EgressDecisionBody, EgressDecisionList,
    EgressPolicyBody, ErrorBody, LeaseBody, LeaseList, RenewLeaseRequest, SecretBody, SecretList,
};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::sessions::authorized_session;
use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, OptionalJson, Query, parse_id};

type PolicyBody = EgressPolicyBody<Value>;

/// This node's egress runtime, or 503 when it runs without one.
fn egress(state: &AppState) -> ApiResult<&Egress> {
    state.control().egress().ok_or_else(|| {
        ApiError::new(
            ReasonCode::SandboxUnavailable,
            "egress is not enabled on this server",
        )
    })
}

/// Drops the gateway's cached view of a session, if this node runs the gateway.
fn invalidate_session(state: &AppState, session_id: SessionId) {
    if let Some(egress) = state.control().egress() {
        egress.env.invalidate_session(session_id);
    }
}

/// Drops the gateway's cached policy of a tenant and every cached session view.
fn invalidate_tenant(state: &AppState, tenant_id: TenantId) {
    if let Some(egress) = state.control().egress() {
        egress.env.invalidate_policy(tenant_id);
    }
}

/// Names of secrets and service classes: 1 to 64 characters of `[a-zA-Z0-9_.-]`.
fn identifier(field: &str, value: &str) -> ApiResult<()> {
    let valid = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "`{field}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `-`"
        )))
    }
}

// ----- The egress policy -----

fn source_of(version: &str) -> &'static str {
    if version.starts_with("tenant/") {
        "tenant"
    } else if version.starts_with("file/") {
        "file"
    } else {
        "none"
    }
}

fn stored_policy_body(stored: &EgressPolicyVersion) -> ApiResult<PolicyBody> {
    let policy = serde_json::from_str(&stored.document).map_err(|error| {
        ApiError::internal(format!(
            "stored egress policy v{} of tenant {} is not JSON: {error}",
            stored.version, stored.tenant_id
        ))
    })?;
    Ok(EgressPolicyBody {
        version: format!("tenant/{}", stored.version),
        source: "tenant".to_owned(),
        policy,
        created_at: Some(stored.created_at),
        created_by: Some(stored.created_by.clone()),
    })
}

fn snapshot_body(snapshot: &PolicySnapshot) -> ApiResult<PolicyBody> {
    let policy = serde_json::to_value(&snapshot.policy).map_err(ApiError::internal)?;
    Ok(EgressPolicyBody {
        source: source_of(&snapshot.version).to_owned(),
        version: snapshot.version.clone(),
        policy,
        created_at: None,
        created_by: None,
    })
}

/// The egress policy in force for the caller's tenant: its latest stored version, else
/// the deployment's policy file, else none (everything is denied).
#[utoipa::path(get, path = "/v1/egress/policy", tag = "egress",
    responses((status = 200, body = EgressPolicyBody<Value>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<PolicyBody>> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::EgressPolicyRead,
        Resource::Tenant(tenant_id),
    )?;
    let body = match state.store().get_egress_policy(tenant_id).await? {
        Some(stored) => stored_policy_body(&stored)?,
        None => match state.control().egress() {
            Some(egress) => snapshot_body(egress.env.file_policy())?,
            None => snapshot_body(&PolicySnapshot {
                policy: EgressPolicy::default(),
                version: "none".to_owned(),
            })?,
        },
    };
    Ok(axum::Json(body))
}

/// Replace the tenant's egress policy with a new version. The document is validated
/// first; the gateway uses the new version for the next request.
#[utoipa::path(put, path = "/v1/egress/policy", tag = "egress",
    request_body(content = Object, description = "An egress policy document: \
        `{\"service_classes\": [{\"name\", \"hosts\", \"ports\"?, \"schemes\"?, \"methods\"?, \
        \"address_ranges\"?}], \"rules\": [{\"name\", \"service_classes\", \"environments\", \
        \"workload_classes\", \"mode\"?}]}`"),
    responses((status = 200, body = EgressPolicyBody<Value>),
        (status = 400, description = "EGRESS_POLICY_INVALID, or a body that is not a JSON object", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Json(document): Json<Value>,
) -> ApiResult<axum::Json<PolicyBody>> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::EgressPolicyWrite,
        Resource::Tenant(tenant_id),
    )?;
    let parsed = EgressPolicy::from_json(&document.to_string())
        .map_err(|error| ApiError::new(ReasonCode::EgressPolicyInvalid, error.to_string()))?;
    let canonical = serde_json::to_string(&parsed).map_err(ApiError::internal)?;
    let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
    let stored = state
        .store()
        .put_egress_policy(&EgressPolicyVersion {
            tenant_id,
            version: 0,
            document: canonical,
            digest,
            created_by: caller.actor(),
            created_at: Timestamp::now(),
        })
        .await?;
    invalidate_tenant(&state, tenant_id);
    tracing::info!(tenant = %tenant_id, version = stored.version, "egress policy stored");
    Ok(axum::Json(stored_policy_body(&stored)?))
}

// ----- Secrets -----

fn secret_body(secret: SecretRecord) -> SecretBody {
    SecretBody {
        id: secret.id.to_string(),
        name: secret.name,
        service_class: secret.service_class,
        header: secret.header_name,
        format: secret.header_format,
        created_at: secret.created_at,
        created_by: secret.created_by,
    }
}

/// Store a secret for the gateway to inject into requests of its service class. The
/// value is sealed at once and never returned.
#[utoipa::path(post, path = "/v1/secrets", tag = "egress",
    request_body = CreateSecretRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    responses(
        (status = 201, description = "The secret's metadata; never its value", body = SecretBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "SECRET_NAME_TAKEN", body = ErrorBody),
        (status = 503, description = "SANDBOX_UNAVAILABLE: egress is not enabled on this server", body = ErrorBody),
    ))]
pub(crate) async fn create_secret(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateSecretRequest>,
) -> ApiResult<(StatusCode, axum::Json<SecretBody>)> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::SecretCreate,
        Resource::Tenant(tenant_id),
    )?;
    identifier("name", &request.name)?;
    identifier("service_class", &request.service_class)?;
    validate_injection(&request.header, &request.format).map_err(ApiError::validation)?;
    if !valid_secret_value(&request.value) {
        return Err(ApiError::validation(
            "`value` must be 1 to 8192 characters of visible ASCII, spaces and tabs",
        ));
    }
    let master = egress(&state)?.env.master_key();
    let id = SecretId::generate();
    let sealed_value = master
        .seal(
            &secret_context(&tenant_id.to_string(), &id.to_string()),
            request.value.as_bytes(),
        )
        .map_err(ApiError::internal)?;
    let secret = SecretRecord {
        id,
        tenant_id,
        name: request.name,
        service_class: request.service_class,
        header_name: request.header,
        header_format: request.format,
        sealed_value,
        created_by: caller.actor(),
        created_at: Timestamp::now(),
        deleted_at: None,
    };
    state.store().create_secret(&secret).await?;
    if let Some(artifacts) = state.control().artifacts() {
        // Evidence written from now on must not carry the new value.
        artifacts.redactor.invalidate(tenant_id);
    }
    tracing::info!(secret = %id, tenant = %tenant_id, name = %secret.name, "secret created");
    Ok((StatusCode::CREATED, axum::Json(secret_body(secret))))
}

/// The tenant's secrets (deleted ones are gone), metadata only.
#[utoipa::path(get, path = "/v1/secrets", tag = "egress",
    responses((status = 200, body = SecretList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<SecretList>> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::SecretList,
        Resource::Tenant(tenant_id),
    )?;
    let secrets = state.store().list_secrets(tenant_id).await?;
    Ok(axum::Json(SecretList {
        items: secrets.into_iter().map(secret_body).collect(),
    }))
}

/// One secret's metadata.
#[utoipa::path(get, path = "/v1/secrets/{id}", tag = "egress",
    params(("id" = String, Path, description = "Secret id")),
    responses((status = 200, body = SecretBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SecretBody>> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::SecretRead,
        Resource::Tenant(tenant_id),
    )?;
    let id = parse_id::<SecretId>(&id, "secret")?;
    let secret = state
        .store()
        .get_secret(tenant_id, id)
        .await?
        .filter(|secret| secret.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("secret"))?;
    Ok(axum::Json(secret_body(secret)))
}

/// Delete a secret: its sealed value is dropped and its leases are revoked.
#[utoipa::path(delete, path = "/v1/secrets/{id}", tag = "egress",
    params(("id" = String, Path, description = "Secret id")),
    responses((status = 204, description = "Deleted; its leases are revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::SecretDelete,
        Resource::Tenant(tenant_id),
    )?;
    let id = parse_id::<SecretId>(&id, "secret")?;
    match state
        .store()
        .delete_secret(tenant_id, id, Timestamp::now())
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::not_found("secret")),
        Err(error) => return Err(error.into()),
    }
    // Sessions holding one of its leases must stop injecting it at once.
    invalidate_tenant(&state, tenant_id);
    tracing::info!(secret = %id, tenant = %tenant_id, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ----- Credential leases -----

fn lease_body(lease: CredentialLease, secret_name: String, now: Timestamp) -> LeaseBody {
    let live = lease.is_live(now);
    LeaseBody {
        id: lease.id.to_string(),
        session_id: lease.session_id.to_string(),
        secret_id: lease.secret_id.to_string(),
        secret_name,
        issued_by: lease.issued_by,
        issued_at: lease.issued_at,
        expires_at: lease.expires_at,
        max_expires_at: lease.max_expires_at,
        live,
        revoked_at: lease.revoked_at,
        revoke_reason: lease.revoke_reason,
    }
}

/// The name of a lease's secret (kept after the secret is deleted).
async fn secret_name(state: &AppState, tenant_id: TenantId, id: SecretId) -> ApiResult<String> {
    Ok(state
        .store()
        .get_secret(tenant_id, id)
        .await?
        .map(|secret| secret.name)
        .unwrap_or_default())
}

/// A lease of `session`, by id; a lease of another session is not found.
async fn session_lease(
    state: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<CredentialLease> {
    let id = parse_id::<CredentialLeaseId>(id, "lease")?;
    state
        .store()
        .get_credential_lease(session.tenant_id, id)
        .await?
        .filter(|lease| lease.session_id == session.id)
        .ok_or_else(|| ApiError::not_found("lease"))
}

/// A TTL in seconds, or the default; zero or above the maximum is refused.
fn lease_ttl(state: &AppState, requested: Option<u64>) -> ApiResult<Duration> {
    let max = state.options().lease_max_ttl;
    let ttl = requested
        .map(Duration::from_secs)
        .unwrap_or(state.options().lease_default_ttl.min(max));
    if ttl.is_zero() || ttl > max {
        return Err(ApiError::new(
            ReasonCode::LeaseTtlInvalid,
            format!(
                "`ttl_seconds` must be between 1 and {} seconds",
                max.as_secs()
            ),
        ));
    }
    Ok(ttl)
}

fn refuse_if_not_running(session: &Session) -> ApiResult<()> {
    if matches!(session.phase, Phase::Suspended | Phase::Closed) {
        return Err(ApiError::new(
            ReasonCode::SessionNotActive,
            format!(
                "the session is {}: it cannot be lent a secret",
                session.phase.as_str()
            ),
        ));
    }
    Ok(())
}

/// A live secret of the tenant, by id or by name.
async fn leasable_secret(
    state: &AppState,
    tenant_id: TenantId,
    reference: &str,
) -> ApiResult<SecretRecord> {
    let mut found = None;
    if let Ok(id) = reference.parse::<SecretId>() {
        found = state.store().get_secret(tenant_id, id).await?;
    }
    if found.is_none() {
        found = state
            .store()
            .list_secrets(tenant_id)
            .await?
            .into_iter()
            .find(|secret| secret.name == reference);
    }
    found
        .filter(|secret| secret.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("secret"))
}

/// Lend a secret to the session until a deadline: while the lease is live, the gateway
/// injects the secret into the session's requests of the secret's service class.
#[utoipa::path(post, path = "/v1/sessions/{id}/leases", tag = "egress",
    request_body = CreateLeaseRequest,
    params(
        ("id" = String, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request"),
    ),
    responses(
        (status = 201, body = LeaseBody),
        (status = 400, description = "LEASE_TTL_INVALID, or a malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such session or secret", body = ErrorBody),
        (status = 409, description = "SESSION_NOT_ACTIVE: the session is suspended or closed", body = ErrorBody),
    ))]
pub(crate) async fn create_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<CreateLeaseRequest>,
) -> ApiResult<(StatusCode, axum::Json<LeaseBody>)> {
    let session = authorized_session(&state, &caller, &id, Action::SessionLeaseCreate).await?;
    refuse_if_not_running(&session)?;
    let ttl = lease_ttl(&state, request.ttl_seconds)?;
    let secret = leasable_secret(&state, session.tenant_id, &request.secret).await?;
    let now = Timestamp::now();
    let lease = CredentialLease {
        id: CredentialLeaseId::generate(),
        tenant_id: session.tenant_id,
        session_id: session.id,
        secret_id: secret.id,
        issued_by: caller.actor(),
        issued_at: now,
        expires_at: now.saturating_add_micros(duration_micros(ttl)),
        max_expires_at: now.saturating_add_micros(duration_micros(state.options().lease_max_ttl)),
        revoked_at: None,
        revoke_reason: None,
    };
    state.store().create_credential_lease(&lease).await?;
    // Suspend and close revoke a session's leases; one that did so between the check
    // above and the write would have missed this lease.
    let current = state
        .store()
        .get_session(session.tenant_id, session.id)
        .await?;
    if let Some(current) = current
        && let Err(error) = refuse_if_not_running(&current)
    {
        let reason = format!("session {}", current.phase.as_str());
        state
            .store()
            .revoke_credential_lease(session.tenant_id, lease.id, Timestamp::now(), &reason)
            .await?;
        invalidate_session(&state, session.id);
        return Err(error);
    }
    invalidate_session(&state, session.id);
    tracing::info!(lease = %lease.id, session = %session.id, secret = %secret.id, "credential lease issued");
    state
        .control()
        .evidence(
            Record::new(
                session.tenant_id,
                Some(session.id),
                "lease.issue",
                &caller.actor(),
            )
            .field("lease", lease.id.to_string())
            .field("secret", secret.name.clone())
            .field("expires_at", lease.expires_at.to_string())
            .field("max_expires_at", lease.max_expires_at.to_string()),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(lease_body(lease, secret.name, Timestamp::now())),
    ))
}

/// The session's credential leases, live or not, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/leases", tag = "egress",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = LeaseList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_leases(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<LeaseList>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionLeaseList).await?;
    let leases = state
        .store()
        .list_credential_leases(session.tenant_id, session.id)
        .await?;
    let mut names: HashMap<SecretId, String> = HashMap::new();
    for lease in &leases {
        if let Entry::Vacant(entry) = names.entry(lease.secret_id) {
            entry.insert(secret_name(&state, session.tenant_id, lease.secret_id).await?);
        }
    }
    let now = Timestamp::now();
    let items = leases
        .into_iter()
        .map(|lease| {
            let name = names.get(&lease.secret_id).cloned().unwrap_or_default();
            lease_body(lease, name, now)
        })
        .collect();
    Ok(axum::Json(LeaseList { items }))
}

// `{pid}` is the lease id: the OpenAPI routing test fills only `{id}`, `{pid}` and
// `{path}` when it calls every documented path.

/// Extend a live lease: it then lasts `ttl_seconds` from now (default 15 minutes), but
/// never past its `max_expires_at`.
#[utoipa::path(post, path = "/v1/sessions/{id}/leases/{pid}/renew", tag = "egress",
    params(
        ("id" = String, Path, description = "Session id"),
        ("pid" = String, Path, description = "Lease id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request"),
    ),
    request_body(content = Option<RenewLeaseRequest>, description = "Optional"),
    responses(
        (status = 200, body = LeaseBody),
        (status = 400, description = "LEASE_TTL_INVALID, or a malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "LEASE_NOT_RENEWABLE: revoked or expired", body = ErrorBody),
    ))]
pub(crate) async fn renew_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, lease_id)): Path<(String, String)>,
    OptionalJson(request): OptionalJson<RenewLeaseRequest>,
) -> ApiResult<axum::Json<LeaseBody>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionLeaseRenew).await?;
    let lease = session_lease(&state, &session, &lease_id).await?;
    let ttl = lease_ttl(&state, request.ttl_seconds)?;
    let now = Timestamp::now();
    if !lease.is_live(now) {
        return Err(ApiError::new(
            ReasonCode::LeaseNotRenewable,
            "the lease is revoked or expired: issue a new one",
        ));
    }
    let expires_at = now
        .saturating_add_micros(duration_micros(ttl))
        .min(lease.max_expires_at);
    let renewed = state
        .store()
        .renew_credential_lease(session.tenant_id, lease.id, expires_at, now)
        .await?;
    invalidate_session(&state, session.id);
    let name = secret_name(&state, session.tenant_id, renewed.secret_id).await?;
    Ok(axum::Json(lease_body(renewed, name, Timestamp::now())))
}

/// Revoke a lease: the gateway stops injecting its secret at once. Revoking a revoked
/// lease keeps the first revocation.
#[utoipa::path(delete, path = "/v1/sessions/{id}/leases/{pid}", tag = "egress",
    params(
        ("id" = String, Path, description = "Session id"),
        ("pid" = String, Path, description = "Lease id"),
    ),
    responses((status = 200, body = LeaseBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_lease(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, lease_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<LeaseBody>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionLeaseRevoke).await?;
    let lease = session_lease(&state, &session, &lease_id).await?;
    let reason = format!("revoked by {}", caller.actor());
    let revoked = state
        .store()
        .revoke_credential_lease(session.tenant_id, lease.id, Timestamp::now(), &reason)
        .await?;
    invalidate_session(&state, session.id);
    tracing::info!(lease = %lease.id, session = %session.id, "credential lease revoked");
    state
        .control()
        .evidence(
            Record::new(
                session.tenant_id,
                Some(session.id),
                "lease.revoke",
                &caller.actor(),
            )
            .field("lease", lease.id.to_string())
            .field("reason", reason.clone()),
        )
        .await;
    let name = secret_name(&state, session.tenant_id, revoked.secret_id).await?;
    Ok(axum::Json(lease_body(revoked, name, Timestamp::now())))
}

// ----- Decisions and the CA -----

fn decision_body(decision: EgressDecision) -> EgressDecisionBody {
    EgressDecisionBody {
        seq: decision.seq,
        tenant_id: decision.tenant_id.to_string(),
        session_id: decision.session_id.to_string(),
        at: decision.at,
        kind: decision.kind,
        host: decision.host,
        port: decision.port,
        address: decision.address,
        method: decision.method,
        path: decision.path,
        reason: decision.reason.as_str().to_owned(),
        mode: decision.mode,
        service_class: decision.service_class,
        rule: decision.rule,
        policy_version: decision.policy_version,
        credential: decision.credential,
        status: decision.status,
        bytes_sent: decision.bytes_sent,
        bytes_received: decision.bytes_received,
        duration_micros: decision.duration_micros,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DecisionsQuery {
    /// Only decisions about this session.
    session: Option<String>,
    /// Only decisions with this reason code, e.g. `EGRESS_DESTINATION_NOT_ALLOWED`.
    reason: Option<String>,
    /// Only decisions after this `seq`: `next` from the previous page.
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// The egress gateway's decisions in the caller's tenant, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/egress/decisions", tag = "egress", params(DecisionsQuery),
    responses((status = 200, body = EgressDecisionList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_decisions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DecisionsQuery>,
) -> ApiResult<axum::Json<EgressDecisionList>> {
    let tenant_id = caller.tenant_id();
    authorize(
        &state,
        &caller,
        Action::EgressDecisionsRead,
        Resource::Tenant(tenant_id),
    )?;
    let limit = validate::limit(query.limit)?;
    let session_id = query
        .session
        .map(|session| {
            session.parse::<SessionId>().map_err(|_| {
                ApiError::new(
                    ReasonCode::RequestQueryInvalid,
                    "`session` is not a session id",
                )
            })
        })
        .transpose()?;
    let reason = query
        .reason
        .map(|code| {
            ReasonCode::from_code(&code).ok_or_else(|| {
                ApiError::new(
                    ReasonCode::RequestQueryInvalid,
                    format!("`reason`: `{code}` is not a reason code"),
                )
            })
        })
        .transpose()?;
    if query.after.is_some_and(|after| after < 0) {
        return Err(ApiError::new(
            ReasonCode::CursorInvalid,
            "`after` must be a `seq` from a previous page",
        ));
    }
    let filter = EgressDecisionFilter {
        session_id,
        reason,
        after: query.after,
    };
    let decisions = state
        .store()
        .list_egress_decisions(tenant_id, &filter, limit)
        .await?;
    let next = (decisions.len() == limit as usize)
        .then(|| decisions.last().map(|decision| decision.seq))
        .flatten();
    Ok(axum::Json(EgressDecisionList {
        decisions: decisions.into_iter().map(decision_body).collect(),
        next,
    }))
}

/// The egress CA certificate (PEM): sandboxes trust it so that the gateway can inject
/// credentials into TLS requests.
#[utoipa::path(get, path = "/v1/egress/ca", tag = "egress",
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody),
        (status = 503, description = "SANDBOX_UNAVAILABLE: egress is not enabled on this server", body = ErrorBody)))]
pub(crate) async fn get_ca(State(state): State<AppState>, _caller: Caller) -> ApiResult<Response> {
    let pem = egress(&state)?.gateway.ca_cert_pem().to_owned();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], pem).into_response())
}
