//! `threshold`: the seed's absolute judge. Fails when the canary's error rate
//! exceeds the baseline's by more than the stage's `max_error_delta`, or its
//! mean latency by more than `max_latency_delta_ms`. No statistics: kept
//! because users know it, and as the baseline in evaluations.

use canary_core::{JudgeKind, MetricEvidence, Observations, Outcome, Stage, Verdict};

/// The absolute-delta judge. Judges the stage's cumulative numbers once the
/// canary has served the stage's `min_requests`.
#[derive(Debug, Clone, Default)]
pub struct ThresholdJudge;

impl ThresholdJudge {
    /// A new threshold judge.
    pub fn new() -> Self {
        Self
    }
}

/// The judge's protocol (see the crate docs): the engine's `Judge` trait
/// calls these.
impl ThresholdJudge {
    /// Which judge this is.
    pub fn kind(&self) -> JudgeKind {
        JudgeKind::Threshold
    }

    /// Stage `index` begins with `stage`'s settings: resets per-stage state.
    pub fn start_stage(&mut self, _index: usize, _stage: &Stage) {}

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        let canary = &obs.stage.canary;
        let base = obs.reference_baseline();
        let (nb, nc) = (base.requests, canary.requests);
        let sized = |mut m: MetricEvidence| {
            m.n_baseline = nb;
            m.n_canary = nc;
            m
        };
        if nc < stage.min_requests.max(1) || nb == 0 {
            let why = format!(
                "waiting for data: canary {nc} of {} requests, baseline {nb}",
                stage.min_requests.max(1)
            );
            return Verdict::from_metrics(
                "threshold",
                vec![
                    sized(MetricEvidence::new(
                        "error_rate",
                        Outcome::Inconclusive,
                        why.clone(),
                    )),
                    sized(MetricEvidence::new("latency", Outcome::Inconclusive, why)),
                ],
            );
        }
        let (rb, rc) = (
            base.error_rate().unwrap_or(0.0),
            canary.error_rate().unwrap_or(0.0),
        );
        let delta = rc - rb;
        let outcome = if delta > stage.max_error_delta {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        let mut err = sized(MetricEvidence::new(
            "error_rate",
            outcome,
            format!(
                "error-rate delta {delta:.4} ({rc:.4} vs {rb:.4}) {} limit {}",
                if outcome == Outcome::Fail {
                    "exceeds"
                } else {
                    "within"
                },
                stage.max_error_delta
            ),
        ));
        err.statistic = Some(delta);
        err.threshold = Some(stage.max_error_delta);

        let mut metrics = vec![err];
        if let (Some(lb), Some(lc)) = (base.latency.mean(), canary.latency.mean()) {
            let d = lc - lb;
            let outcome = if d > stage.max_latency_delta_ms {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            let mut lat = MetricEvidence::new(
                "latency",
                outcome,
                format!(
                    "mean latency delta {d:.1} ms ({lc:.1} vs {lb:.1} ms) {} limit {} ms",
                    if outcome == Outcome::Fail {
                        "exceeds"
                    } else {
                        "within"
                    },
                    stage.max_latency_delta_ms
                ),
            );
            lat.statistic = Some(d);
            lat.threshold = Some(stage.max_latency_delta_ms);
            lat.n_baseline = base.latency.count();
            lat.n_canary = canary.latency.count();
            metrics.push(lat);
        }
        Verdict::from_metrics("threshold", metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canary_core::{Pair, Policy, VersionStats};

    fn stats(requests: u64, errors: u64, latency_ms: f64) -> VersionStats {
        let mut v = VersionStats {
            requests,
            errors,
            ..Default::default()
        };
        v.latency.record_n(latency_ms, requests);
        v
    }

    fn look(base: VersionStats, canary: VersionStats) -> Verdict {
        let policy = Policy::default_strategy();
        let stage = &policy.stages[0]; // 1 %, delta 0.02, latency 50 ms, min 100
        let mut obs = Observations::new();
        obs.push_window(
            Pair {
                baseline: base,
                canary,
            },
            stage.weight,
        );
        ThresholdJudge::new().judge(stage, &obs)
    }

    #[test]
    fn within_limits_passes() {
        let v = look(stats(10_000, 100, 100.0), stats(200, 4, 120.0));
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    }

    #[test]
    fn error_delta_over_limit_fails() {
        let v = look(stats(10_000, 100, 100.0), stats(200, 7, 100.0));
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.reason.contains("exceeds limit 0.02"), "{}", v.reason);
        assert_eq!(v.metrics[0].statistic, Some(0.035 - 0.01));
    }

    #[test]
    fn latency_delta_over_limit_fails() {
        let v = look(stats(10_000, 100, 100.0), stats(200, 2, 160.0));
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.metrics[1].outcome, Outcome::Fail);
    }

    #[test]
    fn too_few_requests_is_inconclusive() {
        let v = look(stats(10_000, 100, 100.0), stats(99, 99, 500.0));
        assert_eq!(v.outcome, Outcome::Inconclusive);
        let v = look(VersionStats::default(), stats(500, 0, 100.0));
        assert_eq!(v.outcome, Outcome::Inconclusive);
    }

    /// Seed "break it": a zero threshold rolls back any canary with a higher
    /// error rate, and only those.
    #[test]
    fn zero_threshold_fails_only_worse_canaries() {
        let policy = Policy::from_text(
            "name: z\nstages: [{weight: 10, duration: 1m, max_error_delta: 0, min_requests: 10}]\n",
        )
        .unwrap();
        let stage = &policy.stages[0];
        let judge = |e| {
            let mut obs = Observations::new();
            obs.push_window(
                Pair {
                    baseline: stats(1000, 10, 100.0),
                    canary: stats(100, e, 100.0),
                },
                10.0,
            );
            ThresholdJudge::new().judge(stage, &obs).outcome
        };
        assert_eq!(judge(1), Outcome::Pass, "an equal rate passes");
        assert_eq!(judge(0), Outcome::Pass);
        assert_eq!(judge(2), Outcome::Fail);
    }
}
