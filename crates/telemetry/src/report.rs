//! The weekly report: cost, risk and delivery of one ISO week against the week before,
//! rendered as Markdown or as one self-contained HTML page with inline SVG charts.

use std::fmt::Write as _;

use cordon_core::Timestamp;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Time, Weekday};

use crate::slo::SloStatus;
use crate::sre::GroupMetrics;

/// One ISO 8601 week, Monday 00:00 UTC to the next Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoWeek {
    pub year: i32,
    pub week: u8,
}

impl IsoWeek {
    /// Parses `2026-W48`.
    pub fn parse(text: &str) -> Result<IsoWeek, String> {
        let bad = || format!("week `{text}`: expected an ISO week such as 2026-W48");
        let (year, week) = text.split_once("-W").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u8 = week.parse().map_err(|_| bad())?;
        Date::from_iso_week_date(year, week, Weekday::Monday).map_err(|_| bad())?;
        Ok(IsoWeek { year, week })
    }

    /// The week holding `at`.
    pub fn containing(at: Timestamp) -> IsoWeek {
        let date = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.unix_micros()) * 1_000)
            .map(|t| t.date())
            .unwrap_or(Date::MIN);
        let (year, week, _) = date.to_iso_week_date();
        IsoWeek { year, week }
    }

    /// The last week that has ended at `now`.
    pub fn last_complete(now: Timestamp) -> IsoWeek {
        IsoWeek::containing(now).previous()
    }

    fn monday(self) -> Date {
        Date::from_iso_week_date(self.year, self.week, Weekday::Monday).unwrap_or(Date::MIN)
    }

    pub fn start(self) -> Timestamp {
        let start = self.monday().with_time(Time::MIDNIGHT).assume_utc();
        Timestamp::from_unix_micros(
            i64::try_from(start.unix_timestamp_nanos() / 1_000).unwrap_or(0),
        )
    }

    pub fn end(self) -> Timestamp {
        self.start().saturating_add_micros(7 * 86_400_000_000)
    }

    pub fn previous(self) -> IsoWeek {
        IsoWeek::containing(self.start().saturating_add_micros(-1))
    }

    /// The start of day `index` (0 = Monday).
    pub fn day(self, index: u8) -> Timestamp {
        self.start()
            .saturating_add_micros(i64::from(index) * 86_400_000_000)
    }
}

impl std::fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-W{:02}", self.year, self.week)
    }
}

/// The evidence log's state, as checked when the report was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    /// `verified`, `empty` or `failed`.
    pub status: String,
    pub entries: u64,
    pub detail: String,
}

/// One day of the week, for the charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// `YYYY-MM-DD`
    pub date: String,
    pub sessions_succeeded: u64,
    pub sessions_failed: u64,
    pub runs_completed: u64,
    pub blocks: u64,
    pub cost: f64,
}

/// Everything the weekly report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklyReport {
    pub tenant: String,
    pub week: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub currency: String,
    pub this_week: GroupMetrics,
    pub previous_week: GroupMetrics,
    pub by_workload_class: Vec<GroupMetrics>,
    pub slos: Vec<SloStatus>,
    pub integrity: Integrity,
    pub days: Vec<Day>,
}

/// "+12.5 %" / "-3.0 %" / "new" / "=", this against the previous value.
pub fn change(this: f64, previous: f64) -> String {
    if (this - previous).abs() < 1e-12 {
        return "=".to_owned();
    }
    if previous.abs() < 1e-12 {
        return "new".to_owned();
    }
    let pct = (this - previous) / previous.abs() * 100.0;
    format!("{}{:.1} %", if pct >= 0.0 { "+" } else { "" }, pct)
}

