//! Traces over OTLP/HTTP: a collector on loopback receives the spans of an API exec and
//! of a workflow run (its steps, their exec and egress decision), linked as documented.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::workflow_scenarios::{
    Recorder, call, define, server_args, start, start_run, wait_status,
};
use super::{Backend, Place};

/// Accepts OTLP/HTTP JSON posts and keeps every span.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&spans);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || serve(stream, &keep));
            }
        });
        Collector { port, spans }
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

fn serve(stream: std::net::TcpStream, keep: &Mutex<Vec<Value>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert_eq!(path, "/v1/traces");
        let value: Value = serde_json::from_slice(&body).unwrap();
        for resource in value["resourceSpans"].as_array().unwrap() {
            assert_eq!(
                resource["resource"]["attributes"][0]["value"]["stringValue"],
                "cordon"
            );
            for scope in resource["scopeSpans"].as_array().unwrap() {
                keep.lock()
                    .unwrap()
                    .extend(scope["spans"].as_array().unwrap().iter().cloned());
            }
        }
        let _ = reader.get_mut().write_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}",
        );
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn string_attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    attribute(span, key)?["stringValue"].as_str()
}

#[test]
fn requests_runs_steps_execs_and_egress_are_linked_spans() {
    let collector = Collector::start();
    let up = Recorder::start(Duration::ZERO);
    let files = tempfile::tempdir().unwrap();
    let mut args = server_args(&files, &up);
    args.extend([
        "--otlp-endpoint".to_owned(),
        format!("http://127.0.0.1:{}", collector.port),
    ]);
    let s = start(Place::with_sandboxes(Backend::Sqlite), &args);
    let session = s.active_session("default");
    s.ok(&session, "echo traced");

    let digest = define(
        &s,
        &format!(
            "name: traced\nsteps:\n  - {{name: build, kind: exec, argv: [sh, -c, 'echo built']}}\n  - {{name: call, kind: http, method: POST, url: \"http://up.test:{}/x\", needs: [build]}}\n",
            up.port()
        ),
    );
    let run = start_run(&s, json!({"definition": digest}));
    assert_eq!(
        wait_status(&s, &run, &["succeeded", "failed"])["status"],
        "succeeded"
    );
    let (status, _) = call(&s, &s.server.token, Method::GET, "/v1/runs", &[], None);
    assert_eq!(status, 200);

    // Spans leave in batches, within about a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (root, spans) = loop {
        let spans = collector.spans();
        let root = spans
            .iter()
            .find(|s| s["name"] == "run" && string_attribute(s, "cordon.run") == Some(run.as_str()))
            .cloned();
        let execs = spans.iter().filter(|s| s["name"] == "exec").count();
        let decisions = spans
            .iter()
            .filter(|s| s["name"] == "egress.decision")
            .count();
        if let Some(root) = root
            && execs >= 2
            && decisions >= 1
        {
            break (root, spans);
        }
        assert!(Instant::now() < deadline, "spans so far: {spans:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanId"].as_str().unwrap(), s))
        .collect();
    let trace = root["traceId"].as_str().unwrap();
    assert!(root.get("parentSpanId").is_none(), "{root}");
    assert_eq!(root["status"]["code"], 1, "{root}");
    assert_eq!(string_attribute(&root, "cordon.status"), Some("succeeded"));

    // Both steps, under the run's span, in its trace.
    let steps: Vec<&Value> = spans.iter().filter(|s| s["name"] == "step").collect();
    for name in ["build", "call"] {
        let step = steps
            .iter()
            .find(|s| string_attribute(s, "cordon.step") == Some(name))
            .unwrap_or_else(|| panic!("no step span {name}: {steps:#?}"));
        assert_eq!(step["traceId"], trace, "{step}");
        assert_eq!(step["parentSpanId"], root["spanId"], "{step}");
        assert_eq!(string_attribute(step, "cordon.outcome"), Some("succeeded"));
    }
    // The step's command, under the step.
    let step_exec = spans
        .iter()
        .find(|s| s["name"] == "exec" && s["traceId"] == trace)
        .unwrap_or_else(|| panic!("no exec in the run's trace: {spans:#?}"));
    let parent = by_id[step_exec["parentSpanId"].as_str().unwrap()];
    assert_eq!(string_attribute(parent, "cordon.step"), Some("build"));
    // The http step's gateway decision, under the step.
    let decision = spans
        .iter()
        .find(|s| s["name"] == "egress.decision" && s["traceId"] == trace)
        .unwrap_or_else(|| panic!("no egress decision in the run's trace: {spans:#?}"));
    let parent = by_id[decision["parentSpanId"].as_str().unwrap()];
    assert_eq!(string_attribute(parent, "cordon.step"), Some("call"));
    assert_eq!(
        string_attribute(decision, "cordon.reason"),
        Some("EGRESS_ALLOWED")
    );
    assert_eq!(string_attribute(decision, "cordon.host"), Some("up.test"));

    // The request that started the run links to the run's trace.
    let start_request = spans
        .iter()
        .find(|s| {
            s["name"] == "request"
                && string_attribute(s, "cordon.route") == Some("/v1/runs")
                && string_attribute(s, "cordon.method") == Some("POST")
        })
        .unwrap_or_else(|| panic!("no request span for POST /v1/runs"));
    assert_eq!(start_request["kind"], 2);
    assert_eq!(
        start_request["links"][0]["traceId"], trace,
        "{start_request}"
    );
    assert_eq!(start_request["links"][0]["spanId"], root["spanId"]);
    assert_eq!(
        attribute(start_request, "cordon.status").unwrap()["intValue"],
        "201"
    );

    // The API exec: a child of its request.
    let api_exec = spans
        .iter()
        .find(|s| s["name"] == "exec" && s["traceId"] != trace)
        .unwrap();
    let parent = by_id[api_exec["parentSpanId"].as_str().unwrap()];
    assert_eq!(parent["name"], "request");
    assert_eq!(
        string_attribute(parent, "cordon.route"),
        Some("/v1/sessions/{id}/exec")
    );
    assert_eq!(
        attribute(api_exec, "cordon.exit_code").unwrap()["intValue"],
        "0"
    );
    let start: u64 = api_exec["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u64 = api_exec["endTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 0 && end >= start, "{api_exec}");
}
