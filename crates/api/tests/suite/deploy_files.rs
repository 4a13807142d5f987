//! The files in deploy/: the Prometheus alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), and the Grafana dashboard is well formed.
//! Every `cordon_*` metric either names is one the server's code emits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): the alert rules are checked with Prometheus's \
                 promtool (Debian: apt-get install prometheus)"
            )
        });
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cordon_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("cordon_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The metric names the server's code emits: `cordon_*` string literals in its sources.
fn emitted() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![repo().join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    if literal.starts_with("cordon_")
                        && literal
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        names.insert(literal.to_owned());
                    }
                }
            }
        }
    }
    names
}

fn known(name: &str, emitted: &BTreeSet<String>) -> bool {
    emitted.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| emitted.contains(base))
        })
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    promtool(&["check", "rules", "cordon-alerts.yml"]);
    promtool(&["test", "rules", "cordon-alerts.test.yml"]);
}

#[test]
fn the_dashboard_and_rules_name_only_metrics_the_server_emits() {
    let emitted = emitted();
    assert!(
        emitted.contains("cordon_sessions_closed_total"),
        "{emitted:?}"
    );
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/cordon-alerts.yml")).unwrap();
    let dashboard_text =
        std::fs::read_to_string(repo().join("deploy/grafana/cordon-dashboard.json")).unwrap();
    for (file, text) in [("alert rules", &rules), ("dashboard", &dashboard_text)] {
        for name in metric_names(text) {
            // Label values and ids in the text (the dashboard's uid) are not metrics.
            if name == "cordon_sre" {
                continue;
            }
            assert!(
                known(&name, &emitted),
                "the {file} name `{name}`, which no code emits"
            );
        }
    }

    let dashboard: Value = serde_json::from_str(&dashboard_text).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() > 10);
    for panel in panels {
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(expr.contains("cordon_"), "{title}: {expr}");
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["DS_PROMETHEUS", "tenant", "workload_class"]);
}

#[test]
fn metric_names_are_found_in_text() {
    let names = metric_names("rate(cordon_a_total[5m]) / x_cordon_b + cordon_c_bucket{le=\"1\"}");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["cordon_a_total", "cordon_c_bucket"]
    );
}
