//! Sandboxes through the real binary: exec, files, processes, lifecycle, limits,
//! restart and recovery, and the escape attempts the issue lists. Every test checks that
//! nothing is left behind: no cgroup, no process of the sandbox's uid, no uid claim, no
//! state directory.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Backend, Place, Server, block_on};

/// Workload classes the tests use: `default` for the functional tests and `tight` for
/// the limits.
const CLASSES: &str = r#"{"classes": {
    "default": {"memory_mib": 256, "pids": 128, "disk_mib": 64, "tmp_mib": 32, "exec_timeout_ms": 20000},
    "tight": {"memory_mib": 64, "pids": 32, "disk_mib": 8, "tmp_mib": 8, "exec_timeout_ms": 20000}
}}"#;

pub(super) struct Sandboxed {
    pub(super) server: Server,
    http: reqwest::Client,
    _classes: tempfile::TempDir,
}

fn start(backend: Backend) -> Sandboxed {
    start_on(Place::with_sandboxes(backend))
}

fn start_on(place: Place) -> Sandboxed {
    start_with_env(place, &[])
}

fn start_with_env(place: Place, env: &[(&str, &str)]) -> Sandboxed {
    start_with_args(place, &[], env)
}

/// Starts a server with the test workload classes and `args` on top.
pub(super) fn start_with_args(place: Place, args: &[&str], env: &[(&str, &str)]) -> Sandboxed {
    let classes = tempfile::tempdir().unwrap();
    let file = classes.path().join("classes.json");
    std::fs::write(&file, CLASSES).unwrap();
    let mut all = vec!["--sandbox-classes", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let server = Server::start_with(place, &all, env);
    Sandboxed {
        server,
        http: reqwest::Client::new(),
        _classes: classes,
    }
}

impl Sandboxed {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    pub(super) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        json_body: Option<Value>,
    ) -> (u16, Vec<u8>) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.server.token)
            .timeout(Duration::from_secs(60));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/octet-stream")
                .body(body);
        }
        if let Some(value) = json_body {
            request = request.json(&value);
        }
        block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().to_vec())
        })
    }

    pub(super) fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, bytes) = self.request(method, path, &[], None, body);
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    /// A new active session of `class`; its sandbox is running.
    pub(super) fn active_session(&self, class: &str) -> String {
        let id = self.server.create_session(class, "dev");
        self.server.cli(&["session", "activate", &id]).success();
        id
    }

    /// Runs `sh -c script` and returns the exec result.
    pub(super) fn sh(&self, id: &str, script: &str) -> Value {
        self.exec(id, json!({"argv": ["sh", "-c", script]}))
    }

    pub(super) fn exec(&self, id: &str, body: Value) -> Value {
        let (status, value) = self.json(
            reqwest::Method::POST,
            &format!("/v1/sessions/{id}/exec"),
            Some(body),
        );
        assert_eq!(status, 200, "{value}");
        value
    }

    /// Runs a script that must succeed; returns its stdout.
    #[track_caller]
    pub(super) fn ok(&self, id: &str, script: &str) -> String {
        let result = self.sh(id, script);
        assert_eq!(result["exit_code"], 0, "`{script}` failed: {result}");
        result["stdout"].as_str().unwrap().to_owned()
    }

    /// Runs a script that must fail; returns its stderr.
    #[track_caller]
    pub(super) fn fails(&self, id: &str, script: &str) -> String {
        let result = self.sh(id, script);
        assert_ne!(
            result["exit_code"], 0,
            "`{script}` should have failed: {result}"
        );
        result["stderr"].as_str().unwrap().to_owned()
    }

    fn sandbox(&self, id: &str) -> Value {
        let (status, value) = self.json(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/sandbox"),
            None,
        );
        assert_eq!(status, 200, "{value}");
        value
    }

    fn cgroup_parent(&self) -> String {
        self.server.place().sandbox_cgroup.clone().unwrap()
    }

    /// The host uid of a session's sandbox (from its state directory).
    pub(super) fn host_uid(&self, id: &str) -> u32 {
        let record = self
            .server
            .place()
            .data_dir()
            .join("sandboxes")
            .join(id)
            .join("record.json");
        let record: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        record["uid"].as_u64().unwrap() as u32
    }

    pub(super) fn init_pid(&self, id: &str) -> i32 {
        let record = self
            .server
            .place()
            .data_dir()
            .join("sandboxes")
            .join(id)
            .join("record.json");
        let record: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        record["init_pid"].as_i64().unwrap() as i32
    }

    /// Asserts nothing of the session's sandbox is left on the host.
    #[track_caller]
    pub(super) fn assert_gone(&self, id: &str, uid: u32) {
        let parent = self.cgroup_parent();
        let root = cordon_sandbox::cgroup::CgroupRoot::detect(&parent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live = live_processes_of(uid);
            let groups = root.children().unwrap();
            if live.is_empty() && !groups.contains(&id.to_owned()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "leftovers of {id}: processes {live:?}, cgroups {groups:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let state = self.server.place().data_dir().join("sandboxes").join(id);
        assert!(!state.exists(), "state dir {} left behind", state.display());
        let claims = Path::new("/run/cordon/uids").join(uid.to_string());
        assert!(
            !claims.exists(),
            "uid claim {} left behind",
            claims.display()
        );
    }
}

/// Processes (not zombies) running as `uid` on the host.
fn live_processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| l[key.len()..].trim().to_owned())
                .unwrap_or_default()
        };
        let runs_as = field("Uid:").split_whitespace().next() == Some(uid.to_string().as_str());
        if runs_as && !field("State:").starts_with('Z') {
            found.push(format!("{name} {}", field("Name:")));
        }
    }
    found
}

