//! The egress gateway composed with the store: the gateway's view of a session (phase,
//! policy, leased credentials, opened only here), the decision log, and secrets sealed
//! under the master key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cordon_artifacts::evidence_log::{EvidenceLog, Record};
use cordon_core::{
    CredentialLease, EgressDecision, EgressPolicyVersion, Phase, SecretRecord, SessionId, TenantId,
};
use cordon_egress::secrets::{render_header, secret_context};
use cordon_egress::{
    Credential, EgressEnv, EgressPolicy, Gateway, MasterKey, PolicySnapshot, SessionKey,
    SessionView,
};
use cordon_store::Store;

/// How long the gateway may use a session's view before reading it again. Changes made
/// on this node invalidate it at once; changes made on another node show within this.
pub const VIEW_TTL: Duration = Duration::from_secs(1);

/// The egress runtime of a node: its gateway and the state behind it.
#[derive(Debug, Clone)]
pub struct Egress {
    pub gateway: Gateway,
    pub env: Arc<StoreEgressEnv>,
}

/// [`EgressEnv`] over the store, with short-lived caches.
#[derive(Debug)]
pub struct StoreEgressEnv {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    /// The deployment's policy file: what tenants without a stored policy get.
    file_policy: Arc<PolicySnapshot>,
    views: Mutex<HashMap<SessionId, (Instant, Arc<SessionView>)>>,
    policies: Mutex<HashMap<TenantId, (Instant, Arc<PolicySnapshot>)>>,
    /// Where decisions are also recorded as evidence, when the node keeps it.
    evidence: std::sync::OnceLock<EvidenceLog>,
    /// Where decisions are metered and blocks counted (set once, at start).
    telemetry: std::sync::OnceLock<crate::Telemetry>,
}

impl StoreEgressEnv {
    pub fn new(store: Arc<dyn Store>, master: Arc<MasterKey>, file_policy: PolicySnapshot) -> Self {
        Self {
            store,
            master,
            file_policy: Arc::new(file_policy),
            views: Mutex::new(HashMap::new()),
            policies: Mutex::new(HashMap::new()),
            evidence: std::sync::OnceLock::new(),
            telemetry: std::sync::OnceLock::new(),
        }
    }

    /// Meters every decision and counts policy blocks (set once, at start).
    pub fn set_telemetry(&self, telemetry: crate::Telemetry) {
        let _ = self.telemetry.set(telemetry);
    }

