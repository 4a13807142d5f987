//! The storage interface every Cordon backend implements. Callers (control, api)
//! hold an `Arc<dyn Store>` and never see SQL; backends (`cordon-store-sqlite`,
//! `cordon-store-postgres`) never see HTTP or policy. The conformance suite in
//! `cordon-test-support` pins the behaviour both must share.
//!
//! Every method that returns `Ok` after a write has made that write durable.

use std::time::Duration;

use async_trait::async_trait;
use cordon_core::{
    ApiKey, CredentialLease, CredentialLeaseId, EgressDecision, EgressDecisionFilter,
    EgressPolicyVersion, EventSeq, EvidenceCheckpoint, EvidenceEntry, EvidenceFilter, Fact,
    FactFilter, KeyId, Lease, NewEvidenceEntry, NewSession, Phase, ReasonCode, Release, ReleaseId,
    SecretId, SecretRecord, Session, SessionEvent, SessionFilter, SessionId, SessionOutcome,
    StoredBytes, Tenant, TenantId, Timestamp, VersionId, WorkspaceVersion,
};

pub mod migrations;
pub mod workflow;

pub use workflow::{RunChange, RunCreated, RunWrite, WorkflowStore, run_conflict};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("a tenant named `{0}` already exists")]
    TenantNameTaken(String),
    #[error("a secret named `{0}` already exists")]
    SecretNameTaken(String),
    /// The lease is revoked or expired, so it cannot be renewed.
    #[error("the lease is revoked or expired")]
    LeaseNotLive,
    /// The version's parent is not the session's latest version.
    #[error("the session's latest version is {}, not the new version's parent", .head.as_deref().unwrap_or("none"))]
    VersionConflict { head: Option<String> },
    #[error("a release named `{0}` already exists")]
    ReleaseNameTaken(String),
    /// The write's fencing token is older than the lease's current token.
    #[error("fencing token {presented} is stale: the session's lease is at token {current}")]
    LeaseFenced { presented: i64, current: i64 },
    /// The session was not in the expected phase when the write landed.
    #[error("the session is {current}, not {expected}")]
    PhaseChanged { expected: Phase, current: Phase },
    /// A run change found the run in a state it cannot change (the message says why).
    #[error("{0}")]
    RunConflict(String),
    /// The backend cannot be reached or gave up for a transient reason.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported: a bug or corrupt data, never the caller's fault.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn reason(&self) -> ReasonCode {
        match self {
            StoreError::NotFound => ReasonCode::NotFound,
            StoreError::TenantNameTaken(_) => ReasonCode::TenantNameTaken,
            StoreError::SecretNameTaken(_) => ReasonCode::SecretNameTaken,
            StoreError::LeaseNotLive => ReasonCode::LeaseNotRenewable,
            StoreError::VersionConflict { .. } => ReasonCode::VersionConflict,
            StoreError::ReleaseNameTaken(_) => ReasonCode::ReleaseNameTaken,
            StoreError::LeaseFenced { .. } => ReasonCode::SessionLeaseFenced,
            StoreError::PhaseChanged { .. } => ReasonCode::SessionConflict,
            StoreError::RunConflict(_) => ReasonCode::RunInvalidState,
            StoreError::Unavailable(_) => ReasonCode::StoreUnavailable,
            StoreError::Backend(_) => ReasonCode::Internal,
        }
    }
}

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The result of asking for a session's write lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease now. The token is unchanged if it already held it,
    /// one higher than before if it took the lease over.
    Acquired(Lease),
    /// Another holder's lease has not expired.
    Held(Lease),
}

/// One lifecycle step, written only if the session is still in `from` and `fence` is
/// still the current lease token, checked in the same statement as the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub from: Phase,
    pub to: Phase,
    pub fence: i64,
    pub actor: String,
    pub reason: Option<String>,
    pub at: Timestamp,
    /// Set on the session when it closes (`None` keeps what it has).
    pub outcome: Option<SessionOutcome>,
}

