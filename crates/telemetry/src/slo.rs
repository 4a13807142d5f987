//! Service-level objectives: attainment, error budget remaining and multi-window burn
//! rates, from the same facts as the SRE metrics (docs/metrics.md, "SLOs").

use std::collections::{BTreeMap, BTreeSet};

use cordon_core::{Fact, FactKind, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{Objective, SloKind};
use crate::sre::{Incident, incident_key, incidents, seconds_between};

/// The burn-rate windows exported, with their length in seconds: the pairs the
/// alerting rules combine (5m with 1h, 30m with 6h, 2h with 1d, 6h with 3d).
pub const BURN_WINDOWS: [(&str, i64); 7] = [
    ("5m", 300),
    ("30m", 1_800),
    ("1h", 3_600),
    ("2h", 7_200),
    ("6h", 21_600),
    ("1d", 86_400),
    ("3d", 259_200),
];

/// One objective's state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloStatus {
    pub name: String,
    pub workload_class: String,
    pub objective: f64,
    pub window_days: u32,
    /// Good and total events over the SLO's window.
    pub good: u64,
    pub total: u64,
    /// good / total over the window; `null` when there were no events.
    pub attainment: Option<f64>,
    /// 1 - (1 - attainment) / (1 - objective): 1 untouched, 0 spent, below 0 overspent.
    /// 1 when there were no events.
    pub error_budget_remaining: f64,
    /// Error ratio over each window / (1 - objective); 0 for a window with no events.
    pub burn_rates: BTreeMap<String, f64>,
}

/// Good/bad events of an SLI, each with the instant it counts at.
struct Events {
    /// (at, good)
    events: Vec<(Timestamp, bool)>,
}

impl Events {
    fn between(&self, from: Timestamp, to: Timestamp) -> (u64, u64) {
        let mut good = 0;
        let mut total = 0;
        for (at, ok) in &self.events {
            if *at >= from && *at < to {
                total += 1;
                good += u64::from(*ok);
            }
        }
        (good, total)
    }
}

/// The longest window any objective needs, in days (what the caller must load).
pub fn longest_window_days(objectives: &[Objective]) -> u32 {
    objectives
        .iter()
        .map(|o| o.window_days)
        .max()
        .unwrap_or(1)
        .max(3)
}

/// Evaluates every objective at `now` over `facts` (session closes and tool facts
/// from at least `now - longest_window_days`).
pub fn evaluate(objectives: &[Objective], facts: &[Fact], now: Timestamp) -> Vec<SloStatus> {
    let mut out = Vec::new();
    for objective in objectives {
        let classes: BTreeSet<String> = if objective.workload_class == "*" {
            facts
                .iter()
                .filter(|f| relevant(objective.slo, f))
                .map(|f| {
                    f.workload_class
                        .clone()
                        .unwrap_or_else(|| "unknown".to_owned())
                })
                .collect()
        } else {
            BTreeSet::from([objective.workload_class.clone()])
        };
        for class in classes {
            let of_class: Vec<&Fact> = facts
                .iter()
                .filter(|f| {
                    relevant(objective.slo, f)
                        && f.workload_class.as_deref().unwrap_or("unknown") == class
                })
                .collect();
            let events = match objective.slo {
                SloKind::SessionCompletion => Events {
                    events: of_class
                        .iter()
                        .map(|f| (f.at, f.outcome.as_deref() == Some("succeeded")))
                        .collect(),
                },
                SloKind::Recovery => recovery_events(&of_class, objective.threshold_seconds, now),
            };
            out.push(status(objective, class, &events, now));
        }
    }
    out
}

fn relevant(slo: SloKind, fact: &Fact) -> bool {
    match slo {
        SloKind::SessionCompletion => fact.kind == FactKind::SessionClosed,
        SloKind::Recovery => fact.kind == FactKind::Tool,
    }
}

/// An incident is good if it recovered within the threshold, bad if it recovered
/// later or has been open longer than the threshold; one still open and younger than
/// the threshold is not counted yet. It counts at the instant it opened.
fn recovery_events(tool: &[&Fact], threshold: f64, now: Timestamp) -> Events {
    let mut rows: Vec<(Timestamp, i64, String, bool)> = tool
        .iter()
        .map(|f| {
            (
                f.at,
                f.seq,
                incident_key(f),
                f.outcome.as_deref() == Some("ok"),
            )
        })
        .collect();
    let events = incidents(&mut rows)
        .into_iter()
        .filter_map(|Incident { opened, recovered }| match recovered {
            Some(r) => Some((opened, seconds_between(opened, r) <= threshold)),
            None if seconds_between(opened, now) > threshold => Some((opened, false)),
            None => None,
        })
        .collect();
    Events { events }
}

fn status(objective: &Objective, class: String, events: &Events, now: Timestamp) -> SloStatus {
    let window_start =
        now.saturating_add_micros(-i64::from(objective.window_days) * 86_400_000_000);
    let (good, total) = events.between(window_start, now);
    let allowed = 1.0 - objective.objective;
    let attainment = (total > 0).then(|| good as f64 / total as f64);
    let error_budget_remaining = match attainment {
        Some(a) => 1.0 - (1.0 - a) / allowed,
        None => 1.0,
    };
    let burn_rates = BURN_WINDOWS
        .iter()
        .map(|(name, seconds)| {
            let (good, total) =
                events.between(now.saturating_add_micros(-seconds * 1_000_000), now);
            let rate = if total == 0 {
                0.0
            } else {
                (1.0 - good as f64 / total as f64) / allowed
            };
            ((*name).to_owned(), rate)
        })
        .collect();
    SloStatus {
        name: objective.slo.as_str().to_owned(),
        workload_class: class,
        objective: objective.objective,
        window_days: objective.window_days,
        good,
        total,
        attainment,
        error_budget_remaining,
        burn_rates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::TenantId;

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_allowed_one() {
        let now = Timestamp::from_unix_micros(1_800_000_000_000_000);
        let tenant = TenantId::generate();
        let facts: Vec<Fact> = (0..10)
            .map(|i| {
                let mut f = Fact::new(
                    tenant,
                    FactKind::SessionClosed,
                    now.saturating_add_micros(-(i + 1) * 60_000_000),
                );
                f.workload_class = Some("coding".to_owned());
                f.outcome = Some(if i < 2 { "failed" } else { "succeeded" }.to_owned());
                f
            })
            .collect();
        let objective = Objective {
            slo: SloKind::SessionCompletion,
            workload_class: "*".to_owned(),
            objective: 0.9,
            window_days: 28,
            threshold_seconds: 900.0,
        };
        let status = evaluate(&[objective], &facts, now);
        assert_eq!(status.len(), 1);
        let s = &status[0];
        assert_eq!((s.good, s.total), (8, 10));
        // 20 % errors against 10 % allowed: budget overspent by 100 %.
        assert!((s.error_budget_remaining + 1.0).abs() < 1e-9);
        // The last 5 minutes hold the 5 newest closes, 2 of them failed.
        assert!(
            (s.burn_rates["5m"] - 4.0).abs() < 1e-9,
            "{:?}",
            s.burn_rates
        );
        assert!((s.burn_rates["1h"] - 2.0).abs() < 1e-9);
    }
}
