//! Control: the one place that changes a session's state. It creates sessions and
//! moves them along the lifecycle as their single writer: each write carries the
//! node's fencing token for the session's lease, so a node that lost the lease (paused,
//! partitioned, replaced) can never overwrite newer state. Later runtimes (sandboxes,
//! egress, artifacts, workflows) are composed here. Knows nothing of HTTP or JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cordon_core::{
    KeyId, Labels, Lease, NewSession, Phase, Session, SessionAction, SessionId, SessionOutcome,
    TenantId, Timestamp, TransitionError,
};
use cordon_egress::{SessionKey, SessionListeners};
use cordon_sandbox::{SandboxError, SandboxManager};

pub mod artifacts;
pub mod egress;
pub mod telemetry;
pub mod workflow;

pub use artifacts::{Artifacts, PromoteSpec, RetentionReport, RetentionRule, SecretRedactor};
use cordon_artifacts::evidence_log::Record;
use cordon_store::{LeaseOutcome, Store, StoreError, Transition};
use cordon_telemetry::TelemetryConfig;
pub use egress::Egress;
pub use telemetry::Telemetry;
pub use workflow::{ControlRunner, StepAuthorizer, StepDenial};

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("session not found")]
    NotFound,
    #[error(transparent)]
    InvalidTransition(#[from] TransitionError),
    #[error("session {} is being written by node `{}` until {}", .0.session_id, .0.holder, .0.expires_at)]
    LeaseHeld(Lease),
    /// The session kept changing under this write; nothing was written.
    #[error("the session changed concurrently; retry")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
    /// The session's sandbox could not follow the transition; the phase is unchanged.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A workspace version could not be made, read or restored.
    #[error(transparent)]
    Artifact(#[from] cordon_artifacts::ArtifactError),
    #[error(transparent)]
    Evidence(#[from] cordon_artifacts::evidence_log::EvidenceError),
    /// The operation needs a running sandbox: the session is `active` or `checkpointed`.
    #[error(
        "the session is {0}: its workspace can be changed only while it is active or checkpointed"
    )]
    NotActive(Phase),
    /// The node runs no artifacts runtime (or no sandboxes) for this operation.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ControlError::NotFound,
            other => ControlError::Store(other),
        }
    }
}

impl ControlError {
    pub fn reason(&self) -> cordon_core::ReasonCode {
        use cordon_core::ReasonCode;
        match self {
            ControlError::NotFound => ReasonCode::NotFound,
            ControlError::InvalidTransition(_) => ReasonCode::SessionInvalidTransition,
            ControlError::LeaseHeld(_) => ReasonCode::SessionLeaseHeld,
            ControlError::Conflict => ReasonCode::SessionConflict,
            ControlError::Store(error) => error.reason(),
            ControlError::Sandbox(error) => error.reason(),
            ControlError::Artifact(error) => error.reason(),
            ControlError::Evidence(error) => error.reason(),
            ControlError::Unavailable(_) => ReasonCode::SandboxUnavailable,
            ControlError::NotActive(_) => ReasonCode::SessionNotActive,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// This node's name as a lease holder; unique among the nodes sharing a store.
    pub node_id: String,
    /// How long a session's write lease lasts before another node may take it over.
    pub lease_ttl: Duration,
}

/// What a caller asks for when creating a session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub tenant_id: TenantId,
    pub owner: KeyId,
    pub workload_class: String,
    pub environment: String,
    pub labels: Labels,
    pub policy_version: String,
}

/// The control plane's session writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    options: ControlOptions,
    /// Leases this node holds, so that consecutive writes skip re-acquiring. Entries
    /// expire with their lease; nothing here is needed for correctness.
    leases: Mutex<HashMap<SessionId, Lease>>,
    /// Per-session turn-taking for this node's writers.
    session_locks: Mutex<HashMap<SessionId, Weak<tokio::sync::Mutex<()>>>>,
    /// The sandbox runtime, when this node runs sandboxes.
    sandboxes: Option<SandboxManager>,
    /// The egress gateway, when sandboxes on this node may reach out.
    egress: Option<Egress>,
    /// Versions, evidence and releases, when this node keeps them.
    artifacts: Option<Arc<Artifacts>>,
    /// Telemetry facts, usage metering and the SRE metrics' Prometheus side.
    telemetry: Telemetry,
}

