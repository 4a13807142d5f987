//! OpenTelemetry traces over OTLP/HTTP (JSON encoding), when `--otlp-endpoint` is set.
//!
//! A `tracing` layer turns a few spans into OTLP spans: `request` (each API request),
//! `run` (a workflow run, from creation to its end), `step` (one attempt), `exec` (a
//! command in a sandbox) and `egress.decision` (one gateway decision). Parents come
//! from the `tracing` span tree; a run and its steps share a trace whose id is derived
//! from the run id (`otel.trace_seed`), so attempts on other nodes or after a restart
//! land in the same trace, and the request that started a run links to it
//! (`otel.link_seed`). Spans are batched (1 s or 512) and posted by one task; when the
//! collector is slow or down, spans are dropped, never the server's work.

use std::collections::HashMap;
use std::time::Duration;

use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The spans exported, by name.
pub const EXPORTED: [&str; 5] = ["request", "run", "step", "exec", "egress.decision"];
/// Spans queued for export at most; more are dropped.
const QUEUE: usize = 8192;
const BATCH: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_secs(1);

/// The trace id and root span id derived from a seed (a run id).
pub fn seeded(seed: &str) -> ([u8; 16], [u8; 8]) {
    let digest = Sha256::digest(seed.as_bytes());
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&digest[..16]);
    span.copy_from_slice(&digest[16..24]);
    (trace, span)
}

fn now_nanos() -> u64 {
    cordon_core::Timestamp::now().unix_nanos()
}

/// What the layer keeps of an exported span while it is open.
#[derive(Debug, Clone)]
struct SpanData {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: u64,
    attributes: Vec<(String, Value)>,
    links: Vec<([u8; 16], [u8; 8])>,
    error: bool,
}

/// Collects a span's fields; `otel.*` fields steer the export instead.
#[derive(Default)]
struct Fields {
    attributes: Vec<(String, Value)>,
    trace_seed: Option<String>,
    root: bool,
    link_seed: Option<String>,
    start: Option<u64>,
    error: bool,
}

impl Fields {
    fn put(&mut self, name: &str, value: Value) {
        match name {
            "otel.trace_seed" => self.trace_seed = value.as_str().map(str::to_owned),
            "otel.link_seed" => self.link_seed = value.as_str().map(str::to_owned),
            "otel.root" => self.root = value.as_bool().unwrap_or(false),
            "otel.start_unix_nanos" => self.start = value.as_u64(),
            "otel.error" => self.error = value.as_bool().unwrap_or(false),
            _ => {
                let key = format!("cordon.{name}");
                self.attributes.retain(|(k, _)| *k != key);
                self.attributes.push((key, value));
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), json!(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), json!(value));
    }
}

/// The layer. Build it with [`layer`], which also starts the exporting task.
pub struct OtlpLayer {
    tx: mpsc::Sender<Value>,
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    id
}

fn random_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    id
}

