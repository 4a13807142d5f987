//! The artifacts runtime as control drives it: checkpoints (the sandbox quiesced while
//! its workspace is read), restores, forks, uploads, promotions, the evidence of what
//! happened, retention and the evidence export at close.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cordon_artifacts::evidence_log::{EvidenceLog, Record, Redactor};
use cordon_artifacts::{BlobStore, SnapshotIndex};
use cordon_core::{SessionId, TenantId, Timestamp};
use cordon_egress::secrets::{MasterKey, secret_context};
use cordon_evidence::Signer;
use cordon_store::{Store, StoreError};

/// How long a tenant's secret values are kept for redaction before they are read again.
const REDACTION_TTL: Duration = Duration::from_secs(2);
/// How many closed sessions a retention sweep reads at a time.
const CLOSED_SESSIONS_PAGE: u32 = 1000;

/// Retention for one workload class (or every class, when `workload_class` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRule {
    pub workload_class: Option<String>,
    /// Versions of a closed session are removed this many days after the close...
    pub working_state_days: Option<u32>,
    /// ... except its newest `keep_last_versions`.
    pub keep_last_versions: u32,
    /// Evidence payloads older than this are shredded (entries and proofs stay).
    pub evidence_days: Option<u32>,
    /// Releases older than this are removed.
    pub releases_days: Option<u32>,
}

/// What one retention sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub versions_removed: u64,
    pub fields_shredded: u64,
    pub releases_removed: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
}

/// The artifacts runtime of a node.
#[derive(Debug)]
pub struct Artifacts {
    pub blobs: BlobStore,
    pub evidence: EvidenceLog,
    /// The deployment's signing key: evidence checkpoints and release envelopes.
    pub signer: Arc<Signer>,
    /// Where a closed session's evidence bundle is written (`<dir>/<tenant>/<session>.json`).
    pub export_dir: Option<PathBuf>,
    pub retention: Vec<RetentionRule>,
    /// Blobs younger than this survive garbage collection (a checkpoint in flight).
    pub gc_grace: Duration,
    pub redactor: Arc<SecretRedactor>,
    /// The last snapshot's index per session, so the next checkpoint reads only
    /// changed files.
    pub(crate) indexes: Mutex<HashMap<SessionId, SnapshotIndex>>,
}

impl Artifacts {
    pub fn new(
        blobs: BlobStore,
        evidence: EvidenceLog,
        signer: Arc<Signer>,
        redactor: Arc<SecretRedactor>,
    ) -> Self {
        Self {
            blobs,
            evidence,
            signer,
            export_dir: None,
            retention: Vec::new(),
            gc_grace: Duration::from_secs(3600),
            redactor,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    /// The rule for a workload class: its own, else the catch-all.
    pub fn rule_for(&self, workload_class: &str) -> Option<&RetentionRule> {
        self.retention
            .iter()
            .find(|r| r.workload_class.as_deref() == Some(workload_class))
            .or_else(|| self.retention.iter().find(|r| r.workload_class.is_none()))
    }

    pub(crate) fn take_index(&self, session_id: SessionId) -> Option<SnapshotIndex> {
        self.indexes.lock().ok()?.remove(&session_id)
    }

    pub(crate) fn put_index(&self, session_id: SessionId, index: SnapshotIndex) {
        if let Ok(mut map) = self.indexes.lock() {
            map.insert(session_id, index);
        }
    }

    pub(crate) fn forget_index(&self, session_id: SessionId) {
        if let Ok(mut map) = self.indexes.lock() {
            map.remove(&session_id);
        }
    }

    /// `text` with any of the tenant's secret values replaced by `[REDACTED:<name>]`:
    /// for what a caller gives that is stored and shown again (a version's summary).
    pub async fn redacted(&self, tenant_id: TenantId, text: &str) -> String {
        let secrets = self.redactor.values(tenant_id).await;
        cordon_artifacts::evidence_log::redact_text(text, &secrets)
    }

    /// Records evidence without waiting for it to be durable.
    pub async fn record(&self, record: Record) {
        self.evidence.record(record).await;
    }
}

/// A tenant's secrets as `(name, value)`, shared.
type SecretValues = Arc<Vec<(String, String)>>;

/// What a promotion asks for, besides the session and version.
#[derive(Debug, Clone, Copy)]
pub struct PromoteSpec<'a> {
    pub name: &'a str,
    /// Files of the version; every file when empty.
    pub paths: &'a [String],
    pub actor: &'a str,
    /// The authorization policy version that allowed it.
    pub policy_version: &'a str,
    /// The workflow run that promoted it, if any.
    pub workflow_run: Option<&'a str>,
}

/// Opens a tenant's secrets for redaction, with a short cache.
#[derive(Debug)]
pub struct SecretRedactor {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    cache: Mutex<HashMap<TenantId, (Instant, SecretValues)>>,
}

impl SecretRedactor {
    pub fn new(store: Arc<dyn Store>, master: Arc<MasterKey>) -> Self {
        Self {
            store,
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a tenant's cached values (a secret was created or deleted).
    pub fn invalidate(&self, tenant_id: TenantId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&tenant_id);
        }
    }

