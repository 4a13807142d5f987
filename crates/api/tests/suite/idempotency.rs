//! `Idempotency-Key`: replays, reuse with another request, scoping per API key,
//! transitions, invalid keys and concurrent identical requests.

use cordon_test_support::TestBackend;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Reply, TestServer};

backend_tests!(
    same_key_same_body_replays,
    same_key_other_request_is_refused,
    keys_are_scoped_per_api_key,
    transition_replays,
    invalid_keys_are_refused,
    concurrent_identical_requests_create_one_session,
    a_claim_left_by_a_crash_is_retaken_visibly,
);

async fn post_with_key(client: &Client, path: &str, key: &str, body: &Value) -> Reply {
    let request = client
        .request(Method::POST, path)
        .header(cordon_api::IDEMPOTENCY_KEY, key)
        .json(body);
    Client::send(request).await
}

fn session_request() -> Value {
    json!({"workload_class": "coding", "environment": "dev", "labels": {"team": "a"}})
}

async fn same_key_same_body_replays(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let first = post_with_key(&admin, "/v1/sessions", "create-1", &session_request()).await;
    let created = first.expect(201).clone();
    assert!(!first.replayed());

    for _ in 0..2 {
        let again = post_with_key(&admin, "/v1/sessions", "create-1", &session_request()).await;
        assert_eq!(
            again.expect(201),
            &created,
            "the replay is the first response"
        );
        assert!(again.replayed(), "{:?}", again.headers);
        assert_eq!(again.header("content-type"), Some("application/json"));
        assert_ne!(
            again.request_id(),
            first.request_id(),
            "a replay is its own request"
        );
    }
    assert_eq!(server.session_count().await, 1);
    assert_eq!(
        admin.session_ids("").await,
        [created["id"].as_str().unwrap()]
    );
    // The same key on a GET is not an idempotent request and changes nothing.
    let list = Client::send(
        admin
            .request(Method::GET, "/v1/sessions")
            .header(cordon_api::IDEMPOTENCY_KEY, "create-1"),
    )
    .await;
    list.expect(200);
    assert!(!list.replayed());
}

async fn same_key_other_request_is_refused(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let first = post_with_key(&admin, "/v1/sessions", "k", &session_request()).await;
    let created = first.expect(201).clone();

    // A different body.
    let other_body = json!({"workload_class": "coding", "environment": "prod"});
    let reused = post_with_key(&admin, "/v1/sessions", "k", &other_body).await;
    reused.expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    // A different path.
    let reused = post_with_key(&admin, "/v1/tenants", "k", &json!({"name": "acme"})).await;
    reused.expect_error(422, "IDEMPOTENCY_KEY_REUSED");

    assert_eq!(server.session_count().await, 1);
    assert_eq!(server.tenant_count().await, 1);
    // The original is still what the key replays.
    let again = post_with_key(&admin, "/v1/sessions", "k", &session_request()).await;
    assert_eq!(again.expect(201), &created);
    assert!(again.replayed());
}

async fn keys_are_scoped_per_api_key(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (other_admin, other_key) = server.create_key("admin").await;
    let mine = post_with_key(&admin, "/v1/sessions", "shared", &session_request()).await;
    let mine = mine.expect(201).clone();
    let theirs = post_with_key(&other_admin, "/v1/sessions", "shared", &session_request()).await;
    assert!(!theirs.replayed());
    let theirs = theirs.expect(201).clone();
    assert_ne!(mine["id"], theirs["id"]);
    assert_eq!(theirs["owner"], other_key["id"]);
    assert_eq!(server.session_count().await, 2);
    // Each key replays its own.
    let replay = post_with_key(&other_admin, "/v1/sessions", "shared", &session_request()).await;
    assert!(replay.replayed());
    assert_eq!(replay.expect(201), &theirs);
    // A different body under the other key's scope is refused there, not here.
    let body = json!({"workload_class": "x", "environment": "y"});
    post_with_key(&other_admin, "/v1/sessions", "shared", &body)
        .await
        .expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(server.session_count().await, 2);
}

