//! `cordon report weekly` and `cordon metrics sre|slo` (clients of the metrics API),
//! and the server's telemetry chores: metering sandboxes, SLO gauges, closing idle
//! sessions, and writing each tenant's weekly report when a week ends.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use cordon_control::Control;
use cordon_core::Timestamp;
use cordon_telemetry::IsoWeek;
use reqwest::Method;

use crate::client::{Client, ClientArgs, Outcome, finish, table};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The weekly report of your tenant: cost, risk and delivery against the week before.
    Weekly {
        /// ISO week, e.g. 2026-W48 (default: the last complete week).
        #[arg(long)]
        week: Option<String>,
        /// html (one self-contained page), md or json.
        #[arg(long, default_value = "md")]
        format: String,
        /// Write it to this file instead of stdout.
        #[arg(long, short = 'o', default_value = "-")]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// The SRE metrics of a window (docs/metrics.md).
    Sre {
        /// RFC 3339 start (default: 7 days before `--to`).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end (default: now).
        #[arg(long)]
        to: Option<String>,
        /// workload_class, session, run, none or tenant.
        #[arg(long, default_value = "workload_class")]
        group_by: String,
    },
    /// Every objective's attainment, budget remaining and burn rates.
    Slo,
}

pub async fn run_report(args: ClientArgs<ReportCommand>) -> ExitCode {
    finish(report(&args).await)
}

async fn report(args: &ClientArgs<ReportCommand>) -> Outcome<()> {
    let client = Client::new(args)?;
    match args.command() {
        ReportCommand::Weekly {
            week,
            format,
            output,
        } => {
            let mut query = vec![("format", format.clone())];
            if let Some(week) = week {
                query.push(("week", week.clone()));
            }
            crate::artifacts_client::download(&client, "/v1/reports/weekly", &query, output).await
        }
    }
}

pub async fn run_metrics(args: ClientArgs<MetricsCommand>) -> ExitCode {
    finish(metrics(&args).await)
}

fn opt(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "–".to_owned(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.4}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

async fn metrics(args: &ClientArgs<MetricsCommand>) -> Outcome<()> {
    let client = Client::new(args)?;
    let none = None::<&()>;
    match args.command() {
        MetricsCommand::Sre { from, to, group_by } => {
            let mut query = vec![("group_by", group_by.clone())];
            if let Some(from) = from {
                query.push(("from", from.clone()));
            }
            if let Some(to) = to {
                query.push(("to", to.clone()));
            }
            let value = client
                .call(Method::GET, "/v1/metrics/sre", &query, none, None)
                .await?;
            client.show(value, sre_table)
        }
        MetricsCommand::Slo => {
            let value = client
                .call(Method::GET, "/v1/metrics/slo", &[], none, None)
                .await?;
            client.show(value, slo_table)
        }
    }
}

fn sre_table(value: serde_json::Value) -> String {
    let mut groups: Vec<serde_json::Value> =
        value["groups"].as_array().cloned().unwrap_or_default();
    groups.push(value["total"].clone());
    let rows = groups
        .iter()
        .map(|g| {
            vec![
                g["key"].as_str().unwrap_or("").to_owned(),
                opt(&g["sessions"]["closed"]),
                opt(&g["sessions"]["success_rate"]),
                opt(&g["recovery"]["incidents"]),
                opt(&g["recovery"]["mttr_seconds"]),
                opt(&g["policy_blocks"]["blocks"]),
                opt(&g["policy_blocks"]["block_rate"]),
                opt(&g["policy_blocks"]["false_positive_ratio"]),
                opt(&g["artifact_restore"]["p90_seconds"]),
                opt(&g["cost"]["total"]),
                opt(&g["workflows"]["cost_per_completed"]),
            ]
        })
        .collect();
    table(
        &[
            "GROUP",
            "CLOSED",
            "SUCCESS",
            "INCIDENTS",
            "MTTR_S",
            "BLOCKS",
            "BLOCK_RATE",
            "FP_RATIO",
            "RESTORE_P90_S",
            "COST",
            "COST/RUN",
        ],
        rows,
    )
}

fn slo_table(value: serde_json::Value) -> String {
    let rows = value["slos"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                s["name"].as_str().unwrap_or("").to_owned(),
                s["workload_class"].as_str().unwrap_or("").to_owned(),
                opt(&s["objective"]),
                opt(&s["attainment"]),
                opt(&s["error_budget_remaining"]),
                opt(&s["burn_rates"]["1h"]),
                opt(&s["burn_rates"]["6h"]),
                opt(&s["burn_rates"]["3d"]),
            ]
        })
        .collect();
    table(
        &[
            "SLO",
            "CLASS",
            "OBJECTIVE",
            "ATTAINED",
            "BUDGET_LEFT",
            "BURN_1H",
            "BURN_6H",
            "BURN_3D",
        ],
        rows,
    )
}

/// How often the report directory is checked for a week without its reports.
const EXPORT_EVERY: Duration = Duration::from_secs(600);

/// The server's telemetry chores, until the process ends.
pub async fn chores(control: Control, report_dir: PathBuf) {
    let meter = control
        .telemetry()
        .spawn_meter(control.sandboxes().cloned());
    let config = control.telemetry().config();
    let idle_every = Duration::from_secs(config.meter_interval_seconds.max(1));
    let slo_every = Duration::from_secs(config.slo_interval_seconds.max(1));
    let mut slo_tick = tokio::time::interval(slo_every);
    let mut idle_tick = tokio::time::interval(idle_every);
    let mut export_tick = tokio::time::interval(EXPORT_EVERY);
    for tick in [&mut slo_tick, &mut idle_tick, &mut export_tick] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = slo_tick.tick() => control.export_slo_gauges().await,
            _ = idle_tick.tick() => {
                let closed = control.close_idle_sessions().await;
                if closed > 0 {
                    tracing::info!(closed, "closed idle sessions");
                }
            }
            _ = export_tick.tick() => {
                if let Err(error) = export_weekly(&control, &report_dir, Timestamp::now()).await {
                    tracing::warn!(error = %format!("{error:#}"), "cannot write the weekly reports");
                }
            }
        }
        if meter.is_finished() {
            tracing::error!("the usage meter stopped");
        }
    }
}

/// Writes `<dir>/<tenant id>/<week>.{html,md,json}` for the last complete week, for
/// every tenant that has none yet. Returns how many tenants got one.
pub async fn export_weekly(control: &Control, dir: &Path, now: Timestamp) -> anyhow::Result<usize> {
    let week = IsoWeek::last_complete(now);
    let mut written = 0;
    for tenant in control.store().list_tenants().await? {
        let folder = dir.join(tenant.id.to_string());
        let html = folder.join(format!("{week}.html"));
        if html.exists() {
            continue;
        }
        let report = control
            .weekly_report(tenant.id, &tenant.name, week, now)
            .await?;
        std::fs::create_dir_all(&folder)?;
        // Markdown and JSON first, the HTML last: its presence means "done".
        write_atomically(
            &folder.join(format!("{week}.md")),
            cordon_telemetry::report::markdown(&report).as_bytes(),
        )?;
        write_atomically(
            &folder.join(format!("{week}.json")),
            &serde_json::to_vec_pretty(&report)?,
        )?;
        write_atomically(&html, cordon_telemetry::report::html(&report).as_bytes())?;
        written += 1;
    }
    if written > 0 {
        tracing::info!(%week, tenants = written, dir = %dir.display(), "weekly reports written");
    }
    Ok(written)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
