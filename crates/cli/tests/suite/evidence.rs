//! Decision evidence and releases through the real binary: what the log records for a
//! session's life, its proofs checked here against the signed checkpoints, offline
//! verification of exported bundles (and their failure once tampered with), signed
//! releases, redaction of secrets, retention, tenancy, and the store's refusal to edit
//! evidence rows.
//!
//! Evidence is written in batches, so every check of the log waits (bounded) for the
//! entries it expects.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cordon_evidence::merkle::{self, Hash};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::sandbox::{Sandboxed, start_with_args};
use super::{Backend, Place, Run, Server, block_on, cordon, on_both_backends};

on_both_backends!(
    evidence_records_and_verifies,
    tampered_bundles_fail,
    releases_sign_and_verify,
    redaction,
    retention_sweeps_and_proofs_hold,
    retention_reaches_every_closed_session,
    evidence_is_tenant_scoped,
);

/// How long the log may take to show an entry (batched writes), or a sweep its effect.
const EVIDENCE_WAIT: Duration = Duration::from_secs(15);
/// How long retention sweeps (every second) may take to do everything a test expects.
const RETENTION_WAIT: Duration = Duration::from_secs(30);

/// A tenant with an admin key and an agent key.
struct Tenant {
    id: String,
    admin: String,
    agent: String,
}

/// A server, one tenant of it, an HTTP client and a scratch directory.
struct World {
    /// Keeps the server (and its workload classes) alive; None for a server without
    /// sandboxes.
    sandboxed: Option<Sandboxed>,
    plain: Option<Server>,
    http: reqwest::Client,
    tenant: Tenant,
    scratch: tempfile::TempDir,
}

fn sandboxed_world(backend: Backend, args: &[&str]) -> World {
    let sandboxed = start_with_args(Place::with_sandboxes(backend), args, &[]);
    let tenant = tenant(&sandboxed.server, "evidence-a");
    World {
        sandboxed: Some(sandboxed),
        plain: None,
        http: client(),
        tenant,
        scratch: tempfile::tempdir().unwrap(),
    }
}

fn plain_world(backend: Backend) -> World {
    let server = Server::start(Place::new(backend));
    let tenant = tenant(&server, "evidence-a");
    World {
        sandboxed: None,
        plain: Some(server),
        http: client(),
        tenant,
        scratch: tempfile::tempdir().unwrap(),
    }
}

/// One runtime per request (see `block_on`): no connection outlives its runtime.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A new tenant with an admin and an agent key, made by the system admin.
fn tenant(server: &Server, name: &str) -> Tenant {
    let run = server.cli(&["tenant", "create", name, "--json"]);
    run.success();
    let id = run.json()["id"].as_str().unwrap().to_owned();
    let key = |role: &str| {
        let run = server.cli(&[
            "key", "create", "--tenant", &id, "--role", role, "--name", role, "--json",
        ]);
        run.success();
        run.json()["token"].as_str().unwrap().to_owned()
    };
    Tenant {
        admin: key("admin"),
        agent: key("agent"),
        id,
    }
}

impl World {
    fn server(&self) -> &Server {
        match (&self.sandboxed, &self.plain) {
            (Some(sandboxed), _) => &sandboxed.server,
            (None, Some(server)) => server,
            (None, None) => unreachable!("a world has a server"),
        }
    }

