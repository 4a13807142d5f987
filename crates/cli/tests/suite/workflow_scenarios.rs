//! Durable workflows through the real binary and the HTTP API, one scenario per test:
//! every step kind on the happy path, retries by failure class with compensations, the
//! dead-letter queue with a run that makes its own session, events, approvals and
//! timers, the durable-step API of code-driven runs, idempotent run starts, exec
//! heartbeats, tenancy, and invalid requests. Servers run sandboxes and the egress
//! gateway; the http steps reach a recording server on 127.0.0.2 that the test policy
//! allows by `address_ranges`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::sandbox::{Sandboxed, start_with_args};
use super::{Backend, Place, block_on, on_both_backends};

on_both_backends!(
    happy_path_runs_each_step_once,
    retries_follow_the_failure_class_and_compensations_run_newest_first,
    policy_denials_wait_in_the_dead_letter_queue,
    events_approvals_and_timers,
    durable_steps_replay_and_heartbeat,
    run_start_with_an_idempotency_key_starts_once,
    an_agent_reusing_a_run_key_gets_no_other_principals_run,
    exec_steps_heartbeat_through_their_file,
    another_tenant_sees_no_run_journal_or_dead_letter,
    invalid_definitions_and_unknown_workflows,
);

/// How long a scenario waits for a run to reach a status.
const RUN_WAIT: Duration = Duration::from_secs(60);

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) method: String,
    pub(super) path: String,
    /// Lowercase names.
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: String,
}

/// A plain HTTP/1.1 server on 127.0.0.2 that records every request as it arrives
/// (before it answers, so a request whose answer is lost still counts) and answers
/// `200 {"ok": true}` after a delay.
pub(super) struct Recorder {
    pub(super) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

/// How long a [`Recorder`] takes to answer: fixed, or drawn per request from
/// `min..=max` milliseconds by a seeded xorshift generator.
#[derive(Debug, Clone, Copy)]
pub(super) enum Delay {
    Fixed(Duration),
    Between { min: u64, max: u64, seed: u64 },
}

impl Recorder {
    pub(super) fn start(delay: Duration) -> Recorder {
        Self::start_with(Delay::Fixed(delay))
    }

    pub(super) fn start_with(delay: Delay) -> Recorder {
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let state = Arc::new(Mutex::new(match delay {
            Delay::Between { seed, .. } => seed | 1,
            Delay::Fixed(_) => 1,
        }));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                let state = Arc::clone(&state);
                let next_delay = move || match delay {
                    Delay::Fixed(d) => d,
                    Delay::Between { min, max, .. } => {
                        let mut x = state.lock().unwrap();
                        *x ^= *x << 13;
                        *x ^= *x >> 7;
                        *x ^= *x << 17;
                        Duration::from_millis(min + *x % (max - min + 1))
                    }
                };
                std::thread::spawn(move || serve(stream, &log, next_delay));
            }
        });
        Recorder { addr, received }
    }

    pub(super) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(super) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Answers requests on one connection until it closes (bounded by a read timeout).
fn serve(stream: std::net::TcpStream, log: &Mutex<Vec<Received>>, delay: impl Fn() -> Duration) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = BTreeMap::new();
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
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        log.lock().unwrap().push(Received {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        std::thread::sleep(delay());
        let body = r#"{"ok": true}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// An egress policy that allows `hosts` on the recorder's port (all at 127.0.0.2).
pub(super) fn policy_allowing(recorder: &Recorder, hosts: &[&str]) -> Value {
    json!({
        "service_classes": [{"name": "recorder", "hosts": hosts,
            "ports": [recorder.port()], "schemes": ["http"],
            "address_ranges": ["127.0.0.2/32"]}],
        "rules": [{"name": "runs", "service_classes": ["recorder"],
            "environments": ["*"], "workload_classes": ["*"]}]
    })
}

/// Server arguments: a policy that allows `up.test` (not `blocked.test`), both names
/// resolving to 127.0.0.2.
pub(super) fn server_args(files: &tempfile::TempDir, recorder: &Recorder) -> Vec<String> {
    let file = files.path().join("policy.json");
    std::fs::write(&file, policy_allowing(recorder, &["up.test"]).to_string()).unwrap();
    vec![
        "--egress-policy".into(),
        file.to_str().unwrap().into(),
        "--egress-resolve".into(),
        "up.test=127.0.0.2".into(),
        "--egress-resolve".into(),
        "blocked.test=127.0.0.2".into(),
    ]
}

pub(super) fn start(place: Place, args: &[String]) -> Sandboxed {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_with_args(place, &args, &[])
}

/// A sandboxed server with the recorder allowed, and the things that must outlive it.
struct World {
    s: Sandboxed,
    up: Recorder,
    _files: tempfile::TempDir,
}

fn world(backend: Backend) -> World {
    world_with_delay(backend, Duration::ZERO)
}

fn world_with_delay(backend: Backend, delay: Duration) -> World {
    let up = Recorder::start(delay);
    let files = tempfile::tempdir().unwrap();
    let args = server_args(&files, &up);
    World {
        s: start(Place::with_sandboxes(backend), &args),
        up,
        _files: files,
    }
}

impl World {
    fn admin(&self) -> String {
        self.s.server.token.clone()
    }

    fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.s, token, method, path, &[], body)
    }

    /// A call as the system admin.
    fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.admin(), method, path, body)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.up.port())
    }

    /// A new key of `role` in the system admin's tenant; its token.
    fn key(&self, role: &str) -> String {
        let run = self
            .s
            .server
            .cli(&["key", "create", "--role", role, "--name", role, "--json"]);
        run.success();
        run.json()["token"].as_str().unwrap().to_owned()
    }
}

/// One API call with `token`; the answer's status and JSON body (Null when empty).
pub(super) fn call(
    server: &Sandboxed,
    token: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, value) = call_full(server, token, method, path, headers, body);
    (status, value)
}

