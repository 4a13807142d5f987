//! The store conformance suite: what every `Store` backend must do, as plain async
//! functions that panic on the first deviation. `tests/conformance.rs` runs each of them
//! against every backend, each on a fresh, empty store.
//!
//! The checks pass explicit times (see [`fixtures::at`]) and never sleep. They take an
//! `Arc<dyn Store>` so that the concurrent ones can spawn tasks on it; those need a
//! multi-threaded runtime to race for real.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cordon_core::{
    ApiKey, CredentialLease, CredentialLeaseId, EgressDecision, EgressDecisionFilter,
    EgressPolicyVersion, EvidenceCheckpoint, EvidenceEntry, EvidenceField, EvidenceFilter, KeyId,
    Lease, NewEvidenceEntry, NewSession, Phase, ReasonCode, Release, ReleaseId, Role, SecretId,
    SecretRecord, Session, SessionEvent, SessionFilter, SessionId, Tenant, TenantId, Timestamp,
    VersionId, VersionStats, WorkspaceVersion,
};
use cordon_store::{
    IdempotencyScope, IdempotencyStart, LeaseOutcome, RecordedResponse, Store, StoreError,
    Transition,
};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::TestStore;
use crate::fixtures::{self, at, at_micros};

mod telemetry;
mod workflow;
pub use telemetry::*;
pub use workflow::*;

/// The lease time-to-live the checks use unless they say otherwise.
const TTL: Duration = Duration::from_secs(30);

#[track_caller]
fn ok<T, E: Display>(result: Result<T, E>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{doing}: unexpected error: {error}"),
    }
}

#[track_caller]
fn some<T>(option: Option<T>, what: &str) -> T {
    match option {
        Some(value) => value,
        None => panic!("{what}: not found"),
    }
}

#[track_caller]
fn refused<T: Debug>(result: Result<T, StoreError>, doing: &str) -> StoreError {
    match result {
        Ok(value) => panic!("{doing}: expected an error, got {value:?}"),
        Err(error) => error,
    }
}

#[track_caller]
fn acquired(outcome: LeaseOutcome) -> Lease {
    match outcome {
        LeaseOutcome::Acquired(lease) => lease,
        LeaseOutcome::Held(lease) => {
            panic!("expected to acquire the lease, but it is held: {lease:?}")
        }
    }
}

#[track_caller]
fn held(outcome: LeaseOutcome) -> Lease {
    match outcome {
        LeaseOutcome::Held(lease) => lease,
        LeaseOutcome::Acquired(lease) => {
            panic!("expected the lease to be held, but got it: {lease:?}")
        }
    }
}

/// A tenant and an admin key in it.
async fn tenant_with_key(store: &dyn Store, name: &str) -> (Tenant, ApiKey) {
    let tenant = fixtures::tenant(name);
    ok(store.create_tenant(&tenant).await, "create tenant");
    let key = fixtures::key(tenant.id, Role::Admin);
    ok(store.create_key(&key).await, "create key");
    (tenant, key)
}

async fn session(store: &dyn Store, tenant: TenantId, owner: KeyId) -> Session {
    ok(
        store
            .create_session(&fixtures::new_session(tenant, owner), "creator")
            .await,
        "create session",
    )
}

async fn lease(
    store: &dyn Store,
    tenant: TenantId,
    session: SessionId,
    holder: &str,
    now: Timestamp,
) -> Lease {
    acquired(ok(
        store.acquire_lease(tenant, session, holder, TTL, now).await,
        "acquire lease",
    ))
}

fn step(
    session: &Session,
    from: Phase,
    to: Phase,
    fence: i64,
    actor: &str,
    at: Timestamp,
) -> Transition {
    Transition {
        tenant_id: session.tenant_id,
        session_id: session.id,
        from,
        to,
        fence,
        actor: actor.to_owned(),
        reason: None,
        at,
        outcome: None,
    }
}

/// Moves a session from `created` to `to` (active, suspended or closed) under a lease
/// held by `mover`.
async fn advance(store: &dyn Store, session: &Session, to: Phase) -> Session {
    let fence = lease(store, session.tenant_id, session.id, "mover", at(1))
        .await
        .token;
    let path: &[Phase] = match to {
        Phase::Created => &[],
        Phase::Active => &[Phase::Active],
        Phase::Checkpointed => &[Phase::Active, Phase::Checkpointed],
        Phase::Suspended => &[Phase::Active, Phase::Suspended],
        Phase::Closed => &[Phase::Closed],
    };
    let mut current = session.clone();
    for &next in path {
        let transition = step(&current, current.phase, next, fence, "mover", at(2));
        current = ok(store.transition(&transition).await, "advance session");
    }
    current
}

async fn all_events(store: &dyn Store, session: &Session) -> Vec<SessionEvent> {
    ok(
        store
            .list_events(session.tenant_id, session.id, 0, 100_000)
            .await,
        "list events",
    )
}

fn sorted_by_id(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by_key(|session| session.id);
    sessions
}

// ---------------------------------------------------------------------------------------
// Basics and bootstrap

/// A fresh store answers `ping`.
pub async fn ping(store: Arc<dyn Store>) {
    ok(store.ping().await, "ping");
}

/// The first bootstrap creates the tenant and its key; later ones do nothing.
pub async fn bootstrap_happens_once(store: Arc<dyn Store>) {
    let first = fixtures::tenant("root");
    let first_key = fixtures::system_key(first.id);
    assert!(ok(
        store.bootstrap(&first, &first_key).await,
        "first bootstrap"
    ));
    assert_eq!(
        ok(store.get_tenant(first.id).await, "get tenant"),
        Some(first.clone())
    );
    assert_eq!(
        ok(
            store.get_key_by_digest(&first_key.token_digest).await,
            "get key"
        ),
        Some(first_key.clone())
    );

    let second = fixtures::tenant("another-root");
    let second_key = fixtures::system_key(second.id);
    assert!(!ok(
        store.bootstrap(&second, &second_key).await,
        "second bootstrap"
    ));
    assert_eq!(ok(store.get_tenant(second.id).await, "get tenant"), None);
    assert_eq!(
        ok(
            store.get_key_by_digest(&second_key.token_digest).await,
            "get key"
        ),
        None
    );
    assert_eq!(ok(store.list_tenants().await, "list tenants"), vec![first]);
    assert_eq!(
        ok(store.list_keys(first_key.tenant_id).await, "list keys"),
        vec![first_key]
    );
}

/// Bootstrap is refused once any tenant exists, however it was created.
pub async fn bootstrap_refused_after_create_tenant(store: Arc<dyn Store>) {
    let existing = fixtures::tenant("existing");
    ok(store.create_tenant(&existing).await, "create tenant");
    let root = fixtures::tenant("root");
    let root_key = fixtures::system_key(root.id);
    assert!(!ok(store.bootstrap(&root, &root_key).await, "bootstrap"));
    assert_eq!(
        ok(store.list_tenants().await, "list tenants"),
        vec![existing]
    );
    assert_eq!(
        ok(
            store.get_key_by_digest(&root_key.token_digest).await,
            "get key"
        ),
        None
    );
}

