//! Crash safety: whatever the server acknowledged survives `kill -9`, and a restarted
//! node takes its own leases back at once (its node id is kept in the data dir).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Backend, Place, Server, block_on, on_both_backends};

on_both_backends!(
    acknowledged_writes_survive_kill_9,
    acknowledged_creates_survive_kill_9_under_load,
    sigterm_under_load_loses_no_acknowledged_create,
);

/// Every session's record and event log, and the listing, as the CLI shows them.
fn snapshot(server: &Server, ids: &[String]) -> Vec<(Value, Value)> {
    ids.iter()
        .map(|id| {
            let events = server.cli(&["session", "events", id, "--json"]);
            events.success();
            (server.session(id), events.json())
        })
        .collect()
}

fn node_id(place: &Place) -> String {
    std::fs::read_to_string(place.data_dir().join("node-id")).expect("node-id file")
}

fn acknowledged_writes_survive_kill_9(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let plans: &[&[&str]] = &[
        &[],
        &["activate"],
        &["activate", "checkpoint"],
        &["activate", "suspend"],
        &["activate", "close"],
        &["activate", "checkpoint", "resume", "suspend", "resume"],
    ];
    let mut ids = Vec::new();
    for (n, plan) in plans.iter().enumerate() {
        let label = format!("n={n}");
        let run = server.cli(&[
            "session", "create", "--class", "coding", "--env", "dev", "--label", &label, "--json",
        ]);
        run.success();
        let id = run.json()["id"].as_str().unwrap().to_owned();
        for action in *plan {
            let reason = format!("{action} #{n}");
            let mut args = vec!["session", action, id.as_str(), "--reason", reason.as_str()];
            if *action == "close" {
                args.push("--yes");
            }
            server.cli(&args).success();
        }
        ids.push(id);
    }
    let before = snapshot(&server, &ids);
    let listed_before = server.cli(&["session", "list", "--json"]);
    listed_before.success();
    let node = node_id(server.place());

    let place = server.kill9();
    let server = Server::start(place);
    assert_eq!(
        node_id(server.place()),
        node,
        "the node id changed on restart"
    );

    let after = snapshot(&server, &ids);
    for ((id, before), after) in ids.iter().zip(&before).zip(&after) {
        assert_eq!(before.0, after.0, "session {id} changed across kill -9");
        assert_eq!(before.1, after.1, "events of {id} changed across kill -9");
    }
    let phases: Vec<&str> = after
        .iter()
        .map(|(s, _)| s["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "created",
            "active",
            "checkpointed",
            "suspended",
            "closed",
            "active"
        ]
    );
    let listed_after = server.cli(&["session", "list", "--json"]);
    listed_after.success();
    assert_eq!(listed_before.json(), listed_after.json());

    // Right after the restart, sessions whose lease this node took before the crash
    // move on without waiting for the 30 s lease to expire.
    let started = Instant::now();
    server.cli(&["session", "checkpoint", &ids[1]]).success();
    server.cli(&["session", "resume", &ids[3]]).success();
    server.cli(&["session", "suspend", &ids[5]]).success();
    server.cli(&["session", "activate", &ids[0]]).success();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "transitions waited for leases"
    );
    assert_eq!(server.session(&ids[1])["version"], 3);

    // Control: a node with another id must wait for those leases, which is what the
    // kept node id saves a restarted node from.
    let place = server.kill9();
    std::fs::remove_file(place.data_dir().join("node-id")).expect("remove node-id");
    let server = Server::start(place);
    assert_ne!(node_id(server.place()), node);
    server
        .cli(&["session", "resume", &ids[1]])
        .failure(6, "SESSION_LEASE_HELD");
    assert_eq!(server.session(&ids[1])["phase"], "checkpointed");
}

/// Creates in flight while the server is SIGKILLed.
const LOAD_CREATES: usize = 300;
const LOAD_WORKERS: usize = 8;
/// Kill once this many creates were acknowledged.
const KILL_AFTER: usize = 100;

#[derive(Debug, Default)]
struct LoadOutcome {
    /// (session id, label n) of every create answered 201.
    acknowledged: Vec<(String, usize)>,
    /// Non-201 HTTP answers: there should be none.
    unexpected: Vec<String>,
    /// Requests that got no answer (the server was gone).
    failed: usize,
}

