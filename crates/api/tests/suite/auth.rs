//! Authentication, authorization by role, and tenant isolation.

use cordon_test_support::TestBackend;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::{Client, TestServer, ids};

backend_tests!(
    missing_and_invalid_credentials,
    revoked_key_stops_working_at_once,
    only_the_system_admin_manages_tenants,
    only_admins_manage_keys,
    tenant_admins_cannot_revoke_the_system_key,
    auditors_only_read,
    agents_only_touch_their_own_sessions,
    tenants_are_isolated,
);

/// The message of a denial names the determining policies, sorted, at its end.
#[track_caller]
fn assert_denied_by(message: &str, policies: &[&str]) {
    let expected = format!("denied by policy {}", policies.join(", "));
    assert!(
        message.ends_with(&expected),
        "`{message}` should end with `{expected}`"
    );
}

async fn missing_and_invalid_credentials(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let anonymous = server.anonymous();
    let body = json!({"workload_class": "coding", "environment": "dev"});
    for (method, path) in [
        (Method::GET, "/v1/sessions"),
        (Method::POST, "/v1/sessions"),
        (
            Method::GET,
            "/v1/sessions/ses_00000000000000000000000000000000",
        ),
        (Method::POST, "/v1/sessions/nope/activate"),
        (Method::GET, "/v1/tenants"),
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::DELETE, "/v1/keys/nope"),
    ] {
        let reply = Client::send(anonymous.request(method.clone(), path).json(&body)).await;
        reply.expect_error(401, "AUTHN_MISSING_CREDENTIALS");

        for header in [
            "Bearer garbage".to_owned(),
            "Bearer ".to_owned(),
            "Bearer".to_owned(),
            "bearer cordon_0000".to_owned(),
            format!("Basic {}", super::BOOTSTRAP_TOKEN),
            super::BOOTSTRAP_TOKEN.to_owned(),
            format!("Bearer {}", cordon_api::generate_token()),
            format!("Bearer {}x", super::BOOTSTRAP_TOKEN),
        ] {
            let request = anonymous
                .request(method.clone(), path)
                .header(AUTHORIZATION, &header)
                .json(&body);
            let reply = Client::send(request).await;
            let message = reply.expect_error(401, "AUTHN_INVALID_CREDENTIALS");
            assert!(!message.contains("cordon_"), "no token echoed: {message}");
        }
    }
    assert_eq!(server.session_count().await, 0);
    assert_eq!(server.tenant_count().await, 1);
    // The system routes need no credentials.
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        anonymous.get(path).await.expect(200);
    }
}

async fn revoked_key_stops_working_at_once(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (operator, key) = server.create_key("operator").await;
    let key_id = key["id"].as_str().unwrap();
    assert_eq!(key["created_by"], server.admin_key_id.as_str());
    assert!(key["revoked_at"].is_null());
    // Used once, so that it is in the key cache when it is revoked.
    operator.get("/v1/sessions").await.expect(200);
    let session = operator.create_session("coding", "dev").await;

    let revoked = admin.delete(&format!("/v1/keys/{key_id}")).await;
    let revoked = revoked.expect(200).clone();
    assert_eq!(revoked["id"], key_id);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(
        revoked.get("token").is_none(),
        "the token is never shown again"
    );

    let reply = operator.get("/v1/sessions").await;
    reply.expect_error(401, "AUTHN_INVALID_CREDENTIALS");
    let reply = operator
        .act(session["id"].as_str().unwrap(), "activate")
        .await;
    reply.expect_error(401, "AUTHN_INVALID_CREDENTIALS");
    let reply = operator
        .post(
            "/v1/sessions",
            &json!({"workload_class": "c", "environment": "d"}),
        )
        .await;
    reply.expect_error(401, "AUTHN_INVALID_CREDENTIALS");
    assert_eq!(server.session_count().await, 1);
    assert_eq!(
        admin.session(session["id"].as_str().unwrap()).await["phase"],
        "created"
    );

    // Revoking again changes nothing: the first revocation time stays.
    let again = admin.delete(&format!("/v1/keys/{key_id}")).await;
    assert_eq!(again.expect(200)["revoked_at"], revoked["revoked_at"]);
    operator
        .get("/v1/sessions")
        .await
        .expect_error(401, "AUTHN_INVALID_CREDENTIALS");

    // Still listed, as revoked; the tokens of listed keys are never shown.
    let keys = admin.get("/v1/keys").await;
    let items = keys.expect(200)["items"].as_array().unwrap().clone();
    let listed = items.iter().find(|item| item["id"] == key_id).unwrap();
    assert!(listed["revoked_at"].is_string());
    assert!(items.iter().all(|item| item.get("token").is_none()));
    // The admin itself is unaffected.
    admin.get("/v1/sessions").await.expect(200);
}

