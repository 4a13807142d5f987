//! The SRE metrics of a window, as pure functions of telemetry facts. Each formula here
//! is the one docs/metrics.md states; a test there and here keeps them the same.

use std::collections::{BTreeMap, HashMap, HashSet};

use cordon_core::{Fact, FactKind, RunId, SessionId, SessionOutcome, StoredBytes, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::Prices;

/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Microseconds in a day.
const DAY_MICROS: f64 = 86_400_000_000.0;
/// Upper bounds of the restore-latency histogram, in seconds (Prometheus's too).
pub const RESTORE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// How many (reason, destination) pairs the top egress denial causes keep.
pub const TOP_DENIALS: usize = 10;

/// How the metrics are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    WorkloadClass,
    Tenant,
    /// One group per session (facts without one: `none`).
    Session,
    /// One group per workflow run (facts of no run: `none`).
    Run,
    None,
}

impl GroupBy {
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        match text {
            "workload_class" => Ok(GroupBy::WorkloadClass),
            "tenant" => Ok(GroupBy::Tenant),
            "session" => Ok(GroupBy::Session),
            "run" => Ok(GroupBy::Run),
            "none" => Ok(GroupBy::None),
            other => Err(format!(
                "unknown group_by `{other}` (workload_class, tenant, session, run, none)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::WorkloadClass => "workload_class",
            GroupBy::Tenant => "tenant",
            GroupBy::Session => "session",
            GroupBy::Run => "run",
            GroupBy::None => "none",
        }
    }

    fn key(
        self,
        tenant: &str,
        class: Option<&str>,
        session: Option<SessionId>,
        run: Option<RunId>,
    ) -> String {
        match self {
            GroupBy::WorkloadClass => class.unwrap_or("unknown").to_owned(),
            GroupBy::Tenant => tenant.to_owned(),
            GroupBy::Session => session.map_or("none".to_owned(), |s| s.to_string()),
            GroupBy::Run => run.map_or("none".to_owned(), |r| r.to_string()),
            GroupBy::None => "all".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStats {
    pub closed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub abandoned: u64,
    /// succeeded / closed; `null` when none closed.
    pub success_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStats {
    /// Tool failures that opened an incident in the window.
    pub incidents: u64,
    pub recovered: u64,
    pub unrecovered: u64,
    /// Mean of (next success - first failure) over recovered incidents.
    pub mttr_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Tool operations ended in the window, and how many failed.
    pub tool_operations: u64,
    pub tool_failures: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockStats {
    pub blocks: u64,
    /// Blocks by the gateway of a sandbox's own requests.
    pub egress_blocks: u64,
    /// Blocks of workflow steps (dead letters).
    pub step_blocks: u64,
    /// Blocks whose reason is an egress refusal, whoever made the request (a sandbox or
    /// a step): what the top egress denial causes count.
    pub egress_denied: u64,
    /// Egress requests decided + tool operations + blocked steps.
    pub governed_actions: u64,
    /// blocks / governed_actions.
    pub block_rate: Option<f64>,
    pub false_positives: u64,
    /// false_positives / blocks.
    pub false_positive_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialCause {
    pub reason: String,
    pub destination: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreStats {
    pub count: u64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Cumulative counts per upper bound, as a Prometheus histogram has them.
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound in seconds; `null` is +Inf.
    pub le: Option<f64>,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostStats {
    pub cpu_seconds: f64,
    pub memory_gib_seconds: f64,
    pub egress_bytes: u64,
    pub artifact_gib_days: f64,
    pub cpu: f64,
    pub memory: f64,
    pub egress: f64,
    pub artifacts: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStats {
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Cost of the runs that completed (their sessions' metered usage and stored
    /// versions), whenever it was incurred.
    pub completed_cost: f64,
    pub cost_per_completed: Option<f64>,
}

/// The metrics of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    pub key: String,
    pub sessions: SessionStats,
    pub recovery: RecoveryStats,
    pub policy_blocks: BlockStats,
    pub egress_denials: Vec<DenialCause>,
    pub artifact_restore: RestoreStats,
    pub cost: CostStats,
    pub workflows: WorkflowStats,
}

/// `GET /v1/metrics/sre`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SreMetrics {
    /// RFC 3339.
    pub from: String,
    pub to: String,
    pub group_by: GroupBy,
    pub currency: String,
    pub groups: Vec<GroupMetrics>,
    pub total: GroupMetrics,
}

/// What the metrics of `[from, to)` are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Every fact with `at` in `[from, to)`.
    pub facts: &'a [Fact],
    /// Block reviews and tool facts from `from` until now: a block in the window may be
    /// reviewed, or its redrive succeed, after the window.
    pub later: &'a [Fact],
    /// Usage facts, of any time, of the runs that completed in the window.
    pub run_usage: &'a [Fact],
    /// Workspace versions stored at some instant of the window.
    pub stored: &'a [StoredBytes],
    pub prices: &'a Prices,
}

/// Per-group accumulators.
#[derive(Default)]
struct Acc {
    sessions: SessionStats,
    tool: Vec<(Timestamp, i64, String, bool)>,
    blocks: Vec<(Fact, bool)>,
    governed: u64,
    restores: Vec<f64>,
    cost: CostStats,
    runs_completed: Vec<RunId>,
    runs_failed: u64,
    runs_cancelled: u64,
    denials: BTreeMap<(String, String), u64>,
}

/// Computes the SRE metrics of a window.
pub fn compute(input: Input<'_>, group_by: GroupBy) -> SreMetrics {
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    let false_positive = false_positives(input.later);
    for fact in input.facts {
        // Reviews only mark blocks (through `later`); they make no group of their own.
        if fact.at < input.from || fact.at >= input.to || fact.kind == FactKind::BlockReview {
            continue;
        }
        let key = group_by.key(
            &fact.tenant_id.to_string(),
            fact.workload_class.as_deref(),
            fact.session_id,
            fact.run_id,
        );
        let group = groups.entry(key).or_default();
        for acc in [&mut *group, &mut total] {
            add(acc, fact, &false_positive, input.prices);
        }
    }
    for stored in input.stored {
        let gib_days = gib_days(stored, input.from, input.to);
        let key = group_by.key(
            &stored.tenant_id.to_string(),
            Some(&stored.workload_class),
            Some(stored.session_id),
            stored.run_id,
        );
        let group = groups.entry(key).or_default();
        for acc in [&mut *group, &mut total] {
            acc.cost.artifact_gib_days += gib_days;
            let cost = gib_days * input.prices.artifact_gib_day;
            acc.cost.artifacts += cost;
            acc.cost.total += cost;
        }
    }
    let run_costs = run_costs(&input);
    let metrics = |key: String, acc: Acc| finish(key, acc, &run_costs);
    SreMetrics {
        from: input.from.to_string(),
        to: input.to.to_string(),
        group_by,
        currency: input.prices.currency.clone(),
        groups: groups
            .into_iter()
            .map(|(key, acc)| metrics(key, acc))
            .collect(),
        total: metrics("all".to_owned(), total),
    }
}

fn add(acc: &mut Acc, fact: &Fact, false_positive: &HashSet<String>, prices: &Prices) {
    match fact.kind {
        FactKind::SessionClosed => {
            acc.sessions.closed += 1;
            match fact.outcome.as_deref().and_then(|o| o.parse().ok()) {
                Some(SessionOutcome::Succeeded) => acc.sessions.succeeded += 1,
                Some(SessionOutcome::Failed) => acc.sessions.failed += 1,
                // An unknown outcome counts against the rate, as abandoned.
                _ => acc.sessions.abandoned += 1,
            }
        }
        FactKind::Tool => {
            let ok = fact.outcome.as_deref() == Some("ok");
            acc.tool.push((fact.at, fact.seq, incident_key(fact), ok));
            acc.governed += 1;
        }
        FactKind::Block => {
            let fp = fact
                .reference
                .as_ref()
                .is_some_and(|r| false_positive.contains(r));
            acc.blocks.push((fact.clone(), fp));
            let reason = fact.reason.clone().unwrap_or_default();
            // Egress denials, whether a request of the sandbox or of a step.
            if reason.starts_with("EGRESS_") {
                let destination = fact.subject.clone().unwrap_or_default();
                *acc.denials.entry((reason, destination)).or_default() += 1;
            }
            if fact.outcome.as_deref() != Some("egress") {
                // A blocked step is a governed action that left no tool fact.
                acc.governed += 1;
            }
        }
        FactKind::Restore => acc.restores.push(fact.value),
        FactKind::Usage => {
            acc.governed += u64::try_from(fact.count).unwrap_or(0);
            add_usage(&mut acc.cost, fact, prices);
        }
        FactKind::RunFinished => match fact.outcome.as_deref() {
            Some("succeeded") => acc.runs_completed.extend(fact.run_id),
            Some("cancelled") => acc.runs_cancelled += 1,
            _ => acc.runs_failed += 1,
        },
        FactKind::BlockReview => {}
    }
}

/// What metered usage costs, by item: CPU, memory, egress (docs/metrics.md, Cost).
pub fn usage_cost(
    cpu_seconds: f64,
    memory_gib_seconds: f64,
    egress_bytes: u64,
    prices: &Prices,
) -> (f64, f64, f64) {
    (
        cpu_seconds * prices.cpu_second,
        memory_gib_seconds * prices.memory_gib_second,
        egress_bytes as f64 / GIB * prices.egress_gib,
    )
}

/// What a usage fact costs in all.
pub fn usage_fact_cost(fact: &Fact, prices: &Prices) -> f64 {
    let (cpu, memory, egress) = usage_cost(
        fact.value,
        fact.value2,
        u64::try_from(fact.bytes).unwrap_or(0),
        prices,
    );
    cpu + memory + egress
}

fn add_usage(cost: &mut CostStats, fact: &Fact, prices: &Prices) {
    let egress_bytes = u64::try_from(fact.bytes).unwrap_or(0);
    cost.cpu_seconds += fact.value;
    cost.memory_gib_seconds += fact.value2;
    cost.egress_bytes += egress_bytes;
    let (cpu, memory, egress) = usage_cost(fact.value, fact.value2, egress_bytes, prices);
    cost.cpu += cpu;
    cost.memory += memory;
    cost.egress += egress;
    cost.total += cpu + memory + egress;
}

/// The incident key of a tool fact: its session for an exec, its run for a step.
pub fn incident_key(fact: &Fact) -> String {
    let is_step = fact
        .subject
        .as_deref()
        .is_some_and(|s| s.starts_with("step"));
    match (is_step, fact.run_id, fact.session_id) {
        (true, Some(run), _) => run.to_string(),
        (_, _, Some(session)) => session.to_string(),
        (_, Some(run), None) => run.to_string(),
        (_, None, None) => String::new(),
    }
}

/// The blocks (by reference) that count as false positives: marked so by an operator,
/// or dead letters redriven after which the step succeeded.
fn false_positives(later: &[Fact]) -> HashSet<String> {
    let mut marked = HashSet::new();
    let mut successes: HashMap<(RunId, &str), Vec<Timestamp>> = HashMap::new();
    for fact in later {
        if fact.kind == FactKind::Tool
            && fact.outcome.as_deref() == Some("ok")
            && let (Some(run), Some(subject)) = (fact.run_id, fact.subject.as_deref())
        {
            successes.entry((run, subject)).or_default().push(fact.at);
        }
    }
    for fact in later {
        if fact.kind != FactKind::BlockReview {
            continue;
        }
        let Some(reference) = &fact.reference else {
            continue;
        };
        match fact.outcome.as_deref() {
            Some("false_positive") => {
                marked.insert(reference.clone());
            }
            Some("redriven") => {
                let succeeded = fact
                    .run_id
                    .zip(fact.subject.as_deref())
                    .and_then(|(run, subject)| successes.get(&(run, subject)))
                    .is_some_and(|times| times.iter().any(|t| *t >= fact.at));
                if succeeded {
                    marked.insert(reference.clone());
                }
            }
            _ => {}
        }
    }
    marked
}

/// GiB-days of one stored version over `[from, to)`.
pub fn gib_days(stored: &StoredBytes, from: Timestamp, to: Timestamp) -> f64 {
    let start = stored.created_at.unix_micros().max(from.unix_micros());
    let end = stored
        .deleted_at
        .map_or(to.unix_micros(), |d| d.unix_micros())
        .min(to.unix_micros());
    if end <= start {
        return 0.0;
    }
    stored.bytes as f64 / GIB * ((end - start) as f64 / DAY_MICROS)
}

/// What each completed run cost: its sessions' metered usage (whenever incurred) and
/// its sessions' stored versions over the window.
fn run_costs(input: &Input<'_>) -> HashMap<RunId, f64> {
    let mut costs: HashMap<RunId, CostStats> = HashMap::new();
    for fact in input.run_usage {
        if fact.kind == FactKind::Usage
            && let Some(run) = fact.run_id
        {
            add_usage(costs.entry(run).or_default(), fact, input.prices);
        }
    }
    for stored in input.stored {
        if let Some(run) = stored.run_id {
            let cost = gib_days(stored, input.from, input.to) * input.prices.artifact_gib_day;
            costs.entry(run).or_default().total += cost;
        }
    }
    costs.into_iter().map(|(run, c)| (run, c.total)).collect()
}

fn finish(key: String, mut acc: Acc, run_costs: &HashMap<RunId, f64>) -> GroupMetrics {
    let sessions = SessionStats {
        success_rate: ratio(acc.sessions.succeeded, acc.sessions.closed),
        ..acc.sessions
    };
    let recovery = recovery(&mut acc.tool);
    let blocks = acc.blocks.len() as u64;
    let false_positives = acc.blocks.iter().filter(|(_, fp)| *fp).count() as u64;
    let egress_blocks = acc
        .blocks
        .iter()
        .filter(|(f, _)| f.outcome.as_deref() == Some("egress"))
        .count() as u64;
    let egress_denied = acc.denials.values().sum();
    let policy_blocks = BlockStats {
        blocks,
        egress_blocks,
        step_blocks: blocks - egress_blocks,
        egress_denied,
        governed_actions: acc.governed,
        block_rate: ratio(blocks, acc.governed),
        false_positives,
        false_positive_ratio: ratio(false_positives, blocks),
    };
    let mut egress_denials: Vec<DenialCause> = acc
        .denials
        .into_iter()
        .map(|((reason, destination), count)| DenialCause {
            reason,
            destination,
            count,
        })
        .collect();
    // Most frequent first; ties in (reason, destination) order, so the list is stable.
    egress_denials.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.reason, &a.destination).cmp(&(&b.reason, &b.destination)))
    });
    egress_denials.truncate(TOP_DENIALS);
    let completed = acc.runs_completed.len() as u64;
    let completed_cost: f64 = acc
        .runs_completed
        .iter()
        .map(|run| run_costs.get(run).copied().unwrap_or(0.0))
        .sum();
    GroupMetrics {
        key,
        sessions,
        recovery,
        policy_blocks,
        egress_denials,
        artifact_restore: restore_stats(&mut acc.restores),
        cost: acc.cost,
        workflows: WorkflowStats {
            completed,
            failed: acc.runs_failed,
            cancelled: acc.runs_cancelled,
            completed_cost,
            cost_per_completed: (completed > 0).then(|| completed_cost / completed as f64),
        },
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// One incident: a tool failure of a session (exec) or run (step) with no incident
/// open for it, until the next success of the same session or run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incident {
    pub opened: Timestamp,
    /// `None` while it has not recovered.
    pub recovered: Option<Timestamp>,
}

/// Incidents from tool facts `(at, seq, key, ok)`, in any order.
pub fn incidents(tool: &mut [(Timestamp, i64, String, bool)]) -> Vec<Incident> {
    tool.sort_by_key(|t| (t.0, t.1));
    let mut open: HashMap<&str, usize> = HashMap::new();
    let mut all: Vec<Incident> = Vec::new();
    for (at, _, key, ok) in tool.iter() {
        match (ok, open.get(key.as_str()).copied()) {
            (false, None) => {
                open.insert(key, all.len());
                all.push(Incident {
                    opened: *at,
                    recovered: None,
                });
            }
            (true, Some(index)) => {
                all[index].recovered = Some(*at);
                open.remove(key.as_str());
            }
            _ => {}
        }
    }
    all
}

fn recovery(tool: &mut [(Timestamp, i64, String, bool)]) -> RecoveryStats {
    let tool_operations = tool.len() as u64;
    let tool_failures = tool.iter().filter(|t| !t.3).count() as u64;
    let incidents = incidents(tool);
    let times: Vec<f64> = incidents
        .iter()
        .filter_map(|i| i.recovered.map(|r| seconds_between(i.opened, r)))
        .collect();
    let recovered = times.len() as u64;
    RecoveryStats {
        incidents: incidents.len() as u64,
        recovered,
        unrecovered: incidents.len() as u64 - recovered,
        mttr_seconds: (recovered > 0).then(|| times.iter().sum::<f64>() / recovered as f64),
        max_seconds: times.iter().copied().reduce(f64::max),
        tool_operations,
        tool_failures,
    }
}

pub fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    (b.unix_micros() - a.unix_micros()) as f64 / 1_000_000.0
}

fn restore_stats(latencies: &mut [f64]) -> RestoreStats {
    latencies.sort_by(f64::total_cmp);
    let count = latencies.len() as u64;
    let mut buckets: Vec<Bucket> = RESTORE_BUCKETS
        .iter()
        .map(|le| Bucket {
            le: Some(*le),
            count: latencies.iter().filter(|l| **l <= *le).count() as u64,
        })
        .collect();
    buckets.push(Bucket { le: None, count });
    RestoreStats {
        count,
        mean_seconds: (count > 0).then(|| latencies.iter().sum::<f64>() / count as f64),
        p50_seconds: nearest_rank(latencies, 0.50),
        p90_seconds: nearest_rank(latencies, 0.90),
        p99_seconds: nearest_rank(latencies, 0.99),
        buckets,
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least
/// `q` of the values at or below it.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::{SessionId, TenantId};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_micros(1_800_000_000_000_000 + seconds * 1_000_000)
    }

    fn fact(kind: FactKind, seconds: i64) -> Fact {
        Fact::new(TenantId::generate(), kind, at(seconds))
    }

    #[test]
    fn incidents_open_at_the_first_failure_and_close_at_the_next_success() {
        let (a, b) = ("a".to_owned(), "b".to_owned());
        let mut tool = vec![
            (at(0), 1, a.clone(), true),
            (at(10), 2, a.clone(), false),
            (at(12), 3, b.clone(), false),
            (at(15), 4, a.clone(), false),
            (at(40), 5, a.clone(), true),
            (at(50), 6, a.clone(), false),
        ];
        let found = incidents(&mut tool);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].opened, at(10));
        assert_eq!(found[0].recovered, Some(at(40)));
        assert_eq!(found[1].recovered, None);
        let stats = recovery(&mut tool);
        assert_eq!(stats.mttr_seconds, Some(30.0));
        assert_eq!((stats.recovered, stats.unrecovered), (1, 2));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.5), Some(5.0));
        assert_eq!(nearest_rank(&values, 0.9), Some(9.0));
        assert_eq!(nearest_rank(&values, 0.99), Some(10.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn gib_days_clip_to_the_window() {
        let stored = StoredBytes {
            tenant_id: TenantId::generate(),
            session_id: SessionId::generate(),
            workload_class: "default".to_owned(),
            run_id: None,
            bytes: GIB as u64,
            created_at: at(-86_400),
            deleted_at: Some(at(43_200)),
        };
        let days = gib_days(&stored, at(0), at(86_400));
        assert!((days - 0.5).abs() < 1e-9, "{days}");
    }

    #[test]
    fn block_rate_and_false_positives() {
        let prices = Prices::default();
        let mut usage = fact(FactKind::Usage, 1);
        usage.count = 9;
        let mut block = fact(FactKind::Block, 2);
        block.outcome = Some("egress".to_owned());
        block.reason = Some("EGRESS_DESTINATION_NOT_ALLOWED".to_owned());
        block.subject = Some("example.com:443".to_owned());
        block.reference = Some("egress:7".to_owned());
        let mut review = fact(FactKind::BlockReview, 3);
        review.reference = Some("egress:7".to_owned());
        review.outcome = Some("false_positive".to_owned());
        let facts = vec![usage, block];
        let later = vec![review];
        let metrics = compute(
            Input {
                from: at(0),
                to: at(10),
                facts: &facts,
                later: &later,
                run_usage: &[],
                stored: &[],
                prices: &prices,
            },
            GroupBy::None,
        );
        let blocks = &metrics.total.policy_blocks;
        assert_eq!(blocks.blocks, 1);
        assert_eq!(blocks.governed_actions, 9);
        assert_eq!(blocks.false_positive_ratio, Some(1.0));
        assert_eq!(metrics.total.egress_denials.len(), 1);
    }
}
