//! `PostgresStore`: the connection pool, migrations and the `Store` methods.

use std::borrow::Cow;
use std::collections::BTreeMap;
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
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use crate::rows::{
    self, checkpoint_columns, credential_lease_columns, decision_columns, decision_insert_columns,
    entry_columns, event_columns, fact_columns, key_columns, lease_columns, policy_columns,
    release_columns, secret_columns, session_columns, tenant_columns, version_columns,
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

/// Key of the transaction-scoped advisory lock that serialises migrations between nodes
/// starting at the same time ("cordonmg" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_7264_6f6e_6d67;

/// How long a caller waits for a pooled connection before the store reports itself
/// unavailable; the same order as the SQLite backend's busy timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `idempotency_begin` retries when the row it collided with vanished (was
/// abandoned) before it could be read. Each retry means another request won a race.
const IDEMPOTENCY_ATTEMPTS: usize = 8;

/// Most decisions one `INSERT` carries: 19 parameters each, well under the protocol's
/// limit of 65535 parameters per statement.
const DECISIONS_PER_INSERT: usize = 1000;

/// Most evidence entries (7 parameters each) or fields (5) one `INSERT` carries.
const ROWS_PER_INSERT: usize = 1000;

/// How many evidence entries `list_evidence` returns when the filter's limit is 0.
const DEFAULT_EVIDENCE_LIMIT: u32 = 1000;

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL, e.g. `postgres://cordon:secret@db.internal:5432/cordon`.
    pub url: String,
    /// Most connections the pool keeps open.
    pub max_connections: u32,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 32,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The URL with the password of its user-info part, if any, replaced by `***`.
fn redact_password(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    match authority[..at].find(':') {
        Some(colon) => Cow::Owned(format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        )),
        None => Cow::Borrowed(url),
    }
}

/// The PostgreSQL store. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

/// Maps a driver error to the store's error vocabulary.
pub(crate) fn sql(error: sqlx::Error) -> StoreError {
    let transient = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|c| is_transient(&c)),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Backend(error.to_string())
    }
}

/// SQLSTATEs that say "not now" rather than "never": the analogue of SQLite's busy,
/// locked, disk-full and I/O errors.
fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk full, too many connections
        || code.starts_with("57P") // shutting down, crashed, cannot connect now
        || matches!(
            code,
            "40001" // serialization failure
                | "40P01" // deadlock detected
                | "55P03" // lock not available
                | "57014" // query canceled (statement timeout)
                | "25006" // read-only transaction: connected to a standby
        )
}

pub(crate) fn violates(error: &sqlx::Error, kind: ErrorKind) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.kind() == kind)
}

