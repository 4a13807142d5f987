//! `cordon workflow`, `cordon run`, `cordon dlq` and `cordon schedule`: the command-line
//! shapes of the workflow client commands and how their answers are rendered. The
//! requests themselves are in `workflow_client`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use cordon_core::RunStatus;
use cordon_wire::workflow::{
    DeadLetterBody, DeadLetterList, DefinitionBody, JournalEntryBody, RunBody, RunList,
    ScheduleBody, StepBody, StepErrorBody,
};
use serde_json::Value;

use crate::client::table;

/// The widest a JSON value (a run's output) gets in a view; `--json` shows everything.
const VALUE_WIDTH: usize = 200;

#[derive(Debug, Clone, Subcommand)]
pub enum WorkflowCommand {
    /// Store a workflow definition from a YAML or JSON file (`-`: stdin); prints its
    /// digest and name. Storing the same definition again answers the stored one.
    Apply { file: PathBuf },
    /// The tenant's workflow definitions, newest first.
    List,
    /// One definition (by digest, or the newest of a name) as canonical JSON.
    Show { reference: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum RunCommand {
    /// Start a run of a workflow (`--workflow NAME`, `--definition DIGEST`), or a run
    /// driven by your own code through `run step` (`--name NAME`).
    Start(StartArgs),
    /// A run: its status, steps, compensations and journal.
    Show {
        id: String,
        /// Print journal entries as they arrive until the run ends; exit 0 if it
        /// succeeded, 6 if it failed or was cancelled.
        #[arg(long)]
        follow: bool,
    },
    /// A run's journal, oldest first.
    Journal {
        id: String,
        /// Only entries after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// Page size, 1 to 1000 (server default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The tenant's runs, in start order.
    List {
        #[arg(long, value_parser = parse_run_status)]
        status: Option<RunStatus>,
        /// Only runs of this workflow (or run) name.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs of this definition digest.
        #[arg(long)]
        definition: Option<String>,
        /// Only runs in this session.
        #[arg(long)]
        session: Option<String>,
        /// Page size, 1 to 1000 (server default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Only runs after this one (`more: --after ...` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Cancel a run: no new step starts and the compensations of its succeeded steps
    /// run. Final: asks for confirmation unless --yes.
    Cancel {
        id: String,
        /// Why; recorded in the run's journal.
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Pause a run: attempts in flight finish, no new one starts.
    Pause { id: String },
    /// Resume a paused run.
    Resume { id: String },
    /// Send an event to a run's `wait_for_event` steps.
    Signal {
        id: String,
        event: String,
        /// The event's payload, as JSON.
        #[arg(long, value_parser = parse_json)]
        payload: Option<Value>,
    },
    /// Approve (or, with --reject, reject) a run's waiting approval step.
    Approve {
        id: String,
        step: String,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
    },
    /// The durable-step API, for shell agents: record a step's start, heartbeat, result
    /// or failure. Prints the step as recorded, as JSON.
    Step(StepArgs),
    /// End a run driven by your own code (`run start --name`).
    Finish {
        id: String,
        #[arg(value_parser = ["succeeded", "failed"])]
        status: String,
        /// The run's output, as JSON.
        #[arg(long, value_parser = parse_json)]
        output: Option<Value>,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["workflow", "definition", "name"])
))]
pub struct StartArgs {
    /// The newest definition of this workflow name.
    #[arg(long)]
    pub workflow: Option<String>,
    /// The definition with this digest (`sha256:...`).
    #[arg(long)]
    pub definition: Option<String>,
    /// No definition: a run your code drives with `run step` and ends with `run finish`.
    #[arg(long)]
    pub name: Option<String>,
    /// Run in this existing session (default: one is created if a step needs it).
    #[arg(long)]
    pub session: Option<String>,
    /// The run's input, as JSON.
    #[arg(long, value_parser = parse_json, conflicts_with = "input_file")]
    pub input: Option<Value>,
    /// Read the run's input (JSON) from this file (`-`: stdin).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Overrides the definition's deadline: `30s`, `5m`, `2h`, ...
    #[arg(long)]
    pub deadline: Option<String>,
    /// Sent as `Idempotency-Key`: the same key starts one run.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the run ends; exit 0 if it succeeded, 6 if it failed or was cancelled.
    #[arg(long)]
    pub wait: bool,
    /// Like --wait, printing journal entries as they arrive.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    pub id: String,
    pub step: String,
    pub action: StepAction,
    /// `complete`: the step's result, as JSON.
    #[arg(long, value_parser = parse_json)]
    pub output: Option<Value>,
    /// `start`: the attempt must heartbeat at least this often (`30s`).
    #[arg(long)]
    pub heartbeat_timeout: Option<String>,
    /// `fail`: why (default `error`).
    #[arg(long, value_parser = ["timeout", "capacity", "policy", "error"])]
    pub class: Option<String>,
    /// `fail`: what went wrong.
    #[arg(long)]
    pub message: Option<String>,
    /// `fail`: the exit code of what failed.
    #[arg(long, allow_negative_numbers = true)]
    pub exit_code: Option<i32>,
    /// `fail` with `--class policy`: what was refused, as JSON (for the dead letter).
    #[arg(long, value_parser = parse_json)]
    pub summary: Option<Value>,
}

/// What `run step` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepAction {
    Start,
    Heartbeat,
    Complete,
    Fail,
}

impl StepAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Start => "start",
            StepAction::Heartbeat => "heartbeat",
            StepAction::Complete => "complete",
            StepAction::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// The dead-letter queue: steps refused by policy, waiting for an operator.
    List {
        /// Which entries (default: open).
        #[arg(long, value_parser = ["open", "redriven", "discarded", "all"])]
        status: Option<String>,
        /// Only entries of this run.
        #[arg(long)]
        run: Option<String>,
        /// Page size, 1 to 1000 (server default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Only entries after this one (`more: --after ...` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One entry, with what was refused.
    Show { id: String },
    /// Try the entry's step again at once (after a policy change).
    Redrive { id: String },
    /// Give up on the entry: its run fails and compensates. Asks unless --yes.
    Discard {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleCommand {
    /// Start a run of a workflow at each minute a cron expression matches (UTC).
    Create {
        /// A workflow name (its newest definition) or a definition digest.
        #[arg(long)]
        workflow: String,
        /// Five fields, UTC (`*/5 * * * *`), or `@hourly`, `@daily`, ...
        #[arg(long)]
        cron: String,
        /// Every run's input, as JSON.
        #[arg(long, value_parser = parse_json)]
        input: Option<Value>,
    },
    /// The tenant's schedules.
    List,
    /// Delete a schedule (runs it started go on).
    Delete { id: String },
}

pub(crate) fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
}

fn parse_run_status(text: &str) -> Result<RunStatus, String> {
    text.parse()
}

/// `key  value` lines, the keys aligned.
fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}").trim_end().to_owned() + "\n")
        .collect()
}

/// A JSON value on one line, cut to `VALUE_WIDTH` characters.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= VALUE_WIDTH {
        return text;
    }
    let cut: String = text.chars().take(VALUE_WIDTH).collect();
    format!("{cut}...")
}