/// Of nodes bootstrapping the same empty store at once, exactly one succeeds.
pub async fn concurrent_bootstraps_create_one_tenant(store: Arc<dyn Store>) {
    const NODES: usize = 8;
    let mut tasks = JoinSet::new();
    for node in 0..NODES {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let tenant = fixtures::tenant(&format!("root-{node}"));
            let key = fixtures::system_key(tenant.id);
            let created = ok(store.bootstrap(&tenant, &key).await, "bootstrap");
            (created, tenant, key)
        });
    }
    let outcomes = tasks.join_all().await;
    let winners: Vec<_> = outcomes.iter().filter(|(created, _, _)| *created).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one bootstrap must win: {outcomes:?}"
    );
    let (_, tenant, key) = winners[0];
    assert_eq!(
        ok(store.list_tenants().await, "list tenants"),
        vec![tenant.clone()]
    );
    assert_eq!(
        ok(store.list_keys(tenant.id).await, "list keys"),
        vec![key.clone()]
    );
    for (_, _, loser_key) in outcomes.iter().filter(|(created, _, _)| !*created) {
        assert_eq!(
            ok(
                store.get_key_by_digest(&loser_key.token_digest).await,
                "get key"
            ),
            None
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tenants and keys

/// Tenants round-trip and list in id order.
pub async fn tenants_create_get_list(store: Arc<dyn Store>) {
    assert_eq!(ok(store.list_tenants().await, "list tenants"), vec![]);
    let mut tenants = Vec::new();
    for name in ["acme", "globex", "initech ✓"] {
        let tenant = fixtures::tenant(name);
        ok(store.create_tenant(&tenant).await, "create tenant");
        tenants.push(tenant);
    }
    for tenant in &tenants {
        assert_eq!(
            ok(store.get_tenant(tenant.id).await, "get tenant").as_ref(),
            Some(tenant)
        );
    }
    assert_eq!(
        ok(
            store.get_tenant(TenantId::generate()).await,
            "get unknown tenant"
        ),
        None
    );
    tenants.sort_by_key(|tenant| tenant.id);
    assert_eq!(ok(store.list_tenants().await, "list tenants"), tenants);
}

/// A second tenant with a taken name is refused with `TenantNameTaken`.
pub async fn tenant_name_conflict(store: Arc<dyn Store>) {
    let first = fixtures::tenant("acme");
    ok(store.create_tenant(&first).await, "create tenant");
    let error = refused(
        store.create_tenant(&fixtures::tenant("acme")).await,
        "duplicate name",
    );
    assert!(
        matches!(&error, StoreError::TenantNameTaken(name) if name == "acme"),
        "{error:?}"
    );
    assert_eq!(ok(store.list_tenants().await, "list tenants"), vec![first]);
}

/// Keys round-trip by id and by digest, stay inside their tenant and list in id order.
pub async fn keys_create_get_list(store: Arc<dyn Store>) {
    let (a, admin) = tenant_with_key(&*store, "a").await;
    let (b, b_admin) = tenant_with_key(&*store, "b").await;
    let mut a_keys = vec![admin.clone()];
    for role in Role::ALL {
        let key = ApiKey {
            created_by: Some(admin.id),
            created_at: at(5),
            ..fixtures::key(a.id, role)
        };
        ok(store.create_key(&key).await, "create key");
        a_keys.push(key);
    }
    let revoked = ApiKey {
        revoked_at: Some(at(9)),
        system: true,
        ..fixtures::key(a.id, Role::Auditor)
    };
    ok(store.create_key(&revoked).await, "create revoked key");
    a_keys.push(revoked);

    for key in &a_keys {
        assert_eq!(
            ok(store.get_key(a.id, key.id).await, "get key").as_ref(),
            Some(key)
        );
        assert_eq!(
            ok(
                store.get_key(b.id, key.id).await,
                "get key of another tenant"
            ),
            None
        );
        assert_eq!(
            ok(
                store.get_key_by_digest(&key.token_digest).await,
                "get key by digest"
            )
            .as_ref(),
            Some(key)
        );
    }
    assert_eq!(
        ok(
            store.get_key(a.id, KeyId::generate()).await,
            "get unknown key"
        ),
        None
    );
    assert_eq!(
        ok(
            store.get_key_by_digest(&[7; 32]).await,
            "get unknown digest"
        ),
        None
    );
    a_keys.sort_by_key(|key| key.id);
    assert_eq!(ok(store.list_keys(a.id).await, "list keys"), a_keys);
    assert_eq!(ok(store.list_keys(b.id).await, "list keys"), vec![b_admin]);
    assert_eq!(
        ok(store.list_keys(TenantId::generate()).await, "list keys"),
        vec![]
    );
}

/// A key for a tenant that does not exist is refused with `NotFound`; a key reusing
/// another key's digest is refused as a backend error and not stored.
pub async fn key_creation_refusals(store: Arc<dyn Store>) {
    let orphan = fixtures::key(TenantId::generate(), Role::Admin);
    let error = refused(store.create_key(&orphan).await, "key of an unknown tenant");
    assert!(matches!(error, StoreError::NotFound), "{error:?}");

    let (tenant, admin) = tenant_with_key(&*store, "a").await;
    let twin = ApiKey {
        token_digest: admin.token_digest,
        ..fixtures::key(tenant.id, Role::Agent)
    };
    let error = refused(store.create_key(&twin).await, "duplicate digest");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    assert_eq!(
        ok(store.list_keys(tenant.id).await, "list keys"),
        vec![admin]
    );
}

/// Revoking keeps the first revocation time, and never reaches into another tenant.
pub async fn revoke_key_keeps_first_time(store: Arc<dyn Store>) {
    let (a, admin) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let key = fixtures::key(a.id, Role::Agent);
    ok(store.create_key(&key).await, "create key");

    let error = refused(
        store.revoke_key(b.id, key.id, at(10)).await,
        "revoke from another tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let error = refused(
        store.revoke_key(a.id, KeyId::generate(), at(10)).await,
        "revoke unknown",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    assert_eq!(
        ok(store.get_key(a.id, key.id).await, "get key"),
        Some(key.clone())
    );

    let expected = ApiKey {
        revoked_at: Some(at(10)),
        ..key.clone()
    };
    assert_eq!(
        ok(store.revoke_key(a.id, key.id, at(10)).await, "revoke"),
        expected
    );
    assert_eq!(
        ok(store.revoke_key(a.id, key.id, at(20)).await, "revoke again"),
        expected
    );
    assert_eq!(
        ok(store.get_key(a.id, key.id).await, "get key"),
        Some(expected.clone())
    );
    assert_eq!(
        ok(
            store.get_key_by_digest(&key.token_digest).await,
            "get by digest"
        ),
        Some(expected)
    );
    assert_eq!(
        ok(store.get_key(a.id, admin.id).await, "get other key"),
        Some(admin)
    );
}

// ---------------------------------------------------------------------------------------
// Sessions

/// A new session is `created` at version 1 with its creation event, and is invisible
/// from other tenants.
pub async fn sessions_create_get(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let new = fixtures::new_session(a.id, owner.id);
    let created = ok(
        store.create_session(&new, "key_creator").await,
        "create session",
    );
    let expected = Session {
        id: new.id,
        tenant_id: a.id,
        owner: owner.id,
        workload_class: new.workload_class.clone(),
        environment: new.environment.clone(),
        labels: new.labels.clone(),
        policy_version: new.policy_version.clone(),
        phase: Phase::Created,
        version: 1,
        created_at: new.created_at,
        updated_at: new.created_at,
        outcome: None,
    };
    assert_eq!(created, expected);
    assert_eq!(
        ok(store.get_session(a.id, new.id).await, "get session"),
        Some(expected.clone())
    );
    assert_eq!(
        ok(
            store.get_session(b.id, new.id).await,
            "get from another tenant"
        ),
        None
    );
    assert_eq!(
        ok(
            store.get_session(a.id, SessionId::generate()).await,
            "get unknown"
        ),
        None
    );
    assert_eq!(
        all_events(&*store, &created).await,
        vec![SessionEvent {
            session_id: new.id,
            seq: 1,
            actor: "key_creator".to_owned(),
            from: None,
            to: Phase::Created,
            reason: None,
            at: new.created_at,
        }]
    );

    let empty_labels = fixtures::new_session(a.id, owner.id);
    let empty_labels = NewSession {
        labels: Default::default(),
        ..empty_labels
    };
    let created = ok(
        store.create_session(&empty_labels, "creator").await,
        "create session",
    );
    assert!(created.labels.is_empty());
    assert_eq!(
        ok(store.get_session(a.id, created.id).await, "get session"),
        Some(created)
    );
}

/// Sessions for unknown tenants, and duplicate session ids, are refused and not stored.
pub async fn session_creation_refusals(store: Arc<dyn Store>) {
    let orphan = fixtures::new_session(TenantId::generate(), KeyId::generate());
    let error = refused(
        store.create_session(&orphan, "creator").await,
        "unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");

    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let first = session(&*store, tenant.id, owner.id).await;
    let again = NewSession {
        id: first.id,
        environment: "prod".to_owned(),
        ..fixtures::new_session(tenant.id, owner.id)
    };
    refused(
        store.create_session(&again, "creator").await,
        "duplicate id",
    );
    assert_eq!(
        ok(store.get_session(tenant.id, first.id).await, "get session"),
        Some(first.clone())
    );
    assert_eq!(all_events(&*store, &first).await.len(), 1);
}

/// Every filter, alone and combined, selects exactly the matching sessions of the
/// tenant, in id order.
pub async fn sessions_list_filters(store: Arc<dyn Store>) {
    let (a, first_owner) = tenant_with_key(&*store, "a").await;
    let second_owner = fixtures::key(a.id, Role::Agent);
    ok(store.create_key(&second_owner).await, "create key");
    let (b, b_owner) = tenant_with_key(&*store, "b").await;

    let mut sessions = Vec::new();
    for index in 0..12_usize {
        let owner = if index % 2 == 0 {
            first_owner.id
        } else {
            second_owner.id
        };
        let new = NewSession {
            workload_class: ["batch", "interactive", "batch"][index % 3].to_owned(),
            environment: ["dev", "prod", "dev", "staging"][index % 4].to_owned(),
            ..fixtures::new_session(a.id, owner)
        };
        let created = ok(
            store.create_session(&new, "creator").await,
            "create session",
        );
        let phase = [
            Phase::Created,
            Phase::Active,
            Phase::Suspended,
            Phase::Closed,
        ][index % 4];
        sessions.push(advance(&*store, &created, phase).await);
    }
    let other_tenant = session(&*store, b.id, b_owner.id).await;

    let filters = [
        SessionFilter::default(),
        SessionFilter {
            phase: Some(Phase::Active),
            ..Default::default()
        },
        SessionFilter {
            phase: Some(Phase::Created),
            ..Default::default()
        },
        SessionFilter {
            phase: Some(Phase::Checkpointed),
            ..Default::default()
        },
        SessionFilter {
            workload_class: Some("batch".to_owned()),
            ..Default::default()
        },
        SessionFilter {
            workload_class: Some("unknown".to_owned()),
            ..Default::default()
        },
        SessionFilter {
            environment: Some("prod".to_owned()),
            ..Default::default()
        },
        SessionFilter {
            owner: Some(second_owner.id),
            ..Default::default()
        },
        SessionFilter {
            owner: Some(b_owner.id),
            ..Default::default()
        },
        SessionFilter {
            phase: Some(Phase::Created),
            workload_class: Some("batch".to_owned()),
            environment: Some("dev".to_owned()),
            owner: Some(first_owner.id),
            after: None,
        },
        SessionFilter {
            workload_class: Some("batch".to_owned()),
            after: Some(sorted_by_id(sessions.clone())[5].id),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected = sorted_by_id(
            sessions
                .iter()
                .filter(|s| filter.phase.is_none_or(|phase| s.phase == phase))
                .filter(|s| {
                    filter
                        .workload_class
                        .as_ref()
                        .is_none_or(|c| &s.workload_class == c)
                })
                .filter(|s| {
                    filter
                        .environment
                        .as_ref()
                        .is_none_or(|e| &s.environment == e)
                })
                .filter(|s| filter.owner.is_none_or(|owner| s.owner == owner))
                .filter(|s| filter.after.is_none_or(|after| s.id > after))
                .cloned()
                .collect(),
        );
        let listed = ok(
            store.list_sessions(a.id, &filter, 100).await,
            "list sessions",
        );
        assert_eq!(listed, expected, "filter {filter:?}");
    }
    assert_eq!(
        ok(
            store
                .list_sessions(b.id, &SessionFilter::default(), 100)
                .await,
            "list sessions"
        ),
        vec![other_tenant]
    );
}

/// Following the `after` cursor with a page limit visits every session once, in order.
pub async fn sessions_list_pagination(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let mut sessions = Vec::new();
    for _ in 0..7 {
        sessions.push(session(&*store, tenant.id, owner.id).await);
    }
    let sessions = sorted_by_id(sessions);

    let mut filter = SessionFilter::default();
    let mut pages = Vec::new();
    loop {
        let page = ok(
            store.list_sessions(tenant.id, &filter, 3).await,
            "list page",
        );
        let Some(last) = page.last() else { break };
        filter.after = Some(last.id);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(pages.concat(), sessions);

    let none = ok(
        store
            .list_sessions(tenant.id, &SessionFilter::default(), 0)
            .await,
        "limit 0",
    );
    assert_eq!(none, vec![]);
    let after_unknown = SessionFilter {
        after: Some(SessionId::generate()),
        ..Default::default()
    };
    assert_eq!(
        ok(
            store.list_sessions(tenant.id, &after_unknown, 10).await,
            "after newest"
        ),
        vec![]
    );
}

/// Counts per phase cover every tenant and leave out empty phases.
pub async fn count_sessions_by_phase(store: Arc<dyn Store>) {
    assert_eq!(ok(store.count_sessions_by_phase().await, "count"), vec![]);
    let (a, a_owner) = tenant_with_key(&*store, "a").await;
    let (b, b_owner) = tenant_with_key(&*store, "b").await;
    for (tenant, owner, phase) in [
        (a.id, a_owner.id, Phase::Created),
        (a.id, a_owner.id, Phase::Created),
        (a.id, a_owner.id, Phase::Active),
        (b.id, b_owner.id, Phase::Active),
        (b.id, b_owner.id, Phase::Closed),
        (b.id, b_owner.id, Phase::Created),
    ] {
        let created = session(&*store, tenant, owner).await;
        advance(&*store, &created, phase).await;
    }
    let counts: BTreeMap<Phase, u64> = ok(store.count_sessions_by_phase().await, "count")
        .into_iter()
        .collect();
    let expected = BTreeMap::from([(Phase::Created, 3), (Phase::Active, 2), (Phase::Closed, 1)]);
    assert_eq!(counts, expected);
}

// ---------------------------------------------------------------------------------------
// Leases

/// The first acquirer gets token 1; renewing keeps the token and extends the expiry;
/// another holder is told who holds it until it expires.
pub async fn lease_acquire_renew_held(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let session = session(&*store, tenant.id, owner.id).await;
    let (tenant_id, session_id) = (tenant.id, session.id);
    let acquire = |holder: &'static str, now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .acquire_lease(tenant_id, session_id, holder, TTL, now)
                    .await,
                "acquire",
            )
        }
    };

    let first = acquired(acquire("node-a", at(0)).await);
    let expected = Lease {
        session_id: session.id,
        holder: "node-a".to_owned(),
        token: 1,
        expires_at: at(30),
    };
    assert_eq!(first, expected);

    let renewed = acquired(acquire("node-a", at(10)).await);
    assert_eq!(
        renewed,
        Lease {
            expires_at: at(40),
            ..expected.clone()
        }
    );

    assert_eq!(held(acquire("node-b", at(20)).await), renewed);
    // Still live one microsecond before it expires.
    assert_eq!(
        held(acquire("node-b", at_micros(40_000_000 - 1)).await),
        renewed
    );
    // A holder may renew even after its lease expired, if nobody took it meanwhile.
    let late = acquired(acquire("node-a", at(100)).await);
    assert_eq!(
        late,
        Lease {
            expires_at: at(130),
            ..expected
        }
    );
}

/// Once a lease has expired, another holder takes it over with the next token.
pub async fn lease_takeover_after_expiry(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let session = session(&*store, tenant.id, owner.id).await;
    let (tenant_id, session_id) = (tenant.id, session.id);
    let acquire = |holder: &'static str, now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .acquire_lease(tenant_id, session_id, holder, TTL, now)
                    .await,
                "acquire",
            )
        }
    };

    assert_eq!(acquired(acquire("node-a", at(0)).await).token, 1);
    // Expired exactly at `expires_at`.
    let taken = acquired(acquire("node-b", at(30)).await);
    assert_eq!(
        taken,
        Lease {
            session_id: session.id,
            holder: "node-b".to_owned(),
            token: 2,
            expires_at: at(60)
        }
    );
    assert_eq!(held(acquire("node-a", at(31)).await), taken);
    let back = acquired(acquire("node-a", at(61)).await);
    assert_eq!(
        (back.holder.as_str(), back.token, back.expires_at),
        ("node-a", 3, at(91))
    );
}

/// A released lease can be taken at once by another holder, with the next token; a
/// release by a stale lease changes nothing.
pub async fn lease_release(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let session = session(&*store, tenant.id, owner.id).await;
    let (tenant_id, session_id) = (tenant.id, session.id);
    let acquire = |holder: &'static str, now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .acquire_lease(tenant_id, session_id, holder, TTL, now)
                    .await,
                "acquire",
            )
        }
    };

    let first = acquired(acquire("node-a", at(0)).await);
    ok(store.release_lease(&first).await, "release");
    let second = acquired(acquire("node-b", at(1)).await);
    assert_eq!((second.holder.as_str(), second.token), ("node-b", 2));

    // node-a's old lease is stale: releasing it must not free node-b's.
    ok(store.release_lease(&first).await, "stale release");
    assert_eq!(held(acquire("node-a", at(2)).await), second);
    // Neither does a release naming the right token but the wrong holder.
    ok(
        store
            .release_lease(&Lease {
                holder: "node-a".to_owned(),
                ..second.clone()
            })
            .await,
        "release",
    );
    assert_eq!(held(acquire("node-a", at(3)).await), second);

    // Releasing and re-acquiring by the same holder keeps the token.
    ok(store.release_lease(&second).await, "release");
    let again = acquired(acquire("node-b", at(4)).await);
    assert_eq!(
        (again.holder.as_str(), again.token, again.expires_at),
        ("node-b", 2, at(34))
    );

    // Releasing a lease of a session that does not exist is a no-op, not an error.
    let phantom = Lease {
        session_id: SessionId::generate(),
        ..first
    };
    ok(store.release_lease(&phantom).await, "release unknown");
}

/// Leases exist only for sessions of the caller's tenant.
pub async fn lease_not_found(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let session = session(&*store, a.id, owner.id).await;

    let error = refused(
        store
            .acquire_lease(a.id, SessionId::generate(), "n", TTL, at(0))
            .await,
        "unknown",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let error = refused(
        store.acquire_lease(b.id, session.id, "n", TTL, at(0)).await,
        "other tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");

    let lease = lease(&*store, a.id, session.id, "node-a", at(0)).await;
    // Neither a live nor an expired lease is visible or takeable from another tenant.
    for now in [at(1), at(100)] {
        let error = refused(
            store.acquire_lease(b.id, session.id, "n", TTL, now).await,
            "other tenant",
        );
        assert!(matches!(error, StoreError::NotFound), "{error:?}");
    }
    assert_eq!(
        held(ok(
            store.acquire_lease(a.id, session.id, "x", TTL, at(2)).await,
            "acquire"
        )),
        lease
    );
}

// ---------------------------------------------------------------------------------------
// Transitions

/// A transition moves the phase, bumps the version and appends the matching event.
pub async fn transition_appends_event(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let created = session(&*store, tenant.id, owner.id).await;
    let fence = lease(&*store, tenant.id, created.id, "node-a", at(0))
        .await
        .token;

    let activate = Transition {
        reason: Some("starting ✓".to_owned()),
        ..step(
            &created,
            Phase::Created,
            Phase::Active,
            fence,
            "key_actor",
            at(5),
        )
    };
    let active = ok(store.transition(&activate).await, "activate");
    let expected = Session {
        phase: Phase::Active,
        version: 2,
        updated_at: at(5),
        outcome: None,
        ..created.clone()
    };
    assert_eq!(active, expected);
    assert_eq!(
        ok(store.get_session(tenant.id, created.id).await, "get"),
        Some(expected)
    );

    let suspend = step(
        &active,
        Phase::Active,
        Phase::Suspended,
        fence,
        "system",
        at(6),
    );
    let suspended = ok(store.transition(&suspend).await, "suspend");
    assert_eq!(
        (suspended.phase, suspended.version, suspended.updated_at),
        (Phase::Suspended, 3, at(6))
    );

    let events = all_events(&*store, &created).await;
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1..],
        [
            SessionEvent {
                session_id: created.id,
                seq: 2,
                actor: "key_actor".to_owned(),
                from: Some(Phase::Created),
                to: Phase::Active,
                reason: Some("starting ✓".to_owned()),
                at: at(5),
            },
            SessionEvent {
                session_id: created.id,
                seq: 3,
                actor: "system".to_owned(),
                from: Some(Phase::Active),
                to: Phase::Suspended,
                reason: None,
                at: at(6),
            },
        ]
    );
}