    /// Kills the server (SIGKILL) and starts another on its state with `args`.
    fn restart(&mut self, args: &[&str]) {
        let Sandboxed { server, .. } = self.sandboxed.take().expect("a sandboxed world");
        let place = server.kill9();
        self.sandboxed = Some(start_with_args(place, args, &[]));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A request with `token`; the status and the body's bytes.
    fn send(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server().url))
            .bearer_auth(token)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().to_vec())
        })
    }

    /// A request with `token`; the status and the body as JSON (Null when empty).
    fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = self.send(token, method, path, body);
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// A request that must answer `expected`; its JSON body.
    #[track_caller]
    fn expect(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let (status, value) = self.call(token, method.clone(), path, body);
        assert_eq!(status, expected, "{method} {path}: {value}");
        value
    }

    /// A new session owned by `token`'s key, activated.
    fn session(&self, token: &str) -> String {
        let run = self.server().cli_as(
            token,
            &[
                "session", "create", "--class", "default", "--env", "dev", "--json",
            ],
        );
        run.success();
        let id = run.json()["id"].as_str().unwrap().to_owned();
        self.server()
            .cli_as(token, &["session", "activate", &id])
            .success();
        id
    }

    #[track_caller]
    fn exec(&self, token: &str, id: &str, argv: &[&str]) -> Value {
        self.expect(
            token,
            Method::POST,
            &format!("/v1/sessions/{id}/exec"),
            Some(json!({ "argv": argv })),
            200,
        )
    }

    /// Runs a script that must succeed.
    #[track_caller]
    fn sh(&self, token: &str, id: &str, script: &str) {
        let result = self.exec(token, id, &["sh", "-c", script]);
        assert_eq!(result["exit_code"], 0, "`{script}`: {result}");
    }

    /// Checkpoints the session; the new version's id.
    #[track_caller]
    fn checkpoint(&self, token: &str, id: &str, summary: &str) -> String {
        let answer = self.expect(
            token,
            Method::POST,
            &format!("/v1/sessions/{id}/checkpoint"),
            Some(json!({ "summary": summary })),
            200,
        );
        assert_eq!(answer["phase"], "checkpointed", "{answer}");
        answer["workspace_version"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no workspace_version: {answer}"))
            .to_owned()
    }

    #[track_caller]
    fn resume(&self, token: &str, id: &str) {
        let answer = self.expect(
            token,
            Method::POST,
            &format!("/v1/sessions/{id}/resume"),
            Some(json!({})),
            200,
        );
        assert_eq!(answer["phase"], "active", "{answer}");
    }

    fn close(&self, token: &str, id: &str) {
        self.server()
            .cli_as(token, &["session", "close", id, "--yes"])
            .success();
    }

    /// The ids of the session's live versions, as the versions list gives them.
    fn version_ids(&self, token: &str, id: &str) -> Vec<String> {
        let path = format!("/v1/sessions/{id}/versions");
        let listed = self.expect(token, Method::GET, &path, None, 200);
        listed["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every entry of the tenant's log matching `query` (`session=...&kind=...`), all
    /// pages, as `token` sees them.
    fn entries_as(&self, token: &str, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let page = self.expect(
                token,
                Method::GET,
                &format!(
                    "/v1/evidence?from={from}&limit=1000{}{query}",
                    if query.is_empty() { "" } else { "&" }
                ),
                None,
                200,
            );
            all.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => return all,
            }
        }
    }

    fn entries(&self, query: &str) -> Vec<Value> {
        self.entries_as(&self.tenant.admin, query)
    }

    /// Polls the log (as the tenant's admin) until `done` holds for the entries of
    /// `query`; returns them.
    #[track_caller]
    fn wait_entries(&self, query: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + EVIDENCE_WAIT;
        loop {
            let entries = self.entries(query);
            if done(&entries) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not in the log after {EVIDENCE_WAIT:?}: {entries:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `cordon evidence public-key -o FILE` as the tenant's admin; the file.
    fn public_key_file(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        self.server()
            .cli_as(
                &self.tenant.admin,
                &["evidence", "public-key", "-o", path.to_str().unwrap()],
            )
            .success();
        path
    }

    /// `cordon evidence export [--session S] -o FILE` as the tenant's admin; the file.
    fn export(&self, session: Option<&str>, name: &str) -> PathBuf {
        let path = self.path(name);
        let mut args = vec!["evidence", "export", "-o", path.to_str().unwrap()];
        if let Some(session) = session {
            args.extend(["--session", session]);
        }
        self.server().cli_as(&self.tenant.admin, &args).success();
        path
    }
}

/// `cordon evidence verify BUNDLE --public-key KEY`, offline: no URL, no token.
fn verify_bundle(bundle: &Path, key: &Path) -> Run {
    cordon(
        &[],
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
        ],
    )
}

/// `cordon release verify ARCHIVE --public-key KEY`, offline.
fn verify_release(archive: &Path, key: &Path) -> Run {
    cordon(
        &[],
        &[
            "release",
            "verify",
            archive.to_str().unwrap(),
            "--public-key",
            key.to_str().unwrap(),
        ],
    )
}

/// Asserts a refused verification: exit 6, `reason` on stderr, nothing on stdout.
#[track_caller]
fn assert_refused(run: &Run, what: &str, reason: &str) {
    assert_eq!(run.code, 6, "{what}: expected exit 6: {run:#?}");
    assert!(
        run.stderr.contains("verification failed") && run.stderr.contains(reason),
        "{what}: expected `{reason}` on stderr: {run:#?}"
    );
    assert!(run.stdout.is_empty(), "{what}: {run:#?}");
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a Value {
    &entry["fields"][name]
}

fn has(entries: &[Value], kind: &str, matches: impl Fn(&Value) -> bool) -> bool {
    entries.iter().any(|e| e["kind"] == kind && matches(e))
}

fn lifecycle(action: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| field(e, "action") == action
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hash_of(text: &str) -> Hash {
    Hash::try_from(hex::decode(text).unwrap()).unwrap()
}

/// The log name in a checkpoint note: its first line.
fn origin_of(note: &str) -> &str {
    note.lines().next().unwrap()
}

/// A session's life as an agent and an admin live it, then the log: what it holds,
/// its proofs recomputed here, and the exported bundles verified offline.
fn evidence_records_and_verifies(backend: Backend) {
    let w = sandboxed_world(backend, &[]);
    let t = &w.tenant;
    let id = w.session(&t.agent);
    let echoed = w.exec(&t.agent, &id, &["echo", "hello"]);
    assert_eq!(echoed["stdout"], "hello\n");
    // A request out of the sandbox that no policy allows: an egress decision.
    let curl = w.exec(
        &t.agent,
        &id,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "http://example.com/probe?q=1",
        ],
    );
    assert_eq!(curl["stdout"], "403", "{curl}");
    w.checkpoint(&t.agent, &id, "said hello");
    w.resume(&t.agent, &id);
    // An agent is refused what only people may do, and the refusal is evidence.
    let refused = w.expect(
        &t.agent,
        Method::POST,
        &format!("/v1/sessions/{id}/releases"),
        Some(json!({"name": "by-the-agent"})),
        403,
    );
    assert_eq!(refused["error"]["code"], "AUTHZ_DENIED", "{refused}");
    assert!(
        refused.to_string().contains("agents-cannot-promote"),
        "{refused}"
    );
    w.close(&t.admin, &id);

    let session = format!("session={id}");
    let entries = w.wait_entries(&session, "the session's life", |entries| {
        ["activate", "checkpoint", "resume", "close"]
            .iter()
            .all(|action| has(entries, "lifecycle", lifecycle(action)))
            && has(entries, "exec", |_| true)
            && has(entries, "checkpoint", |_| true)
            && has(entries, "authz", |e| field(e, "allowed") == false)
            && has(entries, "egress", |_| true)
    });
    // Lifecycle: each transition with its phases and actor's key.
    let activate = entries
        .iter()
        .find(|e| e["kind"] == "lifecycle" && lifecycle("activate")(e))
        .unwrap();
    assert_eq!(
        (field(activate, "from"), field(activate, "to")),
        (&json!("created"), &json!("active")),
        "{activate}"
    );
    let close = entries
        .iter()
        .find(|e| e["kind"] == "lifecycle" && lifecycle("close")(e))
        .unwrap();
    assert_eq!(field(close, "to"), "closed", "{close}");
    // Exec: the command by digest, never its arguments; how it ended.
    let exec = entries.iter().find(|e| e["kind"] == "exec").unwrap();
    let digest = field(exec, "argv_digest").as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{exec}");
    let argv_json = serde_json::to_vec(&json!(["echo", "hello"])).unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&argv_json)));
    assert_eq!(field(exec, "exit_code"), 0, "{exec}");
    assert!(field(exec, "duration_ms").is_u64(), "{exec}");
    assert!(!exec["leaf"].as_str().unwrap().contains("hello"), "{exec}");
    // The checkpoint: its version and summary.
    let checkpoint = entries.iter().find(|e| e["kind"] == "checkpoint").unwrap();
    assert_eq!(field(checkpoint, "summary"), "said hello", "{checkpoint}");
    // The agent's refused promotion.
    let denial = entries
        .iter()
        .find(|e| e["kind"] == "authz" && field(e, "allowed") == false)
        .unwrap();
    assert_eq!(field(denial, "action"), "session.promote", "{denial}");
    assert_eq!(field(denial, "role"), "agent", "{denial}");
    assert!(
        field(denial, "policies")
            .as_array()
            .unwrap()
            .contains(&json!("agents-cannot-promote")),
        "{denial}"
    );
    // Allowed actions that change something are evidence too, by role.
    for action in [
        "session.activate",
        "session.exec",
        "session.checkpoint",
        "session.resume",
    ] {
        assert!(
            has(&entries, "authz", |e| field(e, "action") == action
                && field(e, "allowed") == true
                && field(e, "role") == "agent"),
            "no allowed {action}: {entries:#?}"
        );
    }
    assert!(
        has(&entries, "authz", |e| field(e, "action") == "session.close"
            && field(e, "role") == "admin"),
        "{entries:#?}"
    );
    // The gateway's refusal: where to, why, the path without its query.
    let egress = entries.iter().find(|e| e["kind"] == "egress").unwrap();
    assert_eq!(field(egress, "host"), "example.com", "{egress}");
    assert_eq!(field(egress, "path"), "/probe", "{egress}");
    assert_eq!(
        field(egress, "reason"),
        "EGRESS_DESTINATION_NOT_ALLOWED",
        "{egress}"
    );
    // Every entry is the session's, of this tenant, with nothing shredded.
    for entry in &entries {
        assert_eq!(entry["session_id"], id.as_str(), "{entry}");
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(leaf["tenant"], t.id.as_str(), "{entry}");
        assert!(entry.get("shredded").is_none(), "{entry}");
    }

    // Inclusion proofs from the API lead to the signed checkpoint's root.
    let checkpoint = w.expect(&t.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    let size = checkpoint["size"].as_u64().unwrap();
    let root = hash_of(checkpoint["root"].as_str().unwrap());
    let note = checkpoint["note"].as_str().unwrap();
    let key = w.expect(&t.admin, Method::GET, "/v1/evidence/public-key", None, 200);
    let verifier = cordon_evidence::Verifier::from_text(key["key"].as_str().unwrap()).unwrap();
    let signed = verifier.verify(note).unwrap();
    assert_eq!((signed.size, signed.root), (size, root));
    assert_eq!(signed.origin, format!("{}/{}", verifier.name, t.id));
    for entry in &entries {
        let index = entry["index"].as_u64().unwrap();
        assert!(index < size, "{entry} beyond the checkpoint of size {size}");
        let leaf = merkle::leaf_hash(entry["leaf"].as_str().unwrap().as_bytes());
        assert_eq!(hex::encode(leaf), entry["leaf_hash"].as_str().unwrap());
        let proof = w.expect(
            &t.admin,
            Method::GET,
            &format!("/v1/evidence/entries/{index}/proof?size={size}"),
            None,
            200,
        );
        assert_eq!(proof["leaf_hash"], entry["leaf_hash"], "{proof}");
        assert_eq!(proof["root"], checkpoint["root"], "{proof}");
        let path: Vec<Hash> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hash_of(h.as_str().unwrap()))
            .collect();
        merkle::verify_inclusion(&leaf, index, size, &path, &root)
            .unwrap_or_else(|e| panic!("entry {index}: {e}"));
        // The same proof does not place the leaf anywhere else.
        if size > 1 {
            let elsewhere = (index + 1) % size;
            assert!(merkle::verify_inclusion(&leaf, elsewhere, size, &path, &root).is_err());
        }
    }
    // An early tree head is a prefix of the current one.
    let first = entries[0]["index"].as_u64().unwrap() + 1;
    let consistency = w.expect(
        &t.admin,
        Method::GET,
        &format!("/v1/evidence/consistency?from={first}&to={size}"),
        None,
        200,
    );
    let path: Vec<Hash> = consistency["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash_of(h.as_str().unwrap()))
        .collect();
    merkle::verify_consistency(
        first,
        size,
        &path,
        &hash_of(consistency["from_root"].as_str().unwrap()),
        &root,
    )
    .unwrap();
    // Out of range is refused with its code.
    let (status, beyond) = w.call(
        &t.admin,
        Method::GET,
        &format!("/v1/evidence/entries/{size}/proof?size={size}"),
        None,
    );
    assert_eq!(
        (status, beyond["error"]["code"].as_str()),
        (400, Some("EVIDENCE_OUT_OF_RANGE")),
        "{beyond}"
    );

    // Pages of two give the same entries as one page.
    let mut paged = Vec::new();
    let mut from = 0;
    loop {
        let page = w.expect(
            &t.admin,
            Method::GET,
            &format!("/v1/evidence?session={id}&from={from}&limit=2"),
            None,
            200,
        );
        let items = page["entries"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(items.iter().map(|e| e["index"].as_u64().unwrap()));
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    let listed: Vec<u64> = entries
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(paged, listed);

    // The CLI: the key, the session's bundle, offline verification.
    let key_file = w.public_key_file("key");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        key["key"].as_str().unwrap()
    );
    let bundle = w.export(Some(&id), "b.json");
    let run = verify_bundle(&bundle, &key_file);
    run.success();
    assert!(
        run.stdout.contains("evidence bundle verified")
            && run
                .stdout
                .contains(&format!("session {id} of tenant {}", t.id)),
        "{run:#?}"
    );
    let exported: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let exported_indexes: Vec<u64> = exported["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert!(
        listed.iter().all(|i| exported_indexes.contains(i)),
        "the bundle {exported_indexes:?} lacks some of {listed:?}"
    );
    // The tenant's whole log verifies too.
    let whole = w.export(None, "tenant.json");
    let run = verify_bundle(&whole, &key_file);
    run.success();
    assert!(run.stdout.contains("(all sessions)"), "{run:#?}");
    let tenant_wide: Value = serde_json::from_slice(&std::fs::read(&whole).unwrap()).unwrap();
    // A session's bundle carries the heads signed since its first entry; the tenant's
    // carries them from the log's start.
    assert!(
        exported["checkpoints"].as_array().unwrap().len()
            <= tenant_wide["checkpoints"].as_array().unwrap().len()
    );
    // `evidence list`, `checkpoint` and `proof` through the CLI.
    let server = w.server();
    let run = server.cli_as(&t.admin, &["evidence", "list", "--session", &id, "--json"]);
    run.success();
    assert_eq!(
        run.json()["entries"].as_array().unwrap().len(),
        entries.len()
    );
    let run = server.cli_as(&t.admin, &["evidence", "checkpoint", "--json"]);
    run.success();
    assert!(run.json()["size"].as_u64().unwrap() >= size);
    let index = listed[0].to_string();
    let run = server.cli_as(&t.admin, &["evidence", "proof", &index, "--json"]);
    run.success();
    assert_eq!(run.json()["leaf_hash"], entries[0]["leaf_hash"]);

    // Closing wrote the session's bundle to the export directory, and it verifies.
    let closed = server
        .place()
        .data_dir()
        .join("exports")
        .join(&t.id)
        .join(format!("{id}.evidence.json"));
    assert!(closed.exists(), "{} was not written", closed.display());
    let run = verify_bundle(&closed, &key_file);
    run.success();
    assert!(run.stdout.contains(&id), "{run:#?}");
    // It holds the close itself.
    let written: Value = serde_json::from_slice(&std::fs::read(&closed).unwrap()).unwrap();
    let holds_close = written["entries"].as_array().unwrap().iter().any(|e| {
        e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "to" && f["value"] == "\"closed\"")
    });
    assert!(holds_close, "no close in {written:#}");

    // Every signed checkpoint the tenant's bundle carries is a prefix of the next, by
    // the API's consistency proofs, and the entries' proofs hold against the older
    // heads too.
    let heads: Vec<cordon_evidence::Checkpoint> = tenant_wide["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| verifier.verify(c["note"].as_str().unwrap()).unwrap())
        .collect();
    assert!(heads.len() >= 2, "{tenant_wide:#}");
    for pair in heads.windows(2) {
        assert_consistent(&w, &pair[0], &pair[1]);
    }
    let oldest = &heads[0];
    for entry in entries
        .iter()
        .filter(|e| e["index"].as_u64().unwrap() < oldest.size)
    {
        assert_included(&w, entry, oldest);
    }

    // After kill -9 and a restart the node rebuilds its tree from the store: the old
    // heads still hold, and new entries extend the same log.
    let head = verifier.verify(note).unwrap();
    let mut w = w;
    w.restart(&[]);
    let t = &w.tenant;
    let again = w.session(&t.admin);
    w.exec(&t.admin, &again, &["true"]);
    w.wait_entries(
        &format!("session={again}"),
        "after the restart",
        |entries| has(entries, "exec", |_| true),
    );
    let checkpoint = w.expect(&t.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    let newer = verifier
        .verify(checkpoint["note"].as_str().unwrap())
        .unwrap();
    assert!(newer.size > head.size, "{checkpoint}");
    assert_consistent(&w, &head, &newer);
    assert_consistent(&w, oldest, &newer);
    for entry in &entries {
        assert_included(&w, entry, &head);
        assert_included(&w, entry, &newer);
    }
    let bundle = w.export(Some(&id), "after-restart.json");
    verify_bundle(&bundle, &key_file).success();
    let whole = w.export(None, "tenant-after-restart.json");
    verify_bundle(&whole, &key_file).success();
    w.close(&t.admin, &again);
}

/// The API's consistency proof between two signed heads verifies against their roots.
#[track_caller]
fn assert_consistent(
    w: &World,
    old: &cordon_evidence::Checkpoint,
    new: &cordon_evidence::Checkpoint,
) {
    let proof = w.expect(
        &w.tenant.admin,
        Method::GET,
        &format!("/v1/evidence/consistency?from={}&to={}", old.size, new.size),
        None,
        200,
    );
    assert_eq!(proof["from_root"], hex::encode(old.root), "{proof}");
    assert_eq!(proof["to_root"], hex::encode(new.root), "{proof}");
    let path: Vec<Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash_of(h.as_str().unwrap()))
        .collect();
    merkle::verify_consistency(old.size, new.size, &path, &old.root, &new.root)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", old.size, new.size));
}

/// The API's inclusion proof of `entry` against the signed head verifies.
#[track_caller]
fn assert_included(w: &World, entry: &Value, head: &cordon_evidence::Checkpoint) {
    let index = entry["index"].as_u64().unwrap();
    let proof = w.expect(
        &w.tenant.admin,
        Method::GET,
        &format!("/v1/evidence/entries/{index}/proof?size={}", head.size),
        None,
        200,
    );
    assert_eq!(proof["root"], hex::encode(head.root), "{proof}");
    let path: Vec<Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash_of(h.as_str().unwrap()))
        .collect();
    let leaf = merkle::leaf_hash(entry["leaf"].as_str().unwrap().as_bytes());
    merkle::verify_inclusion(&leaf, index, head.size, &path, &head.root)
        .unwrap_or_else(|e| panic!("entry {index} in {}: {e}", head.size));
}

/// Replaces the character at `at` in `text` by another of its class (so the JSON stays
/// readable and the change reaches the verifier).
fn flip(text: &mut String, at: usize) {
    let c = text[at..].chars().next().unwrap();
    let other = match c {
        '0'..='8' | 'a'..='y' | 'A'..='Y' => char::from(c as u8 + 1),
        '9' => '0',
        'z' => 'a',
        'Z' => 'A',
        '+' => '/',
        '/' => '+',
        _ => panic!("no substitute for {c:?} at {at} in {text}"),
    };
    text.replace_range(at..at + c.len_utf8(), &other.to_string());
}

/// Flips a hex digit, staying lowercase hex.
fn flip_hex(text: &mut String, at: usize) {
    let c = text[at..].chars().next().unwrap();
    let other = match c {
        '0'..='8' | 'a'..='e' => char::from(c as u8 + 1),
        '9' => '0',
        'f' => 'a',
        _ => panic!("{c:?} is not hex"),
    };
    text.replace_range(at..at + 1, &other.to_string());
}

/// The byte offset of the middle alphanumeric character of `text` after `from`.
fn middle_alphanumeric(text: &str, from: usize) -> usize {
    let candidates: Vec<usize> = text
        .char_indices()
        .filter(|(i, c)| *i >= from && c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    candidates[candidates.len() / 2]
}

/// Exported bundles, altered in each way an attacker might, fail offline verification
/// with a message; the untouched file and the right key still pass; another
/// deployment's key does not.
fn tampered_bundles_fail(backend: Backend) {
    let w = sandboxed_world(backend, &[]);
    let t = &w.tenant;
    let id = w.session(&t.admin);
    let other = w.session(&t.admin);
    // Three rounds of activity, each sealed by a signed checkpoint, so the bundle
    // carries several checkpoints chained by consistency proofs.
    for round in 0..3 {
        w.exec(&t.admin, &id, &["echo", &format!("round {round}")]);
        w.expect(&t.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    }
    w.exec(&t.admin, &id, &["true"]);
    let key = w.public_key_file("key");
    let bundle = w.export(Some(&id), "b.json");
    verify_bundle(&bundle, &key).success();
    let original: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let checkpoints = original["checkpoints"].as_array().unwrap().len();
    assert!(
        checkpoints >= 3,
        "only {checkpoints} checkpoints: {original:#}"
    );
    assert!(original["entries"].as_array().unwrap().len() >= 4);

    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, &str, Mutation)> = vec![
        (
            "a byte of a leaf",
            "is not included in the checkpoint",
            Box::new(|b: &mut Value| {
                let mut leaf = b["entries"][1]["leaf"].as_str().unwrap().to_owned();
                let at = middle_alphanumeric(&leaf, 0);
                flip(&mut leaf, at);
                b["entries"][1]["leaf"] = json!(leaf);
            }),
        ),
        (
            "a byte of a field's value",
            "does not match its commitment",
            Box::new(|b: &mut Value| {
                let fields = b["entries"][0]["fields"].as_array_mut().unwrap();
                let field = fields
                    .iter_mut()
                    .find(|f| f["value"].as_str().unwrap().contains(char::is_alphanumeric))
                    .unwrap();
                let mut value = field["value"].as_str().unwrap().to_owned();
                let at = middle_alphanumeric(&value, 0);
                flip(&mut value, at);
                field["value"] = json!(value);
            }),
        ),
        (
            "a byte of an inclusion proof hash",
            "is not included in the checkpoint",
            Box::new(|b: &mut Value| {
                let mut hash = b["entries"][2]["inclusion"][0].as_str().unwrap().to_owned();
                flip_hex(&mut hash, 17);
                b["entries"][2]["inclusion"][0] = json!(hash);
            }),
        ),
        (
            "a byte of a checkpoint's signature",
            "signature does not verify",
            Box::new(|b: &mut Value| {
                let mut note = b["checkpoints"][1]["note"].as_str().unwrap().to_owned();
                // The signature line is the last; its base64 follows the key name.
                let line = note.trim_end().rfind('\n').unwrap() + 1;
                let blob = line + note[line..].rfind(' ').unwrap() + 1;
                let at = blob + (note.trim_end().len() - blob) * 2 / 3;
                flip(&mut note, at);
                b["checkpoints"][1]["note"] = json!(note);
            }),
        ),
        (
            "a byte of a checkpoint's root line",
            "signature does not verify",
            Box::new(|b: &mut Value| {
                let last = b["checkpoints"].as_array().unwrap().len() - 1;
                let mut note = b["checkpoints"][last]["note"].as_str().unwrap().to_owned();
                // origin, size, root: the third line.
                let root = note.match_indices('\n').nth(1).unwrap().0 + 1;
                flip(&mut note, root + 10);
                b["checkpoints"][last]["note"] = json!(note);
            }),
        ),
        (
            "a checkpoint in the middle dropped",
            "is not consistent with the checkpoint",
            Box::new(|b: &mut Value| {
                b["checkpoints"].as_array_mut().unwrap().remove(1);
            }),
        ),
        (
            "two checkpoints swapped",
            "is not consistent with the checkpoint",
            Box::new(|b: &mut Value| {
                b["checkpoints"].as_array_mut().unwrap().swap(1, 2);
            }),
        ),
        (
            "the session changed to another one",
            "not to the bundle's session",
            Box::new({
                let other = other.clone();
                move |b: &mut Value| b["session"] = json!(other)
            }),
        ),
        (
            "the tenant changed",
            "not to the bundle's tenant",
            Box::new(|b: &mut Value| b["tenant"] = json!("ten_someone_else")),
        ),
        (
            "an entry moved to another index",
            "is not included in the checkpoint",
            Box::new(|b: &mut Value| {
                let index = b["entries"][0]["index"].as_u64().unwrap();
                b["entries"][0]["index"] = json!(index + 1);
            }),
        ),
    ];
    for (what, reason, mutate) in &mutations {
        let mut altered = original.clone();
        mutate(&mut altered);
        assert_ne!(altered, original, "{what}: nothing changed");
        let file = w.path("altered.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&altered).unwrap()).unwrap();
        assert_refused(&verify_bundle(&file, &key), what, reason);
    }
    // A byte flipped in the raw file, inside a leaf's text as the file holds it.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let at = text.find("\"leaf\"").unwrap();
    let line_end = at + text[at..].find('\n').unwrap();
    let mut raw = text.clone();
    flip(&mut raw, middle_alphanumeric(&text[..line_end], at + 10));
    let file = w.path("raw.json");
    std::fs::write(&file, raw).unwrap();
    assert_refused(
        &verify_bundle(&file, &key),
        "a raw byte of a leaf",
        "is not included in the checkpoint",
    );
    // The untouched file still verifies.
    verify_bundle(&bundle, &key).success();

    // Another deployment's key: its checkpoints were not signed by it.
    let stranger = Server::start(Place::new(backend));
    let stranger_key = w.path("stranger.key");
    stranger
        .cli(&[
            "evidence",
            "public-key",
            "-o",
            stranger_key.to_str().unwrap(),
        ])
        .success();
    assert_ne!(
        std::fs::read_to_string(&stranger_key).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
    assert_refused(
        &verify_bundle(&bundle, &stranger_key),
        "another deployment's key",
        "it carries no signature by key",
    );
    // A file that is no key at all.
    let junk = w.path("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    assert_refused(
        &verify_bundle(&bundle, &junk),
        "a junk key",
        "does not hold a Cordon public key",
    );
}

/// Rebuilds a tar archive with `edit` applied to each (path, contents), then `extra`
/// appended.
fn rebuild_tar(
    archive: &[u8],
    edit: impl Fn(&str, &mut Vec<u8>),
    extra: Option<(&str, &[u8])>,
) -> Vec<u8> {
    use std::io::Read;
    let mut builder = tar::Builder::new(Vec::new());
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut header = entry.header().clone();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        edit(&path, &mut contents);
        header.set_size(contents.len() as u64);
        header.set_cksum();
        builder.append(&header, contents.as_slice()).unwrap();
    }
    if let Some((path, contents)) = extra {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, contents).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The files of a tar archive by path.
fn tar_files(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut files = std::collections::BTreeMap::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        files.insert(path, contents);
    }
    files
}

/// An agent's work promoted by a person to a signed release of chosen files; refusals
/// for the agent, a taken name and a missing path; the archive verifies offline until
/// it is touched.
fn releases_sign_and_verify(backend: Backend) {
    let w = sandboxed_world(backend, &[]);
    let t = &w.tenant;
    let id = w.session(&t.agent);
    w.sh(
        &t.agent,
        &id,
        "mkdir -p out && printf 'quarterly report\\n' > out/report.txt \
         && head -c 5000 /dev/urandom > out/blob.bin && echo scratch > notes.txt",
    );
    // The files' bytes as the workspace holds them.
    let read = |path: &str| {
        let (status, bytes) = w.send(
            &t.agent,
            Method::GET,
            &format!("/v1/sessions/{id}/files/{path}"),
            None,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        bytes
    };
    let report = read("out/report.txt");
    assert_eq!(report, b"quarterly report\n");
    let blob = read("out/blob.bin");
    assert_eq!(blob.len(), 5000);
    let version = w.checkpoint(&t.agent, &id, "the report");
    let promote = |token: &str, body: Value| {
        w.call(
            token,
            Method::POST,
            &format!("/v1/sessions/{id}/releases"),
            Some(body),
        )
    };

    let paths = ["out/report.txt", "out/blob.bin"];
    let (status, release) = promote(
        &t.admin,
        json!({"name": "report-1", "version": version, "paths": paths}),
    );
    assert_eq!(status, 201, "{release}");
    assert_eq!(release["name"], "report-1");
    assert_eq!(release["session_id"], id.as_str());
    assert_eq!(release["version_id"], version.as_str());
    let mut subjects: Vec<(String, String)> = release["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            ("out/blob.bin".to_owned(), sha256_hex(&blob)),
            ("out/report.txt".to_owned(), sha256_hex(&report)),
        ],
        "{release}"
    );
    let release_id = release["id"].as_str().unwrap().to_owned();

    // The agent that made it cannot promote it; the refusal is evidence.
    let (status, refused) = promote(&t.agent, json!({"name": "agent-release"}));
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("AUTHZ_DENIED")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agents-cannot-promote"),
        "{refused}"
    );
    // A taken name, a path the version does not hold.
    let (status, taken) = promote(&t.admin, json!({"name": "report-1"}));
    assert_eq!(
        (status, taken["error"]["code"].as_str()),
        (409, Some("RELEASE_NAME_TAKEN")),
        "{taken}"
    );
    let (status, missing) = promote(
        &t.admin,
        json!({"name": "report-2", "paths": ["out/no-such-file.txt"]}),
    );
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (400, Some("RELEASE_PATH_NOT_FOUND")),
        "{missing}"
    );
    // Neither refusal made a release.
    let listed = w.expect(&t.admin, Method::GET, "/v1/releases", None, 200);
    let names: Vec<&str> = listed["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["report-1"]);
    let shown = w
        .server()
        .cli_as(&t.admin, &["release", "show", &release_id, "--json"]);
    shown.success();
    assert_eq!(shown.json()["subjects"], release["subjects"]);

    // Downloaded through the CLI, verified offline.
    let key = w.public_key_file("key");
    let archive = w.path("report-1.tar");
    w.server()
        .cli_as(
            &t.admin,
            &[
                "release",
                "download",
                &release_id,
                "-o",
                archive.to_str().unwrap(),
            ],
        )
        .success();
    let run = verify_release(&archive, &key);
    run.success();
    assert!(
        run.stdout.contains(&sha256_hex(&report)) && run.stdout.contains("out/blob.bin"),
        "{run:#?}"
    );
    let bytes = std::fs::read(&archive).unwrap();
    let files = tar_files(&bytes);
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "files/out/blob.bin",
            "files/out/report.txt",
            "release.dsse.json"
        ]
    );
    assert_eq!(files["files/out/report.txt"], report);
    assert_eq!(files["files/out/blob.bin"], blob);

    // Tampered copies fail: a file's bytes changed in place, a file rewritten, a file
    // added, a file dropped.
    let tampered = w.path("tampered.tar");
    let mut in_place = bytes.clone();
    let at = in_place
        .windows(b"quarterly".len())
        .position(|window| window == b"quarterly")
        .unwrap();
    in_place[at] = b'Q';
    std::fs::write(&tampered, &in_place).unwrap();
    assert_refused(
        &verify_release(&tampered, &key),
        "a file's byte changed in the tar",
        "file `out/report.txt` was altered",
    );
    let rewritten = rebuild_tar(
        &bytes,
        |path, contents| {
            if path == "files/out/blob.bin" {
                contents[100] ^= 1;
            }
        },
        None,
    );
    std::fs::write(&tampered, rewritten).unwrap();
    assert_refused(
        &verify_release(&tampered, &key),
        "a file rewritten",
        "file `out/blob.bin` was altered",
    );
    let added = rebuild_tar(
        &bytes,
        |_, _| {},
        Some(("files/out/extra.sh", b"#!/bin/sh\n")),
    );
    std::fs::write(&tampered, added).unwrap();
    assert_refused(
        &verify_release(&tampered, &key),
        "a file added",
        "file `out/extra.sh` is not part of the signed release",
    );
    let mut dropped = tar::Builder::new(Vec::new());
    for (path, contents) in &files {
        if path == "files/out/blob.bin" {
            continue;
        }
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        dropped.append(&header, contents.as_slice()).unwrap();
    }
    std::fs::write(&tampered, dropped.into_inner().unwrap()).unwrap();
    assert_refused(
        &verify_release(&tampered, &key),
        "a file dropped",
        "file `out/blob.bin` is part of the signed release but missing",
    );
    // The signed statement itself altered: its subjects no longer carry the signature.
    let forged = rebuild_tar(
        &bytes,
        |path, contents| {
            if path == "release.dsse.json" {
                let mut envelope: Value = serde_json::from_slice(contents).unwrap();
                let mut payload = envelope["payload"].as_str().unwrap().to_owned();
                let at = payload.len() / 2;
                flip(&mut payload, at);
                envelope["payload"] = json!(payload);
                *contents = serde_json::to_vec(&envelope).unwrap();
            }
        },
        None,
    );
    std::fs::write(&tampered, forged).unwrap();
    assert_refused(
        &verify_release(&tampered, &key),
        "the statement altered",
        "does not verify",
    );
    // The rebuilt but unchanged archive still verifies: the checks above failed for
    // what changed, not for how the tar was written.
    std::fs::write(&tampered, rebuild_tar(&bytes, |_, _| {}, None)).unwrap();
    verify_release(&tampered, &key).success();
    // Another deployment's key refuses the genuine archive.
    let stranger = Server::start(Place::new(backend));
    let stranger_key = w.path("stranger.key");
    stranger
        .cli(&[
            "evidence",
            "public-key",
            "-o",
            stranger_key.to_str().unwrap(),
        ])
        .success();
    assert_refused(
        &verify_release(&archive, &stranger_key),
        "another key",
        "no signature by key",
    );

    // The log holds the promotion and the agent's refusal.
    w.wait_entries(
        &format!("session={id}"),
        "promotion and refusal",
        |entries| {
            has(entries, "promotion", |e| {
                field(e, "name") == "report-1"
                    && field(e, "release") == release_id.as_str()
                    && field(e, "version") == version.as_str()
                    && field(e, "paths") == &json!(paths)
            }) && has(entries, "authz", |e| {
                field(e, "allowed") == false
                    && field(e, "action") == "session.promote"
                    && field(e, "role") == "agent"
            })
        },
    );
    w.close(&t.admin, &id);
}

