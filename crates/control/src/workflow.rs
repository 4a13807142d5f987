//! The workflow engine's step runner: control composes the workflow runtime with the
//! sandboxes, the egress gateway and the artifacts. Each tool step is authorized as the
//! run's principal (through [`StepAuthorizer`], which the API implements with Cedar),
//! then carried out exactly as the matching API call would: exec in the session's
//! sandbox, an HTTP request through the session's egress gateway (so it is decided,
//! injected and recorded like any tool call), checkpoint, restore, transition, promote.
//! Denials become policy failures with a summary for the dead-letter queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cordon_core::{
    DeadLetter, KeyId, NewJournalEntry, Phase, ReasonCode, Run, RunId, RunStatus, Session,
    SessionAction, SessionId, SessionOutcome, TenantId,
};
use cordon_egress::gateway::{Entry, SessionKey};
use cordon_sandbox::{ExecEvent, ExecRequest, SandboxError};
use cordon_workflow::model::{Definition, FailureClass, SessionTemplate, StepAction};
use cordon_workflow::state::{Outcome, StepError};
use cordon_workflow::{Heartbeat, StepRequest, StepRunner};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{Control, ControlError, PromoteSpec, SessionSpec};

/// A denial of a step by the authorization policies.
#[derive(Debug, Clone)]
pub struct StepDenial {
    pub reason: ReasonCode,
    pub message: String,
}

/// Authorizes a run's steps as the run's principal (the API implements it with Cedar).
#[async_trait]
pub trait StepAuthorizer: Send + Sync + std::fmt::Debug + 'static {
    /// Whether `principal` may take `action` on `session` (`None`: create a session in
    /// the tenant). `action` is a step kind: `exec`, `http`, `checkpoint`, `restore`,
    /// `promote`, `transition:<action>`, `session.create`.
    async fn authorize(
        &self,
        tenant_id: TenantId,
        principal: &str,
        action: &str,
        session: Option<&Session>,
    ) -> Result<(), StepDenial>;
    /// The authorization policy version decisions are made under.
    fn policy_version(&self) -> String;
}

/// Output kept from an exec step, per stream.
const OUTPUT_LIMIT: usize = 64 << 10;
/// Largest HTTP response body an http step keeps.
const HTTP_BODY_LIMIT: usize = 1 << 20;
/// How often an exec step's heartbeat file is looked at.
const HEARTBEAT_POLL: Duration = Duration::from_millis(500);

/// Runs workflow steps on this node's runtimes.
#[derive(Debug, Clone)]
pub struct ControlRunner {
    control: Control,
    authorizer: Arc<dyn StepAuthorizer>,
}

impl ControlRunner {
    pub fn new(control: Control, authorizer: Arc<dyn StepAuthorizer>) -> Self {
        Self {
            control,
            authorizer,
        }
    }
}

fn failure(class: FailureClass, reason: ReasonCode, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: StepError {
            class,
            reason: reason.as_str().to_owned(),
            message: message.into(),
            exit_code: None,
        },
        summary: None,
    }
}

fn denied(denial: StepDenial, summary: Value) -> Outcome {
    Outcome::Failed {
        error: StepError {
            class: FailureClass::Policy,
            reason: denial.reason.as_str().to_owned(),
            message: denial.message,
            exit_code: None,
        },
        summary: Some(summary),
    }
}

/// The failure class of a control error.
fn control_failure(error: &ControlError) -> Outcome {
    let reason = error.reason();
    let class = match reason {
        ReasonCode::SandboxOomKilled
        | ReasonCode::SandboxPidsLimit
        | ReasonCode::SandboxDiskQuota
        | ReasonCode::SandboxUnavailable
        | ReasonCode::StoreUnavailable
        | ReasonCode::SessionLeaseHeld
        | ReasonCode::BlobStoreUnavailable => FailureClass::Capacity,
        ReasonCode::AuthzDenied => FailureClass::Policy,
        _ => FailureClass::Error,
    };
    failure(class, reason, error.to_string())
}

