//! The harness: a real Cordon API server per test, on a throwaway store of either
//! backend, and a small JSON client for it.
//!
//! Each area file writes its scenarios as `async fn name(backend: TestBackend)` and lists
//! them in `backend_tests!`, which generates `name::sqlite` and `name::postgres`.

use std::sync::Arc;
use std::time::Duration;

use cordon_api::{ApiOptions, AppState, BootstrapOutcome};
use cordon_control::{Control, ControlOptions};
use cordon_policy::PolicyEngine;
use cordon_store::Store;
use cordon_test_support::{TestBackend, TestStore, test_store};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

/// Generates, for each scenario `name`, a module `name` with one test per backend.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(cordon_test_support::TestBackend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(cordon_test_support::TestBackend::Postgres).await;
                }
            }
        )+
    };
}

mod auth;
mod bad_input;
mod concurrency;
mod deploy_files;
mod egress;
mod idempotency;
mod lifecycle;
mod listing;
mod openapi;
mod sandbox;
mod system;

/// The system admin token every test server is bootstrapped with.
pub const BOOTSTRAP_TOKEN: &str =
    "cordon_0000000000000000000000000000000000000000000000000000000000test";

/// `/metrics` sets the process-wide `cordon_sessions` gauge from its own store before
/// rendering; tests that scrape hold this so that two servers' scrapes do not interleave.
pub static METRICS_SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running API server on a loopback port with its own empty (but bootstrapped) store.
pub struct TestServer {
    pub base: String,
    pub store: Arc<dyn Store>,
    /// The id of the bootstrap system admin key.
    pub admin_key_id: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    // Last: the store's directory or database outlives every handle above.
    _test_store: TestStore,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(backend: TestBackend) -> TestServer {
        Self::start_with(backend, Control::new).await
    }

    /// A server whose `Control` is built by `control` (for example with runtimes).
    pub async fn start_with(
        backend: TestBackend,
        control: impl FnOnce(Arc<dyn Store>, ControlOptions) -> Control,
    ) -> TestServer {
        let test_store = test_store(backend).await;
        let store = Arc::clone(&test_store.store);
        let admin_key_id = match cordon_api::bootstrap(store.as_ref(), BOOTSTRAP_TOKEN).await {
            Ok(BootstrapOutcome::Created { key_id }) => key_id.to_string(),
            other => panic!("bootstrap of an empty store: {other:?}"),
        };
        let control = control(
            Arc::clone(&store),
            ControlOptions {
                node_id: "test-node".into(),
                lease_ttl: Duration::from_secs(30),
            },
        );
        let policy = Arc::new(PolicyEngine::with_default_policies().expect("default policies"));
        let state = AppState::new(control, policy, ApiOptions::default());
        let router = cordon_api::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                panic!("server failed: {error}");
            }
        });
        // reqwest is built with `rustls-no-provider` in this workspace (the S3 blob store
        // keeps TLS on ring): a client needs a process-wide provider first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        TestServer {
            base: format!("http://{addr}"),
            store,
            admin_key_id,
            http,
            task,
            _test_store: test_store,
        }
    }

    /// The bootstrap system admin.
    pub fn admin(&self) -> Client {
        self.client_with(BOOTSTRAP_TOKEN)
    }

    pub fn client_with(&self, token: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// A client that sends no `Authorization` header.
    pub fn anonymous(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            token: None,
        }
    }

    /// A new key with `role` in the default tenant, created by the system admin: its
    /// client and its creation body (with `id` and `token`).
    pub async fn create_key(&self, role: &str) -> (Client, Value) {
        self.create_key_as(&self.admin(), role, None).await
    }

    /// A new key created by `creator`, in `tenant_id` or the creator's own tenant.
    pub async fn create_key_as(
        &self,
        creator: &Client,
        role: &str,
        tenant_id: Option<&str>,
    ) -> (Client, Value) {
        let mut body = json!({"role": role, "name": format!("test {role}")});
        if let Some(tenant_id) = tenant_id {
            body["tenant_id"] = json!(tenant_id);
        }
        let reply = creator.post("/v1/keys", &body).await;
        let key = reply.expect(201).clone();
        assert_eq!(key["role"], role);
        let token = key["token"].as_str().expect("token").to_owned();
        (self.client_with(&token), key)
    }

    /// A new tenant created by the system admin.
    pub async fn create_tenant(&self, name: &str) -> Value {
        let reply = self
            .admin()
            .post("/v1/tenants", &json!({"name": name}))
            .await;
        let tenant = reply.expect(201).clone();
        assert_eq!(tenant["name"], name);
        tenant
    }

    /// The id of the bootstrap tenant `default`.
    pub async fn default_tenant_id(&self) -> String {
        let tenants = self.admin().get("/v1/tenants").await;
        tenants.expect(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|tenant| tenant["name"] == "default")
            .and_then(|tenant| tenant["id"].as_str())
            .expect("the default tenant")
            .to_owned()
    }

    /// Sessions in the store, over all tenants, read behind the API's back.
    pub async fn session_count(&self) -> u64 {
        let counts = self
            .store
            .count_sessions_by_phase()
            .await
            .expect("count sessions");
        counts.iter().map(|(_, count)| count).sum()
    }

    /// Tenants in the store.
    pub async fn tenant_count(&self) -> usize {
        self.store.list_tenants().await.expect("list tenants").len()
    }
}

