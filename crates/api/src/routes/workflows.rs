//! Workflows: definitions (stored by digest), runs and their journals, the durable-step
//! API for agent code, operator commands (cancel, pause, unpause, events, approvals),
//! the dead-letter queue and cron schedules. Everything is inside the caller's tenant;
//! another tenant's run is 404. Agents act only on runs they started.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, ReasonCode, Role, Run, RunFilter,
    RunId, RunStatus, Schedule, ScheduleId, SessionId, Timestamp, WorkflowDefinition,
};
use cordon_policy::Action;
use cordon_store::StoreError;
use cordon_wire::ErrorBody;
use cordon_wire::workflow::{
    ApproveRequest, CancelRunRequest, CreateScheduleRequest, DeadLetterBody, DeadLetterList,
    DefinitionBody, DefinitionList, FinishRunRequest, JournalEntryBody, JournalList,
    PutDefinitionRequest, RunBody, RunList, ScheduleBody, ScheduleList, SendEventRequest,
    StartRunRequest, StepBody, StepCallRequest, StepErrorBody, StepReplyBody,
};
use cordon_workflow::commands::{Command, CommandError, StepCall, StepReply};
use cordon_workflow::state::{ApprovalDecision, RunState, StepError, StepState};
use cordon_workflow::{Engine, FailureClass, StartRun};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize_tenant};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, OptionalJson, Query, parse_id};

fn engine(state: &AppState) -> ApiResult<&Engine> {
    state.engine().ok_or_else(|| {
        ApiError::new(
            ReasonCode::SandboxUnavailable,
            "this server runs no workflow engine",
        )
    })
}

/// Names of runs, steps and events: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
fn check_name(value: &str, field: &str) -> ApiResult<()> {
    let valid = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "`{field}` must be 1 to 128 characters of A-Z, a-z, 0-9, `.`, `_`, `-`"
        )))
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        ApiError::new(error.reason, error.message)
    }
}

fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn error_body(error: &StepError) -> StepErrorBody {
    StepErrorBody {
        class: error.class.as_str().to_owned(),
        reason: error.reason.clone(),
        message: error.message.clone(),
        exit_code: error.exit_code,
    }
}

fn step_body(name: &str, s: &StepState, compensates: Option<&str>) -> StepBody {
    StepBody {
        name: name.to_owned(),
        status: serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        attempt: s.attempt,
        output: s.output.clone(),
        error: s.error.as_ref().map(error_body),
        dead_letter: s.dead_letter.clone(),
        compensates: compensates.map(str::to_owned),
    }
}

pub(crate) fn run_body(run: &Run) -> RunBody {
    let state = RunState::parse(&run.state).unwrap_or_default();
    RunBody {
        id: run.id.to_string(),
        name: run.name.clone(),
        definition: run.definition.clone(),
        session_id: run.session_id.map(|s| s.to_string()),
        status: run.status,
        reason: run.reason.clone(),
        message: state.ending.as_ref().map(|e| e.message.clone()),
        input: json_text(&run.input),
        output: run.output.as_deref().map(json_text),
        paused: state.paused,
        steps: {
            // In the order they first started (steps that never ran last, by name).
            let mut steps: Vec<_> = state.steps.iter().collect();
            steps.sort_by_key(|(name, s)| (s.first_started_at.unwrap_or(i64::MAX), name.as_str()));
            steps
                .into_iter()
                .map(|(name, s)| step_body(name, s, None))
                .collect()
        },
        compensations: state
            .compensations
            .iter()
            .map(|c| step_body(&c.name, &c.state, Some(&c.for_step)))
            .collect(),
        created_by: run.created_by.clone(),
        created_at: run.created_at,
        updated_at: run.updated_at,
        deadline: run.deadline,
        journal_seq: run.journal_seq,
    }
}

fn definition_body(def: &WorkflowDefinition) -> DefinitionBody {
    DefinitionBody {
        digest: def.digest.clone(),
        name: def.name.clone(),
        definition: json_text(&def.document),
        created_by: def.created_by.clone(),
        created_at: def.created_at,
    }
}

