//! Sessions: create, read, list, the lifecycle actions and the event log. All of them
//! act inside the caller's tenant; agents see and drive only the sessions they own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use cordon_control::SessionSpec;
use cordon_core::{
    ReasonCode, Role, Session, SessionAction, SessionEvent, SessionFilter, SessionId,
    SessionOutcome,
};
use cordon_policy::{Action, Resource};
use cordon_wire::{
    CreateSessionRequest, ErrorBody, EventBody, EventList, SessionBody, SessionList,
    TransitionRequest,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, OptionalJson, Query, parse_id};

pub(crate) fn session_body(session: Session) -> SessionBody {
    SessionBody {
        id: session.id.to_string(),
        tenant_id: session.tenant_id.to_string(),
        owner: session.owner.to_string(),
        workload_class: session.workload_class,
        environment: session.environment,
        labels: session.labels,
        policy_version: session.policy_version,
        phase: session.phase,
        version: session.version,
        created_at: session.created_at,
        updated_at: session.updated_at,
        outcome: session.outcome.map(|o| o.as_str().to_owned()),
    }
}

fn event_body(event: SessionEvent) -> EventBody {
    EventBody {
        seq: event.seq,
        actor: event.actor,
        from: event.from,
        to: event.to,
        reason: event.reason,
        at: event.at,
    }
}

fn session_resource(session: &Session) -> Resource<'_> {
    Resource::Session {
        id: session.id,
        tenant_id: session.tenant_id,
        owner: session.owner,
        workload_class: &session.workload_class,
        environment: &session.environment,
    }
}

/// Loads a session of the caller's tenant and checks the caller may take `action` on it.
pub(crate) async fn authorized_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> ApiResult<Session> {
    let id = parse_id::<SessionId>(id, "session")?;
    let session = state
        .store()
        .get_session(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("session"))?;
    authorize(state, caller, action, session_resource(&session))?;
    Ok(session)
}

/// Create a session in phase `created`, owned by the calling key.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body = CreateSessionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    responses(
        (status = 201, body = SessionBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
    ))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateSessionRequest>,
) -> ApiResult<(StatusCode, axum::Json<SessionBody>)> {
    authorize(
        &state,
        &caller,
        Action::SessionCreate,
        Resource::Tenant(caller.tenant_id()),
    )?;
    validate::slug("workload_class", &request.workload_class)?;
    validate::slug("environment", &request.environment)?;
    validate::labels(&request.labels)?;
    let spec = SessionSpec {
        tenant_id: caller.tenant_id(),
        owner: caller.key.id,
        workload_class: request.workload_class,
        environment: request.environment,
        labels: request.labels,
        policy_version: state.policy().version().to_owned(),
    };
    let session = state
        .control()
        .create_session(spec, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(session_body(session))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListSessionsQuery {
    /// Only sessions in this phase.
    phase: Option<String>,
    /// Only sessions of this workload class.
    workload_class: Option<String>,
    /// Only sessions in this environment.
    environment: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
}

/// List the tenant's sessions (an agent's own only), oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(ListSessionsQuery),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListSessionsQuery>,
) -> ApiResult<axum::Json<SessionList>> {
    authorize(
        &state,
        &caller,
        Action::SessionList,
        Resource::Tenant(caller.tenant_id()),
    )?;
    let limit = validate::limit(query.limit)?;
    let phase = query.phase.map(|phase| phase.parse()).transpose().map_err(
        |error: cordon_core::lifecycle::UnknownPhase| {
            ApiError::new(ReasonCode::RequestQueryInvalid, error.to_string())
        },
    )?;
    let after = query
        .cursor
        .map(|cursor| cursor.parse::<SessionId>())
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ReasonCode::CursorInvalid,
                "`cursor` is not a cursor this server issued",
            )
        })?;
    let filter = SessionFilter {
        phase,
        workload_class: query.workload_class,
        environment: query.environment,
        owner: (caller.key.role == Role::Agent).then_some(caller.key.id),
        after,
    };
    let sessions = state
        .store()
        .list_sessions(caller.tenant_id(), &filter, limit)
        .await?;
    let next_cursor = (sessions.len() == limit as usize)
        .then(|| sessions.last().map(|session| session.id.to_string()))
        .flatten();
    Ok(axum::Json(SessionList {
        items: sessions.into_iter().map(session_body).collect(),
        next_cursor,
    }))
}

