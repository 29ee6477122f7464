//! `canary-controller`: drives a live rollout on the wall clock.
//!
//! Each tick the [`Controller`] reads one window of per-version numbers from
//! a [`MetricsSource`], hands it to the shared [`Engine`] (judge + state
//! machine, the very code `canary simulate` runs) and carries out the
//! engine's weight commands through a [`TrafficActuator`]. It knows only
//! those two seams: which adapters fill them (the built-in proxy, a metrics
//! server, a load balancer) is the binary's business.
//!
//! # Fail-safe behaviour
//! - A window that cannot be read (a transient [`SourceError`]) is passed to
//!   the engine as `None`: time passes (so a stage can time out), but
//!   nothing is promoted.
//! - A weight the actuator refused for a transient reason is retried on
//!   every later tick and once more when the rollout ends, and each failure
//!   is reported; it is never recorded as applied. Until it is applied the
//!   stage's clock stands still (the engine is told the weight is held), so
//!   no stage passes on traffic at the old weight.
//! - A permanent failure of the source (a failure no retry can mend)
//!   aborts the rollout with the failure as its reason: the weight goes back
//!   to 0 through the same path.
//! - A weight the actuator refused for good (nginx rejected its file, an
//!   HAProxy server that does not exist) pauses the rollout where it is:
//!   the traffic layer still routes the weight it last accepted, and the
//!   refused weight is retried on later ticks in case someone mends it.
//! - [`Controller::abort`] (what `canary run` does on SIGINT) sends the
//!   weight back to 0 through the same path.
//! - Right after a weight change the source is read once and the result
//!   dropped, so the next window holds only traffic at the new weight.
//!
//! Only [`run_live`] reads the wall clock; [`Controller::start`],
//! [`Controller::tick`] and [`Controller::abort`] take `now`, so tests drive
//! a controller tick by tick with no timing of their own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use canary_core::{Command, Event, Phase, TransitionError, VersionStats};
pub use canary_engine::{ActuatorError, MetricsSource, Persistence, SourceError, TrafficActuator};
use canary_engine::{Engine, RolloutReport};

/// `e` and its causes, joined by ": ".
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A live rollout: an engine between a source and an actuator.
pub struct Controller<M, A> {
    engine: Engine,
    source: M,
    actuator: A,
    /// A weight the actuator has not yet accepted.
    pending_weight: Option<f64>,
    /// Weight the actuator last accepted.
    applied_weight: f64,
    source_failures: u64,
    /// A permanent failure of the source, not yet acted on.
    permanent: Option<String>,
    /// A weight the actuator refused for good, not yet acted on.
    refused: Option<String>,
    /// The time of the last start, tick or abort.
    now: Duration,
}

impl<M: MetricsSource, A: TrafficActuator> Controller<M, A> {
    /// A controller for a pending rollout.
    pub fn new(engine: Engine, source: M, actuator: A) -> Self {
        Self {
            engine,
            source,
            actuator,
            pending_weight: None,
            applied_weight: 0.0,
            source_failures: 0,
            permanent: None,
            refused: None,
            now: Duration::ZERO,
        }
    }

    /// The engine (state, observations, verdicts).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The source.
    pub fn source(&self) -> &M {
        &self.source
    }

    /// True once the rollout succeeded, rolled back or was aborted.
    pub fn is_finished(&self) -> bool {
        self.engine.state().phase.is_terminal()
    }

    /// True when the actuator has carried out every weight command.
    pub fn weight_applied(&self) -> bool {
        self.pending_weight.is_none()
    }

    /// The report as of now (same shape as `canary simulate`'s).
    pub fn report(&self) -> RolloutReport {
        self.engine.report()
    }

    /// Starts the rollout at `now`: drops whatever the source recorded
    /// before, then applies the first stage's weight. Returns the
    /// notifications to show.
    ///
    /// # Errors
    /// The state machine's refusal (already started or finished).
    pub async fn start(&mut self, now: Duration) -> Result<Vec<String>, TransitionError> {
        self.now = now;
        let mut notes = Vec::new();
        if let Err(e) = self.source.read_window().await {
            if e.is_permanent() {
                self.permanent = Some(chain(&e));
            }
            notes.push(format!("{} (before the start)", chain(&e)));
        }
        let commands = self.engine.apply(Event::Start, now)?;
        self.carry_out(commands, &mut notes).await;
        self.stop_if_permanent(now, &mut notes).await?;
        Ok(notes)
    }

