//! A run's state (the journal folded into the run row) and the pure rules that move
//! it: which steps start, which wait, what a step's outcome leads to (a retry, the
//! dead-letter queue, failure and compensation), when the run is next due. Everything
//! here is a function of (state, definition, now, randomness): no I/O, so every rule is
//! tested directly and the engine only carries out what these functions decide.

use std::collections::BTreeMap;

use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, NewJournalEntry, ReasonCode, Run, RunStatus,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{Definition, FailureClass, Step, StepAction};
use crate::retry::{RetryDecision, decide};

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its `needs` have not all succeeded yet.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Waiting for a timer, an event or an approval (engine-side steps).
    Waiting,
    /// An attempt failed; the next starts at `due_at`.
    RetryWait,
    /// Refused by policy: in the dead-letter queue until redriven or discarded.
    Blocked,
    Succeeded,
    /// Gave up: no retry left, a non-retryable failure, or a discarded dead letter.
    Failed,
    /// A failure elsewhere ended the run before this step ran.
    Skipped,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub class: FailureClass,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One step's (or compensation's) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Attempts started so far (the running one included).
    pub attempt: u32,
    /// The lease token under which the running attempt started: an attempt whose token
    /// is not the run's current one was in flight on a worker that is gone.
    #[serde(default)]
    pub token: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<i64>,
    /// Retry time, sleep end, or event/approval timeout (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<i64>,
    /// Per-attempt heartbeat window of a durable (code) step, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_window_ms: Option<u64>,
}

impl StepState {
    fn new() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempt: 0,
            token: 0,
            first_started_at: None,
            started_at: None,
            heartbeat_at: None,
            due_at: None,
            output: None,
            error: None,
            dead_letter: None,
            completed_at: None,
            heartbeat_window_ms: None,
        }
    }
}

/// A compensation queued after the run failed or was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationState {
    /// The step whose effect it undoes.
    pub for_step: String,
    /// The compensation's name in the definition.
    pub name: String,
    #[serde(flatten)]
    pub state: StepState,
}

/// How the run is ending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// `failed` or `cancelled`.
    pub status: RunStatus,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// A decision on an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub approved: bool,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The engine's view of a run, stored as JSON in the run row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub steps: BTreeMap<String, StepState>,
    /// Steps in the order they succeeded (compensation runs newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub succeeded_order: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<CompensationState>,
    /// Events received and not yet taken by a `wait_for_event` step, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Vec<Value>>,
    /// Decisions on approval steps, by step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<String, ApprovalDecision>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending: Option<Ending>,
    /// The run created its session (and closes it when it ends).
    #[serde(default)]
    pub owns_session: bool,
    /// The session's sandbox was found lost and must be restored before a step runs.
    #[serde(default)]
    pub restore_needed: bool,
}

impl RunState {
    pub fn parse(text: &str) -> Result<RunState, String> {
        if text.is_empty() {
            return Ok(RunState::default());
        }
        serde_json::from_str(text).map_err(|e| format!("corrupt run state: {e}"))
    }

    pub fn to_text(&self) -> String {
        // Serialising plain data cannot fail; an empty object is a safe fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The state a new run starts in: every step pending.
    pub fn initial(definition: Option<&Definition>) -> RunState {
        let mut state = RunState::default();
        if let Some(definition) = definition {
            for step in &definition.steps {
                state.steps.insert(step.name.clone(), StepState::new());
            }
        }
        state
    }

    /// Outputs of succeeded steps, for templates and the run's output.
    pub fn outputs(&self) -> BTreeMap<String, Value> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Succeeded)
            .map(|(name, s)| (name.clone(), s.output.clone().unwrap_or(Value::Null)))
            .collect()
    }
}

/// The idempotency key of a step: the same for every attempt, different per run and
/// step.
pub fn step_key(run: &cordon_core::RunId, step: &str) -> String {
    format!("{run}/{step}")
}

/// Something the engine must carry out after the change is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The step's name, or the compensation's name when `compensation` is set.
    pub step: String,
    /// Index into `RunState::compensations` for a compensation.
    pub compensation: Option<usize>,
    pub attempt: u32,
}

/// The result of one `advance`: journal entries, dead letters, and what to launch.
#[derive(Debug, Default)]
pub struct Advance {
    pub journal: Vec<NewJournalEntry>,
    pub dead_letters: Vec<DeadLetter>,
    pub launches: Vec<Launch>,
}

fn entry(
    step: Option<&str>,
    attempt: u32,
    kind: &str,
    reason: Option<&str>,
    detail: Value,
    now: Timestamp,
) -> NewJournalEntry {
    NewJournalEntry {
        step: step.map(str::to_owned),
        attempt,
        kind: kind.to_owned(),
        reason: reason.map(str::to_owned),
        detail: detail.to_string(),
        at: now,
    }
}

/// Options of `advance` that come from the engine.
#[derive(Debug, Clone, Copy)]
pub struct AdvanceContext {
    pub now: Timestamp,
    /// The lease token the engine holds.
    pub token: i64,
    /// Uniform in [0, 1): jitter for retry intervals.
    pub random: f64,
    /// Whether the engine can run tool steps (it has a session, or none is needed).
    pub session_ready: bool,
}