/// One line of free text, for a table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn definition_rows(definitions: Vec<DefinitionBody>) -> String {
    let rows = definitions
        .into_iter()
        .map(|d| vec![d.digest, d.name, d.created_by, d.created_at.to_string()])
        .collect();
    table(&["DIGEST", "NAME", "CREATED BY", "CREATED"], rows)
}

/// `workflow show`: the canonical definition, pretty-printed.
pub(crate) fn definition_text(definition: DefinitionBody) -> String {
    let text = serde_json::to_string_pretty(&definition.definition).unwrap_or_default();
    format!("{text}\n")
}

/// `done/total` of a run's steps (skipped steps count as done).
fn progress(steps: &[StepBody]) -> String {
    let done = steps
        .iter()
        .filter(|s| matches!(s.status.as_str(), "succeeded" | "skipped"))
        .count();
    format!("{done}/{}", steps.len())
}

/// The status column of a run: `paused` shows next to a status that is not `paused`.
fn run_status(run: &RunBody) -> String {
    let status = run.status.as_str();
    if run.paused && run.status != RunStatus::Paused {
        format!("{status} (paused)")
    } else {
        status.to_owned()
    }
}

pub(crate) fn run_rows(runs: Vec<RunBody>) -> String {
    let rows = runs
        .into_iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.name.clone(),
                run_status(&r),
                progress(&r.steps),
                r.reason.clone().unwrap_or_default(),
                r.session_id.clone().unwrap_or_default(),
                r.created_at.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATUS", "STEPS", "REASON", "SESSION", "CREATED",
        ],
        rows,
    )
}

