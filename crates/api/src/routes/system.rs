//! Health, readiness, Prometheus metrics and the OpenAPI document. No authentication.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use cordon_core::{Phase, ReasonCode};
use cordon_wire::{ErrorBody, HealthBody};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, body = HealthBody)))]
pub(crate) async fn healthz() -> axum::Json<HealthBody> {
    axum::Json(HealthBody {
        status: "ok".into(),
    })
}

/// The process can serve requests: its store answers reads and writes.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, body = HealthBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<HealthBody>> {
    state.store().ping().await.map_err(|error| {
        tracing::warn!(%error, "not ready");
        ApiError::new(ReasonCode::StoreUnavailable, "the store is unavailable")
    })?;
    Ok(axum::Json(HealthBody {
        status: "ok".into(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let counts = state.store().count_sessions_by_phase().await?;
    for phase in Phase::ALL {
        let count = counts
            .iter()
            .find(|(p, _)| *p == phase)
            .map_or(0, |(_, n)| *n);
        #[allow(clippy::cast_precision_loss, reason = "a gauge of session counts")]
        metrics::gauge!("cordon_sessions", "phase" => phase.as_str()).set(count as f64);
    }
    let text = match crate::telemetry::prometheus() {
        Some(handle) => handle.render(),
        None => "# another metrics recorder is installed in this process\n".to_owned(),
    };
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// This document: OpenAPI 3.1, generated from the routes themselves.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "system", security(()),
    responses((status = 200, content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let json = state
        .inner
        .openapi_json
        .get()
        .cloned()
        .unwrap_or_else(|| "{}".to_owned());
    ([(CONTENT_TYPE, "application/json")], json).into_response()
}
