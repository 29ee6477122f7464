//! `deviation`: the seed's Prometheus analyzer. Per metric, the relative
//! deviation (canary − baseline) / baseline × 100 % is held to a maximum,
//! in the metric's direction. No statistics: a noisy canary with few
//! requests can deviate by chance, so it waits for the stage's minimum
//! sample before it judges.

use canary_core::spec::DeviationOptions;
use canary_core::{JudgeKind, MetricEvidence, Observations, Outcome, Stage, Verdict};
use serde::{Deserialize, Serialize};

/// Which way a metric gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Lower is better (errors, latency): only an increase can fail.
    #[default]
    LowerIsBetter,
    /// Higher is better (throughput, conversions): only a decrease can fail.
    HigherIsBetter,
}

/// Relative deviation of `canary` from `baseline`, percent. A zero
/// baseline gives 0 when the canary is also 0, else ±∞ (the sign of the
/// canary). `None` when either value is not finite.
pub fn deviation_pct(baseline: f64, canary: f64) -> Option<f64> {
    if !baseline.is_finite() || !canary.is_finite() {
        return None;
    }
    if baseline == 0.0 {
        return Some(if canary == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(canary)
        });
    }
    Some((canary - baseline) / baseline.abs() * 100.0)
}

/// Judges one metric: pass when the deviation is within `max_pct` in the
/// metric's direction (≤ max when lower is better, ≥ −max when higher is
/// better), fail otherwise; inconclusive without data (`None`).
pub fn judge_metric(
    name: &str,
    baseline: Option<f64>,
    canary: Option<f64>,
    max_pct: f64,
    direction: Direction,
) -> MetricEvidence {
    let (Some(b), Some(c)) = (baseline, canary) else {
        return MetricEvidence::new(name, Outcome::Inconclusive, "no data on one side");
    };
    let Some(dev) = deviation_pct(b, c) else {
        return MetricEvidence::new(
            name,
            Outcome::Inconclusive,
            format!("cannot compare {c} with {b}"),
        );
    };
    let (ok, limit) = match direction {
        Direction::LowerIsBetter => (dev <= max_pct, max_pct),
        Direction::HigherIsBetter => (dev >= -max_pct, -max_pct),
    };
    let outcome = if ok { Outcome::Pass } else { Outcome::Fail };
    let dir = match direction {
        Direction::LowerIsBetter => "lower is better",
        Direction::HigherIsBetter => "higher is better",
    };
    let mut m = MetricEvidence::new(
        name,
        outcome,
        format!(
            "deviation {dev:+.1} % (canary {c:.4} vs baseline {b:.4}) {} limit {limit:+} % ({dir})",
            if ok { "within" } else { "beyond" }
        ),
    );
    m.statistic = Some(dev);
    m.threshold = Some(limit);
    m
}

/// The `deviation` judge: error rate and mean latency of the stage's canary
/// against [`Observations::reference_baseline`], both lower-is-better.
#[derive(Debug, Clone)]
pub struct DeviationJudge {
    opts: DeviationOptions,
}

impl DeviationJudge {
    /// A deviation judge with these limits.
    pub fn new(opts: DeviationOptions) -> Self {
        Self { opts }
    }
}

/// The judge's protocol (see the crate docs): the engine's `Judge` trait
/// calls these.
impl DeviationJudge {
    /// Which judge this is.
    pub fn kind(&self) -> JudgeKind {
        JudgeKind::Deviation
    }

    /// Stage `index` begins with `stage`'s settings: resets per-stage state.
    pub fn start_stage(&mut self, _index: usize, _stage: &Stage) {}

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        let c = &obs.stage.canary;
        let b = obs.reference_baseline();
        let need = stage.min_requests.max(1);
        if c.requests < need || b.requests == 0 {
            let why = format!(
                "waiting for data: canary {} of {need} requests, baseline {}",
                c.requests, b.requests
            );
            let mut ms = vec![
                MetricEvidence::new("error_rate", Outcome::Inconclusive, why.clone()),
                MetricEvidence::new("latency", Outcome::Inconclusive, why),
            ];
            for m in &mut ms {
                m.n_baseline = b.requests;
                m.n_canary = c.requests;
            }
            return Verdict::from_metrics("deviation", ms);
        }
        let mut err = judge_metric(
            "error_rate",
            b.error_rate(),
            c.error_rate(),
            self.opts.max_error_deviation_pct,
            Direction::LowerIsBetter,
        );
        err.n_baseline = b.requests;
        err.n_canary = c.requests;
        let mut lat = judge_metric(
            "latency",
            b.latency.mean(),
            c.latency.mean(),
            self.opts.max_latency_deviation_pct,
            Direction::LowerIsBetter,
        );
        lat.n_baseline = b.latency.count();
        lat.n_canary = c.latency.count();
        Verdict::from_metrics("deviation", vec![err, lat])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deviation_and_direction() {
        assert_eq!(deviation_pct(100.0, 115.0), Some(15.0));
        assert_eq!(deviation_pct(0.0, 0.0), Some(0.0));
        assert_eq!(deviation_pct(0.0, 1.0), Some(f64::INFINITY));
        assert_eq!(deviation_pct(f64::NAN, 1.0), None);
        let m = judge_metric(
            "l",
            Some(100.0),
            Some(115.0),
            15.0,
            Direction::LowerIsBetter,
        );
        assert_eq!(m.outcome, Outcome::Pass);
        let m = judge_metric(
            "l",
            Some(100.0),
            Some(116.0),
            15.0,
            Direction::LowerIsBetter,
        );
        assert_eq!(m.outcome, Outcome::Fail);
        let m = judge_metric(
            "t",
            Some(100.0),
            Some(116.0),
            15.0,
            Direction::HigherIsBetter,
        );
        assert_eq!(m.outcome, Outcome::Pass);
        let m = judge_metric(
            "t",
            Some(100.0),
            Some(80.0),
            15.0,
            Direction::HigherIsBetter,
        );
        assert_eq!(m.outcome, Outcome::Fail);
        let m = judge_metric("e", Some(0.0), Some(0.01), 50.0, Direction::LowerIsBetter);
        assert_eq!(m.outcome, Outcome::Fail, "zero baseline, non-zero canary");
        let m = judge_metric("e", None, Some(0.01), 50.0, Direction::LowerIsBetter);
        assert_eq!(m.outcome, Outcome::Inconclusive);
    }
}
