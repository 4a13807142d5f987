//! The SRE metrics on a scripted scenario, through the real binary: sessions closed
//! with each outcome in two workload classes, tool failures and their recovery, egress
//! denials from a sandbox, a workflow step dead-lettered by policy and redriven after a
//! policy change, a denial marked as a false positive, a restore, two completed runs.
//! The test computes every expected value itself from what the API shows (sessions,
//! exec evidence, egress decisions, dead letters, sandbox counters) and compares it
//! with `/v1/metrics/sre`, `/v1/metrics/slo`, the weekly report and `/metrics`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cordon_core::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use super::sandbox::Sandboxed;
use super::workflow_scenarios::{
    Recorder, call, define, policy_allowing, server_args, start, start_run, wait_status,
};
use super::{Backend, Place, on_both_backends};

on_both_backends!(
    sre_metrics_match_what_the_api_shows,
    idle_sessions_close_with_the_policy_outcome,
);

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Prices far from the defaults, so a formula that ignored them would show.
const PRICES: (f64, f64, f64, f64) = (0.5, 0.25, 1000.0, 10.0);

/// A server with sandboxes, the recorder's policy (up.test allowed, blocked.test not)
/// and `config` as its telemetry configuration; the files must outlive it.
fn start_with_telemetry(
    backend: Backend,
    config: Value,
) -> (Sandboxed, Recorder, tempfile::TempDir) {
    let up = Recorder::start(Duration::ZERO);
    let files = tempfile::tempdir().unwrap();
    let mut args = server_args(&files, &up);
    let file = files.path().join("telemetry.json");
    std::fs::write(&file, config.to_string()).unwrap();
    args.extend([
        "--telemetry-config".to_owned(),
        file.to_str().unwrap().to_owned(),
    ]);
    (start(Place::with_sandboxes(backend), &args), up, files)
}

fn api(s: &Sandboxed, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call(s, &s.server.token, method, path, &[], body)
}

fn ok_json(s: &Sandboxed, path: &str) -> Value {
    let (status, body) = api(s, Method::GET, path, None);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn close(s: &Sandboxed, id: &str, outcome: Option<&str>) {
    let body = match outcome {
        Some(o) => json!({"reason": "done", "outcome": o}),
        None => json!({"reason": "done"}),
    };
    let (status, value) = api(
        s,
        Method::POST,
        &format!("/v1/sessions/{id}/close"),
        Some(body),
    );
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["phase"], "closed", "{value}");
}

fn curl(s: &Sandboxed, id: &str, url: &str) -> String {
    s.ok(
        id,
        &format!("curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' {url}"),
    )
}

fn all_decisions(s: &Sandboxed) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let after = all.last().map_or(0, |d| d["seq"].as_i64().unwrap());
        let page = ok_json(s, &format!("/v1/egress/decisions?limit=500&after={after}"));
        let items = page["decisions"].as_array().unwrap().clone();
        if items.is_empty() {
            return all;
        }
        all.extend(items);
    }
}