/// Moves a definition run forward as far as it can go right now: finishes timers,
/// hands out events and approvals, starts every ready step (recording the attempt),
/// restarts attempts orphaned by a lost worker, runs compensations once the run is
/// ending, and finally sets the run's status and `next_due_at`.
pub fn advance(
    run: &mut Run,
    state: &mut RunState,
    def: &Definition,
    cx: AdvanceContext,
) -> Advance {
    let mut out = Advance::default();
    let now = cx.now;
    let now_us = now.unix_micros();
    if run.status.is_terminal() {
        return out;
    }

    // The run's deadline.
    if state.ending.is_none()
        && let Some(deadline) = run.deadline
        && deadline <= now
    {
        end_run(
            state,
            &mut out,
            RunStatus::Failed,
            ReasonCode::RunDeadlineExceeded.as_str(),
            "the run passed its deadline",
            None,
            now,
        );
    }

    if state.ending.is_none() {
        advance_steps(run, state, def, cx, &mut out);
    }

    if state.ending.is_some() {
        advance_compensation(run, state, def, cx, &mut out);
    }

    // Status and next due time.
    let mut next: Option<i64> = None;
    let mut consider = |t: Option<i64>| {
        if let Some(t) = t {
            next = Some(next.map_or(t, |n: i64| n.min(t)));
        }
    };
    if let Some(deadline) = run.deadline
        && state.ending.is_none()
    {
        consider(Some(deadline.unix_micros()));
    }
    let all_states = state
        .steps
        .values()
        .chain(state.compensations.iter().map(|c| &c.state));
    for s in all_states {
        match s.status {
            StepStatus::RetryWait | StepStatus::Waiting => consider(s.due_at),
            StepStatus::Running => consider(s.due_at),
            _ => {}
        }
    }

    if state.ending.is_none() {
        let all_done = state
            .steps
            .values()
            .all(|s| s.status == StepStatus::Succeeded);
        if all_done {
            run.status = RunStatus::Succeeded;
            run.output = Some(Value::Object(state.outputs().into_iter().collect()).to_string());
            run.reason = None;
            run.next_due_at = None;
            out.journal
                .push(entry(None, 0, "run_succeeded", None, json!({}), now));
            return out;
        }
        let blocked = state
            .steps
            .values()
            .any(|s| s.status == StepStatus::Blocked);
        // Progress without outside help: attempts in flight or waiting to retry.
        let running = state
            .steps
            .values()
            .any(|s| matches!(s.status, StepStatus::Running | StepStatus::RetryWait));
        run.status = if state.paused {
            RunStatus::Paused
        } else if blocked && !running {
            RunStatus::Blocked
        } else if running {
            RunStatus::Running
        } else {
            RunStatus::Waiting
        };
        if blocked {
            run.reason = state
                .steps
                .values()
                .find(|s| s.status == StepStatus::Blocked)
                .and_then(|s| s.error.as_ref())
                .map(|e| e.reason.clone());
        }
    } else if let Some(ending) = state.ending.clone() {
        let compensating = state
            .compensations
            .iter()
            .any(|c| !matches!(c.state.status, StepStatus::Succeeded | StepStatus::Failed));
        let steps_in_flight = state
            .steps
            .values()
            .any(|s| s.status == StepStatus::Running);
        run.reason = Some(ending.reason.clone());
        if compensating || steps_in_flight {
            run.status = RunStatus::Compensating;
        } else {
            run.status = ending.status;
            run.next_due_at = None;
            let failed: Vec<&str> = state
                .compensations
                .iter()
                .filter(|c| c.state.status == StepStatus::Failed)
                .map(|c| c.name.as_str())
                .collect();
            out.journal.push(entry(
                None,
                0,
                if ending.status == RunStatus::Cancelled {
                    "run_cancelled"
                } else {
                    "run_failed"
                },
                Some(&ending.reason),
                json!({"message": ending.message, "step": ending.step, "compensations_failed": failed}),
                now,
            ));
            return out;
        }
    }
    let _ = now_us;
    run.next_due_at = next.map(Timestamp::from_unix_micros);
    out
}

