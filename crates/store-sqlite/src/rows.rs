//! Conversions between rows and domain records.

use cordon_core::{
    ApiKey, CredentialLease, EgressDecision, EgressPolicyVersion, EvidenceCheckpoint,
    EvidenceEntry, EvidenceField, Labels, Phase, ReasonCode, Release, Role, SecretRecord, Session,
    SessionEvent, Tenant, Timestamp, VersionStats, WorkspaceVersion,
};
use cordon_store::{Result, StoreError};
use rusqlite::Row;

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in the database: {detail}"))
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|error| corrupt(what, error))
}

pub(crate) const TENANT_COLUMNS: &str = "id, name, created_at";

pub(crate) fn tenant(row: &Row<'_>) -> Result<Tenant> {
    Ok(Tenant {
        id: parse(
            "tenant id",
            &row.get::<_, String>(0).map_err(crate::store::sql)?,
        )?,
        name: row.get(1).map_err(crate::store::sql)?,
        created_at: Timestamp::from_unix_micros(row.get(2).map_err(crate::store::sql)?),
    })
}

pub(crate) const KEY_COLUMNS: &str =
    "id, tenant_id, role, name, system, token_digest, created_by, created_at, revoked_at";

pub(crate) fn key(row: &Row<'_>) -> Result<ApiKey> {
    let sql = crate::store::sql;
    let digest: Vec<u8> = row.get(5).map_err(sql)?;
    let created_by: Option<String> = row.get(6).map_err(sql)?;
    Ok(ApiKey {
        id: parse("key id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        role: parse::<Role>("role", &row.get::<_, String>(2).map_err(sql)?)?,
        name: row.get(3).map_err(sql)?,
        system: row.get(4).map_err(sql)?,
        token_digest: digest
            .try_into()
            .map_err(|_| corrupt("token digest", "not 32 bytes"))?,
        created_by: created_by.map(|id| parse("key id", &id)).transpose()?,
        created_at: Timestamp::from_unix_micros(row.get(7).map_err(sql)?),
        revoked_at: row
            .get::<_, Option<i64>>(8)
            .map_err(sql)?
            .map(Timestamp::from_unix_micros),
    })
}

pub(crate) const SESSION_COLUMNS: &str = "id, tenant_id, owner, workload_class, environment, \
     labels, policy_version, phase, version, created_at, updated_at, outcome";

pub(crate) fn session(row: &Row<'_>) -> Result<Session> {
    let sql = crate::store::sql;
    let labels: String = row.get(5).map_err(sql)?;
    Ok(Session {
        id: parse("session id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        owner: parse("key id", &row.get::<_, String>(2).map_err(sql)?)?,
        workload_class: row.get(3).map_err(sql)?,
        environment: row.get(4).map_err(sql)?,
        labels: serde_json::from_str::<Labels>(&labels).map_err(|e| corrupt("labels", e))?,
        policy_version: row.get(6).map_err(sql)?,
        phase: parse::<Phase>("phase", &row.get::<_, String>(7).map_err(sql)?)?,
        version: row.get(8).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(9).map_err(sql)?),
        updated_at: Timestamp::from_unix_micros(row.get(10).map_err(sql)?),
        outcome: row
            .get::<_, Option<String>>(11)
            .map_err(sql)?
            .map(|o| parse("session outcome", &o))
            .transpose()?,
    })
}

pub(crate) const FACT_COLUMNS: &str = "seq, tenant_id, kind, at, session_id, run_id, \
     workload_class, outcome, reason, subject, reference, value, value2, bytes, count";

pub(crate) fn fact(row: &Row<'_>) -> Result<cordon_core::Fact> {
    let sql = crate::store::sql;
    let opt_id = |i: usize| row.get::<_, Option<String>>(i).map_err(sql);
    Ok(cordon_core::Fact {
        seq: row.get(0).map_err(sql)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        kind: parse("fact kind", &row.get::<_, String>(2).map_err(sql)?)?,
        at: Timestamp::from_unix_micros(row.get(3).map_err(sql)?),
        session_id: opt_id(4)?.map(|s| parse("session id", &s)).transpose()?,
        run_id: opt_id(5)?.map(|s| parse("run id", &s)).transpose()?,
        workload_class: row.get(6).map_err(sql)?,
        outcome: row.get(7).map_err(sql)?,
        reason: row.get(8).map_err(sql)?,
        subject: row.get(9).map_err(sql)?,
        reference: row.get(10).map_err(sql)?,
        value: row.get(11).map_err(sql)?,
        value2: row.get(12).map_err(sql)?,
        bytes: row.get(13).map_err(sql)?,
        count: row.get(14).map_err(sql)?,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "session_id, seq, actor, from_phase, to_phase, reason, at";

pub(crate) fn event(row: &Row<'_>) -> Result<SessionEvent> {
    let sql = crate::store::sql;
    let from: Option<String> = row.get(3).map_err(sql)?;
    Ok(SessionEvent {
        session_id: parse("session id", &row.get::<_, String>(0).map_err(sql)?)?,
        seq: row.get(1).map_err(sql)?,
        actor: row.get(2).map_err(sql)?,
        from: from
            .map(|phase| parse::<Phase>("phase", &phase))
            .transpose()?,
        to: parse::<Phase>("phase", &row.get::<_, String>(4).map_err(sql)?)?,
        reason: row.get(5).map_err(sql)?,
        at: Timestamp::from_unix_micros(row.get(6).map_err(sql)?),
    })
}

/// A non-negative count stored as a signed integer.
pub(crate) fn unsigned(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|error| corrupt(what, error))
}

/// A port or an HTTP status.
fn u16_column(what: &str, value: i64) -> Result<u16> {
    u16::try_from(value).map_err(|error| corrupt(what, error))
}

fn timestamp(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(Timestamp::from_unix_micros)
}

pub(crate) const POLICY_COLUMNS: &str =
    "tenant_id, version, document, digest, created_by, created_at";

pub(crate) fn policy(row: &Row<'_>) -> Result<EgressPolicyVersion> {
    let sql = crate::store::sql;
    Ok(EgressPolicyVersion {
        tenant_id: parse("tenant id", &row.get::<_, String>(0).map_err(sql)?)?,
        version: row.get(1).map_err(sql)?,
        document: row.get(2).map_err(sql)?,
        digest: row.get(3).map_err(sql)?,
        created_by: row.get(4).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(5).map_err(sql)?),
    })
}

pub(crate) const SECRET_COLUMNS: &str = "id, tenant_id, name, service_class, header_name, \
     header_format, sealed_value, created_by, created_at, deleted_at";

pub(crate) fn secret(row: &Row<'_>) -> Result<SecretRecord> {
    let sql = crate::store::sql;
    Ok(SecretRecord {
        id: parse("secret id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        name: row.get(2).map_err(sql)?,
        service_class: row.get(3).map_err(sql)?,
        header_name: row.get(4).map_err(sql)?,
        header_format: row.get(5).map_err(sql)?,
        sealed_value: row.get(6).map_err(sql)?,
        created_by: row.get(7).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(8).map_err(sql)?),
        deleted_at: timestamp(row.get(9).map_err(sql)?),
    })
}

pub(crate) const CREDENTIAL_LEASE_COLUMNS: &str = "id, tenant_id, session_id, secret_id, \
     issued_by, issued_at, expires_at, max_expires_at, revoked_at, revoke_reason";

pub(crate) fn credential_lease(row: &Row<'_>) -> Result<CredentialLease> {
    let sql = crate::store::sql;
    Ok(CredentialLease {
        id: parse("lease id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        session_id: parse("session id", &row.get::<_, String>(2).map_err(sql)?)?,
        secret_id: parse("secret id", &row.get::<_, String>(3).map_err(sql)?)?,
        issued_by: row.get(4).map_err(sql)?,
        issued_at: Timestamp::from_unix_micros(row.get(5).map_err(sql)?),
        expires_at: Timestamp::from_unix_micros(row.get(6).map_err(sql)?),
        max_expires_at: Timestamp::from_unix_micros(row.get(7).map_err(sql)?),
        revoked_at: timestamp(row.get(8).map_err(sql)?),
        revoke_reason: row.get(9).map_err(sql)?,
    })
}

pub(crate) const DECISION_COLUMNS: &str = "seq, tenant_id, session_id, at, kind, host, port, \
     address, method, path, reason, mode, service_class, rule, policy_version, credential, \
     status, bytes_sent, bytes_received, duration_micros";

pub(crate) fn decision(row: &Row<'_>) -> Result<EgressDecision> {
    let sql = crate::store::sql;
    let reason: String = row.get(10).map_err(sql)?;
    Ok(EgressDecision {
        seq: row.get(0).map_err(sql)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        session_id: parse("session id", &row.get::<_, String>(2).map_err(sql)?)?,
        at: Timestamp::from_unix_micros(row.get(3).map_err(sql)?),
        kind: row.get(4).map_err(sql)?,
        host: row.get(5).map_err(sql)?,
        port: u16_column("port", row.get(6).map_err(sql)?)?,
        address: row.get(7).map_err(sql)?,
        method: row.get(8).map_err(sql)?,
        path: row.get(9).map_err(sql)?,
        reason: ReasonCode::from_code(&reason)
            .ok_or_else(|| corrupt("reason code", format!("unknown code `{reason}`")))?,
        mode: row.get(11).map_err(sql)?,
        service_class: row.get(12).map_err(sql)?,
        rule: row.get(13).map_err(sql)?,
        policy_version: row.get(14).map_err(sql)?,
        credential: row.get(15).map_err(sql)?,
        status: row
            .get::<_, Option<i64>>(16)
            .map_err(sql)?
            .map(|status| u16_column("status", status))
            .transpose()?,
        bytes_sent: unsigned("bytes sent", row.get(17).map_err(sql)?)?,
        bytes_received: unsigned("bytes received", row.get(18).map_err(sql)?)?,
        duration_micros: row.get(19).map_err(sql)?,
    })
}

/// A SHA-256 digest stored as a blob.
fn digest(what: &str, bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt(what, "not 32 bytes"))
}

pub(crate) const VERSION_COLUMNS: &str = "id, tenant_id, session_id, parent, root, summary, \
     files, dirs, symlinks, bytes, blobs_written, bytes_written, origin, created_by, \
     created_at, deleted_at";

pub(crate) fn version(row: &Row<'_>) -> Result<WorkspaceVersion> {
    let sql = crate::store::sql;
    let parent: Option<String> = row.get(3).map_err(sql)?;
    Ok(WorkspaceVersion {
        id: parse("version id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        session_id: parse("session id", &row.get::<_, String>(2).map_err(sql)?)?,
        parent: parent.map(|id| parse("version id", &id)).transpose()?,
        root: row.get(4).map_err(sql)?,
        summary: row.get(5).map_err(sql)?,
        stats: VersionStats {
            files: unsigned("file count", row.get(6).map_err(sql)?)?,
            dirs: unsigned("directory count", row.get(7).map_err(sql)?)?,
            symlinks: unsigned("symlink count", row.get(8).map_err(sql)?)?,
            bytes: unsigned("byte count", row.get(9).map_err(sql)?)?,
            blobs_written: unsigned("blobs written", row.get(10).map_err(sql)?)?,
            bytes_written: unsigned("bytes written", row.get(11).map_err(sql)?)?,
        },
        origin: row.get(12).map_err(sql)?,
        created_by: row.get(13).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(14).map_err(sql)?),
        deleted_at: timestamp(row.get(15).map_err(sql)?),
    })
}

pub(crate) const ENTRY_COLUMNS: &str = "tenant_id, idx, session_id, kind, at, leaf, leaf_hash";

/// An entry without its fields, which live in a table of their own.
pub(crate) fn entry(row: &Row<'_>) -> Result<EvidenceEntry> {
    let sql = crate::store::sql;
    let session_id: Option<String> = row.get(2).map_err(sql)?;
    Ok(EvidenceEntry {
        tenant_id: parse("tenant id", &row.get::<_, String>(0).map_err(sql)?)?,
        index: unsigned("evidence index", row.get(1).map_err(sql)?)?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        kind: row.get(3).map_err(sql)?,
        at: Timestamp::from_unix_micros(row.get(4).map_err(sql)?),
        leaf: row.get(5).map_err(sql)?,
        leaf_hash: digest("leaf hash", row.get(6).map_err(sql)?)?,
        fields: Vec::new(),
    })
}

/// A field with the index of its entry: `idx, name, salt, value`.
pub(crate) fn field(row: &Row<'_>) -> Result<(u64, EvidenceField)> {
    let sql = crate::store::sql;
    Ok((
        unsigned("evidence index", row.get(0).map_err(sql)?)?,
        EvidenceField {
            name: row.get(1).map_err(sql)?,
            salt: row.get(2).map_err(sql)?,
            value: row.get(3).map_err(sql)?,
        },
    ))
}

pub(crate) fn leaf_hash(row: &Row<'_>) -> Result<[u8; 32]> {
    digest("leaf hash", row.get(0).map_err(crate::store::sql)?)
}

pub(crate) const CHECKPOINT_COLUMNS: &str = "tenant_id, size, root, note, at";

pub(crate) fn checkpoint(row: &Row<'_>) -> Result<EvidenceCheckpoint> {
    let sql = crate::store::sql;
    Ok(EvidenceCheckpoint {
        tenant_id: parse("tenant id", &row.get::<_, String>(0).map_err(sql)?)?,
        size: unsigned("checkpoint size", row.get(1).map_err(sql)?)?,
        root: digest("checkpoint root", row.get(2).map_err(sql)?)?,
        note: row.get(3).map_err(sql)?,
        at: Timestamp::from_unix_micros(row.get(4).map_err(sql)?),
    })
}

pub(crate) const RELEASE_COLUMNS: &str = "id, tenant_id, name, session_id, version_id, root, \
     envelope, created_by, created_at, deleted_at";

pub(crate) fn release(row: &Row<'_>) -> Result<Release> {
    let sql = crate::store::sql;
    Ok(Release {
        id: parse("release id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        name: row.get(2).map_err(sql)?,
        session_id: parse("session id", &row.get::<_, String>(3).map_err(sql)?)?,
        version_id: parse("version id", &row.get::<_, String>(4).map_err(sql)?)?,
        root: row.get(5).map_err(sql)?,
        envelope: row.get(6).map_err(sql)?,
        created_by: row.get(7).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(8).map_err(sql)?),
        deleted_at: timestamp(row.get(9).map_err(sql)?),
    })
}

pub(crate) fn stored_bytes(row: &Row<'_>) -> Result<cordon_core::StoredBytes> {
    let sql = crate::store::sql;
    let bytes: i64 = row.get(4).map_err(sql)?;
    Ok(cordon_core::StoredBytes {
        tenant_id: parse("tenant id", &row.get::<_, String>(0).map_err(sql)?)?,
        session_id: parse("session id", &row.get::<_, String>(1).map_err(sql)?)?,
        workload_class: row.get(2).map_err(sql)?,
        run_id: row
            .get::<_, Option<String>>(3)
            .map_err(sql)?
            .and_then(|r| r.parse().ok()),
        bytes: u64::try_from(bytes).unwrap_or(0),
        created_at: Timestamp::from_unix_micros(row.get(5).map_err(sql)?),
        deleted_at: row
            .get::<_, Option<i64>>(6)
            .map_err(sql)?
            .map(Timestamp::from_unix_micros),
    })
}
