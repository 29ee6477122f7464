//! Each rollout's evidence look by look, for `GET
//! /api/v1/rollouts/{name}/history` and the dashboard's charts.
//!
//! The status carries only the judge's latest verdict and the log only the
//! verdicts that decided something; the evidence *over time* is what a
//! person reads to see a metric approach its threshold. It is built when
//! asked for, by replaying the rollout's journal into a fresh engine (the
//! same replay that rebuilds the engine at a restart), so it needs neither
//! storage nor memory of its own: a running rollout only counts its looks,
//! to number the ones the watch stream carries. At most [`MAX_LOOKS`]
//! looks are returned: when full, every other one is dropped and from then
//! on only every `stride`-th look is kept, so the history always spans the
//! whole generation at a coarser grain.

use canary_core::Verdict;
use canary_engine::{Engine, Input};

use crate::model::{History, Look, LookMetric};

/// The most looks kept per rollout.
pub(crate) const MAX_LOOKS: usize = 360;

/// One rollout's looks in its current generation.
#[derive(Debug, Clone)]
pub(crate) struct Looks {
    generation: u64,
    /// Looks seen so far (the last one's `seq`).
    seen: u64,
    /// Every `stride`-th look is kept (1, 2, 4, …).
    stride: u64,
    kept: Vec<Look>,
    /// Whether looks are kept at all (a running rollout only counts).
    keep: bool,
}

impl Default for Looks {
    fn default() -> Self {
        Looks::new(0)
    }
}

impl Looks {
    /// No looks yet, for `generation`.
    pub(crate) fn new(generation: u64) -> Self {
        Looks {
            generation,
            seen: 0,
            stride: 1,
            kept: Vec::new(),
            keep: true,
        }
    }

    /// The same count of looks, keeping none from now on (what a running
    /// rollout holds).
    pub(crate) fn counting(mut self) -> Self {
        self.keep = false;
        self.kept = Vec::new();
        self
    }

    /// Adds the next look (its `seq` is set here); returns it.
    pub(crate) fn push(&mut self, mut look: Look) -> Look {
        self.seen += 1;
        look.seq = self.seen;
        if self.keep && (self.seen - 1).is_multiple_of(self.stride) {
            self.kept.push(look.clone());
            if self.kept.len() > MAX_LOOKS {
                let keep = 2 * self.stride;
                self.kept.retain(|l| (l.seq - 1).is_multiple_of(keep));
                self.stride = keep;
            }
        }
        look
    }

    /// The API's view.
    pub(crate) fn history(&self, rollout: &str) -> History {
        History {
            rollout: rollout.to_string(),
            generation: self.generation,
            looks_seen: self.seen,
            stride: self.stride,
            looks: self.kept.clone(),
        }
    }
}

