//! Authentication (bearer API keys), the authenticated caller, authorization through
//! the policy engine, and the first-start bootstrap of the system admin key.
//!
//! Tokens are `cordon_` followed by 64 hex digits (256 random bits). Only their SHA-256
//! is stored; a token is shown once, when its key is created, and never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use cordon_core::{ApiKey, KeyId, ReasonCode, Role, Tenant, TenantId, Timestamp};
use cordon_policy::{Action, Principal, Resource};
use cordon_store::Store;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

const TOKEN_PREFIX: &str = "cordon_";

/// A fresh bearer token.
pub fn generate_token() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{TOKEN_PREFIX}{}", hex::encode(secret))
}

/// What the store keeps of a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

impl Caller {
    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.key.id,
            tenant_id: self.key.tenant_id,
            role: self.key.role,
            system: self.key.system,
        }
    }

    pub fn tenant_id(&self) -> TenantId {
        self.key.tenant_id
    }

    /// The actor recorded in event logs.
    pub fn actor(&self) -> String {
        self.key.id.to_string()
    }

    /// The tenant a request about `requested` may see: its own, or any for the system
    /// key. Any other tenant is reported as not found, so existence does not leak.
    pub fn visible_tenant(&self, requested: Option<TenantId>) -> ApiResult<TenantId> {
        match requested {
            None => Ok(self.key.tenant_id),
            Some(id) if id == self.key.tenant_id || self.key.system => Ok(id),
            Some(_) => Err(ApiError::not_found("tenant")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route is missing the authentication layer"))
    }
}

/// Middleware: resolves the bearer token to a live key or answers 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ReasonCode::AuthnMissingCredentials,
            "missing `Authorization: Bearer <token>` header",
        )
    })?;
    let invalid = || {
        ApiError::new(
            ReasonCode::AuthnInvalidCredentials,
            "the bearer token is invalid or revoked",
        )
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(invalid)?;
    let digest = token_digest(token);
    let key = match state.key_cache().get(&digest) {
        Some(key) => key,
        None => {
            let key = state.store().get_key_by_digest(&digest).await?;
            let key = key
                .filter(|key| key.revoked_at.is_none())
                .ok_or_else(invalid)?;
            state.key_cache().insert(digest, key.clone());
            key
        }
    };
    tracing::Span::current().record("principal", tracing::field::display(key.id));
    request.extensions_mut().insert(Caller { key });
    Ok(next.run(request).await)
}

/// [`authorize`] of an action on the caller's own tenant.
pub(crate) fn authorize_tenant(state: &AppState, caller: &Caller, action: Action) -> ApiResult<()> {
    authorize(state, caller, action, Resource::Tenant(caller.tenant_id()))
}

/// Asks the policy engine; a denial becomes 403 `AUTHZ_DENIED` naming the determining
/// policies in sorted order.
pub(crate) fn authorize(
    state: &AppState,
    caller: &Caller,
    action: Action,
    resource: Resource<'_>,
) -> ApiResult<()> {
    let decision = state
        .policy()
        .authorize(&caller.principal(), action, &resource)
        .map_err(ApiError::internal)?;
    for error in &decision.errors {
        tracing::warn!(%error, action = action.as_str(), "policy evaluation error");
    }
    record_decision(state, caller, action, &resource, &decision);
    if decision.allowed {
        return Ok(());
    }
    let message = if decision.policies.is_empty() {
        format!(
            "`{}` is not permitted: no policy allows it",
            action.as_str()
        )
    } else {
        format!(
            "`{}` is denied by policy {}",
            action.as_str(),
            decision.policies.join(", ")
        )
    };
    Err(ApiError::new(ReasonCode::AuthzDenied, message))
}

/// Whether an action only reads (its decisions are evidence only when denied).
fn is_read(action: Action) -> bool {
    let name = action.as_str();
    name.ends_with(".read") || name.ends_with(".list") || name == "session.events"
}

