//! `cordon bench sessions`: drives a server started in this process over loopback with
//! N concurrent HTTP clients and prints throughput and latency per phase and backend,
//! next to the physical baseline: durable single-row inserts into the same SQLite file
//! through the same writer and batching. Then it stores many idle sessions and reports
//! the process's resident memory before and after. See docs/benchmarks.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cordon_core::{KeyId, NewSession, SessionId, TenantId, Timestamp};
use cordon_store::Store;
use cordon_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

use crate::exit;
use crate::serve::{self, SandboxMode, SandboxSettings, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, clap::Subcommand)]
enum BenchTarget {
    /// Session creates and full lifecycles through the HTTP API.
    Sessions(SessionsArgs),
    /// Sandbox start-up, exec round trips and density, next to bubblewrap (needs root).
    Sandboxes(crate::bench_sandbox::SandboxArgs),
    /// The egress gateway next to squid and direct connections (needs squid for the
    /// comparison).
    Egress(crate::bench_egress::EgressArgs),
    /// Workspace checkpoints and restores next to git and tar, evidence appends and
    /// inclusion proof verification.
    Artifacts(crate::bench_artifacts::ArtifactsArgs),
    /// Workflow runs of three no-op steps (engine overhead only) on SQLite and
    /// PostgreSQL, next to DBOS on the same PostgreSQL (needs a Python with `dbos`).
    Workflows(crate::bench_workflows::WorkflowsArgs),
    /// Recording telemetry facts and computing the SRE metrics, SLOs and the weekly
    /// report over a week of them, on SQLite and PostgreSQL.
    Telemetry(crate::bench_telemetry::TelemetryArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, clap::Args)]
struct SessionsArgs {
    /// Concurrent HTTP clients (each one request at a time, keep-alive).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Which backends to measure.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendChoice,
    /// A PostgreSQL URL with the right to create databases; the benchmark creates a
    /// fresh database there and drops it afterwards.
    #[arg(
        long,
        env = "CORDON_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Idle sessions to store for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    idle_sessions: usize,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let result = match args.target {
        BenchTarget::Sessions(args) => sessions(args).await,
        BenchTarget::Sandboxes(args) => crate::bench_sandbox::run(args).await,
        BenchTarget::Egress(args) => crate::bench_egress::run(args).await,
        BenchTarget::Artifacts(args) => crate::bench_artifacts::run(args).await,
        BenchTarget::Workflows(args) => crate::bench_workflows::run(args).await,
        BenchTarget::Telemetry(args) => crate::bench_telemetry::run(args).await,
    };
    match result {
        Ok(()) => exit::code(exit::OK),
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code(exit::INTERNAL)
        }
    }
}

/// Latencies of one phase, in microseconds, and how many requests failed.
#[derive(Debug, Default)]
struct Samples {
    latencies_us: Vec<u32>,
    errors: u64,
    operations: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.operations += other.operations;
    }

    fn percentile_ms(&mut self, quantile: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted sample"
        )]
        let index = ((self.latencies_us.len() - 1) as f64 * quantile).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

struct Row {
    backend: &'static str,
    phase: &'static str,
    unit: &'static str,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
    errors: u64,
    note: String,
}

fn print_header(args: &SessionsArgs) {
    let build = if cfg!(debug_assertions) {
        "debug build: figures are not representative, use --release"
    } else {
        "release build"
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "cordon bench sessions: {} clients, {} s per phase, {} cores, {}",
        args.clients, args.seconds, cores, build
    );
    println!("sqlite: WAL, synchronous=FULL (fsync per commit), group commit of up to 256 writes");
    println!();
    println!(
        "{:<9} {:<16} {:>10} {:<12} {:>8} {:>8} {:>9} {:>7}  notes",
        "backend", "phase", "rate", "unit", "p50 ms", "p99 ms", "requests", "errors"
    );
}