    /// The tenant's secret values by name, for redacting captured output.
    pub async fn values(&self, tenant_id: TenantId) -> Vec<(String, String)> {
        Redactor::secrets(self, tenant_id).await
    }

    async fn load(&self, tenant_id: TenantId) -> Vec<(String, String)> {
        let secrets = match self.store.list_secrets(tenant_id).await {
            Ok(secrets) => secrets,
            Err(error) => {
                tracing::error!(%error, %tenant_id, "cannot read secrets to redact evidence");
                return Vec::new();
            }
        };
        secrets
            .into_iter()
            .filter_map(|secret| {
                let context = secret_context(&secret.tenant_id.to_string(), &secret.id.to_string());
                let plain = self.master.open(&context, &secret.sealed_value).ok()?;
                Some((secret.name, String::from_utf8(plain).ok()?))
            })
            .collect()
    }
}

#[async_trait]
impl Redactor for SecretRedactor {
    async fn secrets(&self, tenant_id: TenantId) -> Vec<(String, String)> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, values)) = cache.get(&tenant_id)
            && at.elapsed() < REDACTION_TTL
        {
            return values.as_ref().clone();
        }
        let values = Arc::new(self.load(tenant_id).await);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(tenant_id, (Instant::now(), Arc::clone(&values)));
        }
        values.as_ref().clone()
    }
}

/// Days to a duration in microseconds.
pub(crate) fn days_ago(now: Timestamp, days: u32) -> Timestamp {
    now.saturating_add_micros(-(i64::from(days) * 86_400 * 1_000_000))
}

use crate::{Control, ControlError, Result, SessionSpec};
use cordon_artifacts::{ArchiveLimits, Limits, RestoreStats};
use cordon_core::{
    Phase, Release, Session, SessionAction, VersionId, VersionStats, WorkspaceVersion,
};

impl Control {
    fn artifacts_or_unavailable(&self) -> Result<&Arc<Artifacts>> {
        self.artifacts()
            .ok_or(ControlError::Unavailable("this node keeps no artifacts"))
    }

