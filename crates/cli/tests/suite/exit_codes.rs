//! The documented exit codes, with the reason code on stderr and nothing on stdout.

use super::{Backend, Place, Server, cordon, free_port, http_status, on_both_backends};

on_both_backends!(exit_codes_of_refusals_and_denials);

/// A well-formed session id that no store holds.
const UNKNOWN_SESSION: &str = "ses_0190aa0000007000800000000000000a";

fn exit_codes_of_refusals_and_denials(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let id = server.create_session("coding", "dev");

    // 6: an illegal transition (created -> checkpointed), in both output modes.
    server
        .cli(&["session", "checkpoint", &id])
        .failure(6, "SESSION_INVALID_TRANSITION");
    server
        .cli(&["session", "checkpoint", &id, "--json"])
        .failure(6, "SESSION_INVALID_TRANSITION");
    assert_eq!(
        server.session(&id)["phase"],
        "created",
        "a refused transition changed the phase"
    );
    assert_eq!(server.session(&id)["version"], 1);

    // 6: invalid input.
    server
        .cli(&["session", "create", "--class", "Not Valid", "--env", "dev"])
        .failure(6, "VALIDATION_FAILED");

    // 5: an unknown session, for a read and for a transition.
    server
        .cli(&["session", "get", UNKNOWN_SESSION])
        .failure(5, "NOT_FOUND");
    server
        .cli(&["session", "activate", UNKNOWN_SESSION])
        .failure(5, "NOT_FOUND");
    server
        .cli(&["session", "events", UNKNOWN_SESSION, "--json"])
        .failure(5, "NOT_FOUND");

    // 4: no token.
    server
        .cli_anonymous(&["session", "get", &id])
        .failure(4, "AUTHN_MISSING_CREDENTIALS");
    server
        .cli_anonymous(&["session", "list", "--json"])
        .failure(4, "AUTHN_MISSING_CREDENTIALS");

    // 4: an unknown token.
    server
        .cli_as("cordon_not-a-real-token", &["session", "list"])
        .failure(4, "AUTHN_INVALID_CREDENTIALS");

    // 4: a revoked token. It works until revoked.
    let run = server.cli(&[
        "key", "create", "--role", "operator", "--name", "doomed", "--json",
    ]);
    run.success();
    let created = run.json();
    let key = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["role"], "operator");
    server.cli_as(&token, &["session", "get", &id]).success();
    let run = server.cli(&["key", "delete", &key, "--yes", "--json"]);
    run.success();
    assert!(run.json()["revoked_at"].is_string(), "{}", run.stdout);
    server
        .cli_as(&token, &["session", "get", &id])
        .failure(4, "AUTHN_INVALID_CREDENTIALS");

    // 4: an operator may run sessions but not manage keys.
    let run = server.cli(&[
        "key", "create", "--role", "operator", "--name", "ops", "--json",
    ]);
    run.success();
    let operator = run.json()["token"].as_str().unwrap().to_owned();
    server
        .cli_as(&operator, &["session", "activate", &id])
        .success();
    server
        .cli_as(
            &operator,
            &["key", "create", "--role", "admin", "--name", "escalate"],
        )
        .failure(4, "AUTHZ_DENIED");
    server
        .cli_as(
            &operator,
            &[
                "key", "create", "--role", "operator", "--name", "peer", "--json",
            ],
        )
        .failure(4, "AUTHZ_DENIED");
    server
        .cli_as(&operator, &["tenant", "create", "evil"])
        .failure(4, "AUTHZ_DENIED");

    // The error line names the code, the HTTP status and the request id.
    let run = server.cli(&["session", "get", UNKNOWN_SESSION]);
    assert!(
        run.stderr.starts_with("error: NOT_FOUND: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTP 404"), "{}", run.stderr);
    assert!(run.stderr.contains("request "), "{}", run.stderr);
}

#[test]
fn unreachable_server_exits_3() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("CORDON_URL", url.as_str()),
        ("CORDON_TOKEN", "cordon_whatever"),
    ];
    cordon(&env, &["session", "list"]).failure(3, "cannot reach");
    cordon(&env, &["tenant", "list", "--json"]).failure(3, "cannot reach");
    // --url overrides CORDON_URL.
    cordon(
        &[("CORDON_TOKEN", "x")],
        &["session", "get", "ses_x", "--url", &url],
    )
    .failure(3, "cannot reach");
}

#[test]
fn bad_usage_exits_2() {
    let env = [("CORDON_URL", "http://127.0.0.1:9"), ("CORDON_TOKEN", "x")];
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["session"],
        &["session", "frobnicate"],
        &["session", "create", "--env", "dev"],
        &[
            "session", "create", "--class", "c", "--env", "dev", "--label", "novalue",
        ],
        &["session", "list", "--phase", "sleeping"],
        &["session", "list", "--limit", "many"],
        &["session", "get"],
        &["key", "create", "--role", "wizard", "--name", "x"],
        &["tenant", "create"],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--log-format", "xml"],
    ];
    for args in cases {
        let run = cordon(&env, args);
        assert_eq!(run.code, 2, "expected a usage error: {run:?}");
        assert!(
            !run.stderr.is_empty(),
            "a usage error should explain itself: {run:?}"
        );
        assert!(
            run.stdout.is_empty(),
            "nothing on stdout for a usage error: {run:?}"
        );
    }
    // Help and version are not errors.
    let run = cordon(&env, &["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("session"), "{run:?}");
    assert_eq!(cordon(&env, &["--version"]).code, 0);
}

/// A 5xx answer exits 1: here the server's PostgreSQL database disappears under it.
#[test]
fn server_error_exits_1() {
    let mut server = Server::start(Place::new(Backend::Postgres));
    let id = server.create_session("coding", "dev");
    server.place_mut().drop_database();
    let run = server.cli(&["session", "activate", &id]);
    assert_eq!(run.code, 1, "expected exit code 1: {run:?}");
    assert!(run.stderr.contains("HTTP 50"), "{run:?}");
    // Which one depends on how the pool notices: a dead connection or a missing database.
    assert!(
        run.stderr.contains("STORE_UNAVAILABLE") || run.stderr.contains("INTERNAL"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(http_status(server.port, "/readyz"), Some(503));
}