/// [`call`], with the answer's headers (lowercase names).
pub(super) fn call_full(
    server: &Sandboxed,
    token: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, BTreeMap<String, String>, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, server.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(60));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, answer_headers, bytes) = block_on(async {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        (status, headers, response.bytes().await.unwrap().to_vec())
    });
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path} answered {status}, not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, answer_headers, value)
}

/// Stores a definition (YAML); its digest.
pub(super) fn define(server: &Sandboxed, yaml: &str) -> String {
    let (status, body) = call(
        server,
        &server.server.token,
        Method::POST,
        "/v1/workflows",
        &[],
        Some(json!({"source": yaml})),
    );
    assert!(status == 201 || status == 200, "{status}: {body}\n{yaml}");
    body["digest"].as_str().unwrap().to_owned()
}

/// Starts a run as the system admin with `request`; the run's id.
pub(super) fn start_run(server: &Sandboxed, request: Value) -> String {
    let (status, body) = call(
        server,
        &server.server.token,
        Method::POST,
        "/v1/runs",
        &[],
        Some(request.clone()),
    );
    assert_eq!(status, 201, "starting {request}: {body}");
    body["id"].as_str().unwrap().to_owned()
}

pub(super) fn get_run(server: &Sandboxed, id: &str) -> Value {
    let (status, body) = call(
        server,
        &server.server.token,
        Method::GET,
        &format!("/v1/runs/{id}"),
        &[],
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// The whole journal of a run, page by page.
pub(super) fn journal(server: &Sandboxed, id: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let after = all.last().map_or(0, |e| e["seq"].as_u64().unwrap());
        let (status, body) = call(
            server,
            &server.server.token,
            Method::GET,
            &format!("/v1/runs/{id}/journal?after={after}&limit=1000"),
            &[],
            None,
        );
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return all;
        }
        all.extend(items);
    }
    panic!("the journal of {id} has more than 100 pages");
}

/// The journal, one line per entry, for failure messages.
pub(super) fn describe(entries: &[Value]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "{:>3} {:<10} #{} {:<24} {:<32} {}",
                e["seq"],
                e["step"].as_str().unwrap_or("-"),
                e["attempt"],
                e["kind"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["detail"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (bounded) until the run satisfies `done`; returns it. Panics with the run and
/// its journal otherwise.
pub(super) fn wait_until(
    server: &Sandboxed,
    id: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = get_run(server, id);
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "run {id}: no {what} after {within:?}; the run: {body}\njournal:\n{}",
            describe(&journal(server, id))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the run's status is one of `statuses`.
pub(super) fn wait_status(server: &Sandboxed, id: &str, statuses: &[&str]) -> Value {
    wait_until(server, id, &format!("status {statuses:?}"), RUN_WAIT, |r| {
        statuses.contains(&r["status"].as_str().unwrap_or(""))
    })
}

/// A step of a run body by name.
fn step<'r>(run: &'r Value, name: &str) -> &'r Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

fn waiting_step(server: &Sandboxed, id: &str, name: &str) -> Value {
    wait_until(server, id, &format!("step {name} waiting"), RUN_WAIT, |r| {
        r["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == name && s["status"] == "waiting")
        })
    })
}

/// Entries of `kind` for `step`.
fn entries<'j>(history: &'j [Value], step: &str, kind: &str) -> Vec<&'j Value> {
    history
        .iter()
        .filter(|e| e["step"] == step && e["kind"] == kind)
        .collect()
}

/// The step names of the journal's entries of `kind`, in journal order.
fn steps_of_kind(history: &[Value], kind: &str) -> Vec<String> {
    history
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["step"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[track_caller]
fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "expected {want_status} {code}: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

/// exec + http + checkpoint + noop, with two branches that join: the run succeeds, each
/// step completes exactly once, the exec sees its idempotency key and the upstream gets
/// it as `Idempotency-Key`.
fn happy_path_runs_each_step_once(backend: Backend) {
    let w = world(backend);
    let session = w.s.active_session("default");
    let effect = w.url("up.test", "/effect?x=1");
    let digest = define(
        &w.s,
        &format!(
            r#"name: every-kind
steps:
  - name: a
    kind: exec
    argv: [sh, -c, "echo key=$CORDON_IDEMPOTENCY_KEY run=$CORDON_RUN_ID step=$CORDON_STEP attempt=$CORDON_ATTEMPT greeting=${{input.greeting}}"]
  - name: b
    kind: http
    method: POST
    url: "{effect}"
    headers: {{x-run: "${{run.id}}", x-step-key: "${{step.idempotency_key}}"}}
    body: "exit=${{steps.a.output.exit_code}}"
    needs: [a]
  - {{name: c, kind: noop, output: {{branch: c}}, needs: [a]}}
  - {{name: d, kind: checkpoint, summary: after the branches, needs: [b, c]}}
  - {{name: e, kind: noop, output: {{joined: true}}, needs: [d]}}
"#
        ),
    );
    let id = start_run(
        &w.s,
        json!({"definition": digest, "session_id": session, "input": {"greeting": "hi"}}),
    );
    let run = wait_status(&w.s, &id, &["succeeded", "failed", "cancelled", "blocked"]);
    let history = journal(&w.s, &id);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", describe(&history));

    for name in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            entries(&history, name, "completed").len(),
            1,
            "step {name}:\n{}",
            describe(&history)
        );
        assert_eq!(step(&run, name)["status"], "succeeded", "{run}");
        assert_eq!(step(&run, name)["attempt"], 1, "{run}");
    }
    for name in ["a", "b", "d"] {
        assert_eq!(
            entries(&history, name, "started").len(),
            1,
            "step {name}:\n{}",
            describe(&history)
        );
    }
    // The branches ran after `a` and before `d`; `e` last.
    let completed = steps_of_kind(&history, "completed");
    let at = |n: &str| completed.iter().position(|s| s == n).unwrap();
    assert!(at("a") < at("b") && at("a") < at("c"), "{completed:?}");
    assert!(at("b") < at("d") && at("c") < at("d") && at("d") < at("e"));
    assert_eq!(
        steps_of_kind(&history, "run_succeeded").len(),
        1,
        "{}",
        describe(&history)
    );

    // The exec saw the step's key and the run's variables.
    let stdout = step(&run, "a")["output"]["stdout"].as_str().unwrap();
    assert_eq!(
        stdout.trim(),
        format!("key={id}/a run={id} step=a attempt=1 greeting=hi"),
        "{run}"
    );
    // The upstream got one request, with the step's key.
    let received = w.up.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/effect?x=1");
    assert_eq!(
        request.headers.get("idempotency-key"),
        Some(&format!("{id}/b")),
        "{request:?}"
    );
    assert_eq!(request.headers.get("x-run"), Some(&id), "{request:?}");
    assert_eq!(
        request.headers.get("x-step-key"),
        Some(&format!("{id}/b")),
        "{request:?}"
    );
    assert_eq!(request.body, "exit=0");
    assert_eq!(step(&run, "b")["output"]["status"], 200, "{run}");
    assert_eq!(step(&run, "b")["output"]["body"]["ok"], true, "{run}");
    // The checkpoint made a version; the run's output holds every step's output.
    let version = step(&run, "d")["output"]["version"].as_str().unwrap_or("");
    assert!(!version.is_empty(), "{run}");
    assert_eq!(run["output"]["e"], json!({"joined": true}), "{run}");
    assert_eq!(run["output"]["c"], json!({"branch": "c"}), "{run}");
    let (status, versions) = w.api(
        Method::GET,
        &format!("/v1/sessions/{session}/versions"),
        None,
    );
    assert_eq!(status, 200, "{versions}");
    assert!(versions.to_string().contains(version), "{versions}");
}

