//! The engine: starts runs, claims due runs from the store under leases with fencing
//! tokens, drives each claimed run (one task per run on the node holding its lease),
//! hands tool steps to the [`StepRunner`], and journals every outcome before it acts on
//! it. Cron schedules start runs from the same loop.
//!
//! Durability: a step attempt is launched only after its `started` entry is durable, and
//! an outcome is acted on (a retry timer, the next step, a compensation) only after it
//! is durable. A crash between the two re-runs the attempt under the next lease token
//! (at least once), and a late answer from a replaced attempt is dropped (its token or
//! attempt no longer matches), so each step has exactly one recorded outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cordon_core::{
    NewJournalEntry, NewRun, ReasonCode, Run, RunId, RunStatus, Schedule, SessionId, TenantId,
    Timestamp, WorkflowDefinition,
};
use cordon_store::{RunCreated, RunWrite, Store, StoreError};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::model::{Definition, FailureClass, SessionTemplate, StepAction};
use crate::state::{
    Advance, AdvanceContext, Launch, Outcome, RunState, StepError, StepStatus, advance,
    record_heartbeat, record_outcome, step_key,
};
use crate::template::{TemplateContext, render};

/// One attempt of a tool step, with its templates rendered.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    pub session_id: Option<SessionId>,
    /// The principal the run acts as (the key that started it).
    pub principal: String,
    pub step: String,
    pub attempt: u32,
    /// The same for every attempt of this step in this run.
    pub idempotency_key: String,
    pub action: StepAction,
    /// The attempt's start-to-close timeout.
    pub timeout: Duration,
    /// Whether the step is a compensation.
    pub compensation: bool,
}

/// Lets a running step report that it is alive.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    tx: mpsc::UnboundedSender<Event>,
    launch: Launch,
}

impl Heartbeat {
    pub fn beat(&self) {
        let _ = self.tx.send(Event::Heartbeat(self.launch.clone()));
    }
}

/// Runs tool steps; composed by `control`, which owns the sandboxes, the egress
/// gateway and the artifacts.
#[async_trait]
pub trait StepRunner: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one attempt. Dropping the future must stop the attempt's work.
    async fn run(&self, request: StepRequest, heartbeat: Heartbeat) -> Outcome;
    /// Creates and activates the session a run started without one needs.
    async fn create_session(
        &self,
        tenant_id: TenantId,
        principal: &str,
        run_id: RunId,
        template: &SessionTemplate,
    ) -> Result<SessionId, StepError>;
    /// A run that created its session has ended: close the session.
    async fn close_session(&self, tenant_id: TenantId, session_id: SessionId, run: &Run);
    /// What one round of the run wrote, once it is durable: journal entries and new
    /// dead letters (for telemetry). The default does nothing.
    fn observe(
        &self,
        _run: &Run,
        _definition: &Definition,
        _journal: &[NewJournalEntry],
        _dead_letters: &[cordon_core::DeadLetter],
    ) {
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub node_id: String,
    /// How long a claim on a run lasts without renewal.
    pub lease_ttl: Duration,
    /// How often the store is asked for due runs and schedules.
    pub poll_interval: Duration,
    /// Runs claimed per poll.
    pub claim_batch: u32,
    /// A run due further off than this is released for any node to claim when due.
    pub keep_lease_within: Duration,
}

impl EngineOptions {
    pub fn new(node_id: impl Into<String>) -> Self {
        EngineOptions {
            node_id: node_id.into(),
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            claim_batch: 64,
            keep_lease_within: Duration::from_secs(2),
        }
    }
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn reason(&self) -> ReasonCode {
        match self {
            EngineError::Invalid(_) => ReasonCode::ValidationFailed,
            EngineError::Store(e) => e.reason(),
        }
    }
}

/// What starting a run needs.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub tenant_id: TenantId,
    /// The stored definition, or `None` for a run driven by agent code.
    pub definition: Option<WorkflowDefinition>,
    /// The run's name when it has no definition.
    pub name: Option<String>,
    pub session_id: Option<SessionId>,
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub principal: String,
    /// Overrides the definition's deadline.
    pub deadline: Option<Timestamp>,
}