fn advance_steps(
    run: &mut Run,
    state: &mut RunState,
    def: &Definition,
    cx: AdvanceContext,
    out: &mut Advance,
) {
    let now = cx.now;
    let now_us = now.unix_micros();
    for step in &def.steps {
        let Some(current) = state.steps.get(&step.name).cloned() else {
            state.steps.insert(step.name.clone(), StepState::new());
            continue;
        };
        match current.status {
            StepStatus::Pending => {
                if state.paused {
                    continue;
                }
                let ready = step.needs.iter().all(|n| {
                    state
                        .steps
                        .get(n)
                        .is_some_and(|s| s.status == StepStatus::Succeeded)
                });
                if ready {
                    start_step(run, state, step, cx, out);
                }
            }
            StepStatus::RetryWait => {
                if !state.paused && current.due_at.is_some_and(|d| d <= now_us) {
                    start_step(run, state, step, cx, out);
                }
            }
            StepStatus::Running => {
                // An attempt that started under an older lease token was in flight on a
                // worker that is gone: try it again (at least once).
                if current.token != cx.token && step.action.is_external() && cx.session_ready {
                    out.journal.push(entry(
                        Some(&step.name),
                        current.attempt,
                        "attempt_orphaned",
                        None,
                        json!({"token": current.token}),
                        now,
                    ));
                    if !state.paused {
                        start_step(run, state, step, cx, out);
                    } else if let Some(s) = state.steps.get_mut(&step.name) {
                        s.status = StepStatus::RetryWait;
                        s.due_at = Some(now_us);
                    }
                } else if current.token != cx.token
                    && matches!(step.action, StepAction::Noop { .. })
                {
                    start_step(run, state, step, cx, out);
                } else if current.token == cx.token
                    && let Some(error) = running_overdue(&current, step, now_us)
                {
                    fail_attempt(state, step, current.attempt, error, now, cx.random, out);
                } else if current.token == cx.token
                    && let Some(s) = state.steps.get_mut(&step.name)
                {
                    s.due_at = Some(running_due(&current, step));
                }
            }
            StepStatus::Waiting => advance_waiting(state, step, now, cx.random, out),
            StepStatus::Blocked
            | StepStatus::Succeeded
            | StepStatus::Failed
            | StepStatus::Skipped => {}
        }
        if state.ending.is_some() {
            return;
        }
    }
}

/// Starts the next attempt of `step`: engine-side kinds begin waiting (or finish at
/// once), tool kinds are recorded as started and handed to the engine to launch.
fn start_step(run: &Run, state: &mut RunState, step: &Step, cx: AdvanceContext, out: &mut Advance) {
    let now = cx.now;
    let now_us = now.unix_micros();
    let Some(s) = state.steps.get_mut(&step.name) else {
        return;
    };
    // Schedule-to-close covers every attempt.
    if let (Some(limit), Some(first)) = (step.schedule_to_close_ms, s.first_started_at)
        && now_us.saturating_sub(first) >= ms_to_us(limit)
    {
        let error = StepError {
            class: FailureClass::Timeout,
            reason: ReasonCode::StepScheduleTimeout.as_str().to_owned(),
            message: format!(
                "the step did not finish within its schedule-to-close timeout ({limit} ms)"
            ),
            exit_code: None,
        };
        give_up(
            state,
            &step.name,
            error,
            s_attempt(state, &step.name),
            now,
            out,
        );
        return;
    }
    s.attempt += 1;
    s.token = cx.token;
    s.started_at = Some(now_us);
    s.heartbeat_at = Some(now_us);
    s.first_started_at.get_or_insert(now_us);
    s.error = None;
    let attempt = s.attempt;
    match &step.action {
        StepAction::Sleep { duration_ms } => {
            s.status = StepStatus::Waiting;
            s.due_at = Some(now_us.saturating_add(ms_to_us(*duration_ms)));
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "started",
                None,
                json!({"kind": "sleep", "until": s.due_at}),
                now,
            ));
        }
        StepAction::WaitForEvent { timeout_ms, event } => {
            s.status = StepStatus::Waiting;
            s.due_at = timeout_ms.map(|t| now_us.saturating_add(ms_to_us(t)));
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "started",
                None,
                json!({"kind": "wait_for_event", "event": event, "timeout_at": s.due_at}),
                now,
            ));
            advance_waiting(state, step, now, cx.random, out);
        }
        StepAction::Approval { timeout_ms, prompt } => {
            s.status = StepStatus::Waiting;
            s.due_at = timeout_ms.map(|t| now_us.saturating_add(ms_to_us(t)));
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "started",
                None,
                json!({"kind": "approval", "prompt": prompt, "timeout_at": s.due_at}),
                now,
            ));
            advance_waiting(state, step, now, cx.random, out);
        }
        _ => {
            if step.action.needs_session() && !cx.session_ready {
                // The engine provides the session first; try again then.
                s.attempt -= 1;
                s.status = StepStatus::RetryWait;
                s.due_at = Some(now_us);
                return;
            }
            s.status = StepStatus::Running;
            s.due_at = Some(now_us.saturating_add(ms_to_us(step.timeout_ms)));
            if let Some(hb) = step.heartbeat_ms {
                s.due_at = s.due_at.map(|d| d.min(now_us.saturating_add(ms_to_us(hb))));
            }
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "started",
                None,
                json!({"kind": step.action.kind(), "idempotency_key": step_key(&run.id, &step.name)}),
                now,
            ));
            out.launches.push(Launch {
                step: step.name.clone(),
                compensation: None,
                attempt,
            });
        }
    }
}

/// When a running attempt must be looked at next: its start-to-close deadline, or the
/// end of its heartbeat window, whichever comes first.
pub fn running_due(s: &StepState, step: &Step) -> i64 {
    let started = s.started_at.unwrap_or(0);
    let mut due = started.saturating_add(ms_to_us(step.timeout_ms));
    if let Some(window) = step.heartbeat_ms {
        let beat = s.heartbeat_at.unwrap_or(started);
        due = due.min(beat.saturating_add(ms_to_us(window)));
    }
    due
}

