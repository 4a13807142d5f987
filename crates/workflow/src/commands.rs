//! What operators and agent code do to a run, as changes of its state: cancel, pause,
//! unpause, send an event, decide an approval, redrive or discard a dead letter, and the
//! durable-step calls of a code-driven run. Each is a pure function of the run and its
//! state, applied by the store under the run's row lock (`WorkflowStore::update_run`),
//! so it never races the engine that runs the steps.

use cordon_core::{
    DeadLetterId, DeadLetterStatus, NewJournalEntry, ReasonCode, Run, RunStatus, Timestamp,
};
use cordon_store::RunWrite;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{FailureClass, RetryPolicies, RetryPolicy};
use crate::retry::{RetryDecision, decide};
use crate::state::{
    Advance, ApprovalDecision, RunState, StepError, StepState, StepStatus, end_run, step_key,
};

/// Why a command cannot be applied; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub reason: ReasonCode,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError {
        reason: ReasonCode::RunInvalidState,
        message: message.into(),
    }
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Cancel {
        by: String,
        reason: Option<String>,
    },
    Pause {
        by: String,
    },
    Unpause {
        by: String,
    },
    Event {
        name: String,
        payload: Value,
        by: String,
    },
    Approve {
        step: String,
        decision: ApprovalDecision,
    },
    Redrive {
        dead_letter: DeadLetterId,
        step: String,
        by: String,
    },
    Discard {
        dead_letter: DeadLetterId,
        step: String,
        by: String,
    },
    /// Ends a code-driven run.
    Finish {
        succeeded: bool,
        output: Value,
        by: String,
    },
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