impl ControlRunner {
    async fn session(&self, request: &StepRequest) -> Result<Session, Outcome> {
        let Some(id) = request.session_id else {
            return Err(failure(
                FailureClass::Error,
                ReasonCode::StepFailed,
                "the run has no session",
            ));
        };
        match self
            .control
            .store()
            .get_session(request.tenant_id, id)
            .await
        {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(failure(
                FailureClass::Error,
                ReasonCode::NotFound,
                format!("session {id} does not exist"),
            )),
            Err(error) => Err(failure(
                FailureClass::Capacity,
                error.reason(),
                error.to_string(),
            )),
        }
    }

    /// The session, made active for a tool step: a checkpointed session resumes (as
    /// the API's resume would), any other phase but active fails the attempt.
    async fn active_session(&self, request: &StepRequest) -> Result<Session, Outcome> {
        let session = self.session(request).await?;
        match session.phase {
            Phase::Active => Ok(session),
            Phase::Checkpointed => self
                .control
                .transition(
                    &session,
                    SessionAction::Resume,
                    &request.principal,
                    Some(format!(
                        "workflow run {} step {}",
                        request.run_id, request.step
                    )),
                )
                .await
                .map_err(|e| control_failure(&e)),
            other => Err(failure(
                FailureClass::Error,
                ReasonCode::SessionNotActive,
                format!("the session is {}, not active", other.as_str()),
            )),
        }
    }

    async fn authorize(
        &self,
        request: &StepRequest,
        action: &str,
        session: &Session,
        summary: Value,
    ) -> Result<(), Outcome> {
        self.authorizer
            .authorize(request.tenant_id, &request.principal, action, Some(session))
            .await
            .map_err(|denial| denied(denial, summary))
    }

    /// A lost sandbox is replaced and the session's latest version restored (suspend,
    /// then resume), so the retry that follows finds the workspace of the last
    /// checkpoint.
    async fn recover_lost(&self, request: &StepRequest, session: &Session) {
        let why = Some(format!("workflow run {}: sandbox lost", request.run_id));
        match self
            .control
            .transition(
                session,
                SessionAction::Suspend,
                &request.principal,
                why.clone(),
            )
            .await
        {
            Ok(suspended) => {
                if let Err(error) = self
                    .control
                    .transition(&suspended, SessionAction::Resume, &request.principal, why)
                    .await
                {
                    tracing::warn!(run = %request.run_id, %error, "cannot resume the session after its sandbox was lost");
                }
            }
            Err(error) => {
                tracing::warn!(run = %request.run_id, %error, "cannot suspend the session whose sandbox was lost");
            }
        }
    }

