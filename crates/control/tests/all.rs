//! Control as the single writer, with two nodes sharing one store, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use cordon_control::{Control, ControlError, ControlOptions, SessionSpec};
use cordon_core::{KeyId, Phase, SessionAction};
use cordon_test_support::{TestBackend, fixtures, test_store};

fn node(store: &std::sync::Arc<dyn cordon_store::Store>, name: &str, ttl: Duration) -> Control {
    Control::new(
        std::sync::Arc::clone(store),
        ControlOptions {
            node_id: name.to_owned(),
            lease_ttl: ttl,
        },
    )
}

async fn two_nodes_one_session(backend: TestBackend) {
    let test = test_store(backend).await;
    let tenant = fixtures::tenant(&format!("t{}", fixtures::unique_hex()));
    test.store.create_tenant(&tenant).await.unwrap();
    let ttl = Duration::from_millis(300);
    let node_a = node(&test.store, "node-a", ttl);
    let node_b = node(&test.store, "node-b", ttl);
    let spec = SessionSpec {
        tenant_id: tenant.id,
        owner: KeyId::generate(),
        workload_class: "coding".into(),
        environment: "dev".into(),
        labels: Default::default(),
        policy_version: "test".into(),
    };
    let session = node_a.create_session(spec, "tester").await.unwrap();

    // A writes first and so holds the lease; B is turned away while it is live.
    let active = node_a
        .transition(&session, SessionAction::Activate, "a", None)
        .await
        .unwrap();
    assert_eq!(active.phase, Phase::Active);
    let refused = node_b
        .transition(&active, SessionAction::Checkpoint, "b", None)
        .await;
    assert!(matches!(refused, Err(ControlError::LeaseHeld(ref lease)) if lease.holder == "node-a"));

    // A stalls past its lease; B takes over with a newer token and writes.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let checkpointed = node_b
        .transition(&active, SessionAction::Checkpoint, "b", None)
        .await
        .unwrap();
    assert_eq!(checkpointed.phase, Phase::Checkpointed);

    // A wakes up: its cached lease has lapsed, so it asks again and finds B's. (A write
    // that slips through with A's old token is refused by the store: the conformance
    // suite's fencing tests pin that.)
    let stale = node_a
        .transition(&checkpointed, SessionAction::Suspend, "a", None)
        .await;
    let error = stale.expect_err("a stale writer must be refused");
    assert!(
        matches!(error, ControlError::LeaseHeld(ref lease) if lease.holder == "node-b"),
        "{error:?}"
    );
    let stored = test
        .store
        .get_session(tenant.id, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.phase, Phase::Checkpointed);
    assert_eq!(stored.version, 3);
    let events = test
        .store
        .list_events(tenant.id, session.id, 0, 100)
        .await
        .unwrap();
    let actors: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors, ["tester", "a", "b"]);
}

async fn concurrent_actions_on_one_node(backend: TestBackend) {
    let test = test_store(backend).await;
    let tenant = fixtures::tenant(&format!("t{}", fixtures::unique_hex()));
    test.store.create_tenant(&tenant).await.unwrap();
    let control = node(&test.store, "solo", Duration::from_secs(30));
    let session = test
        .store
        .create_session(
            &fixtures::new_session(tenant.id, KeyId::generate()),
            "tester",
        )
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (control, session) = (control.clone(), session.clone());
        tasks.spawn(async move {
            control
                .transition(
                    &session,
                    SessionAction::Activate,
                    &format!("w{worker}"),
                    None,
                )
                .await
        });
    }
    let mut activated = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(updated) => {
                assert_eq!(updated.phase, Phase::Active);
                activated += 1;
            }
            Err(ControlError::InvalidTransition(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(activated, 1);
    let events = test
        .store
        .list_events(tenant.id, session.id, 0, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
}

macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::TestBackend::Sqlite).await })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::TestBackend::Postgres).await })+
        }
    };
}

on_both_backends!(two_nodes_one_session, concurrent_actions_on_one_node);
