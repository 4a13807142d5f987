//! Egress through the API: the tenant's policy, write-only secrets, credential leases,
//! the gateway's decisions and its CA, with each role's limits and tenant isolation.

use std::sync::Arc;

use cordon_control::egress::{StoreEgressEnv, empty_snapshot};
use cordon_control::{Control, ControlOptions, Egress};
use cordon_core::{EgressDecision, ReasonCode, SessionId, TenantId, Timestamp};
use cordon_egress::{EgressCa, Gateway, GatewayConfig, MasterKey};
use cordon_store::Store;
use cordon_test_support::TestBackend;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Reply, TestServer, ids};

backend_tests!(
    policy_starts_empty_and_gets_versions,
    secrets_never_show_their_value,
    secret_input_is_validated,
    leases_issue_renew_and_revoke,
    leases_follow_the_session_and_the_secret,
    roles_limit_egress,
    decisions_are_listed_and_filtered,
    server_without_egress,
);

const VALUE: &str = "ghp_s3cr3t-VALUE-never-shown-0123456789";

/// A server whose control plane runs the egress gateway (no sandboxes).
async fn egress_server(backend: TestBackend) -> TestServer {
    TestServer::start_with(backend, |store: Arc<dyn Store>, options: ControlOptions| {
        let master = Arc::new(MasterKey::from_bytes(&[7; 32]).unwrap());
        let ca = cordon_egress::tls::generate_ca(&master).unwrap();
        let ca = Arc::new(EgressCa::load(&ca, &master).unwrap());
        let env = Arc::new(StoreEgressEnv::new(
            Arc::clone(&store),
            master,
            empty_snapshot(),
        ));
        let gateway = Gateway::new(env.clone(), GatewayConfig::default(), ca).unwrap();
        Control::with_runtimes(store, options, None, Some(Egress { gateway, env }))
    })
    .await
}

async fn put(client: &Client, path: &str, body: &Value) -> Reply {
    Client::send(client.request(Method::PUT, path).json(body)).await
}

/// The message of a denial names the determining policies, sorted, at its end.
#[track_caller]
fn assert_denied_by(reply: &Reply, policies: &[&str]) {
    let message = reply.expect_error(403, "AUTHZ_DENIED");
    let expected = format!("denied by policy {}", policies.join(", "));
    assert!(
        message.ends_with(&expected),
        "`{message}` should end with `{expected}`"
    );
}

fn policy_document() -> Value {
    json!({
        "service_classes": [
            {"name": "github", "hosts": ["api.github.com"], "ports": [443],
             "schemes": ["https"], "methods": ["GET"]}
        ],
        "rules": [
            {"name": "coding-reads-github", "service_classes": ["github"],
             "environments": ["*"], "workload_classes": ["coding"]}
        ]
    })
}

fn secret_request(name: &str) -> Value {
    json!({
        "name": name,
        "service_class": "github",
        "header": "Authorization",
        "format": "Bearer {secret}",
        "value": VALUE,
    })
}

fn micros(value: &Value) -> i64 {
    serde_json::from_value::<Timestamp>(value.clone())
        .unwrap_or_else(|error| panic!("{value} is not a timestamp: {error}"))
        .unix_micros()
}

fn seconds_between(from: &Value, to: &Value) -> f64 {
    (micros(to) - micros(from)) as f64 / 1e6
}

/// A second tenant with its own admin.
async fn other_tenant(server: &TestServer) -> (Client, String) {
    let tenant = server.create_tenant("other").await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (admin, _) = server
        .create_key_as(&server.admin(), "admin", Some(&tenant_id))
        .await;
    (admin, tenant_id)
}

/// An active session of `client`, and its id.
async fn active_session(client: &Client) -> String {
    let session = client.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap().to_owned();
    client.act(&id, "activate").await.expect(200);
    id
}