/// The timeout a running attempt has passed, if any.
pub fn running_overdue(s: &StepState, step: &Step, now_us: i64) -> Option<StepError> {
    let started = s.started_at.unwrap_or(0);
    if now_us >= started.saturating_add(ms_to_us(step.timeout_ms)) {
        return Some(StepError {
            class: FailureClass::Timeout,
            reason: ReasonCode::StepTimeout.as_str().to_owned(),
            message: format!(
                "the attempt ran longer than its timeout ({} ms)",
                step.timeout_ms
            ),
            exit_code: None,
        });
    }
    if let Some(window) = step.heartbeat_ms {
        let beat = s.heartbeat_at.unwrap_or(started);
        if now_us >= beat.saturating_add(ms_to_us(window)) {
            return Some(StepError {
                class: FailureClass::Timeout,
                reason: ReasonCode::StepHeartbeatTimeout.as_str().to_owned(),
                message: format!("no heartbeat within {window} ms"),
                exit_code: None,
            });
        }
    }
    None
}

fn s_attempt(state: &RunState, step: &str) -> u32 {
    state.steps.get(step).map_or(0, |s| s.attempt)
}

fn ms_to_us(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// Finishes a waiting step if its timer, event or approval is there.
fn advance_waiting(
    state: &mut RunState,
    step: &Step,
    now: Timestamp,
    random: f64,
    out: &mut Advance,
) {
    let now_us = now.unix_micros();
    let Some(s) = state.steps.get(&step.name) else {
        return;
    };
    let attempt = s.attempt;
    let due = s.due_at.is_some_and(|d| d <= now_us);
    match &step.action {
        StepAction::Sleep { .. } if due => succeed(state, &step.name, Value::Null, now, out),
        StepAction::WaitForEvent { event, .. } => {
            let payload = state.events.get_mut(event).and_then(|queue| {
                if queue.is_empty() {
                    None
                } else {
                    Some(queue.remove(0))
                }
            });
            if state.events.get(event).is_some_and(Vec::is_empty) {
                state.events.remove(event);
            }
            if let Some(payload) = payload {
                succeed(state, &step.name, payload, now, out);
            } else if due {
                let error = StepError {
                    class: FailureClass::Timeout,
                    reason: ReasonCode::StepEventTimeout.as_str().to_owned(),
                    message: format!("event `{event}` did not arrive in time"),
                    exit_code: None,
                };
                fail_attempt(state, step, attempt, error, now, random, out);
            }
        }
        StepAction::Approval { .. } => {
            if let Some(decision) = state.approvals.remove(&step.name) {
                if decision.approved {
                    succeed(
                        state,
                        &step.name,
                        json!({"approved_by": decision.by, "comment": decision.comment}),
                        now,
                        out,
                    );
                } else {
                    let error = StepError {
                        class: FailureClass::Error,
                        reason: ReasonCode::StepApprovalRejected.as_str().to_owned(),
                        message: format!(
                            "rejected by {}{}",
                            decision.by,
                            decision
                                .comment
                                .as_deref()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        ),
                        exit_code: None,
                    };
                    give_up(state, &step.name, error, attempt, now, out);
                }
            } else if due {
                let error = StepError {
                    class: FailureClass::Timeout,
                    reason: ReasonCode::StepApprovalTimeout.as_str().to_owned(),
                    message: "no decision arrived in time".to_owned(),
                    exit_code: None,
                };
                give_up(state, &step.name, error, attempt, now, out);
            }
        }
        _ => {}
    }
}

fn succeed(state: &mut RunState, name: &str, output: Value, now: Timestamp, out: &mut Advance) {
    let Some(s) = state.steps.get_mut(name) else {
        return;
    };
    s.status = StepStatus::Succeeded;
    s.due_at = None;
    s.completed_at = Some(now.unix_micros());
    s.error = None;
    let attempt = s.attempt;
    out.journal.push(entry(
        Some(name),
        attempt,
        "completed",
        None,
        json!({"output": output}),
        now,
    ));
    s.output = Some(output);
    state.succeeded_order.push(name.to_owned());
}

/// Gives up on a step: it fails and the run ends (failed) and compensates.
fn give_up(
    state: &mut RunState,
    name: &str,
    error: StepError,
    attempt: u32,
    now: Timestamp,
    out: &mut Advance,
) {
    if let Some(s) = state.steps.get_mut(name) {
        s.status = StepStatus::Failed;
        s.due_at = None;
        s.completed_at = Some(now.unix_micros());
        s.error = Some(error.clone());
    }
    out.journal.push(entry(
        Some(name),
        attempt,
        "failed",
        Some(&error.reason),
        json!({"class": error.class, "message": error.message, "exit_code": error.exit_code, "final": true}),
        now,
    ));
    end_run(
        state,
        out,
        RunStatus::Failed,
        &error.reason,
        &error.message,
        Some(name),
        now,
    );
}

/// An attempt failed: retry it, send it to the dead-letter queue, or give up.
fn fail_attempt(
    state: &mut RunState,
    step: &Step,
    attempt: u32,
    error: StepError,
    now: Timestamp,
    random: f64,
    out: &mut Advance,
) {
    match decide(&step.retry, error.class, attempt, error.exit_code, random) {
        RetryDecision::RetryAfter(delay) => {
            let due = now.unix_micros().saturating_add(ms_to_us(delay));
            if let Some(s) = state.steps.get_mut(&step.name) {
                s.status = StepStatus::RetryWait;
                s.due_at = Some(due);
                s.error = Some(error.clone());
            }
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "failed",
                Some(&error.reason),
                json!({"class": error.class, "message": error.message, "exit_code": error.exit_code, "retry_in_ms": delay}),
                now,
            ));
        }
        RetryDecision::DeadLetter => {
            if let Some(s) = state.steps.get_mut(&step.name) {
                s.status = StepStatus::Blocked;
                s.due_at = None;
                s.error = Some(error.clone());
            }
            out.journal.push(entry(
                Some(&step.name),
                attempt,
                "blocked",
                Some(&error.reason),
                json!({"class": error.class, "message": error.message}),
                now,
            ));
        }
        RetryDecision::GiveUp => give_up(state, &step.name, error, attempt, now, out),
    }
}