    /// One tick at `now`: reads the window, lets the engine judge and step,
    /// applies the weight. Returns the notifications to show.
    ///
    /// # Errors
    /// The state machine's refusal (not started, or already finished).
    pub async fn tick(&mut self, now: Duration) -> Result<Vec<String>, TransitionError> {
        self.now = now;
        let mut notes = Vec::new();
        self.retry_pending(&mut notes).await;
        if self.stop_if_permanent(now, &mut notes).await? {
            return Ok(notes);
        }
        let mut missing = None;
        let window = match self.source.read_window().await {
            Ok(w) => Some(w),
            Err(e) => {
                self.source_failures += 1;
                missing = Some(chain(&e));
                if e.is_permanent() {
                    self.permanent = Some(chain(&e));
                    notes.push(format!("{}: permanent; stopping the rollout", chain(&e)));
                } else {
                    notes.push(format!(
                        "{}: no observations this tick (never promotes)",
                        chain(&e)
                    ));
                }
                None
            }
        };
        if !self.stop_if_permanent(now, &mut notes).await? {
            let commands = match (window, missing) {
                (None, Some(why)) => self.engine.observe_missing(&why, now)?,
                (window, _) => self.engine.observe(window, now)?,
            };
            self.carry_out(commands, &mut notes).await;
            self.stop_if_permanent(now, &mut notes).await?;
        }
        Ok(notes)
    }

    /// Aborts the rollout when a seam has failed permanently; true when it
    /// did. An ended rollout is left to refuse the tick itself.
    async fn stop_if_permanent(
        &mut self,
        now: Duration,
        notes: &mut Vec<String>,
    ) -> Result<bool, TransitionError> {
        if let Some(why) = self.refused.take() {
            if matches!(self.engine.state().phase, Phase::Progressing { .. }) {
                let commands = self.engine.apply(
                    Event::Pause {
                        note: format!("paused: the traffic layer refused: {why}"),
                    },
                    now,
                )?;
                self.carry_out(commands, notes).await;
            }
        }
        let Some(why) = self.permanent.take() else {
            return Ok(false);
        };
        if self.engine.state().phase.is_terminal() {
            return Ok(false);
        }
        let commands = self.engine.apply(
            Event::Abort {
                reason: format!("stopped: {why}"),
            },
            now,
        )?;
        self.carry_out(commands, notes).await;
        // A permanent refusal of weight 0 itself is not acted on again (the
        // weight stays pending and is retried).
        self.permanent = None;
        Ok(true)
    }

    /// Aborts the rollout at `now` (weight back to 0).
    ///
    /// # Errors
    /// The state machine's refusal (the rollout already ended).
    pub async fn abort(
        &mut self,
        reason: &str,
        now: Duration,
    ) -> Result<Vec<String>, TransitionError> {
        self.now = now;
        let mut notes = Vec::new();
        let commands = self.engine.apply(
            Event::Abort {
                reason: reason.to_string(),
            },
            now,
        )?;
        self.carry_out(commands, &mut notes).await;
        Ok(notes)
    }

    /// Tries once more to apply a weight the actuator refused; returns the
    /// notifications.
    pub async fn flush(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        self.retry_pending(&mut notes).await;
        notes
    }

    async fn retry_pending(&mut self, notes: &mut Vec<String>) {
        if let Some(w) = self.pending_weight {
            self.set_weight(w, notes).await;
        }
    }

    async fn set_weight(&mut self, w: f64, notes: &mut Vec<String>) {
        match self.actuator.set_weight(w).await {
            Ok(()) => {
                self.pending_weight = None;
                self.applied_weight = w;
                // The next window starts at the new weight: drop what
                // finished between the last read and the change.
                let _ = self.source.read_window().await;
                if self.engine.state().weight_held {
                    self.tell_engine(Event::WeightApplied, notes);
                }
            }
            Err(e) => {
                self.pending_weight = Some(w);
                if e.is_permanent() && self.refused.is_none() {
                    self.refused = Some(format!("weight {w} % not applied: {}", chain(&e)));
                    notes.push(format!(
                        "{}: weight {w} % not applied; permanent",
                        chain(&e)
                    ));
                } else {
                    notes.push(format!(
                        "{}: weight {w} % not applied; will retry",
                        chain(&e)
                    ));
                }
                if !self.engine.state().weight_held {
                    self.tell_engine(Event::WeightHeld { note: chain(&e) }, notes);
                }
            }
        }
    }

    /// Tells the engine whether the traffic layer took its weight (a held
    /// weight stops the stage's clock). Only a rollout in a stage holds.
    fn tell_engine(&mut self, event: Event, notes: &mut Vec<String>) {
        if !matches!(
            self.engine.state().phase,
            Phase::Progressing { .. } | Phase::Paused { .. }
        ) {
            return;
        }
        if let Ok(commands) = self.engine.apply(event, self.now) {
            for c in commands {
                if let Command::Notify(n) = c {
                    notes.push(n);
                }
            }
        }
    }

    async fn carry_out(&mut self, commands: Vec<Command>, notes: &mut Vec<String>) {
        for c in commands {
            match c {
                Command::SetWeight(w) => self.set_weight(w, notes).await,
                Command::Notify(n) => notes.push(n),
                Command::StageStarted { .. } | Command::RecordDecision(_) => {}
            }
        }
    }

