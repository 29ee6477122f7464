//! The rollout state machine: `step(policy, state, event, now)`.
//!
//! One exhaustive `match` over (phase, event). It reads no clock: `now` is the
//! time since an origin the caller chose (the simulated clock, or the wall
//! clock at the binary's edge). The simulator and the live controller both
//! drive rollouts through this one function, so a policy behaves the same in
//! `canary evaluate` and in production.
//!
//! # Guarantees
//! - The weight is never above 100 and never decreases while progressing.
//! - While a stage is judged the canary gets its [routed
//!   weight](crate::Stage::routed_weight): the stage's weight, less the
//!   stable holdback (`analysis.holdback`, default 0) on a stage of
//!   weight 100, so that with a holdback the judges see both versions at
//!   once there too.
//! - Rollback and abort end at weight 0; success ends at weight 100 (the
//!   holdback, if any, goes to the canary when the last stage passes, or at
//!   a `promote`/`promote-full`).
//! - A terminal phase (succeeded, rolled back, aborted) refuses every event
//!   with [`TransitionError::Terminal`]; a rollout cannot be re-run.
//! - A stage advances only on a fresh passing verdict once its bake time is
//!   met: a tick alone (e.g. while the metrics source is down) never promotes.
//! - A passing verdict that carries a guardrail breach pauses instead of
//!   advancing: an absolute limit holds whatever the comparison says.
//! - While the traffic layer has not taken the current weight (a health
//!   hold, a layer that refuses it), no stage passes and no stage times
//!   out: the stage's clock stands still, and restarts when the weight is
//!   applied ([`Event::WeightHeld`], [`Event::WeightApplied`]). A failing
//!   verdict still rolls back.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{OnInconclusive, OnMetricsUnavailable, Policy, WaitAction, WebhookType};
use crate::verdict::{Outcome, Verdict};

/// Why a rollout is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseReason {
    /// A person (or the API) paused it.
    Manual {
        /// Their note.
        note: String,
    },
    /// The stage passed and is marked `pause: true`: waiting for a promote.
    Gate,
    /// The stage timed out without a pass and the policy says pause.
    Inconclusive {
        /// What the judge last said.
        note: String,
    },
    /// The stage would have passed, but the canary breaks an absolute
    /// guardrail (`analysis.guardrails`): a person must look.
    Guardrail {
        /// Which limit, by how much.
        note: String,
    },
    /// The metrics could not be read for `analysis.metrics_unavailable_after`
    /// looks in a row and `analysis.on_metrics_unavailable` is `pause`: the
    /// weight is held, no timeout runs, and the stage goes on (its clock
    /// restarted) as soon as numbers come back.
    NoData {
        /// What the source said last.
        note: String,
    },
    /// The stage passed, and the next move (more traffic, or 100 %) waits
    /// for every webhook of type `gate` (`confirm-traffic-increase`,
    /// `confirm-promotion`) to answer 2xx. Analysis goes on meanwhile: a
    /// failure still rolls back.
    Webhook {
        /// The gate's webhook type.
        gate: WebhookType,
    },
}