/// Records an authorization decision as evidence: every denial, and every allowed
/// action that changes something. Reads that were allowed are not recorded (the log
/// would be mostly reads).
fn record_decision(
    state: &AppState,
    caller: &Caller,
    action: Action,
    resource: &Resource<'_>,
    decision: &cordon_policy::Decision,
) {
    if decision.allowed && is_read(action) {
        return;
    }
    let Some(artifacts) = state.control().artifacts() else {
        return;
    };
    let (tenant_id, session_id, resource_text) = match resource {
        Resource::Deployment => (caller.tenant_id(), None, "deployment".to_owned()),
        Resource::Tenant(id) => (*id, None, id.to_string()),
        Resource::Key { id, tenant_id, .. } => (*tenant_id, None, id.to_string()),
        Resource::Session { id, tenant_id, .. } => (*tenant_id, Some(*id), id.to_string()),
    };
    // Evidence stays inside one tenant: a system key's decision about another tenant
    // is that tenant's evidence.
    let record = cordon_artifacts::evidence_log::Record::new(
        tenant_id,
        session_id,
        "authz",
        &caller.actor(),
    )
    .field("action", action.as_str())
    .field("resource", resource_text)
    .field("allowed", decision.allowed)
    .field("policies", decision.policies.clone())
    .field("role", caller.key.role.as_str());
    artifacts.evidence.record_detached(record);
}

/// Recently authenticated keys by token digest, so that a busy client does not cost a
/// store read per request. An entry lives `ttl` at most; a revocation on this node
/// evicts at once, one on another node takes effect here within `ttl`.
#[derive(Debug)]
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (ApiKey, Instant)>>,
}

/// Past this many entries the cache starts over rather than grow.
const KEY_CACHE_CAPACITY: usize = 10_000;

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<ApiKey> {
        let entries = self.entries.lock().ok()?;
        let (key, cached_at) = entries.get(digest)?;
        (cached_at.elapsed() < self.ttl).then(|| key.clone())
    }

    fn insert(&self, digest: [u8; 32], key: ApiKey) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(digest, (key, Instant::now()));
        }
    }

    pub(crate) fn evict(&self, key_id: KeyId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (key, _)| key.id != key_id);
        }
    }
}

/// What happened at start-up.
#[derive(Debug, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// The store already had tenants; nothing was done.
    AlreadyInitialized,
    /// Created the `default` tenant and the system admin key with this token.
    Created { key_id: KeyId },
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("CORDON_BOOTSTRAP_TOKEN must be at least 32 visible ASCII characters")]
    WeakToken,
    #[error(transparent)]
    Store(#[from] cordon_store::StoreError),
}

/// On an empty store, creates the built-in tenant `default` and the system admin key
/// whose token is `token`. Safe to call on every start and from several nodes at once.
pub async fn bootstrap(store: &dyn Store, token: &str) -> Result<BootstrapOutcome, BootstrapError> {
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BootstrapError::WeakToken);
    }
    let now = Timestamp::now();
    let tenant = Tenant {
        id: TenantId::generate(),
        name: "default".into(),
        created_at: now,
    };
    let key = ApiKey {
        id: KeyId::generate(),
        tenant_id: tenant.id,
        role: Role::Admin,
        name: "bootstrap system admin".into(),
        system: true,
        token_digest: token_digest(token),
        created_by: None,
        created_at: now,
        revoked_at: None,
    };
    match store.bootstrap(&tenant, &key).await {
        Ok(true) => Ok(BootstrapOutcome::Created { key_id: key.id }),
        Ok(false) | Err(cordon_store::StoreError::TenantNameTaken(_)) => {
            Ok(BootstrapOutcome::AlreadyInitialized)
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether the store still needs bootstrapping (it has no tenant).
pub async fn needs_bootstrap(store: &dyn Store) -> Result<bool, cordon_store::StoreError> {
    Ok(store.list_tenants().await?.is_empty())
}