/// A change in percentage points, for rates.
fn change_pp(this: Option<f64>, previous: Option<f64>) -> String {
    match (this, previous) {
        (Some(t), Some(p)) => format!("{:+.1} pp", (t - p) * 100.0),
        (Some(_), None) => "new".to_owned(),
        _ => "–".to_owned(),
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

fn money(currency: &str, value: f64) -> String {
    format!("{} {currency}", amount(value))
}

/// Two decimals, or three significant digits for amounts under a cent (a test week's
/// cost is a fraction of one).
fn amount(value: f64) -> String {
    if value == 0.0 || value.abs() >= 0.01 || !value.is_finite() {
        return format!("{value:.2}");
    }
    // Three significant digits, written out in full.
    let digits = (2.0 - value.abs().log10().floor()).clamp(2.0, 12.0) as usize;
    format!("{value:.digits$}")
}

fn secs(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2} s"))
}

/// One row of a section: label, this week, previous week, change.
struct Row {
    label: &'static str,
    this: String,
    previous: String,
    change: String,
}

fn count_row(label: &'static str, this: u64, previous: u64) -> Row {
    Row {
        label,
        this: this.to_string(),
        previous: previous.to_string(),
        change: change(this as f64, previous as f64),
    }
}

fn sections(r: &WeeklyReport) -> Vec<(&'static str, Vec<Row>)> {
    let (t, p, c) = (&r.this_week, &r.previous_week, r.currency.as_str());
    let cost = vec![
        Row {
            label: "Total cost",
            this: money(c, t.cost.total),
            previous: money(c, p.cost.total),
            change: change(t.cost.total, p.cost.total),
        },
        Row {
            label: "Cost per completed workflow",
            this: t
                .workflows
                .cost_per_completed
                .map_or("–".to_owned(), |v| money(c, v)),
            previous: p
                .workflows
                .cost_per_completed
                .map_or("–".to_owned(), |v| money(c, v)),
            change: match (
                t.workflows.cost_per_completed,
                p.workflows.cost_per_completed,
            ) {
                (Some(a), Some(b)) => change(a, b),
                _ => "–".to_owned(),
            },
        },
        Row {
            label: "CPU seconds",
            this: amount(t.cost.cpu_seconds),
            previous: amount(p.cost.cpu_seconds),
            change: change(t.cost.cpu_seconds, p.cost.cpu_seconds),
        },
        Row {
            label: "Memory GiB-seconds",
            this: amount(t.cost.memory_gib_seconds),
            previous: amount(p.cost.memory_gib_seconds),
            change: change(t.cost.memory_gib_seconds, p.cost.memory_gib_seconds),
        },
        count_row("Egress bytes", t.cost.egress_bytes, p.cost.egress_bytes),
        Row {
            label: "Artifact GiB-days",
            this: amount(t.cost.artifact_gib_days),
            previous: amount(p.cost.artifact_gib_days),
            change: change(t.cost.artifact_gib_days, p.cost.artifact_gib_days),
        },
    ];
    let risk = vec![
        count_row(
            "Policy blocks",
            t.policy_blocks.blocks,
            p.policy_blocks.blocks,
        ),
        Row {
            label: "Policy-block rate",
            this: pct(t.policy_blocks.block_rate),
            previous: pct(p.policy_blocks.block_rate),
            change: change_pp(t.policy_blocks.block_rate, p.policy_blocks.block_rate),
        },
        Row {
            label: "False-positive ratio",
            this: pct(t.policy_blocks.false_positive_ratio),
            previous: pct(p.policy_blocks.false_positive_ratio),
            change: change_pp(
                t.policy_blocks.false_positive_ratio,
                p.policy_blocks.false_positive_ratio,
            ),
        },
        count_row(
            "Egress denials",
            t.policy_blocks.egress_denied,
            p.policy_blocks.egress_denied,
        ),
        count_row(
            "Incidents (tool failures)",
            t.recovery.incidents,
            p.recovery.incidents,
        ),
        Row {
            label: "Mean time to recovery",
            this: secs(t.recovery.mttr_seconds),
            previous: secs(p.recovery.mttr_seconds),
            change: match (t.recovery.mttr_seconds, p.recovery.mttr_seconds) {
                (Some(a), Some(b)) => change(a, b),
                _ => "–".to_owned(),
            },
        },
        Row {
            label: "Evidence integrity",
            this: format!("{} ({} entries)", r.integrity.status, r.integrity.entries),
            previous: "–".to_owned(),
            change: "–".to_owned(),
        },
    ];
    let delivery = vec![
        count_row("Sessions closed", t.sessions.closed, p.sessions.closed),
        count_row(
            "Sessions succeeded",
            t.sessions.succeeded,
            p.sessions.succeeded,
        ),
        Row {
            label: "Session success rate",
            this: pct(t.sessions.success_rate),
            previous: pct(p.sessions.success_rate),
            change: change_pp(t.sessions.success_rate, p.sessions.success_rate),
        },
        count_row(
            "Workflow runs completed",
            t.workflows.completed,
            p.workflows.completed,
        ),
        count_row(
            "Workflow runs failed",
            t.workflows.failed,
            p.workflows.failed,
        ),
        Row {
            label: "Artifact restore p90",
            this: secs(t.artifact_restore.p90_seconds),
            previous: secs(p.artifact_restore.p90_seconds),
            change: match (
                t.artifact_restore.p90_seconds,
                p.artifact_restore.p90_seconds,
            ) {
                (Some(a), Some(b)) => change(a, b),
                _ => "–".to_owned(),
            },
        },
    ];
    vec![("Cost", cost), ("Risk", risk), ("Delivery", delivery)]
}

fn slo_line(s: &SloStatus) -> (String, String, String, String) {
    (
        format!("{} ({})", s.name, s.workload_class),
        format!("{:.1} %", s.objective * 100.0),
        pct(s.attainment),
        format!("{:.0} %", s.error_budget_remaining * 100.0),
    )
}

/// The report as Markdown.
pub fn markdown(r: &WeeklyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Cordon weekly report: {} ({})\n", r.week, r.tenant);
    let _ = writeln!(
        out,
        "{} to {} (UTC); generated {}. Changes are against the week before.\n",
        r.from, r.to, r.generated_at
    );
    for (title, rows) in sections(r) {
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(out, "| | this week | previous week | change |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for row in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.label, row.this, row.previous, row.change
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Service-level objectives\n");
    if r.slos.is_empty() {
        let _ = writeln!(out, "No objective had events.\n");
    } else {
        let _ = writeln!(out, "| objective | target | attained | budget left |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for s in &r.slos {
            let (name, target, attained, budget) = slo_line(s);
            let _ = writeln!(out, "| {name} | {target} | {attained} | {budget} |");
        }
        out.push('\n');
    }
    if !r.this_week.egress_denials.is_empty() {
        let _ = writeln!(out, "## Top egress denial causes\n");
        let _ = writeln!(out, "| reason | destination | count |");
        let _ = writeln!(out, "|---|---|---:|");
        for d in &r.this_week.egress_denials {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                md_cell(&d.reason),
                md_cell(&d.destination),
                d.count
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## By day\n");
    let _ = writeln!(
        out,
        "| day | sessions ok | sessions failed | runs completed | blocks | cost |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for d in &r.days {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            d.date,
            d.sessions_succeeded,
            d.sessions_failed,
            d.runs_completed,
            d.blocks,
            amount(d.cost)
        );
    }
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small bar chart: one bar (or a stack of two) per day.
fn bar_chart(title: &str, days: &[Day], values: &[(f64, f64)], colors: (&str, &str)) -> String {
    let (width, height, pad) = (320.0, 120.0, 18.0);
    let max = values
        .iter()
        .map(|(a, b)| a + b)
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let slot = (width - 2.0 * pad) / values.len().max(1) as f64;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" \
         aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let base = height - pad;
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#999\"/>",
        width - pad
    );
    for (i, ((a, b), day)) in values.iter().zip(days).enumerate() {
        let x = pad + slot * i as f64 + slot * 0.15;
        let w = slot * 0.7;
        let ha = a / max * (height - 2.0 * pad);
        let hb = b / max * (height - 2.0 * pad);
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{ha:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
            base - ha,
            colors.0,
            escape(&day.date),
            fmt_num(*a)
        );
        if *b > 0.0 {
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{hb:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                base - ha - hb,
                colors.1,
                escape(&day.date),
                fmt_num(*b)
            );
        }
        let label = day.date.get(8..10).unwrap_or("");
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            x + w / 2.0,
            height - 5.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{pad}\" y=\"11\" font-size=\"9\" fill=\"#555\">max {}</text></svg></figure>",
        fmt_num(max)
    );
    svg
}

fn fmt_num(v: f64) -> String {
    if v.fract().abs() < 1e-9 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        amount(v)
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;\
max-width:60rem;color:#1d2330;padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;\
border-bottom:1px solid #e3e6ec;padding-bottom:.3rem}table{border-collapse:collapse;width:100%}\
td,th{padding:.35rem .6rem;border-bottom:1px solid #eef0f4;text-align:right}td:first-child,\
th:first-child{text-align:left}.up{color:#0a7a3d}.down{color:#b42318}.charts{display:flex;\
flex-wrap:wrap;gap:1rem}figure{margin:0}figcaption{font-size:.85rem;color:#555}\
.muted{color:#667}.pill{border-radius:999px;padding:.1rem .5rem;font-size:.8rem}\
.verified{background:#dcfae6;color:#085d3a}.failed{background:#fee4e2;color:#912018}\
.empty{background:#eef0f4;color:#444}";

/// The report as one self-contained HTML page (no script, no external resource).
pub fn html(r: &WeeklyReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Cordon weekly report {week}</title><style>{STYLE}</style></head><body>\
         <h1>Cordon weekly report: {week}</h1><p class=\"muted\">Tenant {tenant}. {from} to {to} \
         (UTC); generated {generated}. Changes are against the week before.</p>",
        week = escape(&r.week),
        tenant = escape(&r.tenant),
        from = escape(&r.from),
        to = escape(&r.to),
        generated = escape(&r.generated_at)
    );
    let status_class = match r.integrity.status.as_str() {
        "verified" => "verified",
        "failed" => "failed",
        _ => "empty",
    };
    let _ = write!(
        out,
        "<p>Evidence integrity: <span class=\"pill {status_class}\">{}</span> <span class=\"muted\">{}</span></p>",
        escape(&r.integrity.status),
        escape(&r.integrity.detail)
    );
    out.push_str("<div class=\"charts\">");
    let cost: Vec<(f64, f64)> = r.days.iter().map(|d| (d.cost, 0.0)).collect();
    let sessions: Vec<(f64, f64)> = r
        .days
        .iter()
        .map(|d| (d.sessions_succeeded as f64, d.sessions_failed as f64))
        .collect();
    let blocks: Vec<(f64, f64)> = r.days.iter().map(|d| (d.blocks as f64, 0.0)).collect();
    let runs: Vec<(f64, f64)> = r
        .days
        .iter()
        .map(|d| (d.runs_completed as f64, 0.0))
        .collect();
    out.push_str(&bar_chart(
        &format!("Cost per day ({})", r.currency),
        &r.days,
        &cost,
        ("#3b6fd8", "#3b6fd8"),
    ));
    out.push_str(&bar_chart(
        "Sessions per day (succeeded, failed on top)",
        &r.days,
        &sessions,
        ("#12a150", "#d92d20"),
    ));
    out.push_str(&bar_chart(
        "Workflow runs completed per day",
        &r.days,
        &runs,
        ("#7a5af8", "#7a5af8"),
    ));
    out.push_str(&bar_chart(
        "Policy blocks per day",
        &r.days,
        &blocks,
        ("#f79009", "#f79009"),
    ));
    out.push_str("</div>");
    for (title, rows) in sections(r) {
        let _ = write!(
            out,
            "<h2>{title}</h2><table><thead><tr><th></th><th>this week</th><th>previous week</th>\
             <th>change</th></tr></thead><tbody>"
        );
        for row in rows {
            let class = if row.change.starts_with('+') {
                "up"
            } else if row.change.starts_with('-') {
                "down"
            } else {
                ""
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                escape(row.label),
                escape(&row.this),
                escape(&row.previous),
                escape(&row.change)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("<h2>Service-level objectives</h2>");
    if r.slos.is_empty() {
        out.push_str("<p class=\"muted\">No objective had events.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th>objective</th><th>target</th><th>attained</th>\
             <th>budget left</th></tr></thead><tbody>",
        );
        for s in &r.slos {
            let (name, target, attained, budget) = slo_line(s);
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&name),
                escape(&target),
                escape(&attained),
                escape(&budget)
            );
        }
        out.push_str("</tbody></table>");
    }
    if !r.this_week.egress_denials.is_empty() {
        out.push_str(
            "<h2>Top egress denial causes</h2><table><thead><tr><th>reason</th>\
             <th>destination</th><th>count</th></tr></thead><tbody>",
        );
        for d in &r.this_week.egress_denials {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.reason),
                escape(&d.destination),
                d.count
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks() {
        let week = IsoWeek::parse("2026-W48").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(week.start().to_string(), "2026-11-23T00:00:00Z");
        assert_eq!(week.end().to_string(), "2026-11-30T00:00:00Z");
        assert_eq!(week.previous().to_string(), "2026-W47");
        assert_eq!(
            IsoWeek::parse("2027-W01").map(|w| w.previous().to_string()),
            Ok("2026-W53".to_owned())
        );
        assert!(IsoWeek::parse("2026-W54").is_err());
        assert!(IsoWeek::parse("2026-48").is_err());
        assert_eq!(IsoWeek::containing(week.start()).to_string(), "2026-W48");
        assert_eq!(IsoWeek::last_complete(week.day(3)).to_string(), "2026-W47");
    }

    #[test]
    fn small_amounts_keep_three_significant_digits() {
        assert_eq!(amount(12.345), "12.35");
        assert_eq!(amount(0.0), "0.00");
        assert_eq!(amount(0.004_06), "0.00406");
        assert_eq!(amount(0.000_000_040_6), "0.0000000406");
    }

    #[test]
    fn changes() {
        assert_eq!(change(110.0, 100.0), "+10.0 %");
        assert_eq!(change(90.0, 100.0), "-10.0 %");
        assert_eq!(change(5.0, 0.0), "new");
        assert_eq!(change(0.0, 0.0), "=");
    }

    #[test]
    fn html_escapes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
