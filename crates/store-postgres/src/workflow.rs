//! Workflow storage (definitions, runs, journal, dead letters, schedules).

use async_trait::async_trait;
use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run,
    RunFilter, RunId, Schedule, ScheduleId, TenantId, Timestamp, WorkflowDefinition,
};
use cordon_store::{Result, RunChange, RunCreated, StoreError, WorkflowStore};

use crate::PostgresStore;

fn missing() -> StoreError {
    StoreError::Backend("workflow storage is not implemented yet".to_owned())
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn put_workflow_definition(&self, _: &WorkflowDefinition) -> Result<WorkflowDefinition> {
        Err(missing())
    }
    async fn get_workflow_definition(
        &self,
        _: TenantId,
        _: &str,
    ) -> Result<Option<WorkflowDefinition>> {
        Err(missing())
    }
    async fn list_workflow_definitions(&self, _: TenantId) -> Result<Vec<WorkflowDefinition>> {
        Err(missing())
    }
    async fn create_run(&self, _: &NewRun, _: &[NewJournalEntry]) -> Result<RunCreated> {
        Err(missing())
    }
    async fn get_run(&self, _: TenantId, _: RunId) -> Result<Option<Run>> {
        Err(missing())
    }
    async fn list_runs(&self, _: TenantId, _: &RunFilter, _: u32) -> Result<Vec<Run>> {
        Err(missing())
    }
    async fn update_run(
        &self,
        _: TenantId,
        _: RunId,
        _: RunChange,
    ) -> Result<(Run, Vec<JournalEntry>)> {
        Err(missing())
    }
    async fn claim_runs(&self, _: &str, _: Timestamp, _: Timestamp, _: u32) -> Result<Vec<Run>> {
        Err(missing())
    }
    async fn run_journal(
        &self,
        _: TenantId,
        _: RunId,
        _: u64,
        _: u32,
    ) -> Result<Vec<JournalEntry>> {
        Err(missing())
    }
    async fn get_dead_letter(&self, _: TenantId, _: DeadLetterId) -> Result<Option<DeadLetter>> {
        Err(missing())
    }
    async fn list_dead_letters(
        &self,
        _: TenantId,
        _: Option<DeadLetterStatus>,
        _: Option<RunId>,
        _: Option<DeadLetterId>,
        _: u32,
    ) -> Result<Vec<DeadLetter>> {
        Err(missing())
    }
    async fn create_schedule(&self, _: &Schedule) -> Result<()> {
        Err(missing())
    }
    async fn list_schedules(&self, _: TenantId) -> Result<Vec<Schedule>> {
        Err(missing())
    }
    async fn delete_schedule(&self, _: TenantId, _: ScheduleId) -> Result<()> {
        Err(missing())
    }
    async fn due_schedules(&self, _: Timestamp, _: u32) -> Result<Vec<Schedule>> {
        Err(missing())
    }
    async fn advance_schedule(&self, _: ScheduleId, _: Timestamp, _: Timestamp) -> Result<bool> {
        Err(missing())
    }
}