/// How many times a transition is retried when the session moved under it.
const CONCURRENT_CHANGE_RETRIES: usize = 3;
/// Past this many cached leases, expired ones are swept on insert.
const LEASE_CACHE_SWEEP_AT: usize = 4096;

impl Control {
    pub fn new(store: Arc<dyn Store>, options: ControlOptions) -> Self {
        Self::with_sandboxes(store, options, None)
    }

    /// A writer that also drives sessions' sandboxes: activate starts one, suspend
    /// freezes it, resume thaws it (or starts a new one if it was lost), close removes it.
    pub fn with_sandboxes(
        store: Arc<dyn Store>,
        options: ControlOptions,
        sandboxes: Option<SandboxManager>,
    ) -> Self {
        Self::with_runtimes(store, options, sandboxes, None)
    }

    /// A writer that drives sandboxes and their egress: an active session's sandbox is
    /// attached to the gateway; suspend and close revoke the session's credential
    /// leases; close detaches it.
    pub fn with_runtimes(
        store: Arc<dyn Store>,
        options: ControlOptions,
        sandboxes: Option<SandboxManager>,
        egress: Option<Egress>,
    ) -> Self {
        let telemetry = Telemetry::new(Arc::clone(&store), TelemetryConfig::default());
        Self {
            inner: Arc::new(Inner {
                telemetry,
                store,
                options,
                leases: Mutex::new(HashMap::new()),
                session_locks: Mutex::new(HashMap::new()),
                sandboxes,
                egress,
                artifacts: None,
            }),
        }
    }