/// Identifies one idempotent request: who sent it and under which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    pub tenant_id: TenantId,
    pub principal: KeyId,
    pub key: String,
}

/// A response recorded for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First time: process it, then `idempotency_complete`.
    Proceed,
    /// An earlier attempt claimed the key and never finished (it crashed or hung past
    /// `stale_after`): process it, but that attempt may already have taken effect.
    TakeOver,
    /// Seen and finished: send the recorded response again.
    Replay(RecordedResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still being processed.
    InFlight,
}

#[async_trait]
pub trait Store: WorkflowStore + Send + Sync + std::fmt::Debug + 'static {
    fn backend(&self) -> Backend;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    /// Creates the first tenant and its system admin key, atomically, if and only if the
    /// store has no tenant yet. Returns whether it did.
    async fn bootstrap(&self, tenant: &Tenant, admin_key: &ApiKey) -> Result<bool>;

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    async fn create_key(&self, key: &ApiKey) -> Result<()>;
    /// Looks a key up by the SHA-256 of its token, revoked or not.
    async fn get_key_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiKey>>;
    async fn get_key(&self, tenant_id: TenantId, id: KeyId) -> Result<Option<ApiKey>>;
    async fn list_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>>;
    /// Marks a key revoked. Returns `NotFound` if it is not in the tenant; revoking a
    /// revoked key keeps the first revocation time.
    async fn revoke_key(&self, tenant_id: TenantId, id: KeyId, at: Timestamp) -> Result<ApiKey>;

    /// Stores a new session in phase `created` with its first event.
    async fn create_session(&self, session: &NewSession, actor: &str) -> Result<Session>;
    async fn get_session(&self, tenant_id: TenantId, id: SessionId) -> Result<Option<Session>>;
    /// Sessions of one tenant matching `filter`, in id order, at most `limit`.
    async fn list_sessions(
        &self,
        tenant_id: TenantId,
        filter: &SessionFilter,
        limit: u32,
    ) -> Result<Vec<Session>>;
    /// How many sessions are in each phase, over all tenants (for metrics).
    async fn count_sessions_by_phase(&self) -> Result<Vec<(Phase, u64)>>;

    /// Takes, renews or reports the session's write lease. `NotFound` if there is no
    /// such session in the tenant.
    async fn acquire_lease(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseOutcome>;
    /// Gives the lease up early if `lease` is still current; a no-op otherwise.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// Applies a lifecycle step and appends its event, atomically. Errors: `NotFound`,
    /// `LeaseFenced`, `PhaseChanged`.
    async fn transition(&self, transition: &Transition) -> Result<Session>;

    /// A session's events with `seq > after`, in order, at most `limit`.
    async fn list_events(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        after: EventSeq,
        limit: u32,
    ) -> Result<Vec<SessionEvent>>;

    /// Claims an idempotency key for a request with the given fingerprint. A pending
    /// claim older than `stale_after` is treated as abandoned and taken over.
    async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &[u8; 32],
        now: Timestamp,
        stale_after: Duration,
    ) -> Result<IdempotencyStart>;
    /// Records the response to replay for a claimed key.
    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        response: &RecordedResponse,
        now: Timestamp,
    ) -> Result<()>;
    /// Drops a pending claim (the request failed in a way worth retrying).
    async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<()>;
    /// Deletes at most `limit` idempotency records claimed before `created_before`,
    /// finished or not, and returns how many it deleted.
    async fn purge_idempotency(&self, created_before: Timestamp, limit: u32) -> Result<u64>;

    // ----- Egress: policy versions, secrets, credential leases, decisions. -----

    /// Stores a new version of the tenant's egress policy, numbered one past the latest
    /// (1 for the first); `policy.version` is ignored. Returns the stored version.
    async fn put_egress_policy(&self, policy: &EgressPolicyVersion) -> Result<EgressPolicyVersion>;
    /// The tenant's latest egress policy version, if it ever stored one.
    async fn get_egress_policy(&self, tenant_id: TenantId) -> Result<Option<EgressPolicyVersion>>;
    /// The latest egress policy version of every tenant that has one.
    async fn list_egress_policies(&self) -> Result<Vec<EgressPolicyVersion>>;

    /// Stores a secret. `SecretNameTaken` if a live secret of the tenant has its name.
    async fn create_secret(&self, secret: &SecretRecord) -> Result<()>;
    /// A secret by id, deleted or not.
    async fn get_secret(&self, tenant_id: TenantId, id: SecretId) -> Result<Option<SecretRecord>>;
    /// The tenant's secrets that are not deleted, in id order.
    async fn list_secrets(&self, tenant_id: TenantId) -> Result<Vec<SecretRecord>>;
    /// Marks a secret deleted, drops its sealed value and revokes its live leases
    /// (reason `secret deleted`), atomically. `NotFound` if it is not a live secret of
    /// the tenant.
    async fn delete_secret(&self, tenant_id: TenantId, id: SecretId, at: Timestamp) -> Result<()>;

    async fn create_credential_lease(&self, lease: &CredentialLease) -> Result<()>;
    async fn get_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
    ) -> Result<Option<CredentialLease>>;
    /// A session's leases, live or not, in id order.
    async fn list_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Vec<CredentialLease>>;
    /// Moves a live lease's expiry to `expires_at` (the caller caps it). `LeaseNotLive`
    /// if it is revoked or expired at `now`; `NotFound` if it is not the tenant's.
    async fn renew_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CredentialLease>;
    /// Revokes a lease; revoking a revoked lease keeps the first revocation.
    async fn revoke_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        at: Timestamp,
        reason: &str,
    ) -> Result<CredentialLease>;
    /// Revokes every lease of the session that is not revoked yet; returns how many.
    async fn revoke_session_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        at: Timestamp,
        reason: &str,
    ) -> Result<u64>;

    /// Appends decisions (their `seq` is assigned here, increasing in slice order) in one
    /// durable write.
    async fn append_egress_decisions(&self, decisions: &[EgressDecision]) -> Result<()>;
    /// The tenant's decisions matching `filter`, in `seq` order, at most `limit`.
    async fn list_egress_decisions(
        &self,
        tenant_id: TenantId,
        filter: &EgressDecisionFilter,
        limit: u32,
    ) -> Result<Vec<EgressDecision>>;

    /// A deployment-wide value by name (for example the egress CA, sealed). Stores
    /// `value` if the name has none yet and returns what is stored: the first writer
    /// wins, even between nodes racing at first start.
    async fn deployment_value_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;

    // ----- Artifacts: workspace versions, the evidence log, releases. -----

    /// Stores a version of a session's workspace. `VersionConflict` (nothing stored)
    /// unless `version.parent` is the session's latest live version (`None` when it has
    /// none): one version per parent, so concurrent writers cannot fork the chain.
    async fn create_version(&self, version: &WorkspaceVersion) -> Result<()>;
    /// A live (not retention-removed) version of the tenant.
    async fn get_version(
        &self,
        tenant_id: TenantId,
        id: VersionId,
    ) -> Result<Option<WorkspaceVersion>>;
    /// The session's live versions, newest first, at most `limit`, older than `before`
    /// when given.
    async fn list_versions(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        before: Option<VersionId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceVersion>>;
    /// The session's latest live version.
    async fn head_version(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Option<WorkspaceVersion>>;
    /// Marks versions removed by retention; returns how many were live.
    async fn delete_versions(
        &self,
        tenant_id: TenantId,
        ids: &[VersionId],
        at: Timestamp,
    ) -> Result<u64>;
    /// Every live version's and live release's root, in every tenant: what blob garbage
    /// collection must keep.
    async fn live_artifact_roots(&self) -> Result<Vec<String>>;

    /// Appends entries to their tenants' evidence logs in one durable write and returns
    /// the index each got, in slice order. Indexes of a tenant are 0, 1, 2, ... without
    /// gaps, also when nodes append at once.
    async fn append_evidence(&self, entries: &[NewEvidenceEntry]) -> Result<Vec<u64>>;
    /// The tenant's entries matching `filter`, in index order.
    async fn list_evidence(
        &self,
        tenant_id: TenantId,
        filter: &EvidenceFilter,
    ) -> Result<Vec<EvidenceEntry>>;
    /// Leaf hashes of the tenant's entries with `from <= index < to`, in index order.
    async fn evidence_leaf_hashes(
        &self,
        tenant_id: TenantId,
        from: u64,
        to: u64,
    ) -> Result<Vec<[u8; 32]>>;
    /// How many entries the tenant's log holds.
    async fn evidence_size(&self, tenant_id: TenantId) -> Result<u64>;
    /// Deletes the payload fields of the tenant's entries made before `before` (and of
    /// `session_id`'s only, when given); the entries and their leaf hashes stay.
    /// Returns how many fields were shredded.
    async fn shred_evidence(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        before: Timestamp,
    ) -> Result<u64>;
    /// Stores a signed checkpoint; storing one of a size already stored is a no-op.
    async fn put_evidence_checkpoint(&self, checkpoint: &EvidenceCheckpoint) -> Result<()>;
    /// The tenant's largest checkpoint.
    async fn latest_evidence_checkpoint(
        &self,
        tenant_id: TenantId,
    ) -> Result<Option<EvidenceCheckpoint>>;
    /// The tenant's checkpoints of a size in `from_size..=to_size`, smallest first.
    async fn list_evidence_checkpoints(
        &self,
        tenant_id: TenantId,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<EvidenceCheckpoint>>;

    /// Stores a release. `ReleaseNameTaken` if the tenant has one of that name (live or
    /// removed: a name is never reused).
    async fn create_release(&self, release: &Release) -> Result<()>;
    /// A live release by id.
    async fn get_release(&self, tenant_id: TenantId, id: ReleaseId) -> Result<Option<Release>>;
    /// A live release by name.
    async fn get_release_by_name(&self, tenant_id: TenantId, name: &str)
    -> Result<Option<Release>>;
    /// The tenant's live releases, in id order.
    async fn list_releases(&self, tenant_id: TenantId) -> Result<Vec<Release>>;
    /// Marks a release removed by retention.
    async fn delete_release(&self, tenant_id: TenantId, id: ReleaseId, at: Timestamp)
    -> Result<()>;
    /// Closed sessions (every tenant) closed before `before`, with their workload class:
    /// what retention looks at. At most `limit`, oldest first (by close time, then id),
    /// and only those after `after` (the close time and id of the previous page's last
    /// session), so that a caller can page through all of them.
    async fn closed_sessions(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, SessionId)>,
        limit: u32,
    ) -> Result<Vec<Session>>;

    // --- telemetry ---

    /// Appends telemetry facts in one transaction; their `seq` is assigned here.
    async fn append_facts(&self, facts: &[Fact]) -> Result<()>;
    /// Facts matching `filter`, oldest first (by `seq`).
    async fn list_facts(&self, filter: &FactFilter) -> Result<Vec<Fact>>;
    /// Workspace versions (of `tenant_id`, or every tenant) that were stored at some
    /// instant in `[from, to)`: created before `to` and not deleted before `from`.
    async fn stored_bytes(
        &self,
        tenant_id: Option<TenantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StoredBytes>>;
    /// Sessions of every tenant that are not closed and whose last lifecycle change is
    /// older than `before`, oldest first, at most `limit`: what the idle reaper looks at.
    async fn idle_sessions(&self, before: Timestamp, limit: u32) -> Result<Vec<Session>>;
}

/// Maps a duration to whole microseconds, saturating.
pub fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