/// Applies `command` to the run. Definition runs are made due at once so the engine
/// acts on it; code-driven runs change here and now.
pub fn apply(run: &mut Run, command: Command, now: Timestamp) -> Result<RunWrite, CommandError> {
    if run.status.is_terminal() {
        return Err(invalid(format!("the run is {}", run.status.as_str())));
    }
    let mut state = RunState::parse(&run.state).map_err(invalid)?;
    let mut write = RunWrite::default();
    let code_run = run.definition.is_none();
    match command {
        Command::Cancel { by, reason } => {
            if state.ending.is_some() {
                return Err(invalid("the run is already ending"));
            }
            let message = reason.unwrap_or_else(|| format!("cancelled by {by}"));
            let mut out = Advance::default();
            end_run(
                &mut state,
                &mut out,
                RunStatus::Cancelled,
                ReasonCode::RunCancelled.as_str(),
                &message,
                None,
                now,
            );
            write.journal.extend(out.journal);
            for (name, s) in &state.steps {
                if let Some(id) = &s.dead_letter
                    && let Ok(id) = id.parse()
                {
                    write
                        .resolve_dead_letters
                        .push((id, DeadLetterStatus::Discarded, by.clone()));
                    let _ = name;
                }
            }
            if code_run {
                run.status = RunStatus::Cancelled;
                run.reason = Some(ReasonCode::RunCancelled.as_str().to_owned());
                run.next_due_at = None;
                write.journal.push(entry(
                    None,
                    0,
                    "run_cancelled",
                    Some(ReasonCode::RunCancelled.as_str()),
                    json!({"by": by}),
                    now,
                ));
            } else {
                run.status = RunStatus::Compensating;
            }
        }
        Command::Pause { by } => {
            if state.paused {
                return Err(invalid("the run is already paused"));
            }
            if state.ending.is_some() {
                return Err(invalid(
                    "the run is ending: its compensations cannot be paused",
                ));
            }
            state.paused = true;
            run.status = RunStatus::Paused;
            write
                .journal
                .push(entry(None, 0, "paused", None, json!({"by": by}), now));
        }
        Command::Unpause { by } => {
            if !state.paused {
                return Err(invalid("the run is not paused"));
            }
            state.paused = false;
            run.status = RunStatus::Running;
            write
                .journal
                .push(entry(None, 0, "unpaused", None, json!({"by": by}), now));
        }
        Command::Event { name, payload, by } => {
            write.journal.push(entry(
                None,
                0,
                "event",
                None,
                json!({"event": name, "payload": payload, "by": by}),
                now,
            ));
            state.events.entry(name).or_default().push(payload);
        }
        Command::Approve { step, decision } => {
            let waiting = state
                .steps
                .get(&step)
                .is_some_and(|s| s.status == StepStatus::Waiting);
            if !waiting || code_run {
                return Err(invalid(format!(
                    "step `{step}` is not waiting for an approval"
                )));
            }
            if state.approvals.contains_key(&step) {
                return Err(invalid(format!("step `{step}` already has a decision")));
            }
            write.journal.push(entry(
                Some(&step),
                0,
                if decision.approved {
                    "approved"
                } else {
                    "rejected"
                },
                None,
                json!({"by": decision.by, "comment": decision.comment}),
                now,
            ));
            state.approvals.insert(step, decision);
        }
        Command::Redrive {
            dead_letter,
            step,
            by,
        } => {
            crate::state::redrive(&mut state, &step, now).map_err(invalid)?;
            write
                .resolve_dead_letters
                .push((dead_letter, DeadLetterStatus::Redriven, by.clone()));
            write.journal.push(entry(
                Some(&step),
                0,
                "redriven",
                None,
                json!({"dead_letter": dead_letter.to_string(), "by": by}),
                now,
            ));
            run.status = RunStatus::Running;
            run.reason = None;
        }
        Command::Discard {
            dead_letter,
            step,
            by,
        } => {
            let blocked = state
                .steps
                .get(&step)
                .is_some_and(|s| s.status == StepStatus::Blocked);
            if !blocked {
                return Err(invalid(format!("step `{step}` is not blocked")));
            }
            if let Some(s) = state.steps.get_mut(&step) {
                s.status = StepStatus::Failed;
            }
            write
                .resolve_dead_letters
                .push((dead_letter, DeadLetterStatus::Discarded, by.clone()));
            write.journal.push(entry(
                Some(&step),
                0,
                "discarded",
                Some(ReasonCode::RunDeadLetterDiscarded.as_str()),
                json!({"dead_letter": dead_letter.to_string(), "by": by}),
                now,
            ));
            let mut out = Advance::default();
            end_run(
                &mut state,
                &mut out,
                RunStatus::Failed,
                ReasonCode::RunDeadLetterDiscarded.as_str(),
                &format!("the dead letter of step `{step}` was discarded by {by}"),
                Some(&step),
                now,
            );
            write.journal.extend(out.journal);
            if code_run {
                run.status = RunStatus::Failed;
                run.reason = Some(ReasonCode::RunDeadLetterDiscarded.as_str().to_owned());
                run.next_due_at = None;
                write.journal.push(entry(
                    None,
                    0,
                    "run_failed",
                    Some(ReasonCode::RunDeadLetterDiscarded.as_str()),
                    json!({}),
                    now,
                ));
            } else {
                run.status = RunStatus::Compensating;
            }
        }
        Command::Finish {
            succeeded,
            output,
            by,
        } => {
            if !code_run {
                return Err(invalid("only a code-driven run is finished by its caller"));
            }
            if let Some((name, _)) = state
                .steps
                .iter()
                .find(|(_, s)| s.status == StepStatus::Blocked)
            {
                return Err(invalid(format!(
                    "step `{name}` is blocked in the dead-letter queue"
                )));
            }
            run.status = if succeeded {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            };
            run.reason = if succeeded {
                None
            } else {
                Some(ReasonCode::StepFailed.as_str().to_owned())
            };
            run.output = Some(output.to_string());
            run.next_due_at = None;
            write.journal.push(entry(
                None,
                0,
                if succeeded {
                    "run_succeeded"
                } else {
                    "run_failed"
                },
                run.reason.as_deref(),
                json!({"by": by}),
                now,
            ));
        }
    }
    if !code_run {
        run.next_due_at = Some(now);
    }
    run.state = state.to_text();
    Ok(write)
}