impl PauseReason {
    /// What the rollout waits for, in words.
    pub fn waiting_for(&self) -> String {
        match self {
            PauseReason::Manual { .. } => "a resume (`canary rollouts resume`)".into(),
            PauseReason::Gate => {
                "a manual promote past a `pause: true` stage (`canary rollouts resume`)".into()
            }
            PauseReason::Inconclusive { .. } | PauseReason::Guardrail { .. } => {
                "a person: resume, promote or abort".into()
            }
            PauseReason::NoData { .. } => "the metrics to come back".into(),
            PauseReason::Webhook { gate } => format!("the {gate} webhook(s) to answer 2xx"),
        }
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseReason::Manual { note } => write!(f, "paused by hand: {note}"),
            PauseReason::Gate => f.write_str("stage passed; waiting for a manual promote"),
            PauseReason::Inconclusive { note } => {
                write!(f, "no decision by the stage's timeout: {note}")
            }
            PauseReason::Guardrail { note } => write!(f, "held by a guardrail: {note}"),
            PauseReason::NoData { note } => write!(f, "held without metrics: {note}"),
            PauseReason::Webhook { gate } => {
                write!(
                    f,
                    "stage passed; waiting for the {gate} webhook(s) to answer 2xx"
                )
            }
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Not started; no canary traffic.
    Pending,
    /// Running stage `stage` (0-based).
    Progressing {
        /// Current stage index.
        stage: usize,
    },
    /// Holding stage `stage`'s weight.
    Paused {
        /// Current stage index.
        stage: usize,
        /// Why.
        reason: PauseReason,
    },
    /// The canary serves all traffic.
    Succeeded,
    /// The canary was judged worse and its traffic is stepping down to 0
    /// (`rollback.mode: gradual`); each step holds `rollback.step_interval`.
    RollingBack {
        /// Why, in words.
        reason: String,
        /// The index in `rollback.steps` of the weight now routed.
        step: usize,
    },
    /// The canary was judged worse; no canary traffic.
    RolledBack {
        /// Why, in words.
        reason: String,
    },
    /// Stopped by hand; no canary traffic.
    Aborted {
        /// Why, in words.
        reason: String,
    },
}

impl Phase {
    /// The phase's name: `pending`, `progressing`, `paused`, `succeeded`,
    /// `rolling_back`, `rolled_back` or `aborted`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing { .. } => "progressing",
            Phase::Paused { .. } => "paused",
            Phase::Succeeded => "succeeded",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::RolledBack { .. } => "rolled_back",
            Phase::Aborted { .. } => "aborted",
        }
    }

    /// True for succeeded, rolled back and aborted.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::RolledBack { .. } | Phase::Aborted { .. }
        )
    }

    /// The current stage, while there is one.
    pub fn stage(&self) -> Option<usize> {
        match self {
            Phase::Progressing { stage } | Phase::Paused { stage, .. } => Some(*stage),
            _ => None,
        }
    }
}

/// Something that happens to a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Begin the first stage.
    Start,
    /// Time passed (checks the stage's timeout; never promotes by itself).
    Tick,
    /// The judge looked at fresh observations.
    Verdict(Verdict),
    /// Hold the current weight.
    Pause {
        /// Why.
        note: String,
    },
    /// Continue after a pause (after a gate: go to the next stage).
    Resume,
    /// Go to the next stage now (or succeed from the last one).
    Promote,
    /// Go straight to 100 % and succeed.
    PromoteFull,
    /// Stop and send all traffic to the stable version.
    Abort {
        /// Why.
        reason: String,
    },
    /// The metrics have been unreadable for
    /// `analysis.metrics_unavailable_after` looks in a row: pause or roll
    /// back, as `analysis.on_metrics_unavailable` says.
    MetricsUnavailable {
        /// What the source said.
        note: String,
    },
    /// Every webhook of the gate the rollout waits at answered 2xx: go on.
    GateOpened {
        /// The gate's webhook type.
        gate: WebhookType,
    },
    /// Roll back now (a `rollback` webhook, an external kill switch, asked
    /// for it): as a failed verdict would, gradual steps included.
    Rollback {
        /// Why.
        reason: String,
    },
    /// The traffic layer did not take the weight the rollout is at (its
    /// health gate holds it, or it refused): until it does, the stage's
    /// clock stands still and nothing passes or times out.
    WeightHeld {
        /// Why, in words.
        note: String,
    },
    /// The traffic layer took the weight the rollout is at: after a hold,
    /// the stage's clock restarts now.
    WeightApplied,
}

