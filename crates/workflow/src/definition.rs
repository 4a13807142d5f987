//! Parsing and validating definitions. A document (YAML or JSON) is read into a generic
//! value and checked field by field, so every error names its path
//! (`steps[2].retry.error.max_attempts: ...`) and unknown keys are refused. Defaults are
//! filled in, so the canonical JSON (and the digest) of two documents that mean the
//! same are equal.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{Definition, RetryPolicies, RetryPolicy, SessionTemplate, Step, StepAction};
use crate::template::{Reference, references};

/// A definition failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

fn fail<T>(field: &str, message: impl Into<String>) -> Result<T, DefinitionError> {
    Err(DefinitionError {
        field: field.to_owned(),
        message: message.into(),
    })
}

const MAX_STEPS: usize = 200;
const MAX_ARGV: usize = 256;
const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;
const DEFAULT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Parses YAML or JSON text.
pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .or_else(|_| serde_norway::from_str(text))
            .map_err(|e| DefinitionError {
                field: "document".into(),
                message: format!("not valid JSON or YAML: {e}"),
            })?
    } else {
        serde_norway::from_str(text).map_err(|e| DefinitionError {
            field: "document".into(),
            message: format!("not valid YAML: {e}"),
        })?
    };
    from_value(&value)
}

/// A duration: `500ms`, `30s`, `5m`, `2h`, `1d`, or a whole number of seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 500ms, 30s, 5m, 2h, 1d)"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (like 500ms, 30s, 5m, 2h, 1d)"
            ));
        }
    };
    let ms = n.saturating_mul(factor);
    if ms == 0 {
        return Err("a duration must be more than zero".to_owned());
    }
    if ms > MAX_DURATION_MS {
        return Err("a duration may be at most 365 days".to_owned());
    }
    Ok(ms)
}

fn duration(value: &Value, field: &str) -> Result<u64, DefinitionError> {
    match value {
        Value::String(text) => parse_duration(text).or_else(|e| fail(field, e)),
        Value::Number(n) => match n.as_u64() {
            Some(secs) => parse_duration(&format!("{secs}s")).or_else(|e| fail(field, e)),
            None => fail(
                field,
                "must be a whole number of seconds or a duration like 30s",
            ),
        },
        _ => fail(field, "must be a duration like 30s"),
    }
}

fn object<'v>(
    value: &'v Value,
    field: &str,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, DefinitionError> {
    let Value::Object(map) = value else {
        let field = if field.is_empty() { "document" } else { field };
        return fail(field, "must be an object");
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            return fail(
                &join(field, key),
                format!("unknown key (allowed here: {})", allowed.join(", ")),
            );
        }
    }
    Ok(map)
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() {
        key.to_owned()
    } else {
        format!("{field}.{key}")
    }
}

fn string(value: &Value, field: &str) -> Result<String, DefinitionError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        // YAML reads `5`, `1.10` and `true` as numbers and booleans; converting them back
        // could change them (`1.10` -> `1.1`), so they must be quoted.
        Value::Number(_) | Value::Bool(_) => fail(
            field,
            format!("must be a string (in YAML, quote it: \"{value}\")"),
        ),
        _ => fail(field, "must be a string"),
    }
}

fn name(value: Option<&Value>, field: &str, max: usize) -> Result<String, DefinitionError> {
    let Some(value) = value else {
        return fail(field, "is required");
    };
    let s = string(value, field)?;
    let valid = (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return fail(
            field,
            format!("must be 1 to {max} characters of A-Z, a-z, 0-9, `.`, `_`, `-`"),
        );
    }
    Ok(s)
}

/// A map of strings whose keys pass `key_ok` (`what` says what a key must be).
fn string_map(
    value: &Value,
    field: &str,
    key_ok: fn(&str) -> bool,
    what: &str,
) -> Result<BTreeMap<String, String>, DefinitionError> {
    let Value::Object(map) = value else {
        return fail(field, "must be a map of strings");
    };
    map.iter()
        .map(|(k, v)| {
            let f = join(field, k);
            if !key_ok(k) {
                return fail(&f, format!("the key must be {what}"));
            }
            Ok((k.clone(), string(v, &f)?))
        })
        .collect()
}

/// An environment variable name: not empty, no `=`, no NUL.
fn env_key(key: &str) -> bool {
    !key.is_empty() && !key.contains(['=', '\0'])
}

/// An HTTP header name: an RFC 9110 token.
fn header_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn string_list(value: &Value, field: &str) -> Result<Vec<String>, DefinitionError> {
    let Value::Array(items) = value else {
        return fail(field, "must be a list of strings");
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| string(v, &format!("{field}[{i}]")))
        .collect()
}

fn default_policies() -> RetryPolicies {
    let policy = |max_attempts, initial_interval_ms, max_interval_ms| RetryPolicy {
        max_attempts,
        initial_interval_ms,
        backoff: 2.0,
        max_interval_ms,
        jitter: 0.2,
    };
    RetryPolicies {
        timeout: policy(3, 1_000, 60_000),
        capacity: policy(5, 2_000, 120_000),
        error: policy(3, 1_000, 60_000),
        non_retryable_exit_codes: Vec::new(),
    }
}