async fn transition_replays(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}/activate");
    let body = json!({"reason": "go"});

    let first = post_with_key(&admin, &path, "activate-once", &body).await;
    let activated = first.expect(200).clone();
    assert_eq!(activated["phase"], "active");
    let events = admin.events(id).await;
    assert_eq!(events.len(), 2);

    // The replay answers 200 with the recorded body, not 409: the action did not run again.
    let again = post_with_key(&admin, &path, "activate-once", &body).await;
    assert!(again.replayed());
    assert_eq!(again.expect(200), &activated);
    assert_eq!(admin.events(id).await, events);
    // Without the key the action really runs, and is refused.
    admin
        .act(id, "activate")
        .await
        .expect_error(409, "SESSION_INVALID_TRANSITION");
    // The key on another action's path is a reuse.
    let checkpoint = format!("/v1/sessions/{id}/checkpoint");
    post_with_key(&admin, &checkpoint, "activate-once", &body)
        .await
        .expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(admin.events(id).await, events);
    assert_eq!(admin.session(id).await, activated);

    // A refusal is recorded and replayed like any other answer.
    let refused = post_with_key(&admin, &path, "activate-twice", &body).await;
    refused.expect_error(409, "SESSION_INVALID_TRANSITION");
    let replayed = post_with_key(&admin, &path, "activate-twice", &body).await;
    assert!(replayed.replayed());
    assert_eq!(replayed.status, 409);
    assert_eq!(replayed.json["error"]["code"], "SESSION_INVALID_TRANSITION");
    assert_eq!(admin.events(id).await, events);
}

async fn invalid_keys_are_refused(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let too_long = "k".repeat(256);
    for key in ["", too_long.as_str(), "has space", "tab\tkey"] {
        let reply = post_with_key(&admin, "/v1/sessions", key, &session_request()).await;
        let message = reply.expect_error(400, "IDEMPOTENCY_KEY_INVALID");
        assert!(message.contains("255"), "{message}");
    }
    assert_eq!(server.session_count().await, 0);
    // 255 visible characters is the longest accepted key.
    let longest = "k".repeat(255);
    post_with_key(&admin, "/v1/sessions", &longest, &session_request())
        .await
        .expect(201);
    let replay = post_with_key(&admin, "/v1/sessions", &longest, &session_request()).await;
    assert!(replay.replayed());
    assert_eq!(server.session_count().await, 1);
}

async fn concurrent_identical_requests_create_one_session(backend: TestBackend) {
    const RACERS: usize = 8;
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RACERS {
        let admin = admin.clone();
        tasks.spawn(async move {
            post_with_key(&admin, "/v1/sessions", "race", &session_request()).await
        });
    }
    let mut originals = Vec::new();
    let mut replays = Vec::new();
    let mut in_flight = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        if reply.status == 201 {
            if reply.replayed() {
                replays.push(reply.json["id"].clone());
            } else {
                originals.push(reply.json["id"].clone());
            }
        } else {
            reply.expect_error(409, "IDEMPOTENCY_KEY_IN_FLIGHT");
            in_flight += 1;
        }
    }
    assert_eq!(originals.len(), 1, "exactly one request ran: {originals:?}");
    assert_eq!(originals.len() + replays.len() + in_flight, RACERS);
    assert!(
        replays.iter().all(|id| *id == originals[0]),
        "{replays:?} vs {originals:?}"
    );
    assert_eq!(server.session_count().await, 1);
    // Once settled, the key replays.
    let after = post_with_key(&admin, "/v1/sessions", "race", &session_request()).await;
    assert!(after.replayed());
    assert_eq!(after.expect(201)["id"], originals[0]);
}

/// A claim left pending by an attempt that never finished (the server died mid-request)
/// is taken over once stale: the request runs, and the response says so with
/// `idempotent-retaken`, so the client knows the first attempt may have taken effect.
async fn a_claim_left_by_a_crash_is_retaken_visibly(backend: TestBackend) {
    use sha2::{Digest, Sha256};

    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let body = json!({"workload_class": "coding", "environment": "dev"});
    let mut fingerprint = Sha256::new();
    fingerprint.update(b"POST\0/v1/sessions\0");
    fingerprint.update(serde_json::to_vec(&body).unwrap());
    let scope = cordon_store::IdempotencyScope {
        tenant_id: server.default_tenant_id().await.parse().unwrap(),
        principal: server.admin_key_id.parse().unwrap(),
        key: "crashed-attempt".into(),
    };
    let an_hour_ago = cordon_core::Timestamp::now().saturating_add_micros(-3_600_000_000);
    let claimed = server
        .store
        .idempotency_begin(
            &scope,
            &fingerprint.finalize().into(),
            an_hour_ago,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(claimed, cordon_store::IdempotencyStart::Proceed);

    let send = || {
        Client::send(
            admin
                .request(Method::POST, "/v1/sessions")
                .header("idempotency-key", "crashed-attempt")
                .json(&body),
        )
    };
    let retaken = send().await;
    let created = retaken.expect(201).clone();
    assert_eq!(retaken.header(cordon_api::IDEMPOTENT_RETAKEN), Some("true"));
    let replayed = send().await;
    assert_eq!(replayed.expect(201), &created);
    assert!(replayed.replayed());
    assert_eq!(replayed.header(cordon_api::IDEMPOTENT_RETAKEN), None);
    assert_eq!(server.session_count().await, 1);
}