fn print_row(row: &Row) {
    println!(
        "{:<9} {:<16} {:>10.0} {:<12} {:>8.2} {:>8.2} {:>9} {:>7}  {}",
        row.backend,
        row.phase,
        row.rate,
        row.unit,
        row.p50_ms,
        row.p99_ms,
        row.requests,
        row.errors,
        row.note
    );
}

async fn sessions(args: SessionsArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds == 0 {
        bail!("--clients and --seconds must be positive");
    }
    print_header(&args);
    let mut memory_notes = Vec::new();
    if matches!(args.backend, BackendChoice::Sqlite | BackendChoice::Both) {
        let dir = tempfile::Builder::new().prefix("cordon-bench-").tempdir()?;
        let config = config(dir.path().to_path_buf(), None);
        let (rows, note) =
            measure_backend("sqlite", config, &args, Some(dir.path().join("cordon.db"))).await?;
        memory_notes.push(note);
        let rate_of = |phase: &str| {
            rows.iter()
                .find(|r| r.phase == phase)
                .map_or(0.0, |r| r.rate)
        };
        for row in &rows {
            print_row(row);
        }
        let (create, raw, raw_max) = (
            rate_of("create"),
            rate_of("raw-insert"),
            rate_of("raw-insert-max"),
        );
        if raw > 0.0 && raw_max > 0.0 {
            println!(
                "sqlite    API creates = {:.0}% of raw durable inserts at the same batching, {:.0}% of the maximum",
                100.0 * create / raw,
                100.0 * create / raw_max
            );
        }
    }
    if matches!(args.backend, BackendChoice::Postgres | BackendChoice::Both) {
        let database = BenchDatabase::create(&args.database_url).await?;
        let dir = tempfile::Builder::new().prefix("cordon-bench-").tempdir()?;
        let config = config(dir.path().to_path_buf(), Some(database.url.clone()));
        let outcome = measure_backend("postgres", config, &args, None).await;
        database.drop_database().await;
        let (rows, note) = outcome?;
        memory_notes.push(note);
        for row in &rows {
            print_row(row);
        }
    }
    println!();
    for note in memory_notes {
        println!("{note}");
    }
    Ok(())
}

const BENCH_TOKEN: &str =
    "cordon_bench_0000000000000000000000000000000000000000000000000000000000000000";

fn config(data_dir: PathBuf, database_url: Option<String>) -> ServerConfig {
    ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir,
        database_url,
        bootstrap_token: Some(BENCH_TOKEN.to_owned()),
        // The session benchmark measures the control plane alone.
        sandbox: SandboxSettings {
            mode: SandboxMode::Off,
            ..SandboxSettings::default()
        },
        egress: crate::serve::EgressSettings {
            mode: crate::serve::EgressMode::Off,
            ..crate::serve::EgressSettings::default()
        },
        artifacts: crate::artifacts::ArtifactSettings::default(),
        telemetry: crate::serve::TelemetrySettings::default(),
    }
}