/// A transition from the wrong phase is refused with `PhaseChanged` and writes nothing.
pub async fn transition_wrong_phase_writes_nothing(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let created = session(&*store, tenant.id, owner.id).await;
    let active = advance(&*store, &created, Phase::Active).await;
    let fence = lease(&*store, tenant.id, created.id, "mover", at(3))
        .await
        .token;
    let events = all_events(&*store, &created).await;

    let stale = step(
        &active,
        Phase::Created,
        Phase::Active,
        fence,
        "late",
        at(10),
    );
    let error = refused(store.transition(&stale).await, "wrong phase");
    assert!(
        matches!(
            error,
            StoreError::PhaseChanged {
                expected: Phase::Created,
                current: Phase::Active
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        ok(store.get_session(tenant.id, created.id).await, "get"),
        Some(active)
    );
    assert_eq!(all_events(&*store, &created).await, events);
}

/// A transition with a fencing token other than the lease's current one is refused with
/// `LeaseFenced` (before the phase is even looked at) and writes nothing; one for a
/// session outside the tenant is `NotFound`.
pub async fn transition_stale_fence_writes_nothing(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let created = session(&*store, a.id, owner.id).await;

    // No lease at all: the current token reads as 0.
    let error = refused(
        store
            .transition(&step(
                &created,
                Phase::Created,
                Phase::Active,
                1,
                "x",
                at(1),
            ))
            .await,
        "no lease",
    );
    assert!(
        matches!(
            error,
            StoreError::LeaseFenced {
                presented: 1,
                current: 0
            }
        ),
        "{error:?}"
    );

    let fence = lease(&*store, a.id, created.id, "node-a", at(0))
        .await
        .token;
    assert_eq!(fence, 1);
    for (presented, from) in [
        (2, Phase::Created),
        (0, Phase::Created),
        (2, Phase::Suspended),
    ] {
        let transition = step(&created, from, Phase::Active, presented, "x", at(1));
        let error = refused(store.transition(&transition).await, "stale fence");
        assert!(
            matches!(error, StoreError::LeaseFenced { presented: p, current: 1 } if p == presented),
            "{error:?}"
        );
    }

    let other_tenant = Transition {
        tenant_id: b.id,
        ..step(&created, Phase::Created, Phase::Active, fence, "x", at(1))
    };
    let error = refused(store.transition(&other_tenant).await, "other tenant");
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let unknown = Transition {
        session_id: SessionId::generate(),
        ..step(&created, Phase::Created, Phase::Active, fence, "x", at(1))
    };
    let error = refused(store.transition(&unknown).await, "unknown session");
    assert!(matches!(error, StoreError::NotFound), "{error:?}");

    assert_eq!(
        ok(store.get_session(a.id, created.id).await, "get"),
        Some(created.clone())
    );
    assert_eq!(all_events(&*store, &created).await.len(), 1);
}

/// The fencing race, step by step: writer A holds token N, its lease expires, writer B
/// takes over with N+1 and writes; A's late write with N is refused, whatever phase it
/// names, and A cannot get the lease back while B holds it.
pub async fn fenced_writer_refused_after_takeover(store: Arc<dyn Store>) {
    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let created = session(&*store, tenant.id, owner.id).await;
    let (tenant_id, session_id) = (tenant.id, created.id);
    let acquire = |holder: &'static str, now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .acquire_lease(tenant_id, session_id, holder, TTL, now)
                    .await,
                "acquire",
            )
        }
    };

    let a_token = acquired(acquire("writer-a", at(0)).await).token;
    let active = ok(
        store
            .transition(&step(
                &created,
                Phase::Created,
                Phase::Active,
                a_token,
                "writer-a",
                at(1),
            ))
            .await,
        "A writes while it holds the lease",
    );

    // A's lease expires (it paused, lost the network...) and B takes over.
    let b_token = acquired(acquire("writer-b", at(30)).await).token;
    assert_eq!(b_token, a_token + 1);
    let suspended = ok(
        store
            .transition(&step(
                &active,
                Phase::Active,
                Phase::Suspended,
                b_token,
                "writer-b",
                at(31),
            ))
            .await,
        "B writes under the new token",
    );

    // A wakes up and writes what it had planned (from the phase it last saw), or even
    // from the right phase: refused either way.
    for from in [Phase::Active, Phase::Suspended] {
        let late = step(&active, from, Phase::Closed, a_token, "writer-a", at(32));
        let error = refused(store.transition(&late).await, "A's late write");
        let StoreError::LeaseFenced { presented, current } = error else {
            panic!("A's late write: expected LeaseFenced, got {error:?}");
        };
        assert_eq!((presented, current), (a_token, b_token));
    }
    assert_eq!(held(acquire("writer-a", at(33)).await).holder, "writer-b");

    assert_eq!(
        ok(store.get_session(tenant.id, created.id).await, "get"),
        Some(suspended)
    );
    let actors: Vec<String> = all_events(&*store, &created)
        .await
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors, ["creator", "writer-a", "writer-b"]);
}

/// The fencing race under load: several tasks of writer A hammer transitions with A's
/// token while B takes the lease over, then tasks of both writers hammer with their
/// own tokens. Once the takeover has returned no write of A lands, the event log has
/// no gaps, chains phase to phase, and every event after B's first one is B's.
pub async fn concurrent_fenced_writers(store: Arc<dyn Store>) {
    const TASKS_PER_WRITER: usize = 4;
    const ATTEMPTS_PER_TASK: usize = 25;
    /// B takes over once A has landed this many writes.
    const A_WRITES_BEFORE_TAKEOVER: usize = 5;

    let (tenant, owner) = tenant_with_key(&*store, "a").await;
    let created = session(&*store, tenant.id, owner.id).await;
    let (tenant_id, session_id) = (tenant.id, created.id);
    let short = Duration::from_secs(1);
    let a_lease = acquired(ok(
        store
            .acquire_lease(tenant.id, created.id, "writer-a", short, at(0))
            .await,
        "A",
    ));

    #[derive(Debug, Default)]
    struct Tally {
        landed: AtomicUsize,
        fenced: AtomicUsize,
        /// Writes that landed although they started after the takeover returned.
        landed_after_takeover: AtomicUsize,
    }
    let taken_over = Arc::new(AtomicBool::new(false));
    let a_tally = Arc::new(Tally::default());
    let b_tally = Arc::new(Tally::default());

    // One writer task: read the session, flip it between active and suspended.
    let writer = |actor: &'static str, fence: i64, tally: Arc<Tally>| {
        let (store, taken_over) = (Arc::clone(&store), Arc::clone(&taken_over));
        async move {
            let mut attempts = 0;
            // A keeps going until the takeover happened and it has been refused a few
            // times since; B stops after its attempts.
            while attempts < ATTEMPTS_PER_TASK
                || (actor == "writer-a"
                    && (!taken_over.load(Ordering::SeqCst)
                        || tally.fenced.load(Ordering::SeqCst) < 8))
            {
                attempts += 1;
                let after_takeover = taken_over.load(Ordering::SeqCst);
                let current = some(
                    ok(store.get_session(tenant_id, session_id).await, "read"),
                    "session",
                );
                let to = if current.phase == Phase::Active {
                    Phase::Suspended
                } else {
                    Phase::Active
                };
                let transition = step(&current, current.phase, to, fence, actor, at(1));
                match store.transition(&transition).await {
                    Ok(_) => {
                        tally.landed.fetch_add(1, Ordering::SeqCst);
                        if after_takeover && actor == "writer-a" {
                            tally.landed_after_takeover.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(StoreError::LeaseFenced { .. }) => {
                        tally.fenced.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(StoreError::PhaseChanged { .. }) => {}
                    Err(error) => panic!("{actor}: unexpected error {error}"),
                }
                tokio::task::yield_now().await;
                if attempts > 100_000 {
                    panic!("{actor}: the takeover never happened");
                }
            }
        }
    };

    let first = ok(
        store
            .transition(&step(
                &created,
                Phase::Created,
                Phase::Active,
                a_lease.token,
                "writer-a",
                at(1),
            ))
            .await,
        "activate",
    );
    assert_eq!(first.phase, Phase::Active);
    a_tally.landed.fetch_add(1, Ordering::SeqCst);

    let mut tasks = JoinSet::new();
    for _ in 0..TASKS_PER_WRITER {
        tasks.spawn(writer("writer-a", a_lease.token, Arc::clone(&a_tally)));
    }
    // B waits for A to be busy writing, then takes the expired lease over and starts
    // writing too.
    let b_token = {
        let (store, a_tally) = (Arc::clone(&store), Arc::clone(&a_tally));
        let taken_over = Arc::clone(&taken_over);
        let spawner = async move {
            while a_tally.landed.load(Ordering::SeqCst) < A_WRITES_BEFORE_TAKEOVER {
                tokio::task::yield_now().await;
            }
            let b_lease = acquired(ok(
                store
                    .acquire_lease(tenant_id, session_id, "writer-b", TTL, at(2))
                    .await,
                "B",
            ));
            taken_over.store(true, Ordering::SeqCst);
            b_lease.token
        };
        spawner.await
    };
    assert_eq!(b_token, a_lease.token + 1);
    for _ in 0..TASKS_PER_WRITER {
        tasks.spawn(writer("writer-b", b_token, Arc::clone(&b_tally)));
    }
    tasks.join_all().await;

    assert_eq!(
        a_tally.landed_after_takeover.load(Ordering::SeqCst),
        0,
        "A wrote after the takeover"
    );
    assert!(b_tally.landed.load(Ordering::SeqCst) > 0, "B never wrote");
    assert_eq!(
        b_tally.fenced.load(Ordering::SeqCst),
        0,
        "B was fenced: {b_tally:?}"
    );
    assert!(
        a_tally.fenced.load(Ordering::SeqCst) > 0,
        "A was never fenced: {a_tally:?}"
    );

    let session = some(
        ok(store.get_session(tenant.id, created.id).await, "read"),
        "session",
    );
    let events = all_events(&*store, &created).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected_seqs: Vec<i64> = (1..=session.version).collect();
    assert_eq!(seqs, expected_seqs, "the event log has gaps");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].from,
            Some(pair[0].to),
            "events do not chain: {pair:?}"
        );
    }
    assert_eq!(events.last().map(|e| e.to), Some(session.phase));
    let actors: Vec<&str> = events[1..].iter().map(|e| e.actor.as_str()).collect();
    let a_events = actors
        .iter()
        .take_while(|actor| **actor == "writer-a")
        .count();
    assert!(
        actors[a_events..].iter().all(|actor| *actor == "writer-b"),
        "A wrote after B: {actors:?}"
    );
    assert_eq!(a_events, a_tally.landed.load(Ordering::SeqCst));
    assert_eq!(
        actors.len() - a_events,
        b_tally.landed.load(Ordering::SeqCst)
    );
}

/// Events page by sequence number with `after` and `limit`, and only within the tenant.
pub async fn list_events_pagination(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let mut current = session(&*store, a.id, owner.id).await;
    let fence = lease(&*store, a.id, current.id, "node", at(0)).await.token;
    for (index, to) in [
        Phase::Active,
        Phase::Suspended,
        Phase::Active,
        Phase::Checkpointed,
        Phase::Active,
        Phase::Closed,
    ]
    .into_iter()
    .enumerate()
    {
        let transition = step(
            &current,
            current.phase,
            to,
            fence,
            "node",
            at(1 + index as i64),
        );
        current = ok(store.transition(&transition).await, "transition");
    }
    assert_eq!(current.version, 7);

    let all = all_events(&*store, &current).await;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let (tenant_id, session_id) = (a.id, current.id);
    let page = |after: i64, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.list_events(tenant_id, session_id, after, limit).await,
                "list events",
            )
        }
    };
    assert_eq!(page(0, 3).await, all[0..3]);
    assert_eq!(page(3, 3).await, all[3..6]);
    assert_eq!(page(6, 3).await, all[6..]);
    assert_eq!(page(7, 3).await, vec![]);
    assert_eq!(page(0, 0).await, vec![]);
    assert_eq!(page(-5, 2).await, all[0..2]);

    let error = refused(
        store.list_events(b.id, current.id, 0, 10).await,
        "other tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let error = refused(
        store.list_events(a.id, SessionId::generate(), 0, 10).await,
        "unknown",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

// ---------------------------------------------------------------------------------------
// Idempotency

const STALE_AFTER: Duration = Duration::from_secs(60);

/// Proceed, then InFlight while pending, Mismatch for another request, Replay once
/// completed; keys are scoped by tenant and principal.
pub async fn idempotency_lifecycle(store: Arc<dyn Store>) {
    let (a, caller) = tenant_with_key(&*store, "a").await;
    let (b, b_caller) = tenant_with_key(&*store, "b").await;
    let scope = fixtures::scope(a.id, caller.id, "req-1");
    let (request, other_request) = ([1u8; 32], [2u8; 32]);
    let begin = |scope: IdempotencyScope, fingerprint: [u8; 32], now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .idempotency_begin(&scope, &fingerprint, now, STALE_AFTER)
                    .await,
                "begin",
            )
        }
    };

    assert_eq!(
        begin(scope.clone(), request, at(0)).await,
        IdempotencyStart::Proceed
    );
    assert_eq!(
        begin(scope.clone(), request, at(1)).await,
        IdempotencyStart::InFlight
    );
    assert_eq!(
        begin(scope.clone(), other_request, at(1)).await,
        IdempotencyStart::Mismatch
    );

    // The same key from another principal or tenant is another claim.
    let other_principal = fixtures::scope(a.id, KeyId::generate(), "req-1");
    assert_eq!(
        begin(other_principal, request, at(1)).await,
        IdempotencyStart::Proceed
    );
    let other_tenant = fixtures::scope(b.id, b_caller.id, "req-1");
    assert_eq!(
        begin(other_tenant, request, at(1)).await,
        IdempotencyStart::Proceed
    );

    let response = RecordedResponse {
        status: 201,
        body: b"{\"id\":\"ses_1\"}\n\0\xff".to_vec(),
    };
    ok(
        store.idempotency_complete(&scope, &response, at(2)).await,
        "complete",
    );
    assert_eq!(
        begin(scope.clone(), request, at(3)).await,
        IdempotencyStart::Replay(response.clone())
    );
    assert_eq!(
        begin(scope.clone(), other_request, at(3)).await,
        IdempotencyStart::Mismatch
    );
    // Long after, a completed key still replays: staleness only concerns pending claims.
    assert_eq!(
        begin(scope.clone(), request, at(10_000)).await,
        IdempotencyStart::Replay(response.clone())
    );
    // Abandoning a completed key changes nothing.
    ok(store.idempotency_abandon(&scope).await, "abandon completed");
    assert_eq!(
        begin(scope.clone(), request, at(4)).await,
        IdempotencyStart::Replay(response)
    );

    // Empty bodies and unusual statuses round-trip.
    let empty = fixtures::scope(a.id, caller.id, "req-empty");
    assert_eq!(
        begin(empty.clone(), request, at(0)).await,
        IdempotencyStart::Proceed
    );
    let no_content = RecordedResponse {
        status: 204,
        body: Vec::new(),
    };
    ok(
        store.idempotency_complete(&empty, &no_content, at(1)).await,
        "complete",
    );
    assert_eq!(
        begin(empty, request, at(2)).await,
        IdempotencyStart::Replay(no_content)
    );
}

