//! Records of durable workflows as the store keeps them: definitions (stored by content
//! digest), runs (one row each, the engine's state as opaque JSON text plus the columns
//! the scheduler queries), the append-only journal, the dead-letter queue and cron
//! schedules. The meaning of `state`, `detail` and `summary` belongs to the workflow
//! crate; the store only keeps the text.

use serde::{Deserialize, Serialize};

use crate::id::{DeadLetterId, RunId, ScheduleId, SessionId, TenantId};
use crate::model::Timestamp;

/// A stored workflow definition. The same document stored twice is one definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowDefinition {
    pub tenant_id: TenantId,
    /// `sha256:<64 hex>` of `document`.
    pub digest: String,
    pub name: String,
    /// The definition as canonical JSON.
    pub document: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum RunStatus {
    /// Steps are ready or running.
    Running,
    /// Nothing can run until a timer, an event or an approval.
    Waiting,
    /// A step was refused by policy; the run waits for its dead-letter entry to be
    /// redriven or discarded.
    Blocked,
    /// An operator paused it: no new attempt starts until it is resumed.
    Paused,
    /// It failed or was cancelled, and its compensations are running.
    Compensating,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Blocked,
        RunStatus::Paused,
        RunStatus::Compensating,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Blocked => "blocked",
            RunStatus::Paused => "paused",
            RunStatus::Compensating => "compensating",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// A finished run never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a run status"))
    }
}

/// A run as the store keeps it. Only the engine that holds the run's lease (holder and
/// token) runs its steps; every other writer (the API's signals, the durable-step API)
/// changes it through the store's read-modify-write, which the lease does not block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: RunId,
    pub tenant_id: TenantId,
    /// The definition's digest; `None` for a run driven by agent code through the
    /// durable-step API.
    pub definition: Option<String>,
    /// The definition's name, or the name the agent gave its run.
    pub name: String,
    pub session_id: Option<SessionId>,
    pub status: RunStatus,
    /// Input as JSON text.
    pub input: String,
    /// The engine's state as JSON text (the journal folded).
    pub state: String,
    /// Output as JSON text, once it succeeded.
    pub output: Option<String>,
    /// The reason code of the failure, cancellation or block.
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    /// The key id (or `cron:<schedule>`) that started it; steps act as this principal.
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deadline: Option<Timestamp>,
    /// When the engine must look at the run next; `None` while it waits only for
    /// something from outside (an event, an approval, a redrive) or is finished.
    pub next_due_at: Option<Timestamp>,
    pub lease_holder: Option<String>,
    /// Grows each time the run's lease changes holder: the fencing token.
    pub lease_token: i64,
    pub lease_expires_at: Option<Timestamp>,
    /// Sequence number of the run's last journal entry (0 before the first).
    pub journal_seq: u64,
}

/// A run to create. `lease_holder`/`lease_expires_at` let the creating node claim it at
/// once (token 1) instead of waiting for a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub definition: Option<String>,
    pub name: String,
    pub session_id: Option<SessionId>,
    pub status: RunStatus,
    pub input: String,
    pub state: String,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub deadline: Option<Timestamp>,
    pub next_due_at: Option<Timestamp>,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
}

/// Which runs to list. All set fields must match; `after` is an exclusive cursor in id
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub name: Option<String>,
    pub definition: Option<String>,
    pub session_id: Option<SessionId>,
    pub after: Option<RunId>,
}

/// A journal entry to append; the store gives it the run's next sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJournalEntry {
    /// The step, or `None` for an event of the run itself.
    pub step: Option<String>,
    pub attempt: u32,
    /// `run_started`, `scheduled`, `started`, `heartbeat`, `completed`, `failed`,
    /// `retry_scheduled`, `blocked`, `compensating`, `compensated`, `signal`, ...
    pub kind: String,
    pub reason: Option<String>,
    /// JSON text.
    pub detail: String,
    pub at: Timestamp,
}

/// One stored journal entry. The journal is append-only (triggers on both backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub run_id: RunId,
    /// From 1, without gaps, per run.
    pub seq: u64,
    pub step: Option<String>,
    pub attempt: u32,
    pub kind: String,
    pub reason: Option<String>,
    pub detail: String,
    pub at: Timestamp,
}

/// What became of a dead-letter entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum DeadLetterStatus {
    Open,
    Redriven,
    Discarded,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Open => "open",
            DeadLetterStatus::Redriven => "redriven",
            DeadLetterStatus::Discarded => "discarded",
        }
    }
}

impl std::str::FromStr for DeadLetterStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "open" => Ok(DeadLetterStatus::Open),
            "redriven" => Ok(DeadLetterStatus::Redriven),
            "discarded" => Ok(DeadLetterStatus::Discarded),
            other => Err(format!("`{other}` is not a dead-letter status")),
        }
    }
}

/// A policy-blocked step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    pub tenant_id: TenantId,
    pub run_id: RunId,
    pub session_id: Option<SessionId>,
    pub step: String,
    pub attempt: u32,
    /// The denial's reason code.
    pub reason: String,
    /// What was refused, as JSON text (method, host, path, argv, the denying policies).
    pub summary: String,
    pub status: DeadLetterStatus,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
}

/// A cron schedule that starts runs of a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: ScheduleId,
    pub tenant_id: TenantId,
    /// The definition's digest.
    pub definition: String,
    /// Five fields, UTC: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// Input for every run, as JSON text.
    pub input: String,
    pub next_fire_at: Timestamp,
    pub created_by: String,
    pub created_at: Timestamp,
}
