//! `session create --idempotency-key`: a retried create creates one session.

use super::{Backend, Place, Server, on_both_backends};

on_both_backends!(idempotent_create_through_the_cli);

fn idempotent_create_through_the_cli(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let create = |class: &str, key: &str| {
        server.cli(&[
            "session",
            "create",
            "--class",
            class,
            "--env",
            "dev",
            "--label",
            "a=b",
            "--idempotency-key",
            key,
            "--json",
        ])
    };

    let first = create("coding", "retry-me-1");
    first.success();
    let second = create("coding", "retry-me-1");
    second.success();
    assert_eq!(
        first.json()["id"],
        second.json()["id"],
        "a retry created a second session"
    );
    assert_eq!(
        first.json(),
        second.json(),
        "the replay differs from the original answer"
    );

    // The same key with a different request is refused, and creates nothing.
    create("review", "retry-me-1").failure(6, "IDEMPOTENCY_KEY_REUSED");

    // Another key is another session.
    let third = create("coding", "retry-me-2");
    third.success();
    assert_ne!(first.json()["id"], third.json()["id"]);

    let run = server.cli(&["session", "list", "--json"]);
    run.success();
    assert_eq!(
        run.json()["items"].as_array().unwrap().len(),
        2,
        "{}",
        run.stdout
    );

    // An invalid key is refused before anything happens.
    create("coding", "").failure(6, "IDEMPOTENCY_KEY_INVALID");
}