/// Issues up to [`LOAD_CREATES`] creates from [`LOAD_WORKERS`] concurrent workers until
/// done or until the server stops answering.
async fn create_load(url: String, token: String, outcome: Arc<Mutex<LoadOutcome>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..LOAD_WORKERS {
        let (client, next, outcome) = (client.clone(), Arc::clone(&next), Arc::clone(&outcome));
        let (url, token) = (url.clone(), token.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= LOAD_CREATES {
                    return;
                }
                let body = json!({
                    "workload_class": "load",
                    "environment": "dev",
                    "labels": {"n": n.to_string()},
                });
                let sent = client
                    .post(format!("{url}/v1/sessions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let response = match sent {
                    Ok(response) => response,
                    Err(_) => {
                        outcome.lock().unwrap().failed += 1;
                        // The server is gone: stop rather than spin.
                        return;
                    }
                };
                let status = response.status();
                match response.json::<Value>().await {
                    Ok(body) if status == reqwest::StatusCode::CREATED => {
                        let id = body["id"].as_str().expect("id in a 201 answer").to_owned();
                        outcome.lock().unwrap().acknowledged.push((id, n));
                    }
                    Ok(body) => outcome
                        .lock()
                        .unwrap()
                        .unexpected
                        .push(format!("{status}: {body}")),
                    // The answer was cut off by the kill: not acknowledged.
                    Err(_) => {
                        outcome.lock().unwrap().failed += 1;
                        return;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Runs [`create_load`] against `server` in a thread of its own until at least
/// [`KILL_AFTER`] creates were acknowledged (or the load is done), then calls `stop`
/// with the server and returns what `stop` returned with the load's outcome.
fn load_then<T>(server: Server, stop: impl FnOnce(Server) -> T) -> (T, LoadOutcome) {
    let outcome = Arc::new(Mutex::new(LoadOutcome::default()));
    let load = {
        let (url, token, outcome) = (
            server.url.clone(),
            server.token.clone(),
            Arc::clone(&outcome),
        );
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(create_load(url, token, outcome))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcome.lock().unwrap().acknowledged.len() < KILL_AFTER && !load.is_finished() {
        assert!(
            Instant::now() < deadline,
            "fewer than {KILL_AFTER} creates acknowledged in 60 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let stopped = stop(server);
    // Every request has a 10 s timeout and workers stop at the first failure.
    load.join().expect("the load thread panicked");
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    assert!(
        outcome.unexpected.is_empty(),
        "non-201 answers: {:?}",
        outcome.unexpected
    );
    assert!(outcome.acknowledged.len() >= KILL_AFTER, "{outcome:?}");
    (stopped, outcome)
}

/// Asserts that every acknowledged create is on `server`, as it was created.
fn assert_all_present(server: &Server, outcome: &LoadOutcome) {
    let missing = block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut missing = Vec::new();
        for (id, n) in &outcome.acknowledged {
            let response = client
                .get(format!("{}/v1/sessions/{id}", server.url))
                .bearer_auth(&server.token)
                .send()
                .await
                .expect("the restarted server answers");
            if response.status() != reqwest::StatusCode::OK {
                missing.push(format!("{id} (n={n}): {}", response.status()));
                continue;
            }
            let body: Value = response.json().await.expect("JSON");
            if body["labels"]["n"] != n.to_string().as_str() || body["phase"] != "created" {
                missing.push(format!("{id} (n={n}) came back as {body}"));
            }
        }
        missing
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates are missing or wrong after the restart: {missing:#?}",
        missing.len(),
        outcome.acknowledged.len()
    );
}

fn acknowledged_creates_survive_kill_9_under_load(backend: Backend) {
    let server = Server::start(Place::new(backend));

    // Leases taken before the crash: one session left active, one suspended.
    let active = server.create_session("coding", "dev");
    server.cli(&["session", "activate", &active]).success();
    let suspended = server.create_session("coding", "dev");
    server.cli(&["session", "activate", &suspended]).success();
    server.cli(&["session", "suspend", &suspended]).success();

    let (place, outcome) = load_then(server, Server::kill9);
    eprintln!(
        "{backend:?}: {} creates acknowledged, {} cut off by the kill",
        outcome.acknowledged.len(),
        outcome.failed
    );
    let server = Server::start(place);
    assert_all_present(&server, &outcome);

    // The restarted node reuses the leases it held before the crash, at once.
    let started = Instant::now();
    server.cli(&["session", "checkpoint", &active]).success();
    server.cli(&["session", "resume", &suspended]).success();
    server
        .cli(&["session", "activate", &outcome.acknowledged[0].0])
        .success();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "transitions waited for leases"
    );
    assert_eq!(server.session(&active)["phase"], "checkpointed");
    assert_eq!(server.session(&suspended)["phase"], "active");

    // And the server takes new work.
    let fresh = server.create_session("coding", "dev");
    server.cli(&["session", "activate", &fresh]).success();
}

/// SIGTERM while creates are in flight: the server finishes what it accepted, exits 0,
/// and everything it acknowledged is there after a restart.
fn sigterm_under_load_loses_no_acknowledged_create(backend: Backend) {
    let server = Server::start(Place::new(backend));
    let ((status, log, place), outcome) = load_then(server, Server::terminate);
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM under load should exit 0, got {status}; stderr:\n{log}"
    );
    let server = Server::start(place);
    assert_all_present(&server, &outcome);
    let run = server.cli(&[
        "session", "list", "--class", "load", "--limit", "1000", "--json",
    ]);
    run.success();
    let listed = run.json()["items"].as_array().unwrap().len();
    // Requests cut off by the shutdown may or may not have been committed.
    assert!(
        listed >= outcome.acknowledged.len()
            && listed <= outcome.acknowledged.len() + outcome.failed,
        "{listed} sessions listed, {} acknowledged, {} cut off",
        outcome.acknowledged.len(),
        outcome.failed
    );
}