async fn measure_backend(
    backend: &'static str,
    config: ServerConfig,
    args: &SessionsArgs,
    sqlite_path: Option<PathBuf>,
) -> anyhow::Result<(Vec<Row>, String)> {
    let server = serve::start(config).await?;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .context("http client")?;
    let duration = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();

    // Warm up connections, caches and the JIT-free but cold paths.
    let _ = run_clients(
        &http,
        &base,
        args.clients,
        Duration::from_secs(1),
        Workload::Create,
    )
    .await;

    let stats_before = server.sqlite.as_ref().map(SqliteStore::write_stats);
    let (samples, elapsed) =
        run_clients(&http, &base, args.clients, duration, Workload::Create).await;
    rows.push(row(backend, "create", "creates/s", samples, elapsed));
    // How many writes each commit carried while the API was creating sessions: the
    // baseline below is measured with the same batching.
    let create_batch = match (
        stats_before,
        server.sqlite.as_ref().map(SqliteStore::write_stats),
    ) {
        (Some(before), Some(after)) if after.commits > before.commits => {
            #[allow(clippy::cast_precision_loss, reason = "a mean for display")]
            let mean = (after.jobs - before.jobs) as f64 / (after.commits - before.commits) as f64;
            Some(mean)
        }
        _ => None,
    };
    let (samples, elapsed) =
        run_clients(&http, &base, args.clients, duration, Workload::Lifecycle).await;
    rows.push(row(
        backend,
        "full-lifecycle",
        "sessions/s",
        samples,
        elapsed,
    ));

    let mut note = String::new();
    if args.idle_sessions > 0 {
        note = idle_memory(backend, &server.store, args.idle_sessions).await?;
        note.push_str(&format!(
            "\n  leases cached by the node after the run: {}",
            server.control.cached_leases()
        ));
    }
    server.stop().await?;

    if let (Some(path), Some(mean_batch)) = (sqlite_path, create_batch) {
        // The same writer, capped at the API's mean batch: with more inserters waiting
        // than that, every commit carries exactly that many rows.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a small positive count"
        )]
        let same_batch = (mean_batch.round() as usize).max(1);
        let (samples, elapsed, batch) =
            raw_inserts(path.clone(), args.clients, same_batch, duration).await?;
        rows.push(Row {
            note: format!(
                "{} inserters, {batch:.1} rows/commit (API create phase: {mean_batch:.1})",
                args.clients
            ),
            ..row(backend, "raw-insert", "inserts/s", samples, elapsed)
        });
        let max_batch = SqliteOptions::new(&path).max_batch;
        let (samples, elapsed, batch) =
            raw_inserts(path, args.clients, max_batch, duration).await?;
        rows.push(Row {
            note: format!("{} inserters, {batch:.1} rows/commit", args.clients),
            ..row(backend, "raw-insert-max", "inserts/s", samples, elapsed)
        });
    }
    Ok((rows, note))
}