fn retry_policy(
    value: &Value,
    field: &str,
    base: &RetryPolicy,
) -> Result<RetryPolicy, DefinitionError> {
    let map = object(
        value,
        field,
        &[
            "max_attempts",
            "initial_interval",
            "backoff",
            "max_interval",
            "jitter",
        ],
    )?;
    let mut policy = base.clone();
    if let Some(v) = map.get("max_attempts") {
        let f = join(field, "max_attempts");
        match v.as_u64() {
            Some(n @ 1..=100) => policy.max_attempts = u32::try_from(n).unwrap_or(1),
            _ => return fail(&f, "must be 1 to 100"),
        }
    }
    if let Some(v) = map.get("initial_interval") {
        policy.initial_interval_ms = duration(v, &join(field, "initial_interval"))?;
    }
    if let Some(v) = map.get("max_interval") {
        policy.max_interval_ms = duration(v, &join(field, "max_interval"))?;
    }
    if let Some(v) = map.get("backoff") {
        match v.as_f64() {
            Some(b) if (1.0..=10.0).contains(&b) => policy.backoff = b,
            _ => return fail(&join(field, "backoff"), "must be a number from 1 to 10"),
        }
    }
    if let Some(v) = map.get("jitter") {
        match v.as_f64() {
            Some(j) if (0.0..=1.0).contains(&j) => policy.jitter = j,
            _ => return fail(&join(field, "jitter"), "must be a number from 0 to 1"),
        }
    }
    if policy.initial_interval_ms > policy.max_interval_ms {
        // A short max with the default initial interval: the max wins.
        if map.contains_key("initial_interval") {
            return fail(field, "initial_interval must not exceed max_interval");
        }
        policy.initial_interval_ms = policy.max_interval_ms;
    }
    Ok(policy)
}

fn retry(
    value: &Value,
    field: &str,
    base: &RetryPolicies,
) -> Result<RetryPolicies, DefinitionError> {
    if let Value::Object(map) = value
        && map.contains_key("policy")
    {
        return fail(
            &join(field, "policy"),
            "policy failures are never retried: they go to the dead-letter queue",
        );
    }
    let map = object(
        value,
        field,
        &["timeout", "capacity", "error", "non_retryable_exit_codes"],
    )?;
    let mut out = base.clone();
    if let Some(v) = map.get("timeout") {
        out.timeout = retry_policy(v, &join(field, "timeout"), &base.timeout)?;
    }
    if let Some(v) = map.get("capacity") {
        out.capacity = retry_policy(v, &join(field, "capacity"), &base.capacity)?;
    }
    if let Some(v) = map.get("error") {
        out.error = retry_policy(v, &join(field, "error"), &base.error)?;
    }
    if let Some(v) = map.get("non_retryable_exit_codes") {
        let f = join(field, "non_retryable_exit_codes");
        let Value::Array(items) = v else {
            return fail(&f, "must be a list of exit codes");
        };
        let mut codes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(code @ 0..=255) => codes.push(code),
                _ => return fail(&format!("{f}[{i}]"), "must be an exit code 0-255"),
            }
        }
        codes.sort_unstable();
        codes.dedup();
        out.non_retryable_exit_codes = codes;
    }
    Ok(out)
}

/// Step defaults from the document's `defaults`.
struct Defaults {
    timeout_ms: u64,
    schedule_to_close_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    retry: RetryPolicies,
}

const COMMON: [&str; 9] = [
    "name",
    "kind",
    "needs",
    "compensate",
    "timeout",
    "schedule_to_close",
    "heartbeat",
    "retry",
    "description",
];

fn kind_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "exec" => &["argv", "env", "cwd"],
        "http" => &["method", "url", "headers", "body"],
        "checkpoint" => &["summary"],
        "restore" => &["version"],
        "sleep" => &["duration"],
        "wait_for_event" => &["event", "timeout"],
        "approval" => &["prompt", "timeout"],
        "transition" => &["action"],
        "promote" => &["release", "paths"],
        "noop" => &["output"],
        _ => return None,
    })
}

