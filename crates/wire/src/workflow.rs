//! Workflows: definitions, runs and their journals, durable steps, the dead-letter
//! queue and cron schedules.

use cordon_core::{DeadLetterStatus, RunStatus, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/workflows`: a definition as a JSON object, or as YAML (or JSON) text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutDefinitionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// The definition as YAML or JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A stored definition (its digest names it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionBody {
    #[schema(example = "sha256:4f1c...")]
    pub digest: String,
    pub name: String,
    /// The definition with every default filled in.
    #[schema(value_type = Object)]
    pub definition: Value,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionList {
    pub items: Vec<DefinitionBody>,
}

/// `POST /v1/runs`. With `definition` (a digest) or `workflow` (the newest definition of
/// that name) the engine runs its steps; with only `name` the run is driven by agent
/// code through `POST /v1/runs/{id}/steps/{step}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Run in this existing session; without it, a run whose steps need a session
    /// creates one (closed when the run ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Overrides the definition's deadline: `30s`, `5m`, `2h`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepErrorBody {
    /// `timeout`, `capacity`, `policy` or `error`.
    pub class: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One step (or compensation) of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepBody {
    pub name: String,
    /// `pending`, `running`, `waiting`, `retry_wait`, `blocked`, `succeeded`, `failed`,
    /// `skipped`.
    pub status: String,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// For a compensation: the step it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<String>,
}

/// A run: its status, its steps, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunBody {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub status: RunStatus,
    /// The reason code of a failure, cancellation or block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub paused: bool,
    pub steps: Vec<StepBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<StepBody>,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deadline: Option<Timestamp>,
    /// The run's last journal entry.
    pub journal_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunBody>,
    /// Cursor for the next page, if there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JournalEntryBody {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub attempt: u32,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JournalList {
    pub items: Vec<JournalEntryBody>,
}

/// `POST /v1/runs/{id}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/runs/{id}/events`: an event for `wait_for_event` steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEventRequest {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// `POST /v1/runs/{id}/approve`: a decision on a waiting approval step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub step: String,
    #[serde(default = "yes")]
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/runs/{id}/steps/{step}`: one call of the durable-step API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepCallRequest {
    /// `start`, `heartbeat`, `complete` or `fail`.
    pub action: String,
    /// `complete`: the step's result, recorded once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// `start`: the attempt must heartbeat at least this often (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<String>,
    /// `fail`: `timeout`, `capacity`, `policy` or `error` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `fail` with class `policy`: what was refused, for the dead-letter entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
}

/// The answer of the durable-step API: the step as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepReplyBody {
    pub step: String,
    pub status: String,
    pub attempt: u32,
    /// The same across attempts: pass it on to the tools the step calls.
    pub idempotency_key: String,
    /// True when this is an outcome recorded earlier: nothing new was written.
    pub replayed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// `POST /v1/runs/{id}/finish`: ends a run driven by agent code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRunRequest {
    /// `succeeded` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
}

/// A policy-blocked step waiting for an operator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterBody {
    pub id: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub step: String,
    pub attempt: u32,
    pub reason: String,
    /// What was refused.
    #[schema(value_type = Object)]
    pub summary: Value,
    pub status: DeadLetterStatus,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScheduleRequest {
    /// A definition digest, or a workflow name (its newest definition).
    pub workflow: String,
    /// Five fields, UTC (`*/5 * * * *`), or `@hourly`, `@daily`, ...
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleBody {
    pub id: String,
    pub definition: String,
    pub cron: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = String, format = DateTime)]
    pub next_fire_at: Timestamp,
    pub created_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleBody>,
}
