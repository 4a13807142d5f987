//! Health, readiness, Prometheus metrics and request ids.

use cordon_test_support::TestBackend;
use reqwest::Method;
use serde_json::json;

use super::{Client, METRICS_SCRAPE, TestServer};

backend_tests!(health_and_readiness, metrics_reflect_the_store, request_ids);

async fn health_and_readiness(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    for client in [
        server.anonymous(),
        server.admin(),
        server.client_with("garbage"),
    ] {
        for path in ["/healthz", "/readyz"] {
            let reply = client.get(path).await;
            assert_eq!(reply.expect(200), &json!({"status": "ok"}), "{path}");
        }
    }
}

/// The value of the sample whose line starts with `series` (name and labels as
/// rendered), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(label, value)| line.contains(&format!("{label}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(client: &Client) -> String {
    let _guard = METRICS_SCRAPE.lock().await;
    let reply = client.get("/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    reply.text
}

async fn metrics_reflect_the_store(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let anonymous = server.anonymous();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let session = admin.create_session("coding", "dev").await;
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..3] {
        admin.act(id, "activate").await.expect(200);
    }
    admin.act(&ids[2], "checkpoint").await.expect(200);
    admin
        .act(&ids[3], "suspend")
        .await
        .expect_error(409, "SESSION_INVALID_TRANSITION");

    let text = scrape(&anonymous).await;
    let phases = |text: &str| {
        ["created", "active", "checkpointed", "suspended", "closed"]
            .map(|phase| sample(text, "cordon_sessions", &[("phase", phase)]))
    };
    assert_eq!(
        phases(&text),
        [Some(1.0), Some(2.0), Some(1.0), Some(0.0), Some(0.0)],
        "{text}"
    );
    for (name, labels) in [
        (
            "cordon_http_requests_total",
            &[
                ("route", "/v1/sessions"),
                ("method", "POST"),
                ("status", "201"),
            ][..],
        ),
        (
            "cordon_http_requests_total",
            &[("route", "/v1/sessions/{id}/activate"), ("status", "200")],
        ),
        (
            "cordon_session_transitions_total",
            &[("action", "activate"), ("to", "active")],
        ),
        (
            "cordon_session_transitions_total",
            &[("action", "checkpoint"), ("to", "checkpointed")],
        ),
        (
            "cordon_session_transition_refusals_total",
            &[
                ("action", "suspend"),
                ("code", "SESSION_INVALID_TRANSITION"),
            ],
        ),
        (
            "cordon_http_request_duration_seconds_count",
            &[("route", "/v1/sessions")],
        ),
    ] {
        let value = sample(&text, name, labels);
        assert!(
            value.is_some_and(|value| value >= 1.0),
            "{name} {labels:?} in\n{text}"
        );
    }

    // The gauge follows the store.
    admin.act(&ids[0], "close").await.expect(200);
    admin.act(&ids[1], "suspend").await.expect(200);
    let text = scrape(&anonymous).await;
    assert_eq!(
        phases(&text),
        [Some(1.0), Some(0.0), Some(1.0), Some(1.0), Some(1.0)],
        "{text}"
    );
    assert!(
        sample(
            &text,
            "cordon_session_transitions_total",
            &[("action", "close"), ("to", "closed")]
        )
        .is_some()
    );
    // Unmatched requests are counted under one label, not their path.
    anonymous
        .get("/no/such/route/here")
        .await
        .expect_error(404, "NOT_FOUND");
    let text = scrape(&anonymous).await;
    assert!(
        sample(
            &text,
            "cordon_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        )
        .is_some()
    );
    assert!(!text.contains("/no/such/route/here"));
}

async fn request_ids(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let anonymous = server.anonymous();
    // Fresh ids are unique (every reply is checked for the header by the harness).
    let first = admin.get("/v1/sessions").await;
    let second = admin.get("/v1/sessions").await;
    assert_ne!(first.request_id(), second.request_id());
    assert!(
        first.request_id().starts_with("req_"),
        "{}",
        first.request_id()
    );

    // A plain incoming id is kept, on successes and on errors of every layer.
    let requests = [
        anonymous.request(Method::GET, "/healthz"),
        admin.request(Method::GET, "/v1/sessions"),
        anonymous.request(Method::GET, "/v1/sessions"),
        admin.request(Method::GET, "/v1/nothing"),
        admin.request(Method::DELETE, "/v1/sessions"),
        admin.request(Method::GET, "/v1/sessions?bogus=1"),
        admin
            .request(Method::POST, "/v1/sessions")
            .json(&json!({"x": 1})),
    ];
    for (index, request) in requests.into_iter().enumerate() {
        let id = format!("client-{index}.trace:42_x");
        let reply = Client::send(request.header("x-request-id", &id)).await;
        assert_eq!(reply.request_id(), id);
        if reply.status >= 400 {
            assert_eq!(reply.json["error"]["request_id"], id.as_str());
        }
    }
    // An unsafe or oversized incoming id is replaced.
    for id in ["has space", "semi;colon", &"x".repeat(129)] {
        let request = anonymous
            .request(Method::GET, "/v1/sessions")
            .header("x-request-id", id);
        let reply = Client::send(request).await;
        reply.expect_error(401, "AUTHN_MISSING_CREDENTIALS");
        assert_ne!(reply.request_id(), id);
        assert!(reply.request_id().starts_with("req_"));
    }
}