async fn only_the_system_admin_manages_tenants(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let (tenant_admin, _) = server.create_key("admin").await;
    for role in ["admin", "operator", "auditor", "agent"] {
        let (client, _) = if role == "admin" {
            (tenant_admin.clone(), Value::Null)
        } else {
            server.create_key(role).await
        };
        let reply = client.post("/v1/tenants", &json!({"name": "acme"})).await;
        let message = reply.expect_error(403, "AUTHZ_DENIED");
        let mut expected = vec!["only-system-manages-tenants", "tenant-isolation"];
        if role == "auditor" {
            expected.insert(0, "auditor-read-only");
        }
        assert_denied_by(message, &expected);
        let reply = client.get("/v1/tenants").await;
        reply.expect_error(403, "AUTHZ_DENIED");
    }
    assert_eq!(server.tenant_count().await, 1);
    // The system admin may, once per name.
    server.create_tenant("acme").await;
    let reply = server
        .admin()
        .post("/v1/tenants", &json!({"name": "acme"}))
        .await;
    reply.expect_error(409, "TENANT_NAME_TAKEN");
    let reply = server
        .admin()
        .post("/v1/tenants", &json!({"name": "default"}))
        .await;
    reply.expect_error(409, "TENANT_NAME_TAKEN");
    assert_eq!(server.tenant_count().await, 2);
}

async fn only_admins_manage_keys(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (operator, _) = server.create_key("operator").await;
    let (auditor, _) = server.create_key("auditor").await;
    let (agent, agent_key) = server.create_key("agent").await;
    let keys_before = admin.get("/v1/keys").await.expect(200).clone();
    let agent_path = format!("/v1/keys/{}", agent_key["id"].as_str().unwrap());

    let body = json!({"role": "admin", "name": "escalate"});
    let message = operator
        .post("/v1/keys", &body)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(&message, &["only-admins-manage-keys"]);
    let message = operator
        .delete(&agent_path)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(&message, &["only-admins-manage-keys"]);
    let message = auditor
        .post("/v1/keys", &body)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(&message, &["auditor-read-only", "only-admins-manage-keys"]);
    let message = agent
        .post("/v1/keys", &body)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(
        &message,
        &["agent-no-key-access", "only-admins-manage-keys"],
    );
    let message = agent
        .get("/v1/keys")
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(&message, &["agent-no-key-access"]);
    let message = agent
        .delete(&agent_path)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(
        &message,
        &["agent-no-key-access", "only-admins-manage-keys"],
    );
    // Operators and auditors may list keys.
    operator.get("/v1/keys").await.expect(200);
    auditor.get("/v1/keys").await.expect(200);

    assert_eq!(admin.get("/v1/keys").await.expect(200), &keys_before);
    agent.get("/v1/sessions").await.expect(200);
}

async fn tenant_admins_cannot_revoke_the_system_key(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (tenant_admin, _) = server.create_key("admin").await;
    let keys = admin.get("/v1/keys").await.expect(200).clone();
    let system_key = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["system"] == json!(true))
        .unwrap()
        .clone();
    let path = format!("/v1/keys/{}", system_key["id"].as_str().unwrap());
    let message = tenant_admin
        .delete(&path)
        .await
        .expect_error(403, "AUTHZ_DENIED")
        .to_owned();
    assert_denied_by(&message, &["system-key-protected"]);
    // The system key still works.
    admin.get("/v1/tenants").await.expect(200);
}

