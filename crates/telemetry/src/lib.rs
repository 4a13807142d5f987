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

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::{FactKind, TenantId};

    fn closed(tenant: TenantId, at: Timestamp, outcome: &str) -> Fact {
        let mut f = Fact::new(tenant, FactKind::SessionClosed, at);
        f.workload_class = Some("coding".to_owned());
        f.outcome = Some(outcome.to_owned());
        f
    }

    #[test]
    fn the_weekly_report_compares_two_weeks_and_splits_days() {
        let week = IsoWeek::parse("2026-W48").unwrap_or_else(|e| panic!("{e}"));
        let tenant = TenantId::generate();
        let hour = 3_600_000_000;
        let mut facts = vec![
            // The week before: one success, one failure.
            closed(tenant, week.previous().day(2), "succeeded"),
            closed(tenant, week.previous().day(4), "failed"),
        ];
        // This week: three successes on Monday, one abandoned on Wednesday, and an hour
        // of a core on Tuesday.
        for i in 0..3 {
            facts.push(closed(
                tenant,
                week.day(0).saturating_add_micros(i * hour),
                "succeeded",
            ));
        }
        facts.push(closed(tenant, week.day(2), "abandoned"));
        let mut usage = Fact::new(tenant, FactKind::Usage, week.day(1));
        usage.workload_class = Some("coding".to_owned());
        usage.value = 3600.0;
        facts.push(usage);
        // After the week: not in it.
        facts.push(closed(tenant, week.end(), "failed"));
        let prices = Prices::default();
        let report = weekly_report(
            "acme",
            week,
            week.end(),
            ReportData {
                facts: &facts,
                run_usage: &[],
                stored: &[],
            },
            &prices,
            Vec::new(),
            Integrity {
                status: "verified".to_owned(),
                entries: 3,
                detail: String::new(),
            },
        );
        assert_eq!(report.week, "2026-W48");
        assert_eq!(report.this_week.sessions.closed, 4);
        assert_eq!(report.this_week.sessions.success_rate, Some(0.75));
        assert_eq!(report.previous_week.sessions.closed, 2);
        assert_eq!(report.by_workload_class.len(), 1);
        let days: Vec<(u64, u64)> = report
            .days
            .iter()
            .map(|d| (d.sessions_succeeded, d.sessions_failed))
            .collect();
        assert_eq!(
            days,
            [(3, 0), (0, 0), (0, 1), (0, 0), (0, 0), (0, 0), (0, 0)]
        );
        assert_eq!(report.days[0].date, "2026-11-23");
        assert!(
            (report.days[1].cost - 0.04).abs() < 1e-9,
            "{}",
            report.days[1].cost
        );
        let md = report::markdown(&report);
        assert!(
            md.contains("| Sessions closed | 4 | 2 | +100.0 % |"),
            "{md}"
        );
        assert!(
            md.contains("| Session success rate | 75.0 % | 50.0 % | +25.0 pp |"),
            "{md}"
        );
        let html = report::html(&report);
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("<span class=\"pill verified\">verified</span>"));
        assert!(!html.contains("<script"));
    }
}
