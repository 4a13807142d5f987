//! `cordon`: one binary for the server and its clients.
//!
//! Data goes to stdout (tables, or JSON with `--json`); diagnostics and errors go to
//! stderr, errors with their reason code. Exit codes are listed in [`exit`].

mod artifacts;
mod artifacts_client;
mod bench;
mod bench_artifacts;
mod bench_egress;
mod bench_sandbox;
mod bench_telemetry;
mod bench_workflows;
mod client;
mod egress;
mod egress_client;
mod exit;
mod otlp;
mod report;
mod sandbox_client;
mod serve;
mod verify;
mod workflow;
mod workflow_client;

use clap::{Parser, Subcommand};

/// The hidden subcommand the server runs to build a sandbox (see `cordon_sandbox::launch`).
pub const SANDBOX_LAUNCH: &str = "sandbox-launch";

#[derive(Debug, Parser)]
#[command(
    name = "cordon",
    version,
    about = "Control plane for AI-agent sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Manage tenants (system admin key).
    Tenant(client::ClientArgs<client::TenantCommand>),
    /// Manage API keys.
    Key(client::ClientArgs<client::KeyCommand>),
    /// Create, inspect and drive sessions.
    Session(client::ClientArgs<client::SessionCommand>),
    /// Secrets for credential injection (admin key); values are read from stdin.
    Secret(client::ClientArgs<egress_client::SecretCommand>),
    /// Lend secrets to sessions: create, list, renew, revoke credential leases.
    Lease(client::ClientArgs<egress_client::LeaseCommand>),
    /// The tenant's egress policy and the gateway's decisions.
    Egress(client::ClientArgs<egress_client::EgressCommand>),
    /// Run a command in a session's sandbox: `cordon exec SESSION -- PROGRAM ARGS...`.
    /// Streams its output and exits with its exit code.
    Exec(sandbox_client::ExecArgs),
    /// Move files in and out of a session's /workspace.
    Files(client::ClientArgs<sandbox_client::FilesCommand>),
    /// List and kill the processes of a session's sandbox.
    Process(client::ClientArgs<sandbox_client::ProcessCommand>),
    /// Snapshot a session's workspace into a new version and move the session to
    /// `checkpointed`: `cordon checkpoint SESSION [--summary S] [--reason R]`.
    Checkpoint(artifacts_client::CheckpointArgs),
    /// A session's workspace versions: list, show, diff, download, upload, restore, fork.
    Version(client::ClientArgs<artifacts_client::VersionCommand>),
    /// The tenant's evidence log: entries, signed checkpoints, proofs, export and
    /// offline verification.
    Evidence(client::ClientArgs<artifacts_client::EvidenceCommand>),
    /// Signed releases: promote a version, list, show, download, verify offline.
    Release(client::ClientArgs<artifacts_client::ReleaseCommand>),
    /// Durable workflow definitions: apply, list, show.
    Workflow(client::ClientArgs<workflow::WorkflowCommand>),
    /// Workflow runs: start, show (or follow), list, cancel, pause, resume, signal,
    /// approve, and the durable-step API for shell agents.
    Run(client::ClientArgs<workflow::RunCommand>),
    /// The dead-letter queue of policy-blocked steps: list, show, redrive, discard.
    Dlq(client::ClientArgs<workflow::DlqCommand>),
    /// Cron schedules that start workflow runs.
    Schedule(client::ClientArgs<workflow::ScheduleCommand>),
    /// The weekly report (cost, risk, delivery) as HTML, Markdown or JSON.
    Report(client::ClientArgs<report::ReportCommand>),
    /// The SRE metrics and SLOs (docs/metrics.md).
    Metrics(client::ClientArgs<report::MetricsCommand>),
    /// Measure the server (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    // The sandbox launcher must run before any thread exists (it forks into new
    // namespaces), so it is dispatched before clap and the async runtime.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(SANDBOX_LAUNCH)) {
        let Some(dir) = args.next() else {
            eprintln!("usage: cordon {SANDBOX_LAUNCH} DIR");
            return exit::USAGE.into();
        };
        let code = cordon_sandbox::launch::main(std::path::Path::new(&dir));
        return u8::try_from(code).unwrap_or(1).into();
    }
    // reqwest is built with `rustls-no-provider` (cordon-artifacts asks for it, to keep
    // TLS on ring), so every HTTP client (the API client commands, the S3 blob store)
    // needs a process-wide crypto provider installed before it is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::INTERNAL.into();
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Tenant(args) => client::run_tenant(args).await,
            Command::Key(args) => client::run_key(args).await,
            Command::Session(args) => client::run_session(args).await,
            Command::Secret(args) => egress_client::run_secret(args).await,
            Command::Lease(args) => egress_client::run_lease(args).await,
            Command::Egress(args) => egress_client::run_egress(args).await,
            Command::Exec(args) => sandbox_client::run_exec(args).await,
            Command::Files(args) => sandbox_client::run_files(args).await,
            Command::Process(args) => sandbox_client::run_process(args).await,
            Command::Checkpoint(args) => artifacts_client::run_checkpoint(args).await,
            Command::Version(args) => artifacts_client::run_version(args).await,
            Command::Evidence(args) => artifacts_client::run_evidence(args).await,
            Command::Release(args) => artifacts_client::run_release(args).await,
            Command::Workflow(args) => workflow_client::run_workflow(args).await,
            Command::Run(args) => workflow_client::run_run(args).await,
            Command::Dlq(args) => workflow_client::run_dlq(args).await,
            Command::Schedule(args) => workflow_client::run_schedule(args).await,
            Command::Report(args) => report::run_report(args).await,
            Command::Metrics(args) => report::run_metrics(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