/// An abandoned claim frees the key for any request; abandoning or completing a key
/// nobody claimed is a no-op.
pub async fn idempotency_abandon_allows_retry(store: Arc<dyn Store>) {
    let (tenant, caller) = tenant_with_key(&*store, "a").await;
    let scope = fixtures::scope(tenant.id, caller.id, "req-1");
    let begin = |fingerprint: [u8; 32], now: Timestamp| {
        let (store, scope) = (Arc::clone(&store), scope.clone());
        async move {
            ok(
                store
                    .idempotency_begin(&scope, &fingerprint, now, STALE_AFTER)
                    .await,
                "begin",
            )
        }
    };

    assert_eq!(begin([1; 32], at(0)).await, IdempotencyStart::Proceed);
    ok(store.idempotency_abandon(&scope).await, "abandon");
    assert_eq!(begin([1; 32], at(1)).await, IdempotencyStart::Proceed);
    ok(store.idempotency_abandon(&scope).await, "abandon");
    // After an abandon the key is free even for a different request.
    assert_eq!(begin([2; 32], at(2)).await, IdempotencyStart::Proceed);
    assert_eq!(begin([2; 32], at(3)).await, IdempotencyStart::InFlight);

    let unclaimed = fixtures::scope(tenant.id, caller.id, "never-begun");
    ok(
        store.idempotency_abandon(&unclaimed).await,
        "abandon unclaimed",
    );
    let response = RecordedResponse {
        status: 200,
        body: b"ok".to_vec(),
    };
    ok(
        store
            .idempotency_complete(&unclaimed, &response, at(0))
            .await,
        "complete unclaimed",
    );
    let begun = ok(
        store
            .idempotency_begin(&unclaimed, &[3; 32], at(1), STALE_AFTER)
            .await,
        "begin",
    );
    assert_eq!(begun, IdempotencyStart::Proceed);
}

/// A pending claim older than `stale_after` is taken over (exactly at the boundary), and
/// the takeover starts a fresh claim; a different request is still a mismatch.
/// Records older than the cut-off go, finished or pending, at most `limit` per call;
/// younger ones stay and keep replaying.
pub async fn idempotency_records_expire(store: Arc<dyn Store>) {
    let (tenant, caller) = tenant_with_key(&*store, "a").await;
    let response = RecordedResponse {
        status: 201,
        body: b"{}".to_vec(),
    };
    for (index, claimed_at) in [0, 1, 2, 100].into_iter().enumerate() {
        let scope = fixtures::scope(tenant.id, caller.id, &format!("req-{index}"));
        let start = store
            .idempotency_begin(&scope, &[7; 32], at(claimed_at), STALE_AFTER)
            .await;
        assert_eq!(ok(start, "begin"), IdempotencyStart::Proceed);
        if index != 1 {
            let done = store
                .idempotency_complete(&scope, &response, at(claimed_at))
                .await;
            ok(done, "complete");
        }
    }
    assert_eq!(ok(store.purge_idempotency(at(50), 2).await, "purge"), 2);
    assert_eq!(ok(store.purge_idempotency(at(50), 2).await, "purge"), 1);
    assert_eq!(ok(store.purge_idempotency(at(50), 2).await, "purge"), 0);
    for index in 0..3 {
        let scope = fixtures::scope(tenant.id, caller.id, &format!("req-{index}"));
        let start = store
            .idempotency_begin(&scope, &[8; 32], at(200), STALE_AFTER)
            .await;
        assert_eq!(
            ok(start, "begin"),
            IdempotencyStart::Proceed,
            "req-{index} was purged"
        );
    }
    let young = fixtures::scope(tenant.id, caller.id, "req-3");
    let start = store
        .idempotency_begin(&young, &[7; 32], at(200), STALE_AFTER)
        .await;
    assert_eq!(ok(start, "begin"), IdempotencyStart::Replay(response));
}

pub async fn idempotency_stale_claim_taken_over(store: Arc<dyn Store>) {
    let (tenant, caller) = tenant_with_key(&*store, "a").await;
    let scope = fixtures::scope(tenant.id, caller.id, "req-1");
    let begin = |fingerprint: [u8; 32], now: Timestamp| {
        let (store, scope) = (Arc::clone(&store), scope.clone());
        async move {
            ok(
                store
                    .idempotency_begin(&scope, &fingerprint, now, STALE_AFTER)
                    .await,
                "begin",
            )
        }
    };
    let stale_micros = 60_000_000;

    assert_eq!(begin([1; 32], at(0)).await, IdempotencyStart::Proceed);
    assert_eq!(
        begin([1; 32], at_micros(stale_micros - 1)).await,
        IdempotencyStart::InFlight
    );
    assert_eq!(
        begin([2; 32], at_micros(stale_micros)).await,
        IdempotencyStart::Mismatch
    );
    assert_eq!(
        begin([1; 32], at_micros(stale_micros)).await,
        IdempotencyStart::TakeOver
    );
    // The takeover renewed the claim.
    assert_eq!(
        begin([1; 32], at_micros(stale_micros + 1)).await,
        IdempotencyStart::InFlight
    );
    assert_eq!(
        begin([1; 32], at_micros(2 * stale_micros)).await,
        IdempotencyStart::TakeOver
    );

    let response = RecordedResponse {
        status: 200,
        body: b"done".to_vec(),
    };
    ok(
        store.idempotency_complete(&scope, &response, at(200)).await,
        "complete",
    );
    assert_eq!(
        begin([1; 32], at(10_000)).await,
        IdempotencyStart::Replay(response)
    );
}