/// A foreign-key violation means the tenant (or session) the row points at is missing.
pub(crate) fn sql_or_not_found(error: sqlx::Error) -> StoreError {
    if violates(&error, ErrorKind::ForeignKeyViolation) {
        StoreError::NotFound
    } else {
        sql(error)
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    // One pass per pending migration: lock, look at what is applied, apply the first
    // missing one and record it, commit. A node that waited for the lock sees the work of
    // the node that held it and finds nothing left to do.
    loop {
        let mut tx = pool.begin().await.map_err(sql)?;
        // Keeps notices such as "relation already exists, skipping" out of the logs.
        sqlx::raw_sql("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS cordon_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 checksum BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        let applied = sqlx::query("SELECT version, checksum FROM cordon_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(sql)?
            .iter()
            .map(|row| Ok((rows::get::<i64>(row, 0)?, rows::get::<i64>(row, 1)?)))
            .collect::<Result<Vec<_>>>()?;
        let pending = migrations::pending(MIGRATIONS, &applied)
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let Some(migration) = pending.first() else {
            return tx.commit().await.map_err(sql);
        };
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        sqlx::query(
            "INSERT INTO cordon_migrations (version, name, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(migration.checksum())
        .bind(Timestamp::now().unix_micros())
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
    }
}

impl PostgresStore {
    /// Connects to the database and brings its schema up to date.
    pub async fn connect(options: PostgresOptions) -> Result<Self> {
        let connect: PgConnectOptions = options.url.parse().map_err(sql)?;
        let port = connect.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |_, _| {
                crate::nodelay::set_on_sockets_to(port);
                Box::pin(async { Ok(()) })
            })
            .connect_with(connect)
            .await
            .map_err(sql)?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool, for tools that need SQL the `Store` trait does not offer.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection, waiting for checked-out ones to come back. Later calls
    /// fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_tenant(executor: impl PgExecutor<'_>, tenant: &Tenant) -> Result<()> {
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(tenant.id.to_string())
        .bind(&tenant.name)
        .bind(tenant.created_at.unix_micros())
        .execute(executor)
        .await
        .map(drop)
        .map_err(|error| {
            // As in the SQLite backend, any uniqueness conflict on a new tenant is reported
            // as its name being taken (ids are fresh UUIDv7s and do not collide).
            if violates(&error, ErrorKind::UniqueViolation) {
                StoreError::TenantNameTaken(tenant.name.clone())
            } else {
                sql(error)
            }
        })
}

async fn insert_key(executor: impl PgExecutor<'_>, key: &ApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, role, name, system, token_digest, created_by,
             created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(key.id.to_string())
    .bind(key.tenant_id.to_string())
    .bind(key.role.as_str())
    .bind(&key.name)
    .bind(key.system)
    .bind(key.token_digest.as_slice())
    .bind(key.created_by.map(|id| id.to_string()))
    .bind(key.created_at.unix_micros())
    .bind(key.revoked_at.map(Timestamp::unix_micros))
    .execute(executor)
    .await
    .map(drop)
    .map_err(sql_or_not_found)
}

async fn insert_event(executor: impl PgExecutor<'_>, event: &SessionEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, actor, from_phase, to_phase, reason, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.session_id.to_string())
    .bind(event.seq)
    .bind(&event.actor)
    .bind(event.from.map(Phase::as_str))
    .bind(event.to.as_str())
    .bind(&event.reason)
    .bind(event.at.unix_micros())
    .execute(executor)
    .await
    .map(drop)
    .map_err(sql)
}

/// The advisory lock key under which decisions of `tenant` are appended. Holding it from
/// before the sequence hands out `seq` until commit makes a tenant's decisions become
/// visible in `seq` order, so that a reader paging with `after` never skips one that
/// commits late. FNV-1a; a collision between tenants only serialises them.
fn decision_lock_key(tenant: TenantId) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"cordon egress_decisions "
        .iter()
        .chain(tenant.to_string().as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A count or size kept in a `BIGINT`, saturating (no real value comes close).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn select_credential_lease(
    executor: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: CredentialLeaseId,
) -> Result<Option<CredentialLease>> {
    sqlx::query(concat!(
        "SELECT ",
        credential_lease_columns!(),
        " FROM credential_leases WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id.to_string())
    .bind(tenant_id.to_string())
    .fetch_optional(executor)
    .await
    .map_err(sql)?
    .as_ref()
    .map(rows::credential_lease)
    .transpose()
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

async fn select_session(
    executor: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: SessionId,
) -> Result<Option<Session>> {
    sqlx::query(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id.to_string())
    .bind(tenant_id.to_string())
    .fetch_optional(executor)
    .await
    .map_err(sql)?
    .as_ref()
    .map(rows::session)
    .transpose()
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        // A standby, or a database set to read-only, answers queries but takes no writes.
        let row = sqlx::query("SELECT current_setting('transaction_read_only') = 'off'")
            .fetch_one(&self.pool)
            .await
            .map_err(sql)?;
        if rows::get::<bool>(&row, 0)? {
            Ok(())
        } else {
            Err(StoreError::Unavailable("the database is read-only".into()))
        }
    }

    async fn bootstrap(&self, tenant: &Tenant, admin_key: &ApiKey) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Conflicts with itself and with every insert, not with reads: concurrent
        // bootstraps (and tenant creations) queue up, and the check below sees their result.
        sqlx::query("LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM tenants)")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql)?;
        if rows::get::<bool>(&row, 0)? {
            tx.rollback().await.map_err(sql)?;
            return Ok(false);
        }
        insert_tenant(&mut *tx, tenant).await?;
        insert_key(&mut *tx, admin_key).await?;
        tx.commit().await.map_err(sql)?;
        Ok(true)
    }

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        insert_tenant(&self.pool, tenant).await
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::tenant)
        .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        sqlx::query(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM tenants ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::tenant)
        .collect()
    }

    async fn create_key(&self, key: &ApiKey) -> Result<()> {
        insert_key(&self.pool, key).await
    }

    async fn get_key_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiKey>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE token_digest = $1"
        ))
        .bind(digest.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::key)
        .transpose()
    }

    async fn get_key(&self, tenant_id: TenantId, id: KeyId) -> Result<Option<ApiKey>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::key)
        .transpose()
    }

    async fn list_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>> {
        sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::key)
        .collect()
    }

    async fn revoke_key(&self, tenant_id: TenantId, id: KeyId, at: Timestamp) -> Result<ApiKey> {
        sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1)
             WHERE id = $2 AND tenant_id = $3 RETURNING ",
            key_columns!()
        ))
        .bind(at.unix_micros())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::key)
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn create_session(&self, new: &NewSession, actor: &str) -> Result<Session> {
        let (session, event) = new.created(actor);
        let labels = serde_json::to_string(&session.labels)
            .map_err(|error| StoreError::Backend(error.to_string()))?;
        let mut tx = self.pool.begin().await.map_err(sql)?;
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, owner, workload_class, environment, labels,
                 policy_version, phase, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(session.id.to_string())
        .bind(session.tenant_id.to_string())
        .bind(session.owner.to_string())
        .bind(&session.workload_class)
        .bind(&session.environment)
        .bind(labels)
        .bind(&session.policy_version)
        .bind(session.phase.as_str())
        .bind(session.version)
        .bind(session.created_at.unix_micros())
        .execute(&mut *tx)
        .await
        .map_err(sql_or_not_found)?;
        insert_event(&mut *tx, &event).await?;
        tx.commit().await.map_err(sql)?;
        Ok(session)
    }

    async fn get_session(&self, tenant_id: TenantId, id: SessionId) -> Result<Option<Session>> {
        select_session(&self.pool, tenant_id, id).await
    }

    async fn list_sessions(
        &self,
        tenant_id: TenantId,
        filter: &SessionFilter,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE tenant_id = "
        ));
        query.push_bind(tenant_id.to_string());
        if let Some(phase) = filter.phase {
            query.push(" AND phase = ").push_bind(phase.as_str());
        }
        if let Some(class) = &filter.workload_class {
            query
                .push(" AND workload_class = ")
                .push_bind(class.clone());
        }
        if let Some(environment) = &filter.environment {
            query
                .push(" AND environment = ")
                .push_bind(environment.clone());
        }
        if let Some(owner) = filter.owner {
            query.push(" AND owner = ").push_bind(owner.to_string());
        }
        if let Some(after) = filter.after {
            query.push(" AND id > ").push_bind(after.to_string());
        }
        query
            .push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::session)
            .collect()
    }

    async fn count_sessions_by_phase(&self) -> Result<Vec<(Phase, u64)>> {
        sqlx::query("SELECT phase, COUNT(*) FROM sessions GROUP BY phase")
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(|row| {
                let phase: String = rows::get(row, 0)?;
                let count: i64 = rows::get(row, 1)?;
                Ok((
                    rows::parse("phase", &phase)?,
                    u64::try_from(count).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn acquire_lease(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseOutcome> {
        let expires_at = now.saturating_add_micros(duration_micros(ttl));
        // Take the lease if it is free, expired or already ours; the token moves on only
        // when the holder changes. A takeover waits for writes still running under the
        // old token, which share-lock the lease row (see `transition`).
        let taken = sqlx::query(concat!(
            "INSERT INTO session_leases (session_id, holder, token, expires_at)
             SELECT id, $2, 1, $3 FROM sessions WHERE id = $1 AND tenant_id = $4
             ON CONFLICT (session_id) DO UPDATE SET
                 token = CASE WHEN session_leases.holder = excluded.holder
                              THEN session_leases.token ELSE session_leases.token + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE session_leases.holder = excluded.holder OR session_leases.expires_at <= $5
             RETURNING ",
            lease_columns!()
        ))
        .bind(session_id.to_string())
        .bind(holder)
        .bind(expires_at.unix_micros())
        .bind(tenant_id.to_string())
        .bind(now.unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?;
        if let Some(row) = taken {
            return rows::lease(session_id, &row).map(LeaseOutcome::Acquired);
        }
        // Either another holder's lease is live, or there is no such session in the
        // tenant (then nothing was inserted and there is no lease to show). Leases and
        // sessions are never deleted, so the row that blocked the upsert is still there.
        let current = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM session_leases l
             WHERE session_id = $1
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND tenant_id = $2)"
        ))
        .bind(session_id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?;
        match current {
            Some(row) => rows::lease(session_id, &row).map(LeaseOutcome::Held),
            None => Err(StoreError::NotFound),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query(
            "UPDATE session_leases SET expires_at = 0
             WHERE session_id = $1 AND holder = $2 AND token = $3",
        )
        .bind(lease.session_id.to_string())
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(sql)
    }

    async fn transition(&self, t: &Transition) -> Result<Session> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Phase and fencing token are checked in the very statement that writes. The
        // `FOR SHARE` makes the token check hold until commit: a takeover (which updates
        // the lease row) waits for this write, and a write whose lease row was taken over
        // meanwhile re-reads the row, sees the new token and matches nothing.
        let updated = sqlx::query(concat!(
            "UPDATE sessions SET phase = $1, version = version + 1, updated_at = $2,
                    outcome = COALESCE($7, outcome)
             WHERE id = $3 AND tenant_id = $4 AND phase = $5
               AND EXISTS (SELECT 1 FROM session_leases
                           WHERE session_id = $3 AND token = $6 FOR SHARE)
             RETURNING ",
            session_columns!()
        ))
        .bind(t.to.as_str())
        .bind(t.at.unix_micros())
        .bind(t.session_id.to_string())
        .bind(t.tenant_id.to_string())
        .bind(t.from.as_str())
        .bind(t.fence)
        .bind(t.outcome.map(|o| o.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql)?;
        if let Some(row) = updated {
            let session = rows::session(&row)?;
            let event = SessionEvent {
                session_id: t.session_id,
                seq: session.version,
                actor: t.actor.clone(),
                from: Some(t.from),
                to: t.to,
                reason: t.reason.clone(),
                at: t.at,
            };
            insert_event(&mut *tx, &event).await?;
            tx.commit().await.map_err(sql)?;
            return Ok(session);
        }
        // Nothing written: say why, in the same order as the SQLite backend.
        let current = select_session(&mut *tx, t.tenant_id, t.session_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let token = sqlx::query("SELECT token FROM session_leases WHERE session_id = $1")
            .bind(t.session_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql)?
            .map(|row| rows::get::<i64>(&row, 0))
            .transpose()?;
        tx.rollback().await.map_err(sql)?;
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
    }

    async fn list_events(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        after: EventSeq,
        limit: u32,
    ) -> Result<Vec<SessionEvent>> {
        if select_session(&self.pool, tenant_id, session_id)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound);
        }
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM session_events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(session_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::event)
        .collect()
    }

    async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &[u8; 32],
        now: Timestamp,
        stale_after: Duration,
    ) -> Result<IdempotencyStart> {
        let stale_before = now.saturating_add_micros(-duration_micros(stale_after));
        let (tenant, principal) = (scope.tenant_id.to_string(), scope.principal.to_string());
        for _ in 0..IDEMPOTENCY_ATTEMPTS {
            let mut tx = self.pool.begin().await.map_err(sql)?;
            // Claim first: of concurrent claims exactly one inserts; the others wait for
            // it to commit and then find its row below.
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, principal, key, fingerprint, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, principal, key) DO NOTHING",
            )
            .bind(&tenant)
            .bind(&principal)
            .bind(&scope.key)
            .bind(fingerprint.as_slice())
            .bind(now.unix_micros())
            .execute(&mut *tx)
            .await
            .map_err(sql)?
            .rows_affected()
                == 1;
            if claimed {
                tx.commit().await.map_err(sql)?;
                return Ok(IdempotencyStart::Proceed);
            }
            // Someone else's row: inspect it under a row lock, so that of concurrent
            // takeovers of a stale claim only the first succeeds.
            let existing = sqlx::query(
                "SELECT fingerprint, status, body, created_at FROM idempotency_keys
                 WHERE tenant_id = $1 AND principal = $2 AND key = $3 FOR UPDATE",
            )
            .bind(&tenant)
            .bind(&principal)
            .bind(&scope.key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql)?;
            let Some(row) = existing else {
                // Abandoned between our insert and our read: claim again.
                tx.rollback().await.map_err(sql)?;
                continue;
            };
            let seen: Vec<u8> = rows::get(&row, 0)?;
            let status: Option<i32> = rows::get(&row, 1)?;
            let body: Option<Vec<u8>> = rows::get(&row, 2)?;
            let created_at: i64 = rows::get(&row, 3)?;
            let start = match status {
                _ if seen.as_slice() != fingerprint.as_slice() => IdempotencyStart::Mismatch,
                Some(status) => IdempotencyStart::Replay(RecordedResponse {
                    status: u16::try_from(status).map_err(|e| rows::corrupt("status", e))?,
                    body: body.unwrap_or_default(),
                }),
                None if created_at <= stale_before.unix_micros() => {
                    sqlx::query(
                        "UPDATE idempotency_keys SET created_at = $4
                         WHERE tenant_id = $1 AND principal = $2 AND key = $3",
                    )
                    .bind(&tenant)
                    .bind(&principal)
                    .bind(&scope.key)
                    .bind(now.unix_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(sql)?;
                    IdempotencyStart::TakeOver
                }
                None => IdempotencyStart::InFlight,
            };
            tx.commit().await.map_err(sql)?;
            return Ok(start);
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key claim kept vanishing after {IDEMPOTENCY_ATTEMPTS} attempts"
        )))
    }

    async fn idempotency_complete(
        &self,
        scope: &IdempotencyScope,
        response: &RecordedResponse,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $4, body = $5, completed_at = $6
             WHERE tenant_id = $1 AND principal = $2 AND key = $3",
        )
        .bind(scope.tenant_id.to_string())
        .bind(scope.principal.to_string())
        .bind(&scope.key)
        .bind(i32::from(response.status))
        .bind(response.body.as_slice())
        .bind(now.unix_micros())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(sql)
    }

    async fn purge_idempotency(&self, created_before: Timestamp, limit: u32) -> Result<u64> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE (tenant_id, principal, key) IN (
                 SELECT tenant_id, principal, key FROM idempotency_keys
                 WHERE created_at < $1 LIMIT $2)",
        )
        .bind(created_before.unix_micros())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(sql)
    }

    async fn idempotency_abandon(&self, scope: &IdempotencyScope) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE tenant_id = $1 AND principal = $2 AND key = $3 AND status IS NULL",
        )
        .bind(scope.tenant_id.to_string())
        .bind(scope.principal.to_string())
        .bind(&scope.key)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(sql)
    }

    async fn put_egress_policy(&self, policy: &EgressPolicyVersion) -> Result<EgressPolicyVersion> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Concurrent puts for one tenant queue on its row; the lock does not conflict with
        // the key-share locks that inserts referencing the tenant take.
        let tenant = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(policy.tenant_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql)?;
        if tenant.is_none() {
            tx.rollback().await.map_err(sql)?;
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(concat!(
            "INSERT INTO egress_policies (",
            policy_columns!(),
            ") SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5
               FROM egress_policies WHERE tenant_id = $1
             RETURNING ",
            policy_columns!()
        ))
        .bind(policy.tenant_id.to_string())
        .bind(&policy.document)
        .bind(&policy.digest)
        .bind(&policy.created_by)
        .bind(policy.created_at.unix_micros())
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_or_not_found)?;
        let stored = rows::policy(&row)?;
        tx.commit().await.map_err(sql)?;
        Ok(stored)
    }

    async fn get_egress_policy(&self, tenant_id: TenantId) -> Result<Option<EgressPolicyVersion>> {
        sqlx::query(concat!(
            "SELECT ",
            policy_columns!(),
            " FROM egress_policies WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::policy)
        .transpose()
    }

    async fn list_egress_policies(&self) -> Result<Vec<EgressPolicyVersion>> {
        sqlx::query(concat!(
            "SELECT ",
            policy_columns!(),
            " FROM egress_policies p
             WHERE version = (SELECT MAX(version) FROM egress_policies
                              WHERE tenant_id = p.tenant_id)
             ORDER BY tenant_id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::policy)
        .collect()
    }

    async fn create_secret(&self, secret: &SecretRecord) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO secrets (",
            secret_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(secret.id.to_string())
        .bind(secret.tenant_id.to_string())
        .bind(&secret.name)
        .bind(&secret.service_class)
        .bind(&secret.header_name)
        .bind(&secret.header_format)
        .bind(secret.sealed_value.as_slice())
        .bind(&secret.created_by)
        .bind(secret.created_at.unix_micros())
        .bind(secret.deleted_at.map(Timestamp::unix_micros))
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(|error| {
            // Ids are fresh UUIDv7s: a uniqueness conflict is the live name.
            if violates(&error, ErrorKind::UniqueViolation) {
                StoreError::SecretNameTaken(secret.name.clone())
            } else {
                sql_or_not_found(error)
            }
        })
    }

    async fn get_secret(&self, tenant_id: TenantId, id: SecretId) -> Result<Option<SecretRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            secret_columns!(),
            " FROM secrets WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::secret)
        .transpose()
    }

    async fn list_secrets(&self, tenant_id: TenantId) -> Result<Vec<SecretRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            secret_columns!(),
            " FROM secrets WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
        ))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::secret)
        .collect()
    }

    async fn delete_secret(&self, tenant_id: TenantId, id: SecretId, at: Timestamp) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Waits for leases being created for the secret (they share-lock its row), so the
        // revocation below sees them.
        let deleted = sqlx::query(
            "UPDATE secrets SET deleted_at = $1, sealed_value = ''::bytea
             WHERE id = $2 AND tenant_id = $3 AND deleted_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql)?
        .rows_affected();
        if deleted == 0 {
            tx.rollback().await.map_err(sql)?;
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE credential_leases SET revoked_at = $1, revoke_reason = 'secret deleted'
             WHERE secret_id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)
    }

    async fn create_credential_lease(&self, lease: &CredentialLease) -> Result<()> {
        // Only for a session and a live secret of the lease's own tenant. The share lock
        // on the secret holds off a concurrent `delete_secret` until this lease is
        // committed (and then revoked by it), or makes this insert see the deletion.
        let inserted = sqlx::query(concat!(
            "INSERT INTO credential_leases (",
            credential_lease_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM secrets s
               WHERE s.id = $4 AND s.tenant_id = $2 AND s.deleted_at IS NULL
                 AND EXISTS (SELECT 1 FROM sessions WHERE id = $3 AND tenant_id = $2)
               FOR SHARE OF s"
        ))
        .bind(lease.id.to_string())
        .bind(lease.tenant_id.to_string())
        .bind(lease.session_id.to_string())
        .bind(lease.secret_id.to_string())
        .bind(&lease.issued_by)
        .bind(lease.issued_at.unix_micros())
        .bind(lease.expires_at.unix_micros())
        .bind(lease.max_expires_at.unix_micros())
        .bind(lease.revoked_at.map(Timestamp::unix_micros))
        .bind(&lease.revoke_reason)
        .execute(&self.pool)
        .await
        .map_err(sql_or_not_found)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn get_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
    ) -> Result<Option<CredentialLease>> {
        select_credential_lease(&self.pool, tenant_id, id).await
    }

    async fn list_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Vec<CredentialLease>> {
        sqlx::query(concat!(
            "SELECT ",
            credential_lease_columns!(),
            " FROM credential_leases WHERE tenant_id = $1 AND session_id = $2 ORDER BY id"
        ))
        .bind(tenant_id.to_string())
        .bind(session_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::credential_lease)
        .collect()
    }

    async fn renew_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<CredentialLease> {
        // Liveness is checked in the statement that writes.
        let renewed = sqlx::query(concat!(
            "UPDATE credential_leases SET expires_at = $1
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL AND expires_at > $4
             RETURNING ",
            credential_lease_columns!()
        ))
        .bind(expires_at.unix_micros())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .bind(now.unix_micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?;
        if let Some(row) = renewed {
            return rows::credential_lease(&row);
        }
        // Nothing written: say why. Leases are never deleted, so the answer is stable.
        match select_credential_lease(&self.pool, tenant_id, id).await? {
            Some(_) => Err(StoreError::LeaseNotLive),
            None => Err(StoreError::NotFound),
        }
    }

    async fn revoke_credential_lease(
        &self,
        tenant_id: TenantId,
        id: CredentialLeaseId,
        at: Timestamp,
        reason: &str,
    ) -> Result<CredentialLease> {
        // Both right-hand sides see the row as it was: the first revocation stays.
        sqlx::query(concat!(
            "UPDATE credential_leases SET
                 revoked_at = COALESCE(revoked_at, $1),
                 revoke_reason = CASE WHEN revoked_at IS NULL THEN $2 ELSE revoke_reason END
             WHERE id = $3 AND tenant_id = $4
             RETURNING ",
            credential_lease_columns!()
        ))
        .bind(at.unix_micros())
        .bind(reason)
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::credential_lease)
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn revoke_session_credential_leases(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        at: Timestamp,
        reason: &str,
    ) -> Result<u64> {
        sqlx::query(
            "UPDATE credential_leases SET revoked_at = $1, revoke_reason = $2
             WHERE tenant_id = $3 AND session_id = $4 AND revoked_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(reason)
        .bind(tenant_id.to_string())
        .bind(session_id.to_string())
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(sql)
    }

    async fn append_egress_decisions(&self, decisions: &[EgressDecision]) -> Result<()> {
        if decisions.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Locked in ascending key order, so that two appends never wait for each other
        // in a cycle.
        let mut keys: Vec<i64> = decisions
            .iter()
            .map(|decision| decision_lock_key(decision.tenant_id))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(sql)?;
        }
        // Rows of one `VALUES` list take their `seq` in list order.
        for chunk in decisions.chunks(DECISIONS_PER_INSERT) {
            let mut insert = QueryBuilder::<Postgres>::new(concat!(
                "INSERT INTO egress_decisions (",
                decision_insert_columns!(),
                ") "
            ));
            insert.push_values(chunk, |mut row, decision| {
                row.push_bind(decision.tenant_id.to_string())
                    .push_bind(decision.session_id.to_string())
                    .push_bind(decision.at.unix_micros())
                    .push_bind(decision.kind.clone())
                    .push_bind(decision.host.clone())
                    .push_bind(i32::from(decision.port))
                    .push_bind(decision.address.clone())
                    .push_bind(decision.method.clone())
                    .push_bind(decision.path.clone())
                    .push_bind(decision.reason.as_str())
                    .push_bind(decision.mode.clone())
                    .push_bind(decision.service_class.clone())
                    .push_bind(decision.rule.clone())
                    .push_bind(decision.policy_version.clone())
                    .push_bind(decision.credential.clone())
                    .push_bind(decision.status.map(i32::from))
                    .push_bind(signed(decision.bytes_sent))
                    .push_bind(signed(decision.bytes_received))
                    .push_bind(decision.duration_micros);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sql_or_not_found)?;
        }
        tx.commit().await.map_err(sql)
    }

    async fn list_egress_decisions(
        &self,
        tenant_id: TenantId,
        filter: &EgressDecisionFilter,
        limit: u32,
    ) -> Result<Vec<EgressDecision>> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            decision_columns!(),
            " FROM egress_decisions WHERE tenant_id = "
        ));
        query.push_bind(tenant_id.to_string());
        if let Some(session_id) = filter.session_id {
            query
                .push(" AND session_id = ")
                .push_bind(session_id.to_string());
        }
        if let Some(reason) = filter.reason {
            query.push(" AND reason = ").push_bind(reason.as_str());
        }
        if let Some(after) = filter.after {
            query.push(" AND seq > ").push_bind(after);
        }
        query
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::decision)
            .collect()
    }

    async fn deployment_value_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Of racing inserts one wins; the others wait for it to commit, insert nothing,
        // and read its value (each statement sees what committed before it started).
        sqlx::query(
            "INSERT INTO deployment_values (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
        let row = sqlx::query("SELECT value FROM deployment_values WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql)?;
        let stored: Vec<u8> = rows::get(&row, 0)?;
        tx.commit().await.map_err(sql)?;
        Ok(stored)
    }

    // ----- Artifacts: workspace versions, the evidence log, releases. -----

    async fn create_version(&self, version: &WorkspaceVersion) -> Result<()> {
        let tenant = version.tenant_id.to_string();
        let session = version.session_id.to_string();
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Creates for one session queue on its row, so the head read below is still the
        // head when the insert commits. The lock does not conflict with the key-share
        // locks that inserts referencing the session take.
        let known = sqlx::query(
            "SELECT 1 FROM sessions WHERE id = $1 AND tenant_id = $2 FOR NO KEY UPDATE",
        )
        .bind(&session)
        .bind(&tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql)?;
        if known.is_none() {
            tx.rollback().await.map_err(sql)?;
            return Err(StoreError::NotFound);
        }
        let head = sqlx::query(
            "SELECT id FROM workspace_versions
             WHERE tenant_id = $1 AND session_id = $2 AND deleted_at IS NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&tenant)
        .bind(&session)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql)?
        .map(|row| rows::get::<String>(&row, 0))
        .transpose()?;
        if head != version.parent.map(|id| id.to_string()) {
            tx.rollback().await.map_err(sql)?;
            return Err(StoreError::VersionConflict { head });
        }
        let stats = &version.stats;
        sqlx::query(concat!(
            "INSERT INTO workspace_versions (",
            version_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(version.id.to_string())
        .bind(&tenant)
        .bind(&session)
        .bind(version.parent.map(|id| id.to_string()))
        .bind(&version.root)
        .bind(&version.summary)
        .bind(signed(stats.files))
        .bind(signed(stats.dirs))
        .bind(signed(stats.symlinks))
        .bind(signed(stats.bytes))
        .bind(signed(stats.blobs_written))
        .bind(signed(stats.bytes_written))
        .bind(&version.origin)
        .bind(&version.created_by)
        .bind(version.created_at.unix_micros())
        .bind(version.deleted_at.map(Timestamp::unix_micros))
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            // The one-child index, or a reused id: the chain is not where the caller
            // thinks it is.
            if violates(&error, ErrorKind::UniqueViolation) {
                StoreError::VersionConflict { head: head.clone() }
            } else {
                sql_or_not_found(error)
            }
        })?;
        tx.commit().await.map_err(sql)
    }

    async fn get_version(
        &self,
        tenant_id: TenantId,
        id: VersionId,
    ) -> Result<Option<WorkspaceVersion>> {
        sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM workspace_versions WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::version)
        .transpose()
    }

    async fn list_versions(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
        before: Option<VersionId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceVersion>> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            version_columns!(),
            " FROM workspace_versions WHERE deleted_at IS NULL AND tenant_id = "
        ));
        query
            .push_bind(tenant_id.to_string())
            .push(" AND session_id = ")
            .push_bind(session_id.to_string());
        if let Some(before) = before {
            query.push(" AND id < ").push_bind(before.to_string());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::version)
            .collect()
    }

    async fn head_version(
        &self,
        tenant_id: TenantId,
        session_id: SessionId,
    ) -> Result<Option<WorkspaceVersion>> {
        sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM workspace_versions
             WHERE tenant_id = $1 AND session_id = $2 AND deleted_at IS NULL
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(tenant_id.to_string())
        .bind(session_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::version)
        .transpose()
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
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        sqlx::query(
            "UPDATE workspace_versions SET deleted_at = $1
             WHERE tenant_id = $2 AND id = ANY($3) AND deleted_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(tenant_id.to_string())
        .bind(ids)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(sql)
    }

    async fn live_artifact_roots(&self) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT root FROM workspace_versions WHERE deleted_at IS NULL
             UNION
             SELECT root FROM releases WHERE deleted_at IS NULL
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(|row| rows::get::<String>(row, 0))
        .collect()
    }

    async fn append_evidence(&self, entries: &[NewEvidenceEntry]) -> Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: BTreeMap<TenantId, u64> = BTreeMap::new();
        for entry in entries {
            *counts.entry(entry.tenant_id).or_default() += 1;
        }
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Each tenant's head row stays locked until commit: appends of one tenant take
        // their indexes (and become visible) one after the other, without gaps. Heads
        // are locked in ascending tenant order, so two appends never wait for each other
        // in a cycle.
        let mut next: BTreeMap<TenantId, u64> = BTreeMap::new();
        for (tenant, count) in counts {
            let row = sqlx::query(
                "INSERT INTO evidence_heads (tenant_id, size) VALUES ($1, $2)
                 ON CONFLICT (tenant_id) DO UPDATE SET size = evidence_heads.size + excluded.size
                 RETURNING size",
            )
            .bind(tenant.to_string())
            .bind(signed(count))
            .fetch_one(&mut *tx)
            .await
            .map_err(sql_or_not_found)?;
            let size: i64 = rows::get(&row, 0)?;
            let start = rows::u64_column("evidence size", size)?
                .checked_sub(count)
                .ok_or_else(|| rows::corrupt("evidence size", size))?;
            next.insert(tenant, start);
        }
        let mut indexes = Vec::with_capacity(entries.len());
        for entry in entries {
            let slot = next
                .get_mut(&entry.tenant_id)
                .ok_or_else(|| StoreError::Backend("evidence tenant not counted".into()))?;
            indexes.push(*slot);
            *slot += 1;
        }
        let numbered: Vec<(u64, &NewEvidenceEntry)> =
            indexes.iter().copied().zip(entries).collect();
        for chunk in numbered.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Postgres>::new(concat!(
                "INSERT INTO evidence_entries (",
                entry_columns!(),
                ") "
            ));
            insert.push_values(chunk, |mut row, (index, entry)| {
                row.push_bind(entry.tenant_id.to_string())
                    .push_bind(signed(*index))
                    .push_bind(entry.session_id.map(|id| id.to_string()))
                    .push_bind(entry.kind.clone())
                    .push_bind(entry.at.unix_micros())
                    .push_bind(entry.leaf.clone())
                    .push_bind(entry.leaf_hash.to_vec());
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sql_or_not_found)?;
        }
        let fields: Vec<(TenantId, u64, &EvidenceField)> = numbered
            .iter()
            .flat_map(|(index, entry)| {
                entry
                    .fields
                    .iter()
                    .map(move |field| (entry.tenant_id, *index, field))
            })
            .collect();
        for chunk in fields.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO evidence_fields (tenant_id, idx, name, salt, value) ",
            );
            insert.push_values(chunk, |mut row, (tenant, index, field)| {
                row.push_bind(tenant.to_string())
                    .push_bind(signed(*index))
                    .push_bind(field.name.clone())
                    .push_bind(field.salt.clone())
                    .push_bind(field.value.clone());
            });
            insert.build().execute(&mut *tx).await.map_err(sql)?;
        }
        tx.commit().await.map_err(sql)?;
        Ok(indexes)
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
        let conditions = |query: &mut QueryBuilder<Postgres>| {
            if let Some(session_id) = filter.session_id {
                query
                    .push(" AND e.session_id = ")
                    .push_bind(session_id.to_string());
            }
            if let Some(kind) = &filter.kind {
                query.push(" AND e.kind = ").push_bind(kind.clone());
            }
        };
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM evidence_entries e WHERE e.tenant_id = "
        ));
        query
            .push_bind(tenant_id.to_string())
            .push(" AND e.idx >= ")
            .push_bind(signed(filter.from_index));
        conditions(&mut query);
        query
            .push(" ORDER BY e.idx LIMIT ")
            .push_bind(i64::from(limit));
        let mut entries = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::entry)
            .collect::<Result<Vec<_>>>()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(entries);
        };
        // Field names sort bytewise, as in the SQLite backend, whatever the collation.
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT f.idx, f.name, f.salt, f.value FROM evidence_fields f
             JOIN evidence_entries e ON e.tenant_id = f.tenant_id AND e.idx = f.idx
             WHERE f.tenant_id = ",
        );
        query
            .push_bind(tenant_id.to_string())
            .push(" AND f.idx BETWEEN ")
            .push_bind(signed(first.index))
            .push(" AND ")
            .push_bind(signed(last.index));
        conditions(&mut query);
        query.push(" ORDER BY f.idx, f.name COLLATE \"C\"");
        let fields = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::field)
            .collect::<Result<Vec<_>>>()?;
        attach_fields(&mut entries, fields);
        Ok(entries)
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
        sqlx::query(
            "SELECT leaf_hash FROM evidence_entries
             WHERE tenant_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
        )
        .bind(tenant_id.to_string())
        .bind(signed(from))
        .bind(signed(to))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::leaf_hash)
        .collect()
    }

    async fn evidence_size(&self, tenant_id: TenantId) -> Result<u64> {
        let size = sqlx::query("SELECT size FROM evidence_heads WHERE tenant_id = $1")
            .bind(tenant_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql)?
            .map(|row| rows::get::<i64>(&row, 0))
            .transpose()?;
        rows::u64_column("evidence size", size.unwrap_or(0))
    }

    async fn shred_evidence(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        before: Timestamp,
    ) -> Result<u64> {
        let query = match session_id {
            None => sqlx::query(
                "DELETE FROM evidence_fields WHERE tenant_id = $1 AND idx IN (
                     SELECT idx FROM evidence_entries WHERE tenant_id = $1 AND at < $2)",
            ),
            Some(_) => sqlx::query(
                "DELETE FROM evidence_fields WHERE tenant_id = $1 AND idx IN (
                     SELECT idx FROM evidence_entries
                     WHERE tenant_id = $1 AND session_id = $3 AND at < $2)",
            ),
        };
        let mut query = query.bind(tenant_id.to_string()).bind(before.unix_micros());
        if let Some(session_id) = session_id {
            query = query.bind(session_id.to_string());
        }
        query
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(sql)
    }

    async fn put_evidence_checkpoint(&self, checkpoint: &EvidenceCheckpoint) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO evidence_checkpoints (",
            checkpoint_columns!(),
            ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, size) DO NOTHING"
        ))
        .bind(checkpoint.tenant_id.to_string())
        .bind(signed(checkpoint.size))
        .bind(checkpoint.root.as_slice())
        .bind(&checkpoint.note)
        .bind(checkpoint.at.unix_micros())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(sql_or_not_found)
    }

    async fn latest_evidence_checkpoint(
        &self,
        tenant_id: TenantId,
    ) -> Result<Option<EvidenceCheckpoint>> {
        sqlx::query(concat!(
            "SELECT ",
            checkpoint_columns!(),
            " FROM evidence_checkpoints WHERE tenant_id = $1 ORDER BY size DESC LIMIT 1"
        ))
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::checkpoint)
        .transpose()
    }

    async fn list_evidence_checkpoints(
        &self,
        tenant_id: TenantId,
        from_size: u64,
        to_size: u64,
    ) -> Result<Vec<EvidenceCheckpoint>> {
        sqlx::query(concat!(
            "SELECT ",
            checkpoint_columns!(),
            " FROM evidence_checkpoints
             WHERE tenant_id = $1 AND size BETWEEN $2 AND $3 ORDER BY size"
        ))
        .bind(tenant_id.to_string())
        .bind(signed(from_size))
        .bind(signed(to_size))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::checkpoint)
        .collect()
    }

    async fn create_release(&self, release: &Release) -> Result<()> {
        // Only of a version of the release's own session and tenant.
        let inserted = sqlx::query(concat!(
            "INSERT INTO releases (",
            release_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
               WHERE EXISTS (SELECT 1 FROM workspace_versions
                             WHERE id = $5 AND tenant_id = $2 AND session_id = $4)"
        ))
        .bind(release.id.to_string())
        .bind(release.tenant_id.to_string())
        .bind(&release.name)
        .bind(release.session_id.to_string())
        .bind(release.version_id.to_string())
        .bind(&release.root)
        .bind(&release.envelope)
        .bind(&release.created_by)
        .bind(release.created_at.unix_micros())
        .bind(release.deleted_at.map(Timestamp::unix_micros))
        .execute(&self.pool)
        .await
        .map_err(|error| {
            // Ids are fresh UUIDv7s: a uniqueness conflict is the name.
            if violates(&error, ErrorKind::UniqueViolation) {
                StoreError::ReleaseNameTaken(release.name.clone())
            } else {
                sql_or_not_found(error)
            }
        })?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn get_release(&self, tenant_id: TenantId, id: ReleaseId) -> Result<Option<Release>> {
        sqlx::query(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::release)
        .transpose()
    }

    async fn get_release_by_name(
        &self,
        tenant_id: TenantId,
        name: &str,
    ) -> Result<Option<Release>> {
        sqlx::query(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL"
        ))
        .bind(tenant_id.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(rows::release)
        .transpose()
    }

    async fn list_releases(&self, tenant_id: TenantId) -> Result<Vec<Release>> {
        sqlx::query(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
        ))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::release)
        .collect()
    }

    async fn delete_release(
        &self,
        tenant_id: TenantId,
        id: ReleaseId,
        at: Timestamp,
    ) -> Result<()> {
        let deleted = sqlx::query(
            "UPDATE releases SET deleted_at = $1
             WHERE id = $2 AND tenant_id = $3 AND deleted_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(sql)?
        .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn closed_sessions(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, SessionId)>,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(at.unix_micros()), Some(id.to_string())),
            None => (None, None),
        };
        sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE phase = 'closed' AND updated_at < $1
               AND ($3::BIGINT IS NULL OR updated_at > $3 OR (updated_at = $3 AND id > $4))
             ORDER BY updated_at, id LIMIT $2"
        ))
        .bind(before.unix_micros())
        .bind(i64::from(limit))
        .bind(after_at)
        .bind(after_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::session)
        .collect()
    }

    async fn append_facts(&self, facts: &[Fact]) -> Result<()> {
        if facts.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Postgres>::new(
            "INSERT INTO telemetry_facts (tenant_id, kind, at, session_id, run_id, \
             workload_class, outcome, reason, subject, reference, value, value2, bytes, count) ",
        );
        query.push_values(facts, |mut row, f| {
            row.push_bind(f.tenant_id.to_string())
                .push_bind(f.kind.as_str())
                .push_bind(f.at.unix_micros())
                .push_bind(f.session_id.map(|s| s.to_string()))
                .push_bind(f.run_id.map(|r| r.to_string()))
                .push_bind(f.workload_class.clone())
                .push_bind(f.outcome.clone())
                .push_bind(f.reason.clone())
                .push_bind(f.subject.clone())
                .push_bind(f.reference.clone())
                .push_bind(f.value)
                .push_bind(f.value2)
                .push_bind(f.bytes)
                .push_bind(f.count);
        });
        query.build().execute(&self.pool).await.map_err(sql)?;
        Ok(())
    }

    async fn list_facts(&self, filter: &FactFilter) -> Result<Vec<Fact>> {
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            fact_columns!(),
            " FROM telemetry_facts WHERE TRUE"
        ));
        if let Some(tenant) = filter.tenant_id {
            query
                .push(" AND tenant_id = ")
                .push_bind(tenant.to_string());
        }
        if let Some(from) = filter.from {
            query.push(" AND at >= ").push_bind(from.unix_micros());
        }
        if let Some(to) = filter.to {
            query.push(" AND at < ").push_bind(to.unix_micros());
        }
        if !filter.kinds.is_empty() {
            let kinds: Vec<String> = filter.kinds.iter().map(|k| k.as_str().to_owned()).collect();
            query.push(" AND kind = ANY(").push_bind(kinds).push(")");
        }
        if !filter.run_ids.is_empty() {
            let runs: Vec<String> = filter.run_ids.iter().map(|r| r.to_string()).collect();
            query.push(" AND run_id = ANY(").push_bind(runs).push(")");
        }
        if let Some(after) = filter.after {
            query.push(" AND seq > ").push_bind(after);
        }
        query.push(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(i64::from(limit));
        }
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?
            .iter()
            .map(rows::fact)
            .collect()
    }

    async fn stored_bytes(
        &self,
        tenant_id: Option<TenantId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StoredBytes>> {
        sqlx::query(
            "SELECT v.tenant_id, v.session_id, s.workload_class,
                    (s.labels::jsonb) ->> 'cordon.run', v.bytes_written, v.created_at, v.deleted_at
             FROM workspace_versions v JOIN sessions s ON s.id = v.session_id
             WHERE ($1::TEXT IS NULL OR v.tenant_id = $1) AND v.created_at < $3
               AND (v.deleted_at IS NULL OR v.deleted_at >= $2)
             ORDER BY v.created_at, v.id",
        )
        .bind(tenant_id.map(|t| t.to_string()))
        .bind(from.unix_micros())
        .bind(to.unix_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::stored_bytes)
        .collect()
    }

    async fn idle_sessions(&self, before: Timestamp, limit: u32) -> Result<Vec<Session>> {
        sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE phase <> 'closed' AND updated_at < $1
             ORDER BY updated_at, id LIMIT $2"
        ))
        .bind(before.unix_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?
        .iter()
        .map(rows::session)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_debug_output() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db?sslmode=require",
                "postgres://u:***@h:5432/db?sslmode=require",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgresql://u:p%40ss@h", "postgresql://u:***@h"),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_password(url), expected, "{url}");
        }
        let debug = format!("{:?}", PostgresOptions::new("postgres://u:secret@h/db"));
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn transient_sqlstates_map_to_unavailable() {
        for code in [
            "08006", "53300", "57P01", "40001", "40P01", "55P03", "57014", "25006",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "XX000"] {
            assert!(!is_transient(code), "{code}");
        }
        assert!(matches!(
            sql(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            sql(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }
}