async fn auditors_only_read(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (auditor, _) = server.create_key("auditor").await;
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap();
    admin.act(id, "activate").await.expect(200);
    let before = admin.session(id).await;
    let events = admin.events(id).await;

    // Reads everything in its tenant.
    assert_eq!(auditor.session(id).await, before);
    assert_eq!(auditor.events(id).await, events);
    assert_eq!(auditor.session_ids("").await, [id]);
    // Changes nothing.
    for action in ["activate", "checkpoint", "suspend", "resume", "close"] {
        let reply = auditor.act(id, action).await;
        let message = reply.expect_error(403, "AUTHZ_DENIED");
        assert_denied_by(message, &["auditor-read-only"]);
    }
    let reply = auditor
        .post(
            "/v1/sessions",
            &json!({"workload_class": "c", "environment": "d"}),
        )
        .await;
    assert_denied_by(
        reply.expect_error(403, "AUTHZ_DENIED"),
        &["auditor-read-only"],
    );
    assert_eq!(admin.session(id).await, before);
    assert_eq!(admin.events(id).await, events);
    assert_eq!(server.session_count().await, 1);
}

async fn agents_only_touch_their_own_sessions(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (agent_a, key_a) = server.create_key("agent").await;
    let (agent_b, key_b) = server.create_key("agent").await;
    let admins = admin.create_session("coding", "dev").await;
    let a1 = agent_a.create_session("coding", "dev").await;
    let a2 = agent_a.create_session("review", "prod").await;
    let b1 = agent_b.create_session("coding", "dev").await;
    assert_eq!(a1["owner"], key_a["id"]);
    assert_eq!(b1["owner"], key_b["id"]);

    // Listing shows each agent its own sessions only, filters included.
    let [admins_id, a1_id, a2_id, b1_id] =
        [&admins, &a1, &a2, &b1].map(|session| session["id"].as_str().unwrap());
    assert_eq!(agent_a.session_ids("").await, [a1_id, a2_id]);
    assert_eq!(agent_b.session_ids("").await, [b1_id]);
    assert_eq!(agent_a.session_ids("&environment=prod").await, [a2_id]);
    assert_eq!(
        agent_b.session_ids("&environment=prod").await,
        Vec::<String>::new()
    );
    assert_eq!(
        admin.session_ids("").await,
        [admins_id, a1_id, a2_id, b1_id]
    );

    // B may not touch A's session (nor the admin's) in any way.
    let events = admin.events(a1_id).await;
    for target in [a1_id, admins_id] {
        let reply = agent_b.get(&format!("/v1/sessions/{target}")).await;
        assert_denied_by(
            reply.expect_error(403, "AUTHZ_DENIED"),
            &["agent-own-sessions-only"],
        );
        let reply = agent_b.get(&format!("/v1/sessions/{target}/events")).await;
        assert_denied_by(
            reply.expect_error(403, "AUTHZ_DENIED"),
            &["agent-own-sessions-only"],
        );
        for action in ["activate", "close"] {
            let reply = agent_b.act(target, action).await;
            assert_denied_by(
                reply.expect_error(403, "AUTHZ_DENIED"),
                &["agent-own-sessions-only"],
            );
        }
    }
    assert_eq!(admin.session(a1_id).await["phase"], "created");
    assert_eq!(admin.events(a1_id).await, events);
    // A drives its own; operators and admins drive anyone's.
    agent_a.act(a1_id, "activate").await.expect(200);
    let (operator, _) = server.create_key("operator").await;
    operator.act(a1_id, "checkpoint").await.expect(200);
    admin.act(a1_id, "suspend").await.expect(200);
    assert_eq!(agent_a.session(a1_id).await["phase"], "suspended");
}

