//! Conversions between rows and domain records, and the column lists they expect.
//!
//! The column lists are macros expanding to string literals so that queries can be
//! assembled with `concat!` into the `&'static str` sqlx accepts without an audit wrapper.

use cordon_core::{
    ApiKey, CredentialLease, EgressDecision, EgressPolicyVersion, EvidenceCheckpoint,
    EvidenceEntry, EvidenceField, Labels, Lease, Phase, ReasonCode, Release, Role, SecretRecord,
    Session, SessionEvent, SessionId, Tenant, Timestamp, VersionStats, WorkspaceVersion,
};
use cordon_store::{Result, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use crate::store::sql;

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in the database: {detail}"))
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|error| corrupt(what, error))
}

/// Column `index` of `row`, decoded.
pub(crate) fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(index).map_err(sql)
}

fn get_parsed<T: std::str::FromStr>(row: &PgRow, index: usize, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    parse(what, &get::<String>(row, index)?)
}

fn get_timestamp(row: &PgRow, index: usize) -> Result<Timestamp> {
    get::<i64>(row, index).map(Timestamp::from_unix_micros)
}

macro_rules! tenant_columns {
    () => {
        "id, name, created_at"
    };
}
pub(crate) use tenant_columns;

pub(crate) fn tenant(row: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: get_parsed(row, 0, "tenant id")?,
        name: get(row, 1)?,
        created_at: get_timestamp(row, 2)?,
    })
}

macro_rules! key_columns {
    () => {
        "id, tenant_id, role, name, system, token_digest, created_by, created_at, revoked_at"
    };
}
pub(crate) use key_columns;