fn exported(metadata: &Metadata<'_>) -> bool {
    EXPORTED.contains(&metadata.name())
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !exported(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        // The nearest exported ancestor gives the trace and the parent.
        let ancestor = span.scope().skip(1).find_map(|s| {
            s.extensions()
                .get::<SpanData>()
                .map(|d| (d.trace_id, d.span_id))
        });
        let (trace_id, span_id, parent) = match (&fields.trace_seed, ancestor) {
            (Some(seed), _) if fields.root => {
                let (trace, root) = seeded(seed);
                (trace, root, None)
            }
            // A step's own trace is its run's, under the run's span.
            (Some(seed), _) => {
                let (trace, root) = seeded(seed);
                (trace, random_span_id(), Some(root))
            }
            (None, Some((trace, parent))) => (trace, random_span_id(), Some(parent)),
            (None, None) => (random_trace_id(), random_span_id(), None),
        };
        let links = fields
            .link_seed
            .as_deref()
            .map(seeded)
            .into_iter()
            .collect();
        span.extensions_mut().insert(SpanData {
            trace_id,
            span_id,
            parent,
            start: fields.start.unwrap_or_else(now_nanos),
            attributes: fields.attributes,
            links,
            error: fields.error,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(data) = extensions.get_mut::<SpanData>() else {
            return;
        };
        let mut fields = Fields {
            attributes: std::mem::take(&mut data.attributes),
            ..Fields::default()
        };
        values.record(&mut fields);
        data.attributes = fields.attributes;
        data.error |= fields.error;
        if let Some(seed) = fields.link_seed {
            data.links.push(seeded(&seed));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        let name = span.metadata().name();
        let _ = self.tx.try_send(otlp_span(name, &data, now_nanos()));
    }
}

fn attribute(key: &str, value: &Value) -> Value {
    let value = match value {
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    json!({"key": key, "value": value})
}

/// One span in OTLP/JSON form (ids in hex, times as decimal strings).
fn otlp_span(name: &str, data: &SpanData, end: u64) -> Value {
    let mut span = json!({
        "traceId": hex::encode(data.trace_id),
        "spanId": hex::encode(data.span_id),
        "name": name,
        // SERVER for API requests, INTERNAL for the rest.
        "kind": if name == "request" { 2 } else { 1 },
        "startTimeUnixNano": data.start.to_string(),
        "endTimeUnixNano": end.max(data.start).to_string(),
        "attributes": data.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
        "status": {"code": if data.error { 2 } else { 1 }},
    });
    if let Some(parent) = data.parent {
        span["parentSpanId"] = json!(hex::encode(parent));
    }
    if !data.links.is_empty() {
        span["links"] = Value::Array(
            data.links
                .iter()
                .map(|(t, s)| json!({"traceId": hex::encode(t), "spanId": hex::encode(s)}))
                .collect(),
        );
    }
    span
}

/// The layer exporting to `endpoint` (`http://host:4318`, spans posted to
/// `/v1/traces`), and the task that posts them. Call within a Tokio runtime.
pub fn layer(endpoint: &str, node: &str) -> OtlpLayer {
    let (tx, rx) = mpsc::channel(QUEUE);
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let resource = json!({"attributes": [
        attribute("service.name", &json!("cordon")),
        attribute("service.instance.id", &json!(node)),
        attribute("service.version", &json!(env!("CARGO_PKG_VERSION"))),
    ]});
    tokio::spawn(export(url, resource, rx));
    OtlpLayer { tx }
}

async fn export(url: String, resource: Value, mut rx: mpsc::Receiver<Value>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("otlp: cannot build the HTTP client: {error}");
            return;
        }
    };
    let mut failures: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = json!({"resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{"scope": {"name": "cordon"}, "spans": batch}],
        }]});
        let sent = client.post(&url).json(&body).send().await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
            Err(error) => Some(error.to_string()),
        };
        if let Some(failure) = failure {
            // Logged outside tracing (this task's own spans would loop back here), and
            // once per distinct failure.
            let seen = failures.entry(failure.clone()).or_default();
            if *seen == 0 {
                eprintln!("otlp: cannot export spans to {url}: {failure}");
            }
            *seen += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_give_stable_ids() {
        let (trace, span) = seeded("run_0123");
        assert_eq!(seeded("run_0123"), (trace, span));
        assert_ne!(seeded("run_0124").0, trace);
    }

    #[test]
    fn spans_are_otlp_json() {
        let data = SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            start: 10,
            attributes: vec![
                ("cordon.step".to_owned(), json!("build")),
                ("cordon.attempt".to_owned(), json!(2)),
            ],
            links: vec![([4; 16], [5; 8])],
            error: true,
        };
        let span = otlp_span("step", &data, 5);
        assert_eq!(span["traceId"], "01010101010101010101010101010101");
        assert_eq!(span["parentSpanId"], "0303030303030303");
        assert_eq!(span["endTimeUnixNano"], "10", "never before the start");
        assert_eq!(span["attributes"][1]["value"]["intValue"], "2");
        assert_eq!(span["links"][0]["spanId"], "0505050505050505");
        assert_eq!(span["status"]["code"], 2);
    }
}
