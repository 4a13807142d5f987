//! `cordon bench workflows`: the engine's own overhead. N runs of three sequential
//! `noop` steps (each step journaled as started and completed, like any tool step, with
//! no tool behind it) on SQLite and on PostgreSQL, and beside them the same shape on
//! DBOS (the `dbos` package from PyPI) against the same PostgreSQL server, run by
//! `bench/dbos/bench.py` when a Python with DBOS is given.
//!
//! Two figures per backend: throughput (runs started by `concurrency` tasks, each
//! starting its next run when its last one finished, until N finished) with each run's
//! latency, and the overhead per step (runs one at a time, latency / 3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use cordon_core::{
    Run, RunId, RunStatus, SessionId, Tenant, TenantId, Timestamp, WorkflowDefinition,
};
use cordon_store::Store;
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_store_sqlite::{SqliteOptions, SqliteStore};
use cordon_workflow::model::SessionTemplate;
use cordon_workflow::state::{Outcome, StepError};
use cordon_workflow::{Engine, EngineOptions, Heartbeat, StartRun, StepRequest, StepRunner};
use serde_json::{Value, json};

use crate::bench::BenchDatabase;
use crate::bench_sandbox::Timings;

#[derive(Debug, clap::Args)]
pub struct WorkflowsArgs {
    /// Runs measured for throughput, per backend.
    #[arg(long, default_value_t = 5_000)]
    runs: usize,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Runs measured one at a time for the per-step overhead.
    #[arg(long, default_value_t = 300)]
    sequential: usize,
    /// A PostgreSQL URL with the right to create databases (fresh database, dropped
    /// afterwards); empty to skip PostgreSQL and DBOS.
    #[arg(
        long,
        env = "CORDON_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// A Python interpreter with `dbos` installed (`bench/dbos/setup.sh` makes one);
    /// without it the DBOS comparison is skipped.
    #[arg(long)]
    dbos_python: Option<PathBuf>,
    /// The DBOS benchmark script.
    #[arg(long, default_value = "bench/dbos/bench.py")]
    dbos_script: PathBuf,
    /// Concurrency for DBOS (its best on this machine may differ from ours).
    #[arg(long)]
    dbos_concurrency: Option<usize>,
}

/// Never called: the benchmark's steps are all `noop`, which the engine runs itself.
#[derive(Debug)]
struct NoRunner;

#[async_trait]
impl StepRunner for NoRunner {
    async fn run(&self, _: StepRequest, _: Heartbeat) -> Outcome {
        Outcome::Succeeded(Value::Null)
    }
    async fn create_session(
        &self,
        _: TenantId,
        _: &str,
        _: RunId,
        _: &SessionTemplate,
    ) -> Result<SessionId, StepError> {
        Err(StepError {
            class: cordon_workflow::FailureClass::Error,
            reason: "STEP_FAILED".to_owned(),
            message: "the benchmark has no sessions".to_owned(),
            exit_code: None,
        })
    }
    async fn close_session(&self, _: TenantId, _: SessionId, _: &Run) {}
}

const DEFINITION: &str = r#"
name: bench-three-noops
steps:
  - {name: one, kind: noop, output: {n: 1}}
  - {name: two, kind: noop, needs: [one], output: {n: 2}}
  - {name: three, kind: noop, needs: [two], output: {n: 3}}
"#;

struct Figures {
    backend: &'static str,
    runs: usize,
    seconds: f64,
    run_latency: Timings,
    step_overhead: Timings,
}

impl Figures {
    fn runs_per_s(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a count of runs")]
        let runs = self.runs as f64;
        runs / self.seconds
    }
}

