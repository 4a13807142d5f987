//! The OpenAPI document and the router agree: every required route is documented, every
//! documented operation is routed, and no route bypasses `utoipa_axum::routes!`.

use std::path::{Path, PathBuf};

use cordon_test_support::TestBackend;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, METRICS_SCRAPE, Reply, TestServer};

backend_tests!(
    document_lists_every_required_route,
    every_documented_operation_is_routed
);

/// The routes the API v1 must have, as (method, path) in the document's spelling.
const REQUIRED: &[(&str, &str)] = &[
    ("get", "/v1/metrics/sre"),
    ("get", "/v1/metrics/slo"),
    ("get", "/v1/reports/weekly"),
    ("get", "/ui"),
    ("post", "/v1/workflows"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("post", "/v1/runs/{id}/steps/{step}"),
    ("get", "/v1/dlq"),
    ("post", "/v1/dlq/{id}/redrive"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{id}"),
    ("post", "/v1/keys"),
    ("get", "/v1/keys"),
    ("delete", "/v1/keys/{id}"),
    ("post", "/v1/sessions"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/activate"),
    ("post", "/v1/sessions/{id}/checkpoint"),
    ("post", "/v1/sessions/{id}/suspend"),
    ("post", "/v1/sessions/{id}/resume"),
    ("post", "/v1/sessions/{id}/close"),
    ("get", "/v1/sessions/{id}/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
];

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(server: &TestServer) -> Value {
    let reply = server.anonymous().get("/v1/openapi.json").await;
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    reply.expect(200).clone()
}

/// Every (method, path) the document describes.
fn operations(document: &Value) -> Vec<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("a path item") {
            if HTTP_METHODS.contains(&method.as_str()) {
                operations.push((method.clone(), path.clone()));
            }
        }
    }
    operations
}

async fn document_lists_every_required_route(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let document = document(&server).await;
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(document["info"]["title"], "Cordon API");
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());

    let operations = operations(&document);
    for (method, path) in REQUIRED {
        assert!(
            operations.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not documented; documented: {operations:?}"
        );
    }
    for (method, path) in &operations {
        let operation = &document["paths"][path][method];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            !responses.is_empty(),
            "{method} {path} documents no response"
        );
        // Public system routes opt out of the bearer requirement; the rest inherit it.
        let public = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/openapi.json",
            "/ui",
            "/ui/",
            "/ui/{file}",
        ]
        .contains(&path.as_str());
        if public {
            assert_eq!(operation["security"], json!([{}]), "{method} {path}");
        } else {
            assert!(operation.get("security").is_none(), "{method} {path}");
            assert!(
                responses.contains_key("401"),
                "{method} {path} documents no 401"
            );
        }
    }
    assert_eq!(document["security"], json!([{"bearer": []}]));
}

/// Whether `reply` is the router's own "there is no such route" or "not this method".
fn unrouted(reply: &Reply) -> bool {
    let no_route = reply.status == 404
        && reply.json["error"]["code"] == "NOT_FOUND"
        && reply.json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("no route"));
    no_route || reply.status == 405
}

async fn call(client: &Client, method: &str, path: &str) -> Reply {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
    let filled = path
        .replace("{id}", "made_up_id_0")
        .replace("{pid}", "1")
        .replace("{vid}", "ver_made_up_0")
        .replace("{index}", "0")
        .replace("{reference}", "some-workflow")
        .replace("{step}", "some-step")
        .replace("{path}", "some/file.txt")
        .replace("{seq}", "1")
        .replace("{file}", "app.js");
    assert!(!filled.contains('{'), "unfilled path parameter in {path}");
    let request = client.request(method.clone(), &filled);
    let request = if method == Method::POST {
        request.json(&json!({}))
    } else {
        request
    };
    if filled == "/metrics" {
        let _guard = METRICS_SCRAPE.lock().await;
        Client::send(request).await
    } else {
        Client::send(request).await
    }
}

async fn every_documented_operation_is_routed(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let operations = operations(&document(&server).await);
    assert!(operations.len() >= REQUIRED.len());
    let admin = server.admin();
    let anonymous = server.anonymous();
    for (method, path) in &operations {
        for client in [&admin, &anonymous] {
            let reply = call(client, method, path).await;
            assert!(
                !unrouted(&reply),
                "{method} {path} is documented but not routed: {reply:?}"
            );
        }
    }
    // The check can fail: a route that is not in the document is unrouted.
    let reply = call(&admin, "get", "/v1/sessions/{id}/undocumented").await;
    assert!(unrouted(&reply), "{reply:?}");
    let reply = call(&admin, "put", "/v1/sessions").await;
    assert!(unrouted(&reply), "{reply:?}");
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// A route added with plain axum `.route(` would be served but missing from the
/// document; every route must go through `utoipa_axum::routes!`.
#[test]
fn no_route_bypasses_the_openapi_router() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    let mut offenders = Vec::new();
    let mut registrations = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file");
        registrations += text.matches("routes!(").count();
        for (number, line) in text.lines().enumerate() {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.contains(".route(") || compact.contains("::route(") {
                offenders.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        registrations > 0,
        "no routes! call found: is the scan looking in the right place?"
    );
    assert!(
        offenders.is_empty(),
        "routes outside utoipa_axum::routes!:\n{}",
        offenders.join("\n")
    );
}