fn close_to(actual: &Value, expected: f64, tolerance: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

fn sre_metrics_match_what_the_api_shows(backend: Backend) {
    let (s, up, _files) = start_with_telemetry(
        backend,
        json!({
            "prices": {"currency": "EUR", "cpu_second": PRICES.0, "memory_gib_second": PRICES.1,
                       "egress_gib": PRICES.2, "artifact_gib_day": PRICES.3},
            "slos": [{"slo": "session_completion", "workload_class": "*", "objective": 0.9},
                     {"slo": "recovery", "workload_class": "default", "objective": 0.9,
                      "threshold_seconds": 60}],
            "meter_interval_seconds": 1,
            "slo_interval_seconds": 1
        }),
    );
    let mut execs = 0u64;

    // Sessions in two classes.
    let a1 = s.active_session("default");
    let a2 = s.active_session("default");
    let t1 = s.active_session("tight");
    let t2 = s.active_session("tight");

    // A tool failure in a1, a second failure, then the recovery.
    s.fails(&a1, "exit 3");
    std::thread::sleep(Duration::from_millis(300));
    s.fails(&a1, "exit 4");
    std::thread::sleep(Duration::from_millis(700));
    s.ok(&a1, "true");
    s.ok(&a2, "echo fine > /workspace/notes.txt");
    execs += 4;

    // Egress from t1: one allowed request, two denied.
    let allowed = format!("http://up.test:{}/a", up.port());
    let blocked = format!("http://blocked.test:{}/b", up.port());
    assert_eq!(curl(&s, &t1, &allowed), "200");
    assert_eq!(curl(&s, &t1, &blocked), "403");
    assert_eq!(curl(&s, &t1, &blocked), "403");
    execs += 3;

    // A checkpoint and a restore of a2.
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/sessions/{a2}/checkpoint"),
        Some(json!({"summary": "notes"})),
    );
    assert_eq!(status, 200, "{body}");
    let version = body["workspace_version"]["id"].as_str().unwrap().to_owned();
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/sessions/{a2}/restore"),
        Some(json!({"version": version})),
    );
    assert_eq!(status, 200, "{body}");

    // Two runs, each in a session of its own: one succeeds at once, one is blocked by
    // policy, redriven after the policy allows it, and then succeeds.
    let fine = define(
        &s,
        &format!(
            "name: fine\nsteps:\n  - {{name: call, kind: http, method: POST, url: \"{allowed}\"}}\n"
        ),
    );
    let reaching = define(
        &s,
        &format!(
            "name: reaching\nsteps:\n  - {{name: out, kind: http, method: POST, url: \"{blocked}\"}}\n"
        ),
    );
    let run_ok = start_run(&s, json!({"definition": fine}));
    let run_blocked = start_run(&s, json!({"definition": reaching}));
    assert_eq!(
        wait_status(&s, &run_ok, &["succeeded", "failed"])["status"],
        "succeeded"
    );
    assert_eq!(
        wait_status(&s, &run_blocked, &["blocked", "failed"])["status"],
        "blocked"
    );
    let dlq = ok_json(&s, &format!("/v1/dlq?run_id={run_blocked}"));
    let dead_letter = dlq["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = api(
        &s,
        Method::PUT,
        "/v1/egress/policy",
        Some(policy_allowing(&up, &["up.test", "blocked.test"])),
    );
    assert!(status == 200 || status == 201, "{body}");
    // The gateway picks policy changes up within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/dlq/{dead_letter}/redrive"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        wait_status(&s, &run_blocked, &["succeeded", "failed"])["status"],
        "succeeded"
    );

    // Mark the first sandbox denial a false positive.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t1_decisions = loop {
        let d = ok_json(&s, &format!("/v1/egress/decisions?session={t1}&limit=500"));
        let d = d["decisions"].as_array().unwrap().clone();
        if d.len() >= 3 {
            break d;
        }
        assert!(Instant::now() < deadline, "t1's decisions: {d:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let denied: Vec<&Value> = t1_decisions
        .iter()
        .filter(|d| d["reason"] == "EGRESS_DESTINATION_NOT_ALLOWED")
        .collect();
    assert_eq!(denied.len(), 2, "{t1_decisions:?}");
    let seq = denied[0]["seq"].as_i64().unwrap();
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/egress/decisions/{seq}/false-positive"),
        None,
    );
    assert_eq!(status, 204, "{body}");
    // An allowed request is no block to mark.
    let allowed_seq = t1_decisions
        .iter()
        .find(|d| d["reason"] == "EGRESS_ALLOWED")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/egress/decisions/{allowed_seq}/false-positive"),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_FAILED");

    // The sandboxes' CPU counters before they close: the metered CPU is at least this.
    let mut cpu_seen = 0.0;
    for id in [&a1, &a2, &t1, &t2] {
        let sandbox = ok_json(&s, &format!("/v1/sessions/{id}/sandbox"));
        cpu_seen += sandbox["counters"]["cpu_usage_usec"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6;
    }
    close(&s, &a1, None);
    close(&s, &a2, Some("failed"));
    close(&s, &t1, Some("abandoned"));
    close(&s, &t2, Some("succeeded"));
    // An outcome belongs to `close` only, and must be one of the three.
    let other = s.active_session("default");
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/sessions/{other}/suspend"),
        Some(json!({"outcome": "failed"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = api(
        &s,
        Method::POST,
        &format!("/v1/sessions/{other}/close"),
        Some(json!({"outcome": "great"})),
    );
    assert_eq!(status, 400, "{body}");
    close(&s, &other, Some("succeeded"));
    // The run sessions close as their runs end; wait for both.
    let run_sessions: Vec<String> = [&run_ok, &run_blocked]
        .iter()
        .map(|r| {
            ok_json(&s, &format!("/v1/runs/{r}"))["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &run_sessions {
        while ok_json(&s, &format!("/v1/sessions/{id}"))["phase"] != "closed" {
            assert!(Instant::now() < deadline, "run session {id} did not close");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Allowed decisions are recorded in batches: let the last ones land and be metered.
    std::thread::sleep(Duration::from_millis(2500));

    // --- What the API shows, computed here ---
    let closed = ok_json(&s, "/v1/sessions?phase=closed&limit=500");
    let mut outcomes: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for session in closed["items"].as_array().unwrap() {
        let class = session["workload_class"].as_str().unwrap().to_owned();
        let outcome = session["outcome"]
            .as_str()
            .expect("a closed session has an outcome");
        *outcomes
            .entry(class)
            .or_default()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }
    assert_eq!(outcomes["tight"].get("abandoned"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes["default"].get("failed"), Some(&1), "{outcomes:?}");

    // The incident: a1's first failed exec until its next successful one.
    let evidence = ok_json(
        &s,
        &format!("/v1/evidence?session={a1}&kind=exec&limit=1000"),
    );
    let outcomes_of_execs: Vec<(Timestamp, bool)> = evidence["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fields"].get("exit_code").is_some_and(|c| !c.is_null()))
        .map(|e| {
            let at: Timestamp = serde_json::from_value(e["at"].clone()).unwrap();
            (at, e["fields"]["exit_code"] == 0)
        })
        .collect();
    assert_eq!(outcomes_of_execs.len(), 3, "{evidence}");
    let opened = outcomes_of_execs.iter().find(|(_, ok)| !ok).unwrap().0;
    let recovered = outcomes_of_execs.iter().find(|(_, ok)| *ok).unwrap().0;
    let expected_mttr = (recovered.unix_micros() - opened.unix_micros()) as f64 / 1e6;

    let decisions = all_decisions(&s);
    let egress_bytes: u64 = decisions
        .iter()
        .map(|d| d["bytes_sent"].as_u64().unwrap() + d["bytes_received"].as_u64().unwrap())
        .sum();
    // Blocks: the sandbox's denials (sessions that ran no workflow step) and the dead
    // letter (its gateway denial is the step's block, counted once).
    let sandbox_denials = decisions
        .iter()
        .filter(|d| d["reason"] == "EGRESS_DESTINATION_NOT_ALLOWED")
        .filter(|d| !run_sessions.contains(&d["session_id"].as_str().unwrap().to_owned()))
        .count() as u64;
    assert_eq!(sandbox_denials, 2);
    let dead_letters = ok_json(&s, "/v1/dlq?status=all&limit=500")["items"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert_eq!(dead_letters, 1);
    let blocks = sandbox_denials + dead_letters;
    // Tool operations: the execs above and the two http steps that completed.
    let tool_operations = execs + 2;
    let governed = decisions.len() as u64 + tool_operations + dead_letters;

    // --- What the metrics say ---
    let metrics = ok_json(&s, "/v1/metrics/sre?group_by=workload_class");
    assert_eq!(metrics["currency"], "EUR", "{metrics}");
    let groups: BTreeMap<String, Value> = metrics["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_owned(), g.clone()))
        .collect();
    assert_eq!(
        groups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default", "tight"],
        "one group per workload class, no other"
    );
    for (class, counts) in &outcomes {
        let g = &groups[class]["sessions"];
        let total: u64 = counts.values().sum();
        let succeeded = counts.get("succeeded").copied().unwrap_or(0);
        assert_eq!(g["closed"], total, "{class}: {g}");
        assert_eq!(g["succeeded"], succeeded, "{class}: {g}");
        assert_eq!(
            g["failed"],
            counts.get("failed").copied().unwrap_or(0),
            "{class}: {g}"
        );
        assert_eq!(
            g["abandoned"],
            counts.get("abandoned").copied().unwrap_or(0),
            "{class}: {g}"
        );
        close_to(
            &g["success_rate"],
            succeeded as f64 / total as f64,
            1e-9,
            class,
        );
    }
    let total = &metrics["total"];
    let recovery = &total["recovery"];
    assert_eq!(recovery["incidents"], 1, "{recovery}");
    assert_eq!(recovery["recovered"], 1, "{recovery}");
    assert_eq!(recovery["tool_operations"], tool_operations, "{recovery}");
    assert_eq!(recovery["tool_failures"], 2, "{recovery}");
    // Facts and evidence are stamped a moment apart at each end.
    close_to(&recovery["mttr_seconds"], expected_mttr, 0.25, "MTTR");

    let b = &total["policy_blocks"];
    assert_eq!(b["blocks"], blocks, "{b}");
    assert_eq!(b["egress_blocks"], sandbox_denials, "{b}");
    assert_eq!(b["step_blocks"], dead_letters, "{b}");
    // All three were egress refusals: two of the sandbox, one of the step.
    assert_eq!(b["egress_denied"], blocks, "{b}");
    assert_eq!(b["governed_actions"], governed, "{b}");
    close_to(
        &b["block_rate"],
        blocks as f64 / governed as f64,
        1e-9,
        "block rate",
    );
    // One marked by hand, one redriven successfully after the policy change.
    assert_eq!(b["false_positives"], 2, "{b}");
    close_to(
        &b["false_positive_ratio"],
        2.0 / blocks as f64,
        1e-9,
        "false-positive ratio",
    );
    let denials = total["egress_denials"].as_array().unwrap();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0]["reason"], "EGRESS_DESTINATION_NOT_ALLOWED");
    assert_eq!(
        denials[0]["destination"],
        format!("blocked.test:{}", up.port())
    );
    assert_eq!(denials[0]["count"], blocks);

    let restore = &total["artifact_restore"];
    assert_eq!(restore["count"], 1, "{restore}");
    assert!(restore["p50_seconds"].as_f64().unwrap() > 0.0, "{restore}");

    let cost = &total["cost"];
    assert_eq!(cost["egress_bytes"], egress_bytes, "{cost}");
    let cpu = cost["cpu_seconds"].as_f64().unwrap();
    assert!(
        cpu >= cpu_seen - 1e-6,
        "metered {cpu} s < {cpu_seen} s the sandboxes showed"
    );
    let memory = cost["memory_gib_seconds"].as_f64().unwrap();
    assert!(memory > 0.0, "{cost}");
    let gib_days = cost["artifact_gib_days"].as_f64().unwrap();
    assert!(gib_days > 0.0, "{cost}");
    let expected_total = cpu * PRICES.0
        + memory * PRICES.1
        + egress_bytes as f64 / GIB * PRICES.2
        + gib_days * PRICES.3;
    close_to(
        &cost["total"],
        expected_total,
        1e-9 + expected_total * 1e-9,
        "total cost",
    );
    let workflows = &total["workflows"];
    assert_eq!(workflows["completed"], 2, "{workflows}");
    let completed_cost = workflows["completed_cost"].as_f64().unwrap();
    assert!(completed_cost > 0.0, "{workflows}");
    close_to(
        &workflows["cost_per_completed"],
        completed_cost / 2.0,
        1e-12,
        "cost per run",
    );

    // group_by=none: one group holding everything.
    let none = ok_json(&s, "/v1/metrics/sre?group_by=none");
    assert_eq!(none["groups"].as_array().unwrap().len(), 1);
    assert_eq!(none["groups"][0]["policy_blocks"], total["policy_blocks"]);

    // By session and by run: the incident is a1's; each run has its completion and cost.
    let by_session = ok_json(&s, "/v1/metrics/sre?group_by=session");
    let a1_group = by_session["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == a1.as_str())
        .unwrap_or_else(|| panic!("no group for {a1}: {by_session}"));
    assert_eq!(a1_group["recovery"]["incidents"], 1, "{a1_group}");
    assert_eq!(a1_group["sessions"]["closed"], 1, "{a1_group}");
    let by_run = ok_json(&s, "/v1/metrics/sre?group_by=run");
    let mut per_run = 0.0;
    for run in [&run_ok, &run_blocked] {
        let group = by_run["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == run.as_str())
            .unwrap_or_else(|| panic!("no group for {run}: {by_run}"));
        assert_eq!(group["workflows"]["completed"], 1, "{group}");
        per_run += group["workflows"]["completed_cost"].as_f64().unwrap();
    }
    close_to(
        &json!(per_run),
        completed_cost,
        1e-12,
        "the runs' costs add up",
    );

    // SLOs: session completion per class, recovery for `default`.
    let slos = ok_json(&s, "/v1/metrics/slo");
    let tight = slos["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "session_completion" && x["workload_class"] == "tight")
        .unwrap_or_else(|| panic!("{slos}"));
    let tight_total: u64 = outcomes["tight"].values().sum();
    let tight_ok = outcomes["tight"].get("succeeded").copied().unwrap_or(0);
    assert_eq!(tight["total"], tight_total);
    assert_eq!(tight["good"], tight_ok);
    let budget = 1.0 - (1.0 - tight_ok as f64 / tight_total as f64) / 0.1;
    close_to(&tight["error_budget_remaining"], budget, 1e-9, "budget");
    let recovery_slo = slos["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "recovery")
        .unwrap_or_else(|| panic!("{slos}"));
    assert_eq!(recovery_slo["good"], 1, "{recovery_slo}");

    // Prometheus: the same closes, and the SLO gauges once computed.
    let text = block_on_text(&s, "/metrics");
    let closed_lines: f64 = text
        .lines()
        .filter(|l| l.starts_with("cordon_sessions_closed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let all_closed: u64 = outcomes.values().flat_map(|c| c.values()).sum();
    assert_eq!(closed_lines as u64, all_closed, "{text}");
    // The SLO gauges, recomputed every `slo_interval_seconds` (1 s here).
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = block_on_text(&s, "/metrics");
        if text.contains(
            r#"cordon_slo_burn_rate{slo="session_completion",workload_class="tight",window="1h"}"#,
        ) || text.contains(r#"workload_class="tight",slo="session_completion""#)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no SLO gauges for `tight`:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        text.contains("cordon_slo_error_budget_remaining{"),
        "{text}"
    );
    for name in [
        "cordon_tool_operations_total{",
        "cordon_policy_blocks_total{",
        "cordon_recovery_seconds_bucket{",
        "cordon_policy_block_false_positives_total{",
        "cordon_usage_egress_bytes_total{",
    ] {
        assert!(text.contains(name), "no {name} in /metrics");
    }

    // The weekly report of this week, with these numbers.
    let week = cordon_telemetry::IsoWeek::containing(Timestamp::now()).to_string();
    let report = ok_json(&s, &format!("/v1/reports/weekly?week={week}&format=json"));
    assert_eq!(report["week"], week.as_str());
    assert_eq!(report["this_week"]["sessions"]["closed"], all_closed);
    assert_eq!(report["this_week"]["policy_blocks"]["blocks"], blocks);
    assert_eq!(
        report["integrity"]["status"], "verified",
        "{}",
        report["integrity"]
    );
    let html = block_on_text(&s, &format!("/v1/reports/weekly?week={week}&format=html"));
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<svg"), "no chart");
    assert!(html.contains("Sessions closed"));
    let md = s
        .server
        .cli(&["report", "weekly", "--week", &week, "--format", "md"]);
    md.success();
    assert!(
        md.stdout
            .contains(&format!("| Sessions closed | {all_closed} |")),
        "{}",
        md.stdout
    );

    // Bad input, and who may ask.
    for (path, code) in [
        (
            "/v1/metrics/sre?from=2026-11-20T00:00:00Z&to=2026-11-10T00:00:00Z",
            "VALIDATION_FAILED",
        ),
        ("/v1/metrics/sre?group_by=colour", "VALIDATION_FAILED"),
        ("/v1/metrics/sre?from=yesterday", "VALIDATION_FAILED"),
        ("/v1/reports/weekly?week=2026-W99", "VALIDATION_FAILED"),
        ("/v1/reports/weekly?format=pdf", "VALIDATION_FAILED"),
    ] {
        let (status, body) = api(&s, Method::GET, path, None);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let agent = s.server.cli(&[
        "key", "create", "--role", "agent", "--name", "bot", "--json",
    ]);
    agent.success();
    let agent_token = agent.json()["token"].as_str().unwrap().to_owned();
    let (status, body) = call(&s, &agent_token, Method::GET, "/v1/metrics/sre", &[], None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "AUTHZ_DENIED");
    // Another tenant sees none of it.
    let tenant = s.server.cli(&["tenant", "create", "other", "--json"]);
    tenant.success();
    let tenant_id = tenant.json()["id"].as_str().unwrap().to_owned();
    let key = s.server.cli(&[
        "key", "create", "--tenant", &tenant_id, "--role", "admin", "--name", "o", "--json",
    ]);
    key.success();
    let other_token = key.json()["token"].as_str().unwrap().to_owned();
    let (status, body) = call(&s, &other_token, Method::GET, "/v1/metrics/sre", &[], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"]["sessions"]["closed"], 0, "{body}");
    assert_eq!(body["total"]["policy_blocks"]["blocks"], 0, "{body}");
    let (status, body) = call(
        &s,
        &other_token,
        Method::POST,
        &format!("/v1/egress/decisions/{seq}/false-positive"),
        &[],
        None,
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &s,
        &other_token,
        Method::POST,
        &format!("/v1/dlq/{dead_letter}/false-positive"),
        &[],
        None,
    );
    assert_eq!(status, 404, "{body}");
}

fn block_on_text(s: &Sandboxed, path: &str) -> String {
    let (status, bytes) = s.request(Method::GET, path, &[], None, None);
    assert_eq!(status, 200, "{path}");
    String::from_utf8(bytes).unwrap()
}

/// A session left idle longer than the configured timeout is closed by the server with
/// the configured outcome, and says why in its event log; the closes count in the
/// metrics like any other.
fn idle_sessions_close_with_the_policy_outcome(backend: Backend) {
    let (s, _up, files) = start_with_telemetry(
        backend,
        json!({"session_idle_timeout_seconds": 2, "timeout_outcome": "failed",
               "meter_interval_seconds": 1}),
    );
    let idle = s.active_session("default");
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = loop {
        let session = ok_json(&s, &format!("/v1/sessions/{idle}"));
        if session["phase"] == "closed" {
            break session;
        }
        assert!(Instant::now() < deadline, "still {session}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(closed["outcome"], "failed", "{closed}");
    let events = ok_json(&s, &format!("/v1/sessions/{idle}/events"));
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "system", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("idle"), "{last}");
    let metrics = ok_json(&s, "/v1/metrics/sre?group_by=none");
    assert_eq!(metrics["total"]["sessions"]["failed"], 1, "{metrics}");

    // At start the server wrote each tenant's report of the last complete week into
    // its export location (`<data-dir>/reports/<tenant>/<week>.{html,md,json}`).
    let week = cordon_telemetry::IsoWeek::last_complete(Timestamp::now()).to_string();
    let reports = s.server.place().data_dir().join("reports");
    let tenants: Vec<_> = std::fs::read_dir(&reports)
        .unwrap_or_else(|e| panic!("{}: {e}", reports.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    for ext in ["html", "md", "json"] {
        let file = tenants[0].join(format!("{week}.{ext}"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(&week), "{}", file.display());
    }

    // A bad telemetry file stops the server from starting, naming the field.
    let bad = files.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"slos": [{"slo": "session_completion", "objective": 1.5}]}"#,
    )
    .unwrap();
    let mut place = Place::new(backend);
    let (status, log) =
        place.serve_expecting_exit(&["--telemetry-config", bad.to_str().unwrap()], &[]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("slos[0].objective"), "{log}");
}