    async fn exec(
        &self,
        request: &StepRequest,
        heartbeat: &Heartbeat,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&String>,
    ) -> Outcome {
        let session = match self.active_session(request).await {
            Ok(session) => session,
            Err(outcome) => return outcome,
        };
        let summary = json!({"kind": "exec", "argv": argv});
        if let Err(outcome) = self
            .authorize(request, "exec", &session, summary.clone())
            .await
        {
            return outcome;
        }
        let Some(sandboxes) = self.control.sandboxes().cloned() else {
            return failure(
                FailureClass::Capacity,
                ReasonCode::SandboxUnavailable,
                "this node runs no sandboxes",
            );
        };
        let id = session.id.to_string();
        // The heartbeat file: touching it is a heartbeat.
        let beat_path = format!(".cordon/heartbeat/{}-{}", request.step, request.attempt);
        let workspace = sandboxes.workspace(&id).ok();
        if let Some(ws) = &workspace {
            let _ = ws.write(&beat_path, b"", Some(0o666));
        }
        let mut vars: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.push((
            "CORDON_IDEMPOTENCY_KEY".into(),
            request.idempotency_key.clone(),
        ));
        vars.push(("CORDON_RUN_ID".into(), request.run_id.to_string()));
        vars.push(("CORDON_STEP".into(), request.step.clone()));
        vars.push(("CORDON_ATTEMPT".into(), request.attempt.to_string()));
        vars.push((
            "CORDON_HEARTBEAT_FILE".into(),
            format!("/workspace/{beat_path}"),
        ));
        let mut denials = self.control.egress().map(|e| e.gateway.subscribe_denials());
        let exec = ExecRequest {
            argv: argv.to_vec(),
            env: vars,
            cwd: cwd.cloned(),
            stdin: None,
            timeout: Some(request.timeout),
        };
        let mut events = match sandboxes.exec(&id, exec).await {
            Ok(events) => events,
            Err(SandboxError::Lost(message)) => {
                self.recover_lost(request, &session).await;
                return failure(FailureClass::Error, ReasonCode::SandboxLost, message);
            }
            Err(error) => {
                let reason = error.reason();
                return failure(FailureClass::Error, reason, error.to_string());
            }
        };
        let argv_digest = {
            let json = serde_json::to_vec(argv).unwrap_or_default();
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&json)))
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut last_mtime = None;
        let mut poll = tokio::time::interval(HEARTBEAT_POLL);
        let outcome = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ExecEvent::Stdout(bytes)) => keep(&mut stdout, &bytes),
                    Some(ExecEvent::Stderr(bytes)) => keep(&mut stderr, &bytes),
                    Some(ExecEvent::Exit(outcome)) => break Some(outcome),
                    None => break None,
                },
                _ = poll.tick() => {
                    if let Some(ws) = &workspace
                        && let Ok(entries) = ws.list(".cordon/heartbeat")
                        && let Some(entry) = entries.iter().find(|e| e.path == beat_path)
                    {
                        if last_mtime.is_some_and(|m| m != entry.mtime_micros) {
                            heartbeat.beat();
                        }
                        last_mtime = Some(entry.mtime_micros);
                    }
                }
            }
        };
        if let Some(ws) = &workspace {
            let _ = ws.remove(&beat_path, false);
        }
        let Some(outcome) = outcome else {
            return failure(
                FailureClass::Error,
                ReasonCode::SandboxLost,
                "the exec ended without an exit status",
            );
        };
        let redact = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let (stdout, stderr) = match self.control.artifacts() {
            Some(a) => (
                a.redacted(request.tenant_id, &redact(&stdout)).await,
                a.redacted(request.tenant_id, &redact(&stderr)).await,
            ),
            None => (redact(&stdout), redact(&stderr)),
        };
        self.control
            .evidence(
                cordon_artifacts::evidence_log::Record::new(
                    request.tenant_id,
                    Some(session.id),
                    "exec",
                    &request.principal,
                )
                .field("argv_digest", argv_digest)
                .field("exit_code", outcome.exit_code)
                .field("duration_ms", outcome.duration_ms)
                .field("reason", outcome.reason.map(|c| c.as_str()))
                .field("workflow_run", request.run_id.to_string())
                .field("step", request.step.clone()),
            )
            .await;
        let ok = outcome.exit_code == 0 && outcome.reason.is_none();
        // A span of the command, under the step's (its start is set back by its
        // duration: it is made when the command has ended).
        drop(tracing::info_span!(
            "exec",
            otel.start_unix_nanos = cordon_core::Timestamp::ago(Duration::from_millis(outcome.duration_ms)).unix_nanos(),
            otel.error = !ok,
            session = %session.id,
            exit_code = outcome.exit_code,
            reason = outcome.reason.map_or("", |r| r.as_str()),
        ));
        let output = json!({"exit_code": outcome.exit_code, "stdout": stdout, "stderr": stderr});
        if ok {
            return Outcome::Succeeded(output);
        }
        // An egress denial of this session while the command ran: a policy failure.
        if let Some(rx) = denials.as_mut() {
            let mut denial = None;
            while let Ok(decision) = rx.try_recv() {
                if decision.session_id == session.id {
                    denial = Some(decision);
                }
            }
            if let Some(d) = denial {
                return Outcome::Failed {
                    error: StepError {
                        class: FailureClass::Policy,
                        reason: d.reason.as_str().to_owned(),
                        message: format!(
                            "egress to {}:{} was denied ({}) while the command ran",
                            d.host,
                            d.port,
                            d.reason.as_str()
                        ),
                        exit_code: Some(outcome.exit_code),
                    },
                    summary: Some(json!({
                        "kind": "exec", "argv": argv, "exit_code": outcome.exit_code,
                        "egress": {"host": d.host, "port": d.port, "method": d.method,
                                   "path": d.path, "reason": d.reason.as_str()},
                    })),
                };
            }
        }
        let (class, reason) = match outcome.reason {
            Some(ReasonCode::ExecTimeout) => (FailureClass::Timeout, ReasonCode::StepTimeout),
            Some(
                r @ (ReasonCode::SandboxOomKilled
                | ReasonCode::SandboxPidsLimit
                | ReasonCode::SandboxDiskQuota),
            ) => (FailureClass::Capacity, r),
            Some(r) => (FailureClass::Error, r),
            None => (FailureClass::Error, ReasonCode::StepExitNonzero),
        };
        Outcome::Failed {
            error: StepError {
                class,
                reason: reason.as_str().to_owned(),
                message: outcome.message.clone().unwrap_or_else(|| {
                    format!(
                        "the command exited with {}: {}",
                        outcome.exit_code,
                        tail(&stderr)
                    )
                }),
                exit_code: Some(outcome.exit_code),
            },
            summary: None,
        }
    }

    async fn http(
        &self,
        request: &StepRequest,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Option<&String>,
    ) -> Outcome {
        let session = match self.active_session(request).await {
            Ok(session) => session,
            Err(outcome) => return outcome,
        };
        let summary = json!({
            "kind": "http", "method": method, "url": strip_query(url),
            "destination": http_destination(url),
        });
        if let Err(outcome) = self
            .authorize(request, "http", &session, summary.clone())
            .await
        {
            return outcome;
        }
        let Some(egress) = self.control.egress() else {
            return failure(
                FailureClass::Capacity,
                ReasonCode::SandboxUnavailable,
                "this node runs no egress gateway",
            );
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return failure(
                FailureClass::Error,
                ReasonCode::StepFailed,
                "http steps support http:// URLs (https:// from a step is not supported yet; \
                 run curl in an exec step, which the gateway intercepts)",
            );
        };
        let host = rest.split(['/', '?']).next().unwrap_or("").to_owned();
        let body = body.map(String::as_bytes).unwrap_or(b"");
        let mut head = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        let mut has_key = false;
        for (name, value) in headers {
            if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
                return failure(
                    FailureClass::Error,
                    ReasonCode::StepFailed,
                    format!("header `{name}` is not a valid header"),
                );
            }
            has_key |= name.eq_ignore_ascii_case("idempotency-key");
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has_key {
            head.push_str(&format!("Idempotency-Key: {}\r\n", request.idempotency_key));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let (client, server) = tokio::io::duplex(64 << 10);
        let gateway = egress.gateway.clone();
        let key = SessionKey {
            tenant_id: session.tenant_id,
            session_id: session.id,
        };
        // In the step's span, so the gateway's decision is traced under the step.
        let serve = tokio::spawn(tracing::Instrument::in_current_span(async move {
            gateway
                .serve_connection(key, Box::new(server), Entry::Proxy)
                .await;
        }));
        let result = exchange(client, head.into_bytes(), body).await;
        serve.abort();
        let (status, response_headers, response_body) = match result {
            Ok(parts) => parts,
            Err(message) => {
                return failure(
                    FailureClass::Error,
                    ReasonCode::EgressUpstreamFailed,
                    message,
                );
            }
        };
        let header = |name: &str| {
            response_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let text = String::from_utf8_lossy(&response_body).into_owned();
        let body_value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        // The gateway's own refusals carry their reason code.
        if let Some(reason) = header(cordon_egress::gateway::REASON_HEADER)
            && status == 403
        {
            let mut summary = summary;
            summary["reason"] = json!(reason);
            return Outcome::Failed {
                error: StepError {
                    class: FailureClass::Policy,
                    reason,
                    message: format!("the egress gateway refused {method} {}", strip_query(url)),
                    exit_code: None,
                },
                summary: Some(summary),
            };
        }
        if let Some(reason) = header(cordon_egress::gateway::REASON_HEADER)
            && status >= 500
        {
            return failure(
                FailureClass::Error,
                reason_or(&reason),
                format!("the egress gateway answered {status}: {reason}"),
            );
        }
        let output = json!({
            "status": status,
            "headers": response_headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "body": body_value,
        });
        match status {
            200..=399 => Outcome::Succeeded(output),
            429 | 503 => Outcome::Failed {
                error: StepError {
                    class: FailureClass::Capacity,
                    reason: ReasonCode::StepHttpStatus.as_str().to_owned(),
                    message: format!("{method} {} answered {status}", strip_query(url)),
                    exit_code: None,
                },
                summary: None,
            },
            _ => Outcome::Failed {
                error: StepError {
                    class: FailureClass::Error,
                    reason: ReasonCode::StepHttpStatus.as_str().to_owned(),
                    message: format!("{method} {} answered {status}", strip_query(url)),
                    exit_code: None,
                },
                summary: None,
            },
        }
    }
}

fn reason_or(text: &str) -> ReasonCode {
    ReasonCode::ALL
        .iter()
        .copied()
        .find(|r| r.as_str() == text)
        .unwrap_or(ReasonCode::EgressUpstreamFailed)
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn keep(into: &mut Vec<u8>, bytes: &[u8]) {
    let room = OUTPUT_LIMIT.saturating_sub(into.len());
    into.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn tail(text: &str) -> String {
    let trimmed = text.trim_end();
    let start = trimmed.len().saturating_sub(200);
    let start = (start..=trimmed.len())
        .find(|i| trimmed.is_char_boundary(*i))
        .unwrap_or(trimmed.len());
    trimmed[start..].to_owned()
}

type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Sends one request over `io` and reads the whole response (the request asks the
/// gateway to close after it).
async fn exchange(
    io: tokio::io::DuplexStream,
    head: Vec<u8>,
    body: &[u8],
) -> Result<Response, String> {
    let (read, mut write) = tokio::io::split(io);
    write.write_all(&head).await.map_err(|e| e.to_string())?;
    write.write_all(body).await.map_err(|e| e.to_string())?;
    write.flush().await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(read);
    let response = cordon_egress::http::read_response(&mut reader)
        .await
        .map_err(|e| e.to_string())?;
    let framing =
        cordon_egress::http::response_framing("GET", &response).map_err(|e| e.to_string())?;
    // Read exactly the framed body: the gateway keeps the connection open as long as
    // the upstream does, so reading to the end would wait for the upstream's idle close.
    let limit = HTTP_BODY_LIMIT as u64;
    let body = match framing {
        cordon_egress::http::Framing::Length(n) => {
            let mut raw = Vec::new();
            (&mut reader)
                .take(n.min(limit))
                .read_to_end(&mut raw)
                .await
                .map_err(|e| e.to_string())?;
            raw
        }
        cordon_egress::http::Framing::Chunked => read_chunked(&mut reader, limit).await?,
        cordon_egress::http::Framing::None => Vec::new(),
        cordon_egress::http::Framing::UntilClose => {
            let mut raw = Vec::new();
            (&mut reader)
                .take(limit)
                .read_to_end(&mut raw)
                .await
                .map_err(|e| e.to_string())?;
            raw
        }
    };
    let mut body = body;
    body.truncate(HTTP_BODY_LIMIT);
    let headers = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                String::from_utf8_lossy(&h.value).into_owned(),
            )
        })
        .collect();
    Ok((response.status, headers, body))
}

/// Reads a chunked body, keeping at most `limit` bytes of it.
async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncBufReadExt;
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16).map_err(|_| "bad chunk size".to_owned())?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut trailer = String::new();
                let n = reader
                    .read_line(&mut trailer)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 || trailer.trim().is_empty() {
                    return Ok(out);
                }
            }
        }
        let mut chunk = Vec::new();
        (&mut *reader)
            .take(size)
            .read_to_end(&mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if (chunk.len() as u64) < size {
            return Err("truncated chunk".to_owned());
        }
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let mut crlf = String::new();
        reader
            .read_line(&mut crlf)
            .await
            .map_err(|e| e.to_string())?;
    }
}

