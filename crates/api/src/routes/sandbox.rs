//! The session's sandbox: exec (buffered or streamed), background processes, files and
//! the sandbox's state. Every route loads the session in the caller's tenant first
//! (another tenant's session is 404), asks Cedar, and requires the session `active`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cordon_core::{Phase, ReasonCode, Session, Timestamp};
use cordon_policy::Action;
use cordon_sandbox::{
    ExecEvent, ExecOutcome, FileEntry, ProcessRecord, SandboxError, SandboxManager,
};
use cordon_wire::{
    ErrorBody, ExecRequest, ExecResponse, ExecStreamEvent, FileBody, FileList, ProcessBody,
    ProcessList, SandboxBody,
};
use serde::Deserialize;
use sha2::Digest;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};

/// The content type of a streamed exec.
pub const NDJSON: &str = "application/x-ndjson";
/// Largest file a download returns.
const MAX_DOWNLOAD: u64 = 64 << 20;

impl From<SandboxError> for ApiError {
    fn from(error: SandboxError) -> Self {
        match &error {
            SandboxError::Io(_) | SandboxError::Cgroup(_) => ApiError::internal(error.to_string()),
            _ => ApiError::new(error.reason(), error.to_string()),
        }
    }
}

/// Loads the session in the caller's tenant, authorizes `action` and requires it active.
async fn sandbox_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> ApiResult<Session> {
    let session = super::sessions::authorized_session(state, caller, id, action).await?;
    if session.phase != Phase::Active {
        return Err(ApiError::new(
            ReasonCode::SessionNotActive,
            format!("the session is {}, not active", session.phase.as_str()),
        ));
    }
    Ok(session)
}

/// This node's sandbox runtime, or 503 when it runs without one.
fn sandboxes(state: &AppState) -> ApiResult<SandboxManager> {
    state.control().sandboxes().cloned().ok_or_else(|| {
        ApiError::new(
            ReasonCode::SandboxUnavailable,
            "this server runs without sandboxes",
        )
    })
}

fn exec_response(
    stdout: &[u8],
    stderr: &[u8],
    truncated: bool,
    outcome: ExecOutcome,
) -> ExecResponse {
    ExecResponse {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        stderr: String::from_utf8_lossy(stderr).into_owned(),
        truncated,
        duration_ms: outcome.duration_ms,
        reason_code: outcome.reason.map(|r| r.as_str().to_owned()),
        message: outcome.message,
    }
}

fn process_body(process: ProcessRecord) -> ProcessBody {
    ProcessBody {
        pid: process.pid,
        argv: process.argv,
        background: process.background,
        started_at: Timestamp::from_unix_micros(process.started_at_micros),
        state: if process.exited.is_some() {
            "exited"
        } else {
            "running"
        }
        .to_owned(),
        exit_code: process.exited.map(|e| e.code),
        signal: process.exited.and_then(|e| e.signal),
        log_path: process.log_path,
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|part| part.trim().starts_with(NDJSON))
        })
}

/// Run a command in the session's sandbox. Answers with the whole result, or with
/// `Accept: application/x-ndjson` streams `stdout`, `stderr` and a final `exit` event
/// as they happen. `"background": true` starts it and answers 202 with its process.
#[utoipa::path(post, path = "/v1/sessions/{id}/exec", tag = "sandbox",
    request_body = ExecRequest,
    params(("id" = String, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the recorded result; the command does not run again")),
    responses(
        (status = 200, body = ExecResponse, description = "The command ran (whatever its exit code)"),
        (status = 202, body = ProcessBody, description = "Background process started"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "SESSION_NOT_ACTIVE, SANDBOX_LOST", body = ErrorBody),
        (status = 503, description = "SANDBOX_UNAVAILABLE", body = ErrorBody),
    ))]