impl Event {
    /// The event's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Tick => "tick",
            Event::Verdict(_) => "verdict",
            Event::Pause { .. } => "pause",
            Event::Resume => "resume",
            Event::Promote => "promote",
            Event::PromoteFull => "promote-full",
            Event::Abort { .. } => "abort",
            Event::MetricsUnavailable { .. } => "metrics-unavailable",
            Event::GateOpened { .. } => "gate-opened",
            Event::Rollback { .. } => "rollback",
            Event::WeightHeld { .. } => "weight-held",
            Event::WeightApplied => "weight-applied",
        }
    }
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The rollout began.
    Start,
    /// A stage passed and the next began.
    Advance,
    /// The rollout paused.
    Pause,
    /// The rollout resumed.
    Resume,
    /// A person promoted to the next stage.
    Promote,
    /// A person promoted to 100 %.
    PromoteFull,
    /// The last stage passed: fully promoted.
    Succeed,
    /// The canary was rolled back (or, with a gradual rollback, its
    /// first step down began).
    Rollback,
    /// A gradual rollback stepped down to the next weight.
    RollbackStep,
    /// The rollout was aborted.
    Abort,
    /// A stage passed and the next move waits at a webhook gate.
    AwaitGate,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// When, seconds since the origin of `now`.
    pub at_seconds: f64,
    /// Stage index the decision was taken in, if any.
    pub stage: Option<usize>,
    /// What was done.
    pub action: Action,
    /// Canary weight before.
    pub weight_before: f64,
    /// Canary weight after.
    pub weight_after: f64,
    /// Why, in words.
    pub reason: String,
    /// The verdict that led to it, with its evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// What the driver must do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send this percentage of traffic to the canary.
    SetWeight(f64),
    /// A stage began: judges reset their per-stage state, observations
    /// restart their stage totals.
    StageStarted {
        /// Stage index.
        stage: usize,
        /// The canary's weight while it is judged (its routed weight: less
        /// the stable holdback on a 100 % stage).
        weight: f64,
    },
    /// Append this decision to the audit trail.
    RecordDecision(Decision),
    /// Tell people (log line, webhook) this.
    Notify(String),
}

/// A rollout's state: small, cloneable, serializable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutState {
    /// The phase.
    pub phase: Phase,
    /// Current canary weight, percent.
    pub weight: f64,
    /// When the current stage began (or resumed).
    pub stage_started_at: Duration,
    /// When the current pause began (meaningful while paused).
    pub paused_at: Duration,
    /// True while the traffic layer has not taken `weight`
    /// ([`Event::WeightHeld`]): the stage's clock stands still.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub weight_held: bool,
}

impl Default for RolloutState {
    fn default() -> Self {
        Self::new()
    }
}

impl RolloutState {
    /// A pending rollout at weight 0.
    pub fn new() -> Self {
        Self {
            phase: Phase::Pending,
            weight: 0.0,
            stage_started_at: Duration::ZERO,
            paused_at: Duration::ZERO,
            weight_held: false,
        }
    }
}

/// An event the current phase does not accept. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The rollout has ended; nothing more can happen to it.
    #[error("rollout is {phase}: a finished rollout accepts no `{event}`")]
    Terminal {
        /// The terminal phase.
        phase: &'static str,
        /// The refused event.
        event: &'static str,
    },
    /// The event makes no sense in this phase.
    #[error("`{event}` is not allowed while the rollout is {phase}")]
    NotAllowed {
        /// The current phase.
        phase: &'static str,
        /// The refused event.
        event: &'static str,
    },
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new state.
    pub state: RolloutState,
    /// What the driver must do, in order.
    pub commands: Vec<Command>,
}

struct Stepper<'a> {
    policy: &'a Policy,
    now: Duration,
    state: RolloutState,
    commands: Vec<Command>,
}

