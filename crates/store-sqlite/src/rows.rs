//! Conversions between rows and domain records.

use cordon_core::{ApiKey, Labels, Phase, Role, Session, SessionEvent, Tenant, Timestamp};
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
     labels, policy_version, phase, version, created_at, updated_at";

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
