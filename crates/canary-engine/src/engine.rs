//! [`Engine`]: one rollout's judge, state machine, observations and audit
//! trail, fed one window per tick.
//!
//! The simulator (`canary-sim`) and the live controller feed an [`Engine`]
//! one window of observations per tick and carry out the [`Command`]s it
//! returns (set the weight, notify). Everything between — accumulating the
//! stage's numbers, asking the judge, stepping the state machine, keeping the
//! audit trail and the per-stage report — happens here, once, so the two
//! cannot drift apart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::{for_policy, Judge};
use crate::report::{RolloutReport, StageRecord};
use canary_core::spec::{BusinessMetric, Direction};
use canary_core::{
    step, Check, Command, Decision, Event, MetricEvidence, Observations, Outcome, Pair, Phase,
    Policy, RolloutState, TransitionError, Verdict, VersionStats,
};

/// One input of an engine: everything that changes it is one of these, so
/// a rollout's inputs, stored in order, rebuild it exactly
/// ([`Engine::replay`]) — the judge's evidence included, so a restart does
/// not begin a fresh test that spends α again.
// An input lives only until it is applied or stored; the size of a window
// in it costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// An operator event ([`Engine::apply`]).
    Apply {
        /// The event.
        event: Event,
        /// When, since the rollout's origin.
        now: Duration,
    },
    /// A tick ([`Engine::observe`]).
    Observe {
        /// The window, or `None` when the source could not be read.
        window: Option<Pair<VersionStats>>,
        /// Without a window: why the source could not be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<String>,
        /// When, since the rollout's origin.
        now: Duration,
        /// External checks answered at this look (`rollout` webhooks).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<Check>,
    },
}

/// One rollout in progress.
pub struct Engine {
    policy: Policy,
    judge: Box<dyn Judge>,
    state: RolloutState,
    obs: Observations,
    decisions: Vec<Decision>,
    stages: Vec<StageRecord>,
    last_verdict: Option<Verdict>,
    /// Verdicts reached so far (looks that judged a window).
    looks: u64,
    started_at: Option<Duration>,
    now: Duration,
    /// Looks in a row without a window.
    missing: u32,
    /// One judge per business metric (`metrics.business`), of the policy's
    /// kind, fed the metric's counts as requests and bad events.
    business: Vec<(BusinessMetric, Box<dyn Judge>)>,
    /// Per threshold metric, its readings out of bounds in a row.
    streaks: Vec<u32>,
}

/// A business metric's counts as a judge reads requests and errors: the
/// denominator as requests, the bad events (the numerator when lower is
/// better, the rest when higher is better) as errors.
fn as_counts(v: &VersionStats, b: &BusinessMetric) -> VersionStats {
    let r = v.business.get(&b.name).copied().unwrap_or_default();
    let bad = match b.direction {
        Direction::LowerIsBetter => r.numerator,
        Direction::HigherIsBetter => r.denominator.saturating_sub(r.numerator),
    };
    VersionStats {
        requests: r.denominator,
        errors: bad.min(r.denominator),
        ..VersionStats::default()
    }
}

/// The observations a business metric's judge is shown.
fn business_obs(obs: &Observations, b: &BusinessMetric) -> Observations {
    let pair = |p: &Pair<VersionStats>| Pair {
        baseline: as_counts(&p.baseline, b),
        canary: as_counts(&p.canary, b),
    };
    Observations {
        canary_weight: obs.canary_weight,
        window: pair(&obs.window),
        stage: pair(&obs.stage),
        rollout: pair(&obs.rollout),
    }
}