pub async fn run(args: WorkflowsArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let store = SqliteStore::open(SqliteOptions::new(temp.path().join("cordon.db")))
        .context("cannot open the SQLite store")?;
    rows.push(measure("sqlite", Arc::new(store), &args).await?);
    let mut dbos = None;
    if !args.database_url.is_empty() {
        let database = BenchDatabase::create(&args.database_url).await?;
        let outcome = async {
            let store = PostgresStore::connect(PostgresOptions::new(database.url.clone()))
                .await
                .context("cannot open the PostgreSQL store")?;
            let figures = measure("postgres", Arc::new(store.clone()), &args).await;
            store.close().await;
            figures
        }
        .await;
        database.drop_database().await;
        rows.push(outcome?);
        if let Some(python) = &args.dbos_python {
            dbos = Some(run_dbos(python, &args).await?);
        }
    }
    println!();
    println!(
        "{:<9} {:>7} {:>8} {:>9} {:>12} {:>12} {:>14} {:>14}",
        "engine",
        "runs",
        "seconds",
        "runs/s",
        "run p50 ms",
        "run p99 ms",
        "step p50 ms",
        "step p99 ms"
    );
    for row in &mut rows {
        println!(
            "{:<9} {:>7} {:>8.2} {:>9.0} {:>12.2} {:>12.2} {:>14.3} {:>14.3}",
            row.backend,
            row.runs,
            row.seconds,
            row.runs_per_s(),
            row.run_latency.quantile(0.5),
            row.run_latency.quantile(0.99),
            row.step_overhead.quantile(0.5),
            row.step_overhead.quantile(0.99),
        );
    }
    if let Some(d) = &dbos {
        let get = |path: &[&str]| {
            path.iter()
                .try_fold(d, |v, k| v.get(*k))
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        println!(
            "{:<9} {:>7} {:>8.2} {:>9.0} {:>12.2} {:>12.2} {:>14.3} {:>14.3}",
            "dbos",
            get(&["runs"]),
            get(&["seconds"]),
            get(&["runs_per_s"]),
            get(&["run_latency_ms", "p50"]),
            get(&["run_latency_ms", "p99"]),
            get(&["step_overhead_ms", "p50"]),
            get(&["step_overhead_ms", "p99"]),
        );
        if let Some(pg) = rows.iter().find(|r| r.backend == "postgres") {
            println!(
                "\ncordon on PostgreSQL / DBOS on the same PostgreSQL: {:.2}x the throughput",
                pg.runs_per_s() / get(&["runs_per_s"])
            );
        }
    }
    drop(temp);
    Ok(())
}

async fn measure(
    backend: &'static str,
    store: Arc<dyn Store>,
    args: &WorkflowsArgs,
) -> anyhow::Result<Figures> {
    let tenant = Tenant {
        id: TenantId::generate(),
        name: format!("bench-{}", uuid::Uuid::now_v7().simple()),
        created_at: Timestamp::now(),
    };
    store.create_tenant(&tenant).await?;
    let parsed =
        cordon_workflow::definition::parse(DEFINITION).map_err(|e| anyhow::anyhow!("{e}"))?;
    let definition = store
        .put_workflow_definition(&WorkflowDefinition {
            tenant_id: tenant.id,
            digest: cordon_workflow::definition::digest(&parsed),
            name: parsed.name.clone(),
            document: cordon_workflow::definition::canonical_json(&parsed),
            created_by: "bench".to_owned(),
            created_at: Timestamp::now(),
        })
        .await?;
    let engine = Engine::new(
        Arc::clone(&store),
        Arc::new(NoRunner),
        EngineOptions::new(format!("bench-{backend}")),
    );
    let start = |engine: Engine, definition: WorkflowDefinition| {
        one_run(engine, definition, Arc::clone(&store))
    };

    // Warm-up.
    for _ in 0..20 {
        start(engine.clone(), definition.clone()).await?;
    }
    // Overhead per step: one run at a time.
    let mut step_overhead = Timings::default();
    for _ in 0..args.sequential {
        let elapsed = start(engine.clone(), definition.clone()).await?;
        step_overhead.push(elapsed / 3);
    }
    // Throughput: `concurrency` tasks, each starting its next run when its last ended.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let engine = engine.clone();
        let definition = definition.clone();
        let store = Arc::clone(&store);
        let next = Arc::clone(&next);
        let total = args.runs;
        tasks.spawn(async move {
            let mut latencies = Timings::default();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                latencies
                    .push(one_run(engine.clone(), definition.clone(), Arc::clone(&store)).await?);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut run_latency = Timings::default();
    while let Some(joined) = tasks.join_next().await {
        run_latency.extend(joined??);
    }
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{backend}: {} runs in {seconds:.2} s ({} runs in flight)",
        args.runs, args.concurrency
    );
    Ok(Figures {
        backend,
        runs: args.runs,
        seconds,
        run_latency,
        step_overhead,
    })
}

async fn run_dbos(python: &PathBuf, args: &WorkflowsArgs) -> anyhow::Result<Value> {
    let database = BenchDatabase::create(&args.database_url).await?;
    let output = tokio::process::Command::new(python)
        .arg(&args.dbos_script)
        .arg("--database-url")
        .arg(&database.url)
        .arg("--runs")
        .arg(args.runs.to_string())
        .arg("--concurrency")
        .arg(
            args.dbos_concurrency
                .unwrap_or(args.concurrency)
                .to_string(),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .await;
    database.drop_database().await;
    let output = output.context("cannot run the DBOS benchmark")?;
    anyhow::ensure!(
        output.status.success(),
        "the DBOS benchmark failed: {}",
        output.status
    );
    serde_json::from_slice(&output.stdout).context("the DBOS benchmark printed no JSON")
}

/// Starts one run and waits until it finished; returns how long that took.
async fn one_run(
    engine: Engine,
    definition: WorkflowDefinition,
    store: Arc<dyn Store>,
) -> anyhow::Result<Duration> {
    let mut finished = engine.subscribe_finished();
    let began = Instant::now();
    let (run, _) = engine
        .start(StartRun {
            tenant_id: definition.tenant_id,
            definition: Some(definition),
            name: None,
            session_id: None,
            input: json!({}),
            idempotency_key: None,
            principal: "bench".to_owned(),
            deadline: None,
        })
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), finished.recv()).await {
            Ok(Ok((id, status))) if id == run.id => {
                anyhow::ensure!(status == RunStatus::Succeeded, "run {id} ended {status:?}");
                return Ok(began.elapsed());
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                // Missed notices: ask the store.
                let stored = store.get_run(run.tenant_id, run.id).await?;
                if stored.is_some_and(|r| r.status.is_terminal()) {
                    return Ok(began.elapsed());
                }
            }
            Ok(Err(_)) | Err(_) => anyhow::bail!("run {} did not finish in 30 s", run.id),
        }
    }
}