/// Marks the run as ending: steps that never started are skipped and the compensations
/// of succeeded steps are queued, newest first.
pub fn end_run(
    state: &mut RunState,
    out: &mut Advance,
    status: RunStatus,
    reason: &str,
    message: &str,
    step: Option<&str>,
    now: Timestamp,
) {
    if state.ending.is_some() {
        return;
    }
    state.ending = Some(Ending {
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        step: step.map(str::to_owned),
    });
    // Nothing more starts, and attempts in flight are stopped (the engine aborts an
    // attempt its state no longer counts as running); their effects are not undone,
    // since they never succeeded.
    for s in state.steps.values_mut() {
        if matches!(
            s.status,
            StepStatus::Pending
                | StepStatus::RetryWait
                | StepStatus::Waiting
                | StepStatus::Blocked
                | StepStatus::Running
        ) {
            s.status = StepStatus::Skipped;
            s.due_at = None;
        }
    }
    out.journal.push(entry(
        step,
        0,
        "run_ending",
        Some(reason),
        json!({"status": status, "message": message}),
        now,
    ));
}

fn advance_compensation(
    run: &Run,
    state: &mut RunState,
    def: &Definition,
    cx: AdvanceContext,
    out: &mut Advance,
) {
    let now = cx.now;
    let now_us = now.unix_micros();
    if state.compensations.is_empty() {
        let mut queue = Vec::new();
        for name in state.succeeded_order.iter().rev() {
            if let Some(comp) = def.step(name).and_then(|s| s.compensate.clone()) {
                queue.push(CompensationState {
                    for_step: name.clone(),
                    name: comp,
                    state: StepState::new(),
                });
            }
        }
        if queue.is_empty() {
            return;
        }
        for c in &queue {
            out.journal.push(entry(
                Some(&c.name),
                0,
                "compensation_scheduled",
                None,
                json!({"for_step": c.for_step}),
                now,
            ));
        }
        state.compensations = queue;
    }
    // One compensation at a time, newest first.
    let Some(index) = state
        .compensations
        .iter()
        .position(|c| !matches!(c.state.status, StepStatus::Succeeded | StepStatus::Failed))
    else {
        return;
    };
    let Some(step) = def.compensation(&state.compensations[index].name).cloned() else {
        state.compensations[index].state.status = StepStatus::Failed;
        return;
    };
    let c = &mut state.compensations[index].state;
    if c.status == StepStatus::Running && c.token == cx.token {
        if let Some(error) = running_overdue(c, &step, now_us) {
            let launch = Launch {
                step: step.name.clone(),
                compensation: Some(index),
                attempt: c.attempt,
            };
            let failed = Outcome::Failed {
                error,
                summary: None,
            };
            record_outcome(
                run, state, def, &launch, cx.token, failed, now, cx.random, out,
            );
        } else {
            c.due_at = Some(running_due(c, &step));
        }
        return;
    }
    let startable = match c.status {
        StepStatus::Pending => true,
        StepStatus::RetryWait => c.due_at.is_some_and(|d| d <= now_us),
        StepStatus::Running => c.token != cx.token,
        _ => false,
    };
    if !startable || state.paused {
        return;
    }
    if step.action.needs_session() && !cx.session_ready {
        c.status = StepStatus::RetryWait;
        c.due_at = Some(now_us);
        return;
    }
    c.attempt += 1;
    c.token = cx.token;
    c.status = StepStatus::Running;
    c.started_at = Some(now_us);
    c.heartbeat_at = Some(now_us);
    c.first_started_at.get_or_insert(now_us);
    c.due_at = Some(now_us.saturating_add(ms_to_us(step.timeout_ms)));
    let attempt = c.attempt;
    out.journal.push(entry(
        Some(&step.name),
        attempt,
        "compensating",
        None,
        json!({"kind": step.action.kind(), "for_step": state.compensations[index].for_step,
               "idempotency_key": step_key(&run.id, &step.name)}),
        now,
    ));
    out.launches.push(Launch {
        step: step.name.clone(),
        compensation: Some(index),
        attempt,
    });
}

/// What an attempt of a tool step came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed {
        error: StepError,
        /// For a policy failure: what was refused, for the dead-letter entry.
        summary: Option<Value>,
    },
}