fn journal_body(entry: JournalEntry) -> JournalEntryBody {
    JournalEntryBody {
        seq: entry.seq,
        step: entry.step,
        attempt: entry.attempt,
        kind: entry.kind,
        reason: entry.reason,
        detail: json_text(&entry.detail),
        at: entry.at,
    }
}

fn dead_letter_body(d: DeadLetter) -> DeadLetterBody {
    DeadLetterBody {
        id: d.id.to_string(),
        run_id: d.run_id.to_string(),
        session_id: d.session_id.map(|s| s.to_string()),
        step: d.step,
        attempt: d.attempt,
        reason: d.reason,
        summary: json_text(&d.summary),
        status: d.status,
        created_at: d.created_at,
        resolved_at: d.resolved_at,
        resolved_by: d.resolved_by,
    }
}

fn schedule_body(s: Schedule) -> ScheduleBody {
    ScheduleBody {
        id: s.id.to_string(),
        definition: s.definition,
        cron: s.cron,
        input: json_text(&s.input),
        next_fire_at: s.next_fire_at,
        created_by: s.created_by,
        created_at: s.created_at,
    }
}

/// Loads a run of the caller's tenant; an agent sees only runs it started.
async fn load_run(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Run> {
    let id = parse_id::<RunId>(id, "run")?;
    let run = state
        .store()
        .get_run(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    if caller.key.role == Role::Agent && !caller.key.system && run.created_by != caller.actor() {
        return Err(ApiError::not_found("run"));
    }
    Ok(run)
}

/// Applies an operator command to a run and wakes the engine.
async fn command(state: &AppState, caller: &Caller, run: &Run, command: Command) -> ApiResult<Run> {
    let change: cordon_store::RunChange = Box::new(move |run: &mut Run| {
        cordon_workflow::commands::apply(run, command, Timestamp::now())
            .map_err(|e| StoreError::RunConflict(e.message))
    });
    let (run, _) = state
        .store()
        .update_run(caller.tenant_id(), run.id, change)
        .await?;
    if let Some(engine) = state.engine() {
        engine.kick(run.id);
    }
    Ok(run)
}

/// Resolves a workflow reference: a digest, or the newest definition of a name.
async fn find_definition(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> ApiResult<WorkflowDefinition> {
    let store = state.store();
    if reference.starts_with("sha256:") {
        return store
            .get_workflow_definition(caller.tenant_id(), reference)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow definition"));
    }
    store
        .list_workflow_definitions(caller.tenant_id())
        .await?
        .into_iter()
        .find(|d| d.name == reference)
        .ok_or_else(|| ApiError::not_found("workflow definition"))
}

/// Store a workflow definition (YAML or JSON). The same definition stored again
/// answers the stored one.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body = PutDefinitionRequest,
    responses((status = 201, body = DefinitionBody), (status = 200, body = DefinitionBody, description = "Already stored"),
        (status = 400, description = "WORKFLOW_INVALID", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn put_definition(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<PutDefinitionRequest>,
) -> ApiResult<(StatusCode, axum::Json<DefinitionBody>)> {
    authorize_tenant(&state, &caller, Action::WorkflowDefine)?;
    let parsed = match (&request.definition, &request.source) {
        (Some(value), None) => cordon_workflow::definition::from_value(value),
        (None, Some(text)) => cordon_workflow::definition::parse(text),
        _ => {
            return Err(ApiError::validation(
                "give exactly one of `definition` (an object) and `source` (YAML or JSON text)",
            ));
        }
    }
    .map_err(|e| ApiError::new(ReasonCode::WorkflowInvalid, e.to_string()))?;
    let definition = WorkflowDefinition {
        tenant_id: caller.tenant_id(),
        digest: cordon_workflow::definition::digest(&parsed),
        name: parsed.name.clone(),
        document: cordon_workflow::definition::canonical_json(&parsed),
        created_by: caller.actor(),
        created_at: Timestamp::now(),
    };
    let stored = state.store().put_workflow_definition(&definition).await?;
    let status = if stored.created_at == definition.created_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(definition_body(&stored))))
}

/// The tenant's workflow definitions, newest first.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, body = DefinitionList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_definitions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<DefinitionList>> {
    authorize_tenant(&state, &caller, Action::WorkflowRead)?;
    let items = state
        .store()
        .list_workflow_definitions(caller.tenant_id())
        .await?;
    Ok(axum::Json(DefinitionList {
        items: items.iter().map(definition_body).collect(),
    }))
}

/// One definition, by digest (or the newest of a name).
#[utoipa::path(get, path = "/v1/workflows/{reference}", tag = "workflows",
    params(("reference" = String, Path, description = "Digest (`sha256:...`) or name")),
    responses((status = 200, body = DefinitionBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_definition(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<axum::Json<DefinitionBody>> {
    authorize_tenant(&state, &caller, Action::WorkflowRead)?;
    let def = find_definition(&state, &caller, &reference).await?;
    Ok(axum::Json(definition_body(&def)))
}

/// Start a run. With `Idempotency-Key`, the same key starts one run: asking again
/// answers that run.
#[utoipa::path(post, path = "/v1/runs", tag = "workflows",
    request_body = StartRunRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Starts the run once")),
    responses((status = 201, body = RunBody), (status = 200, body = RunBody, description = "The run this idempotency key already started"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "SANDBOX_UNAVAILABLE: no workflow engine", body = ErrorBody)))]
pub(crate) async fn start_run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<StartRunRequest>,
) -> ApiResult<(StatusCode, axum::Json<RunBody>)> {
    authorize_tenant(&state, &caller, Action::RunStart)?;
    let engine = engine(&state)?;
    let definition = match (&request.definition, &request.workflow, &request.name) {
        (Some(reference), None, None) | (None, Some(reference), None) => {
            Some(find_definition(&state, &caller, reference).await?)
        }
        (None, None, Some(name)) => {
            check_name(name, "name")?;
            None
        }
        _ => {
            return Err(ApiError::validation(
                "give one of `definition` (a digest), `workflow` (a name) or `name` (a run driven by your code)",
            ));
        }
    };
    let session_id = match &request.session_id {
        Some(text) => {
            let session =
                super::sessions::authorized_session(&state, &caller, text, Action::SessionExec)
                    .await?;
            Some(session.id)
        }
        None => None,
    };
    let deadline = match &request.deadline {
        Some(text) => {
            let ms = cordon_workflow::definition::parse_duration(text)
                .map_err(|e| ApiError::validation(format!("deadline: {e}")))?;
            Some(
                Timestamp::now()
                    .saturating_add_micros(i64::try_from(ms).unwrap_or(i64::MAX / 1000) * 1000),
            )
        }
        None => None,
    };
    // Scoped to the caller, like the API's own idempotency records: another key that
    // happens to send the same value starts its own run and never sees this one.
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|value| format!("{}:{value}", caller.actor()));
    let start = StartRun {
        tenant_id: caller.tenant_id(),
        definition,
        name: request.name.clone(),
        session_id,
        input: request
            .input
            .clone()
            .unwrap_or(Value::Object(Default::default())),
        idempotency_key: key,
        principal: caller.actor(),
        deadline,
    };
    let (run, created) = engine
        .start(start)
        .await
        .map_err(|e| ApiError::new(e.reason(), e.to_string()))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // The request's trace links to the run's (docs/metrics.md, Traces).
    tracing::Span::current().record("otel.link_seed", run.id.to_string());
    Ok((status, axum::Json(run_body(&run))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs of this workflow name.
    name: Option<String>,
    /// Only runs of this definition digest.
    definition: Option<String>,
    /// Only runs in this session.
    session_id: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<u32>,
}

/// The tenant's runs (an agent's own only), in start order.
#[utoipa::path(get, path = "/v1/runs", tag = "workflows", params(RunQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<RunQuery>,
) -> ApiResult<axum::Json<RunList>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    let limit = validate::limit(query.limit)?;
    let invalid = |what: &str| {
        ApiError::new(
            ReasonCode::RequestQueryInvalid,
            format!("`{what}` is not valid"),
        )
    };
    let filter = RunFilter {
        status: query
            .status
            .as_deref()
            .map(|s| s.parse::<RunStatus>())
            .transpose()
            .map_err(|_| invalid("status"))?,
        name: query.name.clone(),
        definition: query.definition.clone(),
        session_id: query
            .session_id
            .as_deref()
            .map(|s| s.parse::<SessionId>())
            .transpose()
            .map_err(|_| invalid("session_id"))?,
        after: query
            .after
            .as_deref()
            .map(|s| s.parse::<RunId>())
            .transpose()
            .map_err(|_| {
                ApiError::new(
                    ReasonCode::CursorInvalid,
                    "`after` is not a cursor this server issued",
                )
            })?,
    };
    let runs = state
        .store()
        .list_runs(caller.tenant_id(), &filter, limit)
        .await?;
    let next = (runs.len() == limit as usize)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    let agent = caller.key.role == Role::Agent && !caller.key.system;
    let items = runs
        .iter()
        .filter(|r| !agent || r.created_by == caller.actor())
        .map(run_body)
        .collect();
    Ok(axum::Json(RunList { items, next }))
}

/// A run: status, steps and compensations.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    let run = load_run(&state, &caller, &id).await?;
    Ok(axum::Json(run_body(&run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct JournalQuery {
    /// Entries after this sequence number.
    after: Option<u64>,
    limit: Option<u32>,
}

/// The run's journal: every scheduled, started, heartbeat, completed, failed, blocked,
/// compensating and compensated event, in order.
#[utoipa::path(get, path = "/v1/runs/{id}/journal", tag = "workflows",
    params(("id" = String, Path, description = "Run id"), JournalQuery),
    responses((status = 200, body = JournalList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn run_journal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<JournalQuery>,
) -> ApiResult<axum::Json<JournalList>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    let run = load_run(&state, &caller, &id).await?;
    let limit = validate::limit(query.limit)?;
    let entries = state
        .store()
        .run_journal(caller.tenant_id(), run.id, query.after.unwrap_or(0), limit)
        .await?;
    Ok(axum::Json(JournalList {
        items: entries.into_iter().map(journal_body).collect(),
    }))
}

/// Cancel a run: no new step starts, and the compensations of its succeeded steps run,
/// newest first.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "workflows",
    request_body = CancelRunRequest,
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<CancelRunRequest>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunControl)?;
    let run = load_run(&state, &caller, &id).await?;
    let run = command(
        &state,
        &caller,
        &run,
        Command::Cancel {
            by: caller.actor(),
            reason: request.reason,
        },
    )
    .await?;
    Ok(axum::Json(run_body(&run)))
}

/// Pause a run: attempts in flight finish, no new one starts until it is resumed.
#[utoipa::path(post, path = "/v1/runs/{id}/pause", tag = "workflows",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn pause_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunControl)?;
    let run = load_run(&state, &caller, &id).await?;
    let run = command(&state, &caller, &run, Command::Pause { by: caller.actor() }).await?;
    Ok(axum::Json(run_body(&run)))
}

/// Resume a paused run.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "workflows",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn resume_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunControl)?;
    let run = load_run(&state, &caller, &id).await?;
    let run = command(
        &state,
        &caller,
        &run,
        Command::Unpause { by: caller.actor() },
    )
    .await?;
    Ok(axum::Json(run_body(&run)))
}

