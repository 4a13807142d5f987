//! Racing requests on one session: the lifecycle stays a single-writer state machine.

use cordon_test_support::TestBackend;

use std::time::Duration;

use cordon_core::{SessionId, TenantId, Timestamp};
use cordon_store::LeaseOutcome;

use super::TestServer;

backend_tests!(
    concurrent_activations_succeed_once,
    concurrent_mixed_actions_stay_consistent,
    a_node_that_lost_its_lease_is_fenced_off,
);

const RACERS: usize = 8;

async fn concurrent_activations_succeed_once(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (operator, _) = server.create_key("operator").await;
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap().to_owned();

    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let client = if racer % 2 == 0 {
            admin.clone()
        } else {
            operator.clone()
        };
        let id = id.clone();
        tasks.spawn(async move { client.act(&id, "activate").await });
    }
    let mut activated = 0;
    let mut refused = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        if reply.status == 200 {
            assert_eq!(reply.json["phase"], "active");
            assert_eq!(reply.json["version"], 2);
            activated += 1;
        } else {
            reply.expect_error(409, "SESSION_INVALID_TRANSITION");
            refused += 1;
        }
    }
    assert_eq!((activated, refused), (1, RACERS - 1));

    let events = admin.events(&id).await;
    let activations = events
        .iter()
        .filter(|event| event["to"] == "active")
        .count();
    assert_eq!(activations, 1, "{events:?}");
    assert_eq!(events.len(), 2);
    let stored = admin.session(&id).await;
    assert_eq!(stored["phase"], "active");
    assert_eq!(stored["version"], 2);
}

/// Suspend and checkpoint race on an active session: whichever order they land in,
/// every accepted action has exactly one event and the version counts them.
async fn concurrent_mixed_actions_stay_consistent(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap().to_owned();
    admin.act(&id, "activate").await.expect(200);

    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let action = ["checkpoint", "suspend", "close", "resume"][racer % 4];
        let (client, id) = (admin.clone(), id.clone());
        tasks.spawn(async move { (action, client.act(&id, action).await) });
    }
    let mut accepted = 0;
    while let Some(outcome) = tasks.join_next().await {
        let (action, reply) = outcome.unwrap();
        if reply.status == 200 {
            accepted += 1;
        } else {
            let message = reply.expect_error(409, "SESSION_INVALID_TRANSITION");
            assert!(message.contains(action), "{message}");
        }
    }
    assert!(accepted >= 1);
    let stored = admin.session(&id).await;
    let events = admin.events(&id).await;
    assert_eq!(events.len(), 2 + accepted);
    assert_eq!(stored["version"], events.len());
    assert_eq!(events.last().unwrap()["to"], stored["phase"]);
    // The log is a valid walk through the lifecycle.
    for pair in events.windows(2) {
        assert_eq!(pair[1]["from"], pair[0]["to"], "{events:?}");
    }
}

/// Another node takes the session's lease over (here: the store is told it is an hour
/// later, so the server's lease has expired) while this server still trusts its cached
/// lease. The server's next write carries the old fencing token and is refused with
/// SESSION_LEASE_FENCED, changing nothing; while the other node's lease is live, the
/// server's retry is SESSION_LEASE_HELD.
async fn a_node_that_lost_its_lease_is_fenced_off(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap().to_owned();
    admin.act(&id, "activate").await.expect(200);

    let tenant_id: TenantId = session["tenant_id"].as_str().unwrap().parse().unwrap();
    let session_id: SessionId = id.parse().unwrap();
    let an_hour_later = Timestamp::now().saturating_add_micros(3_600_000_000);
    let takeover = server
        .store
        .acquire_lease(
            tenant_id,
            session_id,
            "other-node",
            Duration::from_secs(7200),
            an_hour_later,
        )
        .await
        .unwrap();
    assert!(
        matches!(takeover, LeaseOutcome::Acquired(ref lease) if lease.token == 2),
        "{takeover:?}"
    );

    admin
        .act(&id, "checkpoint")
        .await
        .expect_error(409, "SESSION_LEASE_FENCED");
    admin
        .act(&id, "checkpoint")
        .await
        .expect_error(409, "SESSION_LEASE_HELD");
    let stored = admin.session(&id).await;
    assert_eq!(stored["phase"], "active");
    assert_eq!(stored["version"], 2);
    assert_eq!(admin.events(&id).await.len(), 2);
}