fn step(
    value: &Value,
    field: &str,
    defaults: &Defaults,
    compensation: bool,
) -> Result<Step, DefinitionError> {
    let Value::Object(map) = value else {
        return fail(field, "must be an object");
    };
    let kind = match map.get("kind") {
        Some(k) => string(k, &join(field, "kind"))?,
        None => return fail(&join(field, "kind"), "is required"),
    };
    let Some(own) = kind_keys(&kind) else {
        return fail(
            &join(field, "kind"),
            format!(
                "`{kind}` is not a step kind (exec, http, checkpoint, restore, sleep, wait_for_event, approval, transition, promote, noop)"
            ),
        );
    };
    // `timeout` is the wait limit of wait_for_event and approval, the attempt timeout
    // of every other kind. A promote step's `release` names the release (default: the
    // step's name).
    let mut allowed: Vec<&str> = COMMON.to_vec();
    allowed.extend(own.iter().copied());
    let map = object(value, field, &allowed)?;
    let step_name = name(map.get("name"), &join(field, "name"), 64)?;
    let get = |key: &str| map.get(key);
    let req = |key: &str| -> Result<&Value, DefinitionError> {
        map.get(key)
            .map_or_else(|| fail(&join(field, key), "is required"), Ok)
    };
    let waits = matches!(kind.as_str(), "wait_for_event" | "approval");
    let action = match kind.as_str() {
        "exec" => {
            let argv = string_list(req("argv")?, &join(field, "argv"))?;
            if argv.is_empty() || argv[0].is_empty() {
                return fail(&join(field, "argv"), "must name a program");
            }
            if argv.len() > MAX_ARGV {
                return fail(&join(field, "argv"), format!("at most {MAX_ARGV} items"));
            }
            StepAction::Exec {
                argv,
                env: get("env")
                    .map(|v| string_map(v, &join(field, "env"), env_key, "a variable name"))
                    .transpose()?
                    .unwrap_or_default(),
                cwd: get("cwd")
                    .map(|v| string(v, &join(field, "cwd")))
                    .transpose()?,
            }
        }
        "http" => {
            let method = get("method")
                .map(|v| string(v, &join(field, "method")))
                .transpose()?
                .unwrap_or_else(|| "GET".to_owned());
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return fail(&join(field, "method"), "must be an HTTP method in capitals");
            }
            let url = string(req("url")?, &join(field, "url"))?;
            if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("${"))
            {
                return fail(&join(field, "url"), "must start with http:// or https://");
            }
            StepAction::Http {
                method,
                url,
                headers: get("headers")
                    .map(|v| string_map(v, &join(field, "headers"), header_key, "a header name"))
                    .transpose()?
                    .unwrap_or_default(),
                body: get("body")
                    .map(|v| string(v, &join(field, "body")))
                    .transpose()?,
            }
        }
        "checkpoint" => StepAction::Checkpoint {
            summary: get("summary")
                .map(|v| string(v, &join(field, "summary")))
                .transpose()?,
        },
        "restore" => StepAction::Restore {
            version: get("version")
                .map(|v| string(v, &join(field, "version")))
                .transpose()?,
        },
        "sleep" => StepAction::Sleep {
            duration_ms: duration(req("duration")?, &join(field, "duration"))?,
        },
        "wait_for_event" => StepAction::WaitForEvent {
            event: name(Some(req("event")?), &join(field, "event"), 128)?,
            timeout_ms: get("timeout")
                .map(|v| duration(v, &join(field, "timeout")))
                .transpose()?,
        },
        "approval" => StepAction::Approval {
            prompt: get("prompt")
                .map(|v| string(v, &join(field, "prompt")))
                .transpose()?,
            timeout_ms: get("timeout")
                .map(|v| duration(v, &join(field, "timeout")))
                .transpose()?,
        },
        "transition" => {
            let action = string(req("action")?, &join(field, "action"))?;
            if !["activate", "checkpoint", "suspend", "resume", "close"].contains(&action.as_str())
            {
                return fail(
                    &join(field, "action"),
                    "must be activate, checkpoint, suspend, resume or close",
                );
            }
            StepAction::Transition { action }
        }
        "promote" => StepAction::Promote {
            name: get("release")
                .map(|v| string(v, &join(field, "release")))
                .transpose()?
                .unwrap_or_else(|| step_name.clone()),
            paths: get("paths")
                .map(|v| string_list(v, &join(field, "paths")))
                .transpose()?
                .unwrap_or_default(),
        },
        // `output: null` means the same as no output.
        _ => StepAction::Noop {
            output: get("output").filter(|v| !v.is_null()).cloned(),
        },
    };
    if compensation {
        for key in ["needs", "compensate"] {
            if map.contains_key(key) {
                return fail(&join(field, key), "is not allowed on a compensation");
            }
        }
    }
    let needs = get("needs")
        .map(|v| string_list(v, &join(field, "needs")))
        .transpose()?
        .unwrap_or_default();
    let compensate = get("compensate")
        .map(|v| string(v, &join(field, "compensate")))
        .transpose()?;
    let timeout_ms = if waits {
        defaults.timeout_ms
    } else {
        get("timeout")
            .map(|v| duration(v, &join(field, "timeout")))
            .transpose()?
            .unwrap_or(defaults.timeout_ms)
    };
    let retry = match get("retry") {
        Some(v) => retry(v, &join(field, "retry"), &defaults.retry)?,
        None => defaults.retry.clone(),
    };
    Ok(Step {
        name: step_name,
        action,
        needs,
        compensate,
        retry,
        timeout_ms,
        schedule_to_close_ms: match get("schedule_to_close") {
            Some(v) => Some(duration(v, &join(field, "schedule_to_close"))?),
            None => defaults.schedule_to_close_ms,
        },
        heartbeat_ms: match get("heartbeat") {
            Some(v) => Some(duration(v, &join(field, "heartbeat"))?),
            None => defaults.heartbeat_ms,
        },
    })
}