/// Send an event to the run (for its `wait_for_event` steps; kept until one takes it).
#[utoipa::path(post, path = "/v1/runs/{id}/events", tag = "workflows",
    request_body = SendEventRequest,
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn send_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<SendEventRequest>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunStep)?;
    check_name(&request.event, "event")?;
    let run = load_run(&state, &caller, &id).await?;
    let cmd = Command::Event {
        name: request.event,
        payload: request.payload.unwrap_or(Value::Null),
        by: caller.actor(),
    };
    let run = command(&state, &caller, &run, cmd).await?;
    Ok(axum::Json(run_body(&run)))
}

/// Approve (or reject) a run's waiting approval step.
#[utoipa::path(post, path = "/v1/runs/{id}/approve", tag = "workflows",
    request_body = ApproveRequest,
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<ApproveRequest>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunApprove)?;
    let run = load_run(&state, &caller, &id).await?;
    let cmd = Command::Approve {
        step: request.step,
        decision: ApprovalDecision {
            approved: request.approved,
            by: caller.actor(),
            comment: request.comment,
        },
    };
    let run = command(&state, &caller, &run, cmd).await?;
    Ok(axum::Json(run_body(&run)))
}

/// End a run driven by agent code.
#[utoipa::path(post, path = "/v1/runs/{id}/finish", tag = "workflows",
    request_body = FinishRunRequest,
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE", body = ErrorBody)))]
pub(crate) async fn finish_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<FinishRunRequest>,
) -> ApiResult<axum::Json<RunBody>> {
    authorize_tenant(&state, &caller, Action::RunStep)?;
    let succeeded = match request.status.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => {
            return Err(ApiError::validation(
                "`status` must be `succeeded` or `failed`",
            ));
        }
    };
    let run = load_run(&state, &caller, &id).await?;
    let cmd = Command::Finish {
        succeeded,
        output: request.output.unwrap_or(Value::Null),
        by: caller.actor(),
    };
    let run = command(&state, &caller, &run, cmd).await?;
    Ok(axum::Json(run_body(&run)))
}

