//! One rollout in `canary serve`: its engine, its traffic layer and its
//! stored record, driven by a task of its own.
//!
//! # The order of every step (crash safety)
//! 1. The input (a tick's window, or an operator's event) is fed to the
//!    engine, which decides.
//! 2. The input goes into the rollout's journal, the decisions into its
//!    event log and the weight they call for into its state — one
//!    compare-and-set transaction. Nothing has moved yet.
//! 3. The weight is set on the traffic layer.
//! 4. Once the traffic layer took it, the state records it as applied.
//!
//! A kill at any instant leaves the store at a step boundary. On restart
//! the journal is replayed into a fresh engine — the same state, the same
//! evidence, the same judge's running totals, so no fresh test spends α
//! again — and the recorded weight is set again (setting a weight twice is
//! harmless; a transition is in the journal once). The time of a rollout is
//! the wall clock since its start, so a stage keeps the bake time it had
//! and the time the server was down counts as passed (windows of that time
//! are simply missing, which never promotes; a stage whose timeout passed
//! meanwhile ends as its policy says).
//!
//! A store write that fails leaves the engine ahead of the store: the
//! runner then moves no weight, and rebuilds the engine from the store
//! before its next step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use std::collections::BTreeMap;

use canary_core::spec::{Webhook, WebhookType, DEFAULT_RETRY_FOR};
use canary_core::{Check, Command, Event, Mode, Phase, Policy, TransitionError};
use canary_engine::{Engine, Input, MetricsSource, TrafficActuator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::commit::Committer;
use crate::driver::Driver;
use crate::history::Looks;
use crate::hooks::{call, hook_body, notification_body, notification_event, About, Answer, Told};
use crate::model::{rfc3339, Counts, EventEntry, Look, MetricsInfo, RolloutStatus, TrafficInfo};
use crate::store::{
    EventRecord, NewDelivery, NewEvent, NewRollout, RolloutRecord, Store, StoreError, Update,
};

/// The wall clock, milliseconds since the Unix epoch (passed in).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock in Unix seconds, for a metrics source's queries.
fn unix_clock(c: WallClock) -> canary_prometheus::UnixClock {
    Arc::new(move || c() as f64 / 1000.0)
}

/// An API error: status, one line, details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What is wrong.
    pub error: String,
    /// Each problem.
    pub details: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Exists(n) => ApiError::new(409, format!("rollout `{n}` is running")),
            StoreError::NotFound(n) => ApiError::new(404, format!("no rollout `{n}`")),
            StoreError::Conflict { .. } => ApiError::new(409, e.to_string()),
            StoreError::NotLeader(_) | StoreError::Backend { .. } => ApiError::new(503, chain(&e)),
        }
    }
}

/// What the server shares with every runner.
pub(crate) struct Ctx {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub clock: WallClock,
    pub changes: broadcast::Sender<Arc<Change>>,
    pub counters: Mutex<Counters>,
    pub seed: u64,
    /// Wakes the outbox's sender when deliveries were queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// The election, with high availability.
    pub leadership: Option<Arc<crate::ha::Leadership>>,
}

impl Ctx {
    /// Whether this server may act: always without high availability;
    /// with it, only while it leads and its lease is renewed in time.
    pub(crate) fn acting(&self) -> bool {
        self.leadership.as_ref().is_none_or(|l| l.acting())
    }
}

/// Counters for `/metrics`, since the server started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Verdicts by outcome.
    pub verdicts: std::collections::BTreeMap<String, u64>,
    /// Decisions by action.
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Ticks run.
    pub ticks: u64,
    /// Outbox delivery attempts by outcome (`delivered`, `retry`,
    /// `gave_up`).
    pub deliveries: std::collections::BTreeMap<&'static str, u64>,
}

/// One state change, for the watchers.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub status: RolloutStatus,
    pub events: Vec<EventEntry>,
    /// The judge's look this change made, if it judged a window.
    pub look: Option<Look>,
    pub deleted: bool,
}

/// An operator action: the last segment of
/// `POST /api/v1/rollouts/{name}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum Action {
    /// Hold the weight.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Finish the current stage now.
    Promote,
    /// Straight to 100 %.
    PromoteFull,
    /// Weight 0 at once.
    Abort,
    /// Start a rolled-back or aborted rollout again.
    Retry,
}

impl Action {
    /// The action of a URL segment.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "promote" => Action::Promote,
            "promote-full" => Action::PromoteFull,
            "abort" => Action::Abort,
            "retry" => Action::Retry,
            _ => return None,
        })
    }

    /// Its URL segment.
    pub fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Abort => "abort",
            Action::Retry => "retry",
        }
    }
}

/// What a runner is asked to do.
pub(crate) enum Cmd {
    Act {
        action: Action,
        actor: String,
        reason: Option<String>,
        reply: oneshot::Sender<Result<RolloutStatus, ApiError>>,
    },
    Delete {
        force: bool,
        actor: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Stop driving (server shutdown, or a finished rollout replaced).
    Stop { reply: oneshot::Sender<()> },
}

/// A runner as the API sees it.
pub(crate) struct Entry {
    pub tx: mpsc::Sender<Cmd>,
    pub status: RwLock<RolloutStatus>,
    /// How many looks the judge made in this generation (none kept: the
    /// history is rebuilt from the journal when asked for).
    pub looks: RwLock<Looks>,
}

impl Entry {
    pub(crate) fn status(&self) -> RolloutStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The judge's looks in the current generation of rollout `name`, as
/// `GET /api/v1/rollouts/{name}/history` has them: its stored spec, state
/// and journal replayed into a fresh engine (off the async threads).
pub(crate) async fn history_of(ctx: &Ctx, name: &str) -> Result<crate::model::History, ApiError> {
    let store = ctx.store.clone();
    let n = name.to_string();
    let rec = blocking(move || store.get(&n))
        .await?
        .ok_or_else(|| ApiError::new(404, format!("no rollout named `{name}`")))?;
    let policy = canary_prometheus::policy_from_text(&rec.spec)
        .map_err(|e| ApiError::new(500, format!("rollout `{name}`: its stored spec: {e}")))?;
    let st: Stored = serde_json::from_value(rec.state).map_err(|e| {
        ApiError::new(
            500,
            format!("rollout `{name}`: stored state unreadable: {e}"),
        )
    })?;
    let store = ctx.store.clone();
    let n = name.to_string();
    let journal = blocking(move || store.journal(&n)).await?;
    let n = name.to_string();
    let built = tokio::task::spawn_blocking(move || {
        replay_inputs(&n, &policy, &st, journal).map(|(_, looks)| looks.history(&n))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            500,
            format!("rollout `{name}`: the replay did not finish: {e}"),
        )
    })?;
    built.map_err(|e| ApiError::new(500, e))
}

/// The rollout's state as stored (beside the journal that rebuilds its
/// engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    /// Starts over (`retry`) so far.
    generation: u64,
    /// When this generation started, ms since the epoch: the engine's
    /// time is the wall clock since then.
    origin_ms: u64,
    /// The weight the decisions call for.
    desired_weight: f64,
    /// The weight the traffic layer last took.
    applied_weight: f64,
    /// The phase, for readers of the store.
    phase: String,
}