/// Of concurrent first requests with one key exactly one proceeds and the others are
/// told it is in flight; the same holds for concurrent takeovers of a stale claim.
pub async fn concurrent_idempotency_begins(store: Arc<dyn Store>) {
    const REQUESTS: usize = 16;
    let (tenant, caller) = tenant_with_key(&*store, "a").await;
    let scope = fixtures::scope(tenant.id, caller.id, "req-1");

    for (now, first) in [
        (at(0), IdempotencyStart::Proceed),
        (at(1_000), IdempotencyStart::TakeOver),
    ] {
        let mut tasks = JoinSet::new();
        for _ in 0..REQUESTS {
            let (store, scope) = (Arc::clone(&store), scope.clone());
            tasks.spawn(async move {
                ok(
                    store
                        .idempotency_begin(&scope, &[1; 32], now, STALE_AFTER)
                        .await,
                    "begin",
                )
            });
        }
        let starts = tasks.join_all().await;
        let proceeds = starts.iter().filter(|s| **s == first).count();
        let in_flight = starts
            .iter()
            .filter(|s| **s == IdempotencyStart::InFlight)
            .count();
        assert_eq!(
            (proceeds, in_flight),
            (1, REQUESTS - 1),
            "at {now}: {starts:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Egress: policy versions, secrets, credential leases, decisions, deployment values

fn policy(tenant_id: TenantId, document: &str) -> EgressPolicyVersion {
    EgressPolicyVersion {
        tenant_id,
        // Ignored by the store, which numbers versions itself.
        version: 99,
        document: document.to_owned(),
        digest: format!("digest of {document}"),
        created_by: "key_policy-writer".to_owned(),
        created_at: at(5),
    }
}

fn secret(tenant_id: TenantId, name: &str) -> SecretRecord {
    SecretRecord {
        id: SecretId::generate(),
        tenant_id,
        name: name.to_owned(),
        service_class: "github".to_owned(),
        header_name: "authorization".to_owned(),
        header_format: "Bearer {secret}".to_owned(),
        sealed_value: vec![0, 1, 2, 254, 255, 42],
        created_by: "key_secret-writer".to_owned(),
        created_at: at(1),
        deleted_at: None,
    }
}

/// A lease issued at `at(10)`, expiring at `at(expires)`, renewable up to `at(1_000)`.
fn credential_lease(
    tenant_id: TenantId,
    session_id: SessionId,
    secret_id: SecretId,
    expires: i64,
) -> CredentialLease {
    CredentialLease {
        id: CredentialLeaseId::generate(),
        tenant_id,
        session_id,
        secret_id,
        issued_by: "key_issuer".to_owned(),
        issued_at: at(10),
        expires_at: at(expires),
        max_expires_at: at(1_000),
        revoked_at: None,
        revoke_reason: None,
    }
}

/// A decision with every optional field set, so that they all round-trip.
fn decision(tenant_id: TenantId, session_id: SessionId, reason: ReasonCode) -> EgressDecision {
    EgressDecision {
        seq: 0,
        tenant_id,
        session_id,
        at: at(20),
        kind: "https".to_owned(),
        host: "api.github.com".to_owned(),
        port: u16::MAX,
        address: Some("140.82.112.6:443".to_owned()),
        method: Some("POST".to_owned()),
        path: Some("/repos/ünïcödé".to_owned()),
        reason,
        mode: "enforce".to_owned(),
        service_class: Some("github".to_owned()),
        rule: Some("github-api".to_owned()),
        policy_version: "3".to_owned(),
        credential: Some("gh-token".to_owned()),
        status: Some(201),
        bytes_sent: 1 << 40,
        bytes_received: 12_345,
        duration_micros: 1_500,
    }
}

/// A decision with every optional field empty.
fn bare_decision(tenant_id: TenantId, session_id: SessionId, reason: ReasonCode) -> EgressDecision {
    EgressDecision {
        kind: "dns".to_owned(),
        port: 0,
        address: None,
        method: None,
        path: None,
        service_class: None,
        rule: None,
        credential: None,
        status: None,
        bytes_sent: 0,
        bytes_received: 0,
        duration_micros: 0,
        ..decision(tenant_id, session_id, reason)
    }
}

async fn all_decisions(store: &dyn Store, tenant: TenantId) -> Vec<EgressDecision> {
    ok(
        store
            .list_egress_decisions(tenant, &EgressDecisionFilter::default(), 100_000)
            .await,
        "list decisions",
    )
}

/// Policy versions count from 1 per tenant; the latest is what `get` and `list` return.
pub async fn egress_policy_versions(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let (c, _) = tenant_with_key(&*store, "c").await;
    assert_eq!(ok(store.get_egress_policy(a.id).await, "get policy"), None);
    assert_eq!(
        ok(store.list_egress_policies().await, "list policies"),
        vec![]
    );

    for version in 1..=3 {
        let put = policy(a.id, &format!("{{\"a\": {version}}}"));
        let stored = ok(store.put_egress_policy(&put).await, "put policy");
        assert_eq!(
            stored,
            EgressPolicyVersion {
                version,
                ..put.clone()
            }
        );
        assert_eq!(
            ok(store.get_egress_policy(a.id).await, "get policy"),
            Some(stored)
        );
        assert_eq!(
            ok(store.get_egress_policy(b.id).await, "get other tenant's"),
            None
        );
    }
    let b_first = ok(
        store.put_egress_policy(&policy(b.id, "{\"b\": 1}")).await,
        "put policy",
    );
    assert_eq!(b_first.version, 1);

    let mut expected = vec![
        some(
            ok(store.get_egress_policy(a.id).await, "get policy"),
            "a's policy",
        ),
        b_first,
    ];
    expected.sort_by_key(|policy| policy.tenant_id);
    assert_eq!(
        ok(store.list_egress_policies().await, "list policies"),
        expected
    );
    assert_eq!(ok(store.get_egress_policy(c.id).await, "get policy"), None);

    let error = refused(
        store
            .put_egress_policy(&policy(TenantId::generate(), "{}"))
            .await,
        "put for an unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

/// Concurrent puts for one tenant each get a version of their own, with no gaps.
pub async fn concurrent_egress_policy_puts(store: Arc<dyn Store>) {
    const WRITERS: i64 = 8;
    let (tenant, _) = tenant_with_key(&*store, "a").await;
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let put = policy(tenant.id, &format!("{{\"writer\": {writer}}}"));
            ok(store.put_egress_policy(&put).await, "put policy")
        });
    }
    let mut versions: Vec<i64> = tasks
        .join_all()
        .await
        .iter()
        .map(|stored| stored.version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=WRITERS).collect::<Vec<_>>());
    let latest = some(
        ok(store.get_egress_policy(tenant.id).await, "get policy"),
        "latest policy",
    );
    assert_eq!(latest.version, WRITERS);
}

/// Secrets: stored as given, listed in id order per tenant, names unique among the
/// tenant's live secrets.
pub async fn secrets_create_get_list(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let first = secret(a.id, "gh-token");
    let second = SecretRecord {
        sealed_value: vec![],
        ..secret(a.id, "npm-token")
    };
    ok(store.create_secret(&first).await, "create secret");
    ok(store.create_secret(&second).await, "create secret");
    assert_eq!(
        ok(store.get_secret(a.id, first.id).await, "get secret"),
        Some(first.clone())
    );
    assert_eq!(
        ok(
            store.get_secret(b.id, first.id).await,
            "get from another tenant"
        ),
        None
    );
    assert_eq!(
        ok(
            store.get_secret(a.id, SecretId::generate()).await,
            "get unknown"
        ),
        None
    );
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort_by_key(|secret| secret.id);
    assert_eq!(ok(store.list_secrets(a.id).await, "list secrets"), expected);
    assert_eq!(ok(store.list_secrets(b.id).await, "list secrets"), vec![]);

    let clash = secret(a.id, "gh-token");
    let error = refused(store.create_secret(&clash).await, "create a clashing name");
    assert!(
        matches!(&error, StoreError::SecretNameTaken(name) if name == "gh-token"),
        "{error:?}"
    );
    assert_eq!(
        ok(store.get_secret(a.id, clash.id).await, "get secret"),
        None
    );

    // The name is the tenant's own.
    let elsewhere = secret(b.id, "gh-token");
    ok(
        store.create_secret(&elsewhere).await,
        "same name, other tenant",
    );
    assert_eq!(
        ok(store.list_secrets(b.id).await, "list secrets"),
        vec![elsewhere]
    );

    let error = refused(
        store
            .create_secret(&secret(TenantId::generate(), "x"))
            .await,
        "create for an unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

/// Deleting a secret drops its value, frees its name and revokes its leases, once.
pub async fn delete_secret_revokes_leases(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let doomed = secret(a.id, "gh-token");
    let kept = secret(a.id, "npm-token");
    ok(store.create_secret(&doomed).await, "create secret");
    ok(store.create_secret(&kept).await, "create secret");
    let ses = session(&*store, a.id, owner.id).await;
    let live = credential_lease(a.id, ses.id, doomed.id, 100);
    let revoked = credential_lease(a.id, ses.id, doomed.id, 100);
    let other = credential_lease(a.id, ses.id, kept.id, 100);
    for lease in [&live, &revoked, &other] {
        ok(store.create_credential_lease(lease).await, "create lease");
    }
    let revoked = ok(
        store
            .revoke_credential_lease(a.id, revoked.id, at(30), "session closed")
            .await,
        "revoke lease",
    );

    let error = refused(
        store.delete_secret(b.id, doomed.id, at(40)).await,
        "delete from another tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let error = refused(
        store
            .delete_secret(a.id, SecretId::generate(), at(40))
            .await,
        "delete unknown",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    assert_eq!(
        ok(store.get_secret(a.id, doomed.id).await, "get secret"),
        Some(doomed.clone())
    );

    ok(
        store.delete_secret(a.id, doomed.id, at(50)).await,
        "delete secret",
    );
    let deleted = SecretRecord {
        sealed_value: vec![],
        deleted_at: Some(at(50)),
        ..doomed.clone()
    };
    assert_eq!(
        ok(
            store.get_secret(a.id, doomed.id).await,
            "get deleted secret"
        ),
        Some(deleted.clone())
    );
    assert_eq!(
        ok(
            store.get_secret(b.id, doomed.id).await,
            "get from another tenant"
        ),
        None
    );
    assert_eq!(
        ok(store.list_secrets(a.id).await, "list secrets"),
        vec![kept.clone()]
    );
    assert_eq!(
        ok(store.get_credential_lease(a.id, live.id).await, "get lease"),
        Some(CredentialLease {
            revoked_at: Some(at(50)),
            revoke_reason: Some("secret deleted".to_owned()),
            ..live.clone()
        })
    );
    assert_eq!(
        ok(
            store.get_credential_lease(a.id, revoked.id).await,
            "get lease"
        ),
        Some(revoked.clone()),
        "an earlier revocation stays"
    );
    assert_eq!(
        ok(
            store.get_credential_lease(a.id, other.id).await,
            "get lease"
        ),
        Some(other.clone()),
        "another secret's lease is untouched"
    );

    let error = refused(
        store.delete_secret(a.id, doomed.id, at(60)).await,
        "delete again",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    assert_eq!(
        ok(
            store.get_secret(a.id, doomed.id).await,
            "get deleted secret"
        ),
        Some(deleted.clone())
    );

    // The deleted secret lends nothing any more, and its name is free again.
    let error = refused(
        store
            .create_credential_lease(&credential_lease(a.id, ses.id, doomed.id, 100))
            .await,
        "lease a deleted secret",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let reborn = secret(a.id, "gh-token");
    ok(store.create_secret(&reborn).await, "reuse the name");
    let mut expected = vec![kept, reborn];
    expected.sort_by_key(|secret| secret.id);
    assert_eq!(ok(store.list_secrets(a.id).await, "list secrets"), expected);
    assert_eq!(
        ok(
            store.get_secret(a.id, doomed.id).await,
            "get deleted secret"
        ),
        Some(deleted)
    );
}

/// Leases are stored as given, listed per session in id order, and only for a session
/// and a secret of their own tenant.
pub async fn credential_leases_create_get_list(store: Arc<dyn Store>) {
    let (a, a_owner) = tenant_with_key(&*store, "a").await;
    let (b, b_owner) = tenant_with_key(&*store, "b").await;
    let a_secret = secret(a.id, "gh-token");
    let b_secret = secret(b.id, "gh-token");
    ok(store.create_secret(&a_secret).await, "create secret");
    ok(store.create_secret(&b_secret).await, "create secret");
    let first = session(&*store, a.id, a_owner.id).await;
    let second = session(&*store, a.id, a_owner.id).await;
    let b_session = session(&*store, b.id, b_owner.id).await;

    let leases: Vec<CredentialLease> = (0..3)
        .map(|n| credential_lease(a.id, first.id, a_secret.id, 100 + n))
        .collect();
    for lease in &leases {
        ok(store.create_credential_lease(lease).await, "create lease");
    }
    let on_second = credential_lease(a.id, second.id, a_secret.id, 100);
    ok(
        store.create_credential_lease(&on_second).await,
        "create lease",
    );

    assert_eq!(
        ok(
            store.get_credential_lease(a.id, leases[1].id).await,
            "get lease"
        ),
        Some(leases[1].clone())
    );
    assert_eq!(
        ok(
            store.get_credential_lease(b.id, leases[1].id).await,
            "get from another tenant"
        ),
        None
    );
    assert_eq!(
        ok(
            store
                .get_credential_lease(a.id, CredentialLeaseId::generate())
                .await,
            "get unknown"
        ),
        None
    );
    let mut expected = leases.clone();
    expected.sort_by_key(|lease| lease.id);
    assert_eq!(
        ok(
            store.list_credential_leases(a.id, first.id).await,
            "list leases"
        ),
        expected
    );
    assert_eq!(
        ok(
            store.list_credential_leases(a.id, second.id).await,
            "list leases"
        ),
        vec![on_second]
    );
    assert_eq!(
        ok(
            store.list_credential_leases(b.id, first.id).await,
            "list from another tenant"
        ),
        vec![]
    );

    let crossings = [
        (
            credential_lease(a.id, b_session.id, a_secret.id, 100),
            "another tenant's session",
        ),
        (
            credential_lease(a.id, first.id, b_secret.id, 100),
            "another tenant's secret",
        ),
        (
            credential_lease(a.id, SessionId::generate(), a_secret.id, 100),
            "an unknown session",
        ),
        (
            credential_lease(a.id, first.id, SecretId::generate(), 100),
            "an unknown secret",
        ),
        (
            credential_lease(TenantId::generate(), first.id, a_secret.id, 100),
            "an unknown tenant",
        ),
    ];
    for (lease, what) in crossings {
        let error = refused(store.create_credential_lease(&lease).await, what);
        assert!(matches!(error, StoreError::NotFound), "{what}: {error:?}");
        assert_eq!(
            ok(
                store.get_credential_lease(a.id, lease.id).await,
                "get lease"
            ),
            None,
            "{what}"
        );
    }
    assert_eq!(
        ok(
            store.list_credential_leases(b.id, b_session.id).await,
            "list leases"
        ),
        vec![]
    );
}

/// Renewal moves a live lease's expiry; a revoked or expired lease stays as it is.
pub async fn credential_lease_renewal(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let token = secret(a.id, "gh-token");
    ok(store.create_secret(&token).await, "create secret");
    let ses = session(&*store, a.id, owner.id).await;
    let lease = credential_lease(a.id, ses.id, token.id, 100);
    ok(store.create_credential_lease(&lease).await, "create lease");

    let renewed = ok(
        store
            .renew_credential_lease(a.id, lease.id, at(200), at(50))
            .await,
        "renew",
    );
    let expected = CredentialLease {
        expires_at: at(200),
        ..lease.clone()
    };
    assert_eq!(renewed, expected);
    assert_eq!(
        ok(
            store.get_credential_lease(a.id, lease.id).await,
            "get lease"
        ),
        Some(expected.clone())
    );
    // Live up to the last microsecond before its expiry.
    let renewed = ok(
        store
            .renew_credential_lease(a.id, lease.id, at(300), at_micros(200_000_000 - 1))
            .await,
        "renew just in time",
    );
    assert_eq!(renewed.expires_at, at(300));

    for (tenant, id, what) in [
        (b.id, lease.id, "renew from another tenant"),
        (a.id, CredentialLeaseId::generate(), "renew unknown"),
    ] {
        let error = refused(
            store
                .renew_credential_lease(tenant, id, at(400), at(60))
                .await,
            what,
        );
        assert!(matches!(error, StoreError::NotFound), "{what}: {error:?}");
    }

    // Expired: at its expiry and after.
    for now in [at(300), at(350)] {
        let error = refused(
            store
                .renew_credential_lease(a.id, lease.id, at(400), now)
                .await,
            "renew an expired lease",
        );
        assert!(matches!(error, StoreError::LeaseNotLive), "{error:?}");
    }
    assert_eq!(
        ok(
            store.get_credential_lease(a.id, lease.id).await,
            "get lease"
        ),
        Some(CredentialLease {
            expires_at: at(300),
            ..lease.clone()
        })
    );

    // Revoked.
    let other = credential_lease(a.id, ses.id, token.id, 100);
    ok(store.create_credential_lease(&other).await, "create lease");
    ok(
        store
            .revoke_credential_lease(a.id, other.id, at(20), "done")
            .await,
        "revoke",
    );
    let error = refused(
        store
            .renew_credential_lease(a.id, other.id, at(200), at(30))
            .await,
        "renew a revoked lease",
    );
    assert!(matches!(error, StoreError::LeaseNotLive), "{error:?}");
    let stored = some(
        ok(
            store.get_credential_lease(a.id, other.id).await,
            "get lease",
        ),
        "revoked lease",
    );
    assert_eq!(stored.expires_at, at(100));
}

/// Revoking keeps the first revocation; revoking a session's leases touches (and counts)
/// only those not revoked yet, of that session alone.
pub async fn credential_lease_revocation(store: Arc<dyn Store>) {
    let (a, owner) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let token = secret(a.id, "gh-token");
    ok(store.create_secret(&token).await, "create secret");
    let ses = session(&*store, a.id, owner.id).await;
    let bystander = session(&*store, a.id, owner.id).await;

    let lease = credential_lease(a.id, ses.id, token.id, 100);
    ok(store.create_credential_lease(&lease).await, "create lease");
    for (tenant, id, what) in [
        (b.id, lease.id, "revoke from another tenant"),
        (a.id, CredentialLeaseId::generate(), "revoke unknown"),
    ] {
        let error = refused(
            store.revoke_credential_lease(tenant, id, at(20), "x").await,
            what,
        );
        assert!(matches!(error, StoreError::NotFound), "{what}: {error:?}");
    }
    let expected = CredentialLease {
        revoked_at: Some(at(20)),
        revoke_reason: Some("operator".to_owned()),
        ..lease.clone()
    };
    assert_eq!(
        ok(
            store
                .revoke_credential_lease(a.id, lease.id, at(20), "operator")
                .await,
            "revoke"
        ),
        expected
    );
    assert_eq!(
        ok(
            store
                .revoke_credential_lease(a.id, lease.id, at(30), "again")
                .await,
            "revoke again"
        ),
        expected
    );
    assert_eq!(
        ok(
            store.get_credential_lease(a.id, lease.id).await,
            "get lease"
        ),
        Some(expected.clone())
    );

    // `lease` is revoked already; one more has expired without being revoked.
    let expired = credential_lease(a.id, ses.id, token.id, 15);
    let live = credential_lease(a.id, ses.id, token.id, 100);
    let untouched = credential_lease(a.id, bystander.id, token.id, 100);
    for lease in [&expired, &live, &untouched] {
        ok(store.create_credential_lease(lease).await, "create lease");
    }
    assert_eq!(
        ok(
            store
                .revoke_session_credential_leases(b.id, ses.id, at(40), "closed")
                .await,
            "revoke from another tenant"
        ),
        0
    );
    assert_eq!(
        ok(
            store
                .revoke_session_credential_leases(a.id, ses.id, at(40), "closed")
                .await,
            "revoke session's leases"
        ),
        2
    );
    let revoked = |lease: &CredentialLease| CredentialLease {
        revoked_at: Some(at(40)),
        revoke_reason: Some("closed".to_owned()),
        ..lease.clone()
    };
    let mut expected = vec![expected, revoked(&expired), revoked(&live)];
    expected.sort_by_key(|lease| lease.id);
    assert_eq!(
        ok(
            store.list_credential_leases(a.id, ses.id).await,
            "list leases"
        ),
        expected
    );
    assert_eq!(
        ok(
            store.list_credential_leases(a.id, bystander.id).await,
            "list leases"
        ),
        vec![untouched]
    );
    assert_eq!(
        ok(
            store
                .revoke_session_credential_leases(a.id, ses.id, at(50), "again")
                .await,
            "revoke again"
        ),
        0
    );
    assert_eq!(
        ok(
            store.list_credential_leases(a.id, ses.id).await,
            "list leases"
        ),
        expected
    );
}

/// Decisions get increasing `seq`s in append order and are listed per tenant, filtered
/// by session, reason and cursor.
pub async fn egress_decisions_append_list(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    // Decisions name sessions that the store need not know.
    let (s1, s2) = (SessionId::generate(), SessionId::generate());
    let allowed = ReasonCode::EgressAllowed;
    let refused_code = ReasonCode::EgressDestinationNotAllowed;
    ok(store.append_egress_decisions(&[]).await, "append nothing");
    assert_eq!(all_decisions(&*store, a.id).await, vec![]);

    let first_batch = vec![
        decision(a.id, s1, allowed),
        bare_decision(a.id, s2, refused_code),
        decision(b.id, s1, allowed),
        decision(a.id, s1, refused_code),
    ];
    ok(
        store.append_egress_decisions(&first_batch).await,
        "append decisions",
    );
    let second_batch = vec![
        bare_decision(a.id, s2, allowed),
        decision(a.id, s1, allowed),
    ];
    ok(
        store.append_egress_decisions(&second_batch).await,
        "append decisions",
    );

    let stored = all_decisions(&*store, a.id).await;
    let sent: Vec<&EgressDecision> = first_batch
        .iter()
        .chain(&second_batch)
        .filter(|d| d.tenant_id == a.id)
        .collect();
    assert_eq!(stored.len(), sent.len());
    for (stored, sent) in stored.iter().zip(&sent) {
        assert_eq!(
            *stored,
            EgressDecision {
                seq: stored.seq,
                ..(*sent).clone()
            }
        );
        assert!(stored.seq > 0, "{stored:?}");
    }
    assert!(
        stored.windows(2).all(|pair| pair[0].seq < pair[1].seq),
        "{stored:?}"
    );
    let b_stored = all_decisions(&*store, b.id).await;
    assert_eq!(b_stored.len(), 1);
    assert_eq!(b_stored[0].tenant_id, b.id);
    // Slice order is seq order, across tenants too.
    assert!(stored[1].seq < b_stored[0].seq && b_stored[0].seq < stored[2].seq);
    assert_eq!(
        all_decisions(&*store, TenantId::generate()).await,
        vec![],
        "an unknown tenant"
    );

    let list = |filter: EgressDecisionFilter, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.list_egress_decisions(a.id, &filter, limit).await,
                "list decisions",
            )
        }
    };
    let seqs =
        |decisions: Vec<EgressDecision>| -> Vec<i64> { decisions.iter().map(|d| d.seq).collect() };
    let expect =
        |indices: &[usize]| -> Vec<i64> { indices.iter().map(|&i| stored[i].seq).collect() };

    let by_session = EgressDecisionFilter {
        session_id: Some(s1),
        ..Default::default()
    };
    assert_eq!(
        seqs(list(by_session.clone(), 100).await),
        expect(&[0, 2, 4])
    );
    let by_reason = EgressDecisionFilter {
        reason: Some(refused_code),
        ..Default::default()
    };
    assert_eq!(seqs(list(by_reason, 100).await), expect(&[1, 2]));
    let both = EgressDecisionFilter {
        session_id: Some(s2),
        reason: Some(allowed),
        ..Default::default()
    };
    assert_eq!(seqs(list(both, 100).await), expect(&[3]));
    let unused = EgressDecisionFilter {
        reason: Some(ReasonCode::EgressDnsFailed),
        ..Default::default()
    };
    assert_eq!(seqs(list(unused, 100).await), Vec::<i64>::new());

    // Paging with `after` and `limit` walks everything once.
    assert_eq!(
        seqs(list(EgressDecisionFilter::default(), 2).await),
        expect(&[0, 1])
    );
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(
            EgressDecisionFilter {
                after: cursor,
                ..Default::default()
            },
            2,
        )
        .await;
        let Some(last) = page.last() else { break };
        cursor = Some(last.seq);
        paged.extend(seqs(page));
    }
    assert_eq!(paged, expect(&[0, 1, 2, 3, 4]));
    let after_first = EgressDecisionFilter {
        after: Some(stored[0].seq),
        ..by_session
    };
    assert_eq!(seqs(list(after_first.clone(), 100).await), expect(&[2, 4]));
    assert_eq!(seqs(list(after_first, 1).await), expect(&[2]));
    assert_eq!(
        seqs(list(EgressDecisionFilter::default(), 0).await),
        Vec::<i64>::new()
    );

    // Nothing of b's shows through a's filters, and the other way round.
    let b_filter = EgressDecisionFilter {
        session_id: Some(s1),
        reason: Some(allowed),
        after: None,
    };
    assert_eq!(
        ok(
            store.list_egress_decisions(b.id, &b_filter, 100).await,
            "list decisions"
        ),
        b_stored
    );
}

/// The first value stored under a name stays, even when writers race for it.
pub async fn deployment_value_first_writer_wins(store: Arc<dyn Store>) {
    assert_eq!(
        ok(
            store
                .deployment_value_or_insert("egress-ca", b"first")
                .await,
            "insert value"
        ),
        b"first".to_vec()
    );
    assert_eq!(
        ok(
            store
                .deployment_value_or_insert("egress-ca", b"second")
                .await,
            "insert again"
        ),
        b"first".to_vec()
    );
    assert_eq!(
        ok(
            store.deployment_value_or_insert("other", &[0, 255]).await,
            "insert another name"
        ),
        vec![0, 255]
    );

    const WRITERS: u8 = 8;
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            ok(
                store
                    .deployment_value_or_insert("raced", &[writer; 16])
                    .await,
                "racing insert",
            )
        });
    }
    let values = tasks.join_all().await;
    let winner = values[0].clone();
    assert!(
        (0..WRITERS).any(|writer| winner == [writer; 16]),
        "{winner:?}"
    );
    assert!(values.iter().all(|value| *value == winner), "{values:?}");
    assert_eq!(
        ok(
            store.deployment_value_or_insert("raced", b"late").await,
            "late insert"
        ),
        winner
    );
}