#[allow(clippy::cast_precision_loss, reason = "rates for display")]
fn row(
    backend: &'static str,
    phase: &'static str,
    unit: &'static str,
    mut samples: Samples,
    elapsed: Duration,
) -> Row {
    let operations = samples.operations;
    Row {
        backend,
        phase,
        unit,
        rate: operations as f64 / elapsed.as_secs_f64(),
        p50_ms: samples.percentile_ms(0.50),
        p99_ms: samples.percentile_ms(0.99),
        requests: samples.latencies_us.len(),
        errors: samples.errors,
        note: String::new(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Workload {
    /// POST /v1/sessions; one operation per request.
    Create,
    /// create, activate, checkpoint, resume, suspend, resume, close: one operation per
    /// completed session, latencies per request.
    Lifecycle,
}

const LIFECYCLE: [&str; 6] = [
    "activate",
    "checkpoint",
    "resume",
    "suspend",
    "resume",
    "close",
];

async fn run_clients(
    http: &reqwest::Client,
    base: &str,
    clients: usize,
    duration: Duration,
    workload: Workload,
) -> (Samples, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, base) = (http.clone(), base.to_owned());
        tasks.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let Some(id) = timed(
                    &http,
                    &format!("{base}/v1/sessions"),
                    Some(create_body()),
                    &mut samples,
                )
                .await
                else {
                    continue;
                };
                match workload {
                    Workload::Create => samples.operations += 1,
                    Workload::Lifecycle => {
                        let mut completed = true;
                        for action in LIFECYCLE {
                            let url = format!("{base}/v1/sessions/{id}/{action}");
                            if timed(&http, &url, None, &mut samples).await.is_none() {
                                completed = false;
                                break;
                            }
                        }
                        if completed {
                            samples.operations += 1;
                        }
                    }
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(result) = tasks.join_next().await {
        if let Ok(samples) = result {
            all.merge(samples);
        }
    }
    (all, started.elapsed())
}

fn create_body() -> serde_json::Value {
    json!({"workload_class": "bench", "environment": "dev", "labels": {"suite": "bench"}})
}

/// Sends one POST, records its latency, and returns the session id on success.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    body: Option<serde_json::Value>,
    samples: &mut Samples,
) -> Option<String> {
    let started = Instant::now();
    let mut request = http.post(url).bearer_auth(BENCH_TOKEN);
    if let Some(body) = &body {
        request = request.json(body);
    }
    let outcome = match request.send().await {
        Ok(response) if response.status().is_success() => {
            response.json::<serde_json::Value>().await.ok()
        }
        _ => None,
    };
    let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    samples.latencies_us.push(micros);
    match outcome.and_then(|value| {
        value
            .get("id")
            .and_then(|id| id.as_str().map(str::to_owned))
    }) {
        Some(id) => Some(id),
        None => {
            samples.errors += 1;
            None
        }
    }
}

/// The physical baseline: single-row durable inserts into the same SQLite file, from
/// `clients` concurrent tasks, through the same writer thread, at most `max_batch` a commit.
async fn raw_inserts(
    path: PathBuf,
    clients: usize,
    max_batch: usize,
    duration: Duration,
) -> anyhow::Result<(Samples, Duration, f64)> {
    let store = SqliteStore::open(SqliteOptions {
        max_batch,
        ..SqliteOptions::new(path)
    })?;
    store.prepare_durable_probe().await?;
    let before = store.write_stats();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let store = store.clone();
        tasks.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let begun = Instant::now();
                let outcome = store.durable_probe_insert(vec![0u8; 200]).await;
                samples
                    .latencies_us
                    .push(u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX));
                match outcome {
                    Ok(()) => samples.operations += 1,
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(result) = tasks.join_next().await {
        if let Ok(samples) = result {
            all.merge(samples);
        }
    }
    let elapsed = started.elapsed();
    let after = store.write_stats();
    #[allow(clippy::cast_precision_loss, reason = "a mean for display")]
    let batch = (after.jobs - before.jobs) as f64 / (after.commits - before.commits).max(1) as f64;
    Ok((all, elapsed, batch))
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// Stores `count` sessions straight through the store (they are idle: nobody touches
/// them), then reports the process's RSS before and after.
async fn idle_memory(
    backend: &str,
    store: &Arc<dyn Store>,
    count: usize,
) -> anyhow::Result<String> {
    let before = resident_mib();
    let tenant_id = store
        .list_tenants()
        .await?
        .first()
        .map(|tenant| tenant.id)
        .unwrap_or_else(TenantId::generate);
    let owner = KeyId::generate();
    let started = Instant::now();
    let writers = 64;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for _ in (writer..count).step_by(writers) {
                let session = NewSession {
                    id: SessionId::generate(),
                    tenant_id,
                    owner,
                    workload_class: "idle".into(),
                    environment: "dev".into(),
                    labels: [("suite".to_owned(), "bench".to_owned())].into(),
                    policy_version: "bench".into(),
                    created_at: Timestamp::now(),
                };
                store.create_session(&session, "bench").await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let filled = started.elapsed();
    // Touch the read paths an operator would: a metrics scrape and a page of sessions.
    let _ = store.count_sessions_by_phase().await?;
    let after = resident_mib();
    Ok(format!(
        "memory ({backend}): RSS {before:.1} MiB before, {after:.1} MiB after storing {count} idle sessions \
         (+{:.1} MiB; filled in {:.1} s; the process holds the benchmark's clients too)",
        after - before,
        filled.as_secs_f64()
    ))
}

/// A throwaway PostgreSQL database for one benchmark run (the artifacts benchmark
/// uses it too).
pub(crate) struct BenchDatabase {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("the database URL has no scheme")? + 3;
    let (base, query) = match url.find('?') {
        Some(index) => (&url[..index], &url[index..]),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{database}{query}", &base[..authority_end]))
}

impl BenchDatabase {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!("cordon_bench_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {admin_url} (set --database-url)"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(admin_url, &name)?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    pub(crate) async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
            {
                eprintln!("warning: could not drop {}: {error}", self.name);
            }
        }
    }
}