/// Get one session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SessionBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SessionBody>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionRead).await?;
    Ok(axum::Json(session_body(session)))
}

async fn transition(
    state: AppState,
    caller: Caller,
    id: String,
    action: SessionAction,
    request: TransitionRequest,
) -> ApiResult<axum::Json<SessionBody>> {
    let session = authorized_session(&state, &caller, &id, Action::Session(action)).await?;
    if let Some(reason) = &request.reason {
        validate::text("reason", reason, 1024)?;
    }
    let close_outcome = match (&request.outcome, action) {
        (None, _) => None,
        (Some(text), SessionAction::Close) => Some(
            text.parse::<SessionOutcome>()
                .map_err(|message| ApiError::validation(format!("outcome: {message}")))?,
        ),
        (Some(_), _) => {
            return Err(ApiError::validation(
                "outcome: only `close` takes an outcome".to_owned(),
            ));
        }
    };
    let outcome = match close_outcome {
        Some(close) => {
            state
                .control()
                .close(&session, close, &caller.actor(), request.reason)
                .await
        }
        None => {
            state
                .control()
                .transition(&session, action, &caller.actor(), request.reason)
                .await
        }
    };
    match outcome {
        Ok(updated) => {
            metrics::counter!(
                "cordon_session_transitions_total",
                "action" => action.as_str(),
                "to" => updated.phase.as_str()
            )
            .increment(1);
            Ok(axum::Json(session_body(updated)))
        }
        Err(error) => {
            let error = ApiError::from(error);
            metrics::counter!(
                "cordon_session_transition_refusals_total",
                "action" => action.as_str(),
                "code" => error.code.as_str()
            )
            .increment(1);
            Err(error)
        }
    }
}

macro_rules! lifecycle_route {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "sessions",
            params(
                ("id" = String, Path, description = "Session id"),
                ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request"),
            ),
            request_body(content = Option<TransitionRequest>, description = "Optional; `reason` is recorded in the event log"),
            responses(
                (status = 200, body = SessionBody),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
                (status = 409, description = "SESSION_INVALID_TRANSITION, SESSION_LEASE_HELD, SESSION_LEASE_FENCED or SESSION_CONFLICT", body = ErrorBody),
            ))]
        pub(crate) async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
            OptionalJson(request): OptionalJson<TransitionRequest>,
        ) -> ApiResult<axum::Json<SessionBody>> {
            transition(state, caller, id, $action, request).await
        }
    };
}

lifecycle_route!(
    activate,
    SessionAction::Activate,
    "/v1/sessions/{id}/activate",
    "created -> active."
);
lifecycle_route!(
    suspend,
    SessionAction::Suspend,
    "/v1/sessions/{id}/suspend",
    "active or checkpointed -> suspended."
);
lifecycle_route!(
    resume,
    SessionAction::Resume,
    "/v1/sessions/{id}/resume",
    "suspended or checkpointed -> active."
);
lifecycle_route!(
    close,
    SessionAction::Close,
    "/v1/sessions/{id}/close",
    "any phase but closed -> closed (final)."
);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListEventsQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
}

/// The session's event log: creation and every transition, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), ListEventsQuery),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ListEventsQuery>,
) -> ApiResult<axum::Json<EventList>> {
    let limit = validate::limit(query.limit)?;
    let after = match query.cursor {
        None => 0,
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    ReasonCode::CursorInvalid,
                    "`cursor` is not a cursor this server issued",
                )
            })?,
    };
    let session = authorized_session(&state, &caller, &id, Action::SessionEvents).await?;
    let events = state
        .store()
        .list_events(caller.tenant_id(), session.id, after, limit)
        .await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|event| event.seq.to_string()))
        .flatten();
    Ok(axum::Json(EventList {
        items: events.into_iter().map(event_body).collect(),
        next_cursor,
    }))
}