// ---------------------------------------------------------------------------------------
// Artifacts: workspace versions, the evidence log, releases

/// A version of `session` made on top of `parent`, with every field set.
fn version(session: &Session, parent: Option<VersionId>, root: &str) -> WorkspaceVersion {
    WorkspaceVersion {
        id: VersionId::generate(),
        tenant_id: session.tenant_id,
        session_id: session.id,
        parent,
        root: root.to_owned(),
        summary: "ran the tests ✓ \"quoted\"".to_owned(),
        stats: VersionStats {
            files: 12,
            dirs: 3,
            symlinks: 1,
            bytes: 1 << 40,
            blobs_written: 7,
            bytes_written: 4_096,
        },
        origin: "checkpoint".to_owned(),
        created_by: "key_writer".to_owned(),
        created_at: at(30),
        deleted_at: None,
    }
}

/// `count` versions made one on top of the other, from the session's head; oldest first.
async fn version_chain(
    store: &dyn Store,
    session: &Session,
    count: usize,
) -> Vec<WorkspaceVersion> {
    let head = ok(
        store.head_version(session.tenant_id, session.id).await,
        "head version",
    );
    let mut parent = head.map(|version| version.id);
    let mut chain = Vec::with_capacity(count);
    for n in 0..count {
        let next = version(session, parent, &format!("root-{}-{n}", session.id));
        ok(store.create_version(&next).await, "create version");
        parent = Some(next.id);
        chain.push(next);
    }
    chain
}

async fn versions(store: &dyn Store, session: &Session) -> Vec<WorkspaceVersion> {
    ok(
        store
            .list_versions(session.tenant_id, session.id, None, 100_000)
            .await,
        "list versions",
    )
}

#[track_caller]
fn conflict_head(error: StoreError) -> Option<String> {
    match error {
        StoreError::VersionConflict { head } => head,
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

/// Versions chain: each must name the session's latest live version as its parent. A
/// stale parent is refused with the current head, and nothing is stored.
pub async fn versions_chain_and_conflicts(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let ses = session(&*store, a.id, a_key.id).await;
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        None
    );
    // A session without versions takes only a first version.
    let orphan = version(&ses, Some(VersionId::generate()), "orphan");
    let error = refused(
        store.create_version(&orphan).await,
        "create on a parent that is not the head",
    );
    assert_eq!(conflict_head(error), None);

    let first = version(&ses, None, "root-1");
    ok(store.create_version(&first).await, "create version");
    assert_eq!(
        ok(store.get_version(a.id, first.id).await, "get version"),
        Some(first.clone())
    );
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        Some(first.clone())
    );
    let second = WorkspaceVersion {
        stats: VersionStats::default(),
        origin: "upload".to_owned(),
        summary: String::new(),
        ..version(&ses, Some(first.id), "root-2")
    };
    ok(store.create_version(&second).await, "create version");
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        Some(second.clone())
    );

    for parent in [Some(first.id), None, Some(VersionId::generate())] {
        let stale = version(&ses, parent, "stale");
        let error = refused(
            store.create_version(&stale).await,
            "create on a stale parent",
        );
        assert_eq!(
            conflict_head(error),
            Some(second.id.to_string()),
            "{parent:?}"
        );
        assert_eq!(
            ok(store.get_version(a.id, stale.id).await, "get version"),
            None
        );
    }
    assert_eq!(
        versions(&*store, &ses).await,
        vec![second.clone(), first.clone()]
    );

    // Another tenant sees none of it.
    assert_eq!(
        ok(store.get_version(b.id, first.id).await, "get version"),
        None
    );
    assert_eq!(
        ok(store.head_version(b.id, ses.id).await, "head version"),
        None
    );
    assert_eq!(
        ok(
            store.list_versions(b.id, ses.id, None, 100).await,
            "list versions"
        ),
        vec![]
    );
    // A version of another tenant's session, or of no session, is refused.
    let b_ses = session(&*store, b.id, b_key.id).await;
    let foreign = WorkspaceVersion {
        tenant_id: a.id,
        ..version(&b_ses, None, "foreign")
    };
    let error = refused(
        store.create_version(&foreign).await,
        "create for another tenant's session",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    let nowhere = WorkspaceVersion {
        session_id: SessionId::generate(),
        ..version(&ses, None, "nowhere")
    };
    let error = refused(
        store.create_version(&nowhere).await,
        "create for an unknown session",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");

    // Each session has a chain of its own.
    let other = session(&*store, a.id, a_key.id).await;
    let other_first = version(&other, None, "root-1");
    ok(store.create_version(&other_first).await, "create version");
    assert_eq!(versions(&*store, &other).await, vec![other_first]);
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        Some(second)
    );
}

/// Of concurrent creates on the same parent exactly one is stored; the others are
/// refused with its id as the head.
pub async fn concurrent_version_creates(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    let (a, key) = tenant_with_key(&*store, "a").await;
    let ses = session(&*store, a.id, key.id).await;
    // A first version (no parent), then one on top of the winner.
    let mut parent = None;
    for round in 0..2 {
        let mut tasks = JoinSet::new();
        for writer in 0..WRITERS {
            let store = Arc::clone(&store);
            let candidate = version(&ses, parent, &format!("root-{round}-{writer}"));
            tasks.spawn(async move {
                let outcome = store.create_version(&candidate).await;
                (candidate, outcome)
            });
        }
        let outcomes = tasks.join_all().await;
        let winners: Vec<&WorkspaceVersion> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(candidate, _)| candidate)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0].clone();
        for (_, outcome) in outcomes {
            if let Err(error) = outcome {
                assert_eq!(conflict_head(error), Some(winner.id.to_string()));
            }
        }
        assert_eq!(
            ok(store.head_version(a.id, ses.id).await, "head version"),
            Some(winner.clone())
        );
        assert_eq!(versions(&*store, &ses).await.len(), round + 1);
        parent = Some(winner.id);
    }
}

/// Versions list newest first and page with `before`; versions removed by retention are
/// neither found nor listed, and the chain goes on from the latest live one.
pub async fn versions_list_and_delete(store: Arc<dyn Store>) {
    let (a, key) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let ses = session(&*store, a.id, key.id).await;
    let chain = version_chain(&*store, &ses, 5).await;
    let newest_first: Vec<WorkspaceVersion> = chain.iter().rev().cloned().collect();
    let list = |before: Option<VersionId>, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.list_versions(a.id, ses.id, before, limit).await,
                "list versions",
            )
        }
    };
    assert_eq!(list(None, 2).await, newest_first[..2].to_vec());
    assert_eq!(list(None, 0).await, vec![]);
    assert_eq!(
        list(Some(chain[2].id), 100).await,
        vec![chain[1].clone(), chain[0].clone()]
    );
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(cursor, 2).await;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, newest_first);

    // Another tenant cannot remove them.
    assert_eq!(
        ok(
            store.delete_versions(b.id, &[chain[4].id], at(40)).await,
            "delete versions"
        ),
        0
    );
    assert_eq!(
        ok(
            store.delete_versions(a.id, &[], at(40)).await,
            "delete nothing"
        ),
        0
    );
    // Unknown and already removed versions do not count.
    let removed = [chain[4].id, chain[2].id, VersionId::generate()];
    assert_eq!(
        ok(
            store.delete_versions(a.id, &removed, at(40)).await,
            "delete versions"
        ),
        2
    );
    assert_eq!(
        ok(
            store.delete_versions(a.id, &[chain[4].id], at(41)).await,
            "delete again"
        ),
        0
    );
    for gone in [chain[4].id, chain[2].id] {
        assert_eq!(ok(store.get_version(a.id, gone).await, "get version"), None);
    }
    assert_eq!(
        list(None, 100).await,
        vec![chain[3].clone(), chain[1].clone(), chain[0].clone()]
    );
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        Some(chain[3].clone())
    );
    // The removed head's parent is the head again, and the chain goes on from it.
    let error = refused(
        store
            .create_version(&version(&ses, Some(chain[4].id), "on removed"))
            .await,
        "create on a removed version",
    );
    assert_eq!(conflict_head(error), Some(chain[3].id.to_string()));
    let next = version(&ses, Some(chain[3].id), "root-next");
    ok(store.create_version(&next).await, "create version");

    // With every version removed, a first version starts the chain again.
    let every: Vec<VersionId> = chain.iter().map(|v| v.id).chain([next.id]).collect();
    assert_eq!(
        ok(
            store.delete_versions(a.id, &every, at(42)).await,
            "delete versions"
        ),
        4
    );
    assert_eq!(
        ok(store.head_version(a.id, ses.id).await, "head version"),
        None
    );
    assert_eq!(versions(&*store, &ses).await, vec![]);
    let restart = version(&ses, None, "root-restart");
    ok(store.create_version(&restart).await, "create version");
    assert_eq!(versions(&*store, &ses).await, vec![restart]);
}