pub(crate) fn key(row: &PgRow) -> Result<ApiKey> {
    let digest: Vec<u8> = get(row, 5)?;
    let created_by: Option<String> = get(row, 6)?;
    Ok(ApiKey {
        id: get_parsed(row, 0, "key id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        role: get_parsed::<Role>(row, 2, "role")?,
        name: get(row, 3)?,
        system: get(row, 4)?,
        token_digest: digest
            .try_into()
            .map_err(|_| corrupt("token digest", "not 32 bytes"))?,
        created_by: created_by.map(|id| parse("key id", &id)).transpose()?,
        created_at: get_timestamp(row, 7)?,
        revoked_at: get::<Option<i64>>(row, 8)?.map(Timestamp::from_unix_micros),
    })
}

macro_rules! session_columns {
    () => {
        "id, tenant_id, owner, workload_class, environment, labels, policy_version, phase, \
         version, created_at, updated_at, outcome"
    };
}
pub(crate) use session_columns;

pub(crate) fn session(row: &PgRow) -> Result<Session> {
    let labels: String = get(row, 5)?;
    Ok(Session {
        id: get_parsed(row, 0, "session id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        owner: get_parsed(row, 2, "key id")?,
        workload_class: get(row, 3)?,
        environment: get(row, 4)?,
        labels: serde_json::from_str::<Labels>(&labels).map_err(|e| corrupt("labels", e))?,
        policy_version: get(row, 6)?,
        phase: get_parsed::<Phase>(row, 7, "phase")?,
        version: get(row, 8)?,
        created_at: get_timestamp(row, 9)?,
        updated_at: get_timestamp(row, 10)?,
        outcome: get::<Option<String>>(row, 11)?
            .map(|o| parse("session outcome", &o))
            .transpose()?,
    })
}

macro_rules! fact_columns {
    () => {
        "seq, tenant_id, kind, at, session_id, run_id, workload_class, outcome, reason, \
         subject, reference, value, value2, bytes, count"
    };
}
pub(crate) use fact_columns;

pub(crate) fn fact(row: &PgRow) -> Result<cordon_core::Fact> {
    Ok(cordon_core::Fact {
        seq: get(row, 0)?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        kind: get_parsed(row, 2, "fact kind")?,
        at: get_timestamp(row, 3)?,
        session_id: get::<Option<String>>(row, 4)?
            .map(|s| parse("session id", &s))
            .transpose()?,
        run_id: get::<Option<String>>(row, 5)?
            .map(|s| parse("run id", &s))
            .transpose()?,
        workload_class: get(row, 6)?,
        outcome: get(row, 7)?,
        reason: get(row, 8)?,
        subject: get(row, 9)?,
        reference: get(row, 10)?,
        value: get(row, 11)?,
        value2: get(row, 12)?,
        bytes: get(row, 13)?,
        count: get(row, 14)?,
    })
}

pub(crate) fn stored_bytes(row: &PgRow) -> Result<cordon_core::StoredBytes> {
    let bytes: i64 = get(row, 4)?;
    Ok(cordon_core::StoredBytes {
        tenant_id: get_parsed(row, 0, "tenant id")?,
        session_id: get_parsed(row, 1, "session id")?,
        workload_class: get(row, 2)?,
        run_id: get::<Option<String>>(row, 3)?.and_then(|r| r.parse().ok()),
        bytes: u64::try_from(bytes).unwrap_or(0),
        created_at: get_timestamp(row, 5)?,
        deleted_at: get_optional_timestamp(row, 6)?,
    })
}

macro_rules! event_columns {
    () => {
        "session_id, seq, actor, from_phase, to_phase, reason, at"
    };
}
pub(crate) use event_columns;

pub(crate) fn event(row: &PgRow) -> Result<SessionEvent> {
    let from: Option<String> = get(row, 3)?;
    Ok(SessionEvent {
        session_id: get_parsed(row, 0, "session id")?,
        seq: get(row, 1)?,
        actor: get(row, 2)?,
        from: from
            .map(|phase| parse::<Phase>("phase", &phase))
            .transpose()?,
        to: get_parsed::<Phase>(row, 4, "phase")?,
        reason: get(row, 5)?,
        at: get_timestamp(row, 6)?,
    })
}

macro_rules! lease_columns {
    () => {
        "holder, token, expires_at"
    };
}
pub(crate) use lease_columns;

pub(crate) fn lease(session_id: SessionId, row: &PgRow) -> Result<Lease> {
    Ok(Lease {
        session_id,
        holder: get(row, 0)?,
        token: get(row, 1)?,
        expires_at: get_timestamp(row, 2)?,
    })
}

fn get_optional_timestamp(row: &PgRow, index: usize) -> Result<Option<Timestamp>> {
    get::<Option<i64>>(row, index).map(|micros| micros.map(Timestamp::from_unix_micros))
}

/// A port or an HTTP status, stored as `INTEGER`.
fn u16_column(what: &str, value: i32) -> Result<u16> {
    u16::try_from(value).map_err(|error| corrupt(what, error))
}

/// A non-negative count stored as `BIGINT`.
pub(crate) fn u64_column(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|error| corrupt(what, error))
}

macro_rules! policy_columns {
    () => {
        "tenant_id, version, document, digest, created_by, created_at"
    };
}
pub(crate) use policy_columns;

pub(crate) fn policy(row: &PgRow) -> Result<EgressPolicyVersion> {
    Ok(EgressPolicyVersion {
        tenant_id: get_parsed(row, 0, "tenant id")?,
        version: get(row, 1)?,
        document: get(row, 2)?,
        digest: get(row, 3)?,
        created_by: get(row, 4)?,
        created_at: get_timestamp(row, 5)?,
    })
}

macro_rules! secret_columns {
    () => {
        "id, tenant_id, name, service_class, header_name, header_format, sealed_value, \
         created_by, created_at, deleted_at"
    };
}
pub(crate) use secret_columns;

pub(crate) fn secret(row: &PgRow) -> Result<SecretRecord> {
    Ok(SecretRecord {
        id: get_parsed(row, 0, "secret id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        name: get(row, 2)?,
        service_class: get(row, 3)?,
        header_name: get(row, 4)?,
        header_format: get(row, 5)?,
        sealed_value: get(row, 6)?,
        created_by: get(row, 7)?,
        created_at: get_timestamp(row, 8)?,
        deleted_at: get_optional_timestamp(row, 9)?,
    })
}

macro_rules! credential_lease_columns {
    () => {
        "id, tenant_id, session_id, secret_id, issued_by, issued_at, expires_at, \
         max_expires_at, revoked_at, revoke_reason"
    };
}
pub(crate) use credential_lease_columns;

pub(crate) fn credential_lease(row: &PgRow) -> Result<CredentialLease> {
    Ok(CredentialLease {
        id: get_parsed(row, 0, "lease id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        session_id: get_parsed(row, 2, "session id")?,
        secret_id: get_parsed(row, 3, "secret id")?,
        issued_by: get(row, 4)?,
        issued_at: get_timestamp(row, 5)?,
        expires_at: get_timestamp(row, 6)?,
        max_expires_at: get_timestamp(row, 7)?,
        revoked_at: get_optional_timestamp(row, 8)?,
        revoke_reason: get(row, 9)?,
    })
}

/// Every column but `seq`, in the order `decision` reads them after it.
macro_rules! decision_insert_columns {
    () => {
        "tenant_id, session_id, at, kind, host, port, address, method, path, reason, mode, \
         service_class, rule, policy_version, credential, status, bytes_sent, bytes_received, \
         duration_micros"
    };
}
pub(crate) use decision_insert_columns;

macro_rules! decision_columns {
    () => {
        concat!("seq, ", crate::rows::decision_insert_columns!())
    };
}
pub(crate) use decision_columns;

pub(crate) fn decision(row: &PgRow) -> Result<EgressDecision> {
    let reason: String = get(row, 10)?;
    Ok(EgressDecision {
        seq: get(row, 0)?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        session_id: get_parsed(row, 2, "session id")?,
        at: get_timestamp(row, 3)?,
        kind: get(row, 4)?,
        host: get(row, 5)?,
        port: u16_column("port", get(row, 6)?)?,
        address: get(row, 7)?,
        method: get(row, 8)?,
        path: get(row, 9)?,
        reason: ReasonCode::from_code(&reason)
            .ok_or_else(|| corrupt("reason code", format!("unknown code `{reason}`")))?,
        mode: get(row, 11)?,
        service_class: get(row, 12)?,
        rule: get(row, 13)?,
        policy_version: get(row, 14)?,
        credential: get(row, 15)?,
        status: get::<Option<i32>>(row, 16)?
            .map(|status| u16_column("status", status))
            .transpose()?,
        bytes_sent: u64_column("bytes sent", get(row, 17)?)?,
        bytes_received: u64_column("bytes received", get(row, 18)?)?,
        duration_micros: get(row, 19)?,
    })
}

/// A SHA-256 digest stored as `BYTEA`.
fn get_digest(row: &PgRow, index: usize, what: &str) -> Result<[u8; 32]> {
    get::<Vec<u8>>(row, index)?
        .try_into()
        .map_err(|_| corrupt(what, "not 32 bytes"))
}

fn get_u64(row: &PgRow, index: usize, what: &str) -> Result<u64> {
    u64_column(what, get(row, index)?)
}

macro_rules! version_columns {
    () => {
        "id, tenant_id, session_id, parent, root, summary, files, dirs, symlinks, bytes, \
         blobs_written, bytes_written, origin, created_by, created_at, deleted_at"
    };
}
pub(crate) use version_columns;

pub(crate) fn version(row: &PgRow) -> Result<WorkspaceVersion> {
    let parent: Option<String> = get(row, 3)?;
    Ok(WorkspaceVersion {
        id: get_parsed(row, 0, "version id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        session_id: get_parsed(row, 2, "session id")?,
        parent: parent.map(|id| parse("version id", &id)).transpose()?,
        root: get(row, 4)?,
        summary: get(row, 5)?,
        stats: VersionStats {
            files: get_u64(row, 6, "file count")?,
            dirs: get_u64(row, 7, "directory count")?,
            symlinks: get_u64(row, 8, "symlink count")?,
            bytes: get_u64(row, 9, "byte count")?,
            blobs_written: get_u64(row, 10, "blobs written")?,
            bytes_written: get_u64(row, 11, "bytes written")?,
        },
        origin: get(row, 12)?,
        created_by: get(row, 13)?,
        created_at: get_timestamp(row, 14)?,
        deleted_at: get_optional_timestamp(row, 15)?,
    })
}

macro_rules! entry_columns {
    () => {
        "tenant_id, idx, session_id, kind, at, leaf, leaf_hash"
    };
}
pub(crate) use entry_columns;

/// An entry without its fields, which live in a table of their own.
pub(crate) fn entry(row: &PgRow) -> Result<EvidenceEntry> {
    let session_id: Option<String> = get(row, 2)?;
    Ok(EvidenceEntry {
        tenant_id: get_parsed(row, 0, "tenant id")?,
        index: get_u64(row, 1, "evidence index")?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        kind: get(row, 3)?,
        at: get_timestamp(row, 4)?,
        leaf: get(row, 5)?,
        leaf_hash: get_digest(row, 6, "leaf hash")?,
        fields: Vec::new(),
    })
}

/// A field with the index of its entry: `idx, name, salt, value`.
pub(crate) fn field(row: &PgRow) -> Result<(u64, EvidenceField)> {
    Ok((
        get_u64(row, 0, "evidence index")?,
        EvidenceField {
            name: get(row, 1)?,
            salt: get(row, 2)?,
            value: get(row, 3)?,
        },
    ))
}

pub(crate) fn leaf_hash(row: &PgRow) -> Result<[u8; 32]> {
    get_digest(row, 0, "leaf hash")
}

macro_rules! checkpoint_columns {
    () => {
        "tenant_id, size, root, note, at"
    };
}
pub(crate) use checkpoint_columns;

pub(crate) fn checkpoint(row: &PgRow) -> Result<EvidenceCheckpoint> {
    Ok(EvidenceCheckpoint {
        tenant_id: get_parsed(row, 0, "tenant id")?,
        size: get_u64(row, 1, "checkpoint size")?,
        root: get_digest(row, 2, "checkpoint root")?,
        note: get(row, 3)?,
        at: get_timestamp(row, 4)?,
    })
}

macro_rules! release_columns {
    () => {
        "id, tenant_id, name, session_id, version_id, root, envelope, created_by, created_at, \
         deleted_at"
    };
}
pub(crate) use release_columns;

pub(crate) fn release(row: &PgRow) -> Result<Release> {
    Ok(Release {
        id: get_parsed(row, 0, "release id")?,
        tenant_id: get_parsed(row, 1, "tenant id")?,
        name: get(row, 2)?,
        session_id: get_parsed(row, 3, "session id")?,
        version_id: get_parsed(row, 4, "version id")?,
        root: get(row, 5)?,
        envelope: get(row, 6)?,
        created_by: get(row, 7)?,
        created_at: get_timestamp(row, 8)?,
        deleted_at: get_optional_timestamp(row, 9)?,
    })
}