#[test]
fn exec_runs_commands_in_a_stateful_sandbox() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let uid = s.host_uid(&id);

    let result = s.exec(&id, json!({"argv": ["echo", "hi"]}));
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(result["stdout"], "hi\n");
    assert_eq!(result["stderr"], "");
    assert_eq!(result["truncated"], false);
    assert!(result["reason_code"].is_null(), "{result}");

    // stdin, env, cwd, exit codes, stderr.
    let result = s.exec(&id, json!({"argv": ["cat"], "stdin": "from stdin"}));
    assert_eq!(result["stdout"], "from stdin");
    let result = s.exec(
        &id,
        json!({"argv": ["sh", "-c", "echo $GREETING; pwd; id -u; echo oops >&2; exit 3"],
        "env": {"GREETING": "hello"}, "cwd": "/tmp"}),
    );
    assert_eq!(result["exit_code"], 3, "{result}");
    assert_eq!(result["stdout"], "hello\n/tmp\n1000\n");
    assert_eq!(result["stderr"], "oops\n");

    // The workspace keeps its files between execs.
    s.ok(
        &id,
        "mkdir -p /workspace/src && echo 'print(6*7)' > /workspace/src/main.py",
    );
    assert_eq!(s.ok(&id, "python3 src/main.py"), "42\n");
    assert_eq!(s.ok(&id, "echo $HOME; hostname"), "/workspace\nsandbox\n");

    // A missing program is exit 127 with its code.
    let result = s.exec(&id, json!({"argv": ["no-such-tool"]}));
    assert_eq!(result["exit_code"], 127, "{result}");
    assert_eq!(result["reason_code"], "EXEC_COMMAND_NOT_FOUND");
    let result = s.sh(&id, "kill -TERM $$");
    assert_eq!(
        (
            result["exit_code"].as_i64(),
            result["signal"].as_i64(),
            result["reason_code"].as_str()
        ),
        (Some(143), Some(15), Some("EXEC_KILLED_BY_SIGNAL")),
        "{result}"
    );
    let result = s.exec(&id, json!({"argv": ["ls"], "cwd": "/no/such/dir"}));
    assert_eq!(
        (result["exit_code"].as_i64(), result["reason_code"].as_str()),
        (Some(127), Some("EXEC_START_FAILED")),
        "{result}"
    );

    // Bad requests write nothing and say why.
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": []})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("VALIDATION_FAILED")),
        "{body}"
    );
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": ["true"], "timeout_ms": 999_999_999})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("VALIDATION_FAILED")),
        "{body}"
    );

    // Streaming: ndjson events as they happen, the exit event last.
    let (status, bytes) = s.request(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        &[("accept", "application/x-ndjson")],
        None,
        Some(json!({"argv": ["sh", "-c", "echo one; echo two >&2; exit 5"]})),
    );
    assert_eq!(status, 200);
    let events: Vec<Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["exit_code"].as_i64()),
        (Some("exit"), Some(5)),
        "{events:?}"
    );
    let out: String = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    let err: String = events
        .iter()
        .filter(|e| e["type"] == "stderr")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!((out.as_str(), err.as_str()), ("one\n", "two\n"));

    // The sandbox's state and counters.
    let sandbox = s.sandbox(&id);
    assert_eq!(sandbox["state"], "running");
    assert_eq!(sandbox["memory_limit_bytes"], 256 << 20);
    assert_eq!(sandbox["pids_limit"], 128);

    s.server.cli(&["session", "close", &id, "--yes"]).success();
    s.assert_gone(&id, uid);
}

