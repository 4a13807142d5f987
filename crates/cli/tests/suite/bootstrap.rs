//! First start, restarts, CORDON_BOOTSTRAP_TOKEN, and one server per data dir.

use std::os::unix::fs::PermissionsExt;

use super::{Backend, Place, Server, on_both_backends};

on_both_backends!(
    first_start_writes_a_private_working_token,
    restart_keeps_the_token_and_the_single_default_tenant,
    bootstrap_token_from_the_environment_writes_no_file,
    too_short_bootstrap_token_fails_the_start,
    second_server_on_the_same_data_dir_is_refused,
);

/// The names of all tenants, as the system admin sees them.
fn tenant_names(server: &Server) -> Vec<String> {
    let run = server.cli(&["tenant", "list", "--json"]);
    run.success();
    run.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

fn first_start_writes_a_private_working_token(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let path = server.place().token_file();
    let mode = std::fs::metadata(&path)
        .expect("the token file exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "{} has mode {:o}",
        path.display(),
        mode & 0o777
    );

    let token = server.place().read_token_file();
    assert!(
        token.starts_with("cordon_"),
        "unexpected token format: {token}"
    );
    assert_eq!(
        token.len(),
        "cordon_".len() + 64,
        "unexpected token length: {token}"
    );
    assert!(
        token["cordon_".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );

    // The token works as a system admin token.
    let run = server.cli_as(&token, &["tenant", "list"]);
    run.success();
    assert!(run.stdout.contains("NAME"), "{}", run.stdout);
    assert!(run.stdout.contains("default"), "{}", run.stdout);
    assert_eq!(tenant_names(&server), ["default"]);

    let log = server.log();
    assert!(
        log.contains("bootstrap-admin.token"),
        "the log should say where the token is:\n{log}"
    );
    assert!(
        !log.contains(&token),
        "the token leaked into the server log:\n{log}"
    );
    assert!(
        !log.contains(&token["cordon_".len()..]),
        "the token leaked into the server log"
    );
}

fn restart_keeps_the_token_and_the_single_default_tenant(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let token = server.place().read_token_file();
    let session = server.create_session("coding", "dev");
    let (status, _, place) = server.terminate();
    assert!(status.success(), "{status}");

    let server = Server::start(place);
    assert_eq!(
        server.place().read_token_file(),
        token,
        "the token file changed on restart"
    );
    let run = server.cli_as(&token, &["session", "get", &session]);
    run.success();
    assert!(run.stdout.contains(&session));
    assert_eq!(
        tenant_names(&server),
        ["default"],
        "a restart must not bootstrap again"
    );
    let log = server.log();
    assert!(
        !log.contains("created tenant `default`"),
        "bootstrapped again:\n{log}"
    );
    assert!(
        !log.contains(&token),
        "the token leaked into the server log:\n{log}"
    );

    // And once more after a crash.
    let place = server.kill9();
    let server = Server::start(place);
    server.cli_as(&token, &["tenant", "list"]).success();
    assert_eq!(tenant_names(&server), ["default"]);
}

fn bootstrap_token_from_the_environment_writes_no_file(backend: Backend) {
    let token = format!("env-bootstrap-{}", "x".repeat(40));
    let server = Server::start_with(
        Place::new(backend),
        &[],
        &[("CORDON_BOOTSTRAP_TOKEN", &token)],
    );
    let path = server.place().token_file();
    assert!(
        !path.exists(),
        "{} was written although the token came from the environment",
        path.display()
    );
    server.cli_as(&token, &["tenant", "list"]).success();
    assert_eq!(tenant_names(&server), ["default"]);
    let log = server.log();
    assert!(log.contains("CORDON_BOOTSTRAP_TOKEN"), "{log}");
    assert!(
        !log.contains(&token),
        "the token leaked into the server log:\n{log}"
    );

    // A restart without the variable: the store is initialized, nothing is written and
    // the same token keeps working.
    let place = server.kill9();
    let server = Server::start(place);
    assert!(!path.exists(), "{} was written on restart", path.display());
    server.cli_as(&token, &["tenant", "list"]).success();
    assert_eq!(tenant_names(&server), ["default"]);
}

fn too_short_bootstrap_token_fails_the_start(backend: Backend) {
    let mut place = Place::new(backend);
    let (status, stderr) =
        place.serve_expecting_exit(&[], &[("CORDON_BOOTSTRAP_TOKEN", "short-token-123")]);
    assert!(
        !status.success(),
        "serve accepted a short bootstrap token; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("CORDON_BOOTSTRAP_TOKEN") && stderr.contains("32"),
        "the error should name the variable and the minimum length:\n{stderr}"
    );
    assert!(
        !stderr.contains("short-token-123"),
        "the token leaked into the log:\n{stderr}"
    );
    assert!(!place.token_file().exists());

    // The store was left uninitialized: a normal start bootstraps it.
    let server = Server::start(place);
    assert_eq!(tenant_names(&server), ["default"]);
}

fn second_server_on_the_same_data_dir_is_refused(backend: Backend) {
    let mut server = Server::start(Place::new(backend));
    let session = server.create_session("coding", "dev");
    let (status, stderr) = server.place_mut().serve_expecting_exit(&[], &[]);
    assert!(
        !status.success(),
        "a second server started on the same data dir:\n{stderr}"
    );
    assert!(
        stderr.contains("data dir") && stderr.contains("another cordon server"),
        "the error should say the data dir is in use:\n{stderr}"
    );
    // The first server is undisturbed.
    server.cli(&["session", "get", &session]).success();
    server.cli(&["session", "activate", &session]).success();
}
