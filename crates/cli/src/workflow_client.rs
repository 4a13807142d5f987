//! `cordon workflow`, `cordon run`, `cordon dlq` and `cordon schedule`: clients of the
//! workflow API. `run start --wait`, `run start --follow` and `run show --follow` poll
//! the run until it ends and exit 0 if it succeeded, `exit::REFUSED` (6) if it failed
//! or was cancelled.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cordon_wire::workflow::{
    ApproveRequest, CancelRunRequest, CreateScheduleRequest, DefinitionBody, DefinitionList,
    FinishRunRequest, JournalEntryBody, JournalList, PutDefinitionRequest, RunBody, ScheduleList,
    SendEventRequest, StartRunRequest, StepCallRequest,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{Client, ClientArgs, Failure, Outcome, finish};
use crate::exit;
use crate::workflow::{
    DlqCommand, RunCommand, ScheduleCommand, StartArgs, StepArgs, WorkflowCommand,
    dead_letter_list_text, dead_letter_one, dead_letter_view, definition_rows, definition_text,
    final_line, journal_header_line, journal_line, journal_rows, parse_json, run_list_text,
    run_one, run_view, schedule_one, schedule_rows,
};

/// How often `--wait` and `--follow` look at the run.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long `--wait` and `--follow` keep trying while the server cannot be reached.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The journal page size `run show` and `--follow` ask for.
const JOURNAL_PAGE: u32 = 1000;

const NONE: Option<&()> = None;

fn usage(message: String) -> Failure {
    Failure {
        code: exit::USAGE,
        message,
    }
}

fn internal(message: String) -> Failure {
    Failure {
        code: exit::INTERNAL,
        message,
    }
}

/// A path segment: ids, names and digests are percent-encoded but for unreserved bytes.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A successful answer as `T`, whatever `--json` says.
fn typed<T: DeserializeOwned>(value: Value) -> Outcome<T> {
    serde_json::from_value(value)
        .map_err(|error| internal(format!("unexpected answer from the server: {error}")))
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A file's text, or stdin's with `-`.
fn read_text(file: &Path, what: &str) -> Outcome<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read the {what} from stdin: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))
    }
}