pub(crate) async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<ExecRequest>,
) -> ApiResult<Response> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionExec).await?;
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(ApiError::validation("argv must name a program"));
    }
    if request.argv.len() > 4096 {
        return Err(ApiError::validation("argv has more than 4096 arguments"));
    }
    let sandboxes = sandboxes(&state)?;
    let sandbox_id = session.id.to_string();
    let evidence = ExecEvidence {
        control: state.control().clone(),
        session: session.clone(),
        actor: caller.actor(),
        argv_digest: argv_digest(&request.argv),
    };
    let exec = cordon_sandbox::ExecRequest {
        argv: request.argv,
        env: request.env.into_iter().collect(),
        cwd: request.cwd,
        stdin: request.stdin.map(String::into_bytes),
        timeout: request.timeout_ms.map(Duration::from_millis),
    };
    metrics::counter!("cordon_sandbox_execs_total", "background" => request.background.to_string())
        .increment(1);
    if request.background {
        let process = sandboxes.spawn(&sandbox_id, exec).await?;
        evidence
            .record(|r| r.field("background", true).field("pid", process.pid))
            .await;
        return Ok((StatusCode::ACCEPTED, axum::Json(process_body(process))).into_response());
    }
    if wants_stream(&headers) {
        let events = sandboxes.exec(&sandbox_id, exec).await?;
        let evidence = std::sync::Arc::new(evidence);
        let stream = futures_util::stream::unfold(events, move |mut events| {
            let evidence = std::sync::Arc::clone(&evidence);
            async move {
                let event = events.recv().await?;
                let line = match event {
                    ExecEvent::Stdout(bytes) => ExecStreamEvent::Stdout {
                        data: String::from_utf8_lossy(&bytes).into_owned(),
                    },
                    ExecEvent::Stderr(bytes) => ExecStreamEvent::Stderr {
                        data: String::from_utf8_lossy(&bytes).into_owned(),
                    },
                    ExecEvent::Exit(outcome) => {
                        record_outcome(&outcome);
                        evidence.outcome(&outcome).await;
                        ExecStreamEvent::Exit {
                            exit_code: outcome.exit_code,
                            signal: outcome.signal,
                            duration_ms: outcome.duration_ms,
                            reason_code: outcome.reason.map(|r| r.as_str().to_owned()),
                            message: outcome.message,
                        }
                    }
                };
                let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                bytes.push(b'\n');
                Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(bytes)),
                    events,
                ))
            }
        });
        return Ok((
            [
                (header::CONTENT_TYPE, NDJSON),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Body::from_stream(stream),
        )
            .into_response());
    }
    let result = sandboxes.exec_collect(&sandbox_id, exec).await?;
    record_outcome(&result.outcome);
    evidence.outcome(&result.outcome).await;
    let mut response = exec_response(
        &result.stdout,
        &result.stderr,
        result.truncated,
        result.outcome,
    );
    // Captured output may be stored (an idempotent replay keeps it): a secret's value
    // that came back from upstream never goes in it.
    if let Some(artifacts) = state.control().artifacts() {
        let secrets = artifacts.redactor.values(session.tenant_id).await;
        response.stdout = cordon_artifacts::evidence_log::redact_text(&response.stdout, &secrets);
        response.stderr = cordon_artifacts::evidence_log::redact_text(&response.stderr, &secrets);
    }
    Ok(axum::Json(response).into_response())
}

/// SHA-256 of the argv as a JSON array: evidence names the command without storing
/// its arguments (which may hold data the agent handles).
fn argv_digest(argv: &[String]) -> String {
    let json = serde_json::to_vec(argv).unwrap_or_default();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)))
}

/// What an exec's evidence entry needs.
struct ExecEvidence {
    control: cordon_control::Control,
    session: cordon_core::Session,
    actor: String,
    argv_digest: String,
}

impl ExecEvidence {
    async fn record(
        &self,
        fields: impl FnOnce(
            cordon_artifacts::evidence_log::Record,
        ) -> cordon_artifacts::evidence_log::Record,
    ) {
        let record = cordon_artifacts::evidence_log::Record::new(
            self.session.tenant_id,
            Some(self.session.id),
            "exec",
            &self.actor,
        )
        .field("argv_digest", self.argv_digest.clone());
        self.control.evidence(fields(record)).await;
    }