#[test]
fn exec_with_an_idempotency_key_runs_once() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let path = format!("/v1/sessions/{id}/exec");
    let body = json!({"argv": ["sh", "-c", "echo ran >> /workspace/log; wc -l < /workspace/log"]});
    let (first_status, first) = s.request(
        reqwest::Method::POST,
        &path,
        &[("idempotency-key", "step-1")],
        None,
        Some(body.clone()),
    );
    let (second_status, second) = s.request(
        reqwest::Method::POST,
        &path,
        &[("idempotency-key", "step-1")],
        None,
        Some(body),
    );
    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(first, second, "the replay differs from the first answer");
    assert_eq!(
        s.ok(&id, "wc -l < /workspace/log").trim(),
        "1",
        "the command ran twice"
    );
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

#[test]
fn exec_needs_an_active_session() {
    let s = start(Backend::Sqlite);
    let id = s.server.create_session("default", "dev");
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": ["true"]})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SESSION_NOT_ACTIVE")),
        "{body}"
    );
    s.server.cli(&["session", "activate", &id]).success();
    s.ok(&id, "true");
    s.server.cli(&["session", "suspend", &id]).success();
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": ["true"]})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SESSION_NOT_ACTIVE")),
        "{body}"
    );
    let (status, body) = s.json(
        reqwest::Method::GET,
        &format!("/v1/sessions/{id}/files"),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SESSION_NOT_ACTIVE")),
        "{body}"
    );
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

