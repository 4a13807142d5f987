//! Tenants and their keys through the CLI: another tenant's data is invisible.

use super::{Backend, Place, Server, on_both_backends};

on_both_backends!(tenant_admin_sees_only_its_tenant);

fn tenant_admin_sees_only_its_tenant(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let default_session = server.create_session("coding", "dev");

    // The system admin creates tenant acme (table, then JSON via get).
    let run = server.cli(&["tenant", "create", "acme"]);
    run.success();
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    assert!(run.stdout.contains("acme"), "{}", run.stdout);
    let run = server.cli(&["tenant", "list", "--json"]);
    run.success();
    let tenants = run.json();
    let acme = tenants["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap_or_else(|| panic!("acme missing: {tenants:#}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = server.cli(&["tenant", "get", &acme, "--json"]);
    run.success();
    assert_eq!(run.json()["name"], "acme");
    server
        .cli(&["tenant", "create", "acme"])
        .failure(6, "TENANT_NAME_TAKEN");

    // ... and an admin key in it; the table shows the token once.
    let run = server.cli(&[
        "key", "create", "--tenant", &acme, "--role", "admin", "--name", "x",
    ]);
    run.success();
    assert!(
        run.stdout.contains("ROLE") && run.stdout.contains("admin"),
        "{}",
        run.stdout
    );
    let token = run
        .stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("cordon_"))
        .unwrap_or_else(|| panic!("no token in:\n{}", run.stdout))
        .to_owned();

    // That key cannot see the default tenant's session, in any way.
    server
        .cli_as(&token, &["session", "get", &default_session])
        .failure(5, "NOT_FOUND");
    server
        .cli_as(&token, &["session", "activate", &default_session])
        .failure(5, "NOT_FOUND");
    server
        .cli_as(&token, &["session", "events", &default_session])
        .failure(5, "NOT_FOUND");
    let run = server.cli_as(&token, &["session", "list", "--json"]);
    run.success();
    assert_eq!(run.json()["items"], serde_json::json!([]), "{}", run.stdout);
    assert_eq!(server.session(&default_session)["phase"], "created");

    // Its own sessions work.
    let run = server.cli_as(
        &token,
        &[
            "session", "create", "--class", "coding", "--env", "dev", "--json",
        ],
    );
    run.success();
    let acme_session = run.json();
    assert_eq!(acme_session["tenant_id"], acme.as_str());
    let acme_session = acme_session["id"].as_str().unwrap().to_owned();
    server
        .cli_as(&token, &["session", "activate", &acme_session])
        .success();
    // The system admin's own tenant is `default`: acme's session is not in it.
    server
        .cli(&["session", "get", &acme_session])
        .failure(5, "NOT_FOUND");

    // `key list` shows only acme's keys.
    server
        .cli_as(
            &token,
            &["key", "create", "--role", "auditor", "--name", "audit"],
        )
        .success();
    let run = server.cli_as(&token, &["key", "list", "--json"]);
    run.success();
    let keys = run.json();
    let items = keys["items"].as_array().unwrap();
    let mut names: Vec<&str> = items.iter().map(|k| k["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["audit", "x"], "{keys:#}");
    assert!(
        items.iter().all(|k| k["tenant_id"] == acme.as_str()),
        "{keys:#}"
    );
    assert!(items.iter().all(|k| k["system"] == false), "{keys:#}");
    assert!(
        items.iter().all(|k| k.get("token").is_none()),
        "a token was listed: {keys:#}"
    );
    let run = server.cli_as(&token, &["key", "list"]);
    run.success();
    assert!(run.stdout.starts_with("ID"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("bootstrap system admin"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("cordon_"),
        "a token was listed:\n{}",
        run.stdout
    );

    // Acme's admin cannot reach into another tenant, nor manage tenants.
    let run = server.cli(&["tenant", "list", "--json"]);
    let default_tenant = run.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "default")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .cli_as(&token, &["key", "list", "--tenant", &default_tenant])
        .failure(5, "NOT_FOUND");
    server
        .cli_as(
            &token,
            &[
                "key",
                "create",
                "--tenant",
                &default_tenant,
                "--role",
                "admin",
                "--name",
                "y",
            ],
        )
        .failure(5, "NOT_FOUND");
    server
        .cli_as(&token, &["tenant", "create", "other"])
        .failure(4, "AUTHZ_DENIED");

    // The system admin sees acme's keys when asking for them.
    let run = server.cli(&["key", "list", "--tenant", &acme, "--json"]);
    run.success();
    assert_eq!(run.json()["items"].as_array().unwrap().len(), 2);
}
