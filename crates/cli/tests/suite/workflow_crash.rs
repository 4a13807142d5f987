//! The crash test of durable workflows, drain variant: all runs start first, then the
//! server is SIGKILLed at random instants while they drain, and restarted each time on
//! the same data dir. Every run must succeed with exactly one recorded outcome per
//! step, and the ledger (on loopback, through the egress gateway) must see every
//! effect's key, each applied once: a step may be delivered again after a crash, but it
//! carries the same `Idempotency-Key`, so the ledger never applies it twice.
//!
//! `workflows.rs` has the other variant (kills while runs are being started).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::sandbox::Sandboxed;
use super::workflow_scenarios::{
    Delay, Recorder, call, define, describe, get_run, journal, server_args, start, start_run,
};
use super::{Backend, Place, on_both_backends};

on_both_backends!(runs_drain_through_repeated_kill_9);

/// Runs started before the first kill.
const RUNS: usize = 30;
/// How long the runs may take to drain after the last restart.
const DRAIN: Duration = Duration::from_secs(120);
const STEPS: [&str; 3] = ["a", "b", "c"];

/// xorshift64: a failing schedule of kills replays from its printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How many runs of the server's tenant have ended (one listing per status).
fn ended(server: &Sandboxed) -> usize {
    ["succeeded", "failed", "cancelled"]
        .iter()
        .map(|status| {
            let (code, list) = call(
                server,
                &server.server.token,
                Method::GET,
                &format!("/v1/runs?status={status}&limit=1000"),
                &[],
                None,
            );
            assert_eq!(code, 200, "{list}");
            list["items"].as_array().unwrap().len()
        })
        .sum()
}

fn runs_drain_through_repeated_kill_9(backend: Backend) {
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
    // Printed first, so a failure's captured output names it.
    eprintln!("crash drain test ({backend:?}) seed: {seed} (CORDON_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let kills = 6 + rng.below(5) as usize;

    // Deliveries take 0.1 to 2.5 s each, so the runs span the kills: some steps finish
    // between two kills, others are cut off by one and delivered again.
    let ledger = Recorder::start_with(Delay::Between {
        min: 100,
        max: 2500,
        seed,
    });
    let files = tempfile::tempdir().unwrap();
    let args = server_args(&files, &ledger);
    let mut server = start(Place::with_sandboxes(backend), &args);
    let session = server.active_session("default");
    let url = format!("http://up.test:{}/effect", ledger.port());
    let digest = define(
        &server,
        &format!(
            "name: three-effects
defaults:
  timeout: 20s
  retry:
    error: {{max_attempts: 30, initial_interval: 100ms, max_interval: 1s}}
    capacity: {{max_attempts: 30, initial_interval: 100ms, max_interval: 1s}}
    timeout: {{max_attempts: 30, initial_interval: 100ms, max_interval: 1s}}
steps:
  - {{name: a, kind: http, method: POST, url: \"{url}\", body: a}}
  - {{name: b, kind: http, method: POST, url: \"{url}\", body: b, needs: [a]}}
  - {{name: c, kind: http, method: POST, url: \"{url}\", body: c, needs: [b]}}
"
        ),
    );
    let began = Instant::now();
    let ids: Vec<String> = (0..RUNS)
        .map(|_| {
            start_run(
                &server,
                json!({"definition": digest, "session_id": session}),
            )
        })
        .collect();

    let mut schedule = Vec::new();
    let mut cut_off = Vec::new();
    for _ in 0..kills {
        let pause = Duration::from_millis(200 + rng.below(1301));
        schedule.push(pause.as_millis());
        std::thread::sleep(pause);
        // Runs not yet done when the kill lands.
        cut_off.push(RUNS - ended(&server));
        let place = server.server.kill9();
        server = start(place, &args);
    }
    let last_restart = Instant::now();
    loop {
        let done = ended(&server);
        if done == ids.len() {
            break;
        }
        if last_restart.elapsed() > DRAIN {
            let stuck: Vec<String> = ids
                .iter()
                .map(|id| get_run(&server, id))
                .filter(|run| run["status"] != "succeeded")
                .map(|run| {
                    let id = run["id"].as_str().unwrap();
                    format!("{run}\n{}", describe(&journal(&server, id)))
                })
                .take(3)
                .collect();
            panic!(
                "seed {seed}: {done} of {} runs ended within {DRAIN:?} of the last restart; \
                 kills after {schedule:?} ms; some that did not:\n{}",
                ids.len(),
                stuck.join("\n\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = began.elapsed();
    let after_restart = last_restart.elapsed();

    // Every run succeeded, with one `completed` per step and a gapless journal.
    let mut attempts = 0;
    let mut orphaned = 0;
    for id in &ids {
        let run = get_run(&server, id);
        let entries = journal(&server, id);
        let log = describe(&entries);
        assert_eq!(
            run["status"], "succeeded",
            "seed {seed}: run {id}: {run}\n{log}"
        );
        for step in STEPS {
            let of = |kind: &str| {
                entries
                    .iter()
                    .filter(|e| e["step"] == step && e["kind"] == kind)
                    .count()
            };
            assert_eq!(
                of("completed"),
                1,
                "seed {seed}: run {id} step {step} has {} outcomes:\n{log}",
                of("completed")
            );
            attempts += of("started");
            orphaned += of("attempt_orphaned");
        }
        let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "seed {seed}: run {id}: the journal has gaps:\n{log}"
        );
        assert_eq!(
            entries
                .iter()
                .filter(|e| e["kind"] == "run_succeeded")
                .count(),
            1,
            "seed {seed}: run {id}:\n{log}"
        );
    }

    // The ledger: the first delivery of a key applies it, later ones are duplicates.
    let mut deliveries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in ledger.received() {
        let key = request
            .headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_else(|| panic!("seed {seed}: a delivery without a key: {request:?}"));
        deliveries.entry(key).or_default().push(request.body);
    }
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| STEPS.map(|s| format!("{id}/{s}")))
        .collect();
    for key in &expected {
        let bodies = deliveries
            .get(key)
            .unwrap_or_else(|| panic!("seed {seed}: effect {key} never reached the ledger"));
        // Every delivery of a key is the same effect.
        let step = key.rsplit('/').next().unwrap();
        assert!(
            bodies.iter().all(|b| b == step),
            "seed {seed}: {key} was delivered with other bodies: {bodies:?}"
        );
    }
    let unknown: Vec<&String> = deliveries
        .keys()
        .filter(|k| !expected.contains(k))
        .collect();
    assert!(
        unknown.is_empty(),
        "seed {seed}: unexpected keys {unknown:?}"
    );
    let applied = deliveries.len();
    assert_eq!(applied, 3 * RUNS, "seed {seed}");
    let duplicates: usize = deliveries.values().map(|d| d.len() - 1).sum();
    eprintln!(
        "crash drain test ({backend:?}, seed {seed}): {RUNS} runs, {kills} kills after {schedule:?} ms \
         with {cut_off:?} runs unfinished, \
         {attempts} attempts for {} steps ({orphaned} orphaned by a kill), {applied} effects applied once, \
         {duplicates} duplicate deliveries, drained {:.1} s after the start ({:.1} s after the last restart)",
        expected.len(),
        drained.as_secs_f64(),
        after_restart.as_secs_f64(),
    );
}