#[test]
fn files_stay_inside_the_workspace() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let files = format!("/v1/sessions/{id}/files");

    let (status, body) = s.request(
        reqwest::Method::PUT,
        &format!("{files}/notes/today.txt?mode=600"),
        &[],
        Some(b"plan\n".to_vec()),
        None,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let entry: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (
            entry["path"].as_str(),
            entry["size"].as_u64(),
            entry["mode"].as_str()
        ),
        (Some("notes/today.txt"), Some(5), Some("0600"))
    );
    // The sandbox sees it, owned by its user, and its own files are downloadable.
    assert_eq!(
        s.ok(&id, "cat notes/today.txt; stat -c '%u %a' notes/today.txt"),
        "plan\n1000 600\n"
    );
    s.ok(&id, "printf 'made inside' > notes/inside.txt && ln -s /etc/passwd notes/passwd && ln -s today.txt notes/alias");
    let (status, bytes) = s.request(
        reqwest::Method::GET,
        &format!("{files}/notes/inside.txt"),
        &[],
        None,
        None,
    );
    assert_eq!((status, bytes.as_slice()), (200, b"made inside".as_slice()));
    let (status, bytes) = s.request(
        reqwest::Method::GET,
        &format!("{files}/notes/alias"),
        &[],
        None,
        None,
    );
    assert_eq!((status, bytes.as_slice()), (200, b"plan\n".as_slice()));

    let (status, listing) = s.json(reqwest::Method::GET, &format!("{files}?dir=notes"), None);
    assert_eq!(status, 200, "{listing}");
    let paths: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "notes/alias",
            "notes/inside.txt",
            "notes/passwd",
            "notes/today.txt"
        ]
    );

    // Escapes by symlink, `..` and absolute paths are refused and touch nothing.
    for (method, path) in [
        (reqwest::Method::GET, format!("{files}/notes/passwd")),
        (
            reqwest::Method::GET,
            format!("{files}/notes/../../etc/passwd"),
        ),
        (reqwest::Method::GET, format!("{files}/%2E%2E/etc/passwd")),
        (reqwest::Method::GET, format!("{files}//etc/passwd")),
        (reqwest::Method::PUT, format!("{files}/%2E%2E/escaped")),
        (reqwest::Method::GET, format!("{files}?dir=..")),
    ] {
        let body = (method == reqwest::Method::PUT).then(|| b"x".to_vec());
        let (status, bytes) = s.request(method.clone(), &path, &[], body, None);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            (status == 400 && text.contains("SANDBOX_PATH_OUTSIDE_WORKSPACE")) || status == 404,
            "{method} {path} answered {status}: {text}"
        );
        assert!(!text.contains("root:x:0:0"), "{path} leaked /etc/passwd");
    }
    s.ok(&id, "mkdir -p sub && ln -s /etc sub/etc");
    let (status, bytes) = s.request(
        reqwest::Method::PUT,
        &format!("{files}/sub/etc/owned"),
        &[],
        Some(b"x".to_vec()),
        None,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
    assert!(String::from_utf8_lossy(&bytes).contains("SANDBOX_PATH_OUTSIDE_WORKSPACE"));
    assert!(!Path::new("/etc/owned").exists());

    // Delete: a file, then a directory (recursive).
    let (status, _) = s.request(
        reqwest::Method::DELETE,
        &format!("{files}/notes/passwd"),
        &[],
        None,
        None,
    );
    assert_eq!(status, 204);
    assert!(Path::new("/etc/passwd").exists());
    let (status, _) = s.request(
        reqwest::Method::DELETE,
        &format!("{files}/notes"),
        &[],
        None,
        None,
    );
    assert_eq!(status, 400, "a non-empty directory needs recursive");
    let (status, _) = s.request(
        reqwest::Method::DELETE,
        &format!("{files}/notes?recursive=true"),
        &[],
        None,
        None,
    );
    assert_eq!(status, 204);
    let (status, _) = s.request(
        reqwest::Method::GET,
        &format!("{files}/notes/today.txt"),
        &[],
        None,
        None,
    );
    assert_eq!(status, 404);
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

#[test]
fn background_processes_are_listed_and_killed() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let (status, process) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": ["sh", "-c", "echo started; exec sleep 300"], "background": true})),
    );
    assert_eq!(status, 202, "{process}");
    let pid = process["pid"].as_i64().unwrap();
    assert_eq!(process["state"], "running");
    let log = process["log_path"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.ok(&id, &format!("cat {log}")) != "started\n" {
        assert!(Instant::now() < deadline, "the background log stayed empty");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, list) = s.json(
        reqwest::Method::GET,
        &format!("/v1/sessions/{id}/processes"),
        None,
    );
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == pid && p["state"] == "running"),
        "{list}"
    );
    let (status, _) = s.json(
        reqwest::Method::DELETE,
        &format!("/v1/sessions/{id}/processes/{pid}"),
        None,
    );
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = s.json(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/processes"),
            None,
        );
        let entry = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
            .unwrap();
        if entry["state"] == "exited" {
            assert_eq!(entry["signal"], 9, "{entry}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the process was not killed: {entry}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = s.json(
        reqwest::Method::DELETE,
        &format!("/v1/sessions/{id}/processes/99999"),
        None,
    );
    assert_eq!(status, 404);
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

#[test]
fn suspend_freezes_resume_thaws_close_removes_everything() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let uid = s.host_uid(&id);
    // A ticker that writes the time every 50 ms.
    let (status, ticker) = s.json(reqwest::Method::POST, &format!("/v1/sessions/{id}/exec"),
        Some(json!({"argv": ["sh", "-c", "while true; do date +%s%N > /workspace/tick; sleep 0.05; done"], "background": true})));
    assert_eq!(status, 202, "{ticker}");
    std::thread::sleep(Duration::from_millis(200));
    s.server.cli(&["session", "suspend", &id]).success();
    assert_eq!(s.sandbox(&id)["state"], "frozen");
    let tick = |s: &Sandboxed| {
        let path = format!("/proc/{}/root/workspace/tick", s.init_pid(&id));
        std::fs::read_to_string(path).unwrap()
    };
    let frozen_at = tick(&s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tick(&s), frozen_at, "a suspended sandbox kept running");
    s.server.cli(&["session", "resume", &id]).success();
    assert_eq!(s.sandbox(&id)["state"], "running");
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(tick(&s), frozen_at, "a resumed sandbox stayed frozen");
    assert!(!live_processes_of(uid).is_empty());
    // Close kills the ticker and removes the cgroup, uid and state.
    s.server.cli(&["session", "close", &id, "--yes"]).success();
    s.assert_gone(&id, uid);
}

