//! Durable workflows through the real binary: the crash test (runs whose steps record
//! effects at a ledger on loopback, the server killed with SIGKILL at random instants
//! and restarted, until every run completes with one recorded outcome per step and no
//! effect applied twice), and the dead-letter queue with a redrive after a policy
//! change.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::sandbox::{Sandboxed, start_with_args};
use super::{Backend, Place, on_both_backends};

on_both_backends!(
    runs_survive_kill_9_with_one_outcome_per_step,
    policy_blocked_steps_wait_in_the_dead_letter_queue,
);

/// An HTTP server on 127.0.0.2 that applies each `Idempotency-Key` once and counts the
/// deliveries that came again.
struct Ledger {
    addr: SocketAddr,
    applied: Arc<Mutex<HashMap<String, u32>>>,
}

impl Ledger {
    fn start(delay: Duration) -> Ledger {
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let applied = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        let seen = Arc::clone(&applied);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut key = None;
                        let mut length = 0usize;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                match name.to_ascii_lowercase().as_str() {
                                    "idempotency-key" => key = Some(value.trim().to_owned()),
                                    "content-length" => length = value.trim().parse().unwrap_or(0),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        std::thread::sleep(delay);
                        let status = match key {
                            Some(key) => {
                                *seen.lock().unwrap().entry(key).or_insert(0) += 1;
                                "200 OK"
                            }
                            None => "400 Bad Request",
                        };
                        let body = r#"{"ok": true}"#;
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ledger { addr, applied }
    }
}

/// A server with sandboxes whose egress policy allows `ledger.test` (127.0.0.2) and
/// resolves `blocked.test` there too, without allowing it.
fn server_args(files: &tempfile::TempDir, ledger: &Ledger) -> Vec<String> {
    let policy = json!({
        "service_classes": [{"name": "ledger", "hosts": ["ledger.test"],
            "ports": [ledger.addr.port()], "schemes": ["http"],
            "address_ranges": ["127.0.0.2/32"]}],
        "rules": [{"name": "runs", "service_classes": ["ledger"],
            "environments": ["*"], "workload_classes": ["*"]}]
    });
    let file = files.path().join("policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    vec![
        "--egress-policy".into(),
        file.to_str().unwrap().into(),
        "--egress-resolve".into(),
        "ledger.test=127.0.0.2".into(),
        "--egress-resolve".into(),
        "blocked.test=127.0.0.2".into(),
    ]
}

fn start(place: Place, args: &[String]) -> Sandboxed {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_with_args(place, &args, &[])
}

fn api(server: &Sandboxed, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    server.json(method, path, body)
}

fn put_definition(server: &Sandboxed, yaml: &str) -> String {
    let (status, body) = api(
        server,
        Method::POST,
        "/v1/workflows",
        Some(json!({"source": yaml})),
    );
    assert!(status == 201 || status == 200, "{status}: {body}");
    body["name"].as_str().unwrap().to_owned()
}

fn start_run(server: &Sandboxed, workflow: &str, session: &str) -> String {
    let (status, body) = api(
        server,
        Method::POST,
        "/v1/runs",
        Some(json!({"workflow": workflow, "session_id": session})),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn run(server: &Sandboxed, id: &str) -> Value {
    let (status, body) = api(server, Method::GET, &format!("/v1/runs/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn journal(server: &Sandboxed, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = api(
            server,
            Method::GET,
            &format!("/v1/runs/{id}/journal?after={after}&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return all;
        }
        after = items.last().unwrap()["seq"].as_u64().unwrap();
        all.extend(items);
    }
}

/// Waits (bounded) until `id` is in one of `statuses`; returns the run.
fn wait_for(server: &Sandboxed, id: &str, statuses: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = run(server, id);
        if statuses.contains(&body["status"].as_str().unwrap_or("")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} is still {} after {within:?}: {body}\njournal: {:#?}",
            body["status"],
            journal(server, id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tiny deterministic generator, so a failing schedule of kills can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn runs_survive_kill_9_with_one_outcome_per_step(backend: Backend) {
    const CYCLES: usize = 10;
    const RUNS_PER_CYCLE: usize = 5;
    let seed = std::env::var("CORDON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (set CORDON_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let ledger = Ledger::start(Duration::from_millis(60));
    let files = tempfile::tempdir().unwrap();
    let args = server_args(&files, &ledger);
    let mut server = start(Place::with_sandboxes(backend), &args);
    let session = server.active_session("default");
    let url = format!("http://ledger.test:{}/effect", ledger.addr.port());
    let workflow = put_definition(
        &server,
        &format!(
            "name: three-effects
defaults: {{timeout: 20s, retry: {{error: {{max_attempts: 20, initial_interval: 100ms, max_interval: 1s}},
  capacity: {{max_attempts: 20, initial_interval: 100ms, max_interval: 1s}},
  timeout: {{max_attempts: 20, initial_interval: 100ms, max_interval: 1s}}}}}}
steps:
  - {{name: a, kind: http, method: POST, url: \"{url}\", body: a}}
  - {{name: b, kind: http, method: POST, url: \"{url}\", body: b, needs: [a]}}
  - {{name: c, kind: http, method: POST, url: \"{url}\", body: c, needs: [b]}}
"
        ),
    );
    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..CYCLES {
        for _ in 0..RUNS_PER_CYCLE {
            ids.push(start_run(&server, &workflow, &session));
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(400)));
        let place = server.server.kill9();
        server = start(place, &args);
    }
    // Every run completes.
    for id in &ids {
        let body = wait_for(
            &server,
            id,
            &["succeeded", "failed", "cancelled"],
            Duration::from_secs(120),
        );
        assert_eq!(
            body["status"],
            "succeeded",
            "run {id}: {body}\n{:#?}",
            journal(&server, id)
        );
    }
    let drained = began.elapsed();
    if std::env::var("CORDON_CRASH_DEBUG").is_ok() {
        for id in ids.iter().take(6) {
            for e in journal(&server, id) {
                eprintln!(
                    "{id} {} {} {} {} {}",
                    e["seq"], e["step"], e["attempt"], e["kind"], e["reason"]
                );
            }
        }
    }
    // Every step has exactly one recorded outcome.
    let mut attempts = 0;
    for id in &ids {
        let entries = journal(&server, id);
        for step in ["a", "b", "c"] {
            let of_step = |kind: &str| {
                entries
                    .iter()
                    .filter(|e| e["step"] == step && e["kind"] == kind)
                    .count()
            };
            assert_eq!(
                of_step("completed"),
                1,
                "run {id} step {step}: {entries:#?}"
            );
            attempts += of_step("started");
        }
        let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "gapless journal"
        );
    }
    // Each effect was applied once: every key is a run's step, and each arrived.
    let applied = ledger.applied.lock().unwrap().clone();
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| ["a", "b", "c"].map(|s| format!("{id}/{s}")))
        .collect();
    for key in &expected {
        assert!(applied.contains_key(key), "effect {key} never arrived");
    }
    assert_eq!(
        applied.len(),
        expected.len(),
        "unexpected keys: {applied:?}"
    );
    let duplicates: u32 = applied.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test ({backend:?}): {} runs, {CYCLES} kills, {attempts} attempts for {} steps, \
         {duplicates} duplicate deliveries deduplicated by key, drained in {:.1} s",
        ids.len(),
        expected.len(),
        drained.as_secs_f64()
    );
}

fn policy_blocked_steps_wait_in_the_dead_letter_queue(backend: Backend) {
    let ledger = Ledger::start(Duration::ZERO);
    let files = tempfile::tempdir().unwrap();
    let args = server_args(&files, &ledger);
    let server = start(Place::with_sandboxes(backend), &args);
    let session = server.active_session("default");
    let port = ledger.addr.port();
    let workflow = put_definition(
        &server,
        &format!(
            "name: reaches-out
steps:
  - {{name: ok, kind: http, method: POST, url: \"http://ledger.test:{port}/a\", compensate: undo}}
  - {{name: out, kind: http, method: POST, url: \"http://blocked.test:{port}/b\", needs: [ok]}}
compensations:
  - {{name: undo, kind: http, method: POST, url: \"http://ledger.test:{port}/undo\"}}
"
        ),
    );
    // Blocked, then redriven after the policy allows the host.
    let first = start_run(&server, &workflow, &session);
    let body = wait_for(&server, &first, &["blocked"], Duration::from_secs(30));
    assert_eq!(body["reason"], "EGRESS_DESTINATION_NOT_ALLOWED", "{body}");
    let (status, dlq) = api(
        &server,
        Method::GET,
        &format!("/v1/dlq?run_id={first}"),
        None,
    );
    assert_eq!(status, 200);
    let entry = dlq["items"][0].clone();
    assert_eq!(entry["step"], "out", "{dlq}");
    assert_eq!(entry["reason"], "EGRESS_DESTINATION_NOT_ALLOWED");
    assert_eq!(entry["session_id"], session.as_str());
    assert_eq!(entry["summary"]["method"], "POST", "{entry}");
    // An agent may not redrive.
    let agent = server
        .server
        .cli(&["key", "create", "--role", "agent", "--name", "a", "--json"]);
    agent.success();
    let agent_token = agent.json()["token"].as_str().unwrap().to_owned();
    let redrive = format!("/v1/dlq/{}/redrive", entry["id"].as_str().unwrap());
    let denied = server.server.cli_as(
        &agent_token,
        &["dlq", "redrive", entry["id"].as_str().unwrap()],
    );
    denied.failure(4, "AUTHZ_DENIED");
    let policy = json!({
        "service_classes": [{"name": "ledger", "hosts": ["ledger.test", "blocked.test"],
            "ports": [port], "schemes": ["http"], "address_ranges": ["127.0.0.2/32"]}],
        "rules": [{"name": "runs", "service_classes": ["ledger"],
            "environments": ["*"], "workload_classes": ["*"]}]
    });
    let (status, body) = api(&server, Method::PUT, "/v1/egress/policy", Some(policy));
    assert!(status == 200 || status == 201, "{status}: {body}");
    let (status, body) = api(&server, Method::POST, &redrive, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "redriven");
    let body = wait_for(
        &server,
        &first,
        &["succeeded", "failed"],
        Duration::from_secs(30),
    );
    assert_eq!(body["status"], "succeeded", "{body}");
    let (status, _) = api(&server, Method::POST, &redrive, None);
    assert_eq!(status, 409, "a resolved entry cannot be redriven again");

    // Blocked again (the tenant policy no longer allows it), then discarded: the run
    // fails and compensates.
    let policy = json!({
        "service_classes": [{"name": "ledger", "hosts": ["ledger.test"],
            "ports": [port], "schemes": ["http"], "address_ranges": ["127.0.0.2/32"]}],
        "rules": [{"name": "runs", "service_classes": ["ledger"],
            "environments": ["*"], "workload_classes": ["*"]}]
    });
    let (status, body) = api(&server, Method::PUT, "/v1/egress/policy", Some(policy));
    assert!(status == 200 || status == 201, "{status}: {body}");
    let second = start_run(&server, &workflow, &session);
    wait_for(&server, &second, &["blocked"], Duration::from_secs(30));
    let listed = server
        .server
        .cli(&["dlq", "list", "--run", &second, "--json"]);
    listed.success();
    let id = listed.json()["items"][0]["id"].as_str().unwrap().to_owned();
    server
        .server
        .cli(&["dlq", "discard", &id, "--yes"])
        .success();
    let body = wait_for(&server, &second, &["failed"], Duration::from_secs(30));
    assert_eq!(body["reason"], "RUN_DEAD_LETTER_DISCARDED", "{body}");
    let entries = journal(&server, &second);
    assert!(
        entries
            .iter()
            .any(|e| e["step"] == "undo" && e["kind"] == "compensated"),
        "{entries:#?}"
    );
    let applied = ledger.applied.lock().unwrap().clone();
    assert_eq!(
        applied.get(&format!("{second}/undo")),
        Some(&1),
        "{applied:?}"
    );

    // Another tenant sees none of it.
    let other = server.server.cli(&["tenant", "create", "other", "--json"]);
    other.success();
    let tenant = other.json()["id"].as_str().unwrap().to_owned();
    let key = server.server.cli(&[
        "key", "create", "--role", "admin", "--name", "o", "--tenant", &tenant, "--json",
    ]);
    key.success();
    let token = key.json()["token"].as_str().unwrap().to_owned();
    server
        .server
        .cli_as(&token, &["run", "show", &first])
        .failure(5, "NOT_FOUND");
    server
        .server
        .cli_as(&token, &["dlq", "show", &id])
        .failure(5, "NOT_FOUND");
}