pub(crate) struct Runner {
    ctx: Arc<Ctx>,
    entry: Arc<Entry>,
    name: String,
    policy: Policy,
    engine: Engine,
    driver: Driver,
    origin: Arc<AtomicU64>,
    revision: u64,
    updated_ms: u64,
    st: Stored,
    /// The engine is ahead of the store (a write failed): rebuild first.
    stale: bool,
    /// A permanent failure of the metrics source, not yet acted on (the
    /// rollout stops).
    permanent: Option<String>,
    /// A weight the traffic layer refused for good, not yet acted on (the
    /// rollout pauses where it is).
    refused: Option<String>,
    /// The weight the traffic layer last refused for good: not set again
    /// on every tick (the layer keeps what it last took) until an
    /// operator acts or the server restarts.
    refused_weight: Option<f64>,
    source_failures: u64,
    last_error: Option<String>,
    /// `created_at` and (origin, `started_at`), formatted once.
    stamps: (String, (u64, String)),
    /// Each webhook's last answer (for the log, which gets the changes,
    /// and the status).
    answers: BTreeMap<String, Answer>,
    /// The `pre-rollout` webhooks being called (retried until their
    /// timeout): each hook, its last answer and the attempts.
    pre: Option<tokio::task::JoinHandle<Vec<(Webhook, Answer, u32)>>>,
    /// The `confirm-rollout` webhooks answered 2xx (this run).
    confirmed: bool,
    /// The wait at the `confirm-rollout` gate is logged (this run).
    waiting_logged: bool,
    /// Whether the store has the rollout as finished (the write that
    /// finishes it queues the `post-rollout` webhooks).
    stored_finished: bool,
    /// The look the last input made, kept and published once the input is
    /// committed.
    fresh_look: Option<Look>,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(": ");
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

fn refused(e: TransitionError, action: &str) -> ApiError {
    let phase = match &e {
        TransitionError::Terminal { phase, .. } | TransitionError::NotAllowed { phase, .. } => {
            *phase
        }
    };
    ApiError::new(409, format!("cannot {action}: {e}"))
        .with_details(vec![format!("phase: {phase}")])
}

/// The entry of an event record.
pub(crate) fn entry_of(e: &EventRecord) -> EventEntry {
    EventEntry {
        seq: e.seq,
        time: rfc3339(e.event.at_ms),
        at_ms: e.event.at_ms,
        actor: e.event.actor.clone(),
        event: e.event.event.clone(),
        reason: e.event.reason.clone(),
        detail: e.event.detail.clone(),
    }
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Backend {
            message: "the store call did not finish".into(),
            source: Box::new(e),
        }),
    }
}

fn sim_clock(wall: WallClock, origin: Arc<AtomicU64>) -> canary_sim::live::Clock {
    Arc::new(move || Duration::from_millis(wall().saturating_sub(origin.load(Ordering::SeqCst))))
}