#[test]
fn sandboxes_outlive_a_server_restart_and_lost_ones_are_reported() {
    let s = start(Backend::Sqlite);
    let kept = s.active_session("default");
    let doomed = s.active_session("default");
    s.ok(&kept, "echo survived > /workspace/state");
    s.ok(&doomed, "echo gone > /workspace/state");
    let doomed_uid = s.host_uid(&doomed);
    let doomed_init = s.init_pid(&doomed);
    let Sandboxed {
        server, _classes, ..
    } = s;
    let place = server.kill9();
    // While the server is down, one sandbox dies.
    nix_kill(doomed_init);
    let s = start_on(place);
    assert_eq!(s.ok(&kept, "cat /workspace/state"), "survived\n");
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{doomed}/exec"),
        Some(json!({"argv": ["true"]})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SANDBOX_LOST")),
        "{body}"
    );
    let (status, body) = s.json(
        reqwest::Method::GET,
        &format!("/v1/sessions/{doomed}/sandbox"),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SANDBOX_LOST")),
        "{body}"
    );
    assert!(live_processes_of(doomed_uid).is_empty());
    // Suspend and resume bring a fresh sandbox (the old workspace is gone).
    s.server.cli(&["session", "suspend", &doomed]).success();
    s.server.cli(&["session", "resume", &doomed]).success();
    let result = s.sh(&doomed, "cat /workspace/state");
    assert_ne!(result["exit_code"], 0, "{result}");
    let uids = [s.host_uid(&kept), s.host_uid(&doomed)];
    s.server
        .cli(&["session", "close", &kept, "--yes"])
        .success();
    s.server
        .cli(&["session", "close", &doomed, "--yes"])
        .success();
    s.assert_gone(&kept, uids[0]);
    s.assert_gone(&doomed, uids[1]);
}

fn nix_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn limits_end_commands_with_their_codes() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("tight");

    let started = Instant::now();
    let result = s.exec(&id, json!({"argv": ["sleep", "30"], "timeout_ms": 300}));
    assert_eq!(result["reason_code"], "EXEC_TIMEOUT", "{result}");
    assert_eq!(result["signal"], 9);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Memory bomb: OOM-killed with its code.
    let result = s.exec(
        &id,
        json!({"argv": ["python3", "-c", "b = bytearray(512 * 1024 * 1024); print(len(b))"]}),
    );
    assert_eq!(result["reason_code"], "SANDBOX_OOM_KILLED", "{result}");

    // Fork bomb: contained by the pids limit, then killed by the timeout.
    let result = s.exec(&id, json!({"argv": ["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 2"], "timeout_ms": 4000}));
    assert_eq!(result["reason_code"], "SANDBOX_PIDS_LIMIT", "{result}");
    let sandbox = s.sandbox(&id);
    assert!(sandbox["pids_current"].as_u64().unwrap() <= 32, "{sandbox}");

    // The sandbox still works afterwards (the fork bomb is gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = s.sh(&id, "echo alive");
        if result["stdout"] == "alive\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox did not recover: {result}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Filling the workspace: ENOSPC at the quota, with its code; uploads too.
    let result = s.exec(
        &id,
        json!({"argv": ["sh", "-c", "dd if=/dev/zero of=/workspace/fill bs=1M count=64"]}),
    );
    assert_eq!(result["reason_code"], "SANDBOX_DISK_QUOTA", "{result}");
    let (status, body) = s.request(
        reqwest::Method::PUT,
        &format!("/v1/sessions/{id}/files/more"),
        &[],
        Some(vec![0u8; 1 << 20]),
        None,
    );
    assert_eq!(status, 507, "{}", String::from_utf8_lossy(&body));
    s.ok(&id, "rm /workspace/fill");

    let uid = s.host_uid(&id);
    s.server.cli(&["session", "close", &id, "--yes"]).success();
    s.assert_gone(&id, uid);
}