#[derive(Debug)]
enum Event {
    Done(Launch, Outcome),
    Heartbeat(Launch),
}

/// The workflow engine of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    runner: Arc<dyn StepRunner>,
    options: EngineOptions,
    definitions: Mutex<HashMap<(TenantId, String), Arc<Definition>>>,
    /// Runs this node drives, with the notifier that wakes their task.
    active: Mutex<HashMap<RunId, Arc<Notify>>>,
    /// Every run this node saw finish (for metrics and benchmarks).
    finished: tokio::sync::broadcast::Sender<(RunId, RunStatus)>,
}

fn random() -> f64 {
    rand::random::<f64>()
}

fn fenced(run: &Run, node: &str, token: i64) -> Option<StoreError> {
    if run.lease_holder.as_deref() != Some(node) || run.lease_token != token {
        return Some(StoreError::LeaseFenced {
            presented: token,
            current: run.lease_token,
        });
    }
    None
}

fn until(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, runner: Arc<dyn StepRunner>, options: EngineOptions) -> Self {
        Engine {
            inner: Arc::new(Inner {
                store,
                runner,
                options,
                definitions: Mutex::new(HashMap::new()),
                active: Mutex::new(HashMap::new()),
                finished: tokio::sync::broadcast::channel(4096).0,
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.options.node_id
    }

    /// Runs that finish on this node, as they finish (lagging receivers lose the oldest).
    pub fn subscribe_finished(&self) -> tokio::sync::broadcast::Receiver<(RunId, RunStatus)> {
        self.inner.finished.subscribe()
    }

    /// How many runs this node is driving now.
    pub fn active_runs(&self) -> usize {
        self.inner.active.lock().map_or(0, |a| a.len())
    }

    /// Starts the poll loop: claims due runs (new, timed, orphaned by a dead node) and
    /// fires cron schedules.
    pub fn spawn(&self) -> JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.poll_loop().await })
    }

    /// Runs the poll loop in the caller's task (stops when the task is dropped).
    pub async fn run(&self) {
        self.clone().poll_loop().await;
    }

    async fn poll_loop(self) {
        let mut last_cron = Timestamp::from_unix_micros(0);
        // The first claim takes back every run this node held before a restart.
        let mut include_own = true;
        loop {
            let now = Timestamp::now();
            let lease_until = now.saturating_add_micros(until(self.inner.options.lease_ttl));
            match self
                .inner
                .store
                .claim_runs(
                    &self.inner.options.node_id,
                    now,
                    lease_until,
                    self.inner.options.claim_batch,
                    include_own,
                )
                .await
            {
                Ok(runs) => {
                    include_own = runs.len() >= self.inner.options.claim_batch as usize;
                    for run in runs {
                        self.drive(run, Vec::new(), true);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot claim runs"),
            }
            if now.unix_micros() - last_cron.unix_micros() >= 1_000_000 {
                last_cron = now;
                if let Err(error) = self.fire_schedules(now).await {
                    tracing::warn!(%error, "cannot fire schedules");
                }
            }
            tokio::time::sleep(self.inner.options.poll_interval).await;
        }
    }

    /// Wakes the run's task on this node, if it drives the run.
    pub fn kick(&self, run_id: RunId) {
        if let Ok(active) = self.inner.active.lock()
            && let Some(notify) = active.get(&run_id)
        {
            notify.notify_one();
        }
    }

    /// Parses (and caches) a stored definition.
    pub fn definition(&self, stored: &WorkflowDefinition) -> Result<Arc<Definition>, String> {
        let key = (stored.tenant_id, stored.digest.clone());
        if let Ok(cache) = self.inner.definitions.lock()
            && let Some(def) = cache.get(&key)
        {
            return Ok(Arc::clone(def));
        }
        let def = crate::definition::from_stored(&stored.document).map_err(|e| e.to_string())?;
        let def = Arc::new(def);
        if let Ok(mut cache) = self.inner.definitions.lock() {
            cache.insert(key, Arc::clone(&def));
        }
        Ok(def)
    }

    async fn load_definition(&self, run: &Run) -> Result<Option<Arc<Definition>>, String> {
        let Some(digest) = &run.definition else {
            return Ok(None);
        };
        let key = (run.tenant_id, digest.clone());
        if let Ok(cache) = self.inner.definitions.lock()
            && let Some(def) = cache.get(&key)
        {
            return Ok(Some(Arc::clone(def)));
        }
        let stored = self
            .inner
            .store
            .get_workflow_definition(run.tenant_id, digest)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("definition {digest} is missing"))?;
        self.definition(&stored).map(Some)
    }

    /// Starts a run (once per idempotency key): the run and its first step attempts are
    /// durable before this returns, and this node drives it at once.
    pub async fn start(&self, start: StartRun) -> Result<(Run, bool), EngineError> {
        let def = match &start.definition {
            Some(stored) => Some(self.definition(stored).map_err(EngineError::Invalid)?),
            None => None,
        };
        let now = Timestamp::now();
        let name = match (&def, &start.name) {
            (Some(def), _) => def.name.clone(),
            (None, Some(name)) => name.clone(),
            (None, None) => {
                return Err(EngineError::Invalid(
                    "a run needs a definition or a name".into(),
                ));
            }
        };
        let deadline = start.deadline.or_else(|| {
            def.as_ref().and_then(|d| d.deadline_ms).map(|ms| {
                now.saturating_add_micros(i64::try_from(ms).unwrap_or(i64::MAX / 1000) * 1000)
            })
        });
        let id = RunId::generate();
        let node = self.inner.options.node_id.clone();
        let lease_until = now.saturating_add_micros(until(self.inner.options.lease_ttl));
        let mut state = RunState::initial(def.as_deref());
        let mut run = Run {
            id,
            tenant_id: start.tenant_id,
            definition: start.definition.as_ref().map(|d| d.digest.clone()),
            name,
            session_id: start.session_id,
            status: RunStatus::Running,
            input: start.input.to_string(),
            state: String::new(),
            output: None,
            reason: None,
            idempotency_key: start.idempotency_key.clone(),
            created_by: start.principal.clone(),
            created_at: now,
            updated_at: now,
            deadline,
            next_due_at: None,
            lease_holder: def.as_ref().map(|_| node.clone()),
            lease_token: i64::from(def.is_some()),
            lease_expires_at: def.as_ref().map(|_| lease_until),
            journal_seq: 0,
        };
        let mut journal = vec![NewJournalEntry {
            step: None,
            attempt: 0,
            kind: "run_started".to_owned(),
            reason: None,
            detail: json!({"by": start.principal, "definition": run.definition, "session": run.session_id.map(|s| s.to_string())}).to_string(),
            at: now,
        }];
        let mut launches = Vec::new();
        if let Some(def) = &def {
            let session_ready = !def.needs_session() || run.session_id.is_some();
            let cx = AdvanceContext {
                now,
                token: 1,
                random: random(),
                session_ready,
            };
            let out = advance(&mut run, &mut state, def, cx);
            journal.extend(out.journal);
            launches = out.launches;
            if !session_ready {
                run.next_due_at = Some(now);
            }
        }
        run.state = state.to_text();
        let new = NewRun {
            id,
            tenant_id: run.tenant_id,
            definition: run.definition.clone(),
            name: run.name.clone(),
            session_id: run.session_id,
            status: run.status,
            input: run.input.clone(),
            state: run.state.clone(),
            idempotency_key: run.idempotency_key.clone(),
            created_by: run.created_by.clone(),
            created_at: now,
            deadline,
            next_due_at: run.next_due_at,
            lease_holder: run.lease_holder.clone(),
            lease_expires_at: run.lease_expires_at,
        };
        match self.inner.store.create_run(&new, &journal).await? {
            RunCreated::New(stored) => {
                if def.is_some() {
                    self.drive(stored.clone(), launches, false);
                }
                Ok((stored, true))
            }
            RunCreated::Existing(existing) => Ok((existing, false)),
        }
    }

    /// Drives a claimed run on this node, unless a task already does. A run that comes
    /// from a claim is fenced anew first: the claim may have found it under this node's
    /// own name from before a restart, and every attempt started under the old token
    /// must count as orphaned.
    fn drive(&self, run: Run, launches: Vec<Launch>, refence: bool) {
        let notify = Arc::new(Notify::new());
        {
            let Ok(mut active) = self.inner.active.lock() else {
                return;
            };
            if let Some(existing) = active.get(&run.id) {
                existing.notify_one();
                return;
            }
            active.insert(run.id, Arc::clone(&notify));
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let id = run.id;
            engine.drive_run(run, launches, notify, refence).await;
            if let Ok(mut active) = engine.inner.active.lock() {
                active.remove(&id);
            }
        });
    }

    async fn drive_run(
        &self,
        mut run: Run,
        launches: Vec<Launch>,
        notify: Arc<Notify>,
        refence: bool,
    ) {
        let node = self.inner.options.node_id.clone();
        if refence {
            let old = run.lease_token;
            let node_in = node.clone();
            let change: cordon_store::RunChange = Box::new(move |run: &mut Run| {
                if let Some(error) = fenced(run, &node_in, old) {
                    return Err(error);
                }
                run.lease_token += 1;
                Ok(RunWrite::default())
            });
            match self
                .inner
                .store
                .update_run(run.tenant_id, run.id, change)
                .await
            {
                Ok((written, _)) => run = written,
                Err(error) => {
                    tracing::debug!(run = %run.id, %error, "lost the run before driving it");
                    return;
                }
            }
        }
        let token = run.lease_token;
        let def = match self.load_definition(&run).await {
            Ok(Some(def)) => def,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(run = %run.id, %error, "cannot load the run's definition");
                return;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let mut in_flight: HashMap<(String, Option<usize>, u32), JoinHandle<()>> = HashMap::new();
        let mut last_beat: HashMap<(String, Option<usize>, u32), Timestamp> = HashMap::new();
        // A claimed run is looked at once at once; a run this node just started has
        // nothing to do until its first attempts answer.
        let mut first = refence || launches.is_empty();
        self.launch(&run, &def, launches, &tx, &mut in_flight);
        let mut pending: Vec<Event> = Vec::new();
        loop {
            // Wait for something to do, unless this is the first look after a claim.
            if !first && pending.is_empty() {
                let wait = run
                    .next_due_at
                    .map(|d| (d.unix_micros() - Timestamp::now().unix_micros()).max(0))
                    .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)))
                    .unwrap_or(self.inner.options.lease_ttl / 3)
                    .min(self.inner.options.lease_ttl / 3);
                tokio::select! {
                    Some(event) = rx.recv() => pending.push(event),
                    () = notify.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            first = false;
            while let Ok(event) = rx.try_recv() {
                pending.push(event);
            }
            // Heartbeats are written at most every quarter window; outcomes always.
            let now = Timestamp::now();
            let mut batch: Vec<Event> = Vec::new();
            for event in pending.drain(..) {
                match event {
                    Event::Heartbeat(launch) => {
                        let key = (launch.step.clone(), launch.compensation, launch.attempt);
                        let window = heartbeat_window(&def, &launch);
                        let due = last_beat
                            .get(&key)
                            .is_none_or(|t| now.unix_micros() - t.unix_micros() >= window / 4);
                        if due {
                            last_beat.insert(key, now);
                            batch.push(Event::Heartbeat(launch));
                        }
                    }
                    done => batch.push(done),
                }
            }

            // A run that needs its session gets it before any step runs.
            let mut new_session = None;
            if def.needs_session() && run.session_id.is_none() && !run.status.is_terminal() {
                match self
                    .inner
                    .runner
                    .create_session(run.tenant_id, &run.created_by, run.id, &def.session)
                    .await
                {
                    Ok(session) => new_session = Some(Ok(session)),
                    Err(error) => new_session = Some(Err(error)),
                }
            }

            let keep_within = until(self.inner.options.keep_lease_within);
            let lease_ttl = until(self.inner.options.lease_ttl);
            let in_flight_now = in_flight.len();
            let launched = Arc::new(Mutex::new(Vec::<Launch>::new()));
            let launched_in = Arc::clone(&launched);
            let written = Arc::new(Mutex::new((Vec::new(), Vec::new())));
            let written_in = Arc::clone(&written);
            let node_in = node.clone();
            let def_in = Arc::clone(&def);
            let events_in: Vec<Event> = batch;
            let change: cordon_store::RunChange = Box::new(move |run: &mut Run| {
                if let Some(error) = fenced(run, &node_in, token) {
                    return Err(error);
                }
                if run.status.is_terminal() {
                    return Ok(RunWrite::default());
                }
                let now = Timestamp::now();
                let mut state = RunState::parse(&run.state).map_err(StoreError::Backend)?;
                let mut out = Advance::default();
                match new_session {
                    Some(Ok(session)) => {
                        run.session_id = Some(session);
                        state.owns_session = true;
                        out.journal.push(NewJournalEntry {
                            step: None,
                            attempt: 0,
                            kind: "session_created".to_owned(),
                            reason: None,
                            detail: json!({"session": session.to_string()}).to_string(),
                            at: now,
                        });
                    }
                    Some(Err(error)) => {
                        crate::state::end_run(
                            &mut state,
                            &mut out,
                            RunStatus::Failed,
                            &error.reason,
                            &format!("cannot create the run's session: {}", error.message),
                            None,
                            now,
                        );
                    }
                    None => {}
                }
                for event in events_in {
                    match event {
                        Event::Done(launch, outcome) => {
                            record_outcome(
                                run,
                                &mut state,
                                &def_in,
                                &launch,
                                token,
                                outcome,
                                now,
                                random(),
                                &mut out,
                            );
                        }
                        Event::Heartbeat(launch) => {
                            if record_heartbeat(&mut state, &launch, token, now) {
                                out.journal.push(NewJournalEntry {
                                    step: Some(launch.step.clone()),
                                    attempt: launch.attempt,
                                    kind: "heartbeat".to_owned(),
                                    reason: None,
                                    detail: "{}".to_owned(),
                                    at: now,
                                });
                            }
                        }
                    }
                }
                let session_ready = !def_in.needs_session() || run.session_id.is_some();
                let cx = AdvanceContext {
                    now,
                    token,
                    random: random(),
                    session_ready,
                };
                let more = advance(run, &mut state, &def_in, cx);
                out.journal.extend(more.journal);
                out.dead_letters.extend(more.dead_letters);
                out.launches.extend(more.launches);
                let running = state
                    .steps
                    .values()
                    .chain(state.compensations.iter().map(|c| &c.state))
                    .any(|s| s.status == StepStatus::Running);
                // Keep the lease while work is in flight or due soon; release it otherwise
                // so any node can pick the run up when it is due.
                let due_soon = run
                    .next_due_at
                    .is_some_and(|d| d.unix_micros() - now.unix_micros() <= keep_within);
                if running || due_soon || in_flight_now > 0 || !out.launches.is_empty() {
                    run.lease_expires_at = Some(now.saturating_add_micros(lease_ttl));
                } else {
                    run.lease_holder = None;
                    run.lease_expires_at = None;
                }
                run.state = state.to_text();
                if let Ok(mut l) = launched_in.lock() {
                    *l = out.launches;
                }
                if let Ok(mut w) = written_in.lock() {
                    *w = (out.journal.clone(), out.dead_letters.clone());
                }
                Ok(RunWrite {
                    journal: out.journal,
                    dead_letters: out.dead_letters,
                    resolve_dead_letters: Vec::new(),
                })
            });
            match self
                .inner
                .store
                .update_run(run.tenant_id, run.id, change)
                .await
            {
                Ok((stored, _)) => {
                    run = stored;
                    let (journal, dead_letters) = written
                        .lock()
                        .map(|mut w| std::mem::take(&mut *w))
                        .unwrap_or_default();
                    if !journal.is_empty() || !dead_letters.is_empty() {
                        self.inner
                            .runner
                            .observe(&run, &def, &journal, &dead_letters);
                    }
                }
                Err(StoreError::LeaseFenced { .. } | StoreError::NotFound) => {
                    for (_, task) in in_flight.drain() {
                        task.abort();
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(run = %run.id, %error, "cannot record the run's progress; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            let launches = launched
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            // Attempts the state no longer counts as running (timed out, replaced) stop.
            let state = RunState::parse(&run.state).unwrap_or_default();
            in_flight.retain(|(step, comp, attempt), task| {
                let current = match comp {
                    Some(i) => state.compensations.get(*i).map(|c| &c.state),
                    None => state.steps.get(step),
                };
                let alive = !task.is_finished()
                    && current
                        .is_some_and(|s| s.status == StepStatus::Running && s.attempt == *attempt);
                if !alive {
                    task.abort();
                }
                alive
            });
            last_beat.retain(|key, _| in_flight.contains_key(key));
            self.launch(&run, &def, launches, &tx, &mut in_flight);
            if run.status.is_terminal() {
                for (_, task) in in_flight.drain() {
                    task.abort();
                }
                let _ = self.inner.finished.send((run.id, run.status));
                // The run's root span, from its creation to now (its steps are under it).
                drop(tracing::info_span!(
                    "run",
                    otel.trace_seed = %run.id,
                    otel.root = true,
                    otel.start_unix_nanos = run.created_at.unix_nanos(),
                    otel.error = run.status != RunStatus::Succeeded,
                    run = %run.id,
                    workflow = %run.name,
                    status = run.status.as_str(),
                ));
                if state.owns_session
                    && let Some(session) = run.session_id
                {
                    self.inner
                        .runner
                        .close_session(run.tenant_id, session, &run)
                        .await;
                }
                return;
            }
            if run.lease_holder.as_deref() != Some(node.as_str()) && in_flight.is_empty() {
                return;
            }
        }
    }

    fn launch(
        &self,
        run: &Run,
        def: &Definition,
        launches: Vec<Launch>,
        tx: &mpsc::UnboundedSender<Event>,
        in_flight: &mut HashMap<(String, Option<usize>, u32), JoinHandle<()>>,
    ) {
        if launches.is_empty() {
            return;
        }
        let state = RunState::parse(&run.state).unwrap_or_default();
        let outputs = state.outputs();
        let input: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
        for launch in launches {
            let step = match launch.compensation {
                Some(_) => def.compensation(&launch.step),
                None => def.step(&launch.step),
            };
            let Some(step) = step else { continue };
            let key = step_key(&run.id, &launch.step);
            let cx = TemplateContext {
                input: &input,
                steps: &outputs,
                run_id: &run.id.to_string(),
                step_key: &key,
            };
            let tx = tx.clone();
            let slot = (launch.step.clone(), launch.compensation, launch.attempt);
            if let StepAction::Noop { output } = &step.action {
                let _ = tx.send(Event::Done(
                    launch,
                    Outcome::Succeeded(output.clone().unwrap_or(Value::Null)),
                ));
                continue;
            }
            let action = match render_action(&step.action, &cx) {
                Ok(action) => action,
                Err(message) => {
                    let error = StepError {
                        class: FailureClass::Error,
                        reason: ReasonCode::StepFailed.as_str().to_owned(),
                        message: format!("template: {message}"),
                        exit_code: None,
                    };
                    let _ = tx.send(Event::Done(
                        launch,
                        Outcome::Failed {
                            error,
                            summary: None,
                        },
                    ));
                    continue;
                }
            };
            let request = StepRequest {
                run_id: run.id,
                tenant_id: run.tenant_id,
                session_id: run.session_id,
                principal: run.created_by.clone(),
                step: launch.step.clone(),
                attempt: launch.attempt,
                idempotency_key: key,
                action,
                timeout: Duration::from_millis(step.timeout_ms),
                compensation: launch.compensation.is_some(),
            };
            let runner = Arc::clone(&self.inner.runner);
            let heartbeat = Heartbeat {
                tx: tx.clone(),
                launch: launch.clone(),
            };
            let timeout = request.timeout;
            let span = tracing::info_span!(
                "step",
                otel.trace_seed = %run.id,
                otel.error = tracing::field::Empty,
                run = %run.id,
                workflow = %run.name,
                step = %launch.step,
                attempt = launch.attempt,
                compensation = launch.compensation.is_some(),
                outcome = tracing::field::Empty,
            );
            let step_span = span.clone();
            let task = tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let outcome =
                        match tokio::time::timeout(timeout, runner.run(request, heartbeat)).await {
                            Ok(outcome) => outcome,
                            Err(_) => Outcome::Failed {
                                error: StepError {
                                    class: FailureClass::Timeout,
                                    reason: ReasonCode::StepTimeout.as_str().to_owned(),
                                    message: format!(
                                        "the attempt ran longer than its timeout ({} ms)",
                                        timeout.as_millis()
                                    ),
                                    exit_code: None,
                                },
                                summary: None,
                            },
                        };
                    match &outcome {
                        Outcome::Succeeded(_) => step_span.record("outcome", "succeeded"),
                        Outcome::Failed { error, .. } => {
                            step_span.record("otel.error", true);
                            step_span.record("outcome", error.reason.as_str())
                        }
                    };
                    let _ = tx.send(Event::Done(launch, outcome));
                },
                span,
            ));
            in_flight.insert(slot, task);
        }
    }

    /// Starts the runs of every due schedule once, then moves each to its next time.
    async fn fire_schedules(&self, now: Timestamp) -> Result<(), StoreError> {
        let due: Vec<Schedule> = self.inner.store.due_schedules(now, 32).await?;
        for schedule in due {
            let next = crate::cron::parse(&schedule.cron)
                .ok()
                .and_then(|c| c.next_after(now));
            let Some(stored) = self
                .inner
                .store
                .get_workflow_definition(schedule.tenant_id, &schedule.definition)
                .await?
            else {
                continue;
            };
            let input = serde_json::from_str(&schedule.input).unwrap_or(Value::Null);
            let start = StartRun {
                tenant_id: schedule.tenant_id,
                definition: Some(stored),
                name: None,
                session_id: None,
                input,
                idempotency_key: Some(format!(
                    "cron:{}:{}",
                    schedule.id,
                    schedule.next_fire_at.unix_micros()
                )),
                principal: schedule.created_by.clone(),
                deadline: None,
            };
            if let Err(error) = self.start(start).await {
                tracing::warn!(schedule = %schedule.id, %error, "cannot start a scheduled run");
                continue;
            }
            let to = next.unwrap_or(Timestamp::from_unix_micros(i64::MAX));
            self.inner
                .store
                .advance_schedule(schedule.id, schedule.next_fire_at, to)
                .await?;
        }
        Ok(())
    }
}

