//! Conversions between rows and domain records, and the column lists they expect.
//!
//! The column lists are macros expanding to string literals so that queries can be
//! assembled with `concat!` into the `&'static str` sqlx accepts without an audit wrapper.

use cordon_core::{
    ApiKey, Labels, Lease, Phase, Role, Session, SessionEvent, SessionId, Tenant, Timestamp,
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
         version, created_at, updated_at"
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
