//! Cordon's domain vocabulary, shared by every other crate: typed ids, the session
//! lifecycle state machine, roles, the records the store keeps, and the registry of
//! stable reason codes. This crate performs no I/O and knows nothing of HTTP or SQL.

pub mod artifact;
pub mod egress;
pub mod id;
pub mod lifecycle;
pub mod model;
pub mod reason;
pub mod telemetry;
pub mod workflow;

pub use artifact::{
    EvidenceCheckpoint, EvidenceEntry, EvidenceField, EvidenceFilter, NewEvidenceEntry, Release,
    VersionStats, WorkspaceVersion,
};
pub use egress::{
    CredentialLease, EgressDecision, EgressDecisionFilter, EgressPolicyVersion, SecretRecord,
};
pub use id::{
    CredentialLeaseId, DeadLetterId, EventSeq, IdParseError, KeyId, ReleaseId, RunId, ScheduleId,
    SecretId, SessionId, TenantId, VersionId,
};
pub use lifecycle::{Phase, SessionAction, TransitionError};
pub use model::{
    ApiKey, Labels, Lease, NewSession, Role, Session, SessionEvent, SessionFilter, Tenant,
    Timestamp,
};
pub use reason::ReasonCode;
pub use telemetry::{Fact, FactFilter, FactKind, SessionOutcome, StoredBytes};
pub use workflow::{
    DeadLetter, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run, RunFilter, RunStatus,
    Schedule, WorkflowDefinition,
};