async fn policy_starts_empty_and_gets_versions(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let initial = admin.get("/v1/egress/policy").await.expect(200).clone();
    assert_eq!(initial["version"], "none", "{initial}");
    assert_eq!(initial["source"], "none");
    assert_eq!(
        initial["policy"],
        json!({"service_classes": [], "rules": []})
    );
    assert!(initial.get("created_at").is_none(), "{initial}");

    // Invalid documents: a rule naming an undefined class, an unknown field, a bad
    // host pattern. Nothing is stored.
    let mut undefined_class = policy_document();
    undefined_class["rules"][0]["service_classes"] = json!(["gitlab"]);
    let reply = put(&admin, "/v1/egress/policy", &undefined_class).await;
    let message = reply.expect_error(400, "EGRESS_POLICY_INVALID");
    assert!(message.contains("gitlab"), "{message}");
    let mut unknown_field = policy_document();
    unknown_field["colour"] = json!("blue");
    let reply = put(&admin, "/v1/egress/policy", &unknown_field).await;
    reply.expect_error(400, "EGRESS_POLICY_INVALID");
    let mut bad_host = policy_document();
    bad_host["service_classes"][0]["hosts"] = json!(["exa mple.com"]);
    let reply = put(&admin, "/v1/egress/policy", &bad_host).await;
    reply.expect_error(400, "EGRESS_POLICY_INVALID");
    let reply = put(&admin, "/v1/egress/policy", &json!(["not", "an", "object"])).await;
    reply.expect_error(400, "REQUEST_BODY_INVALID");
    assert_eq!(admin.get("/v1/egress/policy").await.expect(200), &initial);

    let first = put(&admin, "/v1/egress/policy", &policy_document()).await;
    let first = first.expect(200).clone();
    assert_eq!(first["version"], "tenant/1", "{first}");
    assert_eq!(first["source"], "tenant");
    assert_eq!(first["created_by"], server.admin_key_id.as_str());
    assert!(first["created_at"].is_string());
    // Stored in canonical form: defaults filled in.
    assert_eq!(first["policy"]["rules"][0]["mode"], "enforce", "{first}");
    assert_eq!(
        first["policy"]["service_classes"][0]["hosts"],
        json!(["api.github.com"])
    );
    assert_eq!(admin.get("/v1/egress/policy").await.expect(200), &first);

    let mut second_document = policy_document();
    second_document["rules"][0]["mode"] = json!("report");
    let second = put(&admin, "/v1/egress/policy", &second_document).await;
    let second = second.expect(200).clone();
    assert_eq!(second["version"], "tenant/2");
    assert_eq!(second["policy"]["rules"][0]["mode"], "report");
    assert_eq!(admin.get("/v1/egress/policy").await.expect(200), &second);

    // Another tenant still has none.
    let (other_admin, _) = other_tenant(&server).await;
    let other = other_admin
        .get("/v1/egress/policy")
        .await
        .expect(200)
        .clone();
    assert_eq!(other["version"], "none");
    let third = put(&other_admin, "/v1/egress/policy", &policy_document()).await;
    assert_eq!(third.expect(200)["version"], "tenant/1");
    assert_eq!(
        admin.get("/v1/egress/policy").await.expect(200)["version"],
        "tenant/2"
    );
}