/// A secret's value never reaches captured output or the evidence log.
fn redaction(backend: Backend) {
    const VALUE: &str = "zq7-REDACT-ME-5f3a91c2e8";
    const NAME: &str = "deploy-token";
    let exports = tempfile::tempdir().unwrap();
    let w = sandboxed_world(
        backend,
        &["--evidence-export-dir", exports.path().to_str().unwrap()],
    );
    let t = &w.tenant;
    let server = w.server();
    // The value goes in on stdin, never as an argument.
    let mut child = std::process::Command::new(super::BIN)
        .args(["secret", "create", "--name", NAME])
        .args(["--service-class", "deploy", "--header", "Authorization"])
        .args(["--format", "Bearer {secret}", "--json"])
        .env("CORDON_URL", &server.url)
        .env("CORDON_TOKEN", &t.admin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{VALUE}").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(VALUE));

    let id = w.session(&t.admin);
    let marker = format!("[REDACTED:{NAME}]");
    // The value in argv: echoed back on stdout, and on stderr.
    let result = w.exec(&t.admin, &id, &["echo", "token:", VALUE]);
    assert_eq!(result["exit_code"], 0, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    assert_eq!(stdout, format!("token: {marker}\n"), "{result}");
    let result = w.exec(
        &t.admin,
        &id,
        &["sh", "-c", &format!("echo {VALUE}{VALUE} >&2; echo ok")],
    );
    assert_eq!(
        result["stderr"].as_str().unwrap(),
        format!("{marker}{marker}\n"),
        "{result}"
    );
    assert!(!result.to_string().contains(VALUE), "{result}");
    // Made inside the sandbox from pieces (never in argv whole): still redacted.
    let (head, tail) = VALUE.split_at(8);
    let result = w.exec(
        &t.admin,
        &id,
        &["sh", "-c", &format!("a={head}; b={tail}; echo \"$a$b\"")],
    );
    assert_eq!(result["stdout"], format!("{marker}\n"), "{result}");
    // Carried out of the sandbox in a URL's path: the gateway refuses it, and its
    // decision in the log names the path redacted.
    let leak = format!("http://example.com/p/{VALUE}/x?q={VALUE}");
    let result = w.exec(
        &t.admin,
        &id,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            &leak,
        ],
    );
    assert_eq!(result["stdout"], "403", "{result}");
    // In a checkpoint's summary and reason.
    let answer = w.expect(
        &t.admin,
        Method::POST,
        &format!("/v1/sessions/{id}/checkpoint"),
        Some(json!({"summary": format!("deployed with {VALUE}"), "reason": format!("reason {VALUE}")})),
        200,
    );
    assert_eq!(answer["phase"], "checkpointed", "{answer}");
    // The version keeps the summary redacted, in the answer and in the list.
    assert_eq!(
        answer["workspace_version"]["summary"],
        format!("deployed with {marker}"),
        "{answer}"
    );
    let versions = w.expect(
        &t.admin,
        Method::GET,
        &format!("/v1/sessions/{id}/versions"),
        None,
        200,
    );
    assert!(!versions.to_string().contains(VALUE), "{versions}");
    w.resume(&t.admin, &id);
    w.close(&t.admin, &id);

    let entries = w.wait_entries(&format!("session={id}"), "the checkpoint", |entries| {
        has(entries, "checkpoint", |_| true)
            && has(entries, "lifecycle", lifecycle("close"))
            && has(entries, "egress", |_| true)
    });
    let checkpoint = entries.iter().find(|e| e["kind"] == "checkpoint").unwrap();
    assert_eq!(
        field(checkpoint, "summary"),
        &json!(format!("deployed with {marker}")),
        "{checkpoint}"
    );
    let moved = entries
        .iter()
        .find(|e| e["kind"] == "lifecycle" && lifecycle("checkpoint")(e))
        .unwrap();
    assert_eq!(field(moved, "reason"), &json!(format!("reason {marker}")));
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "exec").count(),
        4,
        "{entries:#?}"
    );
    let egress = entries.iter().find(|e| e["kind"] == "egress").unwrap();
    assert_eq!(
        field(egress, "path"),
        &json!(format!("/p/{marker}/x")),
        "{egress}"
    );
    // Nowhere in the log, as the API sends it (leaves and fields), session or tenant.
    for query in [format!("session={id}&limit=1000"), "limit=1000".to_owned()] {
        let (status, raw) = w.send(
            &t.admin,
            Method::GET,
            &format!("/v1/evidence?{query}"),
            None,
        );
        assert_eq!(status, 200);
        let raw = String::from_utf8(raw).unwrap();
        assert!(!raw.contains(VALUE), "the value is in the log: {raw}");
        assert!(
            !raw.contains(&VALUE[..12]),
            "part of the value is in the log"
        );
    }
    // Nor in the bundles: exported, and written at close to the chosen directory.
    let bundle = w.export(Some(&id), "b.json");
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(!text.contains(VALUE));
    assert!(
        text.contains(&marker),
        "the redacted summary is not in the bundle"
    );
    let closed = exports
        .path()
        .join(&t.id)
        .join(format!("{id}.evidence.json"));
    let text =
        std::fs::read_to_string(&closed).unwrap_or_else(|e| panic!("{}: {e}", closed.display()));
    assert!(!text.contains(VALUE));
    let key = w.public_key_file("key");
    verify_bundle(&closed, &key).success();
    assert!(
        !w.server().place().data_dir().join("exports").exists(),
        "the default export directory was used despite --evidence-export-dir"
    );
}

