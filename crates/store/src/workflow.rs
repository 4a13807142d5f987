//! Storage for durable workflows. A supertrait of [`crate::Store`], kept apart so the
//! backends implement it in files of their own.
//!
//! The run row is the single place a run's state lives; [`WorkflowStore::update_run`]
//! is a read-modify-write of that row under a row lock, with the journal entries and
//! dead-letter changes the change produced written in the same transaction. Every writer
//! (the engine holding the run's lease, the API's signals, the durable-step API) goes
//! through it, so none can overwrite another's change.

use async_trait::async_trait;
use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run,
    RunFilter, RunId, Schedule, ScheduleId, TenantId, Timestamp, WorkflowDefinition,
};

use crate::{Result, StoreError};

/// What one change of a run writes besides the row itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunWrite {
    /// Appended to the run's journal in order.
    pub journal: Vec<NewJournalEntry>,
    /// New dead-letter entries (their `run_id` and `tenant_id` must be the run's).
    pub dead_letters: Vec<DeadLetter>,
    /// Dead-letter entries of this run to resolve: (id, new status, who). An entry that
    /// is not open is left as it is.
    pub resolve_dead_letters: Vec<(DeadLetterId, DeadLetterStatus, String)>,
}

/// A change of a run: called with the current row (locked) and may change any field
/// but `id`, `tenant_id`, `created_at` and `journal_seq` (the store keeps those). An
/// `Err` writes nothing and is returned as it is. The store sets `updated_at`.
pub type RunChange = Box<dyn FnOnce(&mut Run) -> Result<RunWrite> + Send>;

/// The result of creating a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCreated {
    /// The run is new; its first journal entries were written with it.
    New(Run),
    /// The tenant already has a run with this idempotency key: that run, unchanged.
    Existing(Run),
}

#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Stores a definition, or returns the one already stored under the same
    /// (tenant, digest).
    async fn put_workflow_definition(
        &self,
        definition: &WorkflowDefinition,
    ) -> Result<WorkflowDefinition>;
    async fn get_workflow_definition(
        &self,
        tenant_id: TenantId,
        digest: &str,
    ) -> Result<Option<WorkflowDefinition>>;
    /// The tenant's definitions, newest first.
    async fn list_workflow_definitions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<WorkflowDefinition>>;

    /// Creates a run with its first journal entries (seq 1..), atomically. With an
    /// idempotency key already used in the tenant, returns that run and writes nothing.
    /// A new run with a `lease_holder` starts at lease token 1, otherwise 0.
    async fn create_run(&self, run: &NewRun, journal: &[NewJournalEntry]) -> Result<RunCreated>;
    async fn get_run(&self, tenant_id: TenantId, id: RunId) -> Result<Option<Run>>;
    /// Runs of one tenant matching `filter`, in id order, at most `limit`.
    async fn list_runs(
        &self,
        tenant_id: TenantId,
        filter: &RunFilter,
        limit: u32,
    ) -> Result<Vec<Run>>;
    /// Applies `change` to the run under a row lock and writes the row, the journal
    /// entries (numbered on from `journal_seq`) and the dead-letter changes in one
    /// transaction. Returns the run as written and the entries with their numbers.
    /// `NotFound` if the tenant has no such run.
    async fn update_run(
        &self,
        tenant_id: TenantId,
        id: RunId,
        change: RunChange,
    ) -> Result<(Run, Vec<JournalEntry>)>;
    /// Claims up to `limit` unfinished runs that are due (`next_due_at <= now`) and
    /// whose lease is free, expired or already `node`'s; also held runs whose lease
    /// expired, whenever they are due (a dead worker's runs, whose attempts in flight
    /// must run again), and with `include_own` every run `node` holds (a restarted node
    /// takes its runs back at once). Sets holder `node`, expiry `lease_until`, and
    /// increments the token when the holder changes or the lease had expired. Oldest due
    /// first. On PostgreSQL rows locked by another claimer are skipped (`FOR UPDATE SKIP
    /// LOCKED`).
    async fn claim_runs(
        &self,
        node: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        include_own: bool,
    ) -> Result<Vec<Run>>;
    /// The run's journal entries with `seq > after`, in order, at most `limit`.
    async fn run_journal(
        &self,
        tenant_id: TenantId,
        id: RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>>;

    async fn get_dead_letter(
        &self,
        tenant_id: TenantId,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetter>>;
    /// The tenant's dead-letter entries, in id order after `after`, optionally of one
    /// status and one run.
    async fn list_dead_letters(
        &self,
        tenant_id: TenantId,
        status: Option<DeadLetterStatus>,
        run_id: Option<RunId>,
        after: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>>;

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()>;
    async fn list_schedules(&self, tenant_id: TenantId) -> Result<Vec<Schedule>>;
    /// `NotFound` if the tenant has no such schedule.
    async fn delete_schedule(&self, tenant_id: TenantId, id: ScheduleId) -> Result<()>;
    /// Schedules of every tenant with `next_fire_at <= now`, soonest first.
    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<Schedule>>;
    /// Moves a schedule's `next_fire_at` from `from` to `to`, only if it is still
    /// `from` (compare-and-set, so two nodes never both fire one instant). Returns
    /// whether it moved; a deleted schedule gives `false`.
    async fn advance_schedule(
        &self,
        id: ScheduleId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<bool>;
}

/// For a [`RunChange`] that finds the run in a state it cannot change: nothing is
/// written and the message reaches the caller.
pub fn run_conflict(message: impl Into<String>) -> StoreError {
    StoreError::RunConflict(message.into())
}