/// Adds the checks' evidence to `verdict`; one that did not pass fails it,
/// its reason first.
fn apply_checks(verdict: &mut Verdict, checks: &[Check]) {
    let mut failed = Vec::new();
    for c in checks {
        let outcome = if c.passed {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        let reason = format!("webhook `{}`: {}", c.name, c.reason);
        if !c.passed {
            failed.push(reason.clone());
        }
        verdict.metrics.push(MetricEvidence::new(
            &format!("webhook:{}", c.name),
            outcome,
            reason,
        ));
    }
    if !failed.is_empty() {
        let own = (verdict.outcome == Outcome::Fail).then(|| verdict.reason.clone());
        verdict.outcome = Outcome::Fail;
        verdict.reason = failed.into_iter().chain(own).collect::<Vec<_>>().join("; ");
    }
}

impl Engine {
    /// A pending rollout of `policy`, judged by the judge its
    /// `analysis.judge` names with its `analysis` settings.
    pub fn new(policy: Policy) -> Self {
        // With m business metrics every judge runs at α/(m+1) (Bonferroni):
        // the rollout's false-alarm rate stays at α over all of them.
        let (business, thresholds) = policy
            .metrics
            .as_ref()
            .map(|m| (m.business.clone(), m.thresholds.len()))
            .unwrap_or_default();
        let mut judged = policy.clone();
        judged.analysis.alpha /= (business.len() + 1) as f64;
        Self {
            judge: for_policy(&judged),
            business: business
                .into_iter()
                .map(|b| (b, for_policy(&judged)))
                .collect(),
            streaks: vec![0; thresholds],
            policy,
            state: RolloutState::new(),
            obs: Observations::new(),
            decisions: Vec::new(),
            stages: Vec::new(),
            last_verdict: None,
            looks: 0,
            started_at: None,
            now: Duration::ZERO,
            missing: 0,
        }
    }

    /// Feeds one input: [`Engine::apply`] or [`Engine::observe`].
    ///
    /// # Errors
    /// The state machine's refusal; the rollout is unchanged.
    pub fn input(&mut self, input: Input) -> Result<Vec<Command>, TransitionError> {
        match input {
            Input::Apply { event, now } => self.apply(event, now),
            Input::Observe {
                window,
                missing,
                now,
                checks,
            } => self.observe_checked(window, missing.as_deref(), &checks, now),
        }
    }

    /// The engine that `inputs`, fed in order to a new engine of `policy`,
    /// build: the same state, evidence, audit trail and report as the
    /// engine they were first fed to (the engine is deterministic).
    ///
    /// # Errors
    /// The state machine's refusal of an input: the inputs do not belong to
    /// this policy, or are out of order.
    pub fn replay<'a>(
        policy: Policy,
        inputs: impl IntoIterator<Item = &'a Input>,
    ) -> Result<Engine, TransitionError> {
        let mut e = Engine::new(policy);
        for i in inputs {
            e.input(i.clone())?;
        }
        Ok(e)
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current state.
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    /// The observations so far.
    pub fn observations(&self) -> &Observations {
        &self.obs
    }

    /// The judge's last verdict, if any.
    pub fn last_verdict(&self) -> Option<&Verdict> {
        self.last_verdict.as_ref()
    }

    /// How many looks have judged a window so far: it grows by one with
    /// every input that produced a fresh [`Engine::last_verdict`].
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// The audit trail so far.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Applies an operator event (start, pause, resume, promote,
    /// promote-full, abort) at `now`.
    ///
    /// # Errors
    /// The state machine's refusal; the rollout is unchanged.
    pub fn apply(&mut self, event: Event, now: Duration) -> Result<Vec<Command>, TransitionError> {
        if matches!(event, Event::Start) && self.started_at.is_none() {
            self.started_at = Some(now);
        }
        self.now = now;
        let t = step(&self.policy, &self.state, event, now)?;
        self.state = t.state;
        for c in &t.commands {
            match c {
                Command::StageStarted { stage, weight } => {
                    self.close_stage(None);
                    self.obs.start_stage();
                    self.judge.start_stage(*stage, &self.policy.stages[*stage]);
                    for (_, j) in &mut self.business {
                        j.start_stage(*stage, &self.policy.stages[*stage]);
                    }
                    self.last_verdict = None;
                    self.stages.push(StageRecord {
                        index: *stage,
                        weight: *weight,
                        started_at_seconds: now.as_secs_f64(),
                        ended_at_seconds: None,
                        baseline: VersionStats::default().summary(),
                        canary: VersionStats::default().summary(),
                        verdict: None,
                        decision: None,
                    });
                }
                Command::RecordDecision(d) => {
                    if let Some(rec) = self.stages.last_mut() {
                        if rec.ended_at_seconds.is_none() && d.stage == Some(rec.index) {
                            rec.decision = Some(d.reason.clone());
                        }
                    }
                    self.decisions.push(d.clone());
                }
                Command::SetWeight(_) | Command::Notify(_) => {}
            }
        }
        if self.state.phase.is_terminal() || matches!(self.state.phase, Phase::RollingBack { .. }) {
            self.close_stage(Some(now));
        }
        Ok(t.commands)
    }

    /// One tick: the window recorded since the last tick at the current
    /// weight, or `None` when the metrics source could not be read. With a
    /// window, the judge looks, the policy's absolute guardrails are checked
    /// on the canary's numbers over the stage, and the verdict steps the
    /// machine; without one only time passes, which never promotes.
    ///
    /// # Errors
    /// The state machine's refusal (the rollout has ended or not started).
    pub fn observe(
        &mut self,
        window: Option<Pair<VersionStats>>,
        now: Duration,
    ) -> Result<Vec<Command>, TransitionError> {
        self.observe_checked(window, None, &[], now)
    }

    /// [`Engine::observe`] with the answers of external checks at this
    /// look: a check that did not pass fails the verdict with its reason
    /// (and, without a window, fails a verdict of its own: a failing
    /// end-to-end test is evidence without any numbers). `missing` says
    /// why there is no window.
    ///
    /// # Errors
    /// The state machine's refusal (the rollout has ended).
    pub fn observe_checked(
        &mut self,
        window: Option<Pair<VersionStats>>,
        missing: Option<&str>,
        checks: &[Check],
        now: Duration,
    ) -> Result<Vec<Command>, TransitionError> {
        let judged = matches!(
            self.state.phase,
            Phase::Progressing { .. } | Phase::Paused { .. }
        );
        if window.is_none() {
            if judged && checks.iter().any(|c| !c.passed) {
                let mut verdict = Verdict {
                    outcome: Outcome::Inconclusive,
                    judge: self.judge.kind().name().to_string(),
                    metrics: Vec::new(),
                    reason: format!("no numbers: {}", missing.unwrap_or("not read")),
                    guardrail: None,
                };
                apply_checks(&mut verdict, checks);
                self.last_verdict = Some(verdict.clone());
                self.now = now;
                return self.apply(Event::Verdict(verdict), now);
            }
            return self.observe_missing(missing.unwrap_or("no numbers"), now);
        }
        self.missing = 0;
        let stage = match (&self.state.phase, window) {
            (Phase::Progressing { stage } | Phase::Paused { stage, .. }, Some(w)) => {
                self.obs.push_window(w, self.state.weight);
                *stage
            }
            // A gradual rollback: the canary still serves its share, which
            // counts in the rollout's totals (its exposure); nobody judges it.
            (Phase::RollingBack { .. }, Some(w)) => {
                self.obs.push_window(w, self.state.weight);
                return self.apply(Event::Tick, now);
            }
            (_, _) => return self.apply(Event::Tick, now),
        };
        let mut verdict = self.judge.judge(&self.policy.stages[stage], &self.obs);
        self.judge_extras(stage, &mut verdict);
        apply_checks(&mut verdict, checks);
        verdict.guardrail = self
            .policy
            .analysis
            .guardrails
            .breached(&self.obs.stage.canary, &self.obs.stage.baseline);
        self.last_verdict = Some(verdict.clone());
        self.looks += 1;
        if let Some(rec) = self.stages.last_mut() {
            rec.verdict = Some(verdict.clone());
        }
        self.apply(Event::Verdict(verdict), now)
    }

    /// Adds the business and threshold metrics' evidence to `verdict`: a
    /// business metric that fails, or a threshold metric out of bounds for
    /// its `consecutive` readings, fails it; a threshold reading out of
    /// bounds fewer times (or missing) holds a passing stage. A business
    /// metric without evidence either way does not hold it (business counts
    /// are small; the stage's own tests decide).
    fn judge_extras(&mut self, stage: usize, verdict: &mut Verdict) {
        let st = &self.policy.stages[stage];
        let mut failed: Vec<String> = Vec::new();
        let mut held: Vec<String> = Vec::new();
        for (b, judge) in &mut self.business {
            let v = judge.judge(st, &business_obs(&self.obs, b));
            let Some(mut ev) = v.metrics.into_iter().find(|m| m.name == "error_rate") else {
                continue;
            };
            let bad = match b.direction {
                Direction::LowerIsBetter => "numerator events",
                Direction::HigherIsBetter => "denominator events without a numerator event",
            };
            ev.name = b.name.clone();
            ev.reason = format!(
                "{} ({}; tested as the rate of {bad}): {}",
                b.name,
                b.direction.name(),
                ev.reason
            );
            if ev.outcome == Outcome::Fail {
                failed.push(ev.reason.clone());
            }
            verdict.metrics.push(ev);
        }
        let thresholds = self
            .policy
            .metrics
            .as_ref()
            .map(|m| m.thresholds.clone())
            .unwrap_or_default();
        for (i, t) in thresholds.iter().enumerate() {
            let reading = self.obs.window.canary.gauges.get(&t.name).copied();
            let (outcome, reason) = match reading {
                None => (Outcome::Inconclusive, "no reading this look".to_string()),
                Some(x) if t.holds(x) => {
                    self.streaks[i] = 0;
                    (Outcome::Pass, format!("{x} is within {}", t.bounds()))
                }
                Some(x) => {
                    self.streaks[i] += 1;
                    let n = self.streaks[i];
                    if n >= t.consecutive {
                        (
                            Outcome::Fail,
                            format!("{x} is outside {} for {n} readings in a row", t.bounds()),
                        )
                    } else {
                        (
                            Outcome::Inconclusive,
                            format!(
                                "{x} is outside {} ({n} of {} readings in a row that fail)",
                                t.bounds(),
                                t.consecutive
                            ),
                        )
                    }
                }
            };
            let text = format!("{}: {reason}", t.name);
            match outcome {
                Outcome::Fail => failed.push(text),
                Outcome::Inconclusive => held.push(text),
                Outcome::Pass => {}
            }
            verdict.metrics.push(MetricEvidence {
                name: t.name.clone(),
                outcome,
                statistic: reading,
                threshold: t.max.or(t.min),
                p_value: None,
                e_value: None,
                interval: None,
                interval_of: None,
                n_baseline: 0,
                n_canary: self.obs.window.canary.requests,
                reason,
            });
        }
        if !failed.is_empty() {
            let own = (verdict.outcome == Outcome::Fail).then(|| verdict.reason.clone());
            verdict.outcome = Outcome::Fail;
            verdict.reason = own.into_iter().chain(failed).collect::<Vec<_>>().join("; ");
        } else if !held.is_empty() && verdict.outcome == Outcome::Pass {
            verdict.outcome = Outcome::Inconclusive;
            verdict.reason = held.join("; ");
        }
    }

    /// A tick without numbers, because of `why` (what the source said):
    /// time passes, nothing is promoted, and after
    /// `analysis.metrics_unavailable_after` such looks in a row
    /// `analysis.on_metrics_unavailable` applies.
    ///
    /// # Errors
    /// The state machine's refusal (the rollout has ended or not started).
    pub fn observe_missing(
        &mut self,
        why: &str,
        now: Duration,
    ) -> Result<Vec<Command>, TransitionError> {
        if !matches!(self.state.phase, Phase::Progressing { .. }) {
            return self.apply(Event::Tick, now);
        }
        self.missing = self.missing.saturating_add(1);
        let after = self.policy.analysis.metrics_unavailable_after.max(1);
        if self.missing < after {
            return self.apply(Event::Tick, now);
        }
        self.missing = 0;
        let note = format!("no metrics for {after} looks in a row (last: {why})");
        self.apply(Event::MetricsUnavailable { note }, now)
    }

    fn close_stage(&mut self, ended: Option<Duration>) {
        let end = ended.unwrap_or(self.now).as_secs_f64();
        if let Some(rec) = self.stages.last_mut() {
            if rec.ended_at_seconds.is_none() {
                rec.ended_at_seconds = Some(end);
                rec.baseline = self.obs.stage.baseline.summary();
                rec.canary = self.obs.stage.canary.summary();
            }
        }
    }

    /// The report as of now.
    pub fn report(&self) -> RolloutReport {
        let mut stages = self.stages.clone();
        if let Some(rec) = stages.last_mut() {
            if rec.ended_at_seconds.is_none() {
                rec.baseline = self.obs.stage.baseline.summary();
                rec.canary = self.obs.stage.canary.summary();
            }
        }
        let total = self.policy.stages.len();
        let (stages_completed, reason) = match &self.state.phase {
            Phase::Pending => (0, String::new()),
            Phase::Progressing { stage } => (*stage, String::new()),
            Phase::Paused { stage, reason } => match reason {
                canary_core::PauseReason::Gate | canary_core::PauseReason::Webhook { .. } => {
                    (stage + 1, String::new())
                }
                _ => (*stage, String::new()),
            },
            Phase::Succeeded => (total, String::new()),
            Phase::RollingBack { reason, .. }
            | Phase::RolledBack { reason }
            | Phase::Aborted { reason } => {
                (self.stages.last().map_or(0, |s| s.index), reason.clone())
            }
        };
        RolloutReport {
            name: self.policy.name.clone(),
            judge: self.judge.kind().name().to_string(),
            phase: self.state.phase.name().to_string(),
            stages_completed,
            total_stages: total,
            rollback_reason: reason,
            final_weight: self.state.weight,
            elapsed_seconds: self
                .now
                .saturating_sub(self.started_at.unwrap_or(self.now))
                .as_secs_f64(),
            stages,
            decisions: self.decisions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canary_core::{Outcome, Policy};

    fn window(nb: u64, eb: u64, nc: u64, ec: u64) -> Pair<VersionStats> {
        let v = |n, e| {
            let mut s = VersionStats {
                requests: n,
                errors: e,
                ..Default::default()
            };
            s.latency.record_n(100.0, n);
            s
        };
        Pair {
            baseline: v(nb, eb),
            canary: v(nc, ec),
        }
    }

    fn engine() -> Engine {
        let p = Policy::from_text(
            "name: e\nstages:\n  - {weight: 10, duration: 20s, min_requests: 10}\n  - {weight: 100, duration: 20s, min_requests: 10}\nanalysis: {judge: threshold}\n",
        )
        .unwrap();
        Engine::new(p)
    }

    #[test]
    fn healthy_rollout_succeeds_and_reports_each_stage() {
        let mut e = engine();
        e.apply(Event::Start, Duration::ZERO).unwrap();
        let mut t = 0;
        while !e.state().phase.is_terminal() {
            t += 10;
            e.observe(Some(window(90, 1, 10, 0)), Duration::from_secs(t))
                .unwrap();
            assert!(t < 1000);
        }
        let r = e.report();
        assert_eq!(r.phase, "succeeded");
        assert_eq!(r.stages_completed, 2);
        assert_eq!(r.stages.len(), 2);
        assert_eq!(r.stages[0].canary.requests, 20);
        assert_eq!(r.stages[1].weight, 100.0);
        assert_eq!(r.stages[0].verdict.as_ref().unwrap().outcome, Outcome::Pass);
        assert!(r.stages[0].decision.as_deref().unwrap().contains("passed"));
        assert_eq!(r.final_weight, 100.0);
        assert_eq!(r.elapsed_seconds, 40.0);
    }

    #[test]
    fn bad_canary_rolls_back_with_a_reason() {
        let mut e = engine();
        e.apply(Event::Start, Duration::ZERO).unwrap();
        let cmds = e
            .observe(Some(window(90, 1, 10, 5)), Duration::from_secs(10))
            .unwrap();
        assert!(cmds.contains(&Command::SetWeight(0.0)));
        let r = e.report();
        assert_eq!(r.phase, "rolled_back");
        assert_eq!(r.stages_completed, 0);
        assert!(
            r.rollback_reason.contains("error-rate delta"),
            "{}",
            r.rollback_reason
        );
        assert!(e
            .observe(Some(window(1, 0, 1, 0)), Duration::from_secs(20))
            .is_err());
    }

    /// `looks` counts the windows judged: not a tick before the start, not
    /// a missing window, not an operator event.
    #[test]
    fn looks_count_the_windows_judged_and_nothing_else() {
        let mut e = engine();
        assert_eq!(e.looks(), 0);
        e.apply(Event::Start, Duration::ZERO).unwrap();
        assert_eq!(e.looks(), 0);
        e.observe(Some(window(90, 1, 10, 0)), Duration::from_secs(1))
            .unwrap();
        assert_eq!(e.looks(), 1);
        e.observe_missing("down", Duration::from_secs(2)).unwrap();
        assert_eq!(e.looks(), 1);
        e.apply(
            Event::Pause {
                note: "hold".into(),
            },
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(e.looks(), 1);
        // A paused rollout is still judged (a failing canary rolls back).
        e.observe(Some(window(90, 1, 10, 0)), Duration::from_secs(4))
            .unwrap();
        assert_eq!(e.looks(), 2);
    }

    /// A rollout rebuilt from its inputs, through JSON (as a store keeps
    /// them), is the rollout it was: same report, and it goes on judging
    /// exactly as the original does.
    #[test]
    fn replayed_inputs_rebuild_the_rollout_exactly() {
        let p = Policy::default_strategy();
        let mut e = Engine::new(p.clone());
        let mut log = Vec::new();
        let mut feed = |e: &mut Engine, i: Input| {
            log.push(serde_json::to_string(&i).unwrap());
            e.input(i).unwrap();
        };
        feed(
            &mut e,
            Input::Apply {
                event: Event::Start,
                now: Duration::ZERO,
            },
        );
        let mut t = 0;
        for k in 0..40u64 {
            t += 10;
            let w = (k % 7 != 3).then(|| {
                let mut w = window(990 + k, 9, 10 + k, k % 3);
                // Sums that are not round numbers, as real latencies give.
                for j in 0..20 {
                    w.baseline
                        .latency
                        .record(87.1 + (k * 20 + j) as f64 * 0.377);
                    w.canary.latency.record(91.3 + (k * 20 + j) as f64 * 0.419);
                }
                w
            });
            feed(
                &mut e,
                Input::Observe {
                    window: w,
                    missing: None,
                    now: Duration::from_secs(t),
                    checks: Vec::new(),
                },
            );
            if e.state().phase.is_terminal() {
                break;
            }
        }
        let inputs: Vec<Input> = log
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut r = Engine::replay(p, &inputs).unwrap();
        assert_eq!(
            serde_json::to_string(&r.report()).unwrap(),
            serde_json::to_string(&e.report()).unwrap()
        );
        assert_eq!(r.observations(), e.observations());
        if !e.state().phase.is_terminal() {
            let next = Some(window(1000, 10, 30, 1));
            let a = e
                .observe(next.clone(), Duration::from_secs(t + 10))
                .unwrap();
            let b = r.observe(next, Duration::from_secs(t + 10)).unwrap();
            assert_eq!(a, b);
            assert_eq!(
                r.last_verdict(),
                e.last_verdict(),
                "same evidence after the replay"
            );
        }
    }

    #[test]
    fn missing_windows_never_promote() {
        // With `metrics_unavailable_after` high, a stage without numbers
        // only times out (timeout 3 × 20 s), and pauses.
        let p = Policy::from_text(
            "name: e\nstages:\n  - {weight: 10, duration: 20s, min_requests: 10}\n  - {weight: 100, duration: 20s, min_requests: 10}\nanalysis: {judge: threshold, metrics_unavailable_after: 1000}\n",
        )
        .unwrap();
        let mut e = Engine::new(p);
        e.apply(Event::Start, Duration::ZERO).unwrap();
        for t in 1..=59 {
            e.observe(None, Duration::from_secs(t)).unwrap();
        }
        assert_eq!(e.state().phase, Phase::Progressing { stage: 0 });
        e.observe(None, Duration::from_secs(60)).unwrap();
        assert_eq!(e.state().phase.name(), "paused");
    }

    #[test]
    fn metrics_unavailable_pauses_after_three_looks_and_goes_on_when_they_are_back() {
        let mut e = engine();
        e.apply(Event::Start, Duration::ZERO).unwrap();
        e.observe(Some(window(90, 1, 10, 0)), Duration::from_secs(10))
            .unwrap();
        for t in [20, 30] {
            e.input(Input::Observe {
                window: None,
                missing: Some("GET http://prom: refused".into()),
                now: Duration::from_secs(t),
                checks: Vec::new(),
            })
            .unwrap();
            assert_eq!(e.state().phase, Phase::Progressing { stage: 0 });
        }
        e.input(Input::Observe {
            window: None,
            missing: Some("GET http://prom: refused".into()),
            now: Duration::from_secs(40),
            checks: Vec::new(),
        })
        .unwrap();
        let Phase::Paused { stage: 0, reason } = &e.state().phase else {
            panic!("{:?}", e.state().phase)
        };
        let why = reason.to_string();
        assert!(
            why.contains("3 looks in a row") && why.contains("refused"),
            "{why}"
        );
        // Long outage: no timeout while held, nothing promoted.
        for t in 5..100 {
            e.observe(None, Duration::from_secs(t * 10)).unwrap();
        }
        assert_eq!(e.state().phase.name(), "paused");
        assert_eq!(e.state().weight, 10.0);
        // Numbers are back: the stage goes on, its clock restarted.
        e.observe(Some(window(90, 1, 10, 0)), Duration::from_secs(1000))
            .unwrap();
        assert_eq!(e.state().phase, Phase::Progressing { stage: 0 });
        assert_eq!(e.state().stage_started_at, Duration::from_secs(1000));
        let last = e.decisions().last().unwrap();
        assert!(last.reason.contains("metrics are back"), "{}", last.reason);
    }

    #[test]
    fn metrics_unavailable_rolls_back_when_the_policy_says_so() {
        let p = Policy::from_text(
            "name: e\nstages:\n  - {weight: 10, duration: 20s}\nanalysis: {judge: threshold, on_metrics_unavailable: rollback, metrics_unavailable_after: 2}\n",
        )
        .unwrap();
        let mut e = Engine::new(p);
        e.apply(Event::Start, Duration::ZERO).unwrap();
        e.observe(None, Duration::from_secs(10)).unwrap();
        assert_eq!(e.state().phase.name(), "progressing");
        e.observe(None, Duration::from_secs(20)).unwrap();
        assert_eq!(e.state().phase.name(), "rolled_back");
        assert_eq!(e.state().weight, 0.0);
    }

    const EXTRAS: &str = "metrics:
  provider: prometheus
  prometheus: {address: http://127.0.0.1:9090, preset: http}
  business:
    - {name: conversion, numerator: 'sum(increase(checkouts_total{version=\"$version\"}[$window]))', denominator: 'sum(increase(sessions_total{version=\"$version\"}[$window]))', direction: higher_is_better}
  thresholds:
    - {name: memory, query: 'max(process_resident_memory_bytes{version=\"$version\"})', max: 1000, consecutive: 3}
";

    fn with_extras(judge: &str) -> Engine {
        let p = Policy::from_text(&format!(
            "name: b\nstages:\n  - {{weight: 50, duration: 60s, min_requests: 10}}\n  - {{weight: 100, duration: 60s, min_requests: 10}}\nanalysis: {{judge: {judge}, interval: 10s}}\n{EXTRAS}"
        ))
        .unwrap();
        Engine::new(p)
    }

    /// A healthy window with `conv` (canary) and 0.3 (stable) conversion
    /// over 1000 sessions each, and a canary memory reading.
    fn business_window(conv: f64, memory: f64) -> Pair<VersionStats> {
        let mut w = window(1000, 5, 1000, 5);
        let ratio = |c: f64| canary_core::Ratio {
            numerator: (c * 1000.0) as u64,
            denominator: 1000,
        };
        w.baseline.business.insert("conversion".into(), ratio(0.3));
        w.canary.business.insert("conversion".into(), ratio(conv));
        w.canary.gauges.insert("memory".into(), memory);
        w
    }

    fn run(e: &mut Engine, w: impl Fn(u64) -> Pair<VersionStats>) -> RolloutReport {
        e.apply(Event::Start, Duration::ZERO).unwrap();
        let mut t = 0;
        while !e.state().phase.is_terminal() && t < 600 {
            t += 10;
            e.observe(Some(w(t)), Duration::from_secs(t)).unwrap();
        }
        e.report()
    }

    #[test]
    fn a_business_metric_that_drops_rolls_back_and_an_unchanged_one_does_not() {
        for judge in ["sequential", "threshold"] {
            let mut e = with_extras(judge);
            let r = run(&mut e, |_| business_window(0.3, 500.0));
            assert_eq!(r.phase, "succeeded", "{judge}: {r:#?}");
            let v = r.stages[0].verdict.as_ref().unwrap();
            assert!(v.metrics.iter().any(|m| m.name == "conversion"), "{v:?}");
            assert!(v
                .metrics
                .iter()
                .any(|m| m.name == "memory" && m.outcome == Outcome::Pass));

            // Conversion down from 30 % to 20 %: errors and latency as healthy.
            let mut e = with_extras(judge);
            let r = run(&mut e, |_| business_window(0.2, 500.0));
            assert_eq!(r.phase, "rolled_back", "{judge}: {r:#?}");
            assert!(
                r.rollback_reason.contains("conversion"),
                "{}",
                r.rollback_reason
            );
        }
    }

    #[test]
    fn a_threshold_breach_holds_until_it_has_lasted_its_readings_then_fails() {
        let mut e = with_extras("sequential");
        e.apply(Event::Start, Duration::ZERO).unwrap();
        // Two readings out of bounds: held, not failed.
        for t in [10, 20] {
            e.observe(Some(business_window(0.3, 5000.0)), Duration::from_secs(t))
                .unwrap();
            let v = e.last_verdict().unwrap();
            assert_eq!(v.outcome, Outcome::Inconclusive, "{v:?}");
            assert!(v.reason.contains("memory"), "{}", v.reason);
        }
        // Back in bounds: the count starts again.
        e.observe(Some(business_window(0.3, 10.0)), Duration::from_secs(30))
            .unwrap();
        for t in [40, 50] {
            e.observe(Some(business_window(0.3, 5000.0)), Duration::from_secs(t))
                .unwrap();
            assert_eq!(e.state().phase.name(), "progressing");
        }
        e.observe(Some(business_window(0.3, 5000.0)), Duration::from_secs(60))
            .unwrap();
        let r = e.report();
        assert_eq!(r.phase, "rolled_back", "{r:#?}");
        assert!(
            r.rollback_reason
                .contains("memory: 5000 is outside <= 1000 for 3 readings"),
            "{}",
            r.rollback_reason
        );
    }

    #[test]
    fn business_metrics_share_alpha_with_the_judges() {
        // With one business metric every judge runs at α/2.
        let mut e = with_extras("sequential");
        e.apply(Event::Start, Duration::ZERO).unwrap();
        e.observe(Some(business_window(0.3, 10.0)), Duration::from_secs(10))
            .unwrap();
        let threshold = |e: &Engine, name: &str| {
            let v = e.last_verdict().unwrap();
            v.metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .threshold
                .unwrap()
        };
        let mut plain = Engine::new(
            Policy::from_text(
                "name: b\nstages:\n  - {weight: 50, duration: 60s, min_requests: 10}\n  - {weight: 100, duration: 60s, min_requests: 10}\nanalysis: {interval: 10s}\n",
            )
            .unwrap(),
        );
        plain.apply(Event::Start, Duration::ZERO).unwrap();
        plain
            .observe(Some(business_window(0.3, 10.0)), Duration::from_secs(10))
            .unwrap();
        // The e-value thresholds are ln(1/α'): halving α adds ln 2.
        let base = threshold(&plain, "error_rate");
        for name in ["error_rate", "conversion"] {
            let t = threshold(&e, name);
            assert!((t - base - 2f64.ln()).abs() < 1e-9, "{name}: {t} vs {base}");
        }
        assert_eq!(
            e.policy().analysis.alpha,
            0.05,
            "the policy as written is kept"
        );
    }

    #[test]
    fn a_failing_check_fails_the_verdict_with_its_reason_and_replays() {
        let check = |passed: bool| Check {
            name: "e2e".into(),
            passed,
            reason: if passed {
                "HTTP 200".into()
            } else {
                "HTTP 500: flow broken".into()
            },
        };
        let mut e = engine();
        let mut inputs = vec![Input::Apply {
            event: Event::Start,
            now: Duration::ZERO,
        }];
        e.input(inputs[0].clone()).unwrap();
        let ok = Input::Observe {
            window: Some(window(900, 9, 100, 1)),
            missing: None,
            now: Duration::from_secs(10),
            checks: vec![check(true)],
        };
        e.input(ok.clone()).unwrap();
        inputs.push(ok);
        assert_eq!(e.state().phase, Phase::Progressing { stage: 0 });
        let v = e.last_verdict().unwrap();
        assert!(v
            .metrics
            .iter()
            .any(|m| m.name == "webhook:e2e" && m.outcome == Outcome::Pass));
        // Without numbers, a failing check is still evidence: it fails.
        let bad = Input::Observe {
            window: None,
            missing: Some("source down".into()),
            now: Duration::from_secs(20),
            checks: vec![check(false)],
        };
        e.input(bad.clone()).unwrap();
        inputs.push(bad);
        assert_eq!(e.state().phase.name(), "rolled_back");
        let Phase::RolledBack { reason } = &e.state().phase else {
            unreachable!()
        };
        assert!(
            reason.starts_with("webhook `e2e`: HTTP 500: flow broken"),
            "{reason}"
        );
        // The checks are in the journal's inputs: a replay rebuilds it.
        let text: Vec<String> = inputs
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        let back: Vec<Input> = text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let r = Engine::replay(e.policy().clone(), &back).unwrap();
        assert_eq!(r.state(), e.state());
        // An old journal entry without `checks` still reads.
        let old: Input = serde_json::from_str(
            r#"{"input":"observe","window":null,"missing":"x","now":{"secs":1,"nanos":0}}"#,
        )
        .unwrap();
        assert!(matches!(old, Input::Observe { checks, .. } if checks.is_empty()));
    }
}
