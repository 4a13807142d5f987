//! The files in deploy/: the Prometheus alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`); every alert has a severity, its annotations,
//! a runbook that is a heading of docs/metrics.md, and unit tests that fire it and that
//! do not; the Grafana dashboard is well formed; and the rules, their tests and the
//! dashboard name only the documented metrics below.
//!
//! promtool is Prometheus's (Debian and Ubuntu: `apt-get install prometheus`, which CI
//! does): without it these tests fail, they never skip.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "deploy/prometheus/cordon-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/cordon-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/cordon-dashboard.json";
const METRICS_DOC: &str = "docs/metrics.md";

/// The counters and gauges the server exports (docs/metrics.md, "Prometheus metrics",
/// and crates/api/src/telemetry.rs).
const METRICS: &[&str] = &[
    "cordon_sessions_closed_total",
    "cordon_tool_operations_total",
    "cordon_policy_blocks_total",
    "cordon_policy_block_false_positives_total",
    "cordon_governed_actions_total",
    "cordon_egress_denials_by_destination_total",
    "cordon_usage_cpu_seconds_total",
    "cordon_usage_memory_gib_seconds_total",
    "cordon_usage_egress_bytes_total",
    "cordon_cost_total",
    "cordon_workflow_runs_finished_total",
    "cordon_workflow_completed_cost_total",
    "cordon_slo_objective",
    "cordon_slo_attainment",
    "cordon_slo_error_budget_remaining",
    "cordon_slo_burn_rate",
    "cordon_http_requests_total",
    "cordon_sessions",
    "cordon_egress_decisions_total",
    "cordon_egress_denials_total",
    "cordon_sandbox_execs_total",
    "cordon_telemetry_facts_dropped_total",
];

/// Histograms with buckets (`set_buckets_for_metric` in crates/api/src/telemetry.rs):
/// exported as `_bucket`, `_sum` and `_count`.
const HISTOGRAMS: &[&str] = &[
    "cordon_recovery_seconds",
    "cordon_artifact_restore_seconds",
    "cordon_http_request_duration_seconds",
];

/// Histograms recorded without buckets, which the exporter renders as summaries:
/// `_sum` and `_count` (and quantiles), no `_bucket`.
const SUMMARIES: &[&str] = &[
    "cordon_sandbox_exec_duration_seconds",
    "cordon_artifact_checkpoint_seconds",
];

/// The dashboard's rows, in order.
const ROWS: &[&str] = &["Reliability", "Safety", "Efficiency", "Artifacts", "API"];

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("deploy").is_dir() && root.join("Cargo.lock").is_file(),
        "{} is not the repository root",
        root.display()
    );
    root
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Runs promtool from the repository root and fails with its output if it fails.
fn promtool(args: &[&str]) {
    let output = match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "promtool is not on PATH: the alert rules are checked with Prometheus's promtool; \
             install it (Debian, Ubuntu: `apt-get install prometheus`)"
        ),
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    assert!(
        output.status.success(),
        "`promtool {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_checks_the_alert_rules() {
    promtool(&["check", "rules", RULES]);
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    promtool(&["test", "rules", RULE_TESTS]);
}

/// Every match of `cordon_[a-z_]+` in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cordon_") {
        let after = &rest[at + "cordon_".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 {
            names.insert(format!("cordon_{}", &after[..len]));
        }
        rest = &after[len..];
    }
    names
}

fn documented(name: &str) -> bool {
    let with = |bases: &[&str], suffixes: &[&str]| {
        suffixes.iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| bases.contains(&base))
        })
    };
    METRICS.contains(&name)
        || with(HISTOGRAMS, &["_bucket", "_sum", "_count"])
        || with(SUMMARIES, &["_sum", "_count"])
}

#[test]
fn the_rules_and_the_dashboard_name_only_documented_metrics() {
    for file in [RULES, RULE_TESTS, DASHBOARD] {
        let names = metric_names(&read(file));
        assert!(!names.is_empty(), "{file} names no cordon_ metric");
        let unknown: Vec<_> = names.iter().filter(|name| !documented(name)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics that are not in the documented list: {unknown:?}"
        );
    }
}