#[test]
fn escape_attempts_fail() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let other = s.active_session("default");
    let data_dir = s.server.place().data_dir().to_string_lossy().into_owned();
    s.ok(
        &other,
        "echo secret > /workspace/other-secret; sleep 300 >/dev/null 2>&1 &",
    );
    let server_pid = std::process::id(); // the test process: a host process outside every sandbox

    // Host files outside the allowed set are invisible or unreadable.
    for path in [
        "/etc/shadow",
        "/root",
        "/home",
        "/var",
        "/etc/ssh",
        &data_dir,
        "/run/cordon",
    ] {
        s.fails(&id, &format!("ls -d '{path}' || cat '{path}'"));
    }
    assert_eq!(
        s.ok(&id, "cat /etc/passwd | cut -d: -f1 | tr '\\n' ' '"),
        "root sandbox nobody "
    );
    s.fails(&id, "cat /workspace/other-secret");
    s.fails(&id, &format!("ls {data_dir}/sandboxes"));

    // No writes outside /workspace and /tmp.
    for path in [
        "/usr/bin/evil",
        "/etc/evil",
        "/evil",
        "/bin/evil",
        "/dev/evil",
        "/proc/evil",
    ] {
        s.fails(&id, &format!("echo x > {path}"));
    }
    s.ok(
        &id,
        "echo x > /workspace/ok && echo x > /tmp/ok && echo x > /dev/null",
    );

    // Processes: only the sandbox's own are visible; host and other sessions' cannot be signalled.
    let pids = s.ok(&id, "ls /proc | grep -E '^[0-9]+$' | wc -l");
    assert!(
        pids.trim().parse::<u32>().unwrap() < 10,
        "too many pids visible: {pids}"
    );
    s.fails(&id, &format!("kill -0 {server_pid}"));
    // Signals to the sandbox's pid 1 from inside are dropped by the kernel: it survives.
    s.sh(&id, "kill -9 1; kill -STOP 1");
    s.ok(&id, "true");

    // No privileges: no capabilities, no_new_privs, setuid binaries do nothing.
    let status = s.ok(
        &id,
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp)' /proc/self/status",
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    s.fails(&id, "su -c id root </dev/null");
    s.fails(&id, "python3 -c 'import os; os.setuid(0)'");

    // Kernel interfaces the seccomp policy closes.
    let python = |code: &str| format!("python3 -c \"{code}\"");
    s.fails(&id, &python("import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); sys.exit(0 if l.ptrace(0,0,0,0)==0 else 1)"));
    s.fails(&id, &python("import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); sys.exit(0 if l.mount(b'none',b'/tmp',b'tmpfs',0,None)==0 else 1)"));
    s.fails(&id, "mount -t tmpfs none /tmp");
    s.fails(&id, "unshare -U true");
    s.fails(&id, "unshare -r true");
    s.fails(
        &id,
        &python(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
        ),
    );
    s.fails(
        &id,
        &python("import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"),
    );

    // No network: any address, IPv4 or IPv6, the server's own port, abstract sockets.
    let port = s.server.port;
    for target in [
        format!("('127.0.0.1', {port})"),
        "('1.1.1.1', 80)".to_owned(),
        "('10.0.0.1', 80)".to_owned(),
        "('169.254.169.254', 80)".to_owned(),
    ] {
        s.fails(
            &id,
            &python(&format!(
                "import socket; socket.create_connection({target}, timeout=2)"
            )),
        );
    }
    s.fails(&id, &python(&format!("import socket; s=socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(('::1', {port}))")));
    s.fails(&id, &python("import socket; s=socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(('2606:4700:4700::1111', 80))"));
    // An abstract unix socket listening on the host is out of reach.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("cordon-escape-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _host_listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    let stderr = s.fails(
        &id,
        &python(&format!(
            "import socket; s=socket.socket(socket.AF_UNIX); s.connect(b'\\\\0{name}')"
        )),
    );
    assert!(stderr.contains("ConnectionRefusedError"), "{stderr}");
    assert_eq!(
        s.ok(
            &id,
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"
        ),
        "lo\n"
    );

    // Keep running after close: nothing of the other session survives.
    let other_uid = s.host_uid(&other);
    assert!(!live_processes_of(other_uid).is_empty());
    s.server
        .cli(&["session", "close", &other, "--yes"])
        .success();
    s.assert_gone(&other, other_uid);
    let uid = s.host_uid(&id);
    s.server.cli(&["session", "close", &id, "--yes"]).success();
    s.assert_gone(&id, uid);
}