/// Asks on the terminal; refuses without one (pass --yes in scripts).
fn confirm(question: &str) -> Outcome<()> {
    let refused = |message: String| Failure {
        code: exit::REFUSED,
        message,
    };
    if !std::io::stdin().is_terminal() {
        return Err(refused(
            "refusing without confirmation: pass --yes".to_owned(),
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|error| refused(format!("cannot read the answer: {error}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(refused("not confirmed".to_owned()))
    }
}

pub async fn run_workflow(args: ClientArgs<WorkflowCommand>) -> ExitCode {
    finish(workflow(args).await)
}

async fn workflow(args: ClientArgs<WorkflowCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command().clone() {
        WorkflowCommand::Apply { file } => {
            let body = PutDefinitionRequest {
                definition: None,
                source: Some(read_text(&file, "definition")?),
            };
            let value = client
                .call(Method::POST, "/v1/workflows", &[], Some(&body), None)
                .await?;
            client.show(value, |d: DefinitionBody| definition_rows(vec![d]))
        }
        WorkflowCommand::List => {
            let value = client
                .call(Method::GET, "/v1/workflows", &[], NONE, None)
                .await?;
            client.show(value, |list: DefinitionList| definition_rows(list.items))
        }
        WorkflowCommand::Show { reference } => {
            let path = format!("/v1/workflows/{}", segment(&reference));
            let value = client.call(Method::GET, &path, &[], NONE, None).await?;
            client.show(value, definition_text)
        }
    }
}

pub async fn run_run(args: ClientArgs<RunCommand>) -> ExitCode {
    finish(run(args).await)
}

fn run_path(id: &str, action: &str) -> String {
    format!("/v1/runs/{}{action}", segment(id))
}

async fn run(args: ClientArgs<RunCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command().clone() {
        RunCommand::Start(start) => start_run(&client, start).await,
        RunCommand::Show { id, follow } => {
            if follow {
                return follow_run(&client, &id, true).await;
            }
            let value = client
                .call(Method::GET, &run_path(&id, ""), &[], NONE, None)
                .await?;
            if client.json {
                print_json(&value);
                return Ok(());
            }
            let run: RunBody = typed(value)?;
            let journal = journal_after(&client, &id, 0).await?;
            print!("{}\n{}", run_view(&run), journal_rows(&journal));
            Ok(())
        }
        RunCommand::Journal { id, after, limit } => {
            let mut query = Vec::new();
            query.extend(after.map(|a| ("after", a.to_string())));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            let value = client
                .call(Method::GET, &run_path(&id, "/journal"), &query, NONE, None)
                .await?;
            client.show(value, |list: JournalList| journal_rows(&list.items))
        }
        RunCommand::List {
            status,
            workflow,
            definition,
            session,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            query.extend(status.map(|s| ("status", s.as_str().to_owned())));
            query.extend(workflow.map(|w| ("name", w)));
            query.extend(definition.map(|d| ("definition", d)));
            query.extend(session.map(|s| ("session_id", s)));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            query.extend(after.map(|a| ("after", a)));
            let value = client
                .call(Method::GET, "/v1/runs", &query, NONE, None)
                .await?;
            client.show(value, run_list_text)
        }
        RunCommand::Cancel { id, reason, yes } => {
            if !yes {
                confirm(&format!(
                    "Cancel run {id}? Its compensations run; a cancelled run cannot be resumed."
                ))?;
            }
            let body = CancelRunRequest { reason };
            let value = client
                .call(
                    Method::POST,
                    &run_path(&id, "/cancel"),
                    &[],
                    Some(&body),
                    None,
                )
                .await?;
            client.show(value, run_one)
        }
        RunCommand::Pause { id } => {
            let value = client
                .call(Method::POST, &run_path(&id, "/pause"), &[], NONE, None)
                .await?;
            client.show(value, run_one)
        }
        RunCommand::Resume { id } => {
            let value = client
                .call(Method::POST, &run_path(&id, "/resume"), &[], NONE, None)
                .await?;
            client.show(value, run_one)
        }
        RunCommand::Signal { id, event, payload } => {
            let body = SendEventRequest { event, payload };
            let value = client
                .call(
                    Method::POST,
                    &run_path(&id, "/events"),
                    &[],
                    Some(&body),
                    None,
                )
                .await?;
            client.show(value, run_one)
        }
        RunCommand::Approve {
            id,
            step,
            reject,
            comment,
        } => {
            let body = ApproveRequest {
                step,
                approved: !reject,
                comment,
            };
            let value = client
                .call(
                    Method::POST,
                    &run_path(&id, "/approve"),
                    &[],
                    Some(&body),
                    None,
                )
                .await?;
            client.show(value, run_one)
        }
        RunCommand::Step(step) => step_call(&client, step).await,
        RunCommand::Finish { id, status, output } => {
            let body = FinishRunRequest { status, output };
            let value = client
                .call(
                    Method::POST,
                    &run_path(&id, "/finish"),
                    &[],
                    Some(&body),
                    None,
                )
                .await?;
            client.show(value, run_one)
        }
    }
}

async fn start_run(client: &Client, start: StartArgs) -> Outcome<()> {
    let input = match (start.input, &start.input_file) {
        (Some(input), _) => Some(input),
        (None, Some(file)) => Some(
            parse_json(&read_text(file, "input")?)
                .map_err(|e| usage(format!("the input in {}: {e}", file.display())))?,
        ),
        (None, None) => None,
    };
    let body = StartRunRequest {
        definition: start.definition,
        workflow: start.workflow,
        name: start.name,
        session_id: start.session,
        input,
        deadline: start.deadline,
    };
    let value = client
        .call(
            Method::POST,
            "/v1/runs",
            &[],
            Some(&body),
            start.idempotency_key.as_deref(),
        )
        .await?;
    if !start.wait && !start.follow {
        return client.show(value, run_one);
    }
    let run: RunBody = typed(value)?;
    if !client.json {
        print!("{}", run_one(run.clone()));
    }
    if start.follow {
        if !client.json {
            println!();
        }
        follow_run(client, &run.id, false).await
    } else {
        wait_run(client, &run.id).await
    }
}

/// The run's journal after `after`, every page.
async fn journal_after(client: &Client, id: &str, after: u64) -> Outcome<Vec<JournalEntryBody>> {
    let mut entries = Vec::new();
    let mut after = after;
    loop {
        let query = [
            ("after", after.to_string()),
            ("limit", JOURNAL_PAGE.to_string()),
        ];
        let value = client
            .call(Method::GET, &run_path(id, "/journal"), &query, NONE, None)
            .await?;
        let page: JournalList = typed(value)?;
        let full = page.items.len() >= JOURNAL_PAGE as usize;
        match page.items.last() {
            Some(last) => after = last.seq,
            None => break,
        }
        entries.extend(page.items);
        if !full {
            break;
        }
    }
    Ok(entries)
}

/// Retries a poll while the server cannot be reached, for up to `RECONNECT_FOR`.
struct Patience {
    lost_since: Option<Instant>,
}

impl Patience {
    fn new() -> Self {
        Self { lost_since: None }
    }

    /// `Ok(Some(value))` on success, `Ok(None)` to poll again, the failure when it is
    /// not about reaching the server or patience ran out.
    fn judge<T>(&mut self, outcome: Outcome<T>) -> Outcome<Option<T>> {
        match outcome {
            Ok(value) => {
                if self.lost_since.take().is_some() {
                    eprintln!("cordon: reached the server again");
                }
                Ok(Some(value))
            }
            Err(failure) if failure.code == exit::UNREACHABLE => {
                let since = *self.lost_since.get_or_insert_with(|| {
                    eprintln!("cordon: {}; trying again", failure.message);
                    Instant::now()
                });
                if since.elapsed() >= RECONNECT_FOR {
                    Err(failure)
                } else {
                    Ok(None)
                }
            }
            Err(failure) => Err(failure),
        }
    }
}

async fn get_run(client: &Client, id: &str) -> Outcome<(RunBody, Value)> {
    let value = client
        .call(Method::GET, &run_path(id, ""), &[], NONE, None)
        .await?;
    Ok((typed(value.clone())?, value))
}

/// Polls until the run is terminal, then prints it: exit 0 if it succeeded.
async fn wait_run(client: &Client, id: &str) -> Outcome<()> {
    let mut patience = Patience::new();
    loop {
        if let Some((run, value)) = patience.judge(get_run(client, id).await)?
            && run.status.is_terminal()
        {
            if client.json {
                print_json(&value);
            } else {
                print!("\n{}", run_view(&run));
            }
            return ended(&run);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The live view: journal entries as they arrive, then the run's final status; with
/// `intro`, the run's row first. With `--json`, one JSON object a line: the entries,
/// then the run.
async fn follow_run(client: &Client, id: &str, intro: bool) -> Outcome<()> {
    let mut patience = Patience::new();
    let mut last_seq = 0;
    let mut intro = intro;
    let mut header = !client.json;
    loop {
        // The run first, then its journal: when the run is seen ended, every entry up
        // to its end is in the journal read after it.
        let Some((run, value)) = patience.judge(get_run(client, id).await)? else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        let Some(entries) = patience.judge(journal_after(client, id, last_seq).await)? else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        if intro && !client.json {
            println!("{}", run_one(run.clone()));
            intro = false;
        }
        if header {
            println!("{}", journal_header_line());
            header = false;
        }
        for entry in &entries {
            if client.json {
                println!("{}", serde_json::to_string(entry).unwrap_or_default());
            } else {
                println!("{}", journal_line(entry));
            }
            last_seq = last_seq.max(entry.seq);
        }
        if run.status.is_terminal() {
            if client.json {
                println!("{value}");
            } else {
                println!("{}", final_line(&run));
            }
            return ended(&run);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A terminal run as the command's outcome: success only if it succeeded.
fn ended(run: &RunBody) -> Outcome<()> {
    if run.status == cordon_core::RunStatus::Succeeded {
        return Ok(());
    }
    let mut message = format!("run {} {}", run.id, run.status.as_str());
    if let Some(text) = run.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(&format!(": {text}"));
    }
    if let Some(reason) = &run.reason {
        message = format!("{reason}: {message}");
    }
    Err(Failure {
        code: exit::REFUSED,
        message,
    })
}

async fn step_call(client: &Client, step: StepArgs) -> Outcome<()> {
    let body = StepCallRequest {
        action: step.action.as_str().to_owned(),
        output: step.output,
        heartbeat_timeout: step.heartbeat_timeout,
        class: step.class,
        message: step.message,
        exit_code: step.exit_code,
        summary: step.summary,
    };
    let path = format!(
        "/v1/runs/{}/steps/{}",
        segment(&step.id),
        segment(&step.step)
    );
    let value = client
        .call(Method::POST, &path, &[], Some(&body), None)
        .await?;
    // For shell agents: the recorded step as JSON, with or without --json.
    print_json(&value);
    Ok(())
}

pub async fn run_dlq(args: ClientArgs<DlqCommand>) -> ExitCode {
    finish(dlq(args).await)
}

fn dlq_path(id: &str, action: &str) -> String {
    format!("/v1/dlq/{}{action}", segment(id))
}

async fn dlq(args: ClientArgs<DlqCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command().clone() {
        DlqCommand::List {
            status,
            run,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            query.extend(status.map(|s| ("status", s)));
            query.extend(run.map(|r| ("run_id", r)));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            query.extend(after.map(|a| ("after", a)));
            let value = client
                .call(Method::GET, "/v1/dlq", &query, NONE, None)
                .await?;
            client.show(value, dead_letter_list_text)
        }
        DlqCommand::Show { id } => {
            let value = client
                .call(Method::GET, &dlq_path(&id, ""), &[], NONE, None)
                .await?;
            client.show(value, dead_letter_view)
        }
        DlqCommand::Redrive { id } => {
            let value = client
                .call(Method::POST, &dlq_path(&id, "/redrive"), &[], NONE, None)
                .await?;
            client.show(value, dead_letter_one)
        }
        DlqCommand::Discard { id, yes } => {
            if !yes {
                confirm(&format!(
                    "Discard dead letter {id}? Its run fails and compensates."
                ))?;
            }
            let value = client
                .call(Method::POST, &dlq_path(&id, "/discard"), &[], NONE, None)
                .await?;
            client.show(value, dead_letter_one)
        }
    }
}

pub async fn run_schedule(args: ClientArgs<ScheduleCommand>) -> ExitCode {
    finish(schedule(args).await)
}

async fn schedule(args: ClientArgs<ScheduleCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    match args.command().clone() {
        ScheduleCommand::Create {
            workflow,
            cron,
            input,
        } => {
            let body = CreateScheduleRequest {
                workflow,
                cron,
                input,
            };
            let value = client
                .call(Method::POST, "/v1/schedules", &[], Some(&body), None)
                .await?;
            client.show(value, schedule_one)
        }
        ScheduleCommand::List => {
            let value = client
                .call(Method::GET, "/v1/schedules", &[], NONE, None)
                .await?;
            client.show(value, |list: ScheduleList| schedule_rows(list.items))
        }
        ScheduleCommand::Delete { id } => {
            let path = format!("/v1/schedules/{}", segment(&id));
            client.call(Method::DELETE, &path, &[], NONE, None).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("run_0192abc"), "run_0192abc");
        assert_eq!(segment("sha256:ab"), "sha256%3Aab");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(run_path("run_1", "/journal"), "/v1/runs/run_1/journal");
        assert_eq!(dlq_path("dlq_1", "/redrive"), "/v1/dlq/dlq_1/redrive");
    }

    fn run_with(status: &str, reason: Option<&str>, message: Option<&str>) -> RunBody {
        serde_json::from_value(serde_json::json!({
            "id": "run_1", "name": "n", "status": status, "reason": reason, "message": message,
            "input": {}, "paused": false, "steps": [], "created_by": "k",
            "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z",
            "journal_seq": 1
        }))
        .unwrap()
    }

    #[test]
    fn only_a_succeeded_run_exits_zero() {
        assert!(ended(&run_with("succeeded", None, None)).is_ok());
        let failure = ended(&run_with("failed", Some("STEP_FAILED"), Some("boom"))).unwrap_err();
        assert_eq!(failure.code, exit::REFUSED);
        assert_eq!(failure.message, "STEP_FAILED: run run_1 failed: boom");
        let failure = ended(&run_with("cancelled", None, None)).unwrap_err();
        assert_eq!(failure.message, "run run_1 cancelled");
    }

    #[test]
    fn patience_retries_only_unreachable_servers() {
        let mut patience = Patience::new();
        let lost: Outcome<()> = Err(Failure {
            code: exit::UNREACHABLE,
            message: "cannot reach".into(),
        });
        assert!(matches!(patience.judge(lost), Ok(None)));
        assert!(matches!(patience.judge(Ok(1)), Ok(Some(1))));
        let missing: Outcome<()> = Err(Failure {
            code: exit::NOT_FOUND,
            message: "RUN_NOT_FOUND".into(),
        });
        assert!(patience.judge(missing).is_err());
    }
}