/// The documented list is what the code emits: each name is a string literal in a
/// crate's sources, and the histograms have buckets.
#[test]
fn the_documented_metrics_are_emitted() {
    let mut literals = BTreeSet::new();
    let mut dirs = vec![root().join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                literals.extend(
                    text.split('"')
                        .skip(1)
                        .step_by(2)
                        .filter(|literal| literal.starts_with("cordon_"))
                        .map(str::to_owned),
                );
            }
        }
    }
    let missing: Vec<_> = METRICS
        .iter()
        .chain(HISTOGRAMS)
        .chain(SUMMARIES)
        .filter(|name| !literals.contains(**name))
        .collect();
    assert!(missing.is_empty(), "no code emits {missing:?}");
    let recorder = read("crates/api/src/telemetry.rs");
    for name in HISTOGRAMS {
        assert!(
            recorder.contains(&format!("Matcher::Full(\"{name}\"")),
            "{name} has no buckets in crates/api/src/telemetry.rs: `_bucket` queries need them"
        );
    }
}

/// The anchor GitHub gives a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The value of `key: value` on a trimmed line, unquoted.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let value = line.strip_prefix(key)?.strip_prefix(':')?.trim();
    Some(value.trim_matches(|c| c == '\'' || c == '"'))
}

/// Each alert of the rules file: its name and the lines of its rule.
fn alerts(rules: &str) -> Vec<(String, Vec<String>)> {
    let mut alerts: Vec<(String, Vec<String>)> = Vec::new();
    for line in rules.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), Vec::new()));
        } else if line.starts_with("- ") && !line.starts_with("- alert:") {
            // The next rule or group: not part of the previous alert.
            if line.starts_with("- name:") || line.starts_with("- record:") {
                alerts.push((String::new(), Vec::new()));
            }
        } else if let Some((_, lines)) = alerts.last_mut() {
            lines.push(line.to_owned());
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    alerts
}

/// The test groups of a `promtool test rules` file (the items of its `tests:` list, at
/// two spaces of indentation): the trimmed lines of each.
fn test_groups(tests: &str) -> Vec<Vec<&str>> {
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let mut in_tests = false;
    for line in tests.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_tests = line.trim_end() == "tests:";
        } else if in_tests && line.starts_with("  - ") {
            groups.push(vec![line.trim()]);
        } else if let (true, Some(group)) = (in_tests, groups.last_mut()) {
            group.push(line.trim());
        }
    }
    groups
}