    async fn outcome(&self, outcome: &ExecOutcome) {
        let ok = outcome.exit_code == 0 && outcome.reason.is_none();
        drop(tracing::info_span!(
            "exec",
            otel.start_unix_nanos = cordon_core::Timestamp::ago(Duration::from_millis(outcome.duration_ms)).unix_nanos(),
            otel.error = !ok,
            session = %self.session.id,
            exit_code = outcome.exit_code,
            reason = outcome.reason.map_or("", |r| r.as_str()),
        ));
        self.control
            .telemetry()
            .exec(&self.session, ok, outcome.reason);
        self.record(|r| {
            r.field("exit_code", outcome.exit_code)
                .field("signal", outcome.signal)
                .field("duration_ms", outcome.duration_ms)
                .field("reason", outcome.reason.map(|c| c.as_str()))
        })
        .await;
    }
}

fn record_outcome(outcome: &ExecOutcome) {
    let reason = outcome.reason.map_or("NONE", |r| r.as_str());
    metrics::counter!("cordon_sandbox_exec_outcomes_total", "reason" => reason).increment(1);
    metrics::histogram!("cordon_sandbox_exec_duration_seconds")
        .record(outcome.duration_ms as f64 / 1000.0);
}

/// The processes started in the session's sandbox: running ones and recent exits.
#[utoipa::path(get, path = "/v1/sessions/{id}/processes", tag = "sandbox",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = ProcessList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn list_processes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ProcessList>> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionFilesRead).await?;
    let sandboxes = sandboxes(&state)?;
    let processes = sandboxes.processes(&session.id.to_string()).await?;
    Ok(axum::Json(ProcessList {
        items: processes.into_iter().map(process_body).collect(),
    }))
}

/// Kill a process (and its process group) with SIGKILL.
#[utoipa::path(delete, path = "/v1/sessions/{id}/processes/{pid}", tag = "sandbox",
    params(("id" = String, Path, description = "Session id"), ("pid" = i32, Path, description = "Pid inside the sandbox")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn kill_process(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionExec).await?;
    let sandboxes = sandboxes(&state)?;
    let pid: i32 = pid
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| ApiError::not_found("process"))?;
    sandboxes
        .signal(&session.id.to_string(), pid, libc_sigkill())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

const fn libc_sigkill() -> i32 {
    9
}

/// The session's sandbox: state, limits and kernel counters.
#[utoipa::path(get, path = "/v1/sessions/{id}/sandbox", tag = "sandbox",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, body = SandboxBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "SESSION_NOT_ACTIVE, SANDBOX_LOST", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn get_sandbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxBody>> {
    let session =
        super::sessions::authorized_session(&state, &caller, &id, Action::SessionFilesRead).await?;
    let sandboxes = sandboxes(&state)?;
    let info = sandboxes.info(&session.id.to_string())?;
    let state_name = serde_json::to_value(info.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(axum::Json(SandboxBody {
        state: state_name,
        workload_class: info.workload_class,
        started_at: Timestamp::from_unix_micros(info.started_at_micros),
        memory_limit_bytes: info.limits.memory_mib << 20,
        pids_limit: info.limits.pids,
        cpu_millis: info.limits.cpu_millis,
        disk_limit_bytes: info.limits.disk_mib << 20,
        memory_bytes: info.counters.map(|c| c.memory_bytes),
        cpu_usage_usec: info.counters.map(|c| c.cpu_usage_usec),
        pids_current: info.counters.map(|c| c.pids_current),
        oom_kills: info.counters.map(|c| c.oom_kills),
    }))
}