    /// Records every decision in the evidence log too (set once, at start).
    pub fn set_evidence(&self, evidence: EvidenceLog) {
        let _ = self.evidence.set(evidence);
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// The policy file's snapshot (version `file/<digest>` or `none`).
    pub fn file_policy(&self) -> &Arc<PolicySnapshot> {
        &self.file_policy
    }

    /// Forgets a session's cached view (its phase or leases changed).
    pub fn invalidate_session(&self, session_id: SessionId) {
        lock(&self.views).remove(&session_id);
    }

    /// Forgets a tenant's cached policy and every cached view.
    pub fn invalidate_policy(&self, tenant_id: TenantId) {
        lock(&self.policies).remove(&tenant_id);
        lock(&self.views).clear();
    }

    /// The policy in force for a tenant: its latest stored version, else the file's.
    pub async fn policy(&self, tenant_id: TenantId) -> Result<Arc<PolicySnapshot>, String> {
        if let Some((at, policy)) = lock(&self.policies).get(&tenant_id)
            && at.elapsed() < VIEW_TTL
        {
            return Ok(Arc::clone(policy));
        }
        let stored = self
            .store
            .get_egress_policy(tenant_id)
            .await
            .map_err(|e| e.to_string())?;
        let snapshot = match stored {
            Some(version) => Arc::new(snapshot_of(&version)?),
            None => Arc::clone(&self.file_policy),
        };
        lock(&self.policies).insert(tenant_id, (Instant::now(), Arc::clone(&snapshot)));
        Ok(snapshot)
    }

    async fn load_view(&self, key: &SessionKey) -> Result<SessionView, String> {
        let session = self
            .store
            .get_session(key.tenant_id, key.session_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the session does not exist".to_owned())?;
        let policy = self.policy(key.tenant_id).await?;
        let leases = self
            .store
            .list_credential_leases(key.tenant_id, key.session_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut credentials = Vec::new();
        let mut secrets: HashMap<_, Option<SecretRecord>> = HashMap::new();
        for lease in leases {
            if let std::collections::hash_map::Entry::Vacant(slot) = secrets.entry(lease.secret_id)
            {
                let secret = self
                    .store
                    .get_secret(key.tenant_id, lease.secret_id)
                    .await
                    .map_err(|e| e.to_string())?;
                slot.insert(secret);
            }
            let Some(Some(secret)) = secrets.get(&lease.secret_id) else {
                continue;
            };
            credentials.push(self.credential(&lease, secret));
        }
        // Live credentials first, so a revoked lease never shadows a newer live one.
        credentials.sort_by_key(|c| c.header_value.is_none());
        Ok(SessionView {
            active: session.phase == Phase::Active,
            environment: session.environment,
            workload_class: session.workload_class,
            policy,
            credentials,
        })
    }

    fn credential(&self, lease: &CredentialLease, secret: &SecretRecord) -> Credential {
        let value = if lease.revoked_at.is_none() && secret.deleted_at.is_none() {
            let context = secret_context(&secret.tenant_id.to_string(), &secret.id.to_string());
            match self.master.open(&context, &secret.sealed_value) {
                Ok(plain) => String::from_utf8(plain)
                    .ok()
                    .map(|v| render_header(&secret.header_format, &v)),
                Err(e) => {
                    tracing::error!(secret = %secret.id, error = %e, "cannot open a leased secret");
                    None
                }
            }
        } else {
            None
        };
        Credential {
            secret_name: secret.name.clone(),
            service_class: secret.service_class.clone(),
            header_name: secret.header_name.to_ascii_lowercase(),
            header_value: value,
            expires_at: lease.expires_at,
        }
    }
}

#[async_trait]
impl EgressEnv for StoreEgressEnv {
    async fn session_view(&self, key: &SessionKey) -> Result<Arc<SessionView>, String> {
        if let Some((at, view)) = lock(&self.views).get(&key.session_id)
            && at.elapsed() < VIEW_TTL
        {
            return Ok(Arc::clone(view));
        }
        let view = Arc::new(self.load_view(key).await?);
        lock(&self.views).insert(key.session_id, (Instant::now(), Arc::clone(&view)));
        Ok(view)
    }

    async fn record(&self, decisions: Vec<EgressDecision>) -> Result<(), String> {
        self.store
            .append_egress_decisions(&decisions)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(telemetry) = self.telemetry.get() {
            telemetry.egress(&decisions, |session| {
                lock(&self.views)
                    .get(&session)
                    .map(|(_, view)| view.workload_class.clone())
            });
        }
        if let Some(evidence) = self.evidence.get() {
            for decision in &decisions {
                evidence.record(decision_record(decision)).await;
            }
        }
        Ok(())
    }
}

/// An egress decision as an evidence entry (the path only, never the query string).
fn decision_record(decision: &EgressDecision) -> Record {
    Record::new(
        decision.tenant_id,
        Some(decision.session_id),
        "egress",
        "gateway",
    )
    .field("kind", decision.kind.clone())
    .field("host", decision.host.clone())
    .field("port", decision.port)
    .field("address", decision.address.clone())
    .field("method", decision.method.clone())
    .field("path", decision.path.clone())
    .field("reason", decision.reason.as_str())
    .field("mode", decision.mode.clone())
    .field("service_class", decision.service_class.clone())
    .field("rule", decision.rule.clone())
    .field("policy_version", decision.policy_version.clone())
    .field("credential", decision.credential.clone())
    .field("status", decision.status)
    .field("bytes_sent", decision.bytes_sent)
    .field("bytes_received", decision.bytes_received)
}

/// Parses a stored policy version into the snapshot the gateway uses.
pub fn snapshot_of(version: &EgressPolicyVersion) -> Result<PolicySnapshot, String> {
    let policy = EgressPolicy::from_json(&version.document)
        .map_err(|e| format!("stored egress policy v{} is invalid: {e}", version.version))?;
    Ok(PolicySnapshot {
        policy,
        version: format!("tenant/{}", version.version),
    })
}

/// The snapshot of a policy file's text: version `file/<first 12 hex of its SHA-256>`.
pub fn file_snapshot(policy: EgressPolicy, digest_hex: &str) -> PolicySnapshot {
    PolicySnapshot {
        policy,
        version: format!("file/{}", &digest_hex[..digest_hex.len().min(12)]),
    }
}

/// The snapshot with no policy at all: everything is denied.
pub fn empty_snapshot() -> PolicySnapshot {
    PolicySnapshot {
        policy: EgressPolicy::default(),
        version: "none".to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
