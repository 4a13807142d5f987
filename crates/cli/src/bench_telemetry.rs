//! `cordon bench telemetry`: what the SRE metrics cost. Records a week of synthetic
//! facts through the recorder (the path the server uses), then times the queries the
//! API, the SLO gauges and the weekly report run over them, on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cordon_control::{Control, ControlOptions};
use cordon_core::{Fact, FactKind, RunId, SessionId, Tenant, TenantId, Timestamp};
use cordon_store::Store;
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_store_sqlite::{SqliteOptions, SqliteStore};
use cordon_telemetry::{GroupBy, IsoWeek, TelemetryConfig};

use crate::bench::BenchDatabase;

#[derive(Debug, clap::Args)]
pub struct TelemetryArgs {
    /// Facts recorded, spread over the 7 days before now.
    #[arg(long, default_value_t = 200_000)]
    facts: usize,
    /// Times each query is run (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// A PostgreSQL URL with the right to create databases (fresh database, dropped
    /// afterwards); empty to skip PostgreSQL.
    #[arg(
        long,
        env = "CORDON_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

struct Row {
    backend: &'static str,
    record_per_s: f64,
    sre_ms: f64,
    sre_by_tenant_ms: f64,
    slo_ms: f64,
    report_ms: f64,
}

pub async fn run(args: TelemetryArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let store = SqliteStore::open(SqliteOptions::new(temp.path().join("cordon.db")))
        .context("cannot open the SQLite store")?;
    rows.push(measure("sqlite", Arc::new(store), &args).await?);
    if !args.database_url.is_empty() {
        let database = BenchDatabase::create(&args.database_url).await?;
        let outcome = async {
            let store = PostgresStore::connect(PostgresOptions::new(database.url.clone()))
                .await
                .context("cannot open the PostgreSQL store")?;
            let row = measure("postgres", Arc::new(store.clone()), &args).await;
            store.close().await;
            row
        }
        .await;
        database.drop_database().await;
        rows.push(outcome?);
    }
    println!();
    println!(
        "{} facts over 7 days; medians of {} runs",
        args.facts, args.repeats
    );
    println!(
        "{:<9} {:>14} {:>12} {:>16} {:>10} {:>12}",
        "backend", "record/s", "sre ms", "sre tenants ms", "slo ms", "report ms"
    );
    for r in rows {
        println!(
            "{:<9} {:>14.0} {:>12.1} {:>16.1} {:>10.1} {:>12.1}",
            r.backend, r.record_per_s, r.sre_ms, r.sre_by_tenant_ms, r.slo_ms, r.report_ms
        );
    }
    Ok(())
}

/// A deterministic mix: per 100 facts, 40 tool, 30 usage, 10 session closes, 8 blocks,
/// 5 runs finished, 5 restores, 2 reviews; 8 workload classes, 500 sessions, 200 runs.
fn synthetic(tenant: TenantId, i: usize, n: usize, now: Timestamp) -> Fact {
    let week = 7 * 86_400_000_000_i64;
    let offset = i64::try_from(i).unwrap_or(0) * (week / i64::try_from(n.max(1)).unwrap_or(1));
    let at = now.saturating_add_micros(offset - week);
    let kind = match i % 100 {
        0..40 => FactKind::Tool,
        40..70 => FactKind::Usage,
        70..80 => FactKind::SessionClosed,
        80..88 => FactKind::Block,
        88..93 => FactKind::RunFinished,
        93..98 => FactKind::Restore,
        _ => FactKind::BlockReview,
    };
    let mut fact = Fact::new(tenant, kind, at);
    let class = format!("class-{}", i % 8);
    fact.workload_class = Some(class);
    fact.session_id = Some(session_of(i % 500));
    fact.run_id = Some(run_of(i % 200));
    match kind {
        FactKind::Tool => {
            fact.subject = Some(if i.is_multiple_of(3) {
                "step:build".into()
            } else {
                "exec".into()
            });
            fact.outcome = Some(if i.is_multiple_of(7) { "failed" } else { "ok" }.into());
        }
        FactKind::Usage => {
            fact.value = 0.25;
            fact.value2 = 0.1;
            fact.bytes = 20_000;
            fact.count = 4;
        }
        FactKind::SessionClosed => {
            fact.outcome = Some(
                if i.is_multiple_of(11) {
                    "failed"
                } else {
                    "succeeded"
                }
                .into(),
            );
        }
        FactKind::Block => {
            fact.outcome = Some("egress".into());
            fact.reason = Some("EGRESS_DESTINATION_NOT_ALLOWED".into());
            fact.subject = Some(format!("host-{}.example:443", i % 40));
            fact.reference = Some(format!("egress:{i}"));
        }
        FactKind::BlockReview => {
            fact.outcome = Some("false_positive".into());
            fact.reference = Some(format!("egress:{}", i - 14));
        }
        FactKind::RunFinished => fact.outcome = Some("succeeded".into()),
        FactKind::Restore => fact.value = 0.05,
    }
    fact
}

/// Stable ids for the synthetic sessions and runs (the same index, the same id).
fn session_of(i: usize) -> SessionId {
    format!("ses_{i:032x}")
        .parse()
        .unwrap_or_else(|_| SessionId::generate())
}

fn run_of(i: usize) -> RunId {
    format!("run_{i:032x}")
        .parse()
        .unwrap_or_else(|_| RunId::generate())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

async fn timed<F, Fut, T, E>(repeats: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut samples = Vec::new();
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        f().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(samples))
}

async fn measure(
    backend: &'static str,
    store: Arc<dyn Store>,
    args: &TelemetryArgs,
) -> anyhow::Result<Row> {
    let tenant = Tenant {
        id: TenantId::generate(),
        name: "bench".into(),
        created_at: Timestamp::now(),
    };
    store.create_tenant(&tenant).await?;
    let control = Control::new(
        Arc::clone(&store),
        ControlOptions {
            node_id: "bench".into(),
            lease_ttl: Duration::from_secs(30),
        },
    )
    .with_telemetry(TelemetryConfig::default());
    let now = Timestamp::now();
    eprintln!("{backend}: recording {} facts", args.facts);
    let started = Instant::now();
    for i in 0..args.facts {
        control
            .telemetry()
            .record(synthetic(tenant.id, i, args.facts, now));
        if i % 10_000 == 9_999 {
            control.telemetry().flush().await;
        }
    }
    control.telemetry().flush().await;
    let record_per_s = args.facts as f64 / started.elapsed().as_secs_f64();
    let from = now.saturating_add_micros(-7 * 86_400_000_000);
    let sre_ms = timed(args.repeats, || {
        control.sre_metrics(Some(tenant.id), from, now, GroupBy::WorkloadClass)
    })
    .await?;
    let sre_by_tenant_ms = timed(args.repeats, || {
        control.sre_metrics(None, from, now, GroupBy::Tenant)
    })
    .await?;
    let slo_ms = timed(args.repeats, || control.slo_status(None, now)).await?;
    let week = IsoWeek::containing(now);
    let report_ms = timed(args.repeats, || {
        control.weekly_report(tenant.id, "bench", week, now)
    })
    .await?;
    Ok(Row {
        backend,
        record_per_s,
        sre_ms,
        sre_by_tenant_ms,
        slo_ms,
        report_ms,
    })
}
