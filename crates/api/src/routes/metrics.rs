//! The SRE metrics, SLOs and the weekly report of the caller's tenant, and marking
//! policy blocks as false positives. The formulas are in docs/metrics.md; the numbers
//! come from `cordon_telemetry` over the store's telemetry facts.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cordon_core::{DeadLetterId, EgressDecisionFilter, Timestamp};
use cordon_policy::Action;
use cordon_telemetry::{GroupBy, IsoWeek};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{Caller, authorize_tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Query, parse_id};
use cordon_wire::ErrorBody;

/// The longest window `/v1/metrics/sre` answers for.
const MAX_WINDOW_DAYS: i64 = 366;
const DAY_MICROS: i64 = 86_400_000_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SreQuery {
    /// Start of the window, RFC 3339, inclusive (default: `to` minus 7 days).
    from: Option<String>,
    /// End of the window, RFC 3339, exclusive (default: now).
    to: Option<String>,
    /// `workload_class` (default), `session`, `run`, `none`, or `tenant` (the system
    /// key: every tenant).
    group_by: Option<String>,
}

fn timestamp(name: &str, text: &str) -> ApiResult<Timestamp> {
    text.parse::<Timestamp>().map_err(|_| {
        ApiError::validation(format!(
            "{name}: expected an RFC 3339 time such as 2026-11-23T00:00:00Z"
        ))
    })
}

/// The SRE metrics of a window: session success rate, recovery time after tool
/// failures, policy-block rate and false positives, top egress denial causes, artifact
/// restore latency, and cost (per completed workflow too). docs/metrics.md defines each.
#[utoipa::path(get, path = "/v1/metrics/sre", tag = "metrics",
    params(SreQuery),
    responses((status = 200, description = "The metrics, per group and in total (docs/metrics.md)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn sre(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SreQuery>,
) -> ApiResult<Response> {
    authorize_tenant(&state, &caller, Action::MetricsRead)?;
    let to = match &query.to {
        Some(text) => timestamp("to", text)?,
        None => Timestamp::now(),
    };
    let from = match &query.from {
        Some(text) => timestamp("from", text)?,
        None => to.saturating_add_micros(-7 * DAY_MICROS),
    };
    if from >= to {
        return Err(ApiError::validation("from: must be before `to`"));
    }
    if to.unix_micros() - from.unix_micros() > MAX_WINDOW_DAYS * DAY_MICROS {
        return Err(ApiError::validation(format!(
            "from: the window is at most {MAX_WINDOW_DAYS} days"
        )));
    }
    let group_by = GroupBy::parse(query.group_by.as_deref().unwrap_or("workload_class"))
        .map_err(|e| ApiError::validation(format!("group_by: {e}")))?;
    // Every tenant only for the system key asking by tenant; anyone else sees their own.
    let tenant = (!(caller.key.system && group_by == GroupBy::Tenant)).then(|| caller.tenant_id());
    let metrics = state
        .control()
        .sre_metrics(tenant, from, to, group_by)
        .await?;
    Ok(axum::Json(metrics).into_response())
}

/// Every service-level objective's attainment, error budget remaining and burn rates
/// (5m to 3d windows) now, for the caller's tenant.
#[utoipa::path(get, path = "/v1/metrics/slo", tag = "metrics",
    responses((status = 200, description = "`{\"slos\": [...]}` (docs/metrics.md, SLOs)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn slo(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    authorize_tenant(&state, &caller, Action::MetricsRead)?;
    let slos = state
        .control()
        .slo_status(Some(caller.tenant_id()), Timestamp::now())
        .await?;
    Ok(axum::Json(serde_json::json!({ "slos": slos })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportQuery {
    /// ISO week, e.g. `2026-W48` (default: the last complete week).
    week: Option<String>,
    /// `json` (default), `md` or `html`.
    format: Option<String>,
}

/// The weekly report of the caller's tenant: cost, risk and delivery against the week
/// before, as JSON, Markdown or one self-contained HTML page with inline SVG charts.
#[utoipa::path(get, path = "/v1/reports/weekly", tag = "metrics",
    params(ReportQuery),
    responses((status = 200, description = "The report in the asked format"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn weekly(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Response> {
    authorize_tenant(&state, &caller, Action::MetricsRead)?;
    let now = Timestamp::now();
    let week = match &query.week {
        Some(text) => {
            IsoWeek::parse(text).map_err(|e| ApiError::validation(format!("week: {e}")))?
        }
        None => IsoWeek::last_complete(now),
    };
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "md" | "html") {
        return Err(ApiError::validation(format!(
            "format: unknown format `{format}` (json, md, html)"
        )));
    }
    let tenant = state
        .store()
        .get_tenant(caller.tenant_id())
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let report = state
        .control()
        .weekly_report(tenant.id, &tenant.name, week, now)
        .await?;
    Ok(match format {
        "md" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            cordon_telemetry::report::markdown(&report),
        )
            .into_response(),
        "html" => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                ),
            ],
            cordon_telemetry::report::html(&report),
        )
            .into_response(),
        _ => axum::Json(report).into_response(),
    })
}

/// Mark an egress denial as a false positive: the policy should have allowed it. It
/// then counts in the false-positive ratio (docs/metrics.md).
#[utoipa::path(post, path = "/v1/egress/decisions/{seq}/false-positive", tag = "metrics",
    params(("seq" = i64, Path, description = "The decision's sequence number")),
    responses((status = 204, description = "Marked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn egress_false_positive(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<String>,
) -> ApiResult<Response> {
    authorize_tenant(&state, &caller, Action::BlockReview)?;
    let seq: i64 = seq
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::not_found("egress decision"))?;
    let decision = state
        .store()
        .list_egress_decisions(
            caller.tenant_id(),
            &EgressDecisionFilter {
                after: Some(seq - 1),
                ..Default::default()
            },
            1,
        )
        .await?
        .into_iter()
        .find(|d| d.seq == seq)
        .ok_or_else(|| ApiError::not_found("egress decision"))?;
    if !cordon_control::telemetry::is_policy_block(&decision) {
        return Err(ApiError::validation(format!(
            "seq: decision {seq} is not a policy block ({})",
            decision.reason.as_str()
        )));
    }
    state.control().telemetry().block_review(
        caller.tenant_id(),
        cordon_control::telemetry::block_reference(&decision),
        "false_positive",
        None,
        None,
        "egress",
        Timestamp::now(),
    );
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Mark a dead letter (a step a policy blocked) as a false positive.
#[utoipa::path(post, path = "/v1/dlq/{id}/false-positive", tag = "metrics",
    params(("id" = String, Path, description = "Dead-letter id")),
    responses((status = 204, description = "Marked"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn dlq_false_positive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize_tenant(&state, &caller, Action::BlockReview)?;
    parse_id::<DeadLetterId>(&id, "dead-letter entry")?;
    let entry = super::workflows::load_dead_letter(&state, &caller, &id).await?;
    state.control().telemetry().block_review(
        caller.tenant_id(),
        format!("dlq:{}", entry.id),
        "false_positive",
        Some(entry.run_id),
        Some(&entry.step),
        "step",
        Timestamp::now(),
    );
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