/// With rules that keep nothing, the sweeper removes old versions and releases and
/// shreds evidence payloads; every removal is evidence, and bundles still verify.
fn retention_sweeps_and_proofs_hold(backend: Backend) {
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("retention.json");
    std::fs::write(
        &file,
        json!({"rules": [{"working_state_days": 0, "keep_last_versions": 1,
                          "evidence_days": 0, "releases_days": 0}]})
        .to_string(),
    )
    .unwrap();
    let w = sandboxed_world(
        backend,
        &[
            "--retention",
            file.to_str().unwrap(),
            "--retention-interval",
            "1",
        ],
    );
    let t = &w.tenant;
    let id = w.session(&t.admin);
    let mut versions = Vec::new();
    for n in 1..=3 {
        if n > 1 {
            w.resume(&t.admin, &id);
        }
        w.sh(&t.admin, &id, &format!("echo {n} > state.txt"));
        versions.push(w.checkpoint(&t.admin, &id, &format!("version {n}")));
    }
    let listed = w.expect(
        &t.admin,
        Method::GET,
        &format!("/v1/sessions/{id}/versions"),
        None,
        200,
    );
    assert_eq!(listed["versions"].as_array().unwrap().len(), 3, "{listed}");
    let (status, release) = w.call(
        &t.admin,
        Method::POST,
        &format!("/v1/sessions/{id}/releases"),
        Some(json!({"name": "short-lived"})),
    );
    assert_eq!(status, 201, "{release}");
    let release_id = release["id"].as_str().unwrap().to_owned();
    w.close(&t.admin, &id);

    let deadline = Instant::now() + RETENTION_WAIT;
    let session = format!("session={id}");
    loop {
        let kept = w.version_ids(&t.admin, &id);
        let (release_status, _) = w.call(
            &t.admin,
            Method::GET,
            &format!("/v1/releases/{release_id}"),
            None,
        );
        let entries = w.entries(&session);
        let all_shredded = !entries.is_empty()
            && entries.iter().all(|e| {
                e["fields"].as_object().unwrap().is_empty()
                    && !e["shredded"].as_array().is_none_or(Vec::is_empty)
            });
        let retention = entries.iter().any(|e| e["kind"] == "retention");
        if kept == [versions[2].as_str()] && release_status == 404 && all_shredded && retention {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {RETENTION_WAIT:?}: versions {kept:?} (want only {}), release {release_status}, \
             retention entries: {retention}, entries: {entries:#?}",
            versions[2]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A lifecycle entry lost its payload but not its commitments.
    let entries = w.entries(&session);
    let transition = entries.iter().find(|e| e["kind"] == "lifecycle").unwrap();
    let mut shredded: Vec<&str> = transition["shredded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    shredded.sort_unstable();
    assert_eq!(shredded, ["action", "from", "reason", "to"], "{transition}");
    // The sweeps are evidence: of the session (versions, the release) and the tenant
    // (shredding).
    let retention = w.entries("kind=retention");
    assert!(
        retention.iter().any(|e| e["session_id"] == id.as_str()),
        "{retention:#?}"
    );
    assert!(
        retention.iter().any(|e| e["session_id"].is_null()),
        "{retention:#?}"
    );
    // What is left still verifies, shredded fields and all.
    let key = w.public_key_file("key");
    let bundle = w.export(Some(&id), "b.json");
    let run = verify_bundle(&bundle, &key);
    run.success();
    let shredded_count: usize = run
        .stdout
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(", ")?;
            rest.strip_suffix(" field(s) shredded")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no shredded count in {run:#?}"));
    assert!(shredded_count >= 4, "{run:#?}");
    let whole = w.export(None, "tenant.json");
    verify_bundle(&whole, &key).success();
    // And the inclusion proofs of shredded entries still lead to the signed root.
    let checkpoint = w.expect(&t.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    let size = checkpoint["size"].as_u64().unwrap();
    let root = hash_of(checkpoint["root"].as_str().unwrap());
    for entry in entries
        .iter()
        .filter(|e| e["index"].as_u64().unwrap() < size)
    {
        let index = entry["index"].as_u64().unwrap();
        let proof = w.expect(
            &t.admin,
            Method::GET,
            &format!("/v1/evidence/entries/{index}/proof?size={size}"),
            None,
            200,
        );
        let path: Vec<Hash> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hash_of(h.as_str().unwrap()))
            .collect();
        let leaf = merkle::leaf_hash(entry["leaf"].as_str().unwrap().as_bytes());
        merkle::verify_inclusion(&leaf, index, size, &path, &root).unwrap();
    }
}

/// More closed sessions than one sweep reads at a time: the newest, closed last, is
/// swept all the same (a sweep must not look at the same oldest sessions forever).
fn retention_reaches_every_closed_session(backend: Backend) {
    /// One more than the sweep's page.
    const FILLERS: usize = 1001;
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("retention.json");
    std::fs::write(
        &file,
        json!({"rules": [{"working_state_days": 0, "keep_last_versions": 1}]}).to_string(),
    )
    .unwrap();
    let server = Server::start_with(
        Place::new(backend),
        &[
            "--retention",
            file.to_str().unwrap(),
            "--retention-interval",
            "1",
        ],
        &[],
    );
    let w = World {
        tenant: tenant(&server, "evidence-a"),
        sandboxed: None,
        plain: Some(server),
        http: client(),
        scratch: tempfile::tempdir().unwrap(),
    };
    let t = &w.tenant;
    // Sessions closed first, without versions: old news for retention. They are spread
    // over tenants of their own so that each close's evidence export stays small.
    close_fillers(w.server(), FILLERS, 50);
    // The last session to close has two versions (uploaded: no sandbox needed).
    let run = w.server().cli_as(
        &t.admin,
        &[
            "session", "create", "--class", "default", "--env", "dev", "--json",
        ],
    );
    run.success();
    let id = run.json()["id"].as_str().unwrap().to_owned();
    let mut parent: Option<String> = None;
    for n in 1..=2 {
        let mut tar = tar::Builder::new(Vec::new());
        let contents = format!("version {n}\n");
        let mut header = tar::Header::new_ustar();
        header.set_path("state.txt").unwrap();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, contents.as_bytes()).unwrap();
        let archive = tar.into_inner().unwrap();
        let mut request = w
            .http
            .post(format!("{}/v1/sessions/{id}/versions", w.server().url))
            .bearer_auth(&t.admin)
            .header("content-type", "application/x-tar")
            .body(archive);
        if let Some(parent) = &parent {
            request = request.header("if-match", parent.as_str());
        }
        let (status, body) = block_on(async {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        });
        assert_eq!(status, 201, "{body}");
        let version: Value = serde_json::from_str(&body).unwrap();
        parent = Some(version["id"].as_str().unwrap().to_owned());
    }
    w.close(&t.admin, &id);
    let newest = parent.unwrap();
    let deadline = Instant::now() + RETENTION_WAIT;
    loop {
        let kept = w.version_ids(&t.admin, &id);
        if kept == [newest.as_str()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session closed after {FILLERS} others still has {kept:?} after {RETENTION_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    w.wait_entries(
        &format!("session={id}&kind=retention"),
        "its sweep",
        |entries| !entries.is_empty(),
    );
}

/// Creates and closes `count` sessions spread over `tenants` new tenants, a few dozen
/// requests at a time.
fn close_fillers(server: &Server, count: usize, tenants: usize) {
    let (url, system) = (server.url.clone(), server.token.clone());
    block_on(async move {
        let http = reqwest::Client::new();
        let post = move |token: &str, path: &str, body: Value| {
            let request = http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&body);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert!(status == 200 || status == 201, "{status}: {body}");
                body
            }
        };
        let mut tokens = Vec::new();
        for n in 0..tenants {
            let tenant = post(
                &system,
                "/v1/tenants",
                json!({"name": format!("filler-{n}")}),
            )
            .await;
            let key = post(
                &system,
                "/v1/keys",
                json!({"tenant_id": tenant["id"], "role": "admin", "name": "filler"}),
            )
            .await;
            tokens.push(key["token"].as_str().unwrap().to_owned());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..count {
            let token = tokens[n % tokens.len()].clone();
            let post = post.clone();
            tasks.spawn(async move {
                let created = post(
                    &token,
                    "/v1/sessions",
                    json!({"workload_class": "default", "environment": "dev"}),
                )
                .await;
                let id = created["id"].as_str().unwrap();
                post(&token, &format!("/v1/sessions/{id}/close"), json!({})).await;
            });
            if tasks.len() >= 64 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

/// Another tenant sees nothing of this tenant's log, and its log is its own.
fn evidence_is_tenant_scoped(backend: Backend) {
    let w = plain_world(backend);
    let a = &w.tenant;
    let server = w.server();
    let id = w.session(&a.admin);
    server
        .cli_as(&a.admin, &["session", "suspend", &id])
        .success();
    w.wait_entries(&format!("session={id}"), "tenant a's session", |entries| {
        has(entries, "lifecycle", lifecycle("suspend"))
    });
    let a_checkpoint = w.expect(&a.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);

    let b = tenant(server, "evidence-b");
    // Before it did anything but get its keys, b's log may be empty.
    let b_session = {
        let run = server.cli_as(
            &b.admin,
            &[
                "session", "create", "--class", "default", "--env", "dev", "--json",
            ],
        );
        run.success();
        run.json()["id"].as_str().unwrap().to_owned()
    };
    server
        .cli_as(&b.admin, &["session", "activate", &b_session])
        .success();
    let deadline = Instant::now() + EVIDENCE_WAIT;
    let b_entries = loop {
        let entries = w.entries_as(&b.admin, "");
        if has(&entries, "lifecycle", lifecycle("activate")) {
            break entries;
        }
        assert!(Instant::now() < deadline, "b's log: {entries:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let indexes: Vec<u64> = b_entries
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        (0..indexes.len() as u64).collect::<Vec<_>>(),
        "b's log does not start at 0 or has gaps"
    );
    for entry in &b_entries {
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(leaf["tenant"], b.id.as_str(), "{entry}");
        assert!(
            entry["session_id"].is_null() || entry["session_id"] == b_session.as_str(),
            "{entry}"
        );
        assert!(!entry.to_string().contains(&a.id), "{entry}");
        assert!(!entry.to_string().contains(&id), "{entry}");
    }
    // a's session, by id: nothing in the list, 404 for its export.
    assert_eq!(
        w.entries_as(&b.admin, &format!("session={id}")),
        Vec::<Value>::new()
    );
    let (status, body) = w.call(
        &b.admin,
        Method::GET,
        &format!("/v1/evidence/export?session={id}"),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{body}"
    );
    server
        .cli_as(
            &b.admin,
            &["evidence", "export", "--session", &id, "-o", "-"],
        )
        .failure(5, "NOT_FOUND");
    // Each tenant's checkpoint names its own log.
    let b_checkpoint = w.expect(&b.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    let a_origin = origin_of(a_checkpoint["note"].as_str().unwrap());
    let b_origin = origin_of(b_checkpoint["note"].as_str().unwrap());
    assert_ne!(a_origin, b_origin);
    assert!(a_origin.ends_with(&format!("/{}", a.id)), "{a_origin}");
    assert!(b_origin.ends_with(&format!("/{}", b.id)), "{b_origin}");
    assert_eq!(
        b_checkpoint["size"].as_u64().unwrap(),
        b_entries.len() as u64,
        "{b_checkpoint}"
    );
    // b's proofs stop at b's log; a's are untouched by b's activity.
    let (status, body) = w.call(
        &b.admin,
        Method::GET,
        &format!(
            "/v1/evidence/entries/{}/proof",
            b_checkpoint["size"].as_u64().unwrap()
        ),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let a_again = w.expect(&a.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    assert_eq!(a_again["size"], a_checkpoint["size"]);
    // b's whole-log bundle holds b's entries only, and verifies.
    let key = w.public_key_file("key");
    let path = w.path("b.json");
    server
        .cli_as(
            &b.admin,
            &["evidence", "export", "-o", path.to_str().unwrap()],
        )
        .success();
    let run = verify_bundle(&path, &key);
    run.success();
    assert!(run.stdout.contains(&b.id), "{run:#?}");
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&a.id));
    // An agent reads no evidence at all.
    let (status, body) = w.call(&a.agent, Method::GET, "/v1/evidence", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("AUTHZ_DENIED")),
        "{body}"
    );
}

/// The store itself refuses to edit or delete evidence rows (SQLite triggers).
#[test]
fn evidence_rows_cannot_be_edited() {
    let w = plain_world(Backend::Sqlite);
    let a = &w.tenant;
    let id = w.session(&a.admin);
    w.wait_entries(&format!("session={id}"), "the activation", |entries| {
        has(entries, "lifecycle", lifecycle("activate"))
    });
    w.expect(&a.admin, Method::GET, "/v1/evidence/checkpoint", None, 200);
    let db = w.server().place().data_dir().join("cordon.db");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    let count = |table: &str| -> i64 {
        connection
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    };
    let entries = count("evidence_entries");
    let checkpoints = count("evidence_checkpoints");
    assert!(entries > 0 && checkpoints > 0);
    for statement in [
        "UPDATE evidence_entries SET kind = 'x'",
        "UPDATE evidence_entries SET leaf = '{}' WHERE idx = 0",
        "DELETE FROM evidence_entries",
        "DELETE FROM evidence_entries WHERE idx = 0",
        "UPDATE evidence_checkpoints SET note = 'forged'",
        "DELETE FROM evidence_checkpoints",
    ] {
        let error = connection
            .execute(statement, [])
            .expect_err(&format!("`{statement}` was allowed"));
        assert!(
            error.to_string().contains("append-only"),
            "`{statement}`: {error}"
        );
    }
    // A field can be shredded (deleted) by retention, never changed.
    let error = connection
        .execute("UPDATE evidence_fields SET value = '\"forged\"'", [])
        .expect_err("a field was changed");
    assert!(error.to_string().contains("never changed"), "{error}");
    assert_eq!(count("evidence_entries"), entries);
    assert_eq!(count("evidence_checkpoints"), checkpoints);
    let kinds: Vec<String> = connection
        .prepare("SELECT DISTINCT kind FROM evidence_entries")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!kinds.contains(&"x".to_owned()), "{kinds:?}");
    // The server still serves the log it wrote.
    let listed = w.entries(&format!("session={id}"));
    assert!(has(&listed, "lifecycle", lifecycle("activate")));
}