    /// The one-line status of the rollout.
    pub fn status(&self) -> Status {
        let state = self.engine.state();
        let obs = self.engine.observations();
        let policy = self.engine.policy();
        let stage = state.phase.stage();
        let bake = stage.map(|s| policy.stages[s].bake);
        let evidence = self
            .engine
            .last_verdict()
            .map(|v| {
                let metrics: Vec<String> = v
                    .metrics
                    .iter()
                    .map(|m| {
                        let mut s = format!("{} {}", m.name, m.outcome);
                        let num = |x: f64| {
                            if x.abs() >= 1e4 {
                                format!("{x:.2e}")
                            } else {
                                format!("{x:.3}")
                            }
                        };
                        if let Some(e) = m.e_value {
                            // With an e-value, `threshold` is ln(1/α): show
                            // the e-value it takes, on the same scale as e.
                            s.push_str(&format!(" e={}", num(e)));
                            if let Some(t) = m.threshold {
                                s.push_str(&format!("/{}", num(t.exp())));
                            }
                        } else if let Some(x) = m.statistic {
                            s.push_str(&format!(" stat={x:.4}"));
                            if let Some(t) = m.threshold {
                                s.push_str(&format!("/{t:.3}"));
                            }
                        }
                        s
                    })
                    .collect();
                format!("{} {}: {}", v.judge, v.outcome, metrics.join(", "))
            })
            .unwrap_or_else(|| "no verdict yet".into());
        Status {
            phase: state.phase.clone(),
            stage,
            stages: policy.stages.len(),
            weight: self.applied_weight,
            holdback: stage.map_or(0.0, |s| policy.stages[s].holdback),
            bake,
            stage_started: state.stage_started_at,
            stable: obs.stage.baseline.clone(),
            canary: obs.stage.canary.clone(),
            evidence,
            source_failures: self.source_failures,
        }
    }
}

/// What the status line shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// The phase.
    pub phase: Phase,
    /// Current stage index, if any.
    pub stage: Option<usize>,
    /// Number of stages.
    pub stages: usize,
    /// Weight the actuator last applied, percent.
    pub weight: f64,
    /// Percent kept on stable while the stage is judged (a 100 % stage's
    /// `analysis.holdback`; else 0).
    pub holdback: f64,
    /// The stage's bake time.
    pub bake: Option<Duration>,
    /// When the stage began.
    pub stage_started: Duration,
    /// Stable's numbers over the stage.
    pub stable: VersionStats,
    /// Canary's numbers over the stage.
    pub canary: VersionStats,
    /// The judge's current evidence, in short.
    pub evidence: String,
    /// Windows the source failed to deliver.
    pub source_failures: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Some(s) => write!(f, "stage {}/{} ", s + 1, self.stages)?,
            None => write!(f, "{} ", self.phase.name())?,
        }
        if let Phase::Paused { .. } = self.phase {
            f.write_str("(paused) ")?;
        }
        write!(f, "weight {}%", self.weight)?;
        if self.holdback > 0.0 {
            write!(f, " ({}% held back on stable)", self.holdback)?;
        }
        f.write_str(" | ")?;
        for (name, v) in [("stable", &self.stable), ("canary", &self.canary)] {
            write!(f, "{name} {} req {} err", v.requests, v.errors)?;
            if let Some(p) = v.latency.quantile(0.5) {
                write!(f, " p50 {p:.1}ms")?;
            }
            f.write_str(" | ")?;
        }
        if self.source_failures > 0 {
            write!(f, "{} failed reads | ", self.source_failures)?;
        }
        f.write_str(&self.evidence)
    }
}

/// How a live run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEnd {
    /// The rollout reached a terminal phase by itself.
    Finished,
    /// The shutdown signal fired and the rollout was aborted.
    Interrupted,
}

/// Runs a started-or-pending rollout on the wall clock: starts it, ticks
/// every `interval` until it ends or `shutdown` fires (then aborts it), and
/// calls `on_update` with the notifications and the status after each step.
///
/// # Errors
/// The state machine's refusal, e.g. when the rollout had already ended.
pub async fn run_live<M: MetricsSource, A: TrafficActuator>(
    controller: &mut Controller<M, A>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    mut on_update: impl FnMut(&[String], &Status),
) -> Result<LiveEnd, TransitionError> {
    // The live controller is the clock's edge. tokio's clock, so that tests
    // can run a rollout on a paused clock.
    let origin = tokio::time::Instant::now();
    let notes = controller.start(origin.elapsed()).await?;
    on_update(&notes, &controller.status());
    let interval = interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(origin + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    // A permanent failure at the start (a query the metrics server rejects,
    // a weight the layer refuses for good) has already ended it.
    let end = if controller.is_finished() {
        LiveEnd::Finished
    } else {
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let notes = controller.tick(origin.elapsed()).await?;
                    on_update(&notes, &controller.status());
                    if controller.is_finished() {
                        break LiveEnd::Finished;
                    }
                }
                _ = &mut shutdown => {
                    let notes = controller
                        .abort("interrupted by the operator", origin.elapsed())
                        .await?;
                    on_update(&notes, &controller.status());
                    break LiveEnd::Interrupted;
                }
            }
        }
    };
    if !controller.weight_applied() {
        let notes = controller.flush().await;
        on_update(&notes, &controller.status());
    }
    Ok(end)
}

#[cfg(test)]
mod tests;
