//! `SqliteStore`: the single writer thread, the reader pool and the `Store` methods.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cordon_core::{
    ApiKey, CredentialLease, CredentialLeaseId, EgressDecision, EgressDecisionFilter,
    EgressPolicyVersion, EventSeq, EvidenceCheckpoint, EvidenceEntry, EvidenceField,
    EvidenceFilter, Fact, FactFilter, KeyId, Lease, NewEvidenceEntry, NewSession, Phase, Release,
    ReleaseId, SecretId, SecretRecord, Session, SessionEvent, SessionFilter, SessionId,
    StoredBytes, Tenant, TenantId, Timestamp, VersionId, WorkspaceVersion,
};
use cordon_store::migrations::{self, Migration};
use cordon_store::{
    Backend, IdempotencyScope, IdempotencyStart, LeaseOutcome, RecordedResponse, Result, Store,
    StoreError, Transition, duration_micros,
};
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params, params_from_iter};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::rows::{
    self, CHECKPOINT_COLUMNS, CREDENTIAL_LEASE_COLUMNS, DECISION_COLUMNS, ENTRY_COLUMNS,
    EVENT_COLUMNS, FACT_COLUMNS, KEY_COLUMNS, POLICY_COLUMNS, RELEASE_COLUMNS, SECRET_COLUMNS,
    SESSION_COLUMNS, TENANT_COLUMNS, VERSION_COLUMNS,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sql: include_str!("../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "idempotency_expiry",
        sql: include_str!("../migrations/0002_idempotency_expiry.sql"),
    },
    Migration {
        version: 3,
        name: "egress",
        sql: include_str!("../migrations/0003_egress.sql"),
    },
    Migration {
        version: 4,
        name: "artifacts",
        sql: include_str!("../migrations/0004_artifacts.sql"),
    },
    Migration {
        version: 5,
        name: "workflows",
        sql: include_str!("../migrations/0005_workflows.sql"),
    },
    Migration {
        version: 6,
        name: "telemetry",
        sql: include_str!("../migrations/0006_telemetry.sql"),
    },
];

/// How many evidence entries `list_evidence` returns when the filter's limit is 0.
const DEFAULT_EVIDENCE_LIMIT: u32 = 1000;

/// How to open the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// Most write jobs committed together in one transaction (one fsync).
    pub max_batch: usize,
    /// Most concurrent read connections.
    pub readers: usize,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_batch: 256,
            readers: 4,
        }
    }
}

/// Called on the writer thread once the batch holding the job has committed (or not).
type Finish = Box<dyn FnOnce(Result<()>) + Send>;
/// Runs on the writer thread inside the batch's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Finish + Send>;

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Job>,
    idle_readers: Mutex<Vec<Connection>>,
    read_slots: Arc<Semaphore>,
    counters: Arc<WriterCounters>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn sql(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(error.to_string())
        }
        Some(ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Backend(error.to_string()),
    }
}

pub(crate) fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn is_foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let connection =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql)?;
    // WAL lets readers run beside the writer; FULL makes every commit fsync the WAL, so
    // an acknowledged write survives power loss, not only a process crash.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(sql)?;
    Ok(connection)
}

fn migrate(connection: &Connection) -> Result<()> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS cordon_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 checksum INTEGER NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .map_err(sql)?;
    let applied = {
        let mut statement = connection
            .prepare("SELECT version, checksum FROM cordon_migrations")
            .map_err(sql)?;
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<(i64, i64)>, _>>()
            .map_err(sql)?
    };
    let pending = migrations::pending(MIGRATIONS, &applied)
        .map_err(|error| StoreError::Backend(error.to_string()))?;
    for migration in pending {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        let script = format!(
            "BEGIN IMMEDIATE; {} ; INSERT INTO cordon_migrations VALUES ({}, '{}', {}, {}); COMMIT;",
            migration.sql,
            migration.version,
            migration.name,
            migration.checksum(),
            Timestamp::now().unix_micros()
        );
        if let Err(error) = connection.execute_batch(&script) {
            let _ = connection.execute_batch("ROLLBACK");
            return Err(sql(error));
        }
    }
    Ok(())
}

/// Counters of the writer thread: how well group commit is batching.
#[derive(Debug, Default)]
struct WriterCounters {
    commits: AtomicU64,
    jobs: AtomicU64,
}

/// A snapshot of the writer's counters since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Write jobs run inside them.
    pub jobs: u64,
}

fn writer_loop(
    connection: Connection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    counters: Arc<WriterCounters>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters
            .jobs
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let finishers: Vec<Finish>;
        let commit = match connection.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                finishers = batch.drain(..).map(|job| job(&connection)).collect();
                connection.execute_batch("COMMIT").map_err(sql)
            }
            Err(error) => {
                // The jobs never ran; each still gets an answer.
                finishers = batch
                    .drain(..)
                    .map(|_job| -> Finish { Box::new(|_: Result<()>| {}) })
                    .collect();
                Err(sql(error))
            }
        };
        if let Err(error) = &commit {
            tracing::error!(%error, "sqlite batch commit failed");
            let _ = connection.execute_batch("ROLLBACK");
        }
        for finish in finishers {
            finish(commit.clone());
        }
    }
}

fn in_savepoint<T>(
    connection: &Connection,
    operation: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    connection.execute_batch("SAVEPOINT job").map_err(sql)?;
    match operation(connection) {
        Ok(value) => {
            connection.execute_batch("RELEASE job").map_err(sql)?;
            Ok(value)
        }
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(error)
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations and starts the writer.
    pub fn open(options: SqliteOptions) -> Result<Self> {
        if let Some(parent) = options.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                StoreError::Unavailable(format!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let writer = open_connection(
            &options.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        migrate(&writer)?;
        let (sender, receiver) = mpsc::channel::<Job>(options.max_batch.max(1) * 16);
        let max_batch = options.max_batch.max(1);
        let counters = Arc::new(WriterCounters::default());
        let writer_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("cordon-sqlite-writer".into())
            .spawn(move || writer_loop(writer, receiver, max_batch, writer_counters))
            .map_err(|error| StoreError::Backend(format!("cannot start writer: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: options.path,
                writer: sender,
                idle_readers: Mutex::new(Vec::new()),
                read_slots: Arc::new(Semaphore::new(options.readers.max(1))),
                counters,
            }),
        })
    }

    /// How many transactions the writer committed and how many jobs they carried.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            commits: self.inner.counters.commits.load(Ordering::Relaxed),
            jobs: self.inner.counters.jobs.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn write<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let outcome = in_savepoint(connection, operation);
            Box::new(move |commit: Result<()>| {
                let _ = reply.send(commit.and(outcome));
            })
        });
        let stopped = || {
            StoreError::Unavailable(
                "the sqlite writer dropped the request (see the server log)".into(),
            )
        };
        self.inner.writer.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = Arc::clone(&self.inner.read_slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .idle_readers
                .lock()
                .ok()
                .and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => open_connection(
                    &inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
                )?,
            };
            let outcome = operation(&connection);
            if let Ok(mut idle) = inner.idle_readers.lock() {
                idle.push(connection);
            }
            drop(permit);
            outcome
        })
        .await
        .map_err(|error| StoreError::Backend(format!("reader task failed: {error}")))?
    }

    /// Creates the table the benchmark's raw baseline writes to.
    pub async fn prepare_durable_probe(&self) -> Result<()> {
        self.write(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS bench_probe (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
            )
            .map_err(sql)
        })
        .await
    }

    /// Inserts one row into `bench_probe` through the same writer and batching as every
    /// other write: the physical baseline the benchmark compares session creates against.
    pub async fn durable_probe_insert(&self, payload: Vec<u8>) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO bench_probe (payload) VALUES (?1)")
                .and_then(|mut s| s.execute(params![payload]))
                .map(drop)
                .map_err(sql)
        })
        .await
    }
}