/// A JSON client for a test server, with or without a bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A request to `path` (which may carry a query string), authenticated if this
    /// client has a token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn send(builder: RequestBuilder) -> Reply {
        let response = builder.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Reply {
            status,
            headers,
            text,
            json,
        };
        // Every response, success or error, carries its request id.
        assert!(
            reply
                .header(cordon_api::REQUEST_ID_HEADER)
                .is_some_and(|id| !id.is_empty()),
            "response without x-request-id: {reply:?}"
        );
        reply
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::send(self.request(Method::POST, path).json(body)).await
    }

    /// A POST without any body.
    pub async fn post_empty(&self, path: &str) -> Reply {
        Self::send(self.request(Method::POST, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        Self::send(self.request(Method::DELETE, path)).await
    }

    /// Creates a session and returns its body.
    pub async fn create_session(&self, workload_class: &str, environment: &str) -> Value {
        let body = json!({"workload_class": workload_class, "environment": environment});
        let reply = self.post("/v1/sessions", &body).await;
        let session = reply.expect(201).clone();
        assert_eq!(session["phase"], "created");
        assert_eq!(session["version"], 1);
        session
    }

    /// Takes a lifecycle action (`activate`, ...) on a session, without a body.
    pub async fn act(&self, session_id: &str, action: &str) -> Reply {
        self.post_empty(&format!("/v1/sessions/{session_id}/{action}"))
            .await
    }

    /// The session as the API shows it now.
    pub async fn session(&self, session_id: &str) -> Value {
        self.get(&format!("/v1/sessions/{session_id}"))
            .await
            .expect(200)
            .clone()
    }

    /// The session's whole event log (one page of up to 1000).
    pub async fn events(&self, session_id: &str) -> Vec<Value> {
        let reply = self
            .get(&format!("/v1/sessions/{session_id}/events?limit=1000"))
            .await;
        let page = reply.expect(200);
        assert!(page.get("next_cursor").is_none(), "{page}");
        page["items"].as_array().expect("items").clone()
    }

    /// Ids of the sessions a plain `GET /v1/sessions` lists (one page of up to 1000).
    pub async fn session_ids(&self, query: &str) -> Vec<String> {
        let reply = self.get(&format!("/v1/sessions?limit=1000{query}")).await;
        ids(&reply.expect(200)["items"])
    }
}

/// The `id` of every item in a JSON array.
pub fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// A response: status, headers and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn request_id(&self) -> &str {
        self.header(cordon_api::REQUEST_ID_HEADER)
            .expect("x-request-id")
    }

    /// Whether this is a replay of a recorded idempotent response.
    pub fn replayed(&self) -> bool {
        self.header(cordon_api::IDEMPOTENT_REPLAYED) == Some("true")
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status}, got {} with body {}",
            self.status, self.text
        );
        &self.json
    }

    /// Asserts an error response: its status, its `error.code`, that `error.request_id`
    /// is the `x-request-id` header, and that it has a message, which it returns.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &str {
        assert_eq!(
            (self.status, self.json["error"]["code"].as_str()),
            (status, Some(code)),
            "unexpected answer: {} {}",
            self.status,
            self.text
        );
        assert_eq!(
            self.json["error"]["request_id"].as_str(),
            Some(self.request_id()),
            "error.request_id differs from x-request-id: {}",
            self.text
        );
        let message = self.json["error"]["message"]
            .as_str()
            .expect("error.message");
        assert!(!message.is_empty(), "empty error message");
        message
    }
}