#[test]
fn every_alert_has_a_severity_a_runbook_and_tests_that_fire_it_and_do_not() {
    let rules = read(RULES);
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 10, "{alerts:?}");
    let runbooks: BTreeSet<String> = read(METRICS_DOC)
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();

    // The unit tests: an alert is `fired` if a test expects it to fire, and `quiet` if a
    // test (with its own input series) never expects it to.
    let tests = read(RULE_TESTS);
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let groups = test_groups(&tests);
    assert!(
        groups.len() >= alerts.len(),
        "{RULE_TESTS}: {} test groups",
        groups.len()
    );
    for group in groups {
        let mut expected: Vec<(&str, bool)> = Vec::new();
        for (i, line) in group.iter().enumerate() {
            let Some(name) = value_of(line, "alertname") else {
                continue;
            };
            let fires = match group[i + 1..].iter().find(|l| l.starts_with("exp_alerts:")) {
                Some(&"exp_alerts: []") => false,
                Some(_) => true,
                None => panic!("{RULE_TESTS}: alertname {name} without exp_alerts"),
            };
            expected.push((name, fires));
        }
        for &(name, _) in &expected {
            if expected.iter().any(|&(n, fires)| n == name && fires) {
                fired.insert(name.to_owned());
            } else {
                quiet.insert(name.to_owned());
            }
        }
    }

    let mut names = BTreeSet::new();
    for (name, lines) in &alerts {
        assert!(names.insert(name.clone()), "alert {name} twice");
        let field = |key: &str| lines.iter().find_map(|line| value_of(line, key));
        let severity = field("severity");
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{name}: severity {severity:?}, not page or ticket"
        );
        for key in ["summary", "description"] {
            assert!(
                field(key).is_some_and(|text| text.len() > 10),
                "{name} has no {key}"
            );
        }
        let runbook = field("runbook").unwrap_or_else(|| panic!("{name} has no runbook"));
        let section = runbook
            .strip_prefix(&format!("{METRICS_DOC}#"))
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not in {METRICS_DOC}"));
        assert!(
            runbooks.contains(section),
            "{name}: {METRICS_DOC} has no heading #{section}"
        );
        assert!(
            fired.contains(name),
            "{RULE_TESTS} has no test where {name} fires"
        );
        assert!(
            quiet.contains(name),
            "{RULE_TESTS} has no test where {name} stays quiet (exp_alerts: [])"
        );
    }
    let unknown: Vec<_> = fired
        .union(&quiet)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(unknown.is_empty(), "tests of unknown alerts: {unknown:?}");

    // Both SLOs are tested, and each burn-rate pair is in the rules.
    for slo in ["session_completion", "recovery"] {
        assert!(
            tests.contains(&format!("slo=\"{slo}\"")),
            "no test of {slo}"
        );
    }
    for (long, short, rate) in [
        ("1h", "5m", "14.4"),
        ("6h", "30m", "6"),
        ("1d", "2h", "3"),
        ("3d", "6h", "1"),
    ] {
        for window in [long, short] {
            let condition = format!("(cordon_slo_burn_rate{{window=\"{window}\"}}) > {rate}\n");
            assert!(rules.contains(&condition), "no rule on `{condition}`");
        }
    }
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in panels {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(all_panels(nested));
        }
    }
    all
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|error| panic!("{DASHBOARD} is not JSON: {error}"));
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // The data source is the DS_PROMETHEUS variable; tenant and workload_class come
    // from label_values through it.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = variable("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["tenant", "workload_class"] {
        let var = variable(name);
        assert_eq!(var["type"], "query", "{name}");
        assert_eq!(var["datasource"]["uid"], "${DS_PROMETHEUS}", "{name}");
        let definition = var["definition"].as_str().unwrap_or("");
        assert!(
            definition.starts_with("label_values(cordon_")
                && definition.ends_with(&format!(", {name})")),
            "{name}: {definition}"
        );
        assert_eq!(var["query"]["query"].as_str(), Some(definition), "{name}");
    }

    let panels = all_panels(dashboard["panels"].as_array().unwrap());
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice ({title})");
        let pos = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            pos[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {pos}");
        for &(other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && ox < x + w && y < oy + oh && oy < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        boxes.push((title, [x, y, w, h]));
        if panel["type"] == "row" {
            rows.push(title);
            assert!(panel.get("targets").is_none(), "row {title} with queries");
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "{title} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert!(expr.contains("cordon_"), "{title}: {expr}");
            if let Some(uid) = target.get("datasource").map(|ds| &ds["uid"]) {
                assert_eq!(uid, "${DS_PROMETHEUS}", "{title}: a target's datasource");
            }
        }
    }
    assert_eq!(rows, ROWS);
}

#[test]
fn metric_names_and_anchors_are_found() {
    let names = metric_names(r#"rate(cordon_a_total[5m]) / x + cordon_c_bucket{le="1"} cordon_"#);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["cordon_a_total", "cordon_c_bucket"]
    );
    assert!(documented("cordon_recovery_seconds_bucket"));
    assert!(documented("cordon_sandbox_exec_duration_seconds_count"));
    assert!(!documented("cordon_sandbox_exec_duration_seconds_bucket"));
    assert!(!documented("cordon_sessions_total"));
    assert_eq!(anchor(" Policy-block spike"), "policy-block-spike");
    assert_eq!(anchor("API errors"), "api-errors");
}