fn select_session(c: &Connection, tenant: &str, id: &str) -> Result<Option<Session>> {
    let query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND tenant_id = ?2");
    let mut statement = c.prepare_cached(&query).map_err(sql)?;
    let mut found = statement.query(params![id, tenant]).map_err(sql)?;
    match found.next().map_err(sql)? {
        Some(row) => rows::session(row).map(Some),
        None => Ok(None),
    }
}

fn insert_event(c: &Connection, event: &SessionEvent) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO session_events (session_id, seq, actor, from_phase, to_phase, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event.session_id.to_string(),
            event.seq,
            event.actor,
            event.from.map(Phase::as_str),
            event.to.as_str(),
            event.reason,
            event.at.unix_micros(),
        ])
    })
    .map(drop)
    .map_err(sql)
}

fn insert_key(c: &Connection, key: &ApiKey) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO api_keys (id, tenant_id, role, name, system, token_digest, created_by, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id.to_string(),
            key.tenant_id.to_string(),
            key.role.as_str(),
            key.name,
            key.system,
            key.token_digest.as_slice(),
            key.created_by.map(|id| id.to_string()),
            key.created_at.unix_micros(),
            key.revoked_at.map(Timestamp::unix_micros),
        ])
    })
    .map(drop)
    .map_err(|error| if is_foreign_key_violation(&error) { StoreError::NotFound } else { sql(error) })
}

fn insert_tenant(c: &Connection, tenant: &Tenant) -> Result<()> {
    c.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| {
            s.execute(params![
                tenant.id.to_string(),
                tenant.name,
                tenant.created_at.unix_micros()
            ])
        })
        .map(drop)
        .map_err(|error| {
            if is_unique_violation(&error) {
                StoreError::TenantNameTaken(tenant.name.clone())
            } else {
                sql(error)
            }
        })
}

pub(crate) fn query_all<T>(
    c: &Connection,
    query: &str,
    values: impl rusqlite::Params,
    convert: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = c.prepare_cached(query).map_err(sql)?;
    let mut found = statement.query(values).map_err(sql)?;
    let mut items = Vec::new();
    while let Some(row) = found.next().map_err(sql)? {
        items.push(convert(row)?);
    }
    Ok(items)
}

/// A foreign-key violation means the tenant (or session, or secret) the row points at is
/// missing.
pub(crate) fn sql_or_not_found(error: rusqlite::Error) -> StoreError {
    if is_foreign_key_violation(&error) {
        StoreError::NotFound
    } else {
        sql(error)
    }
}

/// A count or size kept in a signed column, saturating (no real value comes close).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn select_credential_lease(
    c: &Connection,
    tenant: &str,
    id: &str,
) -> Result<Option<CredentialLease>> {
    let query = format!(
        "SELECT {CREDENTIAL_LEASE_COLUMNS} FROM credential_leases WHERE id = ?1 AND tenant_id = ?2"
    );
    Ok(query_all(c, &query, params![id, tenant], rows::credential_lease)?.pop())
}

fn insert_decision(c: &Connection, decision: &EgressDecision) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO egress_decisions (tenant_id, session_id, at, kind, host, port, address,
             method, path, reason, mode, service_class, rule, policy_version, credential, status,
             bytes_sent, bytes_received, duration_micros)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19)",
    )
    .and_then(|mut s| {
        s.execute(params![
            decision.tenant_id.to_string(),
            decision.session_id.to_string(),
            decision.at.unix_micros(),
            decision.kind,
            decision.host,
            decision.port,
            decision.address,
            decision.method,
            decision.path,
            decision.reason.as_str(),
            decision.mode,
            decision.service_class,
            decision.rule,
            decision.policy_version,
            decision.credential,
            decision.status,
            signed(decision.bytes_sent),
            signed(decision.bytes_received),
            decision.duration_micros,
        ])
    })
    .map(drop)
    .map_err(sql_or_not_found)
}

/// The id of the session's latest live version.
fn head_version_id(c: &Connection, tenant: &str, session: &str) -> Result<Option<String>> {
    c.prepare_cached(
        "SELECT id FROM workspace_versions
         WHERE tenant_id = ?1 AND session_id = ?2 AND deleted_at IS NULL
         ORDER BY id DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant, session], |row| row.get(0))
            .optional()
    })
    .map_err(sql)
}

fn insert_version(c: &Connection, version: &WorkspaceVersion) -> rusqlite::Result<()> {
    let query = format!(
        "INSERT INTO workspace_versions ({VERSION_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    );
    let stats = &version.stats;
    c.prepare_cached(&query).and_then(|mut s| {
        s.execute(params![
            version.id.to_string(),
            version.tenant_id.to_string(),
            version.session_id.to_string(),
            version.parent.map(|id| id.to_string()),
            version.root,
            version.summary,
            signed(stats.files),
            signed(stats.dirs),
            signed(stats.symlinks),
            signed(stats.bytes),
            signed(stats.blobs_written),
            signed(stats.bytes_written),
            version.origin,
            version.created_by,
            version.created_at.unix_micros(),
            version.deleted_at.map(Timestamp::unix_micros),
        ])
        .map(drop)
    })
}

fn insert_evidence_entry(c: &Connection, index: u64, entry: &NewEvidenceEntry) -> Result<()> {
    let tenant = entry.tenant_id.to_string();
    let index = signed(index);
    let query = format!(
        "INSERT INTO evidence_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    );
    c.prepare_cached(&query)
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                index,
                entry.session_id.map(|id| id.to_string()),
                entry.kind,
                entry.at.unix_micros(),
                entry.leaf,
                entry.leaf_hash.as_slice(),
            ])
        })
        .map_err(sql_or_not_found)?;
    let mut insert_field = c
        .prepare_cached(
            "INSERT INTO evidence_fields (tenant_id, idx, name, salt, value)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql)?;
    for field in &entry.fields {
        insert_field
            .execute(params![tenant, index, field.name, field.salt, field.value])
            .map_err(sql)?;
    }
    Ok(())
}