fn seed_for(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Runner {
    /// Creates and starts a rollout: starts its traffic layer, stores it,
    /// applies `start`. Returns the runner (not yet spawned).
    pub(crate) async fn create(
        ctx: Arc<Ctx>,
        spec: String,
        policy: Policy,
        actor: &str,
    ) -> Result<Runner, ApiError> {
        let now = (ctx.clock)();
        let origin = Arc::new(AtomicU64::new(now));
        let driver = Driver::start(
            &policy,
            seed_for(ctx.seed, &policy.name),
            sim_clock(ctx.clock.clone(), origin.clone()),
            unix_clock(ctx.clock.clone()),
        )
        .await
        .map_err(|e| {
            ApiError::new(
                422,
                "cannot start the rollout's traffic layer or metrics source",
            )
            .with_details(vec![e])
        })?;
        let st = Stored {
            generation: 0,
            origin_ms: now,
            desired_weight: 0.0,
            applied_weight: 0.0,
            phase: "pending".into(),
        };
        let name = policy.name.clone();
        let store = ctx.store.clone();
        let new = NewRollout {
            name: name.clone(),
            spec,
            state: serde_json::to_value(&st).unwrap_or(Value::Null),
            at_ms: now,
            outbox: Vec::new(),
        };
        let first = NewEvent {
            at_ms: now,
            actor: actor.to_string(),
            event: "created".into(),
            reason: format!(
                "{} stages, judge {}, mode {}",
                policy.stages.len(),
                policy.analysis.judge.name(),
                policy.mode.name()
            ),
            detail: json!({}),
        };
        let mut new = new;
        new.outbox = outbox_for(
            &policy,
            &About {
                rollout: &name,
                phase: "pending",
                stage: None,
                weight: 0.0,
                generation: 0,
                verdict: None,
                time: rfc3339(now),
            },
            std::slice::from_ref(&first),
            None,
            now,
        );
        let queued = !new.outbox.is_empty();
        let rec = blocking(move || store.create(new, first)).await?;
        if queued {
            ctx.outbox_wake.notify_one();
        }
        let mut r = Runner::assemble(ctx, rec, policy, None, driver, origin, st);
        r.publish(Vec::new(), 0);
        if !r.held_before_start() {
            r.feed(
                Input::Apply {
                    event: Event::Start,
                    now: Duration::ZERO,
                },
                actor,
                None,
                Vec::new(),
                false,
            )
            .await?;
        }
        Ok(r)
    }

    fn assemble(
        ctx: Arc<Ctx>,
        rec: RolloutRecord,
        policy: Policy,
        engine: Option<(Engine, Looks)>,
        driver: Driver,
        origin: Arc<AtomicU64>,
        st: Stored,
    ) -> Runner {
        let (engine, looks) =
            engine.unwrap_or_else(|| (Engine::new(policy.clone()), Looks::new(st.generation)));
        let stamps = (
            rfc3339(rec.created_at_ms),
            (st.origin_ms, rfc3339(st.origin_ms)),
        );
        let (tx, _rx) = mpsc::channel(1);
        let mut r = Runner {
            entry: Arc::new(Entry {
                tx,
                status: RwLock::new(placeholder(&rec.name)),
                looks: RwLock::new(looks.counting()),
            }),
            ctx,
            name: rec.name.clone(),
            policy,
            engine,
            driver,
            origin,
            revision: rec.revision,
            updated_ms: rec.updated_at_ms,
            st,
            stale: false,
            permanent: None,
            refused: None,
            refused_weight: None,
            source_failures: 0,
            last_error: None,
            stamps,
            answers: BTreeMap::new(),
            pre: None,
            confirmed: false,
            waiting_logged: false,
            stored_finished: rec.finished,
            fresh_look: None,
        };
        r.refresh_status();
        r
    }

    /// Whether the rollout waits for webhooks before it starts
    /// (`confirm-rollout`, `pre-rollout`): then its ticks start it.
    fn held_before_start(&self) -> bool {
        let h = &self.policy.hooks;
        h.has(WebhookType::ConfirmRollout) || h.has(WebhookType::PreRollout)
    }

    /// Rebuilds a stored rollout after a restart: replays its journal,
    /// starts its traffic layer, sets the recorded weight again.
    pub(crate) async fn recover(ctx: Arc<Ctx>, rec: RolloutRecord) -> Result<Runner, String> {
        let name = rec.name.clone();
        let policy = canary_prometheus::policy_from_text(&rec.spec)
            .map_err(|e| format!("rollout `{name}`: its stored spec no longer validates: {e}"))?;
        let st: Stored = serde_json::from_value(rec.state.clone())
            .map_err(|e| format!("rollout `{name}`: stored state unreadable: {e}"))?;
        let engine = replay(&ctx, &name, &policy, &st).await?;
        let origin = Arc::new(AtomicU64::new(st.origin_ms));
        let driver = Driver::start(
            &policy,
            seed_for(ctx.seed, &name),
            sim_clock(ctx.clock.clone(), origin.clone()),
            unix_clock(ctx.clock.clone()),
        )
        .await
        .map_err(|e| format!("rollout `{name}`: {e}"))?;
        let finished = rec.finished;
        let pending = engine.0.state().phase == Phase::Pending;
        let mut r = Runner::assemble(ctx, rec, policy, Some(engine), driver, origin, st);
        if pending && !finished && !r.held_before_start() {
            r.feed(
                Input::Apply {
                    event: Event::Start,
                    now: r.now(),
                },
                "controller",
                None,
                Vec::new(),
                false,
            )
            .await
            .map_err(|e| format!("rollout `{name}`: cannot start: {}", e.error))?;
        } else if pending && !finished {
            // Its ticks call the webhooks it waits for again.
        } else {
            if !finished {
                let why = match r.ctx.leadership.as_ref().and_then(|l| l.term()) {
                    Some(term) => format!("this replica was elected leader (term {term})"),
                    None => "server restarted".into(),
                };
                let e = r.event(
                    "controller",
                    "recovered",
                    format!(
                        "{why}: journal replayed, {} of weight re-applied",
                        r.st.desired_weight
                    ),
                    json!({"desired_weight": r.st.desired_weight}),
                );
                let _ = r.persist(vec![e], Vec::new(), false).await;
            }
            r.actuate(true).await;
        }
        r.refresh_status();
        Ok(r)
    }

    /// Spawns the runner's task; returns its entry.
    pub(crate) fn spawn(mut self) -> Arc<Entry> {
        let (tx, rx) = mpsc::channel(16);
        let looks =
            std::mem::take(&mut *self.entry.looks.write().unwrap_or_else(|p| p.into_inner()));
        let entry = Arc::new(Entry {
            tx,
            status: RwLock::new(self.entry.status()),
            looks: RwLock::new(looks.counting()),
        });
        self.entry = entry.clone();
        tokio::spawn(self.run(rx));
        entry
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let interval = self.policy.analysis.interval.max(Duration::from_millis(10));
        // Ticks fall on multiples of the interval on the wall clock, so the
        // rollouts of a server that share an interval tick together and
        // their writes share one commit.
        let step = interval.as_millis().max(1) as u64;
        let wall = (self.ctx.clock)();
        let first = Duration::from_millis(step - wall % step);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let finished = self.finished() && self.permanent.is_none();
            tokio::select! {
                _ = ticker.tick(), if !finished => self.tick().await,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Stop { reply }) => {
                        drop(self);
                        let _ = reply.send(());
                        return;
                    }
                    Some(Cmd::Act { action, actor, reason, reply }) => {
                        let r = self.act(action, &actor, reason).await;
                        let _ = reply.send(r.map(|()| self.entry.status()));
                    }
                    Some(Cmd::Delete { force, actor, reply }) => {
                        match self.delete(force, &actor).await {
                            Ok(()) => {
                                drop(self);
                                let _ = reply.send(Ok(()));
                                return;
                            }
                            Err(e) => { let _ = reply.send(Err(e)); }
                        }
                    }
                },
            }
        }
    }

    /// True while the rollout is in a stage (progressing or paused).
    fn in_stage(&self) -> bool {
        matches!(
            self.engine.state().phase,
            Phase::Progressing { .. } | Phase::Paused { .. }
        )
    }

    fn finished(&self) -> bool {
        self.engine.state().phase.is_terminal()
    }

    fn now(&self) -> Duration {
        Duration::from_millis((self.ctx.clock)().saturating_sub(self.st.origin_ms))
    }

    fn event(&self, actor: &str, event: &str, reason: String, detail: Value) -> NewEvent {
        NewEvent {
            at_ms: (self.ctx.clock)(),
            actor: actor.to_string(),
            event: event.to_string(),
            reason,
            detail,
        }
    }

    /// One tick: read the window, let the engine judge and step.
    async fn tick(&mut self) {
        // A replica whose lease may be running out does nothing.
        if !self.ctx.acting() {
            return;
        }
        if self.stale && self.reload().await.is_err() {
            return;
        }
        if let Some(why) = self.permanent.take() {
            if !self.finished() {
                let input = Input::Apply {
                    event: Event::Abort {
                        reason: format!("stopped: {why}"),
                    },
                    now: self.now(),
                };
                let _ = self
                    .feed(input, "controller", None, Vec::new(), false)
                    .await;
            }
            return;
        }
        if let Some(why) = self.refused.take() {
            if matches!(self.engine.state().phase, Phase::Progressing { .. }) {
                let input = Input::Apply {
                    event: Event::Pause {
                        note: format!("paused: the traffic layer refused: {why}"),
                    },
                    now: self.now(),
                };
                let _ = self
                    .feed(input, "controller", None, Vec::new(), false)
                    .await;
            }
            return;
        }
        if self.engine.state().phase == Phase::Pending {
            self.pending_tick().await;
            return;
        }
        let mut logs = Vec::new();
        let mut checks = Vec::new();
        if matches!(
            self.engine.state().phase,
            Phase::Progressing { .. } | Phase::Paused { .. }
        ) {
            if let Some(reason) = self.poll_rollback(&mut logs).await {
                let input = Input::Apply {
                    event: Event::Rollback { reason },
                    now: self.now(),
                };
                let _ = self.feed(input, "controller", None, logs, false).await;
                return;
            }
            checks = self.run_checks(&mut logs).await;
        }
        let (window, missing) = match self.driver.read_window().await {
            Ok(w) => (Some(w), None),
            Err(e) => {
                self.source_failures += 1;
                let why = format!("metrics source: {}", chain(&e));
                self.last_error = Some(why.clone());
                if e.is_permanent() {
                    self.permanent = Some(chain(&e));
                }
                (None, Some(why))
            }
        };
        let looked = window.is_some();
        let input = Input::Observe {
            window,
            missing,
            now: self.now(),
            checks,
        };
        if self
            .feed(input, "controller", None, logs, false)
            .await
            .is_ok()
        {
            let mut c = self.ctx.counters.lock().unwrap_or_else(|p| p.into_inner());
            c.ticks += 1;
            if looked {
                if let Some(v) = self.engine.last_verdict() {
                    *c.verdicts.entry(v.outcome.to_string()).or_default() += 1;
                }
            }
        }
        if let Phase::Paused {
            reason: canary_core::PauseReason::Webhook { gate },
            ..
        } = self.engine.state().phase
        {
            let mut logs = Vec::new();
            let answers = self.call_hooks(gate).await;
            let open = !answers.is_empty() && answers.iter().all(|(_, a)| a.ok());
            for (h, a) in &answers {
                self.note(h, a, &mut logs);
            }
            if open {
                let input = Input::Apply {
                    event: Event::GateOpened { gate },
                    now: self.now(),
                };
                let _ = self.feed(input, "controller", None, logs, false).await;
            } else if !logs.is_empty() {
                let _ = self.persist(logs, Vec::new(), false).await;
            }
        }
    }

    /// A tick before the start: the `confirm-rollout` gate (time passes
    /// meanwhile, and `gate_timeout` applies), then the `pre-rollout`
    /// webhooks (retried until their timeout; their failure aborts the
    /// rollout before any traffic moved), then the start.
    async fn pending_tick(&mut self) {
        let mut logs = Vec::new();
        if self.policy.hooks.has(WebhookType::ConfirmRollout) && !self.confirmed {
            let input = Input::Apply {
                event: Event::Tick,
                now: self.now(),
            };
            if self
                .feed(input, "controller", None, Vec::new(), false)
                .await
                .is_err()
                || self.engine.state().phase != Phase::Pending
            {
                return;
            }
            let answers = self.call_hooks(WebhookType::ConfirmRollout).await;
            for (h, a) in &answers {
                self.note(h, a, &mut logs);
            }
            if !answers.iter().all(|(_, a)| a.ok()) {
                if !self.waiting_logged {
                    self.waiting_logged = true;
                    logs.push(
                        self.event(
                            "controller",
                            "await_gate",
                            "waiting for the confirm-rollout webhook(s) to answer 2xx before any \
                         traffic moves"
                                .into(),
                            json!({"gate": WebhookType::ConfirmRollout.name()}),
                        ),
                    );
                }
                if !logs.is_empty() {
                    let _ = self.persist(logs, Vec::new(), false).await;
                }
                return;
            }
            self.confirmed = true;
        }
        let event = if self.policy.hooks.has(WebhookType::PreRollout) {
            match self.pre.take() {
                None => {
                    self.pre = Some(self.spawn_pre_rollout());
                    self.refresh_status();
                    if !logs.is_empty() {
                        let _ = self.persist(logs, Vec::new(), false).await;
                    }
                    return;
                }
                Some(h) if !h.is_finished() => {
                    self.pre = Some(h);
                    return;
                }
                Some(h) => {
                    let results = h.await.unwrap_or_default();
                    let mut failed = Vec::new();
                    for (hook, a, attempts) in &results {
                        self.note(hook, a, &mut logs);
                        if !a.ok() {
                            failed.push(format!(
                                "pre-rollout webhook `{}` did not answer 2xx within its {}s \
                                 timeout ({attempts} attempts; last: {})",
                                hook.name,
                                hook.timeout.as_secs_f64(),
                                a.describe()
                            ));
                        }
                    }
                    if results.is_empty() {
                        failed.push("the pre-rollout webhooks could not be called".into());
                    }
                    if failed.is_empty() {
                        Event::Start
                    } else {
                        Event::Abort {
                            reason: format!("not started: {}", failed.join("; ")),
                        }
                    }
                }
            }
        } else {
            Event::Start
        };
        let input = Input::Apply {
            event,
            now: self.now(),
        };
        let _ = self.feed(input, "controller", None, logs, false).await;
    }

    /// Calls the `pre-rollout` webhooks, each retried (0.25 s, doubling, at
    /// most 5 s apart) until it answers 2xx or its timeout has passed.
    fn spawn_pre_rollout(&self) -> tokio::task::JoinHandle<Vec<(Webhook, Answer, u32)>> {
        let about = self.about();
        let calls: Vec<(Webhook, Vec<u8>)> = self
            .policy
            .hooks
            .of(WebhookType::PreRollout)
            .map(|h| (h.clone(), hook_body(h, &about, json!({}))))
            .collect();
        let clock = self.ctx.clock.clone();
        tokio::spawn(async move {
            let each = calls.into_iter().map(|(h, body)| {
                let clock = clock.clone();
                async move {
                    let deadline = clock() + h.timeout.as_millis() as u64;
                    let mut wait = Duration::from_millis(250);
                    let mut attempts = 0;
                    loop {
                        let now = clock();
                        let left = Duration::from_millis(deadline.saturating_sub(now).max(1));
                        attempts += 1;
                        let a = call(
                            h.url.clone(),
                            body.clone(),
                            h.secret.clone(),
                            Vec::new(),
                            left.min(h.timeout),
                            now / 1000,
                        )
                        .await;
                        if a.ok() || clock() + wait.as_millis() as u64 >= deadline {
                            return (h, a, attempts);
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            });
            futures_util::future::join_all(each).await
        })
    }

    /// What the webhook bodies say about the rollout now.
    fn about(&self) -> About<'_> {
        let state = self.engine.state();
        About {
            rollout: &self.name,
            phase: state.phase.name(),
            stage: state.phase.stage(),
            weight: self.st.desired_weight,
            generation: self.st.generation,
            verdict: self.engine.last_verdict(),
            time: rfc3339((self.ctx.clock)()),
        }
    }

    /// Calls every webhook of type `kind` at once; their answers.
    fn call_hooks(
        &self,
        kind: WebhookType,
    ) -> impl std::future::Future<Output = Vec<(Webhook, Answer)>> + Send + 'static {
        let about = self.about();
        let now_unix = (self.ctx.clock)() / 1000;
        let calls: Vec<_> = self
            .policy
            .hooks
            .of(kind)
            .map(|h| {
                let body = hook_body(h, &about, json!({}));
                let h = h.clone();
                async move {
                    let a = call(
                        h.url.clone(),
                        body,
                        h.secret.clone(),
                        Vec::new(),
                        h.timeout,
                        now_unix,
                    )
                    .await;
                    (h, a)
                }
            })
            .collect();
        futures_util::future::join_all(calls)
    }

    /// Keeps `hook`'s answer `a`; logs it into `logs` when it differs from
    /// the one before (a failure, a change of status, a recovery) — a
    /// hook answering the same every interval is logged once. A
    /// `rollback` hook's non-2xx status is its ordinary "no", not logged.
    fn note(&mut self, hook: &Webhook, a: &Answer, logs: &mut Vec<NewEvent>) {
        let key = |a: &Answer| (a.ok(), a.status, a.error.is_some());
        let before = self.answers.insert(hook.name.clone(), a.clone());
        let changed = match &before {
            Some(b) => key(b) != key(a),
            None => !a.ok(),
        };
        let ordinary_no = hook.kind == WebhookType::Rollback && a.status.is_some() && !a.ok();
        if !changed || ordinary_no {
            return;
        }
        let verb = if a.ok() { "answered" } else { "failed" };
        logs.push(self.event(
            "controller",
            "webhook",
            format!(
                "webhook `{}` ({}) {verb}: {}",
                hook.name,
                hook.kind,
                a.describe()
            ),
            json!({
                "hook": hook.name,
                "type": hook.kind.name(),
                "url": hook.url,
                "ok": a.ok(),
                "answer": a,
            }),
        ));
    }

    /// Polls the `rollback` webhooks: the first that answers 2xx asks for
    /// a rollback (its reason). A hook that cannot be reached asks for
    /// nothing (and is logged).
    async fn poll_rollback(&mut self, logs: &mut Vec<NewEvent>) -> Option<String> {
        if !self.policy.hooks.has(WebhookType::Rollback) {
            return None;
        }
        let answers = self.call_hooks(WebhookType::Rollback).await;
        let mut asked = None;
        for (h, a) in &answers {
            self.note(h, a, logs);
            if a.ok() && asked.is_none() {
                asked = Some(format!(
                    "rollback asked for by webhook `{}`: {}",
                    h.name,
                    a.describe()
                ));
            }
        }
        asked
    }

    /// Calls the `rollout` webhooks: each answer is a check of this look
    /// (anything but 2xx, unreachable and timed out included, fails).
    async fn run_checks(&mut self, logs: &mut Vec<NewEvent>) -> Vec<Check> {
        if !self.policy.hooks.has(WebhookType::Rollout) {
            return Vec::new();
        }
        let answers = self.call_hooks(WebhookType::Rollout).await;
        answers
            .into_iter()
            .map(|(h, a)| {
                self.note(&h, &a, logs);
                Check {
                    name: h.name.clone(),
                    passed: a.ok(),
                    reason: a.describe(),
                }
            })
            .collect()
    }

    /// Steps 1–4 of the module docs for one input.
    async fn feed(
        &mut self,
        input: Input,
        actor: &str,
        reason: Option<&str>,
        events: Vec<NewEvent>,
        reset: bool,
    ) -> Result<(), ApiError> {
        self.record(input, actor, reason, events, reset).await?;
        self.actuate(false).await;
        Ok(())
    }

    /// Steps 1 and 2 of the module docs for one input: the engine decides,
    /// and the input, its decisions and the weight they call for are
    /// committed. Nothing moves.
    async fn record(
        &mut self,
        input: Input,
        actor: &str,
        reason: Option<&str>,
        mut events: Vec<NewEvent>,
        reset: bool,
    ) -> Result<(), ApiError> {
        let what = match &input {
            Input::Apply { event, .. } => event.name(),
            Input::Observe { .. } => "tick",
        };
        // The journal entry is written before the engine takes the input
        // (no copy of its windows).
        let journal = vec![serde_json::to_string(&input).unwrap_or_default()];
        let (commands, look) = crate::history::feed(&mut self.engine, input, self.st.origin_ms)
            .map_err(|e| refused(e, what))?;
        // Kept once its input is committed (`publish`).
        self.fresh_look = look;
        let advisory = self.policy.mode == Mode::Advisory;
        for c in &commands {
            if let Command::RecordDecision(d) = c {
                let action = serde_json::to_value(d.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{:?}", d.action).to_lowercase());
                *self
                    .ctx
                    .counters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .decisions
                    .entry(action.clone())
                    .or_default() += 1;
                let mut reason_text = d.reason.clone();
                if let Some(r) = reason.filter(|r| !r.is_empty()) {
                    if !reason_text.contains(r) {
                        reason_text.push_str(": ");
                        reason_text.push_str(r);
                    }
                }
                if advisory {
                    reason_text = format!("advisory (weight not moved): {reason_text}");
                }
                let mut detail = json!({
                    "stage": d.stage,
                    "weight_before": d.weight_before,
                    "weight_after": d.weight_after,
                    "at_seconds": d.at_seconds,
                });
                if advisory {
                    detail["advisory"] = json!(true);
                }
                if let Some(v) = &d.verdict {
                    detail["verdict"] = serde_json::to_value(v).unwrap_or(Value::Null);
                }
                events.push(self.event(actor, &action, reason_text, detail));
            }
        }
        self.st.desired_weight = self.engine.state().weight;
        self.st.phase = self.engine.state().phase.name().to_string();
        self.persist(events, journal, reset).await
    }

    /// Writes the state (with `events` and `journal`) at the next revision.
    async fn persist(
        &mut self,
        events: Vec<NewEvent>,
        journal: Vec<String>,
        reset: bool,
    ) -> Result<(), ApiError> {
        let at_ms = (self.ctx.clock)();
        let finished = self.finished();
        let finishing = (finished && !self.stored_finished).then(|| {
            let reason = match &self.engine.state().phase {
                Phase::RolledBack { reason } | Phase::Aborted { reason } => reason.clone(),
                _ => "the canary has all the traffic".to_string(),
            };
            (self.engine.state().phase.name(), reason)
        });
        let outbox = outbox_for(
            &self.policy,
            &self.about(),
            &events,
            finishing.as_ref().map(|(p, r)| (*p, r.as_str())),
            at_ms,
        );
        let queued = !outbox.is_empty();
        let update = Update {
            name: self.name.clone(),
            expected: self.revision,
            state: serde_json::to_value(&self.st).unwrap_or(Value::Null),
            finished,
            at_ms,
            events: events.clone(),
            journal,
            reset_journal: reset,
            outbox,
        };
        let r = self.ctx.committer.update(update).await;
        match r {
            Ok(rec) => {
                self.stored_finished = finished;
                if queued {
                    self.ctx.outbox_wake.notify_one();
                }
                self.revision = rec.revision;
                self.updated_ms = rec.updated_at_ms;
                if self
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("store"))
                {
                    self.last_error = None;
                }
                self.publish(events, rec.last_event_seq);
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                self.fresh_look = None;
                let e = ApiError::from(e);
                self.last_error = Some(e.error.clone());
                self.refresh_status();
                Err(e)
            }
        }
    }

    /// Sets the desired weight on the traffic layer (step 3) and records it
    /// applied (step 4). `again`: set it even if recorded as applied (after
    /// a restart the traffic layer may have lost it).
    async fn actuate(&mut self, again: bool) {
        // Only after a committed write, and only while this server may
        // act (with high availability: leads, its lease renewed in time).
        if self.policy.mode == Mode::Advisory || self.stale || !self.ctx.acting() {
            return;
        }
        let w = self.st.desired_weight;
        if !again && w == self.st.applied_weight && self.driver.actuator_weight() == w {
            return;
        }
        if !again && self.refused_weight == Some(w) {
            return;
        }
        // With high availability, the term is confirmed with the store
        // right before the traffic layer moves: a replica deposed since
        // its last write (its lease lost while it was stalled) moves
        // nothing.
        if self.ctx.leadership.is_some() {
            let store = self.ctx.store.clone();
            if let Err(e) = blocking(move || store.confirm_term()).await {
                self.last_error = Some(format!("store: weight {w} % not set: {e}"));
                self.refresh_status();
                return;
            }
        }
        match self.driver.set_weight(w).await {
            Ok(()) => {
                self.refused_weight = None;
                // The next window starts at the new weight.
                let _ = self.driver.read_window().await;
                let held = self.engine.state().weight_held && self.in_stage();
                if self.st.applied_weight != w || held {
                    let before = self.st.applied_weight;
                    self.st.applied_weight = w;
                    let mut reason = format!("traffic layer routes {w} % to the canary");
                    if held {
                        reason.push_str("; the stage's clock restarts");
                    }
                    let e = self.event(
                        "controller",
                        "weight_applied",
                        reason,
                        json!({"weight_before": before, "weight_after": w}),
                    );
                    // After a hold the engine is told too (its stage clock
                    // restarts), in the journal with the event. A failed
                    // write is recorded on the next one, or the weight set
                    // again after a restart: it is where it should be.
                    let _ = if held {
                        let input = Input::Apply {
                            event: Event::WeightApplied,
                            now: self.now(),
                        };
                        self.record(input, "controller", None, vec![e], false).await
                    } else {
                        self.persist(vec![e], Vec::new(), false).await
                    };
                }
                if self
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("traffic"))
                {
                    self.last_error = None;
                }
            }
            Err(e) => {
                self.last_error = Some(format!(
                    "traffic layer: weight {w} % not applied: {}",
                    chain(&e)
                ));
                if e.is_permanent() && !self.finished() {
                    self.refused = Some(format!("weight {w} % not applied: {}", chain(&e)));
                    self.refused_weight = Some(w);
                }
                // Until the layer takes the weight, the stage's clock
                // stands still: nothing passes on traffic at the old one.
                if !self.engine.state().weight_held && self.in_stage() {
                    let why = chain(&e);
                    let log = self.event(
                        "controller",
                        "weight_held",
                        format!(
                            "traffic layer has not taken {w} %: {why}; the stage's clock stands still until it does"
                        ),
                        json!({"weight": w}),
                    );
                    let input = Input::Apply {
                        event: Event::WeightHeld { note: why },
                        now: self.now(),
                    };
                    let _ = self
                        .record(input, "controller", None, vec![log], false)
                        .await;
                }
            }
        }
        self.refresh_status();
    }

    /// Rebuilds the engine from the store (after a failed write).
    async fn reload(&mut self) -> Result<(), String> {
        let store = self.ctx.store.clone();
        let name = self.name.clone();
        let rec = blocking(move || store.get(&name))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("rollout `{}` is gone from the store", self.name))?;
        let st: Stored = serde_json::from_value(rec.state.clone()).map_err(|e| e.to_string())?;
        let (engine, looks) = replay(&self.ctx, &self.name, &self.policy, &st).await?;
        self.engine = engine;
        *self.entry.looks.write().unwrap_or_else(|p| p.into_inner()) = looks.counting();
        self.st = st;
        self.origin.store(self.st.origin_ms, Ordering::SeqCst);
        self.revision = rec.revision;
        self.updated_ms = rec.updated_at_ms;
        self.stale = false;
        self.actuate(true).await;
        Ok(())
    }

    async fn act(
        &mut self,
        action: Action,
        actor: &str,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if self.stale {
            self.reload()
                .await
                .map_err(|e| ApiError::new(503, format!("store: {e}")))?;
        }
        // An operator's action tries a refused weight again.
        self.refused_weight = None;
        let now = self.now();
        let note = reason.clone().unwrap_or_default();
        let event = match action {
            Action::Pause => Event::Pause {
                note: if note.is_empty() {
                    format!("by {actor}")
                } else {
                    note.clone()
                },
            },
            Action::Resume => Event::Resume,
            Action::Promote => Event::Promote,
            Action::PromoteFull => Event::PromoteFull,
            Action::Abort => Event::Abort {
                reason: if note.is_empty() {
                    format!("aborted by {actor}")
                } else {
                    note.clone()
                },
            },
            Action::Retry => return self.retry(actor, reason.as_deref()).await,
        };
        self.feed(
            Input::Apply { event, now },
            actor,
            reason.as_deref(),
            Vec::new(),
            false,
        )
        .await
    }

    async fn retry(&mut self, actor: &str, reason: Option<&str>) -> Result<(), ApiError> {
        let phase = self.engine.state().phase.name();
        if !matches!(
            self.engine.state().phase,
            Phase::RolledBack { .. } | Phase::Aborted { .. }
        ) {
            return Err(ApiError::new(
                409,
                format!("cannot retry: only a rolled back or aborted rollout starts over; `{}` is {phase}", self.name),
            )
            .with_details(vec![format!("phase: {phase}")]));
        }
        let now_ms = (self.ctx.clock)();
        self.st.generation += 1;
        self.st.origin_ms = now_ms;
        self.origin.store(now_ms, Ordering::SeqCst);
        self.stamps.1 = (now_ms, rfc3339(now_ms));
        self.engine = Engine::new(self.policy.clone());
        self.answers.clear();
        self.confirmed = false;
        self.waiting_logged = false;
        *self.entry.looks.write().unwrap_or_else(|p| p.into_inner()) =
            Looks::new(self.st.generation).counting();
        let mut why = format!(
            "started over from the first stage (generation {})",
            self.st.generation
        );
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            why.push_str(": ");
            why.push_str(r);
        }
        let e = self.event(
            actor,
            "retry",
            why,
            json!({"generation": self.st.generation}),
        );
        // Drop what the traffic layer recorded before the new start.
        let _ = self.driver.read_window().await;
        if self.held_before_start() {
            // As at its creation: pending until its `confirm-rollout` and
            // `pre-rollout` webhooks answer again; its ticks call them.
            if let Some(h) = self.pre.take() {
                h.abort();
            }
            self.st.desired_weight = self.engine.state().weight;
            self.st.phase = self.engine.state().phase.name().to_string();
            self.persist(vec![e], Vec::new(), true).await?;
            self.actuate(false).await;
            return Ok(());
        }
        self.feed(
            Input::Apply {
                event: Event::Start,
                now: Duration::ZERO,
            },
            actor,
            None,
            vec![e],
            true,
        )
        .await
    }

    async fn delete(&mut self, force: bool, actor: &str) -> Result<(), ApiError> {
        if !self.finished() {
            if !force {
                let phase = self.engine.state().phase.name();
                return Err(ApiError::new(
                    409,
                    format!("cannot delete: rollout `{}` is {phase}; abort it first, or delete with ?force=true", self.name),
                )
                .with_details(vec![format!("phase: {phase}")]));
            }
            self.act(
                Action::Abort,
                actor,
                Some(format!("deleted by {actor} (force)")),
            )
            .await?;
        }
        let store = self.ctx.store.clone();
        let name = self.name.clone();
        let rev = self.revision;
        blocking(move || store.delete(&name, rev)).await?;
        let mut status = self.entry.status();
        status.revision = rev + 1;
        let _ = self.ctx.changes.send(Arc::new(Change {
            status,
            events: Vec::new(),
            look: None,
            deleted: true,
        }));
        Ok(())
    }

    /// Tells the watchers; `events` were just logged, the last as number
    /// `last_seq`.
    fn publish(&mut self, events: Vec<NewEvent>, last_seq: u64) {
        self.refresh_status();
        let look = self.fresh_look.take().map(|l| {
            self.entry
                .looks
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(l)
        });
        if self.ctx.changes.receiver_count() == 0 {
            return;
        }
        let status = self.entry.status();
        let first = (last_seq + 1).saturating_sub(events.len() as u64);
        let entries = events
            .into_iter()
            .zip(first..)
            .map(|(e, seq)| EventEntry {
                seq,
                time: rfc3339(e.at_ms),
                at_ms: e.at_ms,
                actor: e.actor,
                event: e.event,
                reason: e.reason,
                detail: e.detail,
            })
            .collect();
        let _ = self.ctx.changes.send(Arc::new(Change {
            status,
            events: entries,
            look,
            deleted: false,
        }));
    }

    fn refresh_status(&mut self) {
        let s = self.status();
        *self.entry.status.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// What the rollout waits for, in words, with the last answers of
    /// the webhooks it waits for.
    fn waiting_for(&self) -> Option<String> {
        let h = &self.policy.hooks;
        let (what, gate) = match &self.engine.state().phase {
            Phase::Pending if self.pre.is_some() => (
                "the pre-rollout webhook(s) to answer 2xx".to_string(),
                Some(WebhookType::PreRollout),
            ),
            Phase::Pending if h.has(WebhookType::ConfirmRollout) => (
                "the confirm-rollout webhook(s) to answer 2xx before any traffic moves".to_string(),
                Some(WebhookType::ConfirmRollout),
            ),
            Phase::Progressing { .. } if self.engine.state().weight_held => (
                format!(
                    "the traffic layer to take {} % (the stage's clock stands still until it does)",
                    self.engine.state().weight
                ),
                None,
            ),
            Phase::Paused { reason, .. } => (
                reason.waiting_for(),
                match reason {
                    canary_core::PauseReason::Webhook { gate } => Some(*gate),
                    _ => None,
                },
            ),
            _ => return None,
        };
        let last: Vec<String> = gate
            .map(|g| {
                h.of(g)
                    .filter_map(|w| {
                        let a = self.answers.get(&w.name)?;
                        Some(format!("`{}`: {}", w.name, a.describe()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(if last.is_empty() {
            what
        } else {
            format!("{what} (last answer {})", last.join("; "))
        })
    }

    fn status(&self) -> RolloutStatus {
        build_status(View {
            name: &self.name,
            policy: &self.policy,
            engine: &self.engine,
            st: &self.st,
            revision: self.revision,
            created_at: self.stamps.0.clone(),
            started_at: if self.stamps.1 .0 == self.st.origin_ms {
                self.stamps.1 .1.clone()
            } else {
                rfc3339(self.st.origin_ms)
            },
            updated_ms: self.updated_ms,
            now: self.now(),
            waiting_for: self.waiting_for(),
            actuator_weight: self.driver.actuator_weight(),
            listen: self.driver.listen_addr().map(|a| a.to_string()),
            source_failures: self.source_failures,
            last_error: self.last_error.clone(),
        })
    }
}

/// What a status is made of.
struct View<'a> {
    name: &'a str,
    policy: &'a Policy,
    engine: &'a Engine,
    st: &'a Stored,
    revision: u64,
    created_at: String,
    started_at: String,
    updated_ms: u64,
    now: Duration,
    waiting_for: Option<String>,
    actuator_weight: f64,
    listen: Option<String>,
    source_failures: u64,
    last_error: Option<String>,
}

fn build_status(v: View<'_>) -> RolloutStatus {
    let state = v.engine.state();
    let obs = v.engine.observations();
    let stage = state.phase.stage();
    let reason = match &state.phase {
        Phase::Paused { reason, .. } => Some(reason.to_string()),
        Phase::RollingBack { reason, .. }
        | Phase::RolledBack { reason }
        | Phase::Aborted { reason } => Some(reason.clone()),
        _ => None,
    };
    let now = v.now;
    let t = v.policy.traffic.as_ref();
    RolloutStatus {
        name: v.name.to_string(),
        mode: v.policy.mode.name().into(),
        phase: state.phase.name().into(),
        reason,
        waiting_for: v.waiting_for,
        stage,
        stages: v.policy.stages.len(),
        desired_weight: v.st.desired_weight,
        applied_weight: v.st.applied_weight,
        actuator_weight: v.actuator_weight,
        generation: v.st.generation,
        revision: v.revision,
        created_at: v.created_at,
        updated_at: rfc3339(v.updated_ms),
        started_at: v.started_at,
        stage_elapsed_seconds: stage
            .map(|_| now.saturating_sub(state.stage_started_at).as_secs_f64()),
        stage_bake_seconds: stage.map(|s| v.policy.stages[s].bake.as_secs_f64()),
        counts: Counts {
            stable: obs.stage.baseline.summary(),
            canary: obs.stage.canary.summary(),
        },
        verdict: v.engine.last_verdict_shared(),
        traffic: TrafficInfo {
            provider: t.map_or("proxy", |t| t.provider.name()).into(),
            listen: v.listen,
        },
        metrics: {
            let m = v.policy.metrics.as_ref();
            MetricsInfo {
                provider: m.map_or("proxy", |m| m.provider.name()).into(),
                business: m.map_or_else(Vec::new, |m| {
                    m.business.iter().map(|b| b.name.clone()).collect()
                }),
                thresholds: m.map_or_else(Vec::new, |m| {
                    m.thresholds.iter().map(|t| t.name.clone()).collect()
                }),
            }
        },
        source_failures: v.source_failures,
        last_error: v.last_error,
    }
}

/// A rollout's status as the store has it, for a follower (which drives
/// nothing): its journal replayed into a fresh engine. The traffic layer
/// is the leader's, so `actuator_weight` is the weight last confirmed.
pub(crate) async fn stored_status(
    ctx: &Ctx,
    rec: RolloutRecord,
) -> Result<RolloutStatus, ApiError> {
    let name = rec.name.clone();
    let policy = canary_prometheus::policy_from_text(&rec.spec)
        .map_err(|e| ApiError::new(500, format!("rollout `{name}`: its stored spec: {e}")))?;
    let st: Stored = serde_json::from_value(rec.state.clone()).map_err(|e| {
        ApiError::new(
            500,
            format!("rollout `{name}`: stored state unreadable: {e}"),
        )
    })?;
    let store = ctx.store.clone();
    let n = name.clone();
    let journal = blocking(move || store.journal(&n)).await?;
    let now_ms = (ctx.clock)();
    tokio::task::spawn_blocking(move || {
        let (engine, _) =
            replay_inputs(&name, &policy, &st, journal).map_err(|e| ApiError::new(500, e))?;
        Ok(build_status(View {
            name: &name,
            policy: &policy,
            engine: &engine,
            st: &st,
            revision: rec.revision,
            created_at: rfc3339(rec.created_at_ms),
            started_at: rfc3339(st.origin_ms),
            updated_ms: rec.updated_at_ms,
            now: Duration::from_millis(now_ms.saturating_sub(st.origin_ms)),
            waiting_for: None,
            actuator_weight: st.applied_weight,
            listen: None,
            source_failures: 0,
            last_error: None,
        }))
    })
    .await
    .map_err(|e| ApiError::new(500, format!("the replay did not finish: {e}")))?
}

/// A fresh engine for `policy` fed the rollout's journal, and the looks it
/// made on the way.
async fn replay(
    ctx: &Ctx,
    name: &str,
    policy: &Policy,
    st: &Stored,
) -> Result<(Engine, Looks), String> {
    let store = ctx.store.clone();
    let n = name.to_string();
    let journal = blocking(move || store.journal(&n))
        .await
        .map_err(|e| format!("rollout `{name}`: {e}"))?;
    replay_inputs(name, policy, st, journal)
}

/// A fresh engine for `policy` fed `journal`, and the looks it made.
fn replay_inputs(
    name: &str,
    policy: &Policy,
    st: &Stored,
    journal: Vec<String>,
) -> Result<(Engine, Looks), String> {
    let inputs: Vec<Input> = journal
        .into_iter()
        .map(|t| serde_json::from_str(&t))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("rollout `{name}`: a journal entry is unreadable: {e}"))?;
    let mut engine = Engine::new(policy.clone());
    let mut looks = Looks::new(st.generation);
    for input in inputs {
        let (_, look) = crate::history::feed(&mut engine, input, st.origin_ms)
            .map_err(|e| format!("rollout `{name}`: its journal does not replay: {e}"))?;
        if let Some(l) = look {
            looks.push(l);
        }
    }
    Ok((engine, looks))
}

/// The outbox deliveries of a write that logs `events`: each event to the
/// `event` webhooks, each chosen one to the notifications, and, when the
/// write finishes the rollout (`finishing`: its phase and reason), the
/// outcome to the `post-rollout` webhooks.
fn outbox_for(
    policy: &Policy,
    about: &About<'_>,
    events: &[NewEvent],
    finishing: Option<(&str, &str)>,
    at_ms: u64,
) -> Vec<NewDelivery> {
    let h = &policy.hooks;
    let mut out = Vec::new();
    let webhook = |w: &Webhook, body: Vec<u8>| NewDelivery {
        rollout: about.rollout.to_string(),
        target: format!("webhook:{}", w.name),
        url: w.url.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        meta: json!({"timeout_ms": w.timeout.as_millis() as u64, "secret": w.secret}),
        deadline_ms: at_ms + DEFAULT_RETRY_FOR.as_millis() as u64,
    };
    for e in events {
        for w in h.of(WebhookType::Event) {
            let event = json!({
                "event": e.event,
                "actor": e.actor,
                "reason": e.reason,
                "detail": e.detail,
                "time": rfc3339(e.at_ms),
                "at_ms": e.at_ms,
            });
            out.push(webhook(w, hook_body(w, about, json!({ "event": event }))));
        }
        let Some(kind) = notification_event(&e.event) else {
            continue;
        };
        for n in h.notifications.iter().filter(|n| n.events.contains(&kind)) {
            let told = Told {
                rollout: about.rollout,
                event: kind,
                log_event: &e.event,
                actor: &e.actor,
                reason: &e.reason,
                detail: &e.detail,
                time: rfc3339(e.at_ms),
                at_ms: e.at_ms,
            };
            out.push(NewDelivery {
                rollout: about.rollout.to_string(),
                target: format!("notification:{}", n.name),
                url: n.url.clone(),
                body: notification_body(n.format, &told),
                meta: json!({"timeout_ms": n.timeout.as_millis() as u64, "secret": n.secret}),
                deadline_ms: at_ms + n.retry_for.as_millis() as u64,
            });
        }
    }
    if let Some((outcome, reason)) = finishing {
        for w in h.of(WebhookType::PostRollout) {
            let extra = json!({"outcome": outcome, "reason": reason});
            out.push(webhook(w, hook_body(w, about, extra)));
        }
    }
    out
}

pub(crate) fn placeholder(name: &str) -> RolloutStatus {
    RolloutStatus {
        name: name.into(),
        mode: "enforce".into(),
        phase: "pending".into(),
        reason: None,
        waiting_for: None,
        stage: None,
        stages: 0,
        desired_weight: 0.0,
        applied_weight: 0.0,
        actuator_weight: 0.0,
        generation: 0,
        revision: 0,
        created_at: String::new(),
        updated_at: String::new(),
        started_at: String::new(),
        stage_elapsed_seconds: None,
        stage_bake_seconds: None,
        counts: Counts {
            stable: canary_core::VersionStats::default().summary(),
            canary: canary_core::VersionStats::default().summary(),
        },
        verdict: None,
        traffic: TrafficInfo {
            provider: String::new(),
            listen: None,
        },
        metrics: MetricsInfo {
            provider: String::new(),
            business: Vec::new(),
            thresholds: Vec::new(),
        },
        source_failures: 0,
        last_error: None,
    }
}