/// A call of the durable-step API.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCall {
    /// Begin (or resume) the step: a completed step answers its recorded result.
    Start {
        heartbeat_ms: Option<u64>,
    },
    Heartbeat,
    Complete {
        output: Value,
    },
    Fail {
        class: FailureClass,
        message: String,
        exit_code: Option<i32>,
        /// For a policy failure: what was refused.
        summary: Option<Value>,
    },
}

/// The answer of the durable-step API: the step's recorded state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReply {
    pub step: String,
    pub status: StepStatus,
    pub attempt: u32,
    /// The same across attempts: pass it to the tools the step calls.
    pub idempotency_key: String,
    /// True when the answer is an outcome recorded earlier (nothing new was written).
    pub replayed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// After a failure: wait this long, then start the step again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// The retry policies of code-driven steps (the definition defaults).
pub fn code_retry() -> RetryPolicies {
    let policy = |max_attempts, initial, max| RetryPolicy {
        max_attempts,
        initial_interval_ms: initial,
        backoff: 2.0,
        max_interval_ms: max,
        jitter: 0.2,
    };
    RetryPolicies {
        timeout: policy(3, 1_000, 60_000),
        capacity: policy(5, 2_000, 120_000),
        error: policy(3, 1_000, 60_000),
        non_retryable_exit_codes: Vec::new(),
    }
}