/// Records an attempt's outcome, if the attempt is still the step's current one and
/// started under `token` (a late answer from a replaced attempt changes nothing).
/// Returns whether it was recorded.
#[allow(clippy::too_many_arguments)]
pub fn record_outcome(
    run: &Run,
    state: &mut RunState,
    def: &Definition,
    launch: &Launch,
    token: i64,
    outcome: Outcome,
    now: Timestamp,
    random: f64,
    out: &mut Advance,
) -> bool {
    if let Some(index) = launch.compensation {
        let Some(comp) = state.compensations.get_mut(index) else {
            return false;
        };
        if comp.state.status != StepStatus::Running
            || comp.state.attempt != launch.attempt
            || comp.state.token != token
        {
            return false;
        }
        let Some(step) = def.compensation(&comp.name) else {
            return false;
        };
        match outcome {
            Outcome::Succeeded(output) => {
                comp.state.status = StepStatus::Succeeded;
                comp.state.due_at = None;
                comp.state.completed_at = Some(now.unix_micros());
                out.journal.push(entry(
                    Some(&comp.name),
                    launch.attempt,
                    "compensated",
                    None,
                    json!({"for_step": comp.for_step, "output": output}),
                    now,
                ));
                comp.state.output = Some(output);
            }
            Outcome::Failed { error, .. } => {
                // Compensations retry by their own policy; policy failures and exhausted
                // retries leave the compensation failed, and the next one runs.
                let decision = decide(
                    &step.retry,
                    error.class,
                    launch.attempt,
                    error.exit_code,
                    random,
                );
                let (kind, detail) = match decision {
                    RetryDecision::RetryAfter(delay) => {
                        comp.state.status = StepStatus::RetryWait;
                        comp.state.due_at = Some(now.unix_micros().saturating_add(ms_to_us(delay)));
                        ("compensation_failed", json!({"retry_in_ms": delay}))
                    }
                    RetryDecision::DeadLetter | RetryDecision::GiveUp => {
                        comp.state.status = StepStatus::Failed;
                        comp.state.due_at = None;
                        ("compensation_failed", json!({"final": true}))
                    }
                };
                let mut detail = detail;
                detail["message"] = json!(error.message);
                detail["class"] = json!(error.class);
                out.journal.push(entry(
                    Some(&comp.name),
                    launch.attempt,
                    kind,
                    Some(&error.reason),
                    detail,
                    now,
                ));
                comp.state.error = Some(error);
            }
        }
        return true;
    }

    let Some(current) = state.steps.get(&launch.step) else {
        return false;
    };
    if current.status != StepStatus::Running
        || current.attempt != launch.attempt
        || current.token != token
    {
        return false;
    }
    let Some(step) = def.step(&launch.step).cloned() else {
        return false;
    };
    match outcome {
        Outcome::Succeeded(output) => succeed(state, &launch.step, output, now, out),
        Outcome::Failed { error, summary } => {
            if error.class == FailureClass::Policy {
                let id = DeadLetterId::generate();
                out.dead_letters.push(DeadLetter {
                    id,
                    tenant_id: run.tenant_id,
                    run_id: run.id,
                    session_id: run.session_id,
                    step: launch.step.clone(),
                    attempt: launch.attempt,
                    reason: error.reason.clone(),
                    summary: summary.unwrap_or(Value::Null).to_string(),
                    status: DeadLetterStatus::Open,
                    created_at: now,
                    resolved_at: None,
                    resolved_by: None,
                });
                if let Some(s) = state.steps.get_mut(&launch.step) {
                    s.dead_letter = Some(id.to_string());
                }
            }
            fail_attempt(state, &step, launch.attempt, error, now, random, out);
        }
    }
    true
}

/// Records a heartbeat of a running attempt; returns whether it was current.
pub fn record_heartbeat(state: &mut RunState, launch: &Launch, token: i64, now: Timestamp) -> bool {
    let s = match launch.compensation {
        Some(index) => state.compensations.get_mut(index).map(|c| &mut c.state),
        None => state.steps.get_mut(&launch.step),
    };
    match s {
        Some(s)
            if s.status == StepStatus::Running
                && s.attempt == launch.attempt
                && s.token == token =>
        {
            s.heartbeat_at = Some(now.unix_micros());
            true
        }
        _ => false,
    }
}