/// An entry at `at(seconds)` with a unique leaf and three fields, given out of name
/// order (and with names that sort differently bytewise and in most locales).
fn evidence(
    tenant_id: TenantId,
    session_id: Option<SessionId>,
    kind: &str,
    seconds: i64,
) -> NewEvidenceEntry {
    let unique = fixtures::unique_hex();
    let mut leaf_hash = [0u8; 32];
    leaf_hash[..16].copy_from_slice(Uuid::now_v7().as_bytes());
    leaf_hash[16..].copy_from_slice(Uuid::now_v7().as_bytes());
    let field = |name: &str, value: &str| EvidenceField {
        name: name.to_owned(),
        salt: unique[..32].to_owned(),
        value: value.to_owned(),
    };
    NewEvidenceEntry {
        tenant_id,
        session_id,
        kind: kind.to_owned(),
        at: at(seconds),
        leaf: format!("{{\"kind\":\"{kind}\",\"n\":\"{unique}\",\"note\":\"ünïcödé\"}}"),
        leaf_hash,
        fields: vec![
            field("target", "\"/repos/ünïcödé\""),
            field("Zeta", "{\"nested\":[1,2,3]}"),
            field("actor", "\"key_someone\""),
        ],
    }
}

/// How `entry` reads back at `index`: fields sorted by name.
fn stored_evidence(entry: &NewEvidenceEntry, index: u64) -> EvidenceEntry {
    let mut fields = entry.fields.clone();
    fields.sort_by(|x, y| x.name.cmp(&y.name));
    EvidenceEntry {
        tenant_id: entry.tenant_id,
        index,
        session_id: entry.session_id,
        kind: entry.kind.clone(),
        at: entry.at,
        leaf: entry.leaf.clone(),
        leaf_hash: entry.leaf_hash,
        fields,
    }
}

async fn all_evidence(store: &dyn Store, tenant: TenantId) -> Vec<EvidenceEntry> {
    let filter = EvidenceFilter {
        limit: 100_000,
        ..Default::default()
    };
    ok(store.list_evidence(tenant, &filter).await, "list evidence")
}

async fn append(store: &dyn Store, entries: &[NewEvidenceEntry]) -> Vec<u64> {
    ok(store.append_evidence(entries).await, "append evidence")
}

/// Each tenant's log numbers its entries 0, 1, 2, ... in append order, also when one
/// append holds entries of several tenants; entries read back with their fields sorted
/// by name. An append naming an unknown tenant stores nothing.
pub async fn evidence_append_numbers_per_tenant(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let size = |tenant: TenantId| {
        let store = Arc::clone(&store);
        async move { ok(store.evidence_size(tenant).await, "evidence size") }
    };
    assert_eq!(size(a.id).await, 0);
    assert_eq!(all_evidence(&*store, a.id).await, vec![]);
    assert_eq!(append(&*store, &[]).await, Vec::<u64>::new());

    let s1 = SessionId::generate();
    let first = vec![
        evidence(a.id, Some(s1), "lifecycle", 1),
        evidence(b.id, None, "authz", 1),
        evidence(a.id, None, "authz", 2),
        evidence(a.id, Some(s1), "exec", 3),
        evidence(b.id, Some(s1), "exec", 3),
    ];
    assert_eq!(append(&*store, &first).await, vec![0, 0, 1, 2, 1]);
    let second = vec![
        evidence(b.id, None, "retention", 4),
        evidence(a.id, Some(s1), "egress", 4),
    ];
    assert_eq!(append(&*store, &second).await, vec![2, 3]);
    let bare = NewEvidenceEntry {
        fields: vec![],
        ..evidence(a.id, None, "checkpoint", 5)
    };
    assert_eq!(append(&*store, std::slice::from_ref(&bare)).await, vec![4]);
    assert_eq!((size(a.id).await, size(b.id).await), (5, 3));
    assert_eq!(
        all_evidence(&*store, a.id).await,
        vec![
            stored_evidence(&first[0], 0),
            stored_evidence(&first[2], 1),
            stored_evidence(&first[3], 2),
            stored_evidence(&second[1], 3),
            stored_evidence(&bare, 4),
        ]
    );
    assert_eq!(
        all_evidence(&*store, b.id).await,
        vec![
            stored_evidence(&first[1], 0),
            stored_evidence(&first[4], 1),
            stored_evidence(&second[0], 2),
        ]
    );

    // An append is whole or nothing: an unknown tenant spoils it, and leaves no gap.
    let spoiled = [
        evidence(a.id, None, "authz", 6),
        evidence(TenantId::generate(), None, "authz", 6),
    ];
    let error = refused(
        store.append_evidence(&spoiled).await,
        "append for an unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    assert_eq!(size(a.id).await, 5);
    assert_eq!(all_evidence(&*store, a.id).await.len(), 5);
    assert_eq!(
        append(&*store, &[evidence(a.id, None, "authz", 7)]).await,
        vec![5]
    );
    assert_eq!(
        all_evidence(&*store, TenantId::generate()).await,
        vec![],
        "an unknown tenant"
    );
}

/// Appends racing from many tasks (on several connections, for PostgreSQL) get unique
/// indexes without gaps, in slice order within each append.
pub async fn concurrent_evidence_appends(store: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const BATCHES: u64 = 4;
    const PER_BATCH: u64 = 3;
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut numbered = Vec::new();
            for _ in 0..BATCHES {
                // The other tenant's entry in the middle, so that heads lock in both orders
                // of appearance.
                let mut batch: Vec<NewEvidenceEntry> = (0..PER_BATCH)
                    .map(|_| evidence(a.id, None, "exec", 1))
                    .collect();
                batch.insert(1, evidence(b.id, None, "exec", 1));
                let indexes = append(&*store, &batch).await;
                let of_a: Vec<u64> = batch
                    .iter()
                    .zip(&indexes)
                    .filter(|(entry, _)| entry.tenant_id == a.id)
                    .map(|(_, index)| *index)
                    .collect();
                assert!(of_a.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
                numbered.extend(batch.into_iter().zip(indexes));
            }
            numbered
        });
    }
    let numbered: Vec<(NewEvidenceEntry, u64)> =
        tasks.join_all().await.into_iter().flatten().collect();
    for (tenant, count) in [(a.id, TASKS * BATCHES * PER_BATCH), (b.id, TASKS * BATCHES)] {
        let mut expected: Vec<EvidenceEntry> = numbered
            .iter()
            .filter(|(entry, _)| entry.tenant_id == tenant)
            .map(|(entry, index)| stored_evidence(entry, *index))
            .collect();
        expected.sort_by_key(|entry| entry.index);
        let indexes: Vec<u64> = expected.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, (0..count).collect::<Vec<_>>());
        assert_eq!(all_evidence(&*store, tenant).await, expected);
        assert_eq!(
            ok(store.evidence_size(tenant).await, "evidence size"),
            count
        );
    }
}

/// Listing filters by session, kind and first index, in index order, at most `limit`
/// entries (0 meaning 1000); leaf hashes come by index range.
pub async fn evidence_list_filters_and_leaf_hashes(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let (s1, s2) = (SessionId::generate(), SessionId::generate());
    let entries = vec![
        evidence(a.id, Some(s1), "lifecycle", 1),
        evidence(a.id, Some(s2), "exec", 2),
        evidence(a.id, None, "authz", 3),
        evidence(a.id, Some(s1), "exec", 4),
        evidence(a.id, Some(s1), "lifecycle", 5),
        evidence(a.id, Some(s2), "lifecycle", 6),
    ];
    append(&*store, &entries).await;
    let b_entry = evidence(b.id, Some(s1), "exec", 1);
    append(&*store, std::slice::from_ref(&b_entry)).await;

    let list = |tenant: TenantId, filter: EvidenceFilter| {
        let store = Arc::clone(&store);
        async move { ok(store.list_evidence(tenant, &filter).await, "list evidence") }
    };
    let indexes = |listed: Vec<EvidenceEntry>| -> Vec<u64> {
        listed.iter().map(|entry| entry.index).collect()
    };
    let filter = |session_id: Option<SessionId>, kind: Option<&str>, from_index: u64, limit| {
        EvidenceFilter {
            session_id,
            kind: kind.map(str::to_owned),
            from_index,
            limit,
        }
    };
    let cases: Vec<(EvidenceFilter, Vec<u64>)> = vec![
        (filter(None, None, 0, 100), vec![0, 1, 2, 3, 4, 5]),
        (filter(Some(s1), None, 0, 100), vec![0, 3, 4]),
        (filter(None, Some("lifecycle"), 0, 100), vec![0, 4, 5]),
        (filter(Some(s1), Some("lifecycle"), 0, 100), vec![0, 4]),
        (filter(None, Some("exec"), 2, 100), vec![3]),
        (filter(Some(s1), None, 0, 2), vec![0, 3]),
        (filter(Some(s1), None, 1, 1), vec![3]),
        (filter(None, None, 4, 0), vec![4, 5]),
        (filter(None, None, 6, 100), vec![]),
        (filter(None, Some("nothing"), 0, 100), vec![]),
        (filter(Some(SessionId::generate()), None, 0, 100), vec![]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            indexes(list(a.id, filter.clone()).await),
            expected,
            "{filter:?}"
        );
    }
    // Filtered entries carry their own fields, and only theirs.
    assert_eq!(
        list(a.id, filter(Some(s2), None, 0, 100)).await,
        vec![
            stored_evidence(&entries[1], 1),
            stored_evidence(&entries[5], 5)
        ]
    );
    assert_eq!(
        list(b.id, filter(Some(s1), Some("exec"), 0, 100)).await,
        vec![stored_evidence(&b_entry, 0)]
    );

    // A limit of 0 means 1000.
    let (c, _) = tenant_with_key(&*store, "c").await;
    let many: Vec<NewEvidenceEntry> = (0..1001)
        .map(|_| NewEvidenceEntry {
            fields: vec![],
            ..evidence(c.id, None, "exec", 1)
        })
        .collect();
    assert_eq!(append(&*store, &many).await, (0..1001).collect::<Vec<_>>());
    assert_eq!(list(c.id, filter(None, None, 0, 0)).await.len(), 1000);
    assert_eq!(list(c.id, filter(None, None, 0, 2000)).await.len(), 1001);

    let hashes = |tenant: TenantId, from: u64, to: u64| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.evidence_leaf_hashes(tenant, from, to).await,
                "leaf hashes",
            )
        }
    };
    let of = |range: std::ops::Range<usize>| -> Vec<[u8; 32]> {
        entries[range].iter().map(|entry| entry.leaf_hash).collect()
    };
    assert_eq!(hashes(a.id, 0, 6).await, of(0..6));
    assert_eq!(hashes(a.id, 1, 4).await, of(1..4));
    assert_eq!(hashes(a.id, 4, 100).await, of(4..6));
    assert_eq!(hashes(a.id, 0, u64::MAX).await, of(0..6));
    assert_eq!(hashes(a.id, 3, 3).await, Vec::<[u8; 32]>::new());
    assert_eq!(hashes(a.id, 5, 2).await, Vec::<[u8; 32]>::new());
    assert_eq!(hashes(b.id, 0, 10).await, vec![b_entry.leaf_hash]);
    assert_eq!(
        hashes(TenantId::generate(), 0, 10).await,
        Vec::<[u8; 32]>::new()
    );
}

/// Shredding deletes the fields of the entries made before the cut-off (of one session,
/// when given); the entries, their leaf hashes and the log's size stay.
pub async fn evidence_shred_keeps_entries(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let (s1, s2) = (SessionId::generate(), SessionId::generate());
    let entries = vec![
        evidence(a.id, Some(s1), "exec", 10),
        evidence(a.id, Some(s2), "exec", 10),
        evidence(a.id, Some(s1), "exec", 20),
        evidence(a.id, None, "authz", 5),
        evidence(a.id, Some(s1), "exec", 30),
    ];
    append(&*store, &entries).await;
    let b_entries = vec![evidence(b.id, Some(s1), "exec", 10)];
    append(&*store, &b_entries).await;
    let fields = entries[0].fields.len() as u64;
    let hashes_before = ok(store.evidence_leaf_hashes(a.id, 0, 5).await, "leaf hashes");
    let shred = |session_id: Option<SessionId>, before: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.shred_evidence(a.id, session_id, before).await,
                "shred evidence",
            )
        }
    };
    let expect = |shredded: &[usize]| -> Vec<EvidenceEntry> {
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let mut stored = stored_evidence(entry, index as u64);
                if shredded.contains(&index) {
                    stored.fields.clear();
                }
                stored
            })
            .collect()
    };

    // Of s1's entries only the first is older than at(20): the cut-off is exclusive.
    assert_eq!(shred(Some(s1), at(20)).await, fields);
    assert_eq!(shred(Some(s1), at(20)).await, 0, "shredded twice");
    assert_eq!(all_evidence(&*store, a.id).await, expect(&[0]));
    assert_eq!(shred(None, at(25)).await, 3 * fields);
    assert_eq!(all_evidence(&*store, a.id).await, expect(&[0, 1, 2, 3]));
    assert_eq!(shred(None, at(30)).await, 0);
    assert_eq!(shred(None, at_micros(30_000_001)).await, fields);
    assert_eq!(all_evidence(&*store, a.id).await, expect(&[0, 1, 2, 3, 4]));

    assert_eq!(
        ok(store.evidence_leaf_hashes(a.id, 0, 5).await, "leaf hashes"),
        hashes_before
    );
    assert_eq!(ok(store.evidence_size(a.id).await, "evidence size"), 5);
    assert_eq!(
        all_evidence(&*store, b.id).await,
        vec![stored_evidence(&b_entries[0], 0)],
        "another tenant's fields"
    );
}

fn evidence_checkpoint(tenant_id: TenantId, size: u8) -> EvidenceCheckpoint {
    EvidenceCheckpoint {
        tenant_id,
        size: u64::from(size),
        root: [size; 32],
        note: format!("cordon.example/log/{tenant_id}\n{size}\nroot\n\n— cordon c2lnbmF0dXJl\n"),
        at: at(i64::from(size)),
    }
}