/// The strings of an action that may hold templates (the ones the engine renders), each
/// with its path under the step.
fn strings_of(action: &StepAction) -> Vec<(String, &String)> {
    fn listed<'a>(key: &str, items: &'a [String]) -> Vec<(String, &'a String)> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{key}[{i}]"), v))
            .collect()
    }
    fn mapped<'a>(key: &str, map: &'a BTreeMap<String, String>) -> Vec<(String, &'a String)> {
        map.iter().map(|(k, v)| (format!("{key}.{k}"), v)).collect()
    }
    fn one<'a>(key: &str, v: &'a String) -> (String, &'a String) {
        (key.to_owned(), v)
    }
    let mut out = Vec::new();
    match action {
        StepAction::Exec { argv, env, cwd } => {
            out.extend(listed("argv", argv));
            out.extend(mapped("env", env));
            out.extend(cwd.iter().map(|v| one("cwd", v)));
        }
        StepAction::Http {
            url, headers, body, ..
        } => {
            out.push(one("url", url));
            out.extend(mapped("headers", headers));
            out.extend(body.iter().map(|v| one("body", v)));
        }
        StepAction::Checkpoint { summary } => out.extend(summary.iter().map(|v| one("summary", v))),
        StepAction::Restore { version } => out.extend(version.iter().map(|v| one("version", v))),
        StepAction::Promote { name, paths } => {
            out.push(one("release", name));
            out.extend(listed("paths", paths));
        }
        StepAction::Sleep { .. }
        | StepAction::WaitForEvent { .. }
        | StepAction::Approval { .. }
        | StepAction::Transition { .. }
        | StepAction::Noop { .. } => {}
    }
    out
}

/// Builds a definition from a generic value (a parsed document or an API body).
pub fn from_value(value: &Value) -> Result<Definition, DefinitionError> {
    let map = object(
        value,
        "",
        &[
            "name",
            "description",
            "deadline",
            "session",
            "defaults",
            "steps",
            "compensations",
        ],
    )?;
    let def_name = name(map.get("name"), "name", 128)?;
    let description = map
        .get("description")
        .map(|v| string(v, "description"))
        .transpose()?;
    let deadline_ms = map
        .get("deadline")
        .map(|v| duration(v, "deadline"))
        .transpose()?;
    let session = match map.get("session") {
        Some(v) => {
            let s = object(v, "session", &["workload_class", "environment"])?;
            SessionTemplate {
                workload_class: s
                    .get("workload_class")
                    .map(|v| name(Some(v), "session.workload_class", 63))
                    .transpose()?
                    .unwrap_or_else(|| "default".into()),
                environment: s
                    .get("environment")
                    .map(|v| name(Some(v), "session.environment", 63))
                    .transpose()?
                    .unwrap_or_else(|| "default".into()),
            }
        }
        None => SessionTemplate {
            workload_class: "default".into(),
            environment: "default".into(),
        },
    };
    let mut defaults = Defaults {
        timeout_ms: DEFAULT_TIMEOUT_MS,
        schedule_to_close_ms: None,
        heartbeat_ms: None,
        retry: default_policies(),
    };
    if let Some(v) = map.get("defaults") {
        let d = object(
            v,
            "defaults",
            &["timeout", "schedule_to_close", "heartbeat", "retry"],
        )?;
        if let Some(v) = d.get("timeout") {
            defaults.timeout_ms = duration(v, "defaults.timeout")?;
        }
        if let Some(v) = d.get("schedule_to_close") {
            defaults.schedule_to_close_ms = Some(duration(v, "defaults.schedule_to_close")?);
        }
        if let Some(v) = d.get("heartbeat") {
            defaults.heartbeat_ms = Some(duration(v, "defaults.heartbeat")?);
        }
        if let Some(v) = d.get("retry") {
            defaults.retry = retry(v, "defaults.retry", &default_policies())?;
        }
    }
    let list = |key: &str, compensation: bool| -> Result<Vec<Step>, DefinitionError> {
        match map.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > MAX_STEPS {
                    return fail(key, format!("at most {MAX_STEPS}"));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| step(v, &format!("{key}[{i}]"), &defaults, compensation))
                    .collect()
            }
            Some(_) => fail(key, "must be a list of steps"),
        }
    };
    let steps = list("steps", false)?;
    let compensations = list("compensations", true)?;
    if steps.is_empty() {
        return fail("steps", "a definition needs at least one step");
    }
    // Names are unique across steps and compensations.
    let mut seen = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            return fail(
                &format!("steps[{i}].name"),
                format!("`{}` is used twice", s.name),
            );
        }
    }
    for (i, s) in compensations.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            return fail(
                &format!("compensations[{i}].name"),
                format!("`{}` is used twice", s.name),
            );
        }
    }
    let step_names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let comp_names: BTreeSet<&str> = compensations.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in steps.iter().enumerate() {
        for (j, need) in s.needs.iter().enumerate() {
            let f = format!("steps[{i}].needs[{j}]");
            if need == &s.name {
                return fail(&f, "a step cannot need itself");
            }
            if s.needs[..j].contains(need) {
                return fail(&f, format!("`{need}` is listed twice"));
            }
            if comp_names.contains(need.as_str()) {
                return fail(
                    &f,
                    format!("`{need}` is a compensation; `needs` names steps"),
                );
            }
            if !step_names.contains(need.as_str()) {
                return fail(&f, format!("`{need}` names no step"));
            }
        }
        if let Some(c) = &s.compensate
            && !comp_names.contains(c.as_str())
        {
            return fail(
                &format!("steps[{i}].compensate"),
                format!("`{c}` names no entry of `compensations`"),
            );
        }
    }
    let ancestors = ancestors(&steps)?;
    // Templates: known roots, and step outputs only of steps that finish before.
    for (key, list) in [("steps", &steps), ("compensations", &compensations)] {
        for (i, s) in list.iter().enumerate() {
            for (path, text) in strings_of(&s.action) {
                let f = format!("{key}[{i}].{path}");
                for r in references(text).or_else(|e| fail(&f, e))? {
                    let Reference::Step(other, _) = r else {
                        continue;
                    };
                    if key == "steps" {
                        let known = ancestors
                            .get(s.name.as_str())
                            .is_some_and(|a| a.contains(other.as_str()));
                        if !known {
                            return fail(
                                &f,
                                format!(
                                    "`${{steps.{other}.output}}` must name a step this one needs (directly or through others)"
                                ),
                            );
                        }
                    } else if !step_names.contains(other.as_str()) {
                        return fail(&f, format!("`${{steps.{other}.output}}` names no step"));
                    }
                }
            }
        }
    }
    Ok(Definition {
        name: def_name,
        description,
        deadline_ms,
        session,
        steps,
        compensations,
    })
}