pub(crate) fn run_one(run: RunBody) -> String {
    run_rows(vec![run])
}

pub(crate) fn run_list_text(list: RunList) -> String {
    let mut out = run_rows(list.items);
    if let Some(next) = list.next {
        out.push_str(&format!("\nmore: --after {next}\n"));
    }
    out
}

/// An attempt's failure: `class REASON: message (exit N)`.
fn step_error(error: &StepErrorBody) -> String {
    let mut text = format!("{} {}", error.class, error.reason);
    if !error.message.is_empty() {
        text.push_str(&format!(": {}", one_line(&error.message)));
    }
    if let Some(code) = error.exit_code {
        text.push_str(&format!(" (exit {code})"));
    }
    text
}

/// `run show`: the run, its steps and its compensations (the journal is apart).
pub(crate) fn run_view(run: &RunBody) -> String {
    let mut status = run.status.as_str().to_owned();
    match (&run.reason, &run.message) {
        (Some(reason), Some(message)) if !message.is_empty() => {
            status.push_str(&format!(" ({reason}: {})", one_line(message)));
        }
        (Some(reason), _) => status.push_str(&format!(" ({reason})")),
        (None, Some(message)) if !message.is_empty() => {
            status.push_str(&format!(" ({})", one_line(message)));
        }
        _ => {}
    }
    let mut pairs = vec![("id", run.id.clone()), ("name", run.name.clone())];
    pairs.push(("status", status));
    if run.paused {
        pairs.push(("paused", "yes".to_owned()));
    }
    pairs.push((
        "definition",
        run.definition
            .clone()
            .unwrap_or_else(|| "- (driven by agent code)".to_owned()),
    ));
    pairs.push((
        "session",
        run.session_id.clone().unwrap_or_else(|| "-".to_owned()),
    ));
    pairs.push(("created by", run.created_by.clone()));
    pairs.push(("created", run.created_at.to_string()));
    pairs.push(("updated", run.updated_at.to_string()));
    if let Some(deadline) = run.deadline {
        pairs.push(("deadline", deadline.to_string()));
    }
    pairs.push(("input", compact(&run.input)));
    if let Some(output) = &run.output {
        pairs.push(("output", compact(output)));
    }
    let mut out = details(&pairs);
    out.push('\n');
    let rows = run
        .steps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.status.clone(),
                s.attempt.to_string(),
                s.error.as_ref().map(step_error).unwrap_or_default(),
                s.dead_letter.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["STEP", "STATUS", "ATTEMPT", "ERROR", "DEAD LETTER"],
        rows,
    ));
    if !run.compensations.is_empty() {
        out.push('\n');
        let rows = run
            .compensations
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.compensates.clone().unwrap_or_default(),
                    s.status.clone(),
                    s.attempt.to_string(),
                    s.error.as_ref().map(step_error).unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["COMPENSATION", "FOR", "STATUS", "ATTEMPT", "ERROR"],
            rows,
        ));
    }
    out
}

pub(crate) const JOURNAL_HEADER: [&str; 6] = ["SEQ", "AT", "STEP", "ATTEMPT", "KIND", "REASON"];

fn journal_cells(entry: &JournalEntryBody) -> Vec<String> {
    vec![
        entry.seq.to_string(),
        entry.at.to_string(),
        entry.step.clone().unwrap_or_else(|| "-".to_owned()),
        entry.attempt.to_string(),
        entry.kind.clone(),
        entry.reason.clone().unwrap_or_default(),
    ]
}

pub(crate) fn journal_rows(entries: &[JournalEntryBody]) -> String {
    table(&JOURNAL_HEADER, entries.iter().map(journal_cells).collect())
}

