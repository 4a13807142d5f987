//! Every kind of bad input gets its stable code and writes nothing.

use std::collections::BTreeMap;

use cordon_test_support::TestBackend;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{Client, Reply, TestServer};

backend_tests!(
    bad_bodies_are_refused,
    oversized_bodies_are_refused,
    invalid_values_are_refused,
    bad_transition_bodies_are_refused,
    malformed_and_unknown_ids_are_not_found,
    bad_queries_are_refused,
    unknown_routes_and_wrong_methods,
);

/// What a refused request must leave untouched: the session count, the one existing
/// session and its events, the tenants and the keys.
struct Snapshot {
    sessions: u64,
    session: Value,
    events: Vec<Value>,
    tenants: usize,
    keys: Value,
}

async fn snapshot(server: &TestServer, session_id: &str) -> Snapshot {
    let admin = server.admin();
    Snapshot {
        sessions: server.session_count().await,
        session: admin.session(session_id).await,
        events: admin.events(session_id).await,
        tenants: server.tenant_count().await,
        keys: admin.get("/v1/keys").await.expect(200).clone(),
    }
}

async fn assert_unchanged(server: &TestServer, before: &Snapshot, session_id: &str) {
    let after = snapshot(server, session_id).await;
    assert_eq!(after.sessions, before.sessions, "session count changed");
    assert_eq!(after.session, before.session, "session changed");
    assert_eq!(after.events, before.events, "events changed");
    assert_eq!(after.tenants, before.tenants, "tenant count changed");
    assert_eq!(after.keys, before.keys, "keys changed");
}

/// A server with one active session, and that session's id.
async fn server_with_session(backend: TestBackend) -> (TestServer, String) {
    let server = TestServer::start(backend).await;
    let session = server.admin().create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap().to_owned();
    server.admin().act(&id, "activate").await.expect(200);
    (server, id)
}

async fn raw_post(client: &Client, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut request = client.request(Method::POST, path).body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    Client::send(request).await
}

