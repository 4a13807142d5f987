//! The server process: graceful shutdown and its logs.

use serde_json::Value;

use super::{Backend, Place, Server, on_both_backends};

on_both_backends!(
    sigterm_stops_the_server_cleanly,
    json_logs_are_json_lines,
    text_logs_to_a_file_have_no_colour
);

fn sigterm_stops_the_server_cleanly(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let id = server.create_session("coding", "dev");
    server.cli(&["session", "activate", &id]).success();
    let (status, log, place) = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM should exit 0, got {status}; stderr:\n{log}"
    );
    assert!(log.contains("shutting down"), "{log}");

    // The data dir is released and the data is there.
    let server = Server::start(place);
    assert_eq!(server.session(&id)["phase"], "active");
    server.cli(&["session", "suspend", &id]).success();
    let (status, _, _) = server.terminate();
    assert_eq!(status.code(), Some(0));
}

fn json_logs_are_json_lines(backend: Backend) {
    let server = Server::start_with(Place::new(backend), &["--log-format", "json"], &[]);
    let id = server.create_session("coding", "dev");
    server
        .cli(&["session", "checkpoint", &id])
        .failure(6, "SESSION_INVALID_TRANSITION");
    let token = server.token.clone();
    let (status, log, _) = server.terminate();
    assert_eq!(status.code(), Some(0), "{log}");

    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}\nlog:\n{log}"))
        })
        .collect();
    assert!(lines.iter().all(Value::is_object), "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("listening on http://127.0.0.1:")),
        "{log}"
    );
    assert!(messages.contains(&"shutting down"), "{log}");
    assert!(
        !log.contains(&token),
        "the token leaked into the server log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "terminal escapes in JSON logs:\n{log}"
    );
}

fn text_logs_to_a_file_have_no_colour(backend: Backend) {
    let server = Server::start(Place::new(backend));
    server.create_session("coding", "dev");
    let log = server.log();
    assert!(log.contains("listening on http://127.0.0.1:"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "the text log written to a file contains terminal escape codes:\n{log}"
    );
}