/// The fixed widths of the journal's columns in `--follow`, where rows are printed as
/// they arrive (the last column is not padded).
const JOURNAL_WIDTHS: [usize; 5] = [5, 27, 20, 7, 16];

fn fixed_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (index, cell) in cells.iter().enumerate() {
        match JOURNAL_WIDTHS.get(index) {
            Some(width) => line.push_str(&format!("{cell:<width$}  ")),
            None => line.push_str(cell),
        }
    }
    line.trim_end().to_owned()
}

/// The header `--follow` prints once, above the journal lines.
pub(crate) fn journal_header_line() -> String {
    let cells: Vec<String> = JOURNAL_HEADER.iter().map(|h| (*h).to_owned()).collect();
    fixed_line(&cells)
}

/// One journal entry as `--follow` prints it.
pub(crate) fn journal_line(entry: &JournalEntryBody) -> String {
    fixed_line(&journal_cells(entry))
}

/// The line `--follow` ends with: `run ID STATUS[: REASON: message]`.
pub(crate) fn final_line(run: &RunBody) -> String {
    let mut line = format!("run {} {}", run.id, run.status.as_str());
    if let Some(reason) = &run.reason {
        line.push_str(&format!(": {reason}"));
    }
    if let Some(message) = run.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!(": {}", one_line(message)));
    }
    line
}