/// Checkpoints are stored once per size; the largest is the latest; they list by size
/// range, smallest first.
pub async fn evidence_checkpoints_put_latest_list(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let latest = |tenant: TenantId| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.latest_evidence_checkpoint(tenant).await,
                "latest checkpoint",
            )
        }
    };
    let list = |from: u64, to: u64| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.list_evidence_checkpoints(a.id, from, to).await,
                "list checkpoints",
            )
        }
    };
    assert_eq!(latest(a.id).await, None);
    assert_eq!(list(0, u64::MAX).await, vec![]);

    let [two, five, three] = [2, 5, 3].map(|size| evidence_checkpoint(a.id, size));
    for checkpoint in [&two, &five, &three] {
        ok(
            store.put_evidence_checkpoint(checkpoint).await,
            "put checkpoint",
        );
    }
    let b_one = evidence_checkpoint(b.id, 1);
    ok(
        store.put_evidence_checkpoint(&b_one).await,
        "put checkpoint",
    );
    assert_eq!(latest(a.id).await, Some(five.clone()));
    assert_eq!(latest(b.id).await, Some(b_one));
    assert_eq!(list(2, 3).await, vec![two.clone(), three.clone()]);
    assert_eq!(
        list(0, u64::MAX).await,
        vec![two.clone(), three.clone(), five.clone()]
    );
    assert_eq!(list(5, 5).await, vec![five.clone()]);
    assert_eq!(list(4, 4).await, vec![]);
    assert_eq!(list(3, 2).await, vec![]);

    // A size already stored keeps its first checkpoint.
    let again = EvidenceCheckpoint {
        root: [0xee; 32],
        note: "another note".to_owned(),
        at: at(99),
        ..five.clone()
    };
    ok(store.put_evidence_checkpoint(&again).await, "put again");
    assert_eq!(latest(a.id).await, Some(five.clone()));
    assert_eq!(list(5, 5).await, vec![five]);

    let error = refused(
        store
            .put_evidence_checkpoint(&evidence_checkpoint(TenantId::generate(), 1))
            .await,
        "put for an unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

fn release(version: &WorkspaceVersion, name: &str) -> Release {
    Release {
        id: ReleaseId::generate(),
        tenant_id: version.tenant_id,
        name: name.to_owned(),
        session_id: version.session_id,
        version_id: version.id,
        root: format!("release-root-{name}-{}", fixtures::unique_hex()),
        envelope: "{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"e30=\",\
                   \"signatures\":[{\"keyid\":\"k\",\"sig\":\"c2ln\"}]}"
            .to_owned(),
        created_by: "key_promoter".to_owned(),
        created_at: at(50),
        deleted_at: None,
    }
}

/// Releases are stored as given, found by id and by name, listed in id order; a name is
/// the tenant's for good, even once its release is removed. A release must come from a
/// version of its own session and tenant.
pub async fn releases_create_get_list_delete(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let a_ses = session(&*store, a.id, a_key.id).await;
    let a_other = session(&*store, a.id, a_key.id).await;
    let b_ses = session(&*store, b.id, b_key.id).await;
    let a_version = version_chain(&*store, &a_ses, 1).await.remove(0);
    let b_version = version_chain(&*store, &b_ses, 1).await.remove(0);
    let list = |tenant: TenantId| {
        let store = Arc::clone(&store);
        async move { ok(store.list_releases(tenant).await, "list releases") }
    };
    let by_name = |tenant: TenantId, name: &'static str| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.get_release_by_name(tenant, name).await,
                "get release by name",
            )
        }
    };
    assert_eq!(list(a.id).await, vec![]);

    let first = release(&a_version, "v1.0");
    let second = release(&a_version, "v1.1");
    ok(store.create_release(&first).await, "create release");
    ok(store.create_release(&second).await, "create release");
    assert_eq!(
        ok(store.get_release(a.id, first.id).await, "get release"),
        Some(first.clone())
    );
    assert_eq!(by_name(a.id, "v1.1").await, Some(second.clone()));
    assert_eq!(list(a.id).await, vec![first.clone(), second.clone()]);

    // Names are per tenant, and taken once.
    let b_release = release(&b_version, "v1.0");
    ok(
        store.create_release(&b_release).await,
        "same name, other tenant",
    );
    let error = refused(
        store.create_release(&release(&a_version, "v1.0")).await,
        "create with a taken name",
    );
    assert!(
        matches!(&error, StoreError::ReleaseNameTaken(name) if name == "v1.0"),
        "{error:?}"
    );
    assert_eq!(list(a.id).await, vec![first.clone(), second.clone()]);
    assert_eq!(
        ok(store.get_release(b.id, first.id).await, "get release"),
        None
    );
    assert_eq!(by_name(b.id, "v1.1").await, None);
    assert_eq!(list(b.id).await, vec![b_release.clone()]);

    // Only from a version of the release's own session and tenant.
    let refusals = [
        Release {
            version_id: VersionId::generate(),
            ..release(&a_version, "unknown version")
        },
        Release {
            session_id: a_other.id,
            ..release(&a_version, "other session")
        },
        Release {
            tenant_id: a.id,
            ..release(&b_version, "other tenant")
        },
    ];
    for refusal in refusals {
        let error = refused(store.create_release(&refusal).await, &refusal.name);
        assert!(
            matches!(error, StoreError::NotFound),
            "{}: {error:?}",
            refusal.name
        );
    }

    // Removal hides a release; its name stays taken.
    let error = refused(
        store.delete_release(b.id, first.id, at(60)).await,
        "delete another tenant's release",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    ok(
        store.delete_release(a.id, first.id, at(60)).await,
        "delete release",
    );
    assert_eq!(
        ok(store.get_release(a.id, first.id).await, "get release"),
        None
    );
    assert_eq!(by_name(a.id, "v1.0").await, None);
    assert_eq!(list(a.id).await, vec![second]);
    for id in [first.id, ReleaseId::generate()] {
        let error = refused(
            store.delete_release(a.id, id, at(61)).await,
            "delete a removed or unknown release",
        );
        assert!(matches!(error, StoreError::NotFound), "{error:?}");
    }
    let error = refused(
        store.create_release(&release(&a_version, "v1.0")).await,
        "reuse a removed release's name",
    );
    assert!(
        matches!(&error, StoreError::ReleaseNameTaken(name) if name == "v1.0"),
        "{error:?}"
    );
    assert_eq!(by_name(b.id, "v1.0").await, Some(b_release));
}

/// Closes a new session at `at(seconds)`.
async fn closed_session(
    store: &dyn Store,
    tenant: TenantId,
    owner: KeyId,
    seconds: i64,
) -> Session {
    let created = session(store, tenant, owner).await;
    let fence = lease(store, tenant, created.id, "closer", at(seconds))
        .await
        .token;
    let close = step(
        &created,
        Phase::Created,
        Phase::Closed,
        fence,
        "closer",
        at(seconds),
    );
    ok(store.transition(&close).await, "close session")
}

/// Retention sees the closed sessions of every tenant, closed before the cut-off,
/// oldest first, at most `limit`, page after page.
pub async fn closed_sessions_oldest_first(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let a_first = closed_session(&*store, a.id, a_key.id, 50).await;
    let b_first = closed_session(&*store, b.id, b_key.id, 40).await;
    let a_second = closed_session(&*store, a.id, a_key.id, 60).await;
    // Sessions in other phases, however old, are not for retention.
    let open = session(&*store, a.id, a_key.id).await;
    advance(&*store, &open, Phase::Active).await;
    let suspended = session(&*store, b.id, b_key.id).await;
    advance(&*store, &suspended, Phase::Suspended).await;
    session(&*store, b.id, b_key.id).await;

    let closed = |before: Timestamp, limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.closed_sessions(before, None, limit).await,
                "closed sessions",
            )
        }
    };
    assert_eq!(
        closed(at(100), 10).await,
        vec![b_first.clone(), a_first.clone(), a_second.clone()]
    );
    assert_eq!(
        closed(at(60), 10).await,
        vec![b_first.clone(), a_first.clone()]
    );
    assert_eq!(
        closed(at(100), 2).await,
        vec![b_first.clone(), a_first.clone()]
    );
    assert_eq!(closed(at(40), 10).await, vec![]);
    assert_eq!(closed(at(100), 0).await, vec![]);

    // Paging: after the last of one page come the rest, however many pages the oldest
    // sessions would fill; sessions closed at the same instant are told apart by id.
    let a_tie = closed_session(&*store, a.id, a_key.id, 60).await;
    let b_tie = closed_session(&*store, b.id, b_key.id, 60).await;
    let mut sixty = vec![a_second.clone(), a_tie, b_tie];
    sixty.sort_by_key(|s| s.id.to_string());
    let mut expected = vec![b_first.clone(), a_first.clone()];
    expected.extend(sixty);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = ok(
            store.closed_sessions(at(100), after, 2).await,
            "a page of closed sessions",
        );
        assert!(page.len() <= 2);
        after = page.last().map(|s| (s.updated_at, s.id));
        let last = page.len() < 2;
        paged.extend(page);
        if last {
            break;
        }
    }
    assert_eq!(paged, expected);
    assert_eq!(
        ok(
            store
                .closed_sessions(at(100), Some((b_first.updated_at, b_first.id)), 10)
                .await,
            "after the first",
        ),
        expected[1..].to_vec()
    );
    let last = &expected[expected.len() - 1];
    assert_eq!(
        ok(
            store
                .closed_sessions(at(100), Some((last.updated_at, last.id)), 10)
                .await,
            "after the last",
        ),
        vec![]
    );
}

/// What blob garbage collection must keep: the roots of live versions and live releases
/// of every tenant, each once.
pub async fn live_artifact_roots_of_every_tenant(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let a_ses = session(&*store, a.id, a_key.id).await;
    let b_ses = session(&*store, b.id, b_key.id).await;
    let roots = || {
        let store = Arc::clone(&store);
        async move {
            let mut roots = ok(store.live_artifact_roots().await, "live roots");
            roots.sort();
            roots
        }
    };
    let expect = |roots: &[&str]| -> Vec<String> {
        let mut roots: Vec<String> = roots.iter().map(|root| (*root).to_owned()).collect();
        roots.sort();
        roots
    };
    assert_eq!(roots().await, Vec::<String>::new());

    let a_first = version(&a_ses, None, "shared");
    let a_second = version(&a_ses, Some(a_first.id), "a-second");
    let b_first = version(&b_ses, None, "shared");
    for created in [&a_first, &a_second, &b_first] {
        ok(store.create_version(created).await, "create version");
    }
    let a_release = Release {
        root: "a-release".to_owned(),
        ..release(&a_first, "a")
    };
    let b_release = Release {
        root: "b-release".to_owned(),
        ..release(&b_first, "b")
    };
    ok(store.create_release(&a_release).await, "create release");
    ok(store.create_release(&b_release).await, "create release");
    assert_eq!(
        roots().await,
        expect(&["shared", "a-second", "a-release", "b-release"])
    );

    let removed = [a_first.id, a_second.id];
    ok(
        store.delete_versions(a.id, &removed, at(70)).await,
        "delete versions",
    );
    // b's first version still holds the shared root.
    assert_eq!(roots().await, expect(&["shared", "a-release", "b-release"]));
    ok(
        store.delete_release(a.id, a_release.id, at(70)).await,
        "delete release",
    );
    ok(
        store.delete_versions(b.id, &[b_first.id], at(70)).await,
        "delete versions",
    );
    // A release keeps its own root after its version is gone.
    assert_eq!(roots().await, expect(&["b-release"]));
}

// ---------------------------------------------------------------------------------------
// Durability

/// What a store acknowledged is there after it is closed and opened again.
pub async fn durable_across_reopen(test: TestStore) {
    let store = Arc::clone(&test.store);
    let root = fixtures::tenant("root");
    let root_key = fixtures::system_key(root.id);
    assert!(ok(store.bootstrap(&root, &root_key).await, "bootstrap"));
    let revoked = fixtures::key(root.id, Role::Agent);
    ok(store.create_key(&revoked).await, "create key");
    let revoked = ok(store.revoke_key(root.id, revoked.id, at(3)).await, "revoke");
    let created = session(&*store, root.id, root_key.id).await;
    let active = advance(&*store, &created, Phase::Active).await;
    let lease = lease(&*store, root.id, created.id, "mover", at(4)).await;
    let events = all_events(&*store, &created).await;
    let scope = fixtures::scope(root.id, root_key.id, "req-1");
    ok(
        store
            .idempotency_begin(&scope, &[1; 32], at(0), STALE_AFTER)
            .await,
        "begin",
    );
    let response = RecordedResponse {
        status: 201,
        body: b"created".to_vec(),
    };
    ok(
        store.idempotency_complete(&scope, &response, at(1)).await,
        "complete",
    );
    let pending = fixtures::scope(root.id, root_key.id, "req-2");
    ok(
        store
            .idempotency_begin(&pending, &[2; 32], at(0), STALE_AFTER)
            .await,
        "begin",
    );
    drop(store);

    let test = test.reopen().await;
    let store = &*test.store;
    assert_eq!(
        ok(store.list_tenants().await, "list tenants"),
        vec![root.clone()]
    );
    let mut keys = vec![root_key.clone(), revoked];
    keys.sort_by_key(|key| key.id);
    assert_eq!(ok(store.list_keys(root.id).await, "list keys"), keys);
    assert_eq!(
        ok(store.get_session(root.id, created.id).await, "get session"),
        Some(active.clone())
    );
    assert_eq!(all_events(store, &created).await, events);
    assert_eq!(
        held(ok(
            store
                .acquire_lease(root.id, created.id, "other", TTL, at(5))
                .await,
            "lease"
        )),
        lease
    );
    let replay = ok(
        store
            .idempotency_begin(&scope, &[1; 32], at(2), STALE_AFTER)
            .await,
        "begin",
    );
    assert_eq!(replay, IdempotencyStart::Replay(response));
    let in_flight = ok(
        store
            .idempotency_begin(&pending, &[2; 32], at(2), STALE_AFTER)
            .await,
        "begin",
    );
    assert_eq!(in_flight, IdempotencyStart::InFlight);
    let again = fixtures::tenant("another-root");
    assert!(!ok(
        store
            .bootstrap(&again, &fixtures::system_key(again.id))
            .await,
        "bootstrap"
    ));
    // Writes still work after the reopen.
    let next = step(
        &active,
        Phase::Active,
        Phase::Suspended,
        lease.token,
        "mover",
        at(6),
    );
    assert_eq!(ok(store.transition(&next).await, "transition").version, 3);
}
