//! Records telemetry facts where things happen (sessions closing, tool operations,
//! policy blocks, restores, runs ending), meters sandboxes from their cgroup counters
//! and the gateway's byte counts, and mirrors all of it into Prometheus metrics.
//!
//! Facts are written in batches by one task (every 200 ms or 256 facts); `flush`
//! waits until everything recorded before it is durable. A crash loses at most the
//! last batch, like the egress decisions of allowed requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cordon_core::{
    EgressDecision, Fact, FactKind, ReasonCode, RunId, Session, SessionId, SessionOutcome,
    TenantId, Timestamp,
};
use cordon_sandbox::SandboxManager;
use cordon_store::Store;
use cordon_telemetry::sre::{GIB, incident_key, usage_cost, usage_fact_cost};
use cordon_telemetry::{Prices, TelemetryConfig};
use tokio::sync::{mpsc, oneshot};

/// Facts written per batch at most.
const BATCH: usize = 256;
/// How long a fact waits for its batch at most.
const BATCH_WINDOW: Duration = Duration::from_millis(200);

enum Message {
    Fact(Box<Fact>),
    Flush(oneshot::Sender<()>),
}

/// What the recorder knows of a session, to attribute its facts.
#[derive(Debug, Clone)]
struct SessionInfo {
    tenant_id: TenantId,
    workload_class: String,
    run_id: Option<RunId>,
}

impl SessionInfo {
    fn of(session: &Session) -> SessionInfo {
        SessionInfo {
            tenant_id: session.tenant_id,
            workload_class: session.workload_class.clone(),
            run_id: run_of(session),
        }
    }
}

/// The run a session was created for (its `cordon.run` label).
pub fn run_of(session: &Session) -> Option<RunId> {
    session
        .labels
        .get("cordon.run")
        .and_then(|r| r.parse().ok())
}

/// A sandbox's counters at the last sample, and the gateway's counts since.
#[derive(Debug, Default, Clone, Copy)]
struct Meter {
    /// `None` until the first sample.
    cpu_usec: Option<u64>,
    memory_bytes: u64,
    sampled_at: Option<Timestamp>,
    egress_bytes: u64,
    egress_requests: u64,
    /// The last time the sandbox used CPU or the gateway saw a request.
    active_at: Option<Timestamp>,
    /// The session's tenant, once the gateway has seen it.
    tenant_id: Option<TenantId>,
}

/// The telemetry recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: TelemetryConfig,
    tx: mpsc::UnboundedSender<Message>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    writer: OnceLock<()>,
    sessions: Mutex<HashMap<SessionId, SessionInfo>>,
    meters: Mutex<HashMap<SessionId, Meter>>,
    /// Open incidents (by session or run) and when they opened, for the recovery
    /// histogram.
    incidents: Mutex<HashMap<String, Timestamp>>,
    /// Workflow steps running per session: a gateway denial then belongs to the step
    /// (its dead letter counts the block once).
    steps_in_flight: Mutex<HashMap<SessionId, usize>>,
}

/// Marks a workflow step as running in a session until dropped.
#[derive(Debug)]
pub struct StepInFlight {
    telemetry: Telemetry,
    session_id: Option<SessionId>,
}