    /// Snapshots the session's workspace into a new version (the sandbox frozen for the
    /// instant it takes), then moves the session to `checkpointed`. Without a sandbox
    /// runtime or artifacts on this node only the phase moves.
    pub async fn checkpoint(
        &self,
        session: &Session,
        summary: String,
        actor: &str,
        reason: Option<String>,
    ) -> Result<(Session, Option<WorkspaceVersion>)> {
        let lock = self.session_lock(session.id);
        let _turn = lock.lock().await;
        let current = self
            .inner
            .store
            .get_session(session.tenant_id, session.id)
            .await?
            .ok_or(ControlError::NotFound)?;
        // Refuse before doing the work if the transition cannot happen.
        current.phase.apply(SessionAction::Checkpoint)?;
        let version = match (self.artifacts(), self.sandboxes()) {
            (Some(_), Some(_)) => Some(
                self.snapshot_version(&current, summary, "checkpoint", actor)
                    .await?,
            ),
            _ => None,
        };
        let updated = self
            .transition_locked(&current, SessionAction::Checkpoint, actor, reason, None)
            .await?;
        Ok((updated, version))
    }

    /// Reads the workspace (quiesced) into blobs and records the version.
    async fn snapshot_version(
        &self,
        session: &Session,
        summary: String,
        origin: &str,
        actor: &str,
    ) -> Result<WorkspaceVersion> {
        let artifacts = self.artifacts_or_unavailable()?;
        let sandboxes = self
            .sandboxes()
            .ok_or(ControlError::Unavailable("this node runs no sandboxes"))?;
        let id = session.id.to_string();
        let workspace = sandboxes.workspace(&id)?;
        let head = self
            .inner
            .store
            .head_version(session.tenant_id, session.id)
            .await?;
        let previous = artifacts.take_index(session.id);
        let frozen = sandboxes.quiesce(&id).await?;
        let started = Instant::now();
        let taken = cordon_artifacts::snapshot(
            &artifacts.blobs,
            &workspace.root,
            previous.as_ref(),
            &Limits::default(),
        )
        .await;
        let frozen_for = started.elapsed();
        if frozen && let Err(error) = sandboxes.unquiesce(&id).await {
            tracing::error!(session = %session.id, %error, "cannot thaw the sandbox after a checkpoint");
        }
        let (snapshot, index) = taken?;
        artifacts.put_index(session.id, index);
        let summary = artifacts.redacted(session.tenant_id, &summary).await;
        let version = WorkspaceVersion {
            id: VersionId::generate(),
            tenant_id: session.tenant_id,
            session_id: session.id,
            parent: head.map(|v| v.id),
            root: snapshot.root,
            summary,
            stats: snapshot.stats,
            origin: origin.to_owned(),
            created_by: actor.to_owned(),
            created_at: Timestamp::now(),
            deleted_at: None,
        };
        self.inner.store.create_version(&version).await?;
        metrics_version(&version, frozen_for);
        self.evidence(version_record(&version, origin, actor)).await;
        Ok(version)
    }

    /// Makes the session's workspace exactly `version` (the sandbox frozen meanwhile).
    pub async fn restore(
        &self,
        session: &Session,
        version: &WorkspaceVersion,
        actor: &str,
    ) -> Result<RestoreStats> {
        let lock = self.session_lock(session.id);
        let _turn = lock.lock().await;
        let current = self
            .inner
            .store
            .get_session(session.tenant_id, session.id)
            .await?
            .ok_or(ControlError::NotFound)?;
        if !matches!(current.phase, Phase::Active | Phase::Checkpointed) {
            return Err(ControlError::NotActive(current.phase));
        }
        let stats = self.restore_into(&current, version).await?;
        self.evidence(
            Record::new(session.tenant_id, Some(session.id), "restore", actor)
                .field("version", version.id.to_string())
                .field("root", version.root.clone())
                .field("files_written", stats.files_written)
                .field("removed", stats.removed),
        )
        .await;
        Ok(stats)
    }