async fn secrets_never_show_their_value(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let reply = admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    assert!(
        !reply.text.contains(VALUE),
        "the value came back: {}",
        reply.text
    );
    let secret = reply.expect(201).clone();
    let id = secret["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sec_"), "{secret}");
    assert_eq!(secret["name"], "github-token");
    assert_eq!(secret["service_class"], "github");
    assert_eq!(secret["header"], "Authorization");
    assert_eq!(secret["format"], "Bearer {secret}");
    assert_eq!(secret["created_by"], server.admin_key_id.as_str());
    assert!(secret["created_at"].is_string());
    assert!(secret.get("value").is_none());

    // The format defaults to the bare value.
    let mut bare = secret_request("npm-token");
    bare.as_object_mut().unwrap().remove("format");
    let bare = admin.post("/v1/secrets", &bare).await;
    assert!(!bare.text.contains(VALUE));
    assert_eq!(bare.expect(201)["format"], "{secret}");

    let list = admin.get("/v1/secrets").await;
    assert!(!list.text.contains(VALUE), "{}", list.text);
    let mut names: Vec<_> = list.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["github-token", "npm-token"]);
    let got = admin.get(&format!("/v1/secrets/{id}")).await;
    assert!(!got.text.contains(VALUE));
    assert_eq!(got.expect(200), &secret);

    // Names are unique in the tenant.
    let clash = admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    assert!(!clash.text.contains(VALUE));
    clash.expect_error(409, "SECRET_NAME_TAKEN");

    // Another tenant sees none of it, and may use the same name.
    let (other_admin, _) = other_tenant(&server).await;
    other_admin
        .get(&format!("/v1/secrets/{id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    other_admin
        .delete(&format!("/v1/secrets/{id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    let other_list = other_admin.get("/v1/secrets").await;
    assert_eq!(other_list.expect(200)["items"], json!([]));
    let theirs = other_admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    assert_ne!(theirs.expect(201)["id"], secret["id"]);

    // Deleted: gone from reads, its name free again.
    let deleted = admin.delete(&format!("/v1/secrets/{id}")).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    admin
        .get(&format!("/v1/secrets/{id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    admin
        .delete(&format!("/v1/secrets/{id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    assert_eq!(
        ids(&admin.get("/v1/secrets").await.expect(200)["items"]).len(),
        1
    );
    let again = admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    assert_ne!(again.expect(201)["id"], secret["id"]);
    for bad in ["nope", "sec_00000000000000000000000000000000"] {
        admin
            .get(&format!("/v1/secrets/{bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
    }
}

async fn secret_input_is_validated(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let cases = [
        ("name", json!("")),
        ("name", json!("has space")),
        ("name", json!("x".repeat(65))),
        ("service_class", json!("git/hub")),
        ("header", json!("Host")),
        ("header", json!("X-Cordon-Reason")),
        ("header", json!("bad header")),
        ("format", json!("Bearer")),
        ("format", json!("{secret} {secret}")),
        ("value", json!("")),
        ("value", json!("line\nbreak")),
    ];
    for (field, value) in cases {
        let mut body = secret_request("valid-name");
        body[field] = value.clone();
        let reply = admin.post("/v1/secrets", &body).await;
        let message = reply.expect_error(400, "VALIDATION_FAILED").to_owned();
        assert!(
            !reply.text.contains(VALUE),
            "{field}={value}: {}",
            reply.text
        );
        if field == "value" {
            assert!(message.contains("`value`"), "{message}");
        }
    }
    let mut unknown = secret_request("valid-name");
    unknown["ttl"] = json!(5);
    admin
        .post("/v1/secrets", &unknown)
        .await
        .expect_error(400, "REQUEST_BODY_INVALID");
    let mut missing = secret_request("valid-name");
    missing.as_object_mut().unwrap().remove("value");
    admin
        .post("/v1/secrets", &missing)
        .await
        .expect_error(400, "REQUEST_BODY_INVALID");
    assert_eq!(
        admin.get("/v1/secrets").await.expect(200)["items"],
        json!([])
    );
}

async fn leases_issue_renew_and_revoke(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let secret = admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    let secret_id = secret.expect(201)["id"].as_str().unwrap().to_owned();
    let session = active_session(&admin).await;
    let leases = format!("/v1/sessions/{session}/leases");

    // By name, with the default TTL of 15 minutes and the 1-hour cap.
    let reply = admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await;
    assert!(!reply.text.contains(VALUE));
    let lease = reply.expect(201).clone();
    let lease_id = lease["id"].as_str().unwrap().to_owned();
    assert!(lease_id.starts_with("lea_"), "{lease}");
    assert_eq!(lease["session_id"], session.as_str());
    assert_eq!(lease["secret_id"], secret_id.as_str());
    assert_eq!(lease["secret_name"], "github-token");
    assert_eq!(lease["issued_by"], server.admin_key_id.as_str());
    assert_eq!(lease["live"], true);
    assert!(lease["revoked_at"].is_null() && lease["revoke_reason"].is_null());
    let ttl = seconds_between(&lease["issued_at"], &lease["expires_at"]);
    assert!((ttl - 900.0).abs() < 1.0, "default TTL {ttl}");
    let cap = seconds_between(&lease["issued_at"], &lease["max_expires_at"]);
    assert!((cap - 3600.0).abs() < 1.0, "cap {cap}");

    // By id, with a TTL; TTLs of zero or above the cap are refused.
    let by_id = admin
        .post(&leases, &json!({"secret": secret_id, "ttl_seconds": 60}))
        .await;
    let by_id = by_id.expect(201).clone();
    let ttl = seconds_between(&by_id["issued_at"], &by_id["expires_at"]);
    assert!((ttl - 60.0).abs() < 1.0, "{ttl}");
    for ttl in [0, 3601, u64::MAX] {
        let reply = admin
            .post(
                &leases,
                &json!({"secret": "github-token", "ttl_seconds": ttl}),
            )
            .await;
        reply.expect_error(400, "LEASE_TTL_INVALID");
    }
    let full = admin
        .post(
            &leases,
            &json!({"secret": "github-token", "ttl_seconds": 3600}),
        )
        .await;
    full.expect(201);
    for unknown in ["gitlab-token", "sec_00000000000000000000000000000000"] {
        let reply = admin.post(&leases, &json!({"secret": unknown})).await;
        reply.expect_error(404, "NOT_FOUND");
    }
    admin
        .post(
            &leases,
            &json!({"secret": "github-token", "ttl_seconds": -5}),
        )
        .await
        .expect_error(400, "REQUEST_BODY_INVALID");

    let list = admin.get(&leases).await;
    let items = list.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert!(items.iter().any(|item| item == &lease), "{items:?}");

    // Renew: from now, capped at max_expires_at; with no body, the default TTL.
    let renew = format!("{leases}/{lease_id}/renew");
    let renewed = admin.post(&renew, &json!({"ttl_seconds": 120})).await;
    let renewed = renewed.expect(200).clone();
    let now = serde_json::to_value(Timestamp::now()).unwrap();
    let left = seconds_between(&now, &renewed["expires_at"]);
    assert!((left - 120.0).abs() < 2.0, "{left}");
    assert_eq!(renewed["max_expires_at"], lease["max_expires_at"]);
    let renewed = admin.post_empty(&renew).await.expect(200).clone();
    let left = seconds_between(&now, &renewed["expires_at"]);
    assert!((left - 900.0).abs() < 2.0, "{left}");
    let capped = admin.post(&renew, &json!({"ttl_seconds": 3600})).await;
    assert_eq!(capped.expect(200)["expires_at"], lease["max_expires_at"]);
    admin
        .post(&renew, &json!({"ttl_seconds": 0}))
        .await
        .expect_error(400, "LEASE_TTL_INVALID");

    // Revoke: not live, not renewable; revoking again keeps the first revocation.
    let revoked = admin.delete(&format!("{leases}/{lease_id}")).await;
    let revoked = revoked.expect(200).clone();
    assert_eq!(revoked["live"], false);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        revoked["revoke_reason"],
        format!("revoked by {}", server.admin_key_id)
    );
    admin
        .post(&renew, &json!({}))
        .await
        .expect_error(409, "LEASE_NOT_RENEWABLE");
    let again = admin.delete(&format!("{leases}/{lease_id}")).await;
    assert_eq!(again.expect(200)["revoked_at"], revoked["revoked_at"]);

    // Leases are addressed through their own session only.
    let other_session = active_session(&admin).await;
    admin
        .delete(&format!("/v1/sessions/{other_session}/leases/{lease_id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    admin
        .post_empty(&format!(
            "/v1/sessions/{other_session}/leases/{lease_id}/renew"
        ))
        .await
        .expect_error(404, "NOT_FOUND");
    assert_eq!(
        admin
            .get(&format!("/v1/sessions/{other_session}/leases"))
            .await
            .expect(200)["items"],
        json!([])
    );
    for bad in ["nope", "lea_00000000000000000000000000000000"] {
        admin
            .delete(&format!("{leases}/{bad}"))
            .await
            .expect_error(404, "NOT_FOUND");
    }

    // Another tenant's session is not found, whatever the secret.
    let (other_admin, _) = other_tenant(&server).await;
    other_admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await
        .expect(201);
    let reply = other_admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await;
    reply.expect_error(404, "NOT_FOUND");
    other_admin
        .get(&leases)
        .await
        .expect_error(404, "NOT_FOUND");
    other_admin
        .delete(&format!("{leases}/{lease_id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    // Nor can a session borrow another tenant's secret.
    let theirs = active_session(&other_admin).await;
    let reply = other_admin
        .post(
            &format!("/v1/sessions/{theirs}/leases"),
            &json!({"secret": secret_id}),
        )
        .await;
    reply.expect_error(404, "NOT_FOUND");
}

async fn leases_follow_the_session_and_the_secret(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await
        .expect(201);
    let doomed = admin.post("/v1/secrets", &secret_request("doomed")).await;
    let doomed_id = doomed.expect(201)["id"].as_str().unwrap().to_owned();

    // A session that is only created may be lent a secret already.
    let created = admin.create_session("coding", "dev").await;
    let created = created["id"].as_str().unwrap();
    admin
        .post(
            &format!("/v1/sessions/{created}/leases"),
            &json!({"secret": "github-token"}),
        )
        .await
        .expect(201);

    // Deleting a secret revokes its leases, and it cannot be lent any more.
    let session = active_session(&admin).await;
    let leases = format!("/v1/sessions/{session}/leases");
    let lease = admin.post(&leases, &json!({"secret": "doomed"})).await;
    let lease_id = lease.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin
            .delete(&format!("/v1/secrets/{doomed_id}"))
            .await
            .status,
        204
    );
    let list = admin.get(&leases).await.expect(200).clone();
    let item = &list["items"][0];
    assert_eq!(item["id"], lease_id.as_str());
    assert_eq!(item["live"], false, "{item}");
    assert_eq!(item["secret_name"], "doomed");
    admin
        .post(&leases, &json!({"secret": doomed_id}))
        .await
        .expect_error(404, "NOT_FOUND");
    admin
        .post_empty(&format!("{leases}/{lease_id}/renew"))
        .await
        .expect_error(409, "LEASE_NOT_RENEWABLE");

    // Suspending revokes the session's leases; a suspended or closed session gets none.
    let live = admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await;
    live.expect(201);
    admin.act(&session, "suspend").await.expect(200);
    let list = admin.get(&leases).await.expect(200).clone();
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["live"], false, "{item}");
        assert!(item["revoked_at"].is_string(), "{item}");
    }
    admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await
        .expect_error(409, "SESSION_NOT_ACTIVE");
    admin.act(&session, "resume").await.expect(200);
    admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await
        .expect(201);
    admin.act(&session, "close").await.expect(200);
    admin
        .post(&leases, &json!({"secret": "github-token"}))
        .await
        .expect_error(409, "SESSION_NOT_ACTIVE");
    let list = admin.get(&leases).await.expect(200).clone();
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["live"] == false),
        "{list}"
    );
}

async fn roles_limit_egress(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let (tenant_admin, _) = server.create_key("admin").await;
    let (operator, _) = server.create_key("operator").await;
    let (agent, _) = server.create_key("agent").await;
    let (auditor, _) = server.create_key("auditor").await;
    put(&tenant_admin, "/v1/egress/policy", &policy_document())
        .await
        .expect(200);
    tenant_admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await
        .expect(201);

    // Only admins manage the policy and secrets.
    for (client, extra) in [
        (&operator, None),
        (&agent, None),
        (&auditor, Some("auditor-read-only")),
    ] {
        let mut expected: Vec<&str> = extra.into_iter().collect();
        expected.push("only-admins-manage-egress");
        let reply = client.post("/v1/secrets", &secret_request("mine")).await;
        assert!(!reply.text.contains(VALUE));
        assert_denied_by(&reply, &expected);
        let reply = put(client, "/v1/egress/policy", &policy_document()).await;
        assert_denied_by(&reply, &expected);
        let reply = client
            .delete("/v1/secrets/sec_00000000000000000000000000000000")
            .await;
        assert_denied_by(&reply, &expected);
    }

    // Agents see no secrets, policy or decisions, and cannot lease, even to their own
    // sessions; they may list their own sessions' leases.
    for path in ["/v1/secrets", "/v1/egress/policy", "/v1/egress/decisions"] {
        assert_denied_by(&agent.get(path).await, &["agent-no-secret-access"]);
    }
    let own = active_session(&agent).await;
    let reply = agent
        .post(
            &format!("/v1/sessions/{own}/leases"),
            &json!({"secret": "github-token"}),
        )
        .await;
    assert_denied_by(&reply, &["agents-cannot-lease"]);
    let lease = operator
        .post(
            &format!("/v1/sessions/{own}/leases"),
            &json!({"secret": "github-token"}),
        )
        .await;
    let lease_id = lease.expect(201)["id"].as_str().unwrap().to_owned();
    let list = agent.get(&format!("/v1/sessions/{own}/leases")).await;
    assert_eq!(ids(&list.expect(200)["items"]), [lease_id.as_str()]);
    let reply = agent
        .post_empty(&format!("/v1/sessions/{own}/leases/{lease_id}/renew"))
        .await;
    assert_denied_by(&reply, &["agents-cannot-lease"]);
    let reply = agent
        .delete(&format!("/v1/sessions/{own}/leases/{lease_id}"))
        .await;
    assert_denied_by(&reply, &["agents-cannot-lease"]);
    let others = active_session(&admin).await;
    let reply = agent.get(&format!("/v1/sessions/{others}/leases")).await;
    assert_denied_by(&reply, &["agent-own-sessions-only"]);

    // Auditors read everything, write nothing.
    for path in ["/v1/secrets", "/v1/egress/policy", "/v1/egress/decisions"] {
        auditor.get(path).await.expect(200);
    }
    assert_eq!(
        auditor.get("/v1/egress/policy").await.expect(200)["version"],
        "tenant/1"
    );
    auditor
        .get(&format!("/v1/sessions/{own}/leases"))
        .await
        .expect(200);
    let reply = auditor
        .post(
            &format!("/v1/sessions/{own}/leases"),
            &json!({"secret": "github-token"}),
        )
        .await;
    assert_denied_by(&reply, &["auditor-read-only"]);
    let reply = auditor
        .delete(&format!("/v1/sessions/{own}/leases/{lease_id}"))
        .await;
    assert_denied_by(&reply, &["auditor-read-only"]);

    // Operators lease and revoke on any session of the tenant; admins too.
    operator
        .post_empty(&format!("/v1/sessions/{own}/leases/{lease_id}/renew"))
        .await
        .expect(200);
    tenant_admin
        .delete(&format!("/v1/sessions/{own}/leases/{lease_id}"))
        .await
        .expect(200);
    // The CA is for any authenticated caller.
    for client in [&agent, &auditor, &operator] {
        client.get("/v1/egress/ca").await.expect(200);
    }
    server
        .anonymous()
        .get("/v1/egress/ca")
        .await
        .expect_error(401, "AUTHN_MISSING_CREDENTIALS");
}

fn decision(
    tenant_id: TenantId,
    session_id: SessionId,
    host: &str,
    reason: ReasonCode,
) -> EgressDecision {
    EgressDecision {
        seq: 0,
        tenant_id,
        session_id,
        at: Timestamp::now(),
        kind: "http".into(),
        host: host.into(),
        port: 80,
        address: Some("93.184.215.14".into()),
        method: Some("GET".into()),
        path: Some("/".into()),
        reason,
        mode: "enforce".into(),
        service_class: None,
        rule: None,
        policy_version: "none".into(),
        credential: None,
        status: None,
        bytes_sent: 0,
        bytes_received: 0,
        duration_micros: 1500,
    }
}

async fn decisions_are_listed_and_filtered(backend: TestBackend) {
    let server = egress_server(backend).await;
    let admin = server.admin();
    let empty = admin.get("/v1/egress/decisions").await.expect(200).clone();
    assert_eq!(empty, json!({"decisions": [], "next": null}));
    for query in [
        "reason=BOGUS",
        "reason=egress_allowed",
        "session=nope",
        "limit=0",
        "limit=1001",
        "after=x",
        "colour=blue",
    ] {
        admin
            .get(&format!("/v1/egress/decisions?{query}"))
            .await
            .expect_error(400, "REQUEST_QUERY_INVALID");
    }
    admin
        .get("/v1/egress/decisions?after=-1")
        .await
        .expect_error(400, "CURSOR_INVALID");

    // Recorded by the gateway in real use; written here behind the API's back.
    let tenant_id: TenantId = server.default_tenant_id().await.parse().unwrap();
    let first: SessionId = active_session(&admin).await.parse().unwrap();
    let second: SessionId = active_session(&admin).await.parse().unwrap();
    let (other_admin, other_tenant_id) = other_tenant(&server).await;
    let theirs: SessionId = active_session(&other_admin).await.parse().unwrap();
    server
        .store
        .append_egress_decisions(&[
            decision(
                tenant_id,
                first,
                "a.example",
                ReasonCode::EgressDestinationNotAllowed,
            ),
            decision(tenant_id, second, "b.example", ReasonCode::EgressAllowed),
            decision(
                other_tenant_id.parse().unwrap(),
                theirs,
                "c.example",
                ReasonCode::EgressAllowed,
            ),
            decision(tenant_id, first, "d.example", ReasonCode::EgressAllowed),
        ])
        .await
        .unwrap();

    let all = admin.get("/v1/egress/decisions").await.expect(200).clone();
    let hosts = |page: &Value| -> Vec<String> {
        page["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["host"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(hosts(&all), ["a.example", "b.example", "d.example"]);
    assert!(all["next"].is_null());
    let one = &all["decisions"][0];
    assert_eq!(one["reason"], "EGRESS_DESTINATION_NOT_ALLOWED");
    assert_eq!(one["session_id"], first.to_string());
    assert_eq!(one["tenant_id"], tenant_id.to_string());
    assert_eq!(one["kind"], "http");
    assert_eq!(one["port"], 80);
    assert_eq!(one["address"], "93.184.215.14");
    assert_eq!(one["method"], "GET");
    assert_eq!(one["mode"], "enforce");
    assert_eq!(one["duration_micros"], 1500);
    assert!(one["service_class"].is_null() && one["status"].is_null());
    micros(&one["at"]);

    let page = admin
        .get("/v1/egress/decisions?limit=2")
        .await
        .expect(200)
        .clone();
    assert_eq!(hosts(&page), ["a.example", "b.example"]);
    let next = page["next"].as_i64().expect("a next seq");
    let rest = admin
        .get(&format!("/v1/egress/decisions?limit=2&after={next}"))
        .await
        .expect(200)
        .clone();
    assert_eq!(hosts(&rest), ["d.example"]);
    assert!(rest["next"].is_null());

    let by_session = admin
        .get(&format!("/v1/egress/decisions?session={first}"))
        .await;
    assert_eq!(hosts(by_session.expect(200)), ["a.example", "d.example"]);
    let by_reason = admin
        .get("/v1/egress/decisions?reason=EGRESS_ALLOWED")
        .await;
    assert_eq!(hosts(by_reason.expect(200)), ["b.example", "d.example"]);
    let mine_elsewhere = other_admin
        .get(&format!("/v1/egress/decisions?session={first}"))
        .await;
    assert_eq!(mine_elsewhere.expect(200)["decisions"], json!([]));
    let theirs_only = other_admin.get("/v1/egress/decisions").await;
    assert_eq!(hosts(theirs_only.expect(200)), ["c.example"]);
}

async fn server_without_egress(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let reply = admin
        .post("/v1/secrets", &secret_request("github-token"))
        .await;
    let message = reply.expect_error(503, "SANDBOX_UNAVAILABLE");
    assert!(message.contains("egress is not enabled"), "{message}");
    assert!(!reply.text.contains(VALUE));
    admin
        .get("/v1/egress/ca")
        .await
        .expect_error(503, "SANDBOX_UNAVAILABLE");
    // The rest works on the store alone.
    let policy = admin.get("/v1/egress/policy").await;
    assert_eq!(policy.expect(200)["version"], "none");
    let stored = put(&admin, "/v1/egress/policy", &policy_document()).await;
    assert_eq!(stored.expect(200)["version"], "tenant/1");
    assert_eq!(
        admin.get("/v1/secrets").await.expect(200)["items"],
        json!([])
    );
    admin.get("/v1/egress/decisions").await.expect(200);

    // With egress: the CA as PEM text.
    let server = egress_server(backend).await;
    let reply = server.admin().get("/v1/egress/ca").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.text.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        reply.text
    );
}
