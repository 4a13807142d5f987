//! `cordon`: one binary for the server and its clients.
//!
//! Data goes to stdout (tables, or JSON with `--json`); diagnostics and errors go to
//! stderr, errors with their reason code. Exit codes are listed in [`exit`].

mod bench;
mod client;
mod exit;
mod serve;

use clap::{Parser, Subcommand};

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
    Serve(serve::ServeArgs),
    /// Manage tenants (system admin key).
    Tenant(client::ClientArgs<client::TenantCommand>),
    /// Manage API keys.
    Key(client::ClientArgs<client::KeyCommand>),
    /// Create, inspect and drive sessions.
    Session(client::ClientArgs<client::SessionCommand>),
    /// Measure the server (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
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
            Command::Serve(args) => serve::run(args).await,
            Command::Tenant(args) => client::run_tenant(args).await,
            Command::Key(args) => client::run_key(args).await,
            Command::Session(args) => client::run_session(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