/// Redrives a blocked step: it is tried again at once, as a new attempt.
pub fn redrive(state: &mut RunState, step: &str, now: Timestamp) -> Result<(), String> {
    match state.steps.get_mut(step) {
        Some(s) if s.status == StepStatus::Blocked => {
            s.status = StepStatus::RetryWait;
            s.due_at = Some(now.unix_micros());
            s.dead_letter = None;
            Ok(())
        }
        _ => Err(format!("step `{step}` is not blocked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::{RunId, TenantId};

    fn def(yaml: &str) -> Definition {
        crate::definition::parse(yaml).expect("definition")
    }

    fn new_run(def: &Definition) -> (Run, RunState) {
        let now = Timestamp::from_unix_micros(1_000_000_000);
        let run = Run {
            id: RunId::generate(),
            tenant_id: TenantId::generate(),
            definition: Some("sha256:x".into()),
            name: def.name.clone(),
            session_id: None,
            status: RunStatus::Running,
            input: "{}".into(),
            state: String::new(),
            output: None,
            reason: None,
            idempotency_key: None,
            created_by: "key".into(),
            created_at: now,
            updated_at: now,
            deadline: None,
            next_due_at: None,
            lease_holder: Some("n".into()),
            lease_token: 1,
            lease_expires_at: None,
            journal_seq: 0,
        };
        (run, RunState::initial(Some(def)))
    }

    fn cx(at_ms: i64, token: i64) -> AdvanceContext {
        AdvanceContext {
            now: Timestamp::from_unix_micros(1_000_000_000 + at_ms * 1000),
            token,
            random: 0.5,
            session_ready: true,
        }
    }

    fn kinds(out: &Advance) -> Vec<String> {
        out.journal
            .iter()
            .map(|e| format!("{}:{}", e.step.as_deref().unwrap_or("-"), e.kind))
            .collect()
    }

    const CHAIN: &str = r#"
name: chain
steps:
  - {name: a, kind: exec, argv: [a], compensate: undo-a}
  - {name: b, kind: exec, argv: [b], needs: [a], compensate: undo-b,
     retry: {error: {max_attempts: 2, initial_interval: 1s, jitter: 0}}}
  - {name: c, kind: exec, argv: [c], needs: [b]}
compensations:
  - {name: undo-a, kind: exec, argv: [ua]}
  - {name: undo-b, kind: exec, argv: [ub]}
"#;

    fn ok(run: &Run, state: &mut RunState, d: &Definition, launch: &Launch, at: i64) -> Advance {
        let mut out = Advance::default();
        let c = cx(at, 1);
        assert!(record_outcome(
            run,
            state,
            d,
            launch,
            1,
            Outcome::Succeeded(serde_json::json!(launch.step)),
            c.now,
            0.5,
            &mut out
        ));
        out
    }

    fn err(
        run: &Run,
        state: &mut RunState,
        d: &Definition,
        launch: &Launch,
        at: i64,
        class: FailureClass,
    ) -> Advance {
        let mut out = Advance::default();
        let c = cx(at, 1);
        let error = StepError {
            class,
            reason: "STEP_EXIT_NONZERO".into(),
            message: "boom".into(),
            exit_code: Some(1),
        };
        assert!(record_outcome(
            run,
            state,
            d,
            launch,
            1,
            Outcome::Failed {
                error,
                summary: Some(serde_json::json!({"host": "x"}))
            },
            c.now,
            0.5,
            &mut out
        ));
        out
    }

    #[test]
    fn steps_run_in_order_and_the_run_succeeds() {
        let d = def(CHAIN);
        let (mut run, mut state) = new_run(&d);
        let out = advance(&mut run, &mut state, &d, cx(0, 1));
        assert_eq!(out.launches.len(), 1);
        assert_eq!(out.launches[0].step, "a");
        for (i, step) in ["a", "b", "c"].iter().enumerate() {
            let launch = Launch {
                step: (*step).into(),
                compensation: None,
                attempt: 1,
            };
            ok(&run, &mut state, &d, &launch, 10 * i as i64);
            let out = advance(&mut run, &mut state, &d, cx(10 * i as i64, 1));
            if i < 2 {
                assert_eq!(out.launches.len(), 1, "{:?}", kinds(&out));
            }
        }
        assert_eq!(run.status, RunStatus::Succeeded);
        let output: Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
        assert_eq!(output["c"], "c");
    }

    #[test]
    fn retries_then_gives_up_and_compensates_newest_first() {
        let d = def(CHAIN);
        let (mut run, mut state) = new_run(&d);
        advance(&mut run, &mut state, &d, cx(0, 1));
        let a = Launch {
            step: "a".into(),
            compensation: None,
            attempt: 1,
        };
        ok(&run, &mut state, &d, &a, 1);
        let out = advance(&mut run, &mut state, &d, cx(1, 1));
        assert_eq!(out.launches[0].step, "b");
        let b1 = Launch {
            step: "b".into(),
            compensation: None,
            attempt: 1,
        };
        let out = err(&run, &mut state, &d, &b1, 2, FailureClass::Error);
        assert_eq!(kinds(&out), ["b:failed"]);
        assert_eq!(state.steps["b"].status, StepStatus::RetryWait);
        // Not due yet.
        let out = advance(&mut run, &mut state, &d, cx(500, 1));
        assert!(out.launches.is_empty());
        assert!(run.next_due_at.is_some());
        let out = advance(&mut run, &mut state, &d, cx(1002, 1));
        assert_eq!(out.launches[0].attempt, 2);
        let b2 = Launch {
            step: "b".into(),
            compensation: None,
            attempt: 2,
        };
        err(&run, &mut state, &d, &b2, 1003, FailureClass::Error);
        // b gave up: a's compensation runs (b never succeeded).
        let out = advance(&mut run, &mut state, &d, cx(1003, 1));
        assert_eq!(run.status, RunStatus::Compensating);
        assert_eq!(out.launches.len(), 1);
        assert_eq!(out.launches[0].step, "undo-a");
        let ua = out.launches[0].clone();
        ok(&run, &mut state, &d, &ua, 1004);
        advance(&mut run, &mut state, &d, cx(1004, 1));
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.reason.as_deref(), Some("STEP_EXIT_NONZERO"));
        assert_eq!(state.steps["c"].status, StepStatus::Skipped);
    }

    #[test]
    fn policy_failures_go_to_the_dead_letter_queue_and_redrive() {
        let d = def(CHAIN);
        let (mut run, mut state) = new_run(&d);
        advance(&mut run, &mut state, &d, cx(0, 1));
        let a = Launch {
            step: "a".into(),
            compensation: None,
            attempt: 1,
        };
        let out = err(&run, &mut state, &d, &a, 1, FailureClass::Policy);
        assert_eq!(out.dead_letters.len(), 1);
        assert_eq!(kinds(&out), ["a:blocked"]);
        advance(&mut run, &mut state, &d, cx(2, 1));
        assert_eq!(run.status, RunStatus::Blocked);
        assert_eq!(run.next_due_at, None);
        redrive(&mut state, "a", cx(3, 1).now).unwrap();
        let out = advance(&mut run, &mut state, &d, cx(3, 1));
        assert_eq!(out.launches[0].attempt, 2);
        assert_eq!(run.status, RunStatus::Running);
    }

    #[test]
    fn an_orphaned_attempt_runs_again_under_the_new_token_and_a_late_answer_is_dropped() {
        let d = def(CHAIN);
        let (mut run, mut state) = new_run(&d);
        advance(&mut run, &mut state, &d, cx(0, 1));
        // The worker died; another claims with token 2.
        let out = advance(&mut run, &mut state, &d, cx(5, 2));
        assert_eq!(kinds(&out), ["a:attempt_orphaned", "a:started"]);
        assert_eq!(out.launches[0].attempt, 2);
        // The old attempt's answer arrives late: ignored.
        let mut late = Advance::default();
        let a1 = Launch {
            step: "a".into(),
            compensation: None,
            attempt: 1,
        };
        assert!(!record_outcome(
            &run,
            &mut state,
            &d,
            &a1,
            1,
            Outcome::Succeeded(Value::Null),
            cx(6, 1).now,
            0.5,
            &mut late
        ));
    }

    #[test]
    fn start_to_close_and_heartbeat_timeouts_fail_the_attempt() {
        let d = def(r#"
name: slow
steps:
  - {name: s, kind: exec, argv: [s], timeout: 10s, heartbeat: 1s,
     retry: {timeout: {max_attempts: 1}}}
"#);
        let (mut run, mut state) = new_run(&d);
        advance(&mut run, &mut state, &d, cx(0, 1));
        assert_eq!(run.next_due_at, Some(cx(1000, 1).now));
        let launch = Launch {
            step: "s".into(),
            compensation: None,
            attempt: 1,
        };
        assert!(record_heartbeat(&mut state, &launch, 1, cx(900, 1).now));
        advance(&mut run, &mut state, &d, cx(1000, 1));
        assert_eq!(state.steps["s"].status, StepStatus::Running);
        let out = advance(&mut run, &mut state, &d, cx(1900, 1));
        assert!(
            kinds(&out).contains(&"s:failed".to_owned()),
            "{:?}",
            kinds(&out)
        );
        assert_eq!(
            out.journal[0].reason.as_deref(),
            Some("STEP_HEARTBEAT_TIMEOUT")
        );
        assert_eq!(run.status, RunStatus::Failed);
    }

    #[test]
    fn sleeps_events_and_approvals_wait_then_finish() {
        let d = def(r#"
name: waits
steps:
  - {name: nap, kind: sleep, duration: 2s}
  - {name: ev, kind: wait_for_event, event: go, needs: [nap]}
  - {name: ok, kind: approval, needs: [ev]}
"#);
        let (mut run, mut state) = new_run(&d);
        advance(&mut run, &mut state, &d, cx(0, 1));
        assert_eq!(run.status, RunStatus::Waiting);
        advance(&mut run, &mut state, &d, cx(2000, 1));
        assert_eq!(state.steps["nap"].status, StepStatus::Succeeded);
        assert_eq!(state.steps["ev"].status, StepStatus::Waiting);
        assert_eq!(run.next_due_at, None);
        state
            .events
            .insert("go".into(), vec![serde_json::json!({"x": 1})]);
        advance(&mut run, &mut state, &d, cx(2001, 1));
        assert_eq!(state.steps["ev"].output, Some(serde_json::json!({"x": 1})));
        state.approvals.insert(
            "ok".into(),
            ApprovalDecision {
                approved: true,
                by: "key_a".into(),
                comment: None,
            },
        );
        advance(&mut run, &mut state, &d, cx(2002, 1));
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn the_deadline_fails_the_run() {
        let d = def(CHAIN);
        let (mut run, mut state) = new_run(&d);
        run.deadline = Some(cx(100, 1).now);
        advance(&mut run, &mut state, &d, cx(0, 1));
        advance(&mut run, &mut state, &d, cx(100, 1));
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.reason.as_deref(), Some("RUN_DEADLINE_EXCEEDED"));
    }
}
