//! Cordon's HTTP API v1. The only crate that knows HTTP and JSON: it authenticates
//! bearer keys, enforces tenancy (another tenant's resource is "not found"), asks the
//! policy engine, handles idempotency keys, maps every failure to a stable reason code
//! and serves the OpenAPI document generated from these very routes.

mod auth;
mod error;
mod extract;
mod idempotency;
mod routes;
mod telemetry;
mod workflow_auth;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cordon_control::Control;
use cordon_policy::PolicyEngine;
use cordon_store::Store;

pub use auth::{BootstrapError, BootstrapOutcome, bootstrap, generate_token, needs_bootstrap};
pub use error::{ApiError, status_for};
pub use idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IDEMPOTENT_RETAKEN};
pub use telemetry::{REQUEST_ID_HEADER, prometheus};

/// Limits and knobs of the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest file upload into a sandbox.
    pub max_file_bytes: usize,
    /// Largest workspace archive uploaded as a version.
    pub max_archive_bytes: usize,
    /// A pending idempotency claim older than this is considered abandoned.
    pub idempotency_stale_after: Duration,
    /// How long an authenticated key is trusted without asking the store again; bounds
    /// how late a revocation made on another node takes effect here.
    pub key_cache_ttl: Duration,
    /// How long a credential lease lasts when the request names no TTL.
    pub lease_default_ttl: Duration,
    /// The longest a credential lease may last, renewals included.
    pub lease_max_ttl: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_file_bytes: 64 << 20,
            max_archive_bytes: 512 << 20,
            idempotency_stale_after: Duration::from_secs(60),
            key_cache_ttl: Duration::from_secs(2),
            lease_default_ttl: Duration::from_secs(15 * 60),
            lease_max_ttl: Duration::from_secs(60 * 60),
        }
    }
}

/// Everything handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    control: Control,
    policy: Arc<PolicyEngine>,
    options: ApiOptions,
    key_cache: auth::KeyCache,
    openapi_json: OnceLock<String>,
    engine: OnceLock<cordon_workflow::Engine>,
}

impl AppState {
    pub fn new(control: Control, policy: Arc<PolicyEngine>, options: ApiOptions) -> Self {
        Self {
            inner: Arc::new(StateInner {
                control,
                policy,
                key_cache: auth::KeyCache::new(options.key_cache_ttl),
                options,
                openapi_json: OnceLock::new(),
                engine: OnceLock::new(),
            }),
        }
    }

    /// Gives the API the node's workflow engine (set once, before serving).
    pub fn set_engine(&self, engine: cordon_workflow::Engine) {
        if self.inner.engine.set(engine).is_err() {
            tracing::error!("the workflow engine was set twice: kept the first");
        }
    }

    pub(crate) fn engine(&self) -> Option<&cordon_workflow::Engine> {
        self.inner.engine.get()
    }

    /// Authorizes a workflow run's steps as the run's principal, with this API's
    /// policies (and records each decision as evidence, like a request's).
    pub fn step_authorizer(&self) -> std::sync::Arc<dyn cordon_control::StepAuthorizer> {
        std::sync::Arc::new(workflow_auth::ApiAuthorizer::new(
            std::sync::Arc::clone(&self.inner.policy),
            self.inner.control.clone(),
        ))
    }

    pub(crate) fn control(&self) -> &Control {
        &self.inner.control
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.inner.control.store()
    }

    pub(crate) fn policy(&self) -> &PolicyEngine {
        &self.inner.policy
    }

    pub(crate) fn key_cache(&self) -> &auth::KeyCache {
        &self.inner.key_cache
    }

    pub(crate) fn options(&self) -> &ApiOptions {
        &self.inner.options
    }
}

/// The complete router: every route, its middleware, and the OpenAPI document.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request so no sample is lost.
    let _ = telemetry::prometheus();
    let (router, openapi) = routes::build(state.clone());
    let json = openapi.to_pretty_json().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot render the OpenAPI document");
        "{}".to_owned()
    });
    let _ = state.inner.openapi_json.set(json);
    router
        .layer(DefaultBodyLimit::max(state.options().max_body_bytes))
        .layer(axum::middleware::from_fn(telemetry::observe))
        .with_state(state)
}