    /// Uses `config` for prices, objectives and metering (call before the writer is
    /// shared).
    pub fn with_telemetry(mut self, config: TelemetryConfig) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.telemetry = Telemetry::new(Arc::clone(&inner.store), config);
        } else {
            tracing::error!("telemetry configured on a shared control writer: ignored");
        }
        self
    }

    /// The telemetry recorder.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Adds the artifacts runtime (call before the writer is shared).
    pub fn with_artifacts(mut self, artifacts: Arc<Artifacts>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.artifacts = Some(artifacts);
        } else {
            tracing::error!("artifacts added to a shared control writer: ignored");
        }
        self
    }

    /// The artifacts runtime, if this node keeps versions, evidence and releases.
    pub fn artifacts(&self) -> Option<&Arc<Artifacts>> {
        self.inner.artifacts.as_ref()
    }

    /// Records evidence (when the node keeps it) and waits until it is durable, so an
    /// acknowledged action never lacks its entry. A failure to record is logged, not
    /// returned: the action itself already happened.
    pub async fn evidence(&self, record: Record) {
        if let Some(artifacts) = self.artifacts()
            && let Err(error) = artifacts.evidence.append(record).await
        {
            tracing::error!(%error, "cannot record evidence");
        }
    }

    /// The sandbox runtime, if this node runs sandboxes.
    pub fn sandboxes(&self) -> Option<&SandboxManager> {
        self.inner.sandboxes.as_ref()
    }

    /// The egress runtime, if this node runs the gateway.
    pub fn egress(&self) -> Option<&Egress> {
        self.inner.egress.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub async fn create_session(&self, spec: SessionSpec, actor: &str) -> Result<Session> {
        let new = NewSession {
            id: SessionId::generate(),
            tenant_id: spec.tenant_id,
            owner: spec.owner,
            workload_class: spec.workload_class,
            environment: spec.environment,
            labels: spec.labels,
            policy_version: spec.policy_version,
            created_at: Timestamp::now(),
        };
        Ok(self.inner.store.create_session(&new, actor).await?)
    }

    /// Applies `action` to `session` as its single writer. `session` is the caller's
    /// latest read; if the stored phase moved on since, the action is re-checked
    /// against the new phase. An illegal transition changes nothing.
    pub async fn transition(
        &self,
        session: &Session,
        action: SessionAction,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Session> {
        // One writer per session on this node: concurrent requests queue here instead
        // of racing each other in the store (other nodes are kept out by the lease).
        let lock = self.session_lock(session.id);
        let _turn = lock.lock().await;
        self.transition_locked(session, action, actor, reason, None)
            .await
    }

    /// Closes `session` with `outcome` (a plain `close` transition records
    /// `succeeded`).
    pub async fn close(
        &self,
        session: &Session,
        outcome: SessionOutcome,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Session> {
        let lock = self.session_lock(session.id);
        let _turn = lock.lock().await;
        self.transition_locked(session, SessionAction::Close, actor, reason, Some(outcome))
            .await
    }

    /// [`Control::transition`] for a caller that holds the session's turn.
    async fn transition_locked(
        &self,
        session: &Session,
        action: SessionAction,
        actor: &str,
        reason: Option<String>,
        outcome: Option<SessionOutcome>,
    ) -> Result<Session> {
        let store = &self.inner.store;
        let mut current = session.clone();
        for attempt in 0..=CONCURRENT_CHANGE_RETRIES {
            let to = current.phase.apply(action)?;
            // The sandbox moves first, so a session never reads `active` without one;
            // if the lease or the store then refuses, the sandbox is moved back. Taking
            // the lease and moving the sandbox overlap: both take a while.
            let (lease, moved) = tokio::join!(
                self.lease_for(current.tenant_id, current.id),
                self.sandbox_before(&current, to)
            );
            let lease = match (lease, moved) {
                (Ok(lease), Ok(())) => lease,
                (Err(error), Ok(())) => {
                    self.sandbox_undo(&current, to).await;
                    return Err(error);
                }
                (_, Err(error)) => return Err(error),
            };
            let transition = Transition {
                tenant_id: current.tenant_id,
                session_id: current.id,
                from: current.phase,
                to,
                fence: lease.token,
                actor: actor.to_owned(),
                reason: reason.clone(),
                at: Timestamp::now(),
                outcome: (to == Phase::Closed)
                    .then(|| outcome.unwrap_or(SessionOutcome::Succeeded)),
            };
            let written = store.transition(&transition).await;
            if written.is_err() {
                self.sandbox_undo(&current, to).await;
            }
            match written {
                Ok(updated) => {
                    if updated.phase == Phase::Closed {
                        self.forget_lease(updated.id);
                    }
                    self.egress_after(&updated, actor).await;
                    if updated.phase == Phase::Closed {
                        // The last usage sample, while the sandbox's cgroup still exists.
                        let counters = self
                            .sandboxes()
                            .and_then(|s| s.info(&updated.id.to_string()).ok())
                            .and_then(|i| i.counters)
                            .map(|c| (c.cpu_usage_usec, c.memory_bytes));
                        self.sandbox_close(updated.id).await;
                        self.inner.telemetry.session_closed(&updated, counters);
                    } else {
                        self.inner.telemetry.note_session(&updated);
                    }
                    self.evidence(
                        Record::new(updated.tenant_id, Some(updated.id), "lifecycle", actor)
                            .field("action", action.as_str())
                            .field("from", current.phase.as_str())
                            .field("to", updated.phase.as_str())
                            .field("reason", reason.clone()),
                    )
                    .await;
                    if updated.phase == Phase::Closed {
                        self.artifacts_after_close(&updated).await;
                    }
                    return Ok(updated);
                }
                // The caller's read is older than the store: check the action again
                // against the phase the session is in now.
                Err(StoreError::PhaseChanged { .. }) if attempt < CONCURRENT_CHANGE_RETRIES => {
                    current = store
                        .get_session(current.tenant_id, current.id)
                        .await?
                        .ok_or(ControlError::NotFound)?;
                }
                Err(StoreError::PhaseChanged { .. }) => break,
                Err(StoreError::LeaseFenced {
                    presented,
                    current: newer,
                }) => {
                    // Another node took the session over: our cached lease is dead.
                    tracing::warn!(session = %current.id, presented, newer, "write fenced off");
                    self.forget_lease(current.id);
                    return Err(StoreError::LeaseFenced {
                        presented,
                        current: newer,
                    }
                    .into());
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ControlError::Conflict)
    }

    /// Brings the session's sandbox to where `to` needs it, before the phase is written.
    async fn sandbox_before(&self, session: &Session, to: Phase) -> Result<()> {
        let Some(sandboxes) = self.sandboxes() else {
            return Ok(());
        };
        let id = session.id.to_string();
        match (session.phase, to) {
            (Phase::Created, Phase::Active) => {
                sandboxes
                    .start(&id, &session.workload_class, &session.tenant_id.to_string())
                    .await?;
            }
            (_, Phase::Active) => {
                let fresh = sandboxes
                    .resume(&id, &session.workload_class, &session.tenant_id.to_string())
                    .await?;
                if fresh && let Err(error) = self.restore_head(session).await {
                    // A session must not come back with an empty workspace it did not
                    // have: take the fresh sandbox down again and refuse.
                    tracing::error!(session = %session.id, %error, "cannot restore the lost sandbox's workspace");
                    if let Err(error) = sandboxes.destroy(&id).await {
                        tracing::warn!(session = %session.id, %error, "cannot remove the fresh sandbox");
                    }
                    return Err(error);
                }
            }
            (_, Phase::Suspended) => match sandboxes.suspend(&id).await {
                // Nothing to freeze: the next resume starts a fresh sandbox.
                Ok(()) | Err(SandboxError::NotRunning | SandboxError::Lost(_)) => {}
                Err(other) => return Err(other.into()),
            },
            _ => {}
        }
        Ok(())
    }

    /// Undoes `sandbox_before` after the store refused the transition.
    async fn sandbox_undo(&self, session: &Session, to: Phase) {
        let Some(sandboxes) = self.sandboxes() else {
            return;
        };
        let id = session.id.to_string();
        let undone = match (session.phase, to) {
            (Phase::Created, Phase::Active) => sandboxes.destroy(&id).await,
            (Phase::Suspended, Phase::Active) => sandboxes.suspend(&id).await,
            (_, Phase::Suspended) => sandboxes
                .resume(&id, &session.workload_class, &session.tenant_id.to_string())
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
        if let Err(error) = undone {
            tracing::warn!(session = %session.id, %error, "cannot undo the sandbox change of a refused transition");
        }
    }

    /// Moves the session's egress along with its phase: an active session's sandbox
    /// listeners are served by the gateway; suspend and close revoke every credential
    /// lease of the session; close stops serving it.
    async fn egress_after(&self, session: &Session, actor: &str) {
        let Some(egress) = self.egress() else {
            return;
        };
        egress.env.invalidate_session(session.id);
        match session.phase {
            Phase::Active => self.attach_egress(session).await,
            Phase::Suspended | Phase::Closed => {
                let reason = format!("session {} by {actor}", session.phase);
                match self
                    .inner
                    .store
                    .revoke_session_credential_leases(
                        session.tenant_id,
                        session.id,
                        Timestamp::now(),
                        &reason,
                    )
                    .await
                {
                    Ok(0) => {}
                    Ok(revoked) => {
                        self.evidence(
                            Record::new(session.tenant_id, Some(session.id), "lease.revoke", actor)
                                .field("leases", revoked)
                                .field("reason", reason.clone()),
                        )
                        .await;
                    }
                    // The gateway refuses a session that is not active anyway.
                    Err(error) => {
                        tracing::warn!(session = %session.id, %error, "cannot revoke the session's credential leases");
                    }
                }
                egress.env.invalidate_session(session.id);
                if session.phase == Phase::Closed {
                    egress.gateway.detach(session.id);
                }
            }
            _ => {}
        }
    }

    async fn attach_egress(&self, session: &Session) {
        let (Some(egress), Some(sandboxes)) = (self.egress(), self.sandboxes()) else {
            return;
        };
        let sockets = match sandboxes.network(&session.id.to_string()).await {
            Ok(sockets) => sockets,
            Err(error) => {
                tracing::warn!(session = %session.id, %error, "cannot take the sandbox's egress listeners: it has no way out");
                return;
            }
        };
        let listeners = SessionListeners {
            proxy: Some(std::net::TcpListener::from(sockets.proxy)),
            http: Some(std::net::TcpListener::from(sockets.http)),
            https: Some(std::net::TcpListener::from(sockets.https)),
            dns: Some(std::net::UdpSocket::from(sockets.dns)),
        };
        let key = SessionKey {
            tenant_id: session.tenant_id,
            session_id: session.id,
        };
        if let Err(error) = egress.gateway.attach(key, listeners) {
            tracing::warn!(session = %session.id, %error, "cannot serve the sandbox's egress listeners");
        }
    }

    /// Serves the egress of every active session whose sandbox runs on this node (after
    /// a restart). Returns how many were attached.
    pub async fn attach_egress_all(&self) -> usize {
        let Some(sandboxes) = self.sandboxes() else {
            return 0;
        };
        if self.egress().is_none() {
            return 0;
        }
        let mut attached = 0;
        for (id, tenant) in sandboxes.owners() {
            let (Ok(session_id), Ok(tenant_id)) =
                (id.parse::<SessionId>(), tenant.parse::<TenantId>())
            else {
                continue;
            };
            if let Ok(Some(session)) = self.inner.store.get_session(tenant_id, session_id).await
                && session.phase == Phase::Active
            {
                self.attach_egress(&session).await;
                attached += 1;
            }
        }
        attached
    }

    /// Removes a closed session's sandbox. A failure is logged; the reconciler retries.
    async fn sandbox_close(&self, session_id: SessionId) {
        if let Some(sandboxes) = self.sandboxes()
            && let Err(error) = sandboxes.destroy(&session_id.to_string()).await
        {
            tracing::warn!(session = %session_id, %error, "cannot remove a closed session's sandbox");
        }
    }

    /// Destroys this node's sandboxes whose session is closed or gone (a close that
    /// happened while this node was down, or on another node). Returns how many.
    pub async fn reconcile_sandboxes(&self) -> usize {
        let Some(sandboxes) = self.sandboxes() else {
            return 0;
        };
        let mut removed = 0;
        for (id, tenant) in sandboxes.owners() {
            let (Ok(session_id), Ok(tenant_id)) =
                (id.parse::<SessionId>(), tenant.parse::<TenantId>())
            else {
                continue;
            };
            let closed = match self.inner.store.get_session(tenant_id, session_id).await {
                Ok(Some(session)) => session.phase == Phase::Closed,
                Ok(None) => true,
                Err(_) => false,
            };
            if closed && sandboxes.destroy(&id).await.is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The lock that makes this node's writes to one session take turns. Entries are
    /// weak, so a session nobody is writing costs nothing but a map slot until swept.
    fn session_lock(&self, session_id: SessionId) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut locks) = self.inner.session_locks.lock() else {
            // A poisoned map only loses the queueing; the store still decides.
            return Arc::new(tokio::sync::Mutex::new(()));
        };
        if let Some(lock) = locks.get(&session_id).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= LEASE_CACHE_SWEEP_AT {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(session_id, Arc::downgrade(&lock));
        lock
    }

    /// This node's lease on the session: cached while it has more than half its life
    /// left, otherwise acquired (or renewed) in the store.
    async fn lease_for(&self, tenant_id: TenantId, session_id: SessionId) -> Result<Lease> {
        let ttl = self.inner.options.lease_ttl;
        let half_ttl = cordon_store::duration_micros(ttl / 2);
        let now = Timestamp::now();
        if let Some(lease) = self.cached_lease(session_id)
            && lease.expires_at > now.saturating_add_micros(half_ttl)
        {
            return Ok(lease);
        }
        let outcome = self
            .inner
            .store
            .acquire_lease(tenant_id, session_id, &self.inner.options.node_id, ttl, now)
            .await?;
        match outcome {
            LeaseOutcome::Acquired(lease) => {
                self.remember_lease(lease.clone());
                Ok(lease)
            }
            LeaseOutcome::Held(lease) => Err(ControlError::LeaseHeld(lease)),
        }
    }

    fn cached_lease(&self, session_id: SessionId) -> Option<Lease> {
        self.inner
            .leases
            .lock()
            .ok()
            .and_then(|leases| leases.get(&session_id).cloned())
    }

    fn remember_lease(&self, lease: Lease) {
        if let Ok(mut leases) = self.inner.leases.lock() {
            if leases.len() >= LEASE_CACHE_SWEEP_AT {
                let now = Timestamp::now();
                leases.retain(|_, lease| lease.expires_at > now);
            }
            leases.insert(lease.session_id, lease);
        }
    }

    fn forget_lease(&self, session_id: SessionId) {
        if let Ok(mut leases) = self.inner.leases.lock() {
            leases.remove(&session_id);
        }
    }

    /// How many leases this node has cached (for metrics and the memory benchmark).
    pub fn cached_leases(&self) -> usize {
        self.inner
            .leases
            .lock()
            .map(|leases| leases.len())
            .unwrap_or(0)
    }
}