/// Feeds `input` to `engine` and returns the look it made, if it judged a
/// window: the verdict's per-metric evidence, the stage and the weight the
/// window was served at. `origin_ms` is the generation's start on the wall
/// clock.
///
/// # Errors
/// The engine's refusal of the input (it is unchanged).
pub(crate) fn feed(
    engine: &mut Engine,
    input: Input,
    origin_ms: u64,
) -> Result<(Vec<canary_core::Command>, Option<Look>), canary_core::TransitionError> {
    let before = engine.looks();
    let weight = engine.state().weight;
    let stage = engine.state().phase.stage();
    let now = match &input {
        Input::Apply { now, .. } | Input::Observe { now, .. } => *now,
    };
    let commands = engine.input(input)?;
    let look = match (engine.looks() > before, engine.last_verdict(), stage) {
        (true, Some(v), Some(stage)) => Some(look_of(v, stage, weight, origin_ms, now)),
        _ => None,
    };
    Ok((commands, look))
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

fn look_of(
    v: &Verdict,
    stage: usize,
    weight: f64,
    origin_ms: u64,
    now: std::time::Duration,
) -> Look {
    Look {
        seq: 0,
        at_ms: origin_ms.saturating_add(u64::try_from(now.as_millis()).unwrap_or(u64::MAX)),
        at_seconds: now.as_secs_f64(),
        stage,
        weight,
        outcome: v.outcome.to_string(),
        metrics: v
            .metrics
            .iter()
            .map(|m| LookMetric {
                name: m.name.clone(),
                outcome: m.outcome.to_string(),
                statistic: finite(m.statistic),
                threshold: finite(m.threshold),
                e_value: finite(m.e_value),
                p_value: finite(m.p_value),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(at: u64) -> Look {
        Look {
            seq: 0,
            at_ms: at,
            at_seconds: at as f64 / 1000.0,
            stage: 0,
            weight: 10.0,
            outcome: "inconclusive".into(),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn a_long_history_is_thinned_and_still_spans_the_generation() {
        let mut l = Looks::new(3);
        let n = 10 * MAX_LOOKS as u64 + 7;
        for i in 1..=n {
            assert_eq!(l.push(look(i)).seq, i);
            assert!(l.kept.len() <= MAX_LOOKS);
        }
        let h = l.history("r");
        assert_eq!(h.generation, 3);
        assert_eq!(h.looks_seen, n);
        assert_eq!(h.looks[0].seq, 1, "the first look stays");
        assert!(h.looks.len() > MAX_LOOKS / 2, "{}", h.looks.len());
        let last = h.looks.last().unwrap().seq;
        assert!(
            n - last < h.stride,
            "the latest kept is recent: {last} of {n}"
        );
        assert!(h.looks.windows(2).all(|w| w[1].seq - w[0].seq == h.stride));
    }

    #[test]
    fn a_short_history_keeps_every_look() {
        let mut l = Looks::new(0);
        for i in 1..=5 {
            l.push(look(i));
        }
        let h = l.history("r");
        assert_eq!(h.stride, 1);
        assert_eq!(
            h.looks.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn only_inputs_that_judge_a_window_make_a_look() {
        use canary_core::{Event, Pair, Policy, VersionStats};
        use std::time::Duration;
        let p = Policy::from_text(
            "name: h\nstages:\n  - {weight: 10, duration: 1h}\n  - {weight: 100, duration: 1h}\n",
        )
        .unwrap();
        let mut e = Engine::new(p);
        let start = Input::Apply {
            event: Event::Start,
            now: Duration::ZERO,
        };
        assert!(feed(&mut e, start, 1000).unwrap().1.is_none());
        let w = |n: u64| {
            let mut v = VersionStats {
                requests: n,
                errors: 0,
                ..Default::default()
            };
            v.latency.record_n(50.0, n);
            v
        };
        let obs = Input::Observe {
            window: Some(Pair {
                baseline: w(900),
                canary: w(100),
            }),
            missing: None,
            checks: Vec::new(),
            now: Duration::from_secs(2),
        };
        let (_, look) = feed(&mut e, obs, 1000).unwrap();
        let look = look.expect("a judged window is a look");
        assert_eq!(look.at_ms, 3000);
        assert_eq!(look.stage, 0);
        assert_eq!(look.weight, 10.0);
        assert!(!look.metrics.is_empty());
        let sequential = look.metrics.iter().find(|m| m.e_value.is_some());
        assert!(sequential.is_some(), "the default judge has e-values");
        let missing = Input::Observe {
            window: None,
            missing: Some("down".into()),
            checks: Vec::new(),
            now: Duration::from_secs(3),
        };
        assert!(feed(&mut e, missing, 1000).unwrap().1.is_none());
    }

    /// Journal entries as versions before the compact histogram counts
    /// wrote them (taken from a `canary serve` database): they replay, and
    /// exactly as the same inputs written today.
    const OLD_JOURNAL: [&str; 4] = [
        r#"{"input":"apply","event":{"event":"start"},"now":{"secs":0,"nanos":0}}"#,
        r#"{"input":"observe","window":{"baseline":{"requests":8,"errors":0,"latency":{"lo":467,"counts":[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,1,0,0,0,0,0,0,0,0,1,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,1],"sum":898.4764691554632,"sum_ln":36.211823179694846,"sum_ln2":167.4607582267909}},"canary":{"requests":0,"errors":0,"latency":{"lo":0,"counts":[],"sum":0.0,"sum_ln":0.0,"sum_ln2":0.0}}},"now":{"secs":0,"nanos":83000000}}"#,
        r#"{"input":"observe","window":{"baseline":{"requests":73,"errors":1,"latency":{"lo":465,"counts":[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,1,0,0,1,0,1,0,0,0,2,0,0,1,1,2,0,2,1,0,0,0,1,0,0,4,1,3,2,2,0,0,0,1,3,1,1,1,0,1,2,1,2,1,0,1,0,1,0,0,1,0,1,0,2,2,1,1,0,2,0,2,0,2,1,2,0,1,1,1,1,0,1,1,0,0,1,0,1,0,0,0,0,1,0,1,0,0,0,0,1,0,0,0,0,0,0,1],"sum":9550.175470862914,"sum_ln":345.1518395468308,"sum_ln2":1654.0312894800345}},"canary":{"requests":8,"errors":0,"latency":{"lo":490,"counts":[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,0,0,0,0,1,0,0,0,1,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1],"sum":1001.2000693658598,"sum_ln":37.94442016860236,"sum_ln2":181.6167932233021}}},"now":{"secs":1,"nanos":83000000}}"#,
        r#"{"input":"observe","window":{"baseline":{"requests":96,"errors":1,"latency":{"lo":476,"counts":[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,1,1,0,1,0,0,0,2,1,0,3,2,2,1,1,1,0,2,1,3,1,0,1,1,0,1,1,1,1,2,3,1,2,1,1,0,3,1,3,0,0,0,3,2,0,4,2,1,3,0,3,1,2,2,0,2,0,1,1,1,1,0,1,0,0,0,1,0,2,1,0,1,1,2,1,0,1,1,0,0,0,1,0,1,1,0,0,1,0,1,0,0,1,0,1],"sum":12112.398023485832,"sum_ln":450.7849752578132,"sum_ln2":2143.609666938131}},"canary":{"requests":6,"errors":0,"latency":{"lo":509,"counts":[2,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,0,0,0,1],"sum":553.7520156127973,"sum_ln":26.87190604032247,"sum_ln2":120.91407279408719}}},"now":{"secs":2,"nanos":83000000}}"#,
    ];

    #[test]
    fn a_journal_written_with_counts_as_arrays_replays_as_one_written_today() {
        use canary_core::Policy;
        let p = Policy::from_text(
            "name: svc-0001\nstages:\n  - {weight: 10, duration: 1h}\n  - {weight: 50, duration: 1h}\n  - {weight: 100, duration: 1h}\nanalysis: {interval: 1s}\n",
        )
        .unwrap();
        let old: Vec<Input> = OLD_JOURNAL
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let new: Vec<String> = old
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        assert!(new[1].contains(r#""counts":""#), "{}", new[1]);
        assert!(new[1].len() < OLD_JOURNAL[1].len());
        let (mut a, mut b) = (Engine::new(p.clone()), Engine::new(p));
        let (mut la, mut lb) = (Looks::new(0), Looks::new(0));
        for (o, n) in old.into_iter().zip(&new) {
            if let Some(l) = feed(&mut a, o, 1000).unwrap().1 {
                la.push(l);
            }
            let n: Input = serde_json::from_str(n).unwrap();
            if let Some(l) = feed(&mut b, n, 1000).unwrap().1 {
                lb.push(l);
            }
        }
        assert_eq!(a.looks(), 3);
        assert_eq!(a.last_verdict(), b.last_verdict());
        assert_eq!(a.observations().rollout, b.observations().rollout);
        assert_eq!(
            serde_json::to_string(&la.history("r")).unwrap(),
            serde_json::to_string(&lb.history("r")).unwrap()
        );
    }
}
