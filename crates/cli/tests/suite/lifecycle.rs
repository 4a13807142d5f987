//! A session's whole lifecycle through the CLI, in tables and in JSON.

use super::{Backend, Place, Server, on_both_backends};

on_both_backends!(
    whole_lifecycle_through_the_cli,
    close_without_yes_refuses_and_changes_nothing
);

/// The row of `id` in a table, split into cells on runs of whitespace.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[track_caller]
fn assert_header(table: &str, columns: &[&str]) {
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, columns, "unexpected header in:\n{table}");
}

fn whole_lifecycle_through_the_cli(backend: Backend) {
    let server = Server::start(Place::new(backend));

    // Create, as a table.
    let run = server.cli(&[
        "session",
        "create",
        "--class",
        "coding",
        "--env",
        "dev",
        "--label",
        "team=core",
        "--label",
        "tier=1",
    ]);
    run.success();
    assert_header(
        &run.stdout,
        &["ID", "PHASE", "CLASS", "ENV", "LABELS", "UPDATED"],
    );
    assert_eq!(
        run.stdout.lines().count(),
        2,
        "one header and one row:\n{}",
        run.stdout
    );
    let id = run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("ses_"), "{}", run.stdout);
    let cells = row(&run.stdout, &id);
    assert_eq!(
        &cells[1..5],
        ["created", "coding", "dev", "team=core,tier=1"],
        "{}",
        run.stdout
    );

    // The same session as JSON.
    let session = server.session(&id);
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["phase"], "created");
    assert_eq!(session["workload_class"], "coding");
    assert_eq!(session["environment"], "dev");
    assert_eq!(
        session["labels"],
        serde_json::json!({"team": "core", "tier": "1"})
    );
    assert_eq!(session["version"], 1);

    // activate (table), checkpoint (JSON), resume, suspend, resume, close.
    let run = server.cli(&["session", "activate", &id, "--reason", "start work"]);
    run.success();
    assert_header(
        &run.stdout,
        &["ID", "PHASE", "CLASS", "ENV", "LABELS", "UPDATED"],
    );
    assert_eq!(row(&run.stdout, &id)[1], "active");

    let run = server.cli(&["session", "checkpoint", &id, "--json"]);
    run.success();
    let body = run.json();
    assert_eq!(body["phase"], "checkpointed");
    assert_eq!(body["version"], 3);

    let steps = [
        ("resume", "active"),
        ("suspend", "suspended"),
        ("resume", "active"),
    ];
    for (action, phase) in steps {
        let run = server.cli(&["session", action, &id, "--json"]);
        run.success();
        assert_eq!(run.json()["phase"], phase, "after {action}");
    }

    let run = server.cli(&["session", "close", &id, "--yes", "--reason", "done"]);
    run.success();
    assert_eq!(row(&run.stdout, &id)[1], "closed");
    assert_eq!(server.session(&id)["phase"], "closed");
    assert_eq!(server.session(&id)["version"], 7);

    // The event log, as JSON...
    let run = server.cli(&["session", "events", &id, "--json"]);
    run.success();
    let events = run.json();
    let items = events["items"].as_array().expect("items");
    let transitions: Vec<(serde_json::Value, serde_json::Value)> = items
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    let expected = [
        (None, "created"),
        (Some("created"), "active"),
        (Some("active"), "checkpointed"),
        (Some("checkpointed"), "active"),
        (Some("active"), "suspended"),
        (Some("suspended"), "active"),
        (Some("active"), "closed"),
    ]
    .map(|(from, to)| (serde_json::json!(from), serde_json::json!(to)));
    assert_eq!(transitions, expected, "{events:#}");
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(items[1]["reason"], "start work");
    assert_eq!(items[6]["reason"], "done");
    assert!(events.get("next_cursor").is_none(), "{events:#}");

    // ... and as a table.
    let run = server.cli(&["session", "events", &id]);
    run.success();
    assert_header(&run.stdout, &["SEQ", "AT", "ACTOR", "FROM", "TO", "REASON"]);
    assert_eq!(run.stdout.lines().count(), 8, "{}", run.stdout);
    for phase in [
        "created",
        "active",
        "checkpointed",
        "suspended",
        "closed",
        "start work",
    ] {
        assert!(
            run.stdout.contains(phase),
            "`{phase}` missing from:\n{}",
            run.stdout
        );
    }

    // Paging the event log.
    let run = server.cli(&["session", "events", &id, "--limit", "3", "--json"]);
    run.success();
    let page = run.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let run = server.cli(&[
        "session", "events", &id, "--limit", "3", "--cursor", &cursor, "--json",
    ]);
    run.success();
    assert_eq!(run.json()["items"][0]["seq"], 4);

    // Listing and filtering.
    let other = server.create_session("review", "prod");
    let run = server.cli(&["session", "list"]);
    run.success();
    assert_header(
        &run.stdout,
        &["ID", "PHASE", "CLASS", "ENV", "LABELS", "UPDATED"],
    );
    assert!(
        run.stdout.contains(&id) && run.stdout.contains(&other),
        "{}",
        run.stdout
    );
    let run = server.cli(&["session", "list", "--phase", "closed", "--json"]);
    run.success();
    let ids: Vec<String> = run.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let run = server.cli(&[
        "session", "list", "--class", "review", "--env", "prod", "--json",
    ]);
    run.success();
    assert_eq!(run.json()["items"][0]["id"], other.as_str());

    // A table page says how to get the next one.
    let run = server.cli(&["session", "list", "--limit", "1"]);
    run.success();
    let cursor = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("more: --cursor "))
        .unwrap_or_else(|| panic!("no next-page hint in:\n{}", run.stdout))
        .to_owned();
    let first = run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let run = server.cli(&["session", "list", "--limit", "1", "--cursor", &cursor]);
    run.success();
    let second = run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut seen = [first, second];
    seen.sort();
    let mut expected = [id.clone(), other.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    server
        .cli(&["session", "list", "--cursor", "garbage"])
        .failure(6, "CURSOR_INVALID");

    // Closed is final.
    server
        .cli(&["session", "resume", &id])
        .failure(6, "SESSION_INVALID_TRANSITION");
}

fn close_without_yes_refuses_and_changes_nothing(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let id = server.create_session("coding", "dev");
    server.cli(&["session", "activate", &id]).success();
    let before = server.session(&id);

    // stdin is not a terminal: no question can be asked.
    let run = server.cli(&["session", "close", &id]);
    run.failure(6, "--yes");
    let run = server.cli(&["session", "close", &id, "--json"]);
    run.failure(6, "--yes");

    assert_eq!(
        server.session(&id),
        before,
        "a refused close changed the session"
    );
    let run = server.cli(&["session", "events", &id, "--json"]);
    run.success();
    assert_eq!(run.json()["items"].as_array().unwrap().len(), 2);

    // The same refusal for revoking a key.
    let run = server.cli(&[
        "key", "create", "--role", "operator", "--name", "ops", "--json",
    ]);
    run.success();
    let key = run.json()["id"].as_str().unwrap().to_owned();
    let token = run.json()["token"].as_str().unwrap().to_owned();
    server.cli(&["key", "delete", &key]).failure(6, "--yes");
    server.cli_as(&token, &["session", "get", &id]).success();
}