/// Applies one durable-step call to a code-driven run.
pub fn step_call(
    run: &mut Run,
    name: &str,
    call: StepCall,
    now: Timestamp,
    random: f64,
) -> Result<(RunWrite, StepReply), CommandError> {
    if run.definition.is_some() {
        return Err(invalid(
            "the run follows a definition: its steps are run by the engine",
        ));
    }
    let mut state = RunState::parse(&run.state).map_err(invalid)?;
    let mut write = RunWrite::default();
    let now_us = now.unix_micros();
    let mut replayed = false;
    let mut retry_after_ms = None;
    let mut s = state.steps.get(name).cloned().unwrap_or(StepState {
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
    });
    let finished = matches!(s.status, StepStatus::Succeeded | StepStatus::Failed);
    if run.status.is_terminal() && !finished {
        return Err(invalid(format!("the run is {}", run.status.as_str())));
    }
    let heartbeat_expired = |s: &StepState| {
        s.heartbeat_window_ms.is_some_and(|w| {
            let beat = s.heartbeat_at.or(s.started_at).unwrap_or(0);
            now_us
                >= beat.saturating_add(
                    i64::try_from(w)
                        .unwrap_or(i64::MAX / 1000)
                        .saturating_mul(1000),
                )
        })
    };
    match call {
        _ if finished => replayed = true,
        StepCall::Start { heartbeat_ms } => match s.status {
            StepStatus::Blocked => {
                return Err(invalid(format!(
                    "step `{name}` is blocked in the dead-letter queue"
                )));
            }
            StepStatus::Running if s.heartbeat_window_ms.is_some() && !heartbeat_expired(&s) => {
                return Err(CommandError {
                    reason: ReasonCode::RunStepInFlight,
                    message: format!(
                        "step `{name}` attempt {} is in flight and heartbeating",
                        s.attempt
                    ),
                });
            }
            _ => {
                if s.status == StepStatus::Running {
                    let reason = if heartbeat_expired(&s) {
                        ReasonCode::StepHeartbeatTimeout.as_str()
                    } else {
                        "ATTEMPT_ORPHANED"
                    };
                    let kind = if heartbeat_expired(&s) {
                        "failed"
                    } else {
                        "attempt_orphaned"
                    };
                    let reason_field = if kind == "failed" { Some(reason) } else { None };
                    write.journal.push(entry(
                        Some(name),
                        s.attempt,
                        kind,
                        reason_field,
                        json!({"class": "timeout"}),
                        now,
                    ));
                }
                s.attempt += 1;
                s.status = StepStatus::Running;
                s.started_at = Some(now_us);
                s.heartbeat_at = Some(now_us);
                s.first_started_at.get_or_insert(now_us);
                s.heartbeat_window_ms = heartbeat_ms;
                s.due_at = None;
                write.journal.push(entry(
                    Some(name),
                    s.attempt,
                    "started",
                    None,
                    json!({"idempotency_key": step_key(&run.id, name)}),
                    now,
                ));
            }
        },
        StepCall::Heartbeat => {
            if s.status != StepStatus::Running {
                return Err(invalid(format!("step `{name}` is not running")));
            }
            s.heartbeat_at = Some(now_us);
        }
        StepCall::Complete { output } => {
            if s.status != StepStatus::Running {
                // Completing without a start records the one attempt.
                s.attempt += 1;
                s.started_at = Some(now_us);
                write.journal.push(entry(
                    Some(name),
                    s.attempt,
                    "started",
                    None,
                    json!({"idempotency_key": step_key(&run.id, name)}),
                    now,
                ));
            }
            s.status = StepStatus::Succeeded;
            s.completed_at = Some(now_us);
            write.journal.push(entry(
                Some(name),
                s.attempt,
                "completed",
                None,
                json!({"output": output}),
                now,
            ));
            s.output = Some(output);
            state.succeeded_order.push(name.to_owned());
        }
        StepCall::Fail {
            class,
            message,
            exit_code,
            summary,
        } => {
            if s.status != StepStatus::Running {
                return Err(invalid(format!("step `{name}` is not running")));
            }
            let reason = match class {
                FailureClass::Policy => ReasonCode::AuthzDenied.as_str(),
                FailureClass::Timeout => ReasonCode::StepTimeout.as_str(),
                _ => ReasonCode::StepFailed.as_str(),
            };
            let error = StepError {
                class,
                reason: reason.to_owned(),
                message: message.clone(),
                exit_code,
            };
            match decide(&code_retry(), class, s.attempt, exit_code, random) {
                RetryDecision::RetryAfter(delay) => {
                    s.status = StepStatus::RetryWait;
                    s.due_at = Some(
                        now_us
                            .saturating_add(i64::try_from(delay).unwrap_or(0).saturating_mul(1000)),
                    );
                    retry_after_ms = Some(delay);
                    write.journal.push(entry(
                        Some(name),
                        s.attempt,
                        "failed",
                        Some(reason),
                        json!({"class": class, "message": message, "retry_in_ms": delay}),
                        now,
                    ));
                }
                RetryDecision::DeadLetter => {
                    let id = DeadLetterId::generate();
                    s.status = StepStatus::Blocked;
                    s.dead_letter = Some(id.to_string());
                    write.dead_letters.push(cordon_core::DeadLetter {
                        id,
                        tenant_id: run.tenant_id,
                        run_id: run.id,
                        session_id: run.session_id,
                        step: name.to_owned(),
                        attempt: s.attempt,
                        reason: reason.to_owned(),
                        summary: summary.unwrap_or(json!({"message": message})).to_string(),
                        status: DeadLetterStatus::Open,
                        created_at: now,
                        resolved_at: None,
                        resolved_by: None,
                    });
                    write.journal.push(entry(
                        Some(name),
                        s.attempt,
                        "blocked",
                        Some(reason),
                        json!({"class": class, "message": message}),
                        now,
                    ));
                    run.status = RunStatus::Blocked;
                    run.reason = Some(reason.to_owned());
                }
                RetryDecision::GiveUp => {
                    s.status = StepStatus::Failed;
                    s.completed_at = Some(now_us);
                    write.journal.push(entry(
                        Some(name),
                        s.attempt,
                        "failed",
                        Some(reason),
                        json!({"class": class, "message": message, "final": true}),
                        now,
                    ));
                }
            }
            s.error = Some(error);
        }
    }
    let reply = StepReply {
        step: name.to_owned(),
        status: s.status,
        attempt: s.attempt,
        idempotency_key: step_key(&run.id, name),
        replayed,
        output: s.output.clone(),
        error: s.error.clone(),
        retry_after_ms,
        dead_letter: s.dead_letter.clone(),
    };
    if !replayed {
        if s.status != StepStatus::Blocked && run.status == RunStatus::Blocked {
            run.status = RunStatus::Running;
            run.reason = None;
        }
        state.steps.insert(name.to_owned(), s);
        run.state = state.to_text();
    }
    Ok((write, reply))
}