impl Stepper<'_> {
    fn decide(
        &mut self,
        action: Action,
        new_weight: f64,
        reason: String,
        verdict: Option<Verdict>,
    ) {
        let stage = self.state.phase.stage();
        let before = self.state.weight;
        if new_weight != before {
            self.commands.push(Command::SetWeight(new_weight));
        }
        self.state.weight = new_weight;
        let name = format!("{action:?}").to_lowercase();
        self.commands
            .push(Command::Notify(format!("{name}: {reason}")));
        self.commands.push(Command::RecordDecision(Decision {
            at_seconds: self.now.as_secs_f64(),
            stage,
            action,
            weight_before: before,
            weight_after: new_weight,
            reason,
            verdict,
        }));
    }

    fn begin_stage(
        &mut self,
        stage: usize,
        action: Action,
        reason: String,
        verdict: Option<Verdict>,
    ) {
        // A 100 % stage keeps its holdback on stable until it passes.
        let weight = self.policy.stages[stage].routed_weight();
        self.decide(action, weight, reason, verdict);
        self.state.phase = Phase::Progressing { stage };
        self.state.stage_started_at = self.now;
        self.commands.push(Command::StageStarted { stage, weight });
    }

    /// Leaves stage `from` for the next one, or succeeds after the last.
    fn next_stage(
        &mut self,
        from: usize,
        action: Action,
        reason: String,
        verdict: Option<Verdict>,
    ) {
        if from + 1 < self.policy.stages.len() {
            self.begin_stage(from + 1, action, reason, verdict);
        } else {
            self.decide(Action::Succeed, 100.0, reason, verdict);
            self.state.phase = Phase::Succeeded;
        }
    }

    /// Stage `stage` passed on `verdict` (unless a guardrail holds it).
    fn stage_passed(&mut self, stage: usize, verdict: Verdict) {
        let w = self.policy.stages[stage].describe_weight();
        if let Some(breach) = verdict.guardrail.clone() {
            let note = format!(
                "stage {stage} ({w}) passed the comparison with stable but not the \
                 absolute guardrails: {breach}"
            );
            let weight = self.state.weight;
            self.decide(Action::Pause, weight, note.clone(), Some(verdict));
            self.state.phase = Phase::Paused {
                stage,
                reason: PauseReason::Guardrail { note },
            };
        } else if let Some(gate) = self.gate_before_next(stage) {
            let reason = format!(
                "stage {stage} ({w}) passed: {}; waiting for the {gate} webhook(s)",
                verdict.reason
            );
            let weight = self.state.weight;
            self.decide(Action::AwaitGate, weight, reason, Some(verdict));
            self.state.phase = Phase::Paused {
                stage,
                reason: PauseReason::Webhook { gate },
            };
        } else if self.policy.stages[stage].pause_after {
            let reason = format!(
                "stage {stage} ({w}) passed: {}; waiting for a manual promote",
                verdict.reason
            );
            let weight = self.state.weight;
            self.decide(Action::Pause, weight, reason, Some(verdict));
            self.state.phase = Phase::Paused {
                stage,
                reason: PauseReason::Gate,
            };
        } else {
            let reason = format!("stage {stage} ({w}) passed: {}", verdict.reason);
            self.next_stage(stage, Action::Advance, reason, Some(verdict));
        }
    }

    /// The webhook gate the move after stage `stage` waits at, if the spec
    /// has webhooks of its type: `confirm-promotion` before the canary gets
    /// 100 %, `confirm-traffic-increase` before any other increase. A
    /// `pause: true` stage waits for a person instead, whose promote is
    /// the decision.
    fn gate_before_next(&self, stage: usize) -> Option<WebhookType> {
        if self.policy.stages[stage].pause_after {
            return None;
        }
        // The move after the last stage sets 100 %; after a 100 % stage
        // (its holdback the only traffic left to move) it was confirmed
        // before that stage began.
        let next = match self.policy.stages.get(stage + 1) {
            Some(s) => s.weight,
            None if self.policy.stages[stage].weight < 100.0 => 100.0,
            None => return None,
        };
        let gate = if next >= 100.0 {
            WebhookType::ConfirmPromotion
        } else {
            WebhookType::ConfirmTrafficIncrease
        };
        self.policy.hooks.has(gate).then_some(gate)
    }

    /// While paused: aborts once the pause has lasted its limit
    /// (`gate_timeout` at a webhook gate, `pause_timeout` for a pause that
    /// waits for a person) when the limit's action is `abort`.
    fn check_wait(&mut self, reason: &PauseReason) {
        let (limit, field) = match reason {
            PauseReason::Webhook { .. } => (Some(self.policy.hooks.gate_timeout), "gate_timeout"),
            PauseReason::NoData { .. } => (None, ""),
            PauseReason::Manual { .. }
            | PauseReason::Gate
            | PauseReason::Inconclusive { .. }
            | PauseReason::Guardrail { .. } => (self.policy.hooks.pause_timeout, "pause_timeout"),
        };
        let Some(limit) = limit else { return };
        if limit.action == WaitAction::KeepWaiting
            || self.now.saturating_sub(self.state.paused_at) < limit.after
        {
            return;
        }
        self.abort(format!(
            "waited {}s for {} ({field}): aborted",
            limit.after.as_secs_f64(),
            reason.waiting_for()
        ));
    }

    /// Rolls back: at once, or to the first `rollback.steps` weight below
    /// the current one.
    fn roll_back(&mut self, reason: String, verdict: Option<Verdict>) {
        let steps = &self.policy.rollback.steps;
        let first = steps.iter().position(|&w| w < self.state.weight);
        match first {
            Some(i) if steps[i] > 0.0 => {
                let w = steps[i];
                let note = format!(
                    "{reason} (gradual rollback: {w} % to the canary, then {} % every {}s)",
                    join_weights(&steps[i + 1..]),
                    self.policy.rollback.step_interval.as_secs_f64()
                );
                self.decide(Action::Rollback, w, note, verdict);
                self.state.phase = Phase::RollingBack { reason, step: i };
                self.state.stage_started_at = self.now;
            }
            _ => {
                self.decide(Action::Rollback, 0.0, reason.clone(), verdict);
                self.state.phase = Phase::RolledBack { reason };
            }
        }
    }

    /// A gradual rollback's next step, once the current one has held for
    /// `rollback.step_interval`.
    fn step_down(&mut self, reason: &str, step: usize) {
        let r = &self.policy.rollback;
        if self.now.saturating_sub(self.state.stage_started_at) < r.step_interval {
            return;
        }
        let next = step + 1;
        let w = r.steps.get(next).copied().unwrap_or(0.0);
        let note = format!(
            "gradual rollback: step {} of {}, {w} % to the canary",
            next + 1,
            r.steps.len()
        );
        self.decide(Action::RollbackStep, w, note, None);
        if w == 0.0 {
            self.state.phase = Phase::RolledBack {
                reason: reason.to_string(),
            };
        } else {
            self.state.phase = Phase::RollingBack {
                reason: reason.to_string(),
                step: next,
            };
            self.state.stage_started_at = self.now;
        }
    }

    /// Applies the policy for a stage that reached its timeout without a pass.
    fn check_timeout(&mut self, stage: usize, last: Option<Verdict>) {
        let s = &self.policy.stages[stage];
        if self.now.saturating_sub(self.state.stage_started_at) < s.timeout {
            return;
        }
        let why = last.as_ref().map_or_else(
            || "no verdict from the judge".to_string(),
            |v| v.reason.clone(),
        );
        let note = format!(
            "stage {stage} ({}) reached its {}s timeout without a pass ({why})",
            s.describe_weight(),
            s.timeout.as_secs_f64()
        );
        match self.policy.analysis.on_inconclusive {
            OnInconclusive::Rollback => self.roll_back(note, last),
            OnInconclusive::Pause => {
                let weight = self.state.weight;
                self.decide(Action::Pause, weight, note.clone(), last);
                self.state.phase = Phase::Paused {
                    stage,
                    reason: PauseReason::Inconclusive { note },
                };
            }
        }
    }

    fn abort(&mut self, reason: String) {
        self.decide(Action::Abort, 0.0, reason.clone(), None);
        self.state.phase = Phase::Aborted { reason };
    }
}