    async fn restore_into(
        &self,
        session: &Session,
        version: &WorkspaceVersion,
    ) -> Result<RestoreStats> {
        let artifacts = self.artifacts_or_unavailable()?;
        let sandboxes = self
            .sandboxes()
            .ok_or(ControlError::Unavailable("this node runs no sandboxes"))?;
        let id = session.id.to_string();
        let workspace = sandboxes.workspace(&id)?;
        let frozen = sandboxes.quiesce(&id).await?;
        let started = Instant::now();
        let previous = artifacts.take_index(session.id);
        let restored = cordon_artifacts::restore(
            &artifacts.blobs,
            &version.root,
            &workspace.root,
            Some(workspace.uid),
            previous.as_ref(),
        )
        .await;
        let took = started.elapsed();
        if frozen && let Err(error) = sandboxes.unquiesce(&id).await {
            tracing::error!(session = %session.id, %error, "cannot thaw the sandbox after a restore");
        }
        let (stats, index) = restored?;
        // The next checkpoint reads only what changes after the restore.
        artifacts.put_index(session.id, index);
        metrics::histogram!("cordon_artifact_restore_seconds").record(took.as_secs_f64());
        self.telemetry().restore(session, took.as_secs_f64());
        Ok(stats)
    }

    /// After a lost sandbox was replaced: bring back the latest version, if any.
    pub(crate) async fn restore_head(&self, session: &Session) -> Result<()> {
        if self.artifacts().is_none() {
            return Ok(());
        }
        let Some(head) = self
            .inner
            .store
            .head_version(session.tenant_id, session.id)
            .await?
        else {
            return Ok(());
        };
        let stats = self.restore_into(session, &head).await?;
        self.evidence(
            Record::new(session.tenant_id, Some(session.id), "restore", "system")
                .field("version", head.id.to_string())
                .field("root", head.root.clone())
                .field("files_written", stats.files_written)
                .field(
                    "why",
                    "the sandbox was lost; its latest version was restored",
                ),
        )
        .await;
        Ok(())
    }

    /// A new, active session whose workspace starts as `version` of `source`.
    pub async fn fork(
        &self,
        source: &Session,
        version: &WorkspaceVersion,
        spec: SessionSpec,
        actor: &str,
    ) -> Result<(Session, WorkspaceVersion)> {
        self.artifacts_or_unavailable()?;
        let created = self.create_session(spec, actor).await?;
        let active = self
            .transition(
                &created,
                SessionAction::Activate,
                actor,
                Some(format!("fork of {} at {}", source.id, version.id)),
            )
            .await?;
        if let Err(error) = self.restore_into(&active, version).await {
            // Do not leave a half-made fork running.
            let _ = self
                .transition(
                    &active,
                    SessionAction::Close,
                    "system",
                    Some("fork failed".into()),
                )
                .await;
            return Err(error);
        }
        let forked = WorkspaceVersion {
            id: VersionId::generate(),
            tenant_id: active.tenant_id,
            session_id: active.id,
            parent: None,
            root: version.root.clone(),
            summary: format!("fork of {} version {}", source.id, version.id),
            stats: VersionStats {
                blobs_written: 0,
                bytes_written: 0,
                ..version.stats
            },
            origin: "fork".to_owned(),
            created_by: actor.to_owned(),
            created_at: Timestamp::now(),
            deleted_at: None,
        };
        self.inner.store.create_version(&forked).await?;
        self.evidence(
            version_record(&forked, "fork", actor)
                .field("source_session", source.id.to_string())
                .field("source_version", version.id.to_string()),
        )
        .await;
        Ok((active, forked))
    }

