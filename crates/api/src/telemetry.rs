//! Request ids, request metrics and the Prometheus endpoint's recorder.
//!
//! Metric names (all prefixed `cordon_`):
//! - `http_requests_total{method,route,status}` and
//!   `http_request_duration_seconds{method,route}` (histogram);
//! - `sessions{phase}`: sessions per phase over all tenants, read from the store at scrape;
//! - `session_transitions_total{action,to}` and
//!   `session_transition_refusals_total{action,code}`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::REQUEST_ID;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` if another
/// recorder was installed first (then `/metrics` reports that instead of failing).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let buckets = [
                0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ];
            // Recovery takes seconds to hours; restores milliseconds to seconds (the
            // same bounds as `/v1/metrics/sre` reports).
            let recovery = [
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("cordon_http_request_duration_seconds".into()),
                    &buckets,
                )
                .ok()?
                .set_buckets_for_metric(Matcher::Full("cordon_recovery_seconds".into()), &recovery)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("cordon_artifact_restore_seconds".into()),
                    &cordon_telemetry::sre::RESTORE_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// An incoming `x-request-id` is kept if it is short and plain; otherwise a fresh one.
fn request_id_for(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .filter(|id| {
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()))
}

/// Outermost middleware: assigns the request id (visible to error bodies through a
/// task-local), opens the request's log span, records metrics, sets `x-request-id`.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let request_id = request_id_for(&request);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %method,
        route = %route,
        principal = tracing::field::Empty,
        status = tracing::field::Empty,
        otel.link_seed = tracing::field::Empty,
        otel.error = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = {
        use tracing::Instrument;
        REQUEST_ID
            .scope(request_id.clone(), next.run(request))
            .instrument(span.clone())
            .await
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    if status >= 500 {
        span.record("otel.error", true);
    }
    span.in_scope(|| {
        tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "served");
    });
    let labels = [("method", method.to_string()), ("route", route)];
    metrics::histogram!("cordon_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    let [method, route] = labels;
    metrics::counter!(
        "cordon_http_requests_total",
        &[method, route, ("status", status.to_string())]
    )
    .increment(1);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
