//! Cordon's SRE metrics, cost accounting, SLOs and weekly report, as pure functions of
//! telemetry facts (`cordon_core::Fact`) and stored versions. No I/O: the API loads the
//! facts from the store and hands them here; docs/metrics.md states every formula.

pub mod config;
pub mod report;
pub mod slo;
pub mod sre;

use cordon_core::{Fact, StoredBytes, Timestamp};

pub use config::{Objective, Prices, SloKind, TelemetryConfig};
pub use report::{Day, Integrity, IsoWeek, WeeklyReport};
pub use slo::{BURN_WINDOWS, SloStatus};
pub use sre::{GroupBy, GroupMetrics, SreMetrics};

/// What a weekly report is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ReportData<'a> {
    /// Facts from the previous week's start until now.
    pub facts: &'a [Fact],
    /// Usage facts of the runs that completed in either week.
    pub run_usage: &'a [Fact],
    /// Versions stored at some instant of either week.
    pub stored: &'a [StoredBytes],
}

/// Assembles the weekly report of `week`.
pub fn weekly_report(
    tenant: &str,
    week: IsoWeek,
    now: Timestamp,
    data: ReportData<'_>,
    prices: &Prices,
    slos: Vec<SloStatus>,
    integrity: Integrity,
) -> WeeklyReport {
    let window = |from: Timestamp, to: Timestamp, group_by: GroupBy| {
        sre::compute(
            sre::Input {
                from,
                to,
                facts: data.facts,
                later: data.facts,
                run_usage: data.run_usage,
                stored: data.stored,
                prices,
            },
            group_by,
        )
    };
    let previous = week.previous();
    let this = window(week.start(), week.end(), GroupBy::WorkloadClass);
    let before = window(previous.start(), previous.end(), GroupBy::None);
    let days = (0..7)
        .map(|i| {
            let (from, to) = (week.day(i), week.day(i + 1));
            let day = window(from, to, GroupBy::None).total;
            Day {
                date: from.to_string().get(..10).unwrap_or_default().to_owned(),
                sessions_succeeded: day.sessions.succeeded,
                sessions_failed: day.sessions.failed + day.sessions.abandoned,
                runs_completed: day.workflows.completed,
                blocks: day.policy_blocks.blocks,
                cost: day.cost.total,
            }
        })
        .collect();
    WeeklyReport {
        tenant: tenant.to_owned(),
        week: week.to_string(),
        from: week.start().to_string(),
        to: week.end().to_string(),
        generated_at: now.to_string(),
        currency: prices.currency.clone(),
        this_week: this.total,
        previous_week: before.total,
        by_workload_class: this.groups,
        slos,
        integrity,
        days,
    }
}
