//! Route table. Every route is registered through `utoipa_axum::routes!`, which adds
//! it to the router and to the OpenAPI document in one step, so the two cannot drift.

mod artifacts;
mod console;
mod egress;
mod keys;
mod metrics;
mod sandbox;
mod sessions;
mod system;
mod tenants;
mod validate;
mod workflows;

use axum::Router;
use axum::http::{Method, Uri};
use cordon_core::ReasonCode;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cordon API",
        description = "Control plane for AI-agent sessions. Errors are \
            `{\"error\":{\"code\",\"message\",\"request_id\"}}` with a stable code from \
            docs/reason-codes.md; every response carries `x-request-id`.",
        version = "1"
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "system", description = "Health, readiness, metrics and this document"),
        (name = "tenants", description = "Tenants: the unit of isolation"),
        (name = "keys", description = "API keys and their roles"),
        (name = "sessions", description = "Session control records and their lifecycle"),
        (name = "sandbox", description = "The session's sandbox: exec, processes, files"),
        (name = "egress", description = "Egress policy, secrets, credential leases, decisions"),
        (name = "artifacts", description = "Workspace versions, the evidence log, signed releases"),
        (name = "workflows", description = "Workflow definitions, runs and their journals, durable steps, the dead-letter queue, schedules"),
        (name = "console", description = "The web console's page and assets (no key needed; the page asks for one)"),
        (name = "metrics", description = "SRE metrics, SLOs, the weekly report, false-positive marks on policy blocks"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn openapi_router(state: &AppState) -> OpenApiRouter<AppState> {
    let public = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(console::index))
        .routes(routes!(console::index_dir))
        .routes(routes!(console::file));
    let authenticated = OpenApiRouter::new()
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(sessions::create_session, sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .routes(routes!(sessions::activate))
        .routes(routes!(artifacts::checkpoint))
        .routes(routes!(sessions::suspend))
        .routes(routes!(sessions::resume))
        .routes(routes!(sessions::close))
        .routes(routes!(sessions::list_events))
        .routes(routes!(sandbox::exec))
        .routes(routes!(sandbox::list_processes))
        .routes(routes!(sandbox::kill_process))
        .routes(routes!(sandbox::get_sandbox))
        .routes(routes!(sandbox::list_files))
        .routes(routes!(sandbox::get_file, sandbox::delete_file))
        .routes(routes!(egress::get_policy, egress::put_policy))
        .routes(routes!(egress::list_decisions))
        .routes(routes!(egress::get_ca))
        .routes(routes!(egress::create_secret, egress::list_secrets))
        .routes(routes!(egress::get_secret, egress::delete_secret))
        .routes(routes!(egress::create_lease, egress::list_leases))
        .routes(routes!(egress::renew_lease))
        .routes(routes!(egress::revoke_lease))
        .routes(routes!(artifacts::list_versions))
        .routes(routes!(artifacts::get_version))
        .routes(routes!(artifacts::diff_version))
        .routes(routes!(artifacts::download_version))
        .routes(routes!(artifacts::restore))
        .routes(routes!(artifacts::fork))
        .routes(routes!(artifacts::list_evidence))
        .routes(routes!(artifacts::evidence_checkpoint))
        .routes(routes!(artifacts::inclusion_proof))
        .routes(routes!(artifacts::consistency_proof))
        .routes(routes!(artifacts::export_evidence))
        .routes(routes!(artifacts::public_key))
        .routes(routes!(artifacts::promote))
        .routes(routes!(artifacts::list_releases))
        .routes(routes!(artifacts::get_release))
        .routes(routes!(artifacts::download_release))
        .routes(routes!(
            workflows::put_definition,
            workflows::list_definitions
        ))
        .routes(routes!(workflows::get_definition))
        .routes(routes!(workflows::start_run, workflows::list_runs))
        .routes(routes!(workflows::get_run))
        .routes(routes!(workflows::run_journal))
        .routes(routes!(workflows::cancel_run))
        .routes(routes!(workflows::pause_run))
        .routes(routes!(workflows::resume_run))
        .routes(routes!(workflows::send_event))
        .routes(routes!(workflows::approve))
        .routes(routes!(workflows::finish_run))
        .routes(routes!(workflows::step_call))
        .routes(routes!(workflows::list_dead_letters))
        .routes(routes!(workflows::get_dead_letter))
        .routes(routes!(workflows::redrive))
        .routes(routes!(workflows::discard))
        .routes(routes!(
            workflows::create_schedule,
            workflows::list_schedules
        ))
        .routes(routes!(workflows::delete_schedule))
        .routes(routes!(metrics::sre))
        .routes(routes!(metrics::slo))
        .routes(routes!(metrics::weekly))
        .routes(routes!(metrics::egress_false_positive))
        .routes(routes!(metrics::dlq_false_positive))
        // Uploads may be larger than other request bodies.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(sandbox::put_file))
                .layer(axum::extract::DefaultBodyLimit::max(
                    state.options().max_file_bytes,
                )),
        )
        .merge(
            OpenApiRouter::new()
                .routes(routes!(artifacts::upload_version))
                .layer(axum::extract::DefaultBodyLimit::max(
                    state.options().max_archive_bytes,
                )),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::idempotency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ));
    public.merge(authenticated)
}

pub(crate) fn build(state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = openapi_router(&state).split_for_parts();
    // axum's catch-all `{*path}` is OpenAPI's plain `{path}`.
    let paths = std::mem::take(&mut openapi.paths.paths);
    openapi.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    let router = router
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method);
    (router, openapi)
}

async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::new(
        ReasonCode::NotFound,
        format!("no route for `{}`", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ReasonCode::MethodNotAllowed,
        format!("`{}` does not accept {method}", uri.path()),
    )
}