pub(crate) fn dead_letter_rows(entries: Vec<DeadLetterBody>) -> String {
    let rows = entries
        .into_iter()
        .map(|d| {
            vec![
                d.id,
                d.run_id,
                d.step,
                d.attempt.to_string(),
                d.reason,
                d.status.as_str().to_owned(),
                d.created_at.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "RUN", "STEP", "ATTEMPT", "REASON", "STATUS", "CREATED",
        ],
        rows,
    )
}

pub(crate) fn dead_letter_one(entry: DeadLetterBody) -> String {
    dead_letter_rows(vec![entry])
}

pub(crate) fn dead_letter_list_text(list: DeadLetterList) -> String {
    let mut out = dead_letter_rows(list.items);
    if let Some(next) = list.next {
        out.push_str(&format!("\nmore: --after {next}\n"));
    }
    out
}

/// `dlq show`: the entry and what was refused.
pub(crate) fn dead_letter_view(d: DeadLetterBody) -> String {
    let mut pairs = vec![
        ("id", d.id),
        ("run", d.run_id),
        ("session", d.session_id.unwrap_or_else(|| "-".to_owned())),
        ("step", d.step),
        ("attempt", d.attempt.to_string()),
        ("reason", d.reason),
        ("status", d.status.as_str().to_owned()),
        ("created", d.created_at.to_string()),
    ];
    if let Some(at) = d.resolved_at {
        pairs.push(("resolved", at.to_string()));
    }
    if let Some(by) = d.resolved_by {
        pairs.push(("resolved by", by));
    }
    let mut out = details(&pairs);
    out.push_str("summary\n");
    let summary = serde_json::to_string_pretty(&d.summary).unwrap_or_default();
    out.push_str(&summary);
    out.push('\n');
    out
}

pub(crate) fn schedule_rows(schedules: Vec<ScheduleBody>) -> String {
    let rows = schedules
        .into_iter()
        .map(|s| {
            vec![
                s.id,
                s.cron,
                s.definition,
                s.next_fire_at.to_string(),
                compact(&s.input),
            ]
        })
        .collect();
    table(&["ID", "CRON", "DEFINITION", "NEXT", "INPUT"], rows)
}

pub(crate) fn schedule_one(schedule: ScheduleBody) -> String {
    schedule_rows(vec![schedule])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;
    use crate::client::ClientArgs;
    use clap::Parser;
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Workflow(ClientArgs<WorkflowCommand>),
        Run(ClientArgs<RunCommand>),
        Dlq(ClientArgs<DlqCommand>),
        Schedule(ClientArgs<ScheduleCommand>),
    }

    fn parse(args: &[&str]) -> Result<Top, clap::Error> {
        Cli::try_parse_from(std::iter::once("cordon").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    fn run(args: &[&str]) -> RunCommand {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        match parse(&all).unwrap() {
            Top::Run(args) => args.command().clone(),
            other => panic!("not a run command: {other:?}"),
        }
    }

    fn run_error(args: &[&str]) -> clap::error::ErrorKind {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        parse(&all).unwrap_err().kind()
    }

    #[test]
    fn start_needs_exactly_one_target() {
        use clap::error::ErrorKind;
        let RunCommand::Start(start) = run(&[
            "start",
            "--workflow",
            "deploy",
            "--input",
            r#"{"env":"prod"}"#,
            "--deadline",
            "1h",
            "--idempotency-key",
            "k1",
            "--follow",
        ]) else {
            panic!("not start");
        };
        assert_eq!(start.workflow.as_deref(), Some("deploy"));
        assert_eq!(start.input, Some(json!({"env": "prod"})));
        assert_eq!(start.deadline.as_deref(), Some("1h"));
        assert_eq!(start.idempotency_key.as_deref(), Some("k1"));
        assert!(start.follow && !start.wait);

        let RunCommand::Start(start) = run(&["start", "--name", "agent-run", "--wait"]) else {
            panic!("not start");
        };
        assert_eq!(start.name.as_deref(), Some("agent-run"));
        assert!(start.wait);

        assert_eq!(run_error(&["start"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            run_error(&["start", "--workflow", "a", "--definition", "sha256:00"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            run_error(&[
                "start",
                "--name",
                "a",
                "--input",
                "{}",
                "--input-file",
                "x.json"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            run_error(&["start", "--name", "a", "--input", "{not json"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn run_subcommands_parse() {
        let RunCommand::List {
            status,
            workflow,
            limit,
            after,
            ..
        } = run(&[
            "list",
            "--status",
            "failed",
            "--workflow",
            "deploy",
            "--limit",
            "5",
            "--after",
            "run_1",
        ])
        else {
            panic!("not list");
        };
        assert_eq!(status, Some(RunStatus::Failed));
        assert_eq!(workflow.as_deref(), Some("deploy"));
        assert_eq!(limit, Some(5));
        assert_eq!(after.as_deref(), Some("run_1"));
        assert_eq!(
            run_error(&["list", "--status", "exploded"]),
            clap::error::ErrorKind::ValueValidation
        );

        let RunCommand::Cancel { id, reason, yes } =
            run(&["cancel", "run_1", "--reason", "no longer needed", "-y"])
        else {
            panic!("not cancel");
        };
        assert_eq!(
            (id.as_str(), reason.as_deref(), yes),
            ("run_1", Some("no longer needed"), true)
        );

        let RunCommand::Signal { event, payload, .. } =
            run(&["signal", "run_1", "ready", "--payload", "[1,2]"])
        else {
            panic!("not signal");
        };
        assert_eq!((event.as_str(), payload), ("ready", Some(json!([1, 2]))));

        let RunCommand::Approve {
            step,
            reject,
            comment,
            ..
        } = run(&[
            "approve",
            "run_1",
            "gate",
            "--reject",
            "--comment",
            "not now",
        ])
        else {
            panic!("not approve");
        };
        assert_eq!(
            (step.as_str(), reject, comment.as_deref()),
            ("gate", true, Some("not now"))
        );

        let RunCommand::Show { id, follow } = run(&["show", "run_1", "--follow"]) else {
            panic!("not show");
        };
        assert_eq!((id.as_str(), follow), ("run_1", true));
        assert!(matches!(run(&["pause", "run_1"]), RunCommand::Pause { .. }));
        assert!(matches!(
            run(&["resume", "run_1"]),
            RunCommand::Resume { .. }
        ));
        assert!(matches!(
            run(&["finish", "run_1", "succeeded", "--output", "{}"]),
            RunCommand::Finish { .. }
        ));
        assert_eq!(
            run_error(&["finish", "run_1", "done"]),
            clap::error::ErrorKind::InvalidValue
        );
    }

    #[test]
    fn step_calls_parse() {
        let RunCommand::Step(step) = run(&[
            "step",
            "run_1",
            "build",
            "fail",
            "--class",
            "policy",
            "--message",
            "denied",
            "--exit-code",
            "-1",
            "--json",
        ]) else {
            panic!("not step");
        };
        assert_eq!(step.action, StepAction::Fail);
        assert_eq!(step.class.as_deref(), Some("policy"));
        assert_eq!(step.exit_code, Some(-1));
        let RunCommand::Step(step) = run(&[
            "step",
            "run_1",
            "build",
            "start",
            "--heartbeat-timeout",
            "30s",
        ]) else {
            panic!("not step");
        };
        assert_eq!(
            (step.action.as_str(), step.heartbeat_timeout.as_deref()),
            ("start", Some("30s"))
        );
        assert_eq!(
            run_error(&["step", "run_1", "build", "explode"]),
            clap::error::ErrorKind::InvalidValue
        );
        assert_eq!(
            run_error(&["step", "run_1", "build", "fail", "--class", "oops"]),
            clap::error::ErrorKind::InvalidValue
        );
    }

    #[test]
    fn other_groups_parse() {
        let Top::Workflow(args) = parse(&["workflow", "apply", "-"]).unwrap() else {
            panic!("not workflow");
        };
        assert!(
            matches!(args.command(), WorkflowCommand::Apply { file } if file.as_os_str() == "-")
        );
        let Top::Dlq(args) = parse(&["dlq", "list", "--status", "all", "--run", "run_1"]).unwrap()
        else {
            panic!("not dlq");
        };
        assert!(matches!(
            args.command(),
            DlqCommand::List { status: Some(s), run: Some(r), .. } if s == "all" && r == "run_1"
        ));
        assert!(parse(&["dlq", "list", "--status", "closed"]).is_err());
        assert!(matches!(
            parse(&["dlq", "discard", "dlq_1", "--yes"]).unwrap(),
            Top::Dlq(args) if matches!(args.command(), DlqCommand::Discard { yes: true, .. })
        ));
        let Top::Schedule(args) = parse(&[
            "schedule",
            "create",
            "--workflow",
            "nightly",
            "--cron",
            "*/5 * * * *",
            "--input",
            r#"{"a":1}"#,
        ])
        .unwrap() else {
            panic!("not schedule");
        };
        assert!(matches!(
            args.command(),
            ScheduleCommand::Create { workflow, cron, input: Some(_) }
                if workflow == "nightly" && cron == "*/5 * * * *"
        ));
        assert!(parse(&["schedule", "create", "--cron", "@daily"]).is_err());
    }

    fn sample_run() -> RunBody {
        serde_json::from_value(json!({
            "id": "run_1",
            "name": "deploy",
            "definition": "sha256:abcd",
            "status": "failed",
            "reason": "STEP_FAILED",
            "message": "step `test` failed\nafter 3 attempts",
            "input": {"env": "prod"},
            "paused": false,
            "steps": [
                {"name": "build", "status": "succeeded", "attempt": 1, "output": {"ok": true}},
                {"name": "test", "status": "failed", "attempt": 3,
                 "error": {"class": "error", "reason": "EXIT_NONZERO", "message": "tests failed", "exit_code": 1}},
                {"name": "push", "status": "blocked", "attempt": 1, "dead_letter": "dlq_9",
                 "error": {"class": "policy", "reason": "EGRESS_DENIED", "message": ""}}
            ],
            "compensations": [
                {"name": "undo-build", "status": "succeeded", "attempt": 1, "compensates": "build"}
            ],
            "created_by": "key_1",
            "created_at": "2026-01-02T03:04:05Z",
            "updated_at": "2026-01-02T03:05:00Z",
            "journal_seq": 7
        }))
        .unwrap()
    }

    #[test]
    fn a_run_renders_with_its_steps_and_compensations() {
        let run = sample_run();
        let view = run_view(&run);
        let expected = "\
id          run_1
name        deploy
status      failed (STEP_FAILED: step `test` failed after 3 attempts)
definition  sha256:abcd
session     -
created by  key_1
created     2026-01-02T03:04:05Z
updated     2026-01-02T03:05:00Z
input       {\"env\":\"prod\"}

STEP   STATUS     ATTEMPT  ERROR                                      DEAD LETTER
build  succeeded  1
test   failed     3        error EXIT_NONZERO: tests failed (exit 1)
push   blocked    1        policy EGRESS_DENIED                       dlq_9

COMPENSATION  FOR    STATUS     ATTEMPT  ERROR
undo-build    build  succeeded  1
";
        assert_eq!(view, expected);
        assert_eq!(
            run_one(run.clone()),
            "\
ID     NAME    STATUS  STEPS  REASON       SESSION  CREATED
run_1  deploy  failed  1/3    STEP_FAILED           2026-01-02T03:04:05Z
"
        );
        assert_eq!(
            final_line(&run),
            "run run_1 failed: STEP_FAILED: step `test` failed after 3 attempts"
        );
    }

    #[test]
    fn paused_and_list_pages_show() {
        let mut run = sample_run();
        run.status = RunStatus::Waiting;
        run.paused = true;
        run.reason = None;
        run.message = None;
        assert!(run_view(&run).contains("status      waiting\npaused      yes\n"));
        let text = run_list_text(RunList {
            items: vec![run],
            next: Some("run_1".into()),
        });
        assert!(text.contains("waiting (paused)"));
        assert!(text.ends_with("\nmore: --after run_1\n"));
    }

    #[test]
    fn journal_renders_as_a_table_and_as_lines() {
        let entries: Vec<JournalEntryBody> = serde_json::from_value(json!([
            {"seq": 1, "attempt": 0, "kind": "run_started", "detail": {}, "at": "2026-01-02T03:04:05Z"},
            {"seq": 2, "step": "build", "attempt": 1, "kind": "failed", "reason": "EXIT_NONZERO",
             "detail": {"message": "x"}, "at": "2026-01-02T03:04:06.5Z"}
        ]))
        .unwrap();
        assert_eq!(
            journal_rows(&entries),
            "\
SEQ  AT                      STEP   ATTEMPT  KIND         REASON
1    2026-01-02T03:04:05Z    -      0        run_started
2    2026-01-02T03:04:06.5Z  build  1        failed       EXIT_NONZERO
"
        );
        assert_eq!(
            journal_header_line(),
            "SEQ    AT                           STEP                  ATTEMPT  KIND              REASON"
        );
        assert_eq!(
            journal_line(&entries[1]),
            "2      2026-01-02T03:04:06.5Z       build                 1        failed            EXIT_NONZERO"
        );
        assert_eq!(
            journal_line(&entries[0]),
            "1      2026-01-02T03:04:05Z         -                     0        run_started"
        );
    }

    #[test]
    fn dead_letters_and_schedules_render() {
        let entry: DeadLetterBody = serde_json::from_value(json!({
            "id": "dlq_1", "run_id": "run_1", "step": "push", "attempt": 2,
            "reason": "EGRESS_DENIED", "summary": {"host": "example.com"},
            "status": "open", "created_at": "2026-01-02T03:04:05Z"
        }))
        .unwrap();
        assert_eq!(
            dead_letter_view(entry.clone()),
            "\
id       dlq_1
run      run_1
session  -
step     push
attempt  2
reason   EGRESS_DENIED
status   open
created  2026-01-02T03:04:05Z
summary
{
  \"host\": \"example.com\"
}
"
        );
        assert!(dead_letter_one(entry).starts_with("ID     RUN    STEP  ATTEMPT  REASON"));
        let schedule: ScheduleBody = serde_json::from_value(json!({
            "id": "sch_1", "definition": "sha256:ab", "cron": "@daily", "input": {},
            "next_fire_at": "2026-01-03T00:00:00Z", "created_by": "key_1",
            "created_at": "2026-01-02T03:04:05Z"
        }))
        .unwrap();
        assert_eq!(
            schedule_one(schedule),
            "\
ID     CRON    DEFINITION  NEXT                  INPUT
sch_1  @daily  sha256:ab   2026-01-03T00:00:00Z  {}
"
        );
    }

    #[test]
    fn long_values_are_cut() {
        let long = json!({"text": "x".repeat(500)});
        let text = compact(&long);
        assert_eq!(text.chars().count(), VALUE_WIDTH + 3);
        assert!(text.ends_with("..."));
        assert_eq!(compact(&json!([1])), "[1]");
    }
}