    /// Stores an uploaded tar archive as the session's next version. `parent` must be
    /// the session's latest version (`If-Match`); a hostile archive stores nothing.
    pub async fn upload_version(
        &self,
        session: &Session,
        parent: Option<VersionId>,
        archive: &[u8],
        summary: String,
        actor: &str,
    ) -> Result<WorkspaceVersion> {
        let artifacts = self.artifacts_or_unavailable()?;
        let lock = self.session_lock(session.id);
        let _turn = lock.lock().await;
        // Refuse a stale parent before reading the archive.
        let head = self
            .inner
            .store
            .head_version(session.tenant_id, session.id)
            .await?;
        if head.as_ref().map(|v| v.id) != parent {
            return Err(ControlError::Store(StoreError::VersionConflict {
                head: head.map(|v| v.id.to_string()),
            }));
        }
        let snapshot = cordon_artifacts::import_tar(
            &artifacts.blobs,
            std::io::Cursor::new(archive.to_vec()),
            &ArchiveLimits::default(),
        )
        .await?;
        let summary = artifacts.redacted(session.tenant_id, &summary).await;
        let version = WorkspaceVersion {
            id: VersionId::generate(),
            tenant_id: session.tenant_id,
            session_id: session.id,
            parent,
            root: snapshot.root,
            summary,
            stats: snapshot.stats,
            origin: "upload".to_owned(),
            created_by: actor.to_owned(),
            created_at: Timestamp::now(),
            deleted_at: None,
        };
        self.inner.store.create_version(&version).await?;
        self.evidence(version_record(&version, "upload", actor))
            .await;
        Ok(version)
    }

    /// Promotes `version` (every file, or `spec.paths`) to the signed release
    /// `spec.name`.
    pub async fn promote(
        &self,
        session: &Session,
        version: &WorkspaceVersion,
        spec: PromoteSpec<'_>,
    ) -> Result<Release> {
        let artifacts = self.artifacts_or_unavailable()?;
        let release = cordon_artifacts::release::promote(
            &artifacts.blobs,
            &artifacts.signer,
            cordon_artifacts::release::Promotion {
                tenant_id: session.tenant_id,
                session_id: session.id,
                version,
                name: spec.name,
                paths: spec.paths,
                actor: spec.actor,
                policy_version: spec.policy_version,
                workflow_run: spec.workflow_run.map(str::to_owned),
            },
        )
        .await?;
        self.inner.store.create_release(&release).await?;
        self.evidence(
            Record::new(session.tenant_id, Some(session.id), "promotion", spec.actor)
                .field("release", release.id.to_string())
                .field("name", release.name.clone())
                .field("version", version.id.to_string())
                .field("root", release.root.clone())
                .field("paths", spec.paths.to_vec()),
        )
        .await;
        Ok(release)
    }