fn file_body(entry: FileEntry) -> FileBody {
    let kind = serde_json::to_value(entry.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    FileBody {
        path: entry.path,
        kind,
        size: entry.size,
        mode: format!("{:04o}", entry.mode),
        mtime: Timestamp::from_unix_micros(entry.mtime_micros),
    }
}

/// Blocking file work off the async threads.
async fn on_workspace<T: Send + 'static>(
    sandboxes: &SandboxManager,
    session: &Session,
    work: impl FnOnce(cordon_sandbox::Workspace) -> Result<T, SandboxError> + Send + 'static,
) -> ApiResult<T> {
    let workspace = sandboxes.workspace(&session.id.to_string())?;
    tokio::task::spawn_blocking(move || work(workspace))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListFilesQuery {
    /// Directory relative to /workspace (default: /workspace itself).
    dir: Option<String>,
}

/// List a directory of the sandbox's /workspace.
#[utoipa::path(get, path = "/v1/sessions/{id}/files", tag = "sandbox",
    params(("id" = String, Path, description = "Session id"), ListFilesQuery),
    responses((status = 200, body = FileList), (status = 400, description = "SANDBOX_PATH_OUTSIDE_WORKSPACE", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ListFilesQuery>,
) -> ApiResult<axum::Json<FileList>> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionFilesRead).await?;
    let sandboxes = sandboxes(&state)?;
    let dir = query.dir.unwrap_or_default();
    let entries = on_workspace(&sandboxes, &session, move |ws| ws.list(&dir)).await?;
    Ok(axum::Json(FileList {
        items: entries.into_iter().map(file_body).collect(),
    }))
}

/// Download a file of the sandbox's /workspace (raw bytes).
#[utoipa::path(get, path = "/v1/sessions/{id}/files/{*path}", tag = "sandbox",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Path relative to /workspace")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "SANDBOX_PATH_OUTSIDE_WORKSPACE", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionFilesRead).await?;
    let sandboxes = sandboxes(&state)?;
    let bytes = on_workspace(&sandboxes, &session, move |ws| ws.read(&path, MAX_DOWNLOAD)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutFileQuery {
    /// Permission bits in octal, e.g. `755` (default `644`).
    mode: Option<String>,
}

/// Upload a file into the sandbox's /workspace (raw bytes), creating missing parent
/// directories. The file is replaced atomically: a failed upload leaves the old one.
#[utoipa::path(put, path = "/v1/sessions/{id}/files/{*path}", tag = "sandbox",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Path relative to /workspace"), PutFileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileBody),
        (status = 400, description = "SANDBOX_PATH_OUTSIDE_WORKSPACE", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 507, description = "SANDBOX_DISK_QUOTA", body = ErrorBody)))]
pub(crate) async fn put_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    Query(query): Query<PutFileQuery>,
    body: Bytes,
) -> ApiResult<axum::Json<FileBody>> {
    let mode = match query.mode {
        None => None,
        Some(text) => Some(
            u32::from_str_radix(&text, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    ApiError::validation("mode must be octal permission bits, e.g. 644")
                })?,
        ),
    };
    let session = sandbox_session(&state, &caller, &id, Action::SessionFilesWrite).await?;
    let sandboxes = sandboxes(&state)?;
    let entry = on_workspace(&sandboxes, &session, move |ws| ws.write(&path, &body, mode)).await?;
    Ok(axum::Json(file_body(entry)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteFileQuery {
    /// Remove a non-empty directory and everything in it.
    recursive: Option<bool>,
}

/// Delete a file, symlink or directory of the sandbox's /workspace.
#[utoipa::path(delete, path = "/v1/sessions/{id}/files/{*path}", tag = "sandbox",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Path relative to /workspace"), DeleteFileQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    Query(query): Query<DeleteFileQuery>,
) -> ApiResult<StatusCode> {
    let session = sandbox_session(&state, &caller, &id, Action::SessionFilesWrite).await?;
    let sandboxes = sandboxes(&state)?;
    let recursive = query.recursive.unwrap_or(false);
    on_workspace(&sandboxes, &session, move |ws| ws.remove(&path, recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}