/// An error that goes away is retried by the error policy; an exit code listed as
/// non-retryable fails at once; exhausted retries fail the run; either way the
/// compensations of the succeeded steps run, newest first.
fn retries_follow_the_failure_class_and_compensations_run_newest_first(backend: Backend) {
    let w = world(backend);
    let session = w.s.active_session("default");
    // `a` fails until its third attempt (a counter file per run).
    let digest = define(
        &w.s,
        r#"name: retries
steps:
  - name: a
    kind: exec
    argv: [sh, -c, "f=/workspace/count-$CORDON_RUN_ID; n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f; if [ $n -lt 3 ]; then echo not yet $n >&2; exit 1; fi; echo done at attempt $CORDON_ATTEMPT"]
    retry: {error: {max_attempts: 3, initial_interval: 100ms}}
    compensate: undo-a
  - {name: b, kind: noop, needs: [a], compensate: undo-b}
  - name: c
    kind: exec
    argv: [sh, -c, "exit ${input.code}"]
    needs: [b]
    retry: {error: {max_attempts: 2, initial_interval: 100ms}, non_retryable_exit_codes: [42]}
compensations:
  - {name: undo-a, kind: exec, argv: [sh, -c, "echo undo-a >> /workspace/undo-$CORDON_RUN_ID"]}
  - {name: undo-b, kind: exec, argv: [sh, -c, "echo undo-b >> /workspace/undo-$CORDON_RUN_ID"]}
"#,
    );
    let fatal = start_run(
        &w.s,
        json!({"definition": digest, "session_id": session, "input": {"code": 42}}),
    );
    let exhausted = start_run(
        &w.s,
        json!({"definition": digest, "session_id": session, "input": {"code": 1}}),
    );
    for (id, attempts_of_c) in [(&fatal, 1), (&exhausted, 2)] {
        let run = wait_status(&w.s, id, &["succeeded", "failed", "cancelled", "blocked"]);
        let history = journal(&w.s, id);
        let log = describe(&history);
        assert_eq!(run["status"], "failed", "{run}\n{log}");
        assert_eq!(run["reason"], "STEP_EXIT_NONZERO", "{run}\n{log}");

        // `a`: two failed attempts of class error, each scheduling a retry, then success
        // at attempt 3.
        let a = step(&run, "a");
        assert_eq!(a["status"], "succeeded", "{run}");
        assert_eq!(a["attempt"], 3, "{run}");
        assert!(
            a["output"]["stdout"]
                .as_str()
                .unwrap()
                .contains("done at attempt 3"),
            "{run}"
        );
        let failed_a = entries(&history, "a", "failed");
        assert_eq!(failed_a.len(), 2, "{log}");
        for (n, entry) in failed_a.iter().enumerate() {
            assert_eq!(entry["attempt"], n + 1, "{log}");
            assert_eq!(entry["reason"], "STEP_EXIT_NONZERO", "{log}");
            assert_eq!(entry["detail"]["class"], "error", "{log}");
            assert!(entry["detail"]["retry_in_ms"].is_u64(), "{log}");
        }
        assert_eq!(entries(&history, "a", "completed").len(), 1, "{log}");

        // `c`: as many attempts as its policy allows for this exit code, the last final.
        let c = step(&run, "c");
        assert_eq!(c["status"], "failed", "{run}");
        assert_eq!(c["attempt"], attempts_of_c, "{run}");
        assert_eq!(
            entries(&history, "c", "started").len(),
            attempts_of_c,
            "{log}"
        );
        let failed_c = entries(&history, "c", "failed");
        assert_eq!(failed_c.len(), attempts_of_c, "{log}");
        let last = failed_c.last().unwrap();
        assert_eq!(last["detail"]["final"], true, "{log}");
        let code = if attempts_of_c == 1 { 42 } else { 1 };
        assert_eq!(last["detail"]["exit_code"], code, "{log}");
        assert_eq!(c["error"]["exit_code"], code, "{run}");
        assert_eq!(c["error"]["class"], "error", "{run}");
        assert!(entries(&history, "c", "completed").is_empty(), "{log}");

        // Compensations: `b` succeeded last, so its undo runs first.
        assert_eq!(
            steps_of_kind(&history, "compensated"),
            ["undo-b", "undo-a"],
            "{log}"
        );
        let for_steps: Vec<&Value> = history
            .iter()
            .filter(|e| e["kind"] == "compensated")
            .map(|e| &e["detail"]["for_step"])
            .collect();
        assert_eq!(for_steps, [&json!("b"), &json!("a")], "{log}");
        let undo = w.s.ok(&session, &format!("cat /workspace/undo-{id}"));
        assert_eq!(undo, "undo-b\nundo-a\n", "{log}");
        let compensations = run["compensations"].as_array().unwrap();
        assert_eq!(compensations.len(), 2, "{run}");
        assert!(
            compensations
                .iter()
                .all(|c| c["status"] == "succeeded" && c["compensates"].is_string()),
            "{run}"
        );
        // The run's failure is journalled once, after its compensations.
        let kinds: Vec<&str> = history
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.last(), Some(&"run_failed"), "{log}");
        assert_eq!(kinds.iter().filter(|k| **k == "run_failed").count(), 1);
    }
}