async fn bad_bodies_are_refused(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;
    let json_type = Some("application/json");
    let cases = [
        (
            "/v1/sessions",
            r#"{"workload_class": "coding", "environment": "#,
        ),
        ("/v1/sessions", "not json at all"),
        ("/v1/sessions", ""),
        (
            "/v1/sessions",
            r#"{"workload_class": "coding", "environment": "dev", "colour": "red"}"#,
        ),
        (
            "/v1/sessions",
            r#"{"workload_class": 5, "environment": "dev"}"#,
        ),
        (
            "/v1/sessions",
            r#"{"workload_class": "coding", "environment": "dev", "labels": ["a"]}"#,
        ),
        (
            "/v1/sessions",
            r#"{"workload_class": "coding", "environment": "dev", "labels": {"a": 1}}"#,
        ),
        ("/v1/sessions", r#"{"workload_class": "coding"}"#),
        ("/v1/sessions", "[]"),
        // Positional (array) forms of otherwise valid requests: a body is an object.
        ("/v1/sessions", r#"["coding", "dev"]"#),
        ("/v1/sessions", r#"["coding", "dev", {}]"#),
        ("/v1/tenants", r#"["acme"]"#),
        ("/v1/keys", r#"[null, "operator", "x"]"#),
        ("/v1/sessions", "null"),
        ("/v1/tenants", r#"{"name": "acme", "region": "eu"}"#),
        ("/v1/tenants", r#"{"name": 7}"#),
        ("/v1/tenants", "{}"),
        ("/v1/keys", r#"{"role": "operator"}"#),
        (
            "/v1/keys",
            r#"{"role": "operator", "name": "x", "scopes": []}"#,
        ),
        ("/v1/keys", r#"{"role": "superuser", "name": "x"}"#),
        ("/v1/keys", r#"{"role": "Admin", "name": "x"}"#),
        ("/v1/keys", r#"{"role": 1, "name": "x"}"#),
    ];
    for (path, body) in cases {
        let reply = raw_post(&admin, path, json_type, body).await;
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.text);
        reply.expect_error(400, "REQUEST_BODY_INVALID");
    }
    // A body that is not declared JSON.
    let valid = r#"{"workload_class": "coding", "environment": "dev"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for path in ["/v1/sessions", "/v1/tenants", "/v1/keys"] {
            let reply = raw_post(&admin, path, content_type, valid).await;
            reply.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
        }
    }
    // No body at all where one is required.
    let reply = admin.post_empty("/v1/sessions").await;
    reply.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    assert_unchanged(&server, &before, &id).await;
}

async fn oversized_bodies_are_refused(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;
    // Valid JSON just over 1 MiB: a label value would be refused later anyway, but the
    // size check comes first.
    let filler = "x".repeat(1 << 20);
    let body = json!({"workload_class": "coding", "environment": "dev", "labels": {"pad": filler}});
    let reply = admin.post("/v1/sessions", &body).await;
    reply.expect_error(413, "REQUEST_BODY_TOO_LARGE");
    // Also through the idempotency layer, which buffers the body itself.
    let request = admin
        .request(Method::POST, "/v1/sessions")
        .header(cordon_api::IDEMPOTENCY_KEY, "big")
        .json(&body);
    Client::send(request)
        .await
        .expect_error(413, "REQUEST_BODY_TOO_LARGE");
    // And on a transition, whose body is optional.
    let reason = json!({"reason": filler});
    let reply = admin
        .post(&format!("/v1/sessions/{id}/checkpoint"), &reason)
        .await;
    reply.expect_error(413, "REQUEST_BODY_TOO_LARGE");
    assert_unchanged(&server, &before, &id).await;
    // The key was not burnt: it can still be used for a normal request.
    let request = admin
        .request(Method::POST, "/v1/sessions")
        .header(cordon_api::IDEMPOTENCY_KEY, "big")
        .json(&json!({"workload_class": "coding", "environment": "dev"}));
    let reply = Client::send(request).await;
    reply.expect(201);
    assert!(!reply.replayed());
}

async fn invalid_values_are_refused(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;

    let too_many: BTreeMap<String, String> =
        (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let long_value: BTreeMap<&str, String> = [("k", "v".repeat(256))].into_iter().collect();
    let cases = [
        (
            json!({"workload_class": "Coding", "environment": "dev"}),
            "workload_class",
        ),
        (
            json!({"workload_class": "", "environment": "dev"}),
            "workload_class",
        ),
        (
            json!({"workload_class": "-coding", "environment": "dev"}),
            "workload_class",
        ),
        (
            json!({"workload_class": "a".repeat(64), "environment": "dev"}),
            "workload_class",
        ),
        (
            json!({"workload_class": "coding", "environment": "prod env"}),
            "environment",
        ),
        (
            json!({"workload_class": "coding", "environment": "dév"}),
            "environment",
        ),
        (
            json!({"workload_class": "coding", "environment": "dev", "labels": too_many}),
            "labels",
        ),
        (
            json!({"workload_class": "coding", "environment": "dev", "labels": {"": "v"}}),
            "label",
        ),
        (
            json!({"workload_class": "coding", "environment": "dev", "labels": {"a b": "v"}}),
            "a b",
        ),
        (
            json!({"workload_class": "coding", "environment": "dev", "labels": long_value}),
            "`k`",
        ),
        (
            json!({"workload_class": "coding", "environment": "dev", "labels": {"k": "a\nb"}}),
            "`k`",
        ),
    ];
    for (body, named) in cases {
        let reply = admin.post("/v1/sessions", &body).await;
        let message = reply.expect_error(400, "VALIDATION_FAILED");
        assert!(message.contains(named), "{message} should name {named}");
    }
    for (body, named) in [
        (json!({"name": "Acme"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "acme/corp"}), "name"),
    ] {
        let reply = admin.post("/v1/tenants", &body).await;
        let message = reply.expect_error(400, "VALIDATION_FAILED");
        assert!(message.contains(named), "{message}");
    }
    for name in [String::new(), "n".repeat(129), "line\nbreak".to_owned()] {
        let reply = admin
            .post("/v1/keys", &json!({"role": "operator", "name": name}))
            .await;
        let message = reply.expect_error(400, "VALIDATION_FAILED");
        assert!(message.contains("name"), "{message}");
    }
    assert_unchanged(&server, &before, &id).await;

    // At the limits is fine: 64 labels with 255-byte values, a 63-character slug.
    let most: BTreeMap<String, String> = (0..64)
        .map(|i| (format!("k{i}"), "v".repeat(255)))
        .collect();
    let body =
        json!({"workload_class": "a".repeat(63), "environment": "0.dev_x-y", "labels": most});
    let created = admin.post("/v1/sessions", &body).await;
    assert_eq!(created.expect(201)["labels"].as_object().unwrap().len(), 64);
}

async fn bad_transition_bodies_are_refused(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;
    let path = format!("/v1/sessions/{id}/checkpoint");
    let json_type = Some("application/json");
    for body in [
        "{",
        r#"{"reason": 5}"#,
        r#"{"why": "x"}"#,
        r#"{"reason": "x", "force": true}"#,
        "[]",
        r#"["x"]"#,
        "null",
        r#""x""#,
    ] {
        let reply = raw_post(&admin, &path, json_type, body).await;
        reply.expect_error(400, "REQUEST_BODY_INVALID");
    }
    for content_type in [None, Some("text/plain"), Some("application/jsonx")] {
        let reply = raw_post(&admin, &path, content_type, r#"{"reason": "x"}"#).await;
        reply.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }
    for reason in [String::new(), "r".repeat(1025), "new\nline".to_owned()] {
        let reply = admin.post(&path, &json!({"reason": reason})).await;
        let message = reply.expect_error(400, "VALIDATION_FAILED");
        assert!(message.contains("reason"), "{message}");
    }
    assert_unchanged(&server, &before, &id).await;
    // An empty body with a JSON content type, and `{}`, are the same as no body.
    raw_post(&admin, &path, json_type, "").await.expect(200);
    raw_post(
        &admin,
        &format!("/v1/sessions/{id}/resume"),
        json_type,
        "{}",
    )
    .await
    .expect(200);
    let reason = "r".repeat(1024);
    let reply = admin.post(&path, &json!({"reason": reason})).await;
    assert_eq!(reply.expect(200)["phase"], "checkpointed");
    assert_eq!(
        admin.events(&id).await.last().unwrap()["reason"],
        reason.as_str()
    );
}

async fn malformed_and_unknown_ids_are_not_found(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;
    let unknown_session = "ses_00000000000000000000000000000000";
    let mut session_ids = vec![
        "nope".to_owned(),
        "ses_".to_owned(),
        "ses_XYZ".to_owned(),
        // The right shape with the wrong prefix or case.
        id.replacen("ses_", "key_", 1),
        id.to_uppercase(),
        format!("{id}0"),
        unknown_session.to_owned(),
    ];
    session_ids.push("%20".to_owned());
    for bad in &session_ids {
        admin
            .get(&format!("/v1/sessions/{bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
        admin
            .get(&format!("/v1/sessions/{bad}/events"))
            .await
            .expect_error(404, "NOT_FOUND");
        for action in ["activate", "checkpoint", "suspend", "resume", "close"] {
            admin.act(bad, action).await.expect_error(404, "NOT_FOUND");
        }
    }
    for bad in ["nope", "ten_123", "ten_00000000000000000000000000000000"] {
        admin
            .get(&format!("/v1/tenants/{bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    for bad in ["nope", "key_123", "key_00000000000000000000000000000000"] {
        admin
            .delete(&format!("/v1/keys/{bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    // A tenant id in a body or query that does not exist, or is not an id.
    for bad in ["nope", "ten_00000000000000000000000000000000"] {
        let body = json!({"role": "operator", "name": "x", "tenant_id": bad});
        admin
            .post("/v1/keys", &body)
            .await
            .expect_error(404, "NOT_FOUND");
        admin
            .get(&format!("/v1/keys?tenant_id={bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    assert_unchanged(&server, &before, &id).await;
}

async fn bad_queries_are_refused(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let before = snapshot(&server, &id).await;
    let events = format!("/v1/sessions/{id}/events");
    let invalid_queries = [
        "/v1/sessions?bogus=1".to_owned(),
        "/v1/sessions?phase=running".to_owned(),
        "/v1/sessions?phase=Active".to_owned(),
        "/v1/sessions?limit=0".to_owned(),
        "/v1/sessions?limit=1001".to_owned(),
        "/v1/sessions?limit=-1".to_owned(),
        "/v1/sessions?limit=ten".to_owned(),
        "/v1/sessions?limit=99999999999".to_owned(),
        format!("{events}?bogus=1"),
        format!("{events}?limit=0"),
        format!("{events}?limit=1001"),
        format!("{events}?limit=x"),
        "/v1/keys?bogus=1".to_owned(),
        "/v1/keys/key_00000000000000000000000000000000?bogus=1".to_owned(),
    ];
    for path in &invalid_queries {
        let reply = if path.starts_with("/v1/keys/") {
            admin.delete(path).await
        } else {
            admin.get(path).await
        };
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        reply.expect_error(400, "REQUEST_QUERY_INVALID");
    }
    for path in [
        "/v1/sessions?cursor=garbage".to_owned(),
        "/v1/sessions?cursor=ses_123".to_owned(),
        "/v1/sessions?cursor=".to_owned(),
        format!("{events}?cursor=abc"),
        format!("{events}?cursor=-1"),
        format!("{events}?cursor=1.5"),
    ] {
        let reply = admin.get(&path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        reply.expect_error(400, "CURSOR_INVALID");
    }
    // The limits themselves are accepted.
    admin.get("/v1/sessions?limit=1").await.expect(200);
    admin.get("/v1/sessions?limit=1000").await.expect(200);
    admin
        .get(&format!("{events}?limit=1000&cursor=0"))
        .await
        .expect(200);
    assert_unchanged(&server, &before, &id).await;
}

async fn unknown_routes_and_wrong_methods(backend: TestBackend) {
    let (server, id) = server_with_session(backend).await;
    let admin = server.admin();
    let anonymous = server.anonymous();
    let before = snapshot(&server, &id).await;
    for path in [
        "/".to_owned(),
        "/v1".to_owned(),
        "/v2/sessions".to_owned(),
        "/v1/session".to_owned(),
        "/v1/sessions/".to_owned(),
        format!("/v1/sessions/{id}/pause"),
        format!("/v1/sessions/{id}/events/1"),
        "/v1/tenants/x/keys".to_owned(),
    ] {
        for client in [&admin, &anonymous] {
            let reply = client.get(&path).await;
            let message = reply.expect_error(404, "NOT_FOUND");
            assert!(message.starts_with("no route"), "{path}: {message}");
            let reply = client.post(&path, &json!({})).await;
            reply.expect_error(404, "NOT_FOUND");
        }
    }
    let session = format!("/v1/sessions/{id}");
    let activate = format!("/v1/sessions/{id}/activate");
    let events = format!("/v1/sessions/{id}/events");
    let wrong = [
        (Method::DELETE, "/v1/sessions"),
        (Method::PUT, "/v1/sessions"),
        (Method::PATCH, session.as_str()),
        (Method::DELETE, session.as_str()),
        (Method::POST, session.as_str()),
        (Method::GET, activate.as_str()),
        (Method::DELETE, activate.as_str()),
        (Method::POST, events.as_str()),
        (Method::DELETE, "/v1/tenants"),
        (Method::GET, "/v1/keys/key_00000000000000000000000000000000"),
        (Method::POST, "/healthz"),
        (Method::POST, "/metrics"),
        (Method::DELETE, "/v1/openapi.json"),
    ];
    for (method, path) in wrong {
        for client in [&admin, &anonymous] {
            let request = client.request(method.clone(), path).json(&json!({}));
            let reply = Client::send(request).await;
            assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
            let message = reply.expect_error(405, "METHOD_NOT_ALLOWED");
            assert!(message.contains(method.as_str()), "{message}");
        }
    }
    assert_unchanged(&server, &before, &id).await;
}