    /// At close: forget the snapshot index and export the session's evidence bundle.
    pub(crate) async fn artifacts_after_close(&self, session: &Session) {
        let Some(artifacts) = self.artifacts() else {
            return;
        };
        artifacts.forget_index(session.id);
        let Some(dir) = artifacts.export_dir.clone() else {
            return;
        };
        let bundle = match artifacts
            .evidence
            .export(session.tenant_id, Some(session.id))
            .await
        {
            Ok(bundle) => bundle,
            Err(error) => {
                tracing::error!(session = %session.id, %error, "cannot export the closed session's evidence");
                return;
            }
        };
        let dir = dir.join(session.tenant_id.to_string());
        let path = dir.join(format!("{}.evidence.json", session.id));
        let written =
            tokio::task::spawn_blocking(move || write_durably(&dir, &path, &bundle)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(session = %session.id, %error, "cannot write the closed session's evidence bundle")
            }
            Err(error) => {
                tracing::error!(session = %session.id, %error, "evidence export task failed")
            }
        }
    }

    /// One retention pass over every tenant: versions of long-closed sessions, old
    /// evidence payloads, old releases; then unreferenced blobs. Every removal is
    /// itself recorded as evidence.
    pub async fn sweep_retention(&self) -> Result<RetentionReport> {
        let artifacts = Arc::clone(self.artifacts_or_unavailable()?);
        let store = &self.inner.store;
        let now = Timestamp::now();
        let mut report = RetentionReport::default();
        // Working state of closed sessions, page by page: every closed session is
        // looked at, not only the oldest page (those stay closed, and old, forever).
        let mut after = None;
        loop {
            let page = store
                .closed_sessions(now, after, CLOSED_SESSIONS_PAGE)
                .await?;
            let last_page = page.len() < CLOSED_SESSIONS_PAGE as usize;
            after = page.last().map(|s| (s.updated_at, s.id));
            for session in page {
                let Some(rule) = artifacts.rule_for(&session.workload_class) else {
                    continue;
                };
                let Some(days) = rule.working_state_days else {
                    continue;
                };
                if session.updated_at > days_ago(now, days) {
                    continue;
                }
                let versions = store
                    .list_versions(session.tenant_id, session.id, None, 1000)
                    .await?;
                let doomed: Vec<VersionId> = versions
                    .iter()
                    .skip(rule.keep_last_versions as usize)
                    .map(|v| v.id)
                    .collect();
                if doomed.is_empty() {
                    continue;
                }
                let removed = store
                    .delete_versions(session.tenant_id, &doomed, now)
                    .await?;
                report.versions_removed += removed;
                self.evidence(
                    Record::new(session.tenant_id, Some(session.id), "retention", "system")
                        .field("class", "working_state")
                        .field("versions_removed", removed)
                        .field("kept", u64::from(rule.keep_last_versions))
                        .field("rule_days", u64::from(days)),
                )
                .await;
            }
            if last_page {
                break;
            }
        }
        // Evidence payloads and releases, per tenant, by the catch-all rule (the log is
        // the tenant's, not a workload class's).
        let tenant_rule = artifacts
            .retention
            .iter()
            .find(|r| r.workload_class.is_none())
            .cloned();
        for tenant in store.list_tenants().await? {
            let Some(rule) = &tenant_rule else {
                break;
            };
            if let Some(days) = rule.evidence_days {
                let shredded = store
                    .shred_evidence(tenant.id, None, days_ago(now, days))
                    .await?;
                if shredded > 0 {
                    report.fields_shredded += shredded;
                    self.evidence(
                        Record::new(tenant.id, None, "retention", "system")
                            .field("class", "evidence")
                            .field("fields_shredded", shredded)
                            .field("rule_days", u64::from(days)),
                    )
                    .await;
                }
            }
            if let Some(days) = rule.releases_days {
                let cutoff = days_ago(now, days);
                for release in store.list_releases(tenant.id).await? {
                    if release.created_at > cutoff {
                        continue;
                    }
                    store.delete_release(tenant.id, release.id, now).await?;
                    report.releases_removed += 1;
                    self.evidence(
                        Record::new(tenant.id, Some(release.session_id), "retention", "system")
                            .field("class", "release")
                            .field("release", release.id.to_string())
                            .field("name", release.name.clone())
                            .field("rule_days", u64::from(days)),
                    )
                    .await;
                }
            }
        }
        let roots = store.live_artifact_roots().await?;
        let gc =
            cordon_artifacts::collect_garbage(&artifacts.blobs, &roots, artifacts.gc_grace).await?;
        report.blobs_deleted = gc.deleted;
        report.bytes_freed = gc.bytes_freed;
        Ok(report)
    }
}

fn version_record(version: &WorkspaceVersion, kind: &str, actor: &str) -> Record {
    Record::new(version.tenant_id, Some(version.session_id), kind, actor)
        .field("version", version.id.to_string())
        .field("parent", version.parent.map(|p| p.to_string()))
        .field("root", version.root.clone())
        .field("summary", version.summary.clone())
        .field("files", version.stats.files)
        .field("bytes", version.stats.bytes)
}

fn metrics_version(version: &WorkspaceVersion, frozen_for: Duration) {
    metrics::counter!("cordon_artifact_versions_total", "origin" => version.origin.clone())
        .increment(1);
    metrics::counter!("cordon_artifact_bytes_written_total").increment(version.stats.bytes_written);
    metrics::histogram!("cordon_artifact_checkpoint_seconds").record(frozen_for.as_secs_f64());
}

/// Writes `bytes` to `path` through a temporary file, fsyncing the file and directory.
fn write_durably(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