/// Hands each field to its entry; fields come in (index, name) order, so each entry's
/// fields end up sorted by name.
fn attach_fields(entries: &mut [EvidenceEntry], fields: Vec<(u64, EvidenceField)>) {
    for (index, field) in fields {
        if let Ok(position) = entries.binary_search_by_key(&index, |entry| entry.index) {
            entries[position].fields.push(field);
        }
    }
}

fn lease_from_row(session_id: SessionId, row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        session_id,
        holder: row.get(0)?,
        token: row.get(1)?,
        expires_at: Timestamp::from_unix_micros(row.get(2)?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql))
            .await?;
        self.write(|_| Ok(())).await
    }

    async fn bootstrap(&self, tenant: &Tenant, admin_key: &ApiKey) -> Result<bool> {
        let (tenant, admin_key) = (tenant.clone(), admin_key.clone());
        self.write(move |c| {
            let any: bool = c
                .query_row("SELECT EXISTS (SELECT 1 FROM tenants)", [], |row| {
                    row.get(0)
                })
                .map_err(sql)?;
            if any {
                return Ok(false);
            }
            insert_tenant(c, &tenant)?;
            insert_key(c, &admin_key)?;
            Ok(true)
        })
        .await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        let tenant = tenant.clone();
        self.write(move |c| insert_tenant(c, &tenant)).await
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.read(move |c| {
            let query = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
            Ok(query_all(c, &query, params![id.to_string()], rows::tenant)?.pop())
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.read(|c| {
            let query = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id");
            query_all(c, &query, [], rows::tenant)
        })
        .await
    }

    async fn create_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| insert_key(c, &key)).await
    }

    async fn get_key_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiKey>> {
        let digest = *digest;
        self.read(move |c| {
            let query = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE token_digest = ?1");
            Ok(query_all(c, &query, params![digest.as_slice()], rows::key)?.pop())
        })
        .await
    }

    async fn get_key(&self, tenant_id: TenantId, id: KeyId) -> Result<Option<ApiKey>> {
        self.read(move |c| {
            let query =
                format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND tenant_id = ?2");
            let values = params![id.to_string(), tenant_id.to_string()];
            Ok(query_all(c, &query, values, rows::key)?.pop())
        })
        .await
    }

    async fn list_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>> {
        self.read(move |c| {
            let query =
                format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY id");
            query_all(c, &query, params![tenant_id.to_string()], rows::key)
        })
        .await
    }

    async fn revoke_key(&self, tenant_id: TenantId, id: KeyId, at: Timestamp) -> Result<ApiKey> {
        self.write(move |c| {
            let query = format!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1)
                 WHERE id = ?2 AND tenant_id = ?3 RETURNING {KEY_COLUMNS}"
            );
            let values = params![at.unix_micros(), id.to_string(), tenant_id.to_string()];
            query_all(c, &query, values, rows::key)?
                .pop()
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn create_session(&self, new: &NewSession, actor: &str) -> Result<Session> {
        let (session, event) = new.created(actor);
        let labels = serde_json::to_string(&session.labels)
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sessions (id, tenant_id, owner, workload_class, environment, labels,
                     policy_version, phase, version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    session.id.to_string(),
                    session.tenant_id.to_string(),
                    session.owner.to_string(),
                    session.workload_class,
                    session.environment,
                    labels,
                    session.policy_version,
                    session.phase.as_str(),
                    session.version,
                    session.created_at.unix_micros(),
                ])
            })
            .map_err(|error| {
                if is_foreign_key_violation(&error) {
                    StoreError::NotFound
                } else {
                    sql(error)
                }
            })?;
            insert_event(c, &event)?;
            Ok(session)
        })
        .await
    }

    async fn get_session(&self, tenant_id: TenantId, id: SessionId) -> Result<Option<Session>> {
        self.read(move |c| select_session(c, &tenant_id.to_string(), &id.to_string()))
            .await
    }

    async fn list_sessions(
        &self,
        tenant_id: TenantId,
        filter: &SessionFilter,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let mut query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?");
        let mut values = vec![Value::Text(tenant_id.to_string())];
        let mut condition = |column: &str, value: String| {
            query.push_str(&format!(" AND {column} ?"));
            values.push(Value::Text(value));
        };
        if let Some(phase) = filter.phase {
            condition("phase =", phase.as_str().to_owned());
        }
        if let Some(class) = &filter.workload_class {
            condition("workload_class =", class.clone());
        }
        if let Some(environment) = &filter.environment {
            condition("environment =", environment.clone());
        }
        if let Some(owner) = filter.owner {
            condition("owner =", owner.to_string());
        }
        if let Some(after) = filter.after {
            condition("id >", after.to_string());
        }
        query.push_str(" ORDER BY id LIMIT ?");
        values.push(Value::Integer(i64::from(limit)));
        self.read(move |c| query_all(c, &query, params_from_iter(values), rows::session))
            .await
    }

    async fn count_sessions_by_phase(&self) -> Result<Vec<(Phase, u64)>> {
        self.read(|c| {
            let mut statement = c
                .prepare_cached("SELECT phase, COUNT(*) FROM sessions GROUP BY phase")
                .map_err(sql)?;
            let mut found = statement.query([]).map_err(sql)?;
            let mut counts = Vec::new();
            while let Some(row) = found.next().map_err(sql)? {
                let phase: String = row.get(0).map_err(sql)?;
                let count: i64 = row.get(1).map_err(sql)?;
                counts.push((
                    rows::parse("phase", &phase)?,
                    u64::try_from(count).unwrap_or(0),
                ));
            }
            Ok(counts)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseOutcome> {
        let holder = holder.to_owned();
        let expires_at = now.saturating_add_micros(duration_micros(ttl));
        self.write(move |c| {
            let id = session_id.to_string();
            // Take the lease if it is free, expired or already ours; the token moves on
            // only when the holder changes.
            let taken = c
                .prepare_cached(
                    "INSERT INTO session_leases (session_id, holder, token, expires_at)
                     SELECT id, ?2, 1, ?3 FROM sessions WHERE id = ?1 AND tenant_id = ?4
                     ON CONFLICT (session_id) DO UPDATE SET
                         token = CASE WHEN holder = excluded.holder THEN token ELSE token + 1 END,
                         holder = excluded.holder,
                         expires_at = excluded.expires_at
                     WHERE holder = excluded.holder OR expires_at <= ?5
                     RETURNING holder, token, expires_at",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            id,
                            holder,
                            expires_at.unix_micros(),
                            tenant_id.to_string(),
                            now.unix_micros()
                        ],
                        |row| lease_from_row(session_id, row),
                    )
                    .optional()
                })
                .map_err(sql)?;
            if let Some(lease) = taken {
                return Ok(LeaseOutcome::Acquired(lease));
            }
            let current = c
                .prepare_cached(
                    "SELECT l.holder, l.token, l.expires_at FROM session_leases l
                     JOIN sessions s ON s.id = l.session_id
                     WHERE l.session_id = ?1 AND s.tenant_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![id, tenant_id.to_string()], |row| {
                        lease_from_row(session_id, row)
                    })
                    .optional()
                })
                .map_err(sql)?;
            current.map(LeaseOutcome::Held).ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE session_leases SET expires_at = 0
                 WHERE session_id = ?1 AND holder = ?2 AND token = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    lease.session_id.to_string(),
                    lease.holder,
                    lease.token
                ])
            })
            .map(drop)
            .map_err(sql)
        })
        .await
    }

    async fn transition(&self, transition: &Transition) -> Result<Session> {
        let t = transition.clone();
        self.write(move |c| {
            let (id, tenant) = (t.session_id.to_string(), t.tenant_id.to_string());
            // Phase and fencing token are checked in the very statement that writes.
            let query = format!(
                "UPDATE sessions SET phase = ?1, version = version + 1, updated_at = ?2,
                        outcome = COALESCE(?7, outcome)
                 WHERE id = ?3 AND tenant_id = ?4 AND phase = ?5
                   AND EXISTS (SELECT 1 FROM session_leases WHERE session_id = ?3 AND token = ?6)
                 RETURNING {SESSION_COLUMNS}"
            );
            let values = params![
                t.to.as_str(),
                t.at.unix_micros(),
                id,
                tenant,
                t.from.as_str(),
                t.fence,
                t.outcome.map(|o| o.as_str())
            ];
            if let Some(session) = query_all(c, &query, values, rows::session)?.pop() {
                insert_event(
                    c,
                    &SessionEvent {
                        session_id: t.session_id,
                        seq: session.version,
                        actor: t.actor,
                        from: Some(t.from),
                        to: t.to,
                        reason: t.reason,
                        at: t.at,
                    },
                )?;
                return Ok(session);
            }
            let current = select_session(c, &tenant, &id)?.ok_or(StoreError::NotFound)?;
            let token: Option<i64> = c
                .query_row(
                    "SELECT token FROM session_leases WHERE session_id = ?1",
                    params![id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            if token != Some(t.fence) {
                return Err(StoreError::LeaseFenced {
                    presented: t.fence,
                    current: token.unwrap_or(0),
                });
            }
            Err(StoreError::PhaseChanged {
                expected: t.from,
                current: current.phase,
            })
        })
        .await
    }

    async fn list_events(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        after: EventSeq,
        limit: u32,
    ) -> Result<Vec<SessionEvent>> {
        self.read(move |c| {
            let id = session_id.to_string();
            if select_session(c, &tenant_id.to_string(), &id)?.is_none() {
                return Err(StoreError::NotFound);
            }
            let query = format!(
                "SELECT {EVENT_COLUMNS} FROM session_events
                 WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            );
            query_all(c, &query, params![id, after, limit], rows::event)
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &[u8; 32],
        now: Timestamp,
        stale_after: Duration,
    ) -> Result<IdempotencyStart> {
        let scope = scope.clone();
        let fingerprint = *fingerprint;
        let stale_before = now.saturating_add_micros(-duration_micros(stale_after));
        self.write(move |c| {
            let keys = params![scope.tenant_id.to_string(), scope.principal.to_string(), scope.key];
            let existing = c
                .prepare_cached(
                    "SELECT fingerprint, status, body, created_at FROM idempotency_keys
                     WHERE tenant_id = ?1 AND principal = ?2 AND key = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(keys, |row| {
                        Ok((
                            row.get::<_, Vec<u8>>(0)?,
                            row.get::<_, Option<i64>>(1)?,
                            row.get::<_, Option<Vec<u8>>>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(sql)?;
            let start = match existing {
                None => {
                    c.prepare_cached(
                        "INSERT INTO idempotency_keys (tenant_id, principal, key, fingerprint, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            scope.tenant_id.to_string(),
                            scope.principal.to_string(),
                            scope.key,
                            fingerprint.as_slice(),
                            now.unix_micros()
                        ])
                    })
                    .map_err(sql)?;
                    IdempotencyStart::Proceed
                }
                Some((seen, _, _, _)) if seen.as_slice() != fingerprint.as_slice() => {
                    IdempotencyStart::Mismatch
                }
                Some((_, Some(status), body, _)) => IdempotencyStart::Replay(RecordedResponse {
                    status: u16::try_from(status).map_err(|e| rows::corrupt("status", e))?,
                    body: body.unwrap_or_default(),
                }),
                Some((_, None, _, created_at)) if created_at <= stale_before.unix_micros() => {
                    c.prepare_cached(
                        "UPDATE idempotency_keys SET created_at = ?4
                         WHERE tenant_id = ?1 AND principal = ?2 AND key = ?3",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            scope.tenant_id.to_string(),
                            scope.principal.to_string(),
                            scope.key,
                            now.unix_micros()
                        ])
                    })
                    .map_err(sql)?;
                    IdempotencyStart::TakeOver
                }
                Some(_) => IdempotencyStart::InFlight,
            };
            Ok(start)
        })
        .await
    }

    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        response: &RecordedResponse,
        now: Timestamp,
    ) -> Result<()> {
        let (scope, response) = (scope.clone(), response.clone());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE idempotency_keys SET status = ?4, body = ?5, completed_at = ?6
                 WHERE tenant_id = ?1 AND principal = ?2 AND key = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    scope.tenant_id.to_string(),
                    scope.principal.to_string(),
                    scope.key,
                    i64::from(response.status),
                    response.body,
                    now.unix_micros()
                ])
            })
            .map(drop)
            .map_err(sql)
        })
        .await
    }

    async fn purge_idempotency(&self, created_before: Timestamp, limit: u32) -> Result<u64> {
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM idempotency_keys WHERE (tenant_id, principal, key) IN (
                     SELECT tenant_id, principal, key FROM idempotency_keys
                     WHERE created_at < ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![created_before.unix_micros(), limit]))
            .map(|deleted| deleted as u64)
            .map_err(sql)
        })
        .await
    }

    async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<()> {
        let scope = scope.clone();
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM idempotency_keys
                 WHERE tenant_id = ?1 AND principal = ?2 AND key = ?3 AND status IS NULL",
            )
            .and_then(|mut s| {
                s.execute(params![
                    scope.tenant_id.to_string(),
                    scope.principal.to_string(),
                    scope.key
                ])
            })
            .map(drop)
            .map_err(sql)
        })
        .await
    }

    async fn put_egress_policy(&self, policy: &EgressPolicyVersion) -> Result<EgressPolicyVersion> {
        let policy = policy.clone();
        self.write(move |c| {
            // The single writer serialises puts, so the next number cannot be taken twice.
            let query = format!(
                "INSERT INTO egress_policies ({POLICY_COLUMNS})
                 SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, ?4, ?5
                 FROM egress_policies WHERE tenant_id = ?1
                 RETURNING {POLICY_COLUMNS}"
            );
            let values = params![
                policy.tenant_id.to_string(),
                policy.document,
                policy.digest,
                policy.created_by,
                policy.created_at.unix_micros(),
            ];
            let mut statement = c.prepare_cached(&query).map_err(sql)?;
            let mut inserted = statement.query(values).map_err(sql_or_not_found)?;
            match inserted.next().map_err(sql_or_not_found)? {
                Some(row) => rows::policy(row),
                None => Err(StoreError::Backend(
                    "no egress policy version inserted".into(),
                )),
            }
        })
        .await
    }

    async fn get_egress_policy(&self, tenant_id: TenantId) -> Result<Option<EgressPolicyVersion>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {POLICY_COLUMNS} FROM egress_policies
                 WHERE tenant_id = ?1 ORDER BY version DESC LIMIT 1"
            );
            Ok(query_all(c, &query, params![tenant_id.to_string()], rows::policy)?.pop())
        })
        .await
    }

    async fn list_egress_policies(&self) -> Result<Vec<EgressPolicyVersion>> {
        self.read(|c| {
            let query = format!(
                "SELECT {POLICY_COLUMNS} FROM egress_policies p
                 WHERE version = (SELECT MAX(version) FROM egress_policies
                                  WHERE tenant_id = p.tenant_id)
                 ORDER BY tenant_id"
            );
            query_all(c, &query, [], rows::policy)
        })
        .await
    }

    async fn create_secret(&self, secret: &SecretRecord) -> Result<()> {
        let secret = secret.clone();
        self.write(move |c| {
            let query = format!(
                "INSERT INTO secrets ({SECRET_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            );
            c.prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        secret.id.to_string(),
                        secret.tenant_id.to_string(),
                        secret.name,
                        secret.service_class,
                        secret.header_name,
                        secret.header_format,
                        secret.sealed_value,
                        secret.created_by,
                        secret.created_at.unix_micros(),
                        secret.deleted_at.map(Timestamp::unix_micros),
                    ])
                })
                .map(drop)
                .map_err(|error| {
                    // Ids are fresh UUIDv7s: a uniqueness conflict is the live name.
                    if is_unique_violation(&error) {
                        StoreError::SecretNameTaken(secret.name.clone())
                    } else {
                        sql_or_not_found(error)
                    }
                })
        })
        .await
    }

    async fn get_secret(&self, tenant_id: TenantId, id: SecretId) -> Result<Option<SecretRecord>> {
        self.read(move |c| {
            let query =
                format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE id = ?1 AND tenant_id = ?2");
            let values = params![id.to_string(), tenant_id.to_string()];
            Ok(query_all(c, &query, values, rows::secret)?.pop())
        })
        .await
    }

    async fn list_secrets(&self, tenant_id: TenantId) -> Result<Vec<SecretRecord>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {SECRET_COLUMNS} FROM secrets
                 WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY id"
            );
            query_all(c, &query, params![tenant_id.to_string()], rows::secret)
        })
        .await
    }

    async fn delete_secret(&self, tenant_id: TenantId, id: SecretId, at: Timestamp) -> Result<()> {
        self.write(move |c| {
            let (id, tenant) = (id.to_string(), tenant_id.to_string());
            let deleted = c
                .prepare_cached(
                    "UPDATE secrets SET deleted_at = ?1, sealed_value = X''
                     WHERE id = ?2 AND tenant_id = ?3 AND deleted_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![at.unix_micros(), id, tenant]))
                .map_err(sql)?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            c.prepare_cached(
                "UPDATE credential_leases SET revoked_at = ?1, revoke_reason = 'secret deleted'
                 WHERE secret_id = ?2 AND tenant_id = ?3 AND revoked_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![at.unix_micros(), id, tenant]))
            .map(drop)
            .map_err(sql)
        })
        .await
    }

    async fn create_credential_lease(&self, lease: &CredentialLease) -> Result<()> {
        let lease = lease.clone();
        self.write(move |c| {
            // Only for a session and a live secret of the lease's own tenant.
            let query = format!(
                "INSERT INTO credential_leases ({CREDENTIAL_LEASE_COLUMNS})
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?3 AND tenant_id = ?2)
                   AND EXISTS (SELECT 1 FROM secrets
                               WHERE id = ?4 AND tenant_id = ?2 AND deleted_at IS NULL)"
            );
            let inserted = c
                .prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        lease.id.to_string(),
                        lease.tenant_id.to_string(),
                        lease.session_id.to_string(),
                        lease.secret_id.to_string(),
                        lease.issued_by,
                        lease.issued_at.unix_micros(),
                        lease.expires_at.unix_micros(),
                        lease.max_expires_at.unix_micros(),
                        lease.revoked_at.map(Timestamp::unix_micros),
                        lease.revoke_reason,
                    ])
                })
                .map_err(sql_or_not_found)?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn get_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
    ) -> Result<Option<CredentialLease>> {
        self.read(move |c| select_credential_lease(c, &tenant_id.to_string(), &id.to_string()))
            .await
    }

    async fn list_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Vec<CredentialLease>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {CREDENTIAL_LEASE_COLUMNS} FROM credential_leases
                 WHERE tenant_id = ?1 AND session_id = ?2 ORDER BY id"
            );
            let values = params![tenant_id.to_string(), session_id.to_string()];
            query_all(c, &query, values, rows::credential_lease)
        })
        .await
    }

    async fn renew_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CredentialLease> {
        self.write(move |c| {
            let (id, tenant) = (id.to_string(), tenant_id.to_string());
            let query = format!(
                "UPDATE credential_leases SET expires_at = ?1
                 WHERE id = ?2 AND tenant_id = ?3 AND revoked_at IS NULL AND expires_at > ?4
                 RETURNING {CREDENTIAL_LEASE_COLUMNS}"
            );
            let values = params![expires_at.unix_micros(), id, tenant, now.unix_micros()];
            if let Some(lease) = query_all(c, &query, values, rows::credential_lease)?.pop() {
                return Ok(lease);
            }
            match select_credential_lease(c, &tenant, &id)? {
                Some(_) => Err(StoreError::LeaseNotLive),
                None => Err(StoreError::NotFound),
            }
        })
        .await
    }

    async fn revoke_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        at: Timestamp,
        reason: &str,
    ) -> Result<CredentialLease> {
        let reason = reason.to_owned();
        self.write(move |c| {
            // Both right-hand sides see the row as it was: the first revocation stays.
            let query = format!(
                "UPDATE credential_leases SET
                     revoked_at = COALESCE(revoked_at, ?1),
                     revoke_reason = CASE WHEN revoked_at IS NULL THEN ?2 ELSE revoke_reason END
                 WHERE id = ?3 AND tenant_id = ?4
                 RETURNING {CREDENTIAL_LEASE_COLUMNS}"
            );
            let values = params![
                at.unix_micros(),
                reason,
                id.to_string(),
                tenant_id.to_string()
            ];
            query_all(c, &query, values, rows::credential_lease)?
                .pop()
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn revoke_session_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        at: Timestamp,
        reason: &str,
    ) -> Result<u64> {
        let reason = reason.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE credential_leases SET revoked_at = ?1, revoke_reason = ?2
                 WHERE tenant_id = ?3 AND session_id = ?4 AND revoked_at IS NULL",
            )
            .and_then(|mut s| {
                s.execute(params![
                    at.unix_micros(),
                    reason,
                    tenant_id.to_string(),
                    session_id.to_string()
                ])
            })
            .map(|revoked| revoked as u64)
            .map_err(sql)
        })
        .await
    }

    async fn append_egress_decisions(&self, decisions: &[EgressDecision]) -> Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        let decisions = decisions.to_vec();
        // One job: one savepoint, so the slice lands whole or not at all, and in order.
        self.write(move |c| {
            for decision in &decisions {
                insert_decision(c, decision)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_egress_decisions(
        &self,
        tenant_id: TenantId,
        filter: &EgressDecisionFilter,
        limit: u32,
    ) -> Result<Vec<EgressDecision>> {
        let mut query =
            format!("SELECT {DECISION_COLUMNS} FROM egress_decisions WHERE tenant_id = ?");
        let mut values = vec![Value::Text(tenant_id.to_string())];
        if let Some(session_id) = filter.session_id {
            query.push_str(" AND session_id = ?");
            values.push(Value::Text(session_id.to_string()));
        }
        if let Some(reason) = filter.reason {
            query.push_str(" AND reason = ?");
            values.push(Value::Text(reason.as_str().to_owned()));
        }
        if let Some(after) = filter.after {
            query.push_str(" AND seq > ?");
            values.push(Value::Integer(after));
        }
        query.push_str(" ORDER BY seq LIMIT ?");
        values.push(Value::Integer(i64::from(limit)));
        self.read(move |c| query_all(c, &query, params_from_iter(values), rows::decision))
            .await
    }

    async fn deployment_value_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO deployment_values (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![name, value]))
            .map_err(sql)?;
            c.prepare_cached("SELECT value FROM deployment_values WHERE name = ?1")
                .and_then(|mut s| s.query_row(params![name], |row| row.get(0)))
                .map_err(sql)
        })
        .await
    }

    // ----- Artifacts: workspace versions, the evidence log, releases. -----

    async fn create_version(&self, version: &WorkspaceVersion) -> Result<()> {
        let version = version.clone();
        self.write(move |c| {
            let tenant = version.tenant_id.to_string();
            let session = version.session_id.to_string();
            let known: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND tenant_id = ?2)",
                )
                .and_then(|mut s| s.query_row(params![session, tenant], |row| row.get(0)))
                .map_err(sql)?;
            if !known {
                return Err(StoreError::NotFound);
            }
            // The single writer runs one job at a time, so the head read here is still the
            // head when the insert lands.
            let head = head_version_id(c, &tenant, &session)?;
            if head != version.parent.map(|id| id.to_string()) {
                return Err(StoreError::VersionConflict { head });
            }
            insert_version(c, &version).map_err(|error| {
                // The one-child index, or a reused id: the chain is not where the caller
                // thinks it is.
                if is_unique_violation(&error) {
                    StoreError::VersionConflict { head: head.clone() }
                } else {
                    sql_or_not_found(error)
                }
            })
        })
        .await
    }

    async fn get_version(
        &self,
        tenant_id: TenantId,
        id: VersionId,
    ) -> Result<Option<WorkspaceVersion>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {VERSION_COLUMNS} FROM workspace_versions
                 WHERE id = ?1 AND tenant_id = ?2 AND deleted_at IS NULL"
            );
            let values = params![id.to_string(), tenant_id.to_string()];
            Ok(query_all(c, &query, values, rows::version)?.pop())
        })
        .await
    }

    async fn list_versions(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        before: Option<VersionId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceVersion>> {
        let mut query = format!(
            "SELECT {VERSION_COLUMNS} FROM workspace_versions
             WHERE tenant_id = ? AND session_id = ? AND deleted_at IS NULL"
        );
        let mut values = vec![
            Value::Text(tenant_id.to_string()),
            Value::Text(session_id.to_string()),
        ];
        if let Some(before) = before {
            query.push_str(" AND id < ?");
            values.push(Value::Text(before.to_string()));
        }
        query.push_str(" ORDER BY id DESC LIMIT ?");
        values.push(Value::Integer(i64::from(limit)));
        self.read(move |c| query_all(c, &query, params_from_iter(values), rows::version))
            .await
    }

    async fn head_version(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Option<WorkspaceVersion>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {VERSION_COLUMNS} FROM workspace_versions
                 WHERE tenant_id = ?1 AND session_id = ?2 AND deleted_at IS NULL
                 ORDER BY id DESC LIMIT 1"
            );
            let values = params![tenant_id.to_string(), session_id.to_string()];
            Ok(query_all(c, &query, values, rows::version)?.pop())
        })
        .await
    }

    async fn delete_versions(
        &self,
        tenant_id: TenantId,
        ids: &[VersionId],
        at: Timestamp,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        self.write(move |c| {
            let mut delete = c
                .prepare_cached(
                    "UPDATE workspace_versions SET deleted_at = ?1
                     WHERE id = ?2 AND tenant_id = ?3 AND deleted_at IS NULL",
                )
                .map_err(sql)?;
            let tenant = tenant_id.to_string();
            let mut deleted = 0;
            for id in &ids {
                deleted += delete
                    .execute(params![at.unix_micros(), id.to_string(), tenant])
                    .map_err(sql)? as u64;
            }
            Ok(deleted)
        })
        .await
    }

    async fn live_artifact_roots(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT root FROM workspace_versions WHERE deleted_at IS NULL
                     UNION
                     SELECT root FROM releases WHERE deleted_at IS NULL
                     ORDER BY 1",
                )
                .map_err(sql)?;
            statement
                .query_map([], |row| row.get(0))
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sql)
        })
        .await
    }

    async fn append_evidence(&self, entries: &[NewEvidenceEntry]) -> Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let entries = entries.to_vec();
        // One job: one savepoint, so the slice lands whole or not at all.
        self.write(move |c| {
            let mut counts: BTreeMap<TenantId, u64> = BTreeMap::new();
            for entry in &entries {
                *counts.entry(entry.tenant_id).or_default() += 1;
            }
            // One head update per tenant reserves its indexes; the single writer runs one
            // append at a time, so no index is handed out twice.
            let mut next: BTreeMap<TenantId, u64> = BTreeMap::new();
            for (tenant, count) in counts {
                let size: i64 = c
                    .prepare_cached(
                        "INSERT INTO evidence_heads (tenant_id, size) VALUES (?1, ?2)
                         ON CONFLICT (tenant_id) DO UPDATE SET size = size + excluded.size
                         RETURNING size",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![tenant.to_string(), signed(count)], |row| row.get(0))
                    })
                    .map_err(sql_or_not_found)?;
                let start = rows::unsigned("evidence size", size)?
                    .checked_sub(count)
                    .ok_or_else(|| rows::corrupt("evidence size", size))?;
                next.insert(tenant, start);
            }
            let mut indexes = Vec::with_capacity(entries.len());
            for entry in &entries {
                let slot = next
                    .get_mut(&entry.tenant_id)
                    .ok_or_else(|| StoreError::Backend("evidence tenant not counted".into()))?;
                let index = *slot;
                *slot += 1;
                insert_evidence_entry(c, index, entry)?;
                indexes.push(index);
            }
            Ok(indexes)
        })
        .await
    }

    async fn list_evidence(
        &self,
        tenant_id: TenantId,
        filter: &EvidenceFilter,
    ) -> Result<Vec<EvidenceEntry>> {
        let limit = match filter.limit {
            0 => DEFAULT_EVIDENCE_LIMIT,
            limit => limit,
        };
        // The same conditions select the entries and then their fields.
        let mut conditions = String::new();
        let mut condition_values = Vec::new();
        if let Some(session_id) = filter.session_id {
            conditions.push_str(" AND e.session_id = ?");
            condition_values.push(Value::Text(session_id.to_string()));
        }
        if let Some(kind) = &filter.kind {
            conditions.push_str(" AND e.kind = ?");
            condition_values.push(Value::Text(kind.clone()));
        }
        let tenant = tenant_id.to_string();
        let from = signed(filter.from_index);
        let by_session = filter.session_id.is_some();
        self.read(move |c| {
            // Without the hint SQLite walks the primary key from `from` and filters on
            // the session: O(log) instead of O(page) at the end of a long log.
            let index = if by_session {
                " INDEXED BY evidence_entries_by_session"
            } else {
                ""
            };
            let query = format!(
                "SELECT {ENTRY_COLUMNS} FROM evidence_entries e{index}
                 WHERE e.tenant_id = ? AND e.idx >= ?{conditions} ORDER BY e.idx LIMIT ?"
            );
            let mut values = vec![Value::Text(tenant.clone()), Value::Integer(from)];
            values.extend(condition_values.iter().cloned());
            values.push(Value::Integer(i64::from(limit)));
            let mut entries = query_all(c, &query, params_from_iter(values), rows::entry)?;
            if by_session {
                // A session's entries may be far apart in the log: fetch each one's
                // fields by key rather than every field between the first and last.
                let mut fields = Vec::new();
                for entry in &entries {
                    fields.extend(query_all(
                        c,
                        "SELECT idx, name, salt, value FROM evidence_fields
                         WHERE tenant_id = ?1 AND idx = ?2 ORDER BY name",
                        params![tenant, signed(entry.index)],
                        rows::field,
                    )?);
                }
                attach_fields(&mut entries, fields);
                return Ok(entries);
            }
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                return Ok(entries);
            };
            let query = format!(
                "SELECT f.idx, f.name, f.salt, f.value FROM evidence_fields f
                 JOIN evidence_entries e ON e.tenant_id = f.tenant_id AND e.idx = f.idx
                 WHERE f.tenant_id = ? AND f.idx BETWEEN ? AND ?{conditions}
                 ORDER BY f.idx, f.name"
            );
            let mut values = vec![
                Value::Text(tenant),
                Value::Integer(signed(first.index)),
                Value::Integer(signed(last.index)),
            ];
            values.extend(condition_values);
            let fields = query_all(c, &query, params_from_iter(values), rows::field)?;
            attach_fields(&mut entries, fields);
            Ok(entries)
        })
        .await
    }

    async fn evidence_leaf_hashes(
        &self,
        tenant_id: TenantId,
        from: u64,
        to: u64,
    ) -> Result<Vec<[u8; 32]>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let query = "SELECT leaf_hash FROM evidence_entries
                         WHERE tenant_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx";
            let values = params![tenant_id.to_string(), signed(from), signed(to)];
            query_all(c, query, values, rows::leaf_hash)
        })
        .await
    }

    async fn evidence_size(&self, tenant_id: TenantId) -> Result<u64> {
        self.read(move |c| {
            let size: Option<i64> = c
                .prepare_cached("SELECT size FROM evidence_heads WHERE tenant_id = ?1")
                .and_then(|mut s| {
                    s.query_row(params![tenant_id.to_string()], |row| row.get(0))
                        .optional()
                })
                .map_err(sql)?;
            rows::unsigned("evidence size", size.unwrap_or(0))
        })
        .await
    }

    async fn shred_evidence(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        before: Timestamp,
    ) -> Result<u64> {
        self.write(move |c| {
            let (tenant, before) = (tenant_id.to_string(), before.unix_micros());
            let shredded = match session_id {
                None => c
                    .prepare_cached(
                        "DELETE FROM evidence_fields WHERE tenant_id = ?1 AND idx IN (
                             SELECT idx FROM evidence_entries WHERE tenant_id = ?1 AND at < ?2)",
                    )
                    .and_then(|mut s| s.execute(params![tenant, before])),
                Some(session_id) => c
                    .prepare_cached(
                        "DELETE FROM evidence_fields WHERE tenant_id = ?1 AND idx IN (
                             SELECT idx FROM evidence_entries
                             WHERE tenant_id = ?1 AND session_id = ?3 AND at < ?2)",
                    )
                    .and_then(|mut s| s.execute(params![tenant, before, session_id.to_string()])),
            };
            shredded.map(|count| count as u64).map_err(sql)
        })
        .await
    }

    async fn put_evidence_checkpoint(&self, checkpoint: &EvidenceCheckpoint) -> Result<()> {
        let checkpoint = checkpoint.clone();
        self.write(move |c| {
            let query = format!(
                "INSERT INTO evidence_checkpoints ({CHECKPOINT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, size) DO NOTHING"
            );
            c.prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        checkpoint.tenant_id.to_string(),
                        signed(checkpoint.size),
                        checkpoint.root.as_slice(),
                        checkpoint.note,
                        checkpoint.at.unix_micros(),
                    ])
                })
                .map(drop)
                .map_err(sql_or_not_found)
        })
        .await
    }

    async fn latest_evidence_checkpoint(
        &self,
        tenant_id: TenantId,
    ) -> Result<Option<EvidenceCheckpoint>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM evidence_checkpoints
                 WHERE tenant_id = ?1 ORDER BY size DESC LIMIT 1"
            );
            Ok(query_all(c, &query, params![tenant_id.to_string()], rows::checkpoint)?.pop())
        })
        .await
    }

    async fn list_evidence_checkpoints(
        &self,
        tenant_id: TenantId,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<EvidenceCheckpoint>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM evidence_checkpoints
                 WHERE tenant_id = ?1 AND size BETWEEN ?2 AND ?3 ORDER BY size"
            );
            let values = params![tenant_id.to_string(), signed(from_size), signed(to_size)];
            query_all(c, &query, values, rows::checkpoint)
        })
        .await
    }

    async fn create_release(&self, release: &Release) -> Result<()> {
        let release = release.clone();
        self.write(move |c| {
            // Only of a version of the release's own session and tenant.
            let query = format!(
                "INSERT INTO releases ({RELEASE_COLUMNS})
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                 WHERE EXISTS (SELECT 1 FROM workspace_versions
                               WHERE id = ?5 AND tenant_id = ?2 AND session_id = ?4)"
            );
            let inserted = c
                .prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        release.id.to_string(),
                        release.tenant_id.to_string(),
                        release.name,
                        release.session_id.to_string(),
                        release.version_id.to_string(),
                        release.root,
                        release.envelope,
                        release.created_by,
                        release.created_at.unix_micros(),
                        release.deleted_at.map(Timestamp::unix_micros),
                    ])
                })
                .map_err(|error| {
                    // Ids are fresh UUIDv7s: a uniqueness conflict is the name.
                    if is_unique_violation(&error) {
                        StoreError::ReleaseNameTaken(release.name.clone())
                    } else {
                        sql_or_not_found(error)
                    }
                })?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn get_release(&self, tenant_id: TenantId, id: ReleaseId) -> Result<Option<Release>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {RELEASE_COLUMNS} FROM releases
                 WHERE id = ?1 AND tenant_id = ?2 AND deleted_at IS NULL"
            );
            let values = params![id.to_string(), tenant_id.to_string()];
            Ok(query_all(c, &query, values, rows::release)?.pop())
        })
        .await
    }

    async fn get_release_by_name(
        &self,
        tenant_id: TenantId,
        name: &str,
    ) -> Result<Option<Release>> {
        let name = name.to_owned();
        self.read(move |c| {
            let query = format!(
                "SELECT {RELEASE_COLUMNS} FROM releases
                 WHERE tenant_id = ?1 AND name = ?2 AND deleted_at IS NULL"
            );
            let values = params![tenant_id.to_string(), name];
            Ok(query_all(c, &query, values, rows::release)?.pop())
        })
        .await
    }

    async fn list_releases(&self, tenant_id: TenantId) -> Result<Vec<Release>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {RELEASE_COLUMNS} FROM releases
                 WHERE tenant_id = ?1 AND deleted_at IS NULL ORDER BY id"
            );
            query_all(c, &query, params![tenant_id.to_string()], rows::release)
        })
        .await
    }

    async fn delete_release(
        &self,
        tenant_id: TenantId,
        id: ReleaseId,
        at: Timestamp,
    ) -> Result<()> {
        self.write(move |c| {
            let deleted = c
                .prepare_cached(
                    "UPDATE releases SET deleted_at = ?1
                     WHERE id = ?2 AND tenant_id = ?3 AND deleted_at IS NULL",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        at.unix_micros(),
                        id.to_string(),
                        tenant_id.to_string()
                    ])
                })
                .map_err(sql)?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn closed_sessions(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, SessionId)>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE phase = 'closed' AND updated_at < ?1
                   AND (?3 IS NULL OR updated_at > ?3 OR (updated_at = ?3 AND id > ?4))
                 ORDER BY updated_at, id LIMIT ?2"
            );
            let (after_at, after_id) = match after {
                Some((at, id)) => (Some(at.unix_micros()), Some(id.to_string())),
                None => (None, None),
            };
            query_all(
                c,
                &query,
                params![before.unix_micros(), limit, after_at, after_id],
                rows::session,
            )
        })
        .await
    }

    async fn append_facts(&self, facts: &[Fact]) -> Result<()> {
        if facts.is_empty() {
            return Ok(());
        }
        let facts = facts.to_vec();
        self.write(move |c| {
            let mut insert = c
                .prepare_cached(
                    "INSERT INTO telemetry_facts (tenant_id, kind, at, session_id, run_id,
                         workload_class, outcome, reason, subject, reference, value, value2,
                         bytes, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(sql)?;
            for f in &facts {
                insert
                    .execute(params![
                        f.tenant_id.to_string(),
                        f.kind.as_str(),
                        f.at.unix_micros(),
                        f.session_id.map(|s| s.to_string()),
                        f.run_id.map(|r| r.to_string()),
                        f.workload_class,
                        f.outcome,
                        f.reason,
                        f.subject,
                        f.reference,
                        f.value,
                        f.value2,
                        f.bytes,
                        f.count
                    ])
                    .map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_facts(&self, filter: &FactFilter) -> Result<Vec<Fact>> {
        let mut query = format!("SELECT {FACT_COLUMNS} FROM telemetry_facts WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(tenant) = filter.tenant_id {
            query.push_str(" AND tenant_id = ?");
            values.push(Value::Text(tenant.to_string()));
        }
        if let Some(from) = filter.from {
            query.push_str(" AND at >= ?");
            values.push(Value::Integer(from.unix_micros()));
        }
        if let Some(to) = filter.to {
            query.push_str(" AND at < ?");
            values.push(Value::Integer(to.unix_micros()));
        }
        if !filter.kinds.is_empty() {
            let marks = vec!["?"; filter.kinds.len()].join(", ");
            query.push_str(&format!(" AND kind IN ({marks})"));
            values.extend(
                filter
                    .kinds
                    .iter()
                    .map(|k| Value::Text(k.as_str().to_owned())),
            );
        }
        if !filter.run_ids.is_empty() {
            let marks = vec!["?"; filter.run_ids.len()].join(", ");
            query.push_str(&format!(" AND run_id IN ({marks})"));
            values.extend(filter.run_ids.iter().map(|r| Value::Text(r.to_string())));
        }
        if let Some(after) = filter.after {
            query.push_str(" AND seq > ?");
            values.push(Value::Integer(after));
        }
        query.push_str(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            query.push_str(" LIMIT ?");
            values.push(Value::Integer(i64::from(limit)));
        }
        self.read(move |c| query_all(c, &query, params_from_iter(values), rows::fact))
            .await
    }

    async fn stored_bytes(
        &self,
        tenant_id: Option<TenantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StoredBytes>> {
        let tenant = tenant_id.map(|t| t.to_string());
        self.read(move |c| {
            query_all(
                c,
                "SELECT v.tenant_id, v.session_id, s.workload_class,
                        json_extract(s.labels, '$.\"cordon.run\"'), v.bytes_written,
                        v.created_at, v.deleted_at
                 FROM workspace_versions v JOIN sessions s ON s.id = v.session_id
                 WHERE (?1 IS NULL OR v.tenant_id = ?1) AND v.created_at < ?3
                   AND (v.deleted_at IS NULL OR v.deleted_at >= ?2)
                 ORDER BY v.created_at, v.id",
                params![tenant, from.unix_micros(), to.unix_micros()],
                rows::stored_bytes,
            )
        })
        .await
    }

    async fn idle_sessions(&self, before: Timestamp, limit: u32) -> Result<Vec<Session>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE phase <> 'closed' AND updated_at < ?1
                 ORDER BY updated_at, id LIMIT ?2"
            );
            query_all(
                c,
                &query,
                params![before.unix_micros(), limit],
                rows::session,
            )
        })
        .await
    }
}