#[async_trait]
impl StepRunner for ControlRunner {
    async fn run(&self, request: StepRequest, heartbeat: Heartbeat) -> Outcome {
        // A gateway denial while the step runs is the step's block (its dead letter).
        let _in_flight = self.control.telemetry().step_in_flight(request.session_id);
        match request.action.clone() {
            StepAction::Exec { argv, env, cwd } => {
                self.exec(&request, &heartbeat, &argv, &env, cwd.as_ref())
                    .await
            }
            StepAction::Http {
                method,
                url,
                headers,
                body,
            } => {
                self.http(&request, &method, &url, &headers, body.as_ref())
                    .await
            }
            StepAction::Checkpoint { summary } => {
                let session = match self.session(&request).await {
                    Ok(s) => s,
                    Err(outcome) => return outcome,
                };
                if let Err(o) = self
                    .authorize(
                        &request,
                        "checkpoint",
                        &session,
                        json!({"kind": "checkpoint"}),
                    )
                    .await
                {
                    return o;
                }
                let session = if session.phase == Phase::Checkpointed {
                    match self.active_session(&request).await {
                        Ok(s) => s,
                        Err(o) => return o,
                    }
                } else {
                    session
                };
                let summary = summary.unwrap_or_else(|| {
                    format!("workflow run {} step {}", request.run_id, request.step)
                });
                match self
                    .control
                    .checkpoint(
                        &session,
                        summary,
                        &request.principal,
                        Some(format!("workflow run {}", request.run_id)),
                    )
                    .await
                {
                    Ok((_, version)) => {
                        Outcome::Succeeded(json!({"version": version.map(|v| v.id.to_string())}))
                    }
                    Err(error) => control_failure(&error),
                }
            }
            StepAction::Restore { version } => {
                let session = match self.active_session(&request).await {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                if let Err(o) = self
                    .authorize(
                        &request,
                        "restore",
                        &session,
                        json!({"kind": "restore", "version": version}),
                    )
                    .await
                {
                    return o;
                }
                let store = self.control.store();
                let found = match &version {
                    Some(v) => match v.parse() {
                        Ok(id) => store
                            .get_version(request.tenant_id, id)
                            .await
                            .map(|v| v.filter(|v| v.session_id == session.id)),
                        Err(_) => {
                            return failure(
                                FailureClass::Error,
                                ReasonCode::VersionNotFound,
                                format!("`{v}` is not a version id"),
                            );
                        }
                    },
                    None => store.head_version(request.tenant_id, session.id).await,
                };
                match found {
                    Ok(Some(v)) => {
                        match self.control.restore(&session, &v, &request.principal).await {
                            Ok(_) => Outcome::Succeeded(json!({"version": v.id.to_string()})),
                            Err(error) => control_failure(&error),
                        }
                    }
                    Ok(None) => failure(
                        FailureClass::Error,
                        ReasonCode::VersionNotFound,
                        "the session has no such version",
                    ),
                    Err(error) => {
                        failure(FailureClass::Capacity, error.reason(), error.to_string())
                    }
                }
            }
            StepAction::Transition { action } => {
                let session = match self.session(&request).await {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                let Some(to) = session_action(&action) else {
                    return failure(
                        FailureClass::Error,
                        ReasonCode::StepFailed,
                        format!("`{action}` is not a lifecycle action"),
                    );
                };
                if let Err(o) = self
                    .authorize(
                        &request,
                        &format!("transition:{action}"),
                        &session,
                        json!({"kind": "transition", "action": action}),
                    )
                    .await
                {
                    return o;
                }
                // Already there (a retry after the transition landed): done.
                if session.phase.apply(to).is_err()
                    && matches!(
                        (session.phase, to),
                        (
                            Phase::Active,
                            SessionAction::Activate | SessionAction::Resume
                        ) | (Phase::Suspended, SessionAction::Suspend)
                            | (Phase::Closed, SessionAction::Close)
                            | (Phase::Checkpointed, SessionAction::Checkpoint)
                    )
                {
                    return Outcome::Succeeded(json!({"phase": session.phase.as_str()}));
                }
                match self
                    .control
                    .transition(
                        &session,
                        to,
                        &request.principal,
                        Some(format!("workflow run {}", request.run_id)),
                    )
                    .await
                {
                    Ok(s) => Outcome::Succeeded(json!({"phase": s.phase.as_str()})),
                    Err(error) => control_failure(&error),
                }
            }
            StepAction::Promote { name, paths } => {
                let session = match self.session(&request).await {
                    Ok(s) => s,
                    Err(o) => return o,
                };
                if let Err(o) = self
                    .authorize(
                        &request,
                        "promote",
                        &session,
                        json!({"kind": "promote", "name": name}),
                    )
                    .await
                {
                    return o;
                }
                let store = self.control.store();
                // A retry after the release landed finds it by name.
                if let Ok(Some(existing)) =
                    store.get_release_by_name(request.tenant_id, &name).await
                    && existing.session_id == session.id
                {
                    return Outcome::Succeeded(
                        json!({"release": existing.id.to_string(), "name": name}),
                    );
                }
                let version = match store.head_version(request.tenant_id, session.id).await {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        return failure(
                            FailureClass::Error,
                            ReasonCode::VersionNotFound,
                            "the session has no version to promote: checkpoint first",
                        );
                    }
                    Err(error) => {
                        return failure(FailureClass::Capacity, error.reason(), error.to_string());
                    }
                };
                let policy_version = self.authorizer.policy_version();
                let run = request.run_id.to_string();
                let spec = PromoteSpec {
                    name: &name,
                    paths: &paths,
                    actor: &request.principal,
                    policy_version: &policy_version,
                    workflow_run: Some(&run),
                };
                match self.control.promote(&session, &version, spec).await {
                    Ok(release) => {
                        Outcome::Succeeded(json!({"release": release.id.to_string(), "name": name}))
                    }
                    Err(error) => control_failure(&error),
                }
            }
            StepAction::Noop { output } => Outcome::Succeeded(output.unwrap_or(Value::Null)),
            StepAction::Sleep { .. }
            | StepAction::WaitForEvent { .. }
            | StepAction::Approval { .. } => failure(
                FailureClass::Error,
                ReasonCode::Internal,
                "an engine-side step reached the runner",
            ),
        }
    }

    async fn create_session(
        &self,
        tenant_id: TenantId,
        principal: &str,
        run_id: RunId,
        template: &SessionTemplate,
    ) -> Result<SessionId, StepError> {
        let error = |class, reason: ReasonCode, message: String| StepError {
            class,
            reason: reason.as_str().to_owned(),
            message,
            exit_code: None,
        };
        let owner: KeyId = principal.parse().map_err(|_| {
            error(
                FailureClass::Error,
                ReasonCode::StepFailed,
                format!("`{principal}` is not a key id"),
            )
        })?;
        self.authorizer
            .authorize(tenant_id, principal, "session.create", None)
            .await
            .map_err(|d| error(FailureClass::Policy, d.reason, d.message))?;
        let mut labels = cordon_core::Labels::new();
        labels.insert("cordon.run".to_owned(), run_id.to_string());
        let spec = SessionSpec {
            tenant_id,
            owner,
            workload_class: template.workload_class.clone(),
            environment: template.environment.clone(),
            labels,
            policy_version: self.authorizer.policy_version(),
        };
        let fail = |e: ControlError| error(FailureClass::Error, e.reason(), e.to_string());
        let session = self
            .control
            .create_session(spec, principal)
            .await
            .map_err(fail)?;
        let session = self
            .control
            .transition(
                &session,
                SessionAction::Activate,
                principal,
                Some(format!("workflow run {run_id}")),
            )
            .await
            .map_err(fail)?;
        Ok(session.id)
    }

    async fn close_session(&self, tenant_id: TenantId, session_id: SessionId, run: &Run) {
        let Ok(Some(session)) = self
            .control
            .store()
            .get_session(tenant_id, session_id)
            .await
        else {
            return;
        };
        if session.phase == Phase::Closed {
            return;
        }
        let outcome = match run.status {
            RunStatus::Succeeded => SessionOutcome::Succeeded,
            RunStatus::Cancelled => SessionOutcome::Abandoned,
            _ => SessionOutcome::Failed,
        };
        if let Err(error) = self
            .control
            .close(
                &session,
                outcome,
                &run.created_by,
                Some(format!("workflow run {} {}", run.id, run.status.as_str())),
            )
            .await
        {
            tracing::warn!(run = %run.id, %error, "cannot close the run's session");
        }
        if run.status == RunStatus::Succeeded {
            self.completed_cost(run).await;
        }
    }

    fn observe(
        &self,
        run: &Run,
        definition: &Definition,
        journal: &[NewJournalEntry],
        dead_letters: &[DeadLetter],
    ) {
        let telemetry = self.control.telemetry();
        let class = run.session_id.and_then(|s| telemetry.class_of(s));
        for entry in journal {
            match (entry.kind.as_str(), entry.step.as_deref()) {
                (kind @ ("completed" | "failed"), Some(step))
                    if definition
                        .steps
                        .iter()
                        .any(|s| s.name == step && s.action.needs_session()) =>
                {
                    telemetry.tool(
                        run.tenant_id,
                        run.session_id,
                        Some(run.id),
                        class.clone(),
                        Some(step),
                        kind == "completed",
                        entry.reason.as_deref(),
                        entry.at,
                    );
                }
                (kind @ ("run_succeeded" | "run_failed" | "run_cancelled"), _) => {
                    let status = kind.trim_start_matches("run_");
                    telemetry.run_finished(run.tenant_id, run.id, &run.name, status, class.clone());
                    // A run with a session of its own is costed once that closes.
                    let owns_session = owns_session(run);
                    if status == "succeeded" && !owns_session {
                        let this = self.clone();
                        let run = run.clone();
                        tokio::spawn(async move { this.completed_cost(&run).await });
                    }
                }
                _ => {}
            }
        }
        for letter in dead_letters {
            telemetry.block(
                run.tenant_id,
                letter.session_id,
                Some(run.id),
                class.clone(),
                "step",
                &letter.reason,
                destination(&letter.summary).unwrap_or_else(|| format!("step:{}", letter.step)),
                format!("dlq:{}", letter.id),
                letter.created_at,
            );
        }
    }
}

/// The `host:port` a dead letter's request went to, from its summary: an `http` step's
/// destination, or the egress an `exec` step was denied.
fn destination(summary: &str) -> Option<String> {
    let summary: Value = serde_json::from_str(summary).ok()?;
    if let (Some(host), Some(port)) = (
        summary["egress"]["host"].as_str(),
        summary["egress"]["port"].as_u64(),
    ) {
        return Some(format!("{host}:{port}"));
    }
    summary["destination"].as_str().map(str::to_owned)
}

/// `host:port` of an `http://` URL (the only scheme http steps speak).
fn http_destination(url: &str) -> Option<String> {
    let authority = url.strip_prefix("http://")?.split(['/', '?', '#']).next()?;
    // A port is digits after the last colon, outside an IPv6 literal's brackets.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// Whether the run created the session it runs in.
fn owns_session(run: &Run) -> bool {
    cordon_workflow::state::RunState::parse(&run.state).is_ok_and(|s| s.owns_session)
}

impl ControlRunner {
    /// Adds a completed run's cost to `cordon_workflow_completed_cost_total`.
    async fn completed_cost(&self, run: &Run) {
        let cost = self.control.telemetry().run_cost(run.id).await;
        metrics::gauge!(
            "cordon_workflow_completed_cost_total",
            "tenant" => run.tenant_id.to_string(),
            "workflow" => run.name.clone()
        )
        .increment(cost);
    }
}

fn session_action(text: &str) -> Option<SessionAction> {
    Some(match text {
        "activate" => SessionAction::Activate,
        "checkpoint" => SessionAction::Checkpoint,
        "suspend" => SessionAction::Suspend,
        "resume" => SessionAction::Resume,
        "close" => SessionAction::Close,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_destinations() {
        assert_eq!(
            http_destination("http://up.test:8080/x?y=1").as_deref(),
            Some("up.test:8080")
        );
        assert_eq!(
            http_destination("http://up.test/x").as_deref(),
            Some("up.test:80")
        );
        assert_eq!(
            http_destination("http://[::1]/").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(
            http_destination("http://[::1]:81").as_deref(),
            Some("[::1]:81")
        );
        assert_eq!(http_destination("https://up.test/"), None);
        let exec = json!({"kind": "exec", "egress": {"host": "evil.test", "port": 443}});
        assert_eq!(
            destination(&exec.to_string()).as_deref(),
            Some("evil.test:443")
        );
        let http = json!({"kind": "http", "destination": "up.test:80"});
        assert_eq!(
            destination(&http.to_string()).as_deref(),
            Some("up.test:80")
        );
        assert_eq!(destination("not json"), None);
    }
}
