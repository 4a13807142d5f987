//! Telemetry facts: what the SRE metrics, cost accounting and the weekly report are
//! computed from. A fact is recorded where the thing happened (a session closed, a tool
//! operation ended, a policy blocked an action, a sandbox's counters were read) and
//! never changed; the metrics are pure functions of the facts in a window
//! (docs/metrics.md gives the formulas).

use std::fmt;
use std::str::FromStr;

use crate::{RunId, SessionId, TenantId, Timestamp};

/// How a session ended. Set when it closes: by the caller, or by policy when the
/// session times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionOutcome {
    Succeeded,
    Failed,
    Abandoned,
}

impl SessionOutcome {
    pub const ALL: [SessionOutcome; 3] = [
        SessionOutcome::Succeeded,
        SessionOutcome::Failed,
        SessionOutcome::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionOutcome::Succeeded => "succeeded",
            SessionOutcome::Failed => "failed",
            SessionOutcome::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for SessionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown session outcome `{s}` (succeeded, failed, abandoned)"))
    }
}

/// What a fact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKind {
    /// A session closed: `outcome` is its [`SessionOutcome`].
    SessionClosed,
    /// A tool operation ended: `subject` is `exec` (an exec through the API, keyed by
    /// session) or `step` (a workflow step attempt, keyed by run); `outcome` is `ok`
    /// or `failed`, `reason` the failure's code.
    Tool,
    /// A policy blocked an action: `subject` is the destination (`host:port`) or the
    /// step, `reason` the code, `reference` what was blocked (`egress:<session>@<micros>`,
    /// `dlq:<id>`), `outcome` the source (`egress` or `step`).
    Block,
    /// A block reviewed: `reference` names the block, `outcome` is `false_positive`
    /// (an operator said so) or `redriven` (a dead letter redriven; it counts as a
    /// false positive once the step then succeeds).
    BlockReview,
    /// A workspace restore: `value` is its latency in seconds.
    Restore,
    /// Metered usage of a session's sandbox since the previous sample: `value` CPU
    /// seconds, `value2` memory GiB-seconds, `bytes` egress bytes (sent + received),
    /// `count` egress requests decided.
    Usage,
    /// A workflow run ended: `outcome` is its status, `subject` the workflow's name.
    RunFinished,
}

impl FactKind {
    pub const ALL: [FactKind; 7] = [
        FactKind::SessionClosed,
        FactKind::Tool,
        FactKind::Block,
        FactKind::BlockReview,
        FactKind::Restore,
        FactKind::Usage,
        FactKind::RunFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FactKind::SessionClosed => "session_closed",
            FactKind::Tool => "tool",
            FactKind::Block => "block",
            FactKind::BlockReview => "block_review",
            FactKind::Restore => "restore",
            FactKind::Usage => "usage",
            FactKind::RunFinished => "run_finished",
        }
    }
}

impl fmt::Display for FactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FactKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FactKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown fact kind `{s}`"))
    }
}

/// One telemetry fact. Which fields mean what depends on `kind` (see [`FactKind`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// Assigned by the store, increasing; 0 before it is stored.
    pub seq: i64,
    pub tenant_id: TenantId,
    pub kind: FactKind,
    pub at: Timestamp,
    pub session_id: Option<SessionId>,
    pub run_id: Option<RunId>,
    /// The session's workload class (or the run's session's), when there is one.
    pub workload_class: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub subject: Option<String>,
    pub reference: Option<String>,
    pub value: f64,
    pub value2: f64,
    pub bytes: i64,
    pub count: i64,
}

impl Fact {
    /// A fact of `kind` with every optional field empty.
    pub fn new(tenant_id: TenantId, kind: FactKind, at: Timestamp) -> Fact {
        Fact {
            seq: 0,
            tenant_id,
            kind,
            at,
            session_id: None,
            run_id: None,
            workload_class: None,
            outcome: None,
            reason: None,
            subject: None,
            reference: None,
            value: 0.0,
            value2: 0.0,
            bytes: 0,
            count: 0,
        }
    }
}

/// Which facts to list. All conditions must hold; `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactFilter {
    /// `None`: every tenant (the deployment's own metrics).
    pub tenant_id: Option<TenantId>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Empty: every kind.
    pub kinds: Vec<FactKind>,
    /// Empty: any run (or none).
    pub run_ids: Vec<RunId>,
    /// At most this many facts, oldest first.
    pub limit: Option<u32>,
    /// Only facts with `seq` greater than this (the cursor).
    pub after: Option<i64>,
}

/// A workspace version's stored bytes over time, for artifact GiB-days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub workload_class: String,
    /// The run the session belongs to (its `cordon.run` label), if any.
    pub run_id: Option<RunId>,
    /// Compressed bytes the version added to the blob store.
    pub bytes: u64,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}