/// The durable-step API: record a step's start, heartbeat, result or failure. Asking
/// again for a completed step answers its recorded result (`replayed: true`), so agent
/// code that restarts replays what it did and goes on where it stopped.
#[utoipa::path(post, path = "/v1/runs/{id}/steps/{step}", tag = "workflows",
    request_body = StepCallRequest,
    params(("id" = String, Path, description = "Run id"), ("step" = String, Path, description = "Step name")),
    responses((status = 200, body = StepReplyBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE, RUN_STEP_IN_FLIGHT", body = ErrorBody)))]
pub(crate) async fn step_call(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    Json(request): Json<StepCallRequest>,
) -> ApiResult<axum::Json<StepReplyBody>> {
    authorize_tenant(&state, &caller, Action::RunStep)?;
    check_name(&step, "step")?;
    let call = match request.action.as_str() {
        "start" => StepCall::Start {
            heartbeat_ms: request
                .heartbeat_timeout
                .as_deref()
                .map(cordon_workflow::definition::parse_duration)
                .transpose()
                .map_err(|e| ApiError::validation(format!("heartbeat_timeout: {e}")))?,
        },
        "heartbeat" => StepCall::Heartbeat,
        "complete" => StepCall::Complete {
            output: request.output.unwrap_or(Value::Null),
        },
        "fail" => StepCall::Fail {
            class: match request.class.as_deref().unwrap_or("error") {
                "timeout" => FailureClass::Timeout,
                "capacity" => FailureClass::Capacity,
                "policy" => FailureClass::Policy,
                "error" => FailureClass::Error,
                other => {
                    return Err(ApiError::validation(format!(
                        "`{other}` is not a failure class"
                    )));
                }
            },
            message: request.message.unwrap_or_default(),
            exit_code: request.exit_code,
            summary: request.summary,
        },
        other => {
            return Err(ApiError::validation(format!(
                "`{other}` is not a step action: start, heartbeat, complete or fail"
            )));
        }
    };
    let run = load_run(&state, &caller, &id).await?;
    let reply = std::sync::Arc::new(std::sync::Mutex::new(None::<StepReply>));
    let reply_in = std::sync::Arc::clone(&reply);
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None::<CommandError>));
    let failure_in = std::sync::Arc::clone(&failure);
    let change: cordon_store::RunChange = Box::new(move |run: &mut Run| {
        match cordon_workflow::commands::step_call(
            run,
            &step,
            call,
            Timestamp::now(),
            rand::random::<f64>(),
        ) {
            Ok((write, answer)) => {
                if let Ok(mut slot) = reply_in.lock() {
                    *slot = Some(answer);
                }
                Ok(write)
            }
            Err(error) => {
                let message = error.message.clone();
                if let Ok(mut slot) = failure_in.lock() {
                    *slot = Some(error);
                }
                Err(StoreError::RunConflict(message))
            }
        }
    });
    match state
        .store()
        .update_run(caller.tenant_id(), run.id, change)
        .await
    {
        Ok(_) => {}
        Err(StoreError::RunConflict(message)) => {
            let error = failure.lock().ok().and_then(|mut f| f.take());
            return Err(match error {
                Some(error) => error.into(),
                None => ApiError::new(ReasonCode::RunInvalidState, message),
            });
        }
        Err(other) => return Err(other.into()),
    }
    let reply = reply
        .lock()
        .ok()
        .and_then(|mut r| r.take())
        .ok_or_else(|| ApiError::internal("the step call recorded no answer"))?;
    Ok(axum::Json(StepReplyBody {
        step: reply.step,
        status: serde_json::to_value(reply.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        attempt: reply.attempt,
        idempotency_key: reply.idempotency_key,
        replayed: reply.replayed,
        output: reply.output,
        error: reply.error.as_ref().map(error_body),
        retry_after_ms: reply.retry_after_ms,
        dead_letter: reply.dead_letter,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterQuery {
    /// `open` (default), `redriven`, `discarded` or `all`.
    status: Option<String>,
    /// Only entries of this run.
    run_id: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// The dead-letter queue: steps refused by policy, waiting for an operator.
#[utoipa::path(get, path = "/v1/dlq", tag = "workflows", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DeadLetterQuery>,
) -> ApiResult<axum::Json<DeadLetterList>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    let limit = validate::limit(query.limit)?;
    let invalid = |what: &str| {
        ApiError::new(
            ReasonCode::RequestQueryInvalid,
            format!("`{what}` is not valid"),
        )
    };
    let status = match query.status.as_deref() {
        None => Some(DeadLetterStatus::Open),
        Some("all") => None,
        Some(text) => Some(
            text.parse::<DeadLetterStatus>()
                .map_err(|_| invalid("status"))?,
        ),
    };
    let run_id = query
        .run_id
        .as_deref()
        .map(|s| s.parse::<RunId>())
        .transpose()
        .map_err(|_| invalid("run_id"))?;
    let after = query
        .after
        .as_deref()
        .map(|s| s.parse::<DeadLetterId>())
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ReasonCode::CursorInvalid,
                "`after` is not a cursor this server issued",
            )
        })?;
    let items = state
        .store()
        .list_dead_letters(caller.tenant_id(), status, run_id, after, limit)
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(axum::Json(DeadLetterList {
        items: items.into_iter().map(dead_letter_body).collect(),
        next,
    }))
}

pub(crate) async fn load_dead_letter(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<DeadLetter> {
    let id = parse_id::<DeadLetterId>(id, "dead-letter entry")?;
    state
        .store()
        .get_dead_letter(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("dead-letter entry"))
}

/// One dead-letter entry.
#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Dead-letter id")),
    responses((status = 200, body = DeadLetterBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeadLetterBody>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    Ok(axum::Json(dead_letter_body(
        load_dead_letter(&state, &caller, &id).await?,
    )))
}

/// Redrive a dead letter (after a policy change): its step is tried again at once.
#[utoipa::path(post, path = "/v1/dlq/{id}/redrive", tag = "workflows",
    params(("id" = String, Path, description = "Dead-letter id")),
    responses((status = 200, body = DeadLetterBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE: not open", body = ErrorBody)))]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeadLetterBody>> {
    resolve(state, caller, id, true).await
}

/// Discard a dead letter: its run fails and compensates.
#[utoipa::path(post, path = "/v1/dlq/{id}/discard", tag = "workflows",
    params(("id" = String, Path, description = "Dead-letter id")),
    responses((status = 200, body = DeadLetterBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RUN_INVALID_STATE: not open", body = ErrorBody)))]
pub(crate) async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeadLetterBody>> {
    resolve(state, caller, id, false).await
}

async fn resolve(
    state: AppState,
    caller: Caller,
    id: String,
    redrive: bool,
) -> ApiResult<axum::Json<DeadLetterBody>> {
    authorize_tenant(&state, &caller, Action::DlqManage)?;
    let entry = load_dead_letter(&state, &caller, &id).await?;
    if entry.status != DeadLetterStatus::Open {
        return Err(ApiError::new(
            ReasonCode::RunInvalidState,
            format!("the entry is {}, not open", entry.status.as_str()),
        ));
    }
    let run = state
        .store()
        .get_run(caller.tenant_id(), entry.run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    let cmd = if redrive {
        Command::Redrive {
            dead_letter: entry.id,
            step: entry.step.clone(),
            by: caller.actor(),
        }
    } else {
        Command::Discard {
            dead_letter: entry.id,
            step: entry.step.clone(),
            by: caller.actor(),
        }
    };
    // Before the command: the redriven step may succeed before this handler goes on.
    let asked_at = Timestamp::now();
    command(&state, &caller, &run, cmd).await?;
    if redrive {
        // Counts as a false positive once the step then succeeds (docs/metrics.md).
        state.control().telemetry().block_review(
            caller.tenant_id(),
            format!("dlq:{}", entry.id),
            "redriven",
            Some(entry.run_id),
            Some(&entry.step),
            "step",
            asked_at,
        );
    }
    Ok(axum::Json(dead_letter_body(
        load_dead_letter(&state, &caller, &id).await?,
    )))
}

/// Create a cron schedule: it starts a run of the workflow at each matching minute (UTC).
#[utoipa::path(post, path = "/v1/schedules", tag = "workflows",
    request_body = CreateScheduleRequest,
    responses((status = 201, body = ScheduleBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateScheduleRequest>,
) -> ApiResult<(StatusCode, axum::Json<ScheduleBody>)> {
    authorize_tenant(&state, &caller, Action::ScheduleManage)?;
    let cron = cordon_workflow::cron::parse(&request.cron)
        .map_err(|e| ApiError::new(ReasonCode::WorkflowInvalid, format!("cron: {e}")))?;
    let def = find_definition(&state, &caller, &request.workflow).await?;
    let now = Timestamp::now();
    let next = cron.next_after(now).ok_or_else(|| {
        ApiError::new(
            ReasonCode::WorkflowInvalid,
            "cron: the expression never matches",
        )
    })?;
    let schedule = Schedule {
        id: ScheduleId::generate(),
        tenant_id: caller.tenant_id(),
        definition: def.digest,
        cron: request.cron,
        input: request
            .input
            .unwrap_or(Value::Object(Default::default()))
            .to_string(),
        next_fire_at: next,
        created_by: caller.actor(),
        created_at: now,
    };
    state.store().create_schedule(&schedule).await?;
    Ok((StatusCode::CREATED, axum::Json(schedule_body(schedule))))
}

/// The tenant's cron schedules.
#[utoipa::path(get, path = "/v1/schedules", tag = "workflows",
    responses((status = 200, body = ScheduleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<ScheduleList>> {
    authorize_tenant(&state, &caller, Action::RunRead)?;
    let items = state.store().list_schedules(caller.tenant_id()).await?;
    Ok(axum::Json(ScheduleList {
        items: items.into_iter().map(schedule_body).collect(),
    }))
}

/// Delete a cron schedule (runs it started go on).
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Schedule id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    authorize_tenant(&state, &caller, Action::ScheduleManage)?;
    let id = parse_id::<ScheduleId>(&id, "schedule")?;
    state
        .store()
        .delete_schedule(caller.tenant_id(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
