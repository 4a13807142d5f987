//! Ready-made records for tests: a fixed clock, tenants, keys, sessions and
//! idempotency scopes with fresh ids and plausible contents.

use cordon_core::{
    ApiKey, KeyId, Labels, NewSession, Role, SessionId, Tenant, TenantId, Timestamp,
};
use cordon_store::IdempotencyScope;
use uuid::Uuid;

/// The fixed instant the fixtures count from (2025-06-15T15:06:40Z), so that tests pass
/// explicit times to the store instead of depending on the wall clock.
pub const EPOCH_MICROS: i64 = 1_750_000_000_000_000;

/// `EPOCH_MICROS` plus `seconds`.
pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(EPOCH_MICROS + seconds * 1_000_000)
}

/// `EPOCH_MICROS` plus `micros`, for tests of exact boundaries.
pub fn at_micros(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(EPOCH_MICROS + micros)
}

/// A fresh id for the tests that name things: 32 lowercase hex digits.
pub fn unique_hex() -> String {
    Uuid::now_v7().simple().to_string()
}

pub fn tenant(name: &str) -> Tenant {
    Tenant {
        id: TenantId::generate(),
        name: name.to_owned(),
        created_at: at(0),
    }
}

/// An unrevoked, non-system key with a random token digest.
pub fn key(tenant_id: TenantId, role: Role) -> ApiKey {
    let mut token_digest = [0u8; 32];
    token_digest[..16].copy_from_slice(Uuid::now_v7().as_bytes());
    token_digest[16..].copy_from_slice(Uuid::now_v7().as_bytes());
    ApiKey {
        id: KeyId::generate(),
        tenant_id,
        role,
        name: format!("{role} key"),
        system: false,
        token_digest,
        created_by: None,
        created_at: at(0),
        revoked_at: None,
    }
}

/// The system admin key `bootstrap` expects.
pub fn system_key(tenant_id: TenantId) -> ApiKey {
    ApiKey {
        system: true,
        name: "bootstrap".to_owned(),
        ..key(tenant_id, Role::Admin)
    }
}

pub fn new_session(tenant_id: TenantId, owner: KeyId) -> NewSession {
    NewSession {
        id: SessionId::generate(),
        tenant_id,
        owner,
        workload_class: "batch".to_owned(),
        environment: "dev".to_owned(),
        labels: Labels::from([
            ("team".to_owned(), "platform".to_owned()),
            ("note".to_owned(), "ünïcödé \"quoted\" ✓".to_owned()),
        ]),
        policy_version: "policy-1".to_owned(),
        created_at: at(0),
    }
}

pub fn scope(tenant_id: TenantId, principal: KeyId, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        tenant_id,
        principal,
        key: key.to_owned(),
    }
}