#[test]
fn the_cli_streams_exec_and_moves_files() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let run = s.server.cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(run.code, 7, "{run:?}");
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("out\n", "err\n")
    );

    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("in.txt");
    std::fs::write(&source, "payload\n").unwrap();
    s.server
        .cli(&["files", "put", &id, source.to_str().unwrap(), "dir/in.txt"])
        .success();
    let run = s.server.cli(&["exec", &id, "--", "cat", "dir/in.txt"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "payload\n"));
    let run = s.server.cli(&["files", "ls", &id, "dir"]);
    run.success();
    assert!(run.stdout.contains("dir/in.txt"), "{}", run.stdout);
    let target = local.path().join("out.txt");
    s.server
        .cli(&["files", "get", &id, "dir/in.txt", target.to_str().unwrap()])
        .success();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "payload\n");
    s.server
        .cli(&["files", "rm", &id, "dir", "--recursive"])
        .success();
    s.server
        .cli(&["files", "get", &id, "../etc/passwd"])
        .failure(6, "SANDBOX_PATH_OUTSIDE_WORKSPACE");
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

#[test]
fn another_tenant_cannot_reach_a_sandbox() {
    let s = start(Backend::Sqlite);
    let id = s.active_session("default");
    let run = s.server.cli(&["tenant", "create", "intruders", "--json"]);
    run.success();
    let tenant = run.json()["id"].as_str().unwrap().to_owned();
    let run = s.server.cli(&[
        "key", "create", "--role", "admin", "--name", "x", "--tenant", &tenant, "--json",
    ]);
    run.success();
    let token = run.json()["token"].as_str().unwrap().to_owned();
    for (method, path) in [
        (reqwest::Method::POST, format!("/v1/sessions/{id}/exec")),
        (reqwest::Method::GET, format!("/v1/sessions/{id}/files")),
        (reqwest::Method::GET, format!("/v1/sessions/{id}/processes")),
        (reqwest::Method::GET, format!("/v1/sessions/{id}/sandbox")),
    ] {
        let status = block_on(async {
            let mut request = s
                .http
                .request(method.clone(), s.url(&path))
                .bearer_auth(&token);
            if method == reqwest::Method::POST {
                request = request.json(&json!({"argv": ["true"]}));
            }
            request.send().await.unwrap().status().as_u16()
        });
        assert_eq!(status, 404, "{method} {path}");
    }
    s.server.cli(&["session", "close", &id, "--yes"]).success();
}

/// The records of the spare sandboxes in a data dir.
fn spare_dirs(data_dir: &Path) -> Vec<String> {
    let mut spares: Vec<String> = std::fs::read_dir(data_dir.join("sandboxes"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("spare-"))
                .filter(|name| {
                    data_dir
                        .join("sandboxes")
                        .join(name)
                        .join("record.json")
                        .exists()
                })
                .collect()
        })
        .unwrap_or_default();
    spares.sort();
    spares
}