async fn tenants_are_isolated(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let system = server.admin();
    let default_id = server.default_tenant_id().await;
    let (default_admin, _) = server.create_key("admin").await;
    let (default_operator, default_operator_key) = server.create_key("operator").await;
    let default_key_id = default_operator_key["id"].as_str().unwrap();
    let theirs = default_admin.create_session("coding", "dev").await;
    let theirs_id = theirs["id"].as_str().unwrap();

    // The system admin creates a tenant and an admin key in it.
    let acme = server.create_tenant("acme").await;
    let acme_id = acme["id"].as_str().unwrap();
    let tenants = system.get("/v1/tenants").await;
    let mut names: Vec<&str> = tenants.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["acme", "default"]);
    let (acme_admin, acme_admin_key) = server.create_key_as(&system, "admin", Some(acme_id)).await;
    assert_eq!(acme_admin_key["tenant_id"], acme_id);
    assert_eq!(acme_admin_key["system"], false);

    let before_session = default_admin.session(theirs_id).await;
    let before_events = default_admin.events(theirs_id).await;
    let before_keys = default_admin.get("/v1/keys").await.expect(200).clone();

    // The other tenant's session does not exist for acme: 404, never 403.
    assert_eq!(acme_admin.session_ids("").await, Vec::<String>::new());
    let reply = acme_admin.get(&format!("/v1/sessions/{theirs_id}")).await;
    reply.expect_error(404, "NOT_FOUND");
    let reply = acme_admin
        .get(&format!("/v1/sessions/{theirs_id}/events"))
        .await;
    reply.expect_error(404, "NOT_FOUND");
    for action in ["activate", "checkpoint", "suspend", "resume", "close"] {
        acme_admin
            .act(theirs_id, action)
            .await
            .expect_error(404, "NOT_FOUND");
    }
    // Nor does the tenant, its keys, or a key there.
    let reply = acme_admin.get(&format!("/v1/tenants/{default_id}")).await;
    reply.expect_error(404, "NOT_FOUND");
    let body = json!({"role": "admin", "name": "foothold", "tenant_id": default_id});
    acme_admin
        .post("/v1/keys", &body)
        .await
        .expect_error(404, "NOT_FOUND");
    let reply = acme_admin
        .get(&format!("/v1/keys?tenant_id={default_id}"))
        .await;
    reply.expect_error(404, "NOT_FOUND");
    let reply = acme_admin
        .delete(&format!("/v1/keys/{default_key_id}"))
        .await;
    reply.expect_error(404, "NOT_FOUND");
    let reply = acme_admin
        .delete(&format!("/v1/keys/{default_key_id}?tenant_id={default_id}"))
        .await;
    reply.expect_error(404, "NOT_FOUND");
    let listed = acme_admin.get("/v1/keys").await;
    assert_eq!(
        ids(&listed.expect(200)["items"]),
        [acme_admin_key["id"].as_str().unwrap()]
    );

    // Nothing changed on the default side; its operator key still works.
    assert_eq!(default_admin.session(theirs_id).await, before_session);
    assert_eq!(default_admin.events(theirs_id).await, before_events);
    assert_eq!(
        default_admin.get("/v1/keys").await.expect(200),
        &before_keys
    );
    default_operator.get("/v1/sessions").await.expect(200);

    // Acme's admin reads its own tenant and makes keys in it, implicitly or by id.
    assert_eq!(
        acme_admin
            .get(&format!("/v1/tenants/{acme_id}"))
            .await
            .expect(200)["name"],
        "acme"
    );
    let (acme_operator, acme_operator_key) =
        server.create_key_as(&acme_admin, "operator", None).await;
    assert_eq!(acme_operator_key["tenant_id"], acme_id);
    assert_eq!(acme_operator_key["created_by"], acme_admin_key["id"]);
    let (_, acme_agent_key) = server
        .create_key_as(&acme_admin, "agent", Some(acme_id))
        .await;
    assert_eq!(acme_agent_key["tenant_id"], acme_id);

    // Sessions stay in their tenant both ways.
    let ours = acme_operator.create_session("coding", "dev").await;
    assert_eq!(ours["tenant_id"], acme_id);
    let ours_id = ours["id"].as_str().unwrap();
    assert_eq!(acme_admin.session_ids("").await, [ours_id]);
    assert_eq!(default_admin.session_ids("").await, [theirs_id]);
    default_admin
        .get(&format!("/v1/sessions/{ours_id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    default_operator
        .act(ours_id, "activate")
        .await
        .expect_error(404, "NOT_FOUND");
    assert_eq!(acme_admin.session(ours_id).await["phase"], "created");
    // A tenant admin cannot see another tenant.
    default_admin
        .get(&format!("/v1/tenants/{acme_id}"))
        .await
        .expect_error(404, "NOT_FOUND");
    // The system admin sees both tenants and may manage keys in either.
    system
        .get(&format!("/v1/tenants/{acme_id}"))
        .await
        .expect(200);
    let acme_keys = system.get(&format!("/v1/keys?tenant_id={acme_id}")).await;
    assert_eq!(acme_keys.expect(200)["items"].as_array().unwrap().len(), 3);
    let revoke = format!(
        "/v1/keys/{}?tenant_id={acme_id}",
        acme_agent_key["id"].as_str().unwrap()
    );
    system.delete(&revoke).await.expect(200);
}
