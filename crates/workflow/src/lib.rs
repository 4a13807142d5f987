//! Cordon's workflow runtime. Definitions are parsed and validated here (`definition`),
//! with their retry policies (`retry`), cron schedules (`cron`) and templates
//! (`template`); the engine claims runs from the store, asks a [`StepRunner`] (composed
//! by `control`) to run their tool steps, and journals every outcome before it is acted
//! on. It knows neither HTTP nor the sandbox, egress or artifacts runtimes.

pub mod commands;
pub mod cron;
pub mod definition;
pub mod engine;
pub mod model;
pub mod retry;
pub mod state;
pub mod template;

pub use engine::{
    Engine, EngineError, EngineOptions, Heartbeat, StartRun, StepRequest, StepRunner,
};
pub use model::{
    Definition, FailureClass, RetryPolicies, RetryPolicy, SessionTemplate, Step, StepAction,
};
pub use state::{Outcome, RunState, StepError, StepStatus};
