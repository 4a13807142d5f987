//! The definition model: what a parsed, validated workflow definition holds. Parsing
//! and validation live in `definition.rs`; this file is only the shapes, which the
//! engine, the API and the CLI share. Durations are milliseconds once parsed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a failure is classified; retry policies are set per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// An attempt ran out of time: start-to-close, heartbeat, event or approval timeout.
    Timeout,
    /// The world is busy: HTTP 429/503, a sandbox resource limit (OOM, pids, disk).
    Capacity,
    /// Authorization or egress refused it. Never retried: it goes to the dead-letter queue.
    Policy,
    /// Anything else: a non-zero exit, another error status, a failure reported by code.
    Error,
}

impl FailureClass {
    pub const ALL: [FailureClass; 4] = [
        FailureClass::Timeout,
        FailureClass::Capacity,
        FailureClass::Policy,
        FailureClass::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Capacity => "capacity",
            FailureClass::Policy => "policy",
            FailureClass::Error => "error",
        }
    }
}

/// Retries of one failure class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    /// Each retry waits this many times longer than the one before.
    pub backoff: f64,
    pub max_interval_ms: u64,
    /// Fraction (0..=1) of each interval that is randomised, to spread retries.
    pub jitter: f64,
}

/// A step's retry policies, one per class (policy failures never retry), and exit codes
/// that no retry can fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicies {
    pub timeout: RetryPolicy,
    pub capacity: RetryPolicy,
    pub error: RetryPolicy,
    /// An exec step that exits with one of these fails at once (class error).
    pub non_retryable_exit_codes: Vec<i32>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepAction {
    /// Runs `argv` in the run's session sandbox. Output: `{exit_code, stdout, stderr}`.
    Exec {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// One HTTP request through the session's egress gateway. Output: `{status, headers,
    /// body}` (body as text, or JSON when it parses).
    Http {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Snapshots the session's workspace. Output: `{version}`.
    Checkpoint {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    /// Restores a version (default: the session's latest) into the workspace.
    Restore {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Waits; a durable timer that survives restarts.
    Sleep { duration_ms: u64 },
    /// Waits for an event sent to the run by name. Output: the event's payload.
    WaitForEvent {
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Waits for a person's decision through the approve API. Output: `{approved_by,
    /// comment}`; a rejection fails the step (not retried).
    Approval {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Moves the session along its lifecycle: `activate`, `checkpoint`, `suspend`,
    /// `resume` or `close`.
    Transition { action: String },
    /// Promotes the session's latest version (or chosen paths of it) to a signed
    /// release. Output: `{release}`.
    Promote {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        paths: Vec<String>,
    },
    /// Does nothing and succeeds with `output` (or null): for tests, benchmarks and
    /// joins of parallel branches.
    Noop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
    },
}

impl StepAction {
    pub fn kind(&self) -> &'static str {
        match self {
            StepAction::Exec { .. } => "exec",
            StepAction::Http { .. } => "http",
            StepAction::Checkpoint { .. } => "checkpoint",
            StepAction::Restore { .. } => "restore",
            StepAction::Sleep { .. } => "sleep",
            StepAction::WaitForEvent { .. } => "wait_for_event",
            StepAction::Approval { .. } => "approval",
            StepAction::Transition { .. } => "transition",
            StepAction::Promote { .. } => "promote",
            StepAction::Noop { .. } => "noop",
        }
    }

    /// Whether the step runs on the runner (a tool call) rather than inside the engine
    /// (timers, events, approvals, no-ops).
    pub fn is_external(&self) -> bool {
        !matches!(
            self,
            StepAction::Sleep { .. }
                | StepAction::WaitForEvent { .. }
                | StepAction::Approval { .. }
                | StepAction::Noop { .. }
        )
    }

    /// Whether the step needs the run's session.
    pub fn needs_session(&self) -> bool {
        matches!(
            self,
            StepAction::Exec { .. }
                | StepAction::Http { .. }
                | StepAction::Checkpoint { .. }
                | StepAction::Restore { .. }
                | StepAction::Transition { .. }
                | StepAction::Promote { .. }
        )
    }
}

/// One step of a definition (or one compensation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    #[serde(flatten)]
    pub action: StepAction,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// A compensation (by name) to run if the run fails or is cancelled after this step
    /// succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<String>,
    pub retry: RetryPolicies,
    /// Per-attempt start-to-close timeout.
    pub timeout_ms: u64,
    /// Over all attempts, from the first schedule to the last close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_close_ms: Option<u64>,
    /// A running attempt must heartbeat at least this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// The session a run creates for itself when started without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTemplate {
    pub workload_class: String,
    pub environment: String,
}

/// A parsed, validated definition: every default filled in, so two documents that mean
/// the same have the same canonical JSON and digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run deadline, from the run's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    pub session: SessionTemplate,
    /// In document order; `needs` gives the order that counts.
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<Step>,
}

impl Definition {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn compensation(&self, name: &str) -> Option<&Step> {
        self.compensations.iter().find(|s| s.name == name)
    }

    /// Whether any step or compensation needs a session.
    pub fn needs_session(&self) -> bool {
        self.steps
            .iter()
            .chain(&self.compensations)
            .any(|s| s.action.needs_session())
    }
}