/// The weights as "50, 25 and 0".
fn join_weights(w: &[f64]) -> String {
    let w: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    match w.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Steps `state` by `event` at time `now` under `policy`.
///
/// # Errors
/// [`TransitionError::Terminal`] for any event after the rollout ended;
/// [`TransitionError::NotAllowed`] for an event the phase does not accept
/// (start twice, resume while not paused, pause while paused, a verdict
/// before the start).
pub fn step(
    policy: &Policy,
    state: &RolloutState,
    event: Event,
    now: Duration,
) -> Result<Transition, TransitionError> {
    let phase_name = state.phase.name();
    let refuse = |event: &Event| -> TransitionError {
        if state.phase.is_terminal() {
            TransitionError::Terminal {
                phase: phase_name,
                event: event.name(),
            }
        } else {
            TransitionError::NotAllowed {
                phase: phase_name,
                event: event.name(),
            }
        }
    };
    let mut s = Stepper {
        policy,
        now,
        state: state.clone(),
        commands: Vec::new(),
    };
    match (&state.phase, event) {
        (Phase::Succeeded | Phase::RolledBack { .. } | Phase::Aborted { .. }, e) => {
            return Err(refuse(&e))
        }

        // A gradual rollback steps down with time; an abort ends it at once.
        (
            Phase::RollingBack { reason, step },
            Event::Tick | Event::Verdict(_) | Event::MetricsUnavailable { .. },
        ) => s.step_down(reason, *step),
        (Phase::RollingBack { .. }, Event::Abort { reason }) => s.abort(reason),
        // The steps down are not held: nothing passes while rolling back.
        (Phase::RollingBack { .. }, Event::WeightHeld { .. } | Event::WeightApplied) => {}
        (Phase::RollingBack { .. }, e) => return Err(refuse(&e)),

        (Phase::Pending, Event::Start) => {
            s.begin_stage(0, Action::Start, "rollout started".into(), None);
        }
        (Phase::Pending, Event::Abort { reason }) => s.abort(reason),
        // Waiting to start (for the `confirm-rollout` webhooks): time
        // passes, and `gate_timeout` applies.
        (Phase::Pending, Event::Tick) => {
            let limit = policy.hooks.gate_timeout;
            if policy.hooks.has(WebhookType::ConfirmRollout)
                && limit.action == WaitAction::Abort
                && now >= limit.after
            {
                s.abort(format!(
                    "waited {}s for the confirm-rollout webhook(s) to answer 2xx (gate_timeout): aborted",
                    limit.after.as_secs_f64()
                ));
            }
        }
        (Phase::Pending, e) => return Err(refuse(&e)),

        // The layer has not taken the weight: the evidence is still at the
        // old one, so a failure rolls back but nothing passes or times out.
        (Phase::Progressing { .. }, Event::Verdict(v))
            if state.weight_held && v.outcome != Outcome::Fail => {}
        (Phase::Progressing { .. }, Event::Tick) if state.weight_held => {}
        (&Phase::Progressing { stage }, Event::Verdict(v)) => match v.outcome {
            Outcome::Fail => s.roll_back(v.reason.clone(), Some(v)),
            Outcome::Pass
                if now.saturating_sub(state.stage_started_at) >= policy.stages[stage].bake =>
            {
                s.stage_passed(stage, v)
            }
            Outcome::Pass | Outcome::Inconclusive => s.check_timeout(stage, Some(v)),
        },
        (&Phase::Progressing { stage }, Event::Tick) => s.check_timeout(stage, None),
        (&Phase::Progressing { stage }, Event::Pause { note }) => {
            let weight = s.state.weight;
            s.decide(Action::Pause, weight, note.clone(), None);
            s.state.phase = Phase::Paused {
                stage,
                reason: PauseReason::Manual { note },
            };
        }
        (&Phase::Progressing { stage }, Event::MetricsUnavailable { note }) => {
            match policy.analysis.on_metrics_unavailable {
                OnMetricsUnavailable::Rollback => s.roll_back(note, None),
                OnMetricsUnavailable::Pause => {
                    let weight = s.state.weight;
                    s.decide(Action::Pause, weight, note.clone(), None);
                    s.state.phase = Phase::Paused {
                        stage,
                        reason: PauseReason::NoData { note },
                    };
                }
            }
        }
        (Phase::Paused { .. }, Event::MetricsUnavailable { .. }) => {}
        (&Phase::Progressing { stage }, Event::Promote) => {
            s.next_stage(stage, Action::Promote, "promoted by hand".into(), None)
        }
        (Phase::Progressing { .. } | Phase::Paused { .. }, Event::PromoteFull) => {
            s.decide(
                Action::PromoteFull,
                100.0,
                "promoted to 100 % by hand".into(),
                None,
            );
            s.state.phase = Phase::Succeeded;
        }
        (Phase::Progressing { .. } | Phase::Paused { .. }, Event::Abort { reason }) => {
            s.abort(reason)
        }
        (Phase::Progressing { .. }, e @ (Event::Start | Event::Resume)) => return Err(refuse(&e)),

        // While paused, analysis goes on: a failure still rolls back, but
        // nothing else moves the rollout.
        (Phase::Paused { .. }, Event::Verdict(v)) if v.outcome == Outcome::Fail => {
            s.roll_back(v.reason.clone(), Some(v))
        }
        // Held for missing metrics: numbers are back, the stage goes on.
        (
            &Phase::Paused {
                stage,
                reason: PauseReason::NoData { .. },
            },
            Event::Verdict(v),
        ) => {
            let weight = s.state.weight;
            s.decide(
                Action::Resume,
                weight,
                "metrics are back; the stage goes on and its clock restarts".into(),
                Some(v),
            );
            s.state.phase = Phase::Progressing { stage };
            s.state.stage_started_at = now;
        }
        (Phase::Paused { reason, .. }, Event::Verdict(_) | Event::Tick) => s.check_wait(reason),
        (
            &Phase::Paused {
                stage,
                reason: PauseReason::Webhook { gate },
            },
            Event::GateOpened { gate: opened },
        ) if gate == opened => s.next_stage(
            stage,
            Action::Advance,
            format!("stage {stage} passed and the {gate} webhook(s) answered 2xx"),
            None,
        ),
        (Phase::Progressing { .. } | Phase::Paused { .. }, Event::Rollback { reason }) => {
            s.roll_back(reason, None)
        }
        (Phase::Progressing { .. } | Phase::Paused { .. }, e @ Event::GateOpened { .. }) => {
            return Err(refuse(&e))
        }
        (Phase::Paused { stage, reason }, Event::Resume) => match reason {
            PauseReason::Gate => s.next_stage(
                *stage,
                Action::Promote,
                "promoted past the gate".into(),
                None,
            ),
            // A webhook gate opens when its hooks answer 2xx; a person
            // overrides it with `promote`.
            PauseReason::Webhook { .. } => return Err(refuse(&Event::Resume)),
            PauseReason::Manual { .. }
            | PauseReason::Inconclusive { .. }
            | PauseReason::Guardrail { .. }
            | PauseReason::NoData { .. } => {
                let weight = s.state.weight;
                s.decide(
                    Action::Resume,
                    weight,
                    "resumed; the stage's clock restarts".into(),
                    None,
                );
                s.state.phase = Phase::Progressing { stage: *stage };
                s.state.stage_started_at = now;
            }
        },
        (&Phase::Paused { stage, .. }, Event::Promote) => {
            s.next_stage(stage, Action::Promote, "promoted by hand".into(), None)
        }
        (Phase::Paused { .. }, e @ (Event::Start | Event::Pause { .. })) => return Err(refuse(&e)),

        (Phase::Progressing { .. } | Phase::Paused { .. }, Event::WeightHeld { note }) => {
            if !state.weight_held {
                s.state.weight_held = true;
                let stage = state.phase.stage().unwrap_or(0);
                s.commands.push(Command::Notify(format!(
                    "held: the traffic layer has not taken {} %: {note}; stage {stage}'s clock stands still until it does",
                    state.weight
                )));
            }
        }
        (Phase::Progressing { .. } | Phase::Paused { .. }, Event::WeightApplied) => {
            if state.weight_held {
                s.state.weight_held = false;
                if let Phase::Progressing { stage } = state.phase {
                    s.state.stage_started_at = now;
                    s.commands.push(Command::Notify(format!(
                        "applied: the traffic layer routes {} %; stage {stage}'s clock restarts",
                        state.weight
                    )));
                }
            }
        }
    }
    if matches!(s.state.phase, Phase::Paused { .. }) && !matches!(state.phase, Phase::Paused { .. })
    {
        s.state.paused_at = now;
    }
    Ok(Transition {
        state: s.state,
        commands: s.commands,
    })
}

#[cfg(test)]
mod tests;
