//! The sandbox routes on a server that runs without sandboxes (these in-process servers
//! never do; real sandboxes are tested end to end in crates/cli/tests): the checks that
//! come before any sandbox is touched, and the answer when there is none.

use cordon_test_support::TestBackend;
use serde_json::json;

use super::TestServer;

backend_tests!(sandbox_routes_check_tenancy_phase_and_availability);

async fn sandbox_routes_check_tenancy_phase_and_availability(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap();
    let exec = format!("/v1/sessions/{id}/exec");

    // Not active yet: 409 before anything else.
    admin
        .post(&exec, &json!({"argv": ["true"]}))
        .await
        .expect_error(409, "SESSION_NOT_ACTIVE");
    admin
        .get(&format!("/v1/sessions/{id}/files"))
        .await
        .expect_error(409, "SESSION_NOT_ACTIVE");

    // Active, but this server runs no sandboxes.
    admin.act(id, "activate").await.expect(200);
    admin
        .post(&exec, &json!({"argv": ["true"]}))
        .await
        .expect_error(503, "SANDBOX_UNAVAILABLE");
    admin
        .get(&format!("/v1/sessions/{id}/sandbox"))
        .await
        .expect_error(503, "SANDBOX_UNAVAILABLE");

    // Bad input is refused before that, and writes nothing.
    admin
        .post(&exec, &json!({"argv": []}))
        .await
        .expect_error(400, "VALIDATION_FAILED");
    admin
        .post(&exec, &json!({"argv": ["true"], "shell": true}))
        .await
        .expect_error(400, "REQUEST_BODY_INVALID");

    // Another tenant sees nothing; an auditor may not run commands.
    let others = server.create_tenant("elsewhere").await;
    let (stranger, _) = server
        .create_key_as(&admin, "admin", others["id"].as_str())
        .await;
    stranger
        .post(&exec, &json!({"argv": ["true"]}))
        .await
        .expect_error(404, "NOT_FOUND");
    stranger
        .get(&format!("/v1/sessions/{id}/files/a.txt"))
        .await
        .expect_error(404, "NOT_FOUND");
    let (auditor, _) = server.create_key("auditor").await;
    auditor
        .post(&exec, &json!({"argv": ["true"]}))
        .await
        .expect_error(403, "AUTHZ_DENIED");
}