/// An http step to a host the egress policy does not allow blocks its run in the
/// dead-letter queue; after the policy allows it, a redrive lets the run succeed. A run
/// started without a session makes its own and closes it when it ends. A discarded entry
/// fails its run.
fn policy_denials_wait_in_the_dead_letter_queue(backend: Backend) {
    let w = world(backend);
    let digest = define(
        &w.s,
        &format!(
            "name: reaches-out
steps:
  - {{name: first, kind: http, method: POST, url: \"{}\", compensate: undo}}
  - {{name: out, kind: http, method: POST, url: \"{}\", needs: [first]}}
compensations:
  - {{name: undo, kind: http, method: POST, url: \"{}\"}}
",
            w.url("up.test", "/first"),
            w.url("blocked.test", "/out?secret=no"),
            w.url("up.test", "/undo"),
        ),
    );
    // No session given: each run makes its own.
    let redriven = start_run(&w.s, json!({"definition": digest}));
    let discarded = start_run(&w.s, json!({"definition": digest}));
    let mut dead_letters = Vec::new();
    for id in [&redriven, &discarded] {
        let run = wait_status(&w.s, id, &["blocked", "succeeded", "failed", "cancelled"]);
        let history = journal(&w.s, id);
        let log = describe(&history);
        assert_eq!(run["status"], "blocked", "{run}\n{log}");
        assert_eq!(run["reason"], "EGRESS_DESTINATION_NOT_ALLOWED", "{run}");
        let session = run["session_id"].as_str().expect("the run's own session");
        let out = step(&run, "out");
        assert_eq!(out["status"], "blocked", "{run}");
        assert_eq!(out["error"]["class"], "policy", "{run}");
        let blocked = entries(&history, "out", "blocked");
        assert_eq!(blocked.len(), 1, "{log}");
        assert_eq!(
            blocked[0]["reason"], "EGRESS_DESTINATION_NOT_ALLOWED",
            "{log}"
        );
        // Policy failures are not retried.
        assert_eq!(entries(&history, "out", "started").len(), 1, "{log}");

        let (status, list) = w.api(Method::GET, &format!("/v1/dlq?run_id={id}"), None);
        assert_eq!(status, 200, "{list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        let entry = &items[0];
        assert_eq!(entry["run_id"], id.as_str(), "{entry}");
        assert_eq!(entry["step"], "out", "{entry}");
        assert_eq!(entry["status"], "open", "{entry}");
        assert_eq!(entry["reason"], "EGRESS_DESTINATION_NOT_ALLOWED", "{entry}");
        assert_eq!(entry["session_id"], session, "{entry}");
        assert_eq!(entry["summary"]["method"], "POST", "{entry}");
        assert!(
            !entry.to_string().contains("secret=no"),
            "the summary keeps the query: {entry}"
        );
        let dead_letter = entry["id"].as_str().unwrap().to_owned();
        let (status, one) = w.api(Method::GET, &format!("/v1/dlq/{dead_letter}"), None);
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["id"], dead_letter.as_str());
        dead_letters.push(dead_letter);
    }
    // The blocked host saw nothing: the gateway refused before connecting.
    assert!(
        w.up.received().iter().all(|r| r.path != "/out?secret=no"),
        "{:?}",
        w.up.received()
    );

    // Discard the second: its run fails and its compensation runs.
    let (status, body) = w.api(
        Method::POST,
        &format!("/v1/dlq/{}/discard", dead_letters[1]),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "discarded", "{body}");
    let run = wait_status(&w.s, &discarded, &["failed", "succeeded", "cancelled"]);
    let log = describe(&journal(&w.s, &discarded));
    assert_eq!(run["status"], "failed", "{run}\n{log}");
    assert_eq!(run["reason"], "RUN_DEAD_LETTER_DISCARDED", "{run}\n{log}");
    assert_eq!(
        steps_of_kind(&journal(&w.s, &discarded), "compensated"),
        ["undo"],
        "{log}"
    );
    let undo_key = format!("{discarded}/undo");
    assert!(
        w.up.received()
            .iter()
            .any(|r| r.path == "/undo" && r.headers.get("idempotency-key") == Some(&undo_key)),
        "{:?}",
        w.up.received()
    );
    // A resolved entry cannot be resolved again.
    let (status, body) = w.api(
        Method::POST,
        &format!("/v1/dlq/{}/redrive", dead_letters[1]),
        None,
    );
    assert_error(status, &body, 409, "RUN_INVALID_STATE");

    // Redriving before the policy changes blocks the step again, in a new entry.
    let (status, body) = w.api(
        Method::POST,
        &format!("/v1/dlq/{}/redrive", dead_letters[0]),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "redriven", "{body}");
    let deadline = Instant::now() + RUN_WAIT;
    let again = loop {
        let (status, list) = w.api(Method::GET, &format!("/v1/dlq?run_id={redriven}"), None);
        assert_eq!(status, 200, "{list}");
        if let Some(entry) = list["items"].as_array().unwrap().first() {
            break entry["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the redriven step was not blocked again: {}\n{}",
            get_run(&w.s, &redriven),
            describe(&journal(&w.s, &redriven))
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(again, dead_letters[0]);
    let run = wait_status(&w.s, &redriven, &["blocked", "succeeded", "failed"]);
    assert_eq!(run["status"], "blocked", "{run}");
    let (_, all) = w.api(
        Method::GET,
        &format!("/v1/dlq?run_id={redriven}&status=all"),
        None,
    );
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");

    // Allow the host, then redrive: the run succeeds.
    let (status, body) = w.api(
        Method::PUT,
        "/v1/egress/policy",
        Some(policy_allowing(&w.up, &["up.test", "blocked.test"])),
    );
    assert!(status == 200 || status == 201, "{status}: {body}");
    let (status, body) = w.api(Method::POST, &format!("/v1/dlq/{again}/redrive"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "redriven", "{body}");
    assert!(body["resolved_by"].is_string(), "{body}");
    let run = wait_status(&w.s, &redriven, &["succeeded", "failed", "cancelled"]);
    let history = journal(&w.s, &redriven);
    let log = describe(&history);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    assert_eq!(entries(&history, "out", "completed").len(), 1, "{log}");
    assert_eq!(entries(&history, "first", "completed").len(), 1, "{log}");
    let out_key = format!("{redriven}/out");
    let delivered: Vec<Received> =
        w.up.received()
            .into_iter()
            .filter(|r| r.headers.get("idempotency-key") == Some(&out_key))
            .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].path, "/out?secret=no");
    let (status, open) = w.api(Method::GET, "/v1/dlq", None);
    assert_eq!(status, 200);
    assert_eq!(open["items"], json!([]), "nothing left open: {open}");

    // Both runs made their own session and closed it when they ended.
    for id in [&redriven, &discarded] {
        let session = get_run(&w.s, id)["session_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let phase = w.s.server.session(&session)["phase"].clone();
            if phase == "closed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the session {session} of run {id} is still {phase}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A sleep, an event and an approval: the run waits for each. An agent may not approve;
/// an operator may. A waiting run cancelled runs its compensations.
fn events_approvals_and_timers(backend: Backend) {
    let w = world(backend);
    let agent = w.key("agent");
    let operator = w.key("operator");
    let digest = define(
        &w.s,
        r#"name: people-in-the-loop
steps:
  - {name: nap, kind: sleep, duration: 500ms}
  - {name: ev, kind: wait_for_event, event: go, timeout: 60s, needs: [nap]}
  - {name: ok, kind: approval, prompt: ship it?, timeout: 60s, needs: [ev]}
  - {name: done, kind: noop, output: shipped, needs: [ok]}
"#,
    );
    let began = Instant::now();
    let id = start_run(&w.s, json!({"definition": digest}));
    let run = waiting_step(&w.s, &id, "ev");
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "the sleep ended early"
    );
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(step(&run, "nap")["status"], "succeeded", "{run}");
    // No session was needed, so none was made.
    assert!(run["session_id"].is_null(), "{run}");

    // The event, with a payload that becomes the step's output.
    let (status, body) = w.api(
        Method::POST,
        &format!("/v1/runs/{id}/events"),
        Some(json!({"event": "go", "payload": {"build": 7}})),
    );
    assert_eq!(status, 200, "{body}");
    let run = waiting_step(&w.s, &id, "ok");
    assert_eq!(step(&run, "ev")["output"], json!({"build": 7}), "{run}");

    // An agent cannot approve.
    let (status, body) = w.call(
        &agent,
        Method::POST,
        &format!("/v1/runs/{id}/approve"),
        Some(json!({"step": "ok", "comment": "lgtm"})),
    );
    assert_error(status, &body, 403, "AUTHZ_DENIED");
    assert_eq!(get_run(&w.s, &id)["status"], "waiting");
    // An operator can.
    let (status, body) = w.call(
        &operator,
        Method::POST,
        &format!("/v1/runs/{id}/approve"),
        Some(json!({"step": "ok", "comment": "lgtm"})),
    );
    assert_eq!(status, 200, "{body}");
    let run = wait_status(&w.s, &id, &["succeeded", "failed", "cancelled"]);
    let history = journal(&w.s, &id);
    let log = describe(&history);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    assert_eq!(step(&run, "ok")["output"]["comment"], "lgtm", "{run}");
    assert!(
        step(&run, "ok")["output"]["approved_by"].is_string(),
        "{run}"
    );
    for name in ["nap", "ev", "ok", "done"] {
        assert_eq!(entries(&history, name, "completed").len(), 1, "{log}");
    }
    assert_eq!(run["output"]["done"], "shipped", "{run}");

    // Cancel a run waiting for an event: its succeeded step's compensation runs.
    let digest = define(
        &w.s,
        r#"name: cancel-me
steps:
  - {name: a, kind: noop, compensate: undo-a}
  - {name: b, kind: noop, needs: [a], compensate: undo-b}
  - {name: wait, kind: wait_for_event, event: never, needs: [b]}
  - {name: after, kind: noop, needs: [wait], compensate: undo-after}
compensations:
  - {name: undo-a, kind: noop, output: undone-a}
  - {name: undo-b, kind: noop, output: undone-b}
  - {name: undo-after, kind: noop}
"#,
    );
    let id = start_run(&w.s, json!({"definition": digest}));
    waiting_step(&w.s, &id, "wait");
    // An agent cannot cancel another's run either (it does not see it).
    let (status, body) = w.call(
        &agent,
        Method::POST,
        &format!("/v1/runs/{id}/cancel"),
        Some(json!({"reason": "nope"})),
    );
    assert!(status == 403 || status == 404, "{status}: {body}");
    let (status, body) = w.call(
        &operator,
        Method::POST,
        &format!("/v1/runs/{id}/cancel"),
        Some(json!({"reason": "changed my mind"})),
    );
    assert_eq!(status, 200, "{body}");
    let run = wait_status(&w.s, &id, &["cancelled", "failed", "succeeded"]);
    let history = journal(&w.s, &id);
    let log = describe(&history);
    assert_eq!(run["status"], "cancelled", "{run}\n{log}");
    assert_eq!(run["reason"], "RUN_CANCELLED", "{run}\n{log}");
    assert_eq!(
        steps_of_kind(&history, "compensated"),
        ["undo-b", "undo-a"],
        "{log}"
    );
    assert_eq!(step(&run, "wait")["status"], "skipped", "{run}");
    assert_eq!(step(&run, "after")["status"], "skipped", "{run}");
    assert_eq!(history.last().unwrap()["kind"], "run_cancelled", "{log}");
    // A finished run takes no more commands.
    let (status, body) = w.api(Method::POST, &format!("/v1/runs/{id}/cancel"), None);
    assert_error(status, &body, 409, "RUN_INVALID_STATE");
}

/// A run driven by agent code: a completed step answers its recorded output again
/// (`replayed`), a heartbeating attempt cannot be started twice, and one whose heartbeat
/// lapsed is replaced by a new attempt.
fn durable_steps_replay_and_heartbeat(backend: Backend) {
    let w = world(backend);
    let agent = w.key("agent");
    let (status, run) = w.call(
        &agent,
        Method::POST,
        "/v1/runs",
        Some(json!({"name": "agent-loop", "input": {"task": "t"}})),
    );
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(run["name"], "agent-loop");
    let step_call = |name: &str, body: Value| {
        w.call(
            &agent,
            Method::POST,
            &format!("/v1/runs/{id}/steps/{name}"),
            Some(body),
        )
    };

    let (status, reply) = step_call("fetch", json!({"action": "start"}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attempt"], 1, "{reply}");
    assert_eq!(reply["replayed"], false, "{reply}");
    assert_eq!(reply["status"], "running", "{reply}");
    assert_eq!(reply["idempotency_key"], format!("{id}/fetch"), "{reply}");
    let (status, reply) = step_call(
        "fetch",
        json!({"action": "complete", "output": {"pages": 3}}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["status"], "succeeded", "{reply}");
    // The agent restarts and asks again: the recorded outcome, nothing new.
    let journal_before = journal(&w.s, &id).len();
    let (status, reply) = step_call("fetch", json!({"action": "start"}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["replayed"], true, "{reply}");
    assert_eq!(reply["status"], "succeeded", "{reply}");
    assert_eq!(reply["attempt"], 1, "{reply}");
    assert_eq!(reply["output"], json!({"pages": 3}), "{reply}");
    let (status, reply) = step_call(
        "fetch",
        json!({"action": "complete", "output": {"pages": 99}}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["replayed"], true, "{reply}");
    assert_eq!(
        reply["output"],
        json!({"pages": 3}),
        "recorded once: {reply}"
    );
    assert_eq!(
        journal(&w.s, &id).len(),
        journal_before,
        "a replay wrote to the journal"
    );

    // A heartbeating attempt is in flight: a second start is refused.
    let (status, reply) = step_call(
        "think",
        json!({"action": "start", "heartbeat_timeout": "1s"}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attempt"], 1, "{reply}");
    let (status, body) = step_call("think", json!({"action": "start"}));
    assert_error(status, &body, 409, "RUN_STEP_IN_FLIGHT");
    let (status, reply) = step_call("think", json!({"action": "heartbeat"}));
    assert_eq!(status, 200, "{reply}");
    // The heartbeat lapses: the next start is a new attempt.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, reply) = step_call(
        "think",
        json!({"action": "start", "heartbeat_timeout": "1s"}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attempt"], 2, "{reply}");
    assert_eq!(reply["replayed"], false, "{reply}");
    assert_eq!(reply["idempotency_key"], format!("{id}/think"), "{reply}");
    let (status, reply) = step_call("think", json!({"action": "complete", "output": "thought"}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attempt"], 2, "{reply}");

    let (status, run) = w.call(
        &agent,
        Method::POST,
        &format!("/v1/runs/{id}/finish"),
        Some(json!({"status": "succeeded", "output": {"answer": 42}})),
    );
    assert_eq!(status, 200, "{run}");
    let run = wait_status(&w.s, &id, &["succeeded", "failed", "cancelled"]);
    let history = journal(&w.s, &id);
    let log = describe(&history);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    assert_eq!(run["output"], json!({"answer": 42}), "{run}");
    assert_eq!(entries(&history, "fetch", "completed").len(), 1, "{log}");
    assert_eq!(entries(&history, "think", "completed").len(), 1, "{log}");
    assert_eq!(entries(&history, "think", "started").len(), 2, "{log}");
    let lapsed = entries(&history, "think", "failed");
    assert_eq!(lapsed.len(), 1, "{log}");
    assert_eq!(lapsed[0]["reason"], "STEP_HEARTBEAT_TIMEOUT", "{log}");
    assert_eq!(lapsed[0]["attempt"], 1, "{log}");
    // A finished run takes no new step.
    let (status, body) = step_call("late", json!({"action": "start"}));
    assert_error(status, &body, 409, "RUN_INVALID_STATE");
    // A definition run's steps are the engine's, not the agent's.
    let digest = define(&w.s, "name: engine-only\nsteps: [{name: a, kind: noop}]");
    let engine_run = start_run(&w.s, json!({"definition": digest}));
    let (status, body) = w.api(
        Method::POST,
        &format!("/v1/runs/{engine_run}/steps/a"),
        Some(json!({"action": "start"})),
    );
    assert_error(status, &body, 409, "RUN_INVALID_STATE");
}

/// The same `Idempotency-Key` starts one run. The same caller asking again gets the
/// recorded answer replayed (the API's idempotency layer); another key of the tenant
/// gets the run the engine already started (200).
fn run_start_with_an_idempotency_key_starts_once(backend: Backend) {
    let w = world(backend);
    let operator = w.key("operator");
    let digest = define(
        &w.s,
        "name: once\nsteps: [{name: a, kind: sleep, duration: 300ms}]",
    );
    let admin = w.admin();
    let start = |token: &str, key: &str, n: u32| {
        call_full(
            &w.s,
            token,
            Method::POST,
            "/v1/runs",
            &[("Idempotency-Key", key)],
            Some(json!({"definition": digest, "input": {"n": n}})),
        )
    };
    let (status, _, first) = start(&admin, "start-once-1", 1);
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();

    // The same caller, the same request: the same run.
    let (status, headers, again) = start(&admin, "start-once-1", 1);
    assert_eq!(again["id"], id.as_str(), "{again}");
    let replayed = headers.contains_key("idempotent-replayed");
    assert!(
        status == 200 || (status == 201 && replayed),
        "the second answer is {status} (replayed: {replayed}): {again}"
    );
    eprintln!("same caller, same key: {status}, idempotent-replayed: {replayed}");
    // The same caller, the same key, another request: refused.
    let (status, _, body) = start(&admin, "start-once-1", 2);
    assert_error(status, &body, 422, "IDEMPOTENCY_KEY_REUSED");

    // Another key of the tenant with the same Idempotency-Key: keys are scoped to the
    // caller, so it starts a run of its own and never sees the first one.
    let (status, _, theirs) = start(&operator, "start-once-1", 1);
    assert_eq!(status, 201, "{theirs}");
    assert_ne!(theirs["id"], id.as_str(), "{theirs}");
    let (status, _, again) = start(&operator, "start-once-1", 1);
    assert!(status == 200 || status == 201, "{again}");
    assert_eq!(again["id"], theirs["id"], "{again}");

    // Another key, another run.
    let (status, _, other) = start(&admin, "start-once-2", 1);
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], id.as_str());
    let (status, list) = w.api(Method::GET, "/v1/runs?name=once", None);
    assert_eq!(status, 200, "{list}");
    let mine: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["created_by"] == first["created_by"])
        .collect();
    assert_eq!(mine.len(), 2, "{list}");
}

/// An agent sees only the runs it started (another's is 404). Reusing the
/// `Idempotency-Key` another principal started a run with must not hand it that run.
fn an_agent_reusing_a_run_key_gets_no_other_principals_run(backend: Backend) {
    let w = world(backend);
    let agent = w.key("agent");
    let digest = define(
        &w.s,
        "name: mine\nsteps: [{name: a, kind: noop, output: private}]",
    );
    let request = json!({"definition": digest, "input": {"secret": "admin-only"}});
    let (status, _, first) = call_full(
        &w.s,
        &w.admin(),
        Method::POST,
        "/v1/runs",
        &[("Idempotency-Key", "shared-key")],
        Some(request.clone()),
    );
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    wait_status(&w.s, &id, &["succeeded"]);
    let (status, body) = w.call(&agent, Method::GET, &format!("/v1/runs/{id}"), None);
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, _, body) = call_full(
        &w.s,
        &agent,
        Method::POST,
        "/v1/runs",
        &[("Idempotency-Key", "shared-key")],
        Some(request),
    );
    assert!(
        body["id"] != id.as_str() && body["created_by"] != first["created_by"],
        "an agent got another principal's run through a reused Idempotency-Key ({status}): {body}"
    );
}

/// An exec step with a heartbeat window fails its attempt with STEP_HEARTBEAT_TIMEOUT
/// when it does not touch `$CORDON_HEARTBEAT_FILE`, and lives as long as it does.
fn exec_steps_heartbeat_through_their_file(backend: Backend) {
    let w = world(backend);
    let session = w.s.active_session("default");
    let digest = define(
        &w.s,
        r#"name: heartbeats
steps:
  - name: s
    kind: exec
    argv: [sh, -c, "${input.script}"]
    heartbeat: 1s
    timeout: 30s
    retry: {timeout: {max_attempts: 1}}
"#,
    );
    let silent = start_run(
        &w.s,
        json!({"definition": digest, "session_id": session,
               "input": {"script": "sleep 5; echo woke"}}),
    );
    let alive = start_run(
        &w.s,
        json!({"definition": digest, "session_id": session,
               "input": {"script": "i=0; while [ $i -lt 10 ]; do touch \"$CORDON_HEARTBEAT_FILE\"; sleep 0.3; i=$((i+1)); done; echo alive"}}),
    );
    let began = Instant::now();
    let run = wait_status(&w.s, &silent, &["succeeded", "failed", "cancelled"]);
    let journal_silent = journal(&w.s, &silent);
    let log = describe(&journal_silent);
    assert_eq!(run["status"], "failed", "{run}\n{log}");
    assert_eq!(run["reason"], "STEP_HEARTBEAT_TIMEOUT", "{run}\n{log}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the silent attempt ran to its end ({:?}) instead of timing out",
        began.elapsed()
    );
    let failed = entries(&journal_silent, "s", "failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(failed[0]["reason"], "STEP_HEARTBEAT_TIMEOUT", "{log}");
    assert_eq!(failed[0]["detail"]["class"], "timeout", "{log}");
    assert!(
        entries(&journal_silent, "s", "completed").is_empty(),
        "{log}"
    );

    let run = wait_status(&w.s, &alive, &["succeeded", "failed", "cancelled"]);
    let journal_alive = journal(&w.s, &alive);
    let log = describe(&journal_alive);
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    assert_eq!(step(&run, "s")["attempt"], 1, "{run}");
    assert_eq!(step(&run, "s")["output"]["stdout"], "alive\n", "{run}");
    assert_eq!(entries(&journal_alive, "s", "completed").len(), 1, "{log}");
}

/// Another tenant's admin sees neither the run, its journal, nor its dead letter, and
/// cannot act on them: 404, never 403.
fn another_tenant_sees_no_run_journal_or_dead_letter(backend: Backend) {
    let w = world(backend);
    let session = w.s.active_session("default");
    let digest = define(
        &w.s,
        &format!(
            "name: blocked-one\nsteps: [{{name: out, kind: http, method: GET, url: \"{}\"}}]",
            w.url("blocked.test", "/x")
        ),
    );
    let id = start_run(&w.s, json!({"definition": digest, "session_id": session}));
    wait_status(&w.s, &id, &["blocked"]);
    let (_, list) = w.api(Method::GET, &format!("/v1/dlq?run_id={id}"), None);
    let dead_letter = list["items"][0]["id"].as_str().unwrap().to_owned();

    let tenant = w.s.server.cli(&["tenant", "create", "elsewhere", "--json"]);
    tenant.success();
    let tenant = tenant.json()["id"].as_str().unwrap().to_owned();
    let key = w.s.server.cli(&[
        "key", "create", "--tenant", &tenant, "--role", "admin", "--name", "x", "--json",
    ]);
    key.success();
    let other = key.json()["token"].as_str().unwrap().to_owned();

    let gets = [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/journal"),
        format!("/v1/dlq/{dead_letter}"),
    ];
    for path in &gets {
        let (status, body) = w.call(&other, Method::GET, path, None);
        assert_error(status, &body, 404, "NOT_FOUND");
    }
    let posts = [
        (format!("/v1/runs/{id}/cancel"), json!({})),
        (format!("/v1/runs/{id}/events"), json!({"event": "go"})),
        (format!("/v1/runs/{id}/approve"), json!({"step": "out"})),
        (
            format!("/v1/runs/{id}/steps/out"),
            json!({"action": "start"}),
        ),
        (format!("/v1/dlq/{dead_letter}/redrive"), json!({})),
        (format!("/v1/dlq/{dead_letter}/discard"), json!({})),
    ];
    for (path, body) in &posts {
        let (status, answer) = w.call(&other, Method::POST, path, Some(body.clone()));
        assert_error(status, &answer, 404, "NOT_FOUND");
    }
    // Nor do they show in its listings.
    for path in ["/v1/runs", "/v1/dlq?status=all", "/v1/workflows"] {
        let (status, body) = w.call(&other, Method::GET, path, None);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["items"], json!([]), "{path}: {body}");
    }
    // Nothing changed for the owner.
    assert_eq!(get_run(&w.s, &id)["status"], "blocked");
    let (_, list) = w.api(Method::GET, &format!("/v1/dlq?run_id={id}"), None);
    assert_eq!(list["items"][0]["status"], "open", "{list}");
}

/// Invalid definitions are refused with WORKFLOW_INVALID naming the field; unknown
/// workflows and runs are 404.
fn invalid_definitions_and_unknown_workflows(backend: Backend) {
    let w = world(backend);
    let cases = [
        ("name: x\nsteps: [{name: a, kind: exec}]", "steps[0].argv"),
        (
            "name: x\nsteps: [{name: a, kind: teleport}]",
            "steps[0].kind",
        ),
        (
            "name: x\nsteps: [{name: a, kind: noop, needs: [b]}]",
            "steps[0].needs[0]",
        ),
        (
            "name: x\nsteps: [{name: a, kind: noop, retry: {error: {max_attempts: 0}}}]",
            "steps[0].retry.error.max_attempts",
        ),
        (
            "name: x\nsteps: [{name: a, kind: noop, needs: [b]}, {name: b, kind: noop, needs: [a]}]",
            "steps",
        ),
        (
            "name: x\nsteps: [{name: a, kind: noop, colour: red}]",
            "steps[0].colour",
        ),
        ("[1, 2", "document"),
    ];
    for (source, field) in cases {
        let (status, body) = w.api(
            Method::POST,
            "/v1/workflows",
            Some(json!({"source": source})),
        );
        assert_error(status, &body, 400, "WORKFLOW_INVALID");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{source}: the message should name `{field}`: {message}"
        );
    }
    // As an object too.
    let (status, body) = w.api(
        Method::POST,
        "/v1/workflows",
        Some(json!({"definition": {"name": "x", "steps": [{"name": "a", "kind": "sleep"}]}})),
    );
    assert_error(status, &body, 400, "WORKFLOW_INVALID");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("steps[0].duration"),
        "{body}"
    );
    // Neither or both forms.
    let (status, body) = w.api(Method::POST, "/v1/workflows", Some(json!({})));
    assert_eq!(status, 400, "{body}");
    // Nothing was stored.
    let (status, body) = w.api(Method::GET, "/v1/workflows", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]), "{body}");

    // Unknown workflows, by name and by digest; unknown runs.
    let (status, body) = w.api(
        Method::POST,
        "/v1/runs",
        Some(json!({"workflow": "no-such-workflow"})),
    );
    assert_error(status, &body, 404, "NOT_FOUND");
    let missing = format!("sha256:{}", "0".repeat(64));
    let (status, body) = w.api(
        Method::POST,
        "/v1/runs",
        Some(json!({"definition": missing})),
    );
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = w.api(Method::GET, "/v1/workflows/no-such-workflow", None);
    assert_error(status, &body, 404, "NOT_FOUND");
    // A run id of the right shape that names nothing.
    let digest = define(&w.s, "name: real\nsteps: [{name: a, kind: noop}]");
    let real = start_run(&w.s, json!({"definition": digest}));
    let mut unknown: Vec<char> = real.chars().collect();
    let last = unknown.len() - 1;
    unknown[last] = if unknown[last] == '0' { '1' } else { '0' };
    let unknown: String = unknown.into_iter().collect();
    for path in [
        format!("/v1/runs/{unknown}"),
        format!("/v1/runs/{unknown}/journal"),
    ] {
        let (status, body) = w.api(Method::GET, &path, None);
        assert_error(status, &body, 404, "NOT_FOUND");
    }
    // A malformed run request.
    let (status, body) = w.api(
        Method::POST,
        "/v1/runs",
        Some(json!({"workflow": "real", "name": "both"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = w.api(Method::POST, "/v1/runs", Some(json!({"name": "bad name!"})));
    assert_eq!(status, 400, "{body}");
}