fn wait_for_spares(data_dir: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spares = spare_dirs(data_dir);
        if spares.len() >= count {
            return spares;
        }
        assert!(
            Instant::now() < deadline,
            "only {spares:?} spares after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn activation_takes_a_spare_sandbox_and_the_pool_refills() {
    let s = start_with_env(
        Place::with_sandboxes(Backend::Sqlite),
        &[("CORDON_SANDBOX_SPARES", "2")],
    );
    let data_dir = s.server.place().data_dir().to_owned();
    let spares = wait_for_spares(&data_dir, 2);

    // A `default` session gets a spare: its cgroup keeps the spare's name, and its
    // limits become the class's.
    let id = s.active_session("default");
    let record: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("sandboxes").join(&id).join("record.json")).unwrap(),
    )
    .unwrap();
    let cgroup = record["cgroup"].as_str().unwrap().to_owned();
    assert!(
        spares.contains(&cgroup),
        "{record} did not come from {spares:?}"
    );
    let uid = record["uid"].as_u64().unwrap() as u32;
    let claim = std::fs::read_to_string(format!("/run/cordon/uids/{uid}")).unwrap();
    assert!(
        claim.ends_with(&format!("#{id}")),
        "uid claim still names the spare: {claim}"
    );
    assert_eq!(
        s.ok(&id, "id -u; hostname; ls -A /workspace | wc -l"),
        "1000\nsandbox\n0\n"
    );
    assert_eq!(s.sandbox(&id)["memory_limit_bytes"], 256 << 20);
    let root = cordon_sandbox::cgroup::CgroupRoot::detect(&s.cgroup_parent()).unwrap();
    let limit = root.open(&cgroup).unwrap();
    if let Some(memory) = limit
        .procs_files()
        .iter()
        .find(|p| p.to_string_lossy().contains("/memory/"))
    {
        let file = memory.with_file_name("memory.limit_in_bytes");
        assert_eq!(
            std::fs::read_to_string(file).unwrap().trim(),
            (256u64 << 20).to_string()
        );
    }

    // The pool refills; a class with other disk sizes starts cold.
    wait_for_spares(&data_dir, 2);
    let tight = s.active_session("tight");
    let record: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("sandboxes").join(&tight).join("record.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["cgroup"], tight.as_str());

    // Closing an adopted sandbox leaves nothing, under its spare's cgroup name either.
    s.server.cli(&["session", "close", &id, "--yes"]).success();
    let deadline = Instant::now() + Duration::from_secs(5);
    while root.open(&cgroup).is_some() || !live_processes_of(uid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the adopted sandbox {cgroup} was not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!Path::new(&format!("/run/cordon/uids/{uid}")).exists());

    // After a restart the old spares are destroyed and new ones made.
    let old = spare_dirs(&data_dir);
    let Sandboxed {
        server, _classes, ..
    } = s;
    let place = server.kill9();
    let s = start_with_env(place, &[("CORDON_SANDBOX_SPARES", "2")]);
    let fresh = wait_for_spares(&data_dir, 2);
    assert!(
        fresh.iter().all(|f| !old.contains(f)),
        "old spares {old:?} survived: {fresh:?}"
    );
    s.server
        .cli(&["session", "close", &tight, "--yes"])
        .success();
}

#[test]
fn a_sandbox_that_cannot_start_leaves_the_session_created() {
    let place = Place::with_sandboxes(Backend::Sqlite);
    let uid_dir = place.data_dir().join("uid-claims");
    let s = start_with_env(
        place,
        &[("CORDON_SANDBOX_UID_DIR", uid_dir.to_str().unwrap())],
    );
    // The claims directory turns into a file under the running server: no uid can be
    // claimed, so no sandbox can start.
    std::fs::remove_dir_all(&uid_dir).unwrap();
    std::fs::write(&uid_dir, b"not a directory").unwrap();
    let id = s.server.create_session("default", "dev");
    let (status, body) = s.json(
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/activate"),
        Some(json!({})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("SANDBOX_START_FAILED")),
        "{body}"
    );
    assert_eq!(s.server.session(&id)["phase"], "created");
    let root = cordon_sandbox::cgroup::CgroupRoot::detect(&s.cgroup_parent()).unwrap();
    assert!(
        root.children().unwrap().is_empty(),
        "a cgroup was left behind"
    );
    assert!(
        !s.server
            .place()
            .data_dir()
            .join("sandboxes")
            .join(&id)
            .exists()
    );
}