/// Every step's transitive `needs`; refuses a cycle, naming its steps.
fn ancestors(steps: &[Step]) -> Result<BTreeMap<&str, BTreeSet<&str>>, DefinitionError> {
    let by_name: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut done: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a Step>,
        done: &mut BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), DefinitionError> {
        if done.contains_key(name) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| *p == name) {
            let mut cycle: Vec<&str> = path[at..].to_vec();
            cycle.push(name);
            return fail(
                "steps",
                format!("the needs form a cycle: {}", cycle.join(" -> ")),
            );
        }
        path.push(name);
        let mut all = BTreeSet::new();
        if let Some(step) = by_name.get(name) {
            for need in &step.needs {
                visit(need, by_name, done, path)?;
                all.insert(need.as_str());
                if let Some(theirs) = done.get(need.as_str()) {
                    all.extend(theirs.iter().copied());
                }
            }
        }
        path.pop();
        done.insert(name, all);
        Ok(())
    }
    for s in steps {
        visit(&s.name, &by_name, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

/// Reads a stored definition (its canonical JSON) back.
pub fn from_stored(document: &str) -> Result<Definition, DefinitionError> {
    serde_json::from_str(document).map_err(|e| DefinitionError {
        field: "document".into(),
        message: format!("the stored definition does not read back: {e}"),
    })
}

/// The definition as canonical JSON: keys sorted, no whitespace.
pub fn canonical_json(definition: &Definition) -> String {
    // Keys are sorted here, not left to `serde_json::Value`: another crate in the build
    // may turn on serde_json's `preserve_order`, which keeps insertion order instead.
    let mut out = String::new();
    if let Ok(value) = serde_json::to_value(definition) {
        write_sorted(&value, &mut out);
    }
    out
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_sorted(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `sha256:<hex>` of the canonical JSON.
pub fn digest(definition: &Definition) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_json(definition).as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
name: build-and-release
deadline: 1h
defaults:
  timeout: 5m
  retry: {error: {max_attempts: 4}}
steps:
  - name: fetch
    kind: http
    method: POST
    url: https://api.example.com/x
    compensate: undo
  - name: build
    kind: exec
    argv: [make, "${steps.fetch.output.body}"]
    needs: [fetch]
    retry: {error: {initial_interval: 2s}, non_retryable_exit_codes: [3, 2, 3]}
    heartbeat: 10s
compensations:
  - {name: undo, kind: exec, argv: [make, clean]}
"#;

    #[test]
    fn parses_with_defaults_and_the_same_digest_in_yaml_and_json() {
        let def = parse(YAML).unwrap();
        assert_eq!(def.steps.len(), 2);
        let build = def.step("build").unwrap();
        assert_eq!(build.timeout_ms, 300_000);
        assert_eq!(build.retry.error.max_attempts, 4);
        assert_eq!(build.retry.error.initial_interval_ms, 2_000);
        assert_eq!(build.retry.non_retryable_exit_codes, vec![2, 3]);
        assert_eq!(build.heartbeat_ms, Some(10_000));
        assert_eq!(def.deadline_ms, Some(3_600_000));
        // The stored form reads back as the same definition.
        let stored: Definition = serde_json::from_str(&canonical_json(&def)).unwrap();
        assert_eq!(stored, def);
        // The same meaning as a JSON document, defaults spelled out: the same digest.
        let as_json = r#"{"name": "build-and-release", "deadline": "60m",
            "defaults": {"timeout": 300, "retry": {"error": {"max_attempts": 4, "backoff": 2}}},
            "session": {"workload_class": "default"},
            "steps": [
              {"kind": "http", "name": "fetch", "method": "POST", "url": "https://api.example.com/x", "compensate": "undo"},
              {"name": "build", "kind": "exec", "argv": ["make", "${steps.fetch.output.body}"], "needs": ["fetch"],
               "retry": {"error": {"initial_interval": "2000ms"}, "non_retryable_exit_codes": [2, 3]}, "heartbeat": "10s"}],
            "compensations": [{"name": "undo", "kind": "exec", "argv": ["make", "clean"]}]}"#;
        assert_eq!(digest(&parse(as_json).unwrap()), digest(&def));
        assert!(digest(&def).starts_with("sha256:"));
    }

    #[test]
    fn errors_name_their_field() {
        let cases = [
            ("name: x\nsteps: []", "steps"),
            (
                "name: x\nsteps: [{name: a, kind: teleport}]",
                "steps[0].kind",
            ),
            ("name: x\nsteps: [{name: a, kind: exec}]", "steps[0].argv"),
            (
                "name: x\nsteps: [{name: a, kind: exec, argv: [x], url: y}]",
                "steps[0].url",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop, needs: [b]}]",
                "steps[0].needs[0]",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop, compensate: c}]",
                "steps[0].compensate",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop}, {name: a, kind: noop}]",
                "steps[1].name",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop, needs: [b]}, {name: b, kind: noop, needs: [a]}]",
                "steps",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop, retry: {error: {max_attempts: 0}}}]",
                "steps[0].retry.error.max_attempts",
            ),
            (
                "name: x\nsteps: [{name: a, kind: noop, retry: {policy: {max_attempts: 2}}}]",
                "steps[0].retry.policy",
            ),
            (
                "name: x\nsteps: [{name: a, kind: sleep, duration: soon}]",
                "steps[0].duration",
            ),
            (
                "name: x\nsteps: [{name: a, kind: exec, argv: [\"${steps.b.output}\"]}, {name: b, kind: noop}]",
                "steps[0].argv[0]",
            ),
            ("name: x\nwhat: 1\nsteps: [{name: a, kind: noop}]", "what"),
            ("name: \"bad name\"\nsteps: [{name: a, kind: noop}]", "name"),
            ("[1, 2", "document"),
        ];
        for (text, field) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.field, field, "{text}: {error}");
        }
        let cycle = parse("name: x\nsteps: [{name: a, kind: noop, needs: [b]}, {name: b, kind: noop, needs: [a]}]").unwrap_err();
        assert!(cycle.message.contains("a -> b -> a"), "{cycle}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("45"), Ok(45_000));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("400d").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn defaults_spelled_out_give_the_same_digest() {
        let bare = parse("name: d\nsteps: [{name: a, kind: exec, argv: [make]}]").unwrap();
        let a = bare.step("a").unwrap();
        assert_eq!(a.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(a.retry, default_policies());
        assert_eq!(a.schedule_to_close_ms, None);
        assert_eq!(bare.session.workload_class, "default");
        assert_eq!(bare.session.environment, "default");
        let spelled = r#"
name: d
session: {workload_class: default, environment: default}
defaults:
  timeout: 10m
  retry:
    timeout:  {max_attempts: 3, initial_interval: 1s, backoff: 2, max_interval: 1m, jitter: 0.2}
    capacity: {max_attempts: 5, initial_interval: 2000ms, backoff: 2.0, max_interval: 2m, jitter: 0.2}
    error:    {max_attempts: 3, initial_interval: 1, backoff: 2, max_interval: 60, jitter: 0.2}
    non_retryable_exit_codes: []
steps:
  - name: a
    kind: exec
    argv: [make]
    env: {}
    needs: []
    timeout: 600s
    retry: {}
compensations: []
"#;
        assert_eq!(digest(&parse(spelled).unwrap()), digest(&bare));
        let json = r#"{"steps": [{"argv": ["make"], "kind": "exec", "name": "a"}], "name": "d"}"#;
        assert_eq!(digest(&parse(json).unwrap()), digest(&bare));
        // A different meaning is a different digest.
        let other = parse("name: d\nsteps: [{name: a, kind: exec, argv: [make, all]}]").unwrap();
        assert_ne!(digest(&other), digest(&bare));
    }

    #[test]
    fn canonical_json_is_sorted_and_reads_back() {
        let def = parse(YAML).unwrap();
        let text = canonical_json(&def);
        assert!(!text.contains('\n'));
        // Keys sorted at every level: the first key of the document, of its first
        // compensation and of a retry policy.
        assert!(
            text.starts_with(r#"{"compensations":[{"argv":["make","clean"],"kind":"exec","#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"backoff":2.0,"initial_interval_ms":"#),
            "{text}"
        );
        assert!(text.contains(r#""deadline_ms":3600000,"name":"build-and-release","session":"#));
        let back = from_stored(&text).unwrap();
        assert_eq!(back, def);
        assert_eq!(canonical_json(&back), text);
        assert_eq!(digest(&back), digest(&def));
        assert_eq!(digest(&def).len(), "sha256:".len() + 64);
    }

    #[test]
    fn every_kind_parses() {
        let def = parse(
            r#"
name: kinds
steps:
  - {name: e, kind: exec, argv: [sh, -c, "echo ${input.x}"], env: {A: "${run.id}"}, cwd: /w}
  - {name: h, kind: http, url: "http://x/${steps.e.output.stdout}", headers: {X-Key: "${step.idempotency_key}"}, body: "{}", needs: [e]}
  - {name: c, kind: checkpoint, summary: "after ${steps.e.output.exit_code}", needs: [h]}
  - {name: r, kind: restore, version: v1}
  - {name: s, kind: sleep, duration: 90}
  - {name: w, kind: wait_for_event, event: go.now, timeout: 1h}
  - {name: ap, kind: approval, prompt: ok?, timeout: 1d}
  - {name: t, kind: transition, action: suspend}
  - {name: p, kind: promote, paths: [dist]}
  - {name: p2, kind: promote, release: "rel-${run.id}"}
  - {name: n, kind: noop, output: {a: [1, 2.5, "x", null]}}
"#,
        )
        .unwrap();
        let kinds: Vec<&str> = def.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            [
                "exec",
                "http",
                "checkpoint",
                "restore",
                "sleep",
                "wait_for_event",
                "approval",
                "transition",
                "promote",
                "promote",
                "noop"
            ]
        );
        match &def.step("h").unwrap().action {
            StepAction::Http { method, .. } => assert_eq!(method, "GET"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            def.step("s").unwrap().action,
            StepAction::Sleep {
                duration_ms: 90_000
            }
        );
        // A wait's `timeout` is how long it waits; its attempt timeout is the default.
        let w = def.step("w").unwrap();
        assert_eq!(
            w.action,
            StepAction::WaitForEvent {
                event: "go.now".into(),
                timeout_ms: Some(3_600_000)
            }
        );
        assert_eq!(w.timeout_ms, DEFAULT_TIMEOUT_MS);
        // A promote step's release defaults to the step's name.
        match &def.step("p").unwrap().action {
            StepAction::Promote { name, paths } => {
                assert_eq!(name, "p");
                assert_eq!(paths, &["dist".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        // `output: null` is no output.
        let null = parse("name: n\nsteps: [{name: a, kind: noop, output: null}]").unwrap();
        let none = parse("name: n\nsteps: [{name: a, kind: noop}]").unwrap();
        assert_eq!(digest(&null), digest(&none));
        assert!(def.needs_session());
        assert!(!none.needs_session());
    }

    #[test]
    fn more_errors_name_their_field() {
        let many = |key: &str, n: usize| {
            let items: Vec<String> = (0..n)
                .map(|i| format!("{{name: s{i}, kind: noop}}"))
                .collect();
            let steps = if key == "steps" {
                items.join(", ")
            } else {
                "{name: a, kind: noop}".into()
            };
            let comps = if key == "compensations" {
                items.join(", ")
            } else {
                String::new()
            };
            format!("name: x\nsteps: [{steps}]\ncompensations: [{comps}]")
        };
        let long_argv = format!(
            "name: x\nsteps: [{{name: a, kind: exec, argv: [{}]}}]",
            vec!["x"; 257].join(", ")
        );
        let cases: Vec<(String, &str, &str)> = vec![
            ("[1, 2]".into(), "document", "object"),
            ("steps: [{name: a, kind: noop}]".into(), "name", "required"),
            ("name: x\nsteps: [{kind: noop}]".into(), "steps[0].name", "required"),
            ("name: x\nsteps: [{name: a}]".into(), "steps[0].kind", "required"),
            ("name: x\nsteps: {a: 1}".into(), "steps", "list"),
            (many("steps", 201), "steps", "200"),
            (many("compensations", 201), "compensations", "200"),
            (long_argv, "steps[0].argv", "256"),
            ("name: x\nsteps: [{name: a, kind: exec, argv: []}]".into(), "steps[0].argv", "program"),
            ("name: x\nsteps: [{name: a, kind: exec, argv: [x], env: {A=B: c}}]".into(), "steps[0].env.A=B", "variable"),
            ("name: x\nsteps: [{name: a, kind: exec, argv: [x], env: {A: 1}}]".into(), "steps[0].env.A", "string"),
            ("name: x\nsteps: [{name: a, kind: exec, argv: [sleep, 5]}]".into(), "steps[0].argv[1]", "quote it: \"5\""),
            ("name: x\nsteps: [{name: a, kind: exec, argv: [x], env: {A: [1]}}]".into(), "steps[0].env.A", "must be a string"),
            ("name: x\nsteps: [{name: a, kind: http, url: ftp://x}]".into(), "steps[0].url", "http"),
            ("name: x\nsteps: [{name: a, kind: http}]".into(), "steps[0].url", "required"),
            ("name: x\nsteps: [{name: a, kind: http, method: get, url: http://x}]".into(), "steps[0].method", "capitals"),
            ("name: x\nsteps: [{name: a, kind: http, url: http://x, headers: {bad name: v}}]".into(), "steps[0].headers.bad name", "header"),
            ("name: x\nsteps: [{name: a, kind: sleep}]".into(), "steps[0].duration", "required"),
            ("name: x\nsteps: [{name: a, kind: sleep, duration: 0}]".into(), "steps[0].duration", "more than zero"),
            ("name: x\nsteps: [{name: a, kind: sleep, duration: 1.5}]".into(), "steps[0].duration", "whole"),
            ("name: x\ndeadline: 400d\nsteps: [{name: a, kind: noop}]".into(), "deadline", "365"),
            ("name: x\nsteps: [{name: a, kind: wait_for_event}]".into(), "steps[0].event", "required"),
            ("name: x\nsteps: [{name: a, kind: wait_for_event, event: a b}]".into(), "steps[0].event", "characters"),
            ("name: x\nsteps: [{name: a, kind: transition, action: explode}]".into(), "steps[0].action", "activate"),
            ("name: x\nsteps: [{name: a, kind: promote, name2: y}]".into(), "steps[0].name2", "unknown key"),
            ("name: x\nsteps: [{name: a, kind: noop, argv: [x]}]".into(), "steps[0].argv", "unknown key"),
            ("name: x\nsession: {class: y}\nsteps: [{name: a, kind: noop}]".into(), "session.class", "unknown key"),
            ("name: x\ndefaults: {timeuot: 1s}\nsteps: [{name: a, kind: noop}]".into(), "defaults.timeuot", "unknown key"),
            ("name: x\ndefaults: {retry: {error: {tries: 1}}}\nsteps: [{name: a, kind: noop}]".into(), "defaults.retry.error.tries", "unknown key"),
            ("name: x\nsteps: [{name: a, kind: noop, retry: {error: {max_attempts: 101}}}]".into(), "steps[0].retry.error.max_attempts", "1 to 100"),
            ("name: x\nsteps: [{name: a, kind: noop, retry: {timeout: {backoff: 0.5}}}]".into(), "steps[0].retry.timeout.backoff", "1 to 10"),
            ("name: x\nsteps: [{name: a, kind: noop, retry: {capacity: {jitter: 1.5}}}]".into(), "steps[0].retry.capacity.jitter", "0 to 1"),
            ("name: x\nsteps: [{name: a, kind: noop, retry: {error: {initial_interval: 2m, max_interval: 1m}}}]".into(), "steps[0].retry.error", "initial_interval"),
            ("name: x\nsteps: [{name: a, kind: noop, retry: {non_retryable_exit_codes: [300]}}]".into(), "steps[0].retry.non_retryable_exit_codes[0]", "exit code"),
            ("name: x\nsteps: [{name: a, kind: noop, needs: [a]}]".into(), "steps[0].needs[0]", "itself"),
            ("name: x\nsteps: [{name: a, kind: noop}, {name: b, kind: noop, needs: [a, a]}]".into(), "steps[1].needs[1]", "twice"),
            ("name: x\nsteps: [{name: a, kind: noop, needs: [c]}]\ncompensations: [{name: c, kind: noop}]".into(), "steps[0].needs[0]", "compensation"),
            ("name: x\nsteps: [{name: a, kind: noop}]\ncompensations: [{name: a, kind: noop}]".into(), "compensations[0].name", "twice"),
            ("name: x\nsteps: [{name: a, kind: noop}]\ncompensations: [{name: c, kind: noop, needs: [a]}]".into(), "compensations[0].needs", "compensation"),
            ("name: x\nsteps: [{name: a, kind: noop}]\ncompensations: [{name: c, kind: noop, compensate: c}]".into(), "compensations[0].compensate", "compensation"),
            ("name: x\nsteps: [{name: a, kind: noop}]\ncompensations: [{name: c, kind: exec, argv: [\"${steps.z.output}\"]}]".into(), "compensations[0].argv[0]", "no step"),
            ("name: x\nsteps: [{name: a, kind: http, url: http://x, headers: {H: \"${secret.x}\"}}]".into(), "steps[0].headers.H", "not one of"),
            // A sibling is no ancestor, even if it comes first in the document.
            ("name: x\nsteps: [{name: a, kind: noop}, {name: b, kind: noop}, {name: c, kind: exec, argv: [\"${steps.a.output}\"], needs: [b]}]".into(), "steps[2].argv[0]", "needs"),
            ("name: x\nsteps: [{name: a, kind: promote, release: \"${steps.a.output}\"}]".into(), "steps[0].release", "needs"),
        ];
        for (text, field, words) in cases {
            let error = parse(&text).unwrap_err();
            assert_eq!(error.field, field, "{text}: {error}");
            assert!(error.message.contains(words), "{text}: {error}");
            assert_eq!(error.to_string(), format!("{field}: {}", error.message));
        }
        let cycle = parse(
            "name: x\nsteps: [{name: a, kind: noop, needs: [c]}, {name: b, kind: noop, needs: [a]}, {name: c, kind: noop, needs: [b]}, {name: d, kind: noop}]",
        )
        .unwrap_err();
        assert!(cycle.message.contains("a -> c -> b -> a"), "{cycle}");
    }

    #[test]
    fn templates_may_reach_any_ancestor() {
        let def = parse(
            "name: x\nsteps: [{name: a, kind: noop}, {name: b, kind: noop, needs: [a]}, {name: c, kind: exec, argv: [\"${steps.a.output.x}\", \"$${steps.z.output}\"], needs: [b], compensate: u}]\ncompensations: [{name: u, kind: exec, argv: [\"${steps.c.output.stdout}\"]}]",
        )
        .unwrap();
        assert_eq!(def.steps.len(), 3);
        // The limits themselves are fine.
        let items: Vec<String> = (0..200)
            .map(|i| format!("{{name: s{i}, kind: noop}}"))
            .collect();
        let text = format!("name: x\nsteps: [{}]", items.join(", "));
        assert_eq!(parse(&text).unwrap().steps.len(), 200);
    }
}