impl Drop for StepInFlight {
    fn drop(&mut self) {
        if let Some(id) = self.session_id {
            let mut steps = lock(&self.telemetry.inner.steps_in_flight);
            if let Some(count) = steps.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    steps.remove(&id);
                }
            }
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a block fact names an egress decision: its session and instant (the decision's
/// `seq` is only assigned when the store writes it, after the gateway reports it).
pub fn block_reference(decision: &EgressDecision) -> String {
    format!(
        "egress:{}@{}",
        decision.session_id,
        decision.at.unix_micros()
    )
}

/// Whether an egress decision is a policy block (not an upstream failure, nor a
/// report-mode rule letting a request through).
pub fn is_policy_block(decision: &EgressDecision) -> bool {
    decision.mode == "enforce"
        && matches!(
            decision.reason,
            ReasonCode::EgressDestinationNotAllowed
                | ReasonCode::EgressPortNotAllowed
                | ReasonCode::EgressSchemeNotAllowed
                | ReasonCode::EgressMethodNotAllowed
                | ReasonCode::EgressNonPublicAddress
                | ReasonCode::EgressSniMismatch
                | ReasonCode::EgressSessionNotActive
                | ReasonCode::EgressCredentialLeaseExpired
        )
}

impl Telemetry {
    pub fn new(store: Arc<dyn Store>, config: TelemetryConfig) -> Telemetry {
        let (tx, rx) = mpsc::unbounded_channel();
        Telemetry {
            inner: Arc::new(Inner {
                store,
                config,
                tx,
                rx: Mutex::new(Some(rx)),
                writer: OnceLock::new(),
                sessions: Mutex::new(HashMap::new()),
                meters: Mutex::new(HashMap::new()),
                incidents: Mutex::new(HashMap::new()),
                steps_in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &TelemetryConfig {
        &self.inner.config
    }

    pub fn prices(&self) -> &Prices {
        &self.inner.config.prices
    }

    /// Queues a fact; the writer task starts with the first one.
    pub fn record(&self, fact: Fact) {
        self.start_writer();
        let _ = self.inner.tx.send(Message::Fact(Box::new(fact)));
    }

    /// Waits until every fact recorded before this call is stored.
    pub async fn flush(&self) {
        self.start_writer();
        let (done, wait) = oneshot::channel();
        if self.inner.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    fn start_writer(&self) {
        self.inner.writer.get_or_init(|| {
            let Some(rx) = lock(&self.inner.rx).take() else {
                return;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(write_facts(Arc::clone(&self.inner.store), rx));
                }
                Err(_) => tracing::error!("telemetry recorded outside a runtime: facts are lost"),
            }
        });
    }

    /// Remembers a session's attribution (its tenant, class and run).
    pub fn note_session(&self, session: &Session) {
        lock(&self.inner.sessions).insert(session.id, SessionInfo::of(session));
    }

    /// Marks a workflow step running in `session_id` until the guard drops.
    pub fn step_in_flight(&self, session_id: Option<SessionId>) -> StepInFlight {
        if let Some(id) = session_id {
            *lock(&self.inner.steps_in_flight).entry(id).or_default() += 1;
        }
        StepInFlight {
            telemetry: self.clone(),
            session_id,
        }
    }

    /// Whether this node saw the session's sandbox or gateway busy after `since`.
    pub fn active_since(&self, id: SessionId, since: Timestamp) -> bool {
        lock(&self.inner.meters)
            .get(&id)
            .and_then(|m| m.active_at)
            .is_some_and(|at| at > since)
    }

    /// The workload class of a session this node has seen.
    pub fn class_of(&self, id: SessionId) -> Option<String> {
        self.session_info(id).map(|i| i.workload_class)
    }

    fn session_info(&self, id: SessionId) -> Option<SessionInfo> {
        lock(&self.inner.sessions).get(&id).cloned()
    }

    /// A session closed: its outcome, and its sandbox's last usage sample.
    pub fn session_closed(&self, session: &Session, usage: Option<(u64, u64)>) {
        let info = SessionInfo::of(session);
        self.sample(session.id, &info, usage, Timestamp::now());
        let outcome = session.outcome.unwrap_or(SessionOutcome::Succeeded);
        let mut fact = Fact::new(session.tenant_id, FactKind::SessionClosed, Timestamp::now());
        fact.session_id = Some(session.id);
        fact.run_id = info.run_id;
        fact.workload_class = Some(session.workload_class.clone());
        fact.outcome = Some(outcome.as_str().to_owned());
        self.record(fact);
        metrics::counter!(
            "cordon_sessions_closed_total",
            "tenant" => session.tenant_id.to_string(),
            "workload_class" => session.workload_class.clone(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
        lock(&self.inner.sessions).remove(&session.id);
        lock(&self.inner.meters).remove(&session.id);
    }

    /// A tool operation ended: an exec through the API (`step` is `None`), or a
    /// workflow step attempt.
    #[allow(clippy::too_many_arguments)]
    pub fn tool(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        run_id: Option<RunId>,
        workload_class: Option<String>,
        step: Option<&str>,
        ok: bool,
        reason: Option<&str>,
        at: Timestamp,
    ) {
        let kind = if step.is_some() { "step" } else { "exec" };
        let mut fact = Fact::new(tenant_id, FactKind::Tool, at);
        fact.session_id = session_id;
        fact.run_id = run_id;
        fact.workload_class = workload_class;
        fact.subject = Some(step.map_or("exec".to_owned(), |s| format!("step:{s}")));
        fact.outcome = Some(if ok { "ok" } else { "failed" }.to_owned());
        fact.reason = reason.map(str::to_owned);
        let key = incident_key(&fact);
        self.record(fact);
        let tenant = tenant_id.to_string();
        metrics::counter!(
            "cordon_tool_operations_total",
            "tenant" => tenant.clone(),
            "kind" => kind,
            "outcome" => if ok { "ok" } else { "failed" }
        )
        .increment(1);
        metrics::counter!("cordon_governed_actions_total", "tenant" => tenant.clone(), "source" => kind)
            .increment(1);
        let mut incidents = lock(&self.inner.incidents);
        match (ok, incidents.get(&key).copied()) {
            (false, None) => {
                incidents.insert(key, at);
            }
            (true, Some(opened)) => {
                incidents.remove(&key);
                let seconds = (at.unix_micros() - opened.unix_micros()) as f64 / 1e6;
                metrics::histogram!("cordon_recovery_seconds", "tenant" => tenant, "kind" => kind)
                    .record(seconds.max(0.0));
            }
            _ => {}
        }
    }

    /// An exec through the API ended.
    pub fn exec(&self, session: &Session, ok: bool, reason: Option<ReasonCode>) {
        self.tool(
            session.tenant_id,
            Some(session.id),
            run_of(session),
            Some(session.workload_class.clone()),
            None,
            ok,
            reason.map(|r| r.as_str()),
            Timestamp::now(),
        );
    }

    /// A policy block: `source` is `egress` or `step`.
    #[allow(clippy::too_many_arguments)]
    pub fn block(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        run_id: Option<RunId>,
        workload_class: Option<String>,
        source: &'static str,
        reason: &str,
        subject: String,
        reference: String,
        at: Timestamp,
    ) {
        let tenant = tenant_id.to_string();
        metrics::counter!(
            "cordon_policy_blocks_total",
            "tenant" => tenant.clone(),
            "source" => source,
            "reason" => reason.to_owned()
        )
        .increment(1);
        if source == "egress" {
            metrics::counter!(
                "cordon_egress_denials_by_destination_total",
                "tenant" => tenant.clone(),
                "reason" => reason.to_owned(),
                "destination" => subject.clone()
            )
            .increment(1);
        } else {
            metrics::counter!("cordon_governed_actions_total", "tenant" => tenant, "source" => source)
                .increment(1);
        }
        let mut fact = Fact::new(tenant_id, FactKind::Block, at);
        fact.session_id = session_id;
        fact.run_id = run_id;
        fact.workload_class = workload_class;
        fact.outcome = Some(source.to_owned());
        fact.reason = Some(reason.to_owned());
        fact.subject = Some(subject);
        fact.reference = Some(reference);
        self.record(fact);
    }

    /// A block reviewed: `false_positive` by an operator, or `redriven` (a dead letter
    /// redriven; `step` names its step).
    #[allow(clippy::too_many_arguments)]
    pub fn block_review(
        &self,
        tenant_id: TenantId,
        reference: String,
        outcome: &'static str,
        run_id: Option<RunId>,
        step: Option<&str>,
        source: &'static str,
        at: Timestamp,
    ) {
        if outcome == "false_positive" {
            metrics::counter!(
                "cordon_policy_block_false_positives_total",
                "tenant" => tenant_id.to_string(),
                "source" => source
            )
            .increment(1);
        }
        let mut fact = Fact::new(tenant_id, FactKind::BlockReview, at);
        fact.reference = Some(reference);
        fact.outcome = Some(outcome.to_owned());
        fact.run_id = run_id;
        fact.subject = step.map(|s| format!("step:{s}"));
        self.record(fact);
    }

    /// Egress decisions were recorded: counts and bytes go to the sessions' meters,
    /// blocks become facts at once. `class` gives a session's workload class.
    pub fn egress(
        &self,
        decisions: &[EgressDecision],
        class: impl Fn(SessionId) -> Option<String>,
    ) {
        let mut by_tenant: HashMap<TenantId, u64> = HashMap::new();
        {
            let mut meters = lock(&self.inner.meters);
            for d in decisions {
                let meter = meters.entry(d.session_id).or_default();
                meter.tenant_id = Some(d.tenant_id);
                meter.egress_requests += 1;
                meter.egress_bytes += d.bytes_sent + d.bytes_received;
                *by_tenant.entry(d.tenant_id).or_default() += 1;
            }
        }
        for (tenant, count) in by_tenant {
            metrics::counter!(
                "cordon_governed_actions_total",
                "tenant" => tenant.to_string(),
                "source" => "egress"
            )
            .increment(count);
        }
        let in_steps: Vec<SessionId> = lock(&self.inner.steps_in_flight).keys().copied().collect();
        for d in decisions
            .iter()
            .filter(|d| is_policy_block(d) && !in_steps.contains(&d.session_id))
        {
            let info = self.session_info(d.session_id);
            self.block(
                d.tenant_id,
                Some(d.session_id),
                info.as_ref().and_then(|i| i.run_id),
                info.map(|i| i.workload_class)
                    .or_else(|| class(d.session_id)),
                "egress",
                d.reason.as_str(),
                format!("{}:{}", d.host, d.port),
                block_reference(d),
                d.at,
            );
        }
    }

    /// A workspace restore took `seconds`.
    pub fn restore(&self, session: &Session, seconds: f64) {
        let mut fact = Fact::new(session.tenant_id, FactKind::Restore, Timestamp::now());
        fact.session_id = Some(session.id);
        fact.run_id = run_of(session);
        fact.workload_class = Some(session.workload_class.clone());
        fact.value = seconds;
        self.record(fact);
    }

    /// A workflow run ended.
    pub fn run_finished(
        &self,
        tenant_id: TenantId,
        run_id: RunId,
        workflow: &str,
        status: &str,
        workload_class: Option<String>,
    ) {
        metrics::counter!(
            "cordon_workflow_runs_finished_total",
            "tenant" => tenant_id.to_string(),
            "workflow" => workflow.to_owned(),
            "status" => status.to_owned()
        )
        .increment(1);
        let mut fact = Fact::new(tenant_id, FactKind::RunFinished, Timestamp::now());
        fact.run_id = Some(run_id);
        fact.subject = Some(workflow.to_owned());
        fact.outcome = Some(status.to_owned());
        fact.workload_class = workload_class;
        self.record(fact);
    }

    /// Records one usage sample of a session: CPU since the last sample (from the
    /// cgroup's counter `cpu_usec`), memory held (`memory_bytes`, integrated with the
    /// trapezoid rule), and the gateway's counts since.
    fn sample(
        &self,
        session_id: SessionId,
        info: &SessionInfo,
        counters: Option<(u64, u64)>,
        now: Timestamp,
    ) {
        let (cpu_seconds, memory_gib_seconds, egress_bytes, egress_requests) = {
            let mut meters = lock(&self.inner.meters);
            let meter = meters.entry(session_id).or_default();
            let mut cpu = 0.0;
            let mut memory = 0.0;
            if let Some((cpu_usec, memory_bytes)) = counters {
                // A counter that went down belongs to a new sandbox (a lost one was
                // replaced): all of it is new.
                let since = match meter.cpu_usec {
                    Some(last) if cpu_usec >= last => cpu_usec - last,
                    _ => cpu_usec,
                };
                cpu = since as f64 / 1e6;
                // More than an idle init's few ticks: something ran.
                if since > 20_000 {
                    meter.active_at = Some(now);
                }
                if let Some(at) = meter.sampled_at {
                    let seconds = (now.unix_micros() - at.unix_micros()).max(0) as f64 / 1e6;
                    memory = (meter.memory_bytes + memory_bytes) as f64 / 2.0 / GIB * seconds;
                }
                meter.cpu_usec = Some(cpu_usec);
                meter.memory_bytes = memory_bytes;
                meter.sampled_at = Some(now);
            }
            if meter.egress_requests > 0 {
                meter.active_at = Some(now);
            }
            let out = (cpu, memory, meter.egress_bytes, meter.egress_requests);
            meter.egress_bytes = 0;
            meter.egress_requests = 0;
            out
        };
        if cpu_seconds == 0.0 && memory_gib_seconds == 0.0 && egress_requests == 0 {
            return;
        }
        let prices = self.prices();
        let tenant = info.tenant_id.to_string();
        let class = info.workload_class.clone();
        let labels = [("tenant", tenant), ("workload_class", class.clone())];
        // Fractional totals: exported as gauges that only ever grow.
        metrics::gauge!("cordon_usage_cpu_seconds_total", &labels).increment(cpu_seconds);
        metrics::gauge!("cordon_usage_memory_gib_seconds_total", &labels)
            .increment(memory_gib_seconds);
        metrics::counter!("cordon_usage_egress_bytes_total", &labels).increment(egress_bytes);
        let (cpu, memory, egress) =
            usage_cost(cpu_seconds, memory_gib_seconds, egress_bytes, prices);
        for (item, cost) in [("cpu", cpu), ("memory", memory), ("egress", egress)] {
            let labels = [
                ("tenant", info.tenant_id.to_string()),
                ("workload_class", class.clone()),
                ("item", item.to_owned()),
            ];
            metrics::gauge!("cordon_cost_total", &labels).increment(cost);
        }
        let mut fact = Fact::new(info.tenant_id, FactKind::Usage, now);
        fact.session_id = Some(session_id);
        fact.run_id = info.run_id;
        fact.workload_class = Some(class);
        fact.value = cpu_seconds;
        fact.value2 = memory_gib_seconds;
        fact.bytes = i64::try_from(egress_bytes).unwrap_or(i64::MAX);
        fact.count = i64::try_from(egress_requests).unwrap_or(i64::MAX);
        self.record(fact);
    }

    /// Samples every sandbox this node runs, and flushes the gateway's counts of
    /// sessions without one.
    pub async fn meter_once(&self, sandboxes: Option<&SandboxManager>) {
        let now = Timestamp::now();
        let mut seen: Vec<SessionId> = Vec::new();
        if let Some(sandboxes) = sandboxes {
            for (id, owner) in sandboxes.owners() {
                let (Ok(session_id), Ok(tenant_id)) =
                    (id.parse::<SessionId>(), owner.parse::<TenantId>())
                else {
                    continue;
                };
                let Some(info) = self.info_or_load(tenant_id, session_id).await else {
                    continue;
                };
                let counters = sandboxes
                    .info(&id)
                    .ok()
                    .and_then(|i| i.counters)
                    .map(|c| (c.cpu_usage_usec, c.memory_bytes));
                self.sample(session_id, &info, counters, now);
                seen.push(session_id);
            }
        }
        let pending: Vec<(SessionId, Option<TenantId>)> = lock(&self.inner.meters)
            .iter()
            .filter(|(id, m)| m.egress_requests > 0 && !seen.contains(id))
            .map(|(id, m)| (*id, m.tenant_id))
            .collect();
        for (session_id, tenant_id) in pending {
            let info = match (self.session_info(session_id), tenant_id) {
                (Some(info), _) => Some(info),
                (None, Some(tenant)) => self.info_or_load(tenant, session_id).await,
                (None, None) => None,
            };
            if let Some(info) = info {
                self.sample(session_id, &info, None, now);
            }
        }
        // Sessions closed with the gateway's last counts arriving after their final
        // sample: flushed above, now forgotten.
        lock(&self.inner.meters).retain(|_, m| m.egress_requests > 0 || m.sampled_at.is_some());
    }

    async fn info_or_load(&self, tenant_id: TenantId, id: SessionId) -> Option<SessionInfo> {
        if let Some(info) = self.session_info(id) {
            return Some(info);
        }
        let session = self.inner.store.get_session(tenant_id, id).await.ok()??;
        if session.phase != cordon_core::Phase::Closed {
            self.note_session(&session);
        }
        Some(SessionInfo::of(&session))
    }

    /// What a run's sessions cost so far (their metered usage).
    pub async fn run_cost(&self, run_id: RunId) -> f64 {
        self.flush().await;
        let filter = cordon_core::FactFilter {
            kinds: vec![FactKind::Usage],
            run_ids: vec![run_id],
            ..Default::default()
        };
        let facts = self
            .inner
            .store
            .list_facts(&filter)
            .await
            .unwrap_or_default();
        facts
            .iter()
            .map(|f| usage_fact_cost(f, self.prices()))
            .sum()
    }

    /// Meters every `meter_interval_seconds` until the process ends.
    pub fn spawn_meter(&self, sandboxes: Option<SandboxManager>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = Duration::from_secs(this.inner.config.meter_interval_seconds.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.meter_once(sandboxes.as_ref()).await;
            }
        })
    }
}

async fn write_facts(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut batch: Vec<Fact> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = if batch.is_empty() && waiting.is_empty() {
            match rx.recv().await {
                Some(m) => Some(m),
                None => return,
            }
        } else {
            tokio::time::timeout(BATCH_WINDOW, rx.recv())
                .await
                .ok()
                .flatten()
        };
        let mut flush_now = first.is_none();
        if let Some(message) = first {
            match message {
                Message::Fact(f) => batch.push(*f),
                Message::Flush(done) => {
                    waiting.push(done);
                    flush_now = true;
                }
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Message::Fact(f)) => batch.push(*f),
                Ok(Message::Flush(done)) => {
                    waiting.push(done);
                    flush_now = true;
                }
                Err(_) => break,
            }
        }
        if flush_now || batch.len() >= BATCH {
            let mut attempt = 0;
            while !batch.is_empty() {
                match store.append_facts(&batch).await {
                    Ok(()) => batch.clear(),
                    Err(error) if attempt < 5 => {
                        attempt += 1;
                        tracing::warn!(%error, "cannot store telemetry facts; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, lost = batch.len(), "telemetry facts dropped");
                        metrics::counter!("cordon_telemetry_facts_dropped_total")
                            .increment(batch.len() as u64);
                        batch.clear();
                    }
                }
            }
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// Loads what the SRE metrics, SLOs and reports need from the store and computes them.
impl crate::Control {
    /// The SRE metrics of `[from, to)` for `tenant_id` (or every tenant).
    pub async fn sre_metrics(
        &self,
        tenant_id: Option<TenantId>,
        from: Timestamp,
        to: Timestamp,
        group_by: cordon_telemetry::GroupBy,
    ) -> Result<cordon_telemetry::SreMetrics, cordon_store::StoreError> {
        let telemetry = self.telemetry();
        telemetry.flush().await;
        let store = self.store();
        let facts = store
            .list_facts(&cordon_core::FactFilter {
                tenant_id,
                from: Some(from),
                ..Default::default()
            })
            .await?;
        let (run_usage, stored) = self.costs_of(tenant_id, &facts, from, to).await?;
        Ok(cordon_telemetry::sre::compute(
            cordon_telemetry::sre::Input {
                from,
                to,
                facts: &facts,
                later: &facts,
                run_usage: &run_usage,
                stored: &stored,
                prices: telemetry.prices(),
            },
            group_by,
        ))
    }

    /// Usage facts of the runs that completed among `facts`, and the versions stored
    /// during `[from, to)`.
    async fn costs_of(
        &self,
        tenant_id: Option<TenantId>,
        facts: &[Fact],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(Vec<Fact>, Vec<cordon_core::StoredBytes>), cordon_store::StoreError> {
        let store = self.store();
        // Each run once, however many facts name it.
        let completed: Vec<RunId> = facts
            .iter()
            .filter(|f| {
                f.kind == FactKind::RunFinished && f.outcome.as_deref() == Some("succeeded")
            })
            .filter_map(|f| f.run_id)
            .collect::<std::collections::BTreeSet<RunId>>()
            .into_iter()
            .collect();
        let mut run_usage = Vec::new();
        for chunk in completed.chunks(500) {
            run_usage.extend(
                store
                    .list_facts(&cordon_core::FactFilter {
                        tenant_id,
                        kinds: vec![FactKind::Usage],
                        run_ids: chunk.to_vec(),
                        ..Default::default()
                    })
                    .await?,
            );
        }
        let stored = store.stored_bytes(tenant_id, from, to).await?;
        Ok((run_usage, stored))
    }

    /// Every objective's state at `now`, for `tenant_id` (or every tenant).
    pub async fn slo_status(
        &self,
        tenant_id: Option<TenantId>,
        now: Timestamp,
    ) -> Result<Vec<cordon_telemetry::SloStatus>, cordon_store::StoreError> {
        let telemetry = self.telemetry();
        telemetry.flush().await;
        let objectives = &telemetry.config().slos;
        let days = cordon_telemetry::slo::longest_window_days(objectives);
        let facts = self
            .store()
            .list_facts(&cordon_core::FactFilter {
                tenant_id,
                from: Some(now.saturating_add_micros(-i64::from(days) * 86_400_000_000)),
                kinds: vec![FactKind::SessionClosed, FactKind::Tool],
                ..Default::default()
            })
            .await?;
        Ok(cordon_telemetry::slo::evaluate(objectives, &facts, now))
    }

    /// Recomputes the SLO gauges over every tenant's facts.
    pub async fn export_slo_gauges(&self) {
        let statuses = match self.slo_status(None, Timestamp::now()).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "cannot compute the SLOs");
                return;
            }
        };
        for s in statuses {
            let labels = [
                ("slo", s.name.clone()),
                ("workload_class", s.workload_class.clone()),
            ];
            metrics::gauge!("cordon_slo_objective", &labels).set(s.objective);
            metrics::gauge!("cordon_slo_attainment", &labels).set(s.attainment.unwrap_or(1.0));
            metrics::gauge!("cordon_slo_error_budget_remaining", &labels)
                .set(s.error_budget_remaining);
            for (window, rate) in &s.burn_rates {
                let labels = [
                    ("slo", s.name.clone()),
                    ("workload_class", s.workload_class.clone()),
                    ("window", window.clone()),
                ];
                metrics::gauge!("cordon_slo_burn_rate", &labels).set(*rate);
            }
        }
    }

    /// Whether the tenant's evidence log matches its latest signed checkpoint: the
    /// signature verifies and the stored leaves hash to the signed root.
    pub async fn evidence_integrity(&self, tenant_id: TenantId) -> cordon_telemetry::Integrity {
        let integrity = |status: &str, entries: u64, detail: String| cordon_telemetry::Integrity {
            status: status.to_owned(),
            entries,
            detail,
        };
        let Some(artifacts) = self.artifacts() else {
            return integrity("empty", 0, "this node keeps no evidence".to_owned());
        };
        let store = self.store();
        let entries = store.evidence_size(tenant_id).await.unwrap_or(0);
        let checkpoint = match artifacts.evidence.checkpoint(tenant_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return integrity("empty", entries, "no evidence yet".to_owned()),
            Err(e) => {
                return integrity("failed", entries, format!("cannot sign a checkpoint: {e}"));
            }
        };
        let verifier = match cordon_evidence::checkpoint::Verifier::from_text(
            &artifacts.evidence.verifier_text(),
        ) {
            Ok(v) => v,
            Err(e) => return integrity("failed", entries, format!("bad verifier key: {e}")),
        };
        let signed = match verifier.verify(&checkpoint.note) {
            Ok(c) => c,
            Err(e) => return integrity("failed", entries, format!("checkpoint signature: {e}")),
        };
        let leaves = match store.evidence_leaf_hashes(tenant_id, 0, signed.size).await {
            Ok(l) => l,
            Err(e) => return integrity("failed", entries, format!("cannot read the log: {e}")),
        };
        if leaves.len() as u64 != signed.size
            || cordon_evidence::merkle::root(&leaves) != signed.root
        {
            return integrity(
                "failed",
                entries,
                format!(
                    "the stored log does not hash to the checkpoint of size {}",
                    signed.size
                ),
            );
        }
        integrity(
            "verified",
            entries,
            format!(
                "{} entries hash to the root signed by key {}",
                signed.size,
                verifier.key_id()
            ),
        )
    }

    /// The weekly report of `week` for one tenant.
    pub async fn weekly_report(
        &self,
        tenant_id: TenantId,
        tenant_name: &str,
        week: cordon_telemetry::IsoWeek,
        now: Timestamp,
    ) -> Result<cordon_telemetry::WeeklyReport, cordon_store::StoreError> {
        let telemetry = self.telemetry();
        telemetry.flush().await;
        let from = week.previous().start();
        let facts = self
            .store()
            .list_facts(&cordon_core::FactFilter {
                tenant_id: Some(tenant_id),
                from: Some(from),
                ..Default::default()
            })
            .await?;
        let (run_usage, stored) = self
            .costs_of(Some(tenant_id), &facts, from, week.end())
            .await?;
        let slos = self
            .slo_status(Some(tenant_id), week.end().min(now))
            .await?;
        let integrity = self.evidence_integrity(tenant_id).await;
        Ok(cordon_telemetry::weekly_report(
            tenant_name,
            week,
            now,
            cordon_telemetry::ReportData {
                facts: &facts,
                run_usage: &run_usage,
                stored: &stored,
            },
            telemetry.prices(),
            slos,
            integrity,
        ))
    }

    /// Closes sessions idle longer than the configured timeout with the configured
    /// outcome. Returns how many it closed.
    pub async fn close_idle_sessions(&self) -> usize {
        let config = self.telemetry().config();
        if config.session_idle_timeout_seconds == 0 {
            return 0;
        }
        let outcome: SessionOutcome = config
            .timeout_outcome
            .parse()
            .unwrap_or(SessionOutcome::Abandoned);
        let timeout = i64::try_from(config.session_idle_timeout_seconds).unwrap_or(i64::MAX / 2);
        let before = Timestamp::now().saturating_add_micros(-timeout.saturating_mul(1_000_000));
        let idle = match self.store().idle_sessions(before, 100).await {
            Ok(sessions) => sessions,
            Err(error) => {
                tracing::warn!(%error, "cannot list idle sessions");
                return 0;
            }
        };
        let mut closed = 0;
        for session in idle {
            if self.telemetry().active_since(session.id, before) {
                continue;
            }
            let reason = format!(
                "idle for more than {}s: closed by policy as {}",
                config.session_idle_timeout_seconds, outcome
            );
            match self.close(&session, outcome, "system", Some(reason)).await {
                Ok(_) => closed += 1,
                Err(error) => {
                    tracing::warn!(session = %session.id, %error, "cannot close an idle session")
                }
            }
        }
        closed
    }
}
