//! The price table and the service-level objectives, as configured by the operator
//! (`cordon serve --telemetry-config FILE`, JSON). Everything has a default, so an
//! empty file (or none) is valid.

use serde::{Deserialize, Serialize};

/// What one unit of each metered resource costs, in `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    pub currency: String,
    /// Per CPU second used by a sandbox's processes (the cgroup's counter).
    pub cpu_second: f64,
    /// Per GiB of sandbox memory held for one second.
    pub memory_gib_second: f64,
    /// Per GiB through the egress gateway, both directions.
    pub egress_gib: f64,
    /// Per GiB of stored workspace versions kept for one day.
    pub artifact_gib_day: f64,
}

impl Default for Prices {
    /// Roughly a public cloud's list prices: a vCPU-hour at $0.04, a GiB-hour of
    /// memory at $0.005, egress at $0.09/GiB, object storage at $0.023/GiB-month.
    fn default() -> Self {
        Prices {
            currency: "USD".to_owned(),
            cpu_second: 0.04 / 3600.0,
            memory_gib_second: 0.005 / 3600.0,
            egress_gib: 0.09,
            artifact_gib_day: 0.023 / 30.0,
        }
    }
}

/// Which SLI an objective is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloKind {
    /// Good: a session closed `succeeded`; total: sessions closed.
    SessionCompletion,
    /// Good: a tool failure recovered within `threshold_seconds`; total: tool failures
    /// (incidents) that recovered or have been open longer than the threshold.
    Recovery,
}

impl SloKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SloKind::SessionCompletion => "session_completion",
            SloKind::Recovery => "recovery",
        }
    }
}

/// One objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub slo: SloKind,
    /// A workload class, or `*` for one objective per class seen.
    #[serde(default = "any_class")]
    pub workload_class: String,
    /// The good fraction aimed for, in (0, 1): 0.95 means 95 %.
    pub objective: f64,
    /// The SLO's window.
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Recovery only: a recovery slower than this is bad.
    #[serde(default = "default_threshold")]
    pub threshold_seconds: f64,
}

fn any_class() -> String {
    "*".to_owned()
}

fn default_window_days() -> u32 {
    28
}

fn default_threshold() -> f64 {
    900.0
}

/// The telemetry configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub prices: Prices,
    pub slos: Vec<Objective>,
    /// A session with no lifecycle change and no sandbox activity for this long is
    /// closed by the server with `timeout_outcome` (0: never).
    pub session_idle_timeout_seconds: u64,
    /// The outcome a timed-out session closes with.
    pub timeout_outcome: String,
    /// How often sandboxes' counters are read (seconds).
    pub meter_interval_seconds: u64,
    /// How often the SLO gauges are recomputed (seconds): each time reads the SLO
    /// window's facts of every tenant.
    pub slo_interval_seconds: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            prices: Prices::default(),
            slos: vec![
                Objective {
                    slo: SloKind::SessionCompletion,
                    workload_class: any_class(),
                    objective: 0.95,
                    window_days: 28,
                    threshold_seconds: default_threshold(),
                },
                Objective {
                    slo: SloKind::Recovery,
                    workload_class: any_class(),
                    objective: 0.9,
                    window_days: 28,
                    threshold_seconds: default_threshold(),
                },
            ],
            session_idle_timeout_seconds: 0,
            timeout_outcome: "abandoned".to_owned(),
            meter_interval_seconds: 15,
            slo_interval_seconds: 30,
        }
    }
}

impl TelemetryConfig {
    /// Parses and checks a configuration file's text; the error names the field.
    pub fn parse(text: &str) -> Result<TelemetryConfig, String> {
        let config: TelemetryConfig =
            serde_json::from_str(text).map_err(|e| format!("telemetry config: {e}"))?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), String> {
        let prices = [
            ("prices.cpu_second", self.prices.cpu_second),
            ("prices.memory_gib_second", self.prices.memory_gib_second),
            ("prices.egress_gib", self.prices.egress_gib),
            ("prices.artifact_gib_day", self.prices.artifact_gib_day),
        ];
        for (name, value) in prices {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{name}: must be a number >= 0"));
            }
        }
        for (i, o) in self.slos.iter().enumerate() {
            if !(o.objective > 0.0 && o.objective < 1.0) {
                return Err(format!("slos[{i}].objective: must be between 0 and 1"));
            }
            if o.window_days == 0 || o.window_days > 366 {
                return Err(format!("slos[{i}].window_days: must be 1 to 366"));
            }
            if !o.threshold_seconds.is_finite() || o.threshold_seconds <= 0.0 {
                return Err(format!("slos[{i}].threshold_seconds: must be > 0"));
            }
        }
        self.timeout_outcome
            .parse::<cordon_core::SessionOutcome>()
            .map_err(|e| format!("timeout_outcome: {e}"))?;
        if self.meter_interval_seconds == 0 {
            return Err("meter_interval_seconds: must be >= 1".to_owned());
        }
        if self.slo_interval_seconds == 0 {
            return Err("slo_interval_seconds: must be >= 1".to_owned());
        }
        Ok(())
    }
}