fn heartbeat_window(def: &Definition, launch: &Launch) -> i64 {
    let step = match launch.compensation {
        Some(_) => def.compensation(&launch.step),
        None => def.step(&launch.step),
    };
    step.and_then(|s| s.heartbeat_ms)
        .map_or(i64::MAX / 4, |ms| {
            i64::try_from(ms).unwrap_or(i64::MAX / 4000) * 1000
        })
}

fn render_action(action: &StepAction, cx: &TemplateContext<'_>) -> Result<StepAction, String> {
    let r = |text: &String| render(text, cx);
    Ok(match action {
        StepAction::Exec { argv, env, cwd } => StepAction::Exec {
            argv: argv.iter().map(r).collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| Ok((k.clone(), r(v)?)))
                .collect::<Result<_, String>>()?,
            cwd: cwd.as_ref().map(r).transpose()?,
        },
        StepAction::Http {
            method,
            url,
            headers,
            body,
        } => StepAction::Http {
            method: method.clone(),
            url: r(url)?,
            headers: headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), r(v)?)))
                .collect::<Result<_, String>>()?,
            body: body.as_ref().map(r).transpose()?,
        },
        StepAction::Checkpoint { summary } => StepAction::Checkpoint {
            summary: summary.as_ref().map(r).transpose()?,
        },
        StepAction::Restore { version } => StepAction::Restore {
            version: version.as_ref().map(r).transpose()?,
        },
        StepAction::Promote { name, paths } => StepAction::Promote {
            name: r(name)?,
            paths: paths.iter().map(r).collect::<Result<_, _>>()?,
        },
        other => other.clone(),
    })
}
