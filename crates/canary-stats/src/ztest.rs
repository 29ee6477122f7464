//! `ztest`: the fixed-horizon one-sided pooled two-proportion z-test on the
//! error rate.
//!
//! **Valid for one look only.** Its false-alarm rate is alpha when it is
//! computed once, at a sample size fixed in advance. A rollout looks every
//! tick; each look is another chance of a false alarm, and the chance of at
//! least one grows with the number of looks (0.05 at one look, about 0.32 at
//! fifty for a two-sided test). It is here because the seed offered it and
//! as a foil for `sequential` in evaluations; the Monte Carlo test in
//! `tests/monte_carlo.rs` shows the inflation.

use canary_core::{JudgeKind, MetricEvidence, Observations, Outcome, Stage, Verdict};

use crate::special::{norm_ppf, norm_sf};

/// The z-test's numbers for one comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZTest {
    /// z = (p_c − p_b) / se with the pooled standard error (0 when se is 0).
    pub z: f64,
    /// One-sided p-value, P(Z ≥ z).
    pub p_value: f64,
    /// The critical value z_{1−α}.
    pub critical: f64,
    /// Two-sided (1 − 2α) Wald interval for p_c − p_b, unpooled.
    pub interval: [f64; 2],
}

/// The one-sided pooled two-proportion z-test of "canary error rate higher"
/// at level `alpha`. `None` when either side has no requests or an error
/// count exceeds its request count.
pub fn ztest(
    errors_base: u64,
    requests_base: u64,
    errors_canary: u64,
    requests_canary: u64,
    alpha: f64,
) -> Option<ZTest> {
    if requests_base == 0
        || requests_canary == 0
        || errors_base > requests_base
        || errors_canary > requests_canary
    {
        return None;
    }
    let (nb, nc) = (requests_base as f64, requests_canary as f64);
    let (pb, pc) = (errors_base as f64 / nb, errors_canary as f64 / nc);
    // In f64: the counts may sum past u64 (exact below 2^53 either way).
    let p = (errors_base as f64 + errors_canary as f64) / (nb + nc);
    let se = (p * (1.0 - p) * (1.0 / nb + 1.0 / nc)).sqrt();
    // se = 0 only when the pooled rate is 0 or 1, i.e. both rates are equal.
    let z = if se > 0.0 { (pc - pb) / se } else { 0.0 };
    let critical = norm_ppf(1.0 - alpha);
    let se_u = (pc * (1.0 - pc) / nc + pb * (1.0 - pb) / nb).sqrt();
    Some(ZTest {
        z,
        p_value: norm_sf(z),
        critical,
        interval: [pc - pb - critical * se_u, pc - pb + critical * se_u],
    })
}

/// The `ztest` judge: the z-test on the stage's cumulative error counts
/// (canary against [`Observations::reference_baseline`]).
#[derive(Debug, Clone)]
pub struct ZTestJudge {
    alpha: f64,
}

impl ZTestJudge {
    /// A z-test judge at level `alpha`.
    pub fn new(alpha: f64) -> Self {
        Self { alpha }
    }
}

/// The judge's protocol (see the crate docs): the engine's `Judge` trait
/// calls these.
impl ZTestJudge {
    /// Which judge this is.
    pub fn kind(&self) -> JudgeKind {
        JudgeKind::Ztest
    }

    /// Stage `index` begins with `stage`'s settings: resets per-stage state.
    pub fn start_stage(&mut self, _index: usize, _stage: &Stage) {}

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        let c = &obs.stage.canary;
        let b = obs.reference_baseline();
        let m = error_metric(
            "error_rate",
            [b.errors, b.requests],
            [c.errors, c.requests],
            self.alpha,
            stage.min_requests.max(1),
        );
        Verdict::from_metrics("ztest", vec![m])
    }
}

/// The judge's per-metric kernel, used live and by `canary analyze`: the
/// test of `canary`'s `[errors, requests]` against `baseline`'s at `alpha`,
/// as evidence named `name`; it passes only once the canary has served
/// `need` requests.
pub fn error_metric(
    name: &str,
    [b_errors, b_requests]: [u64; 2],
    [c_errors, c_requests]: [u64; 2],
    alpha: f64,
    need: u64,
) -> MetricEvidence {
    let mut m = match ztest(b_errors, b_requests, c_errors, c_requests, alpha) {
        None => MetricEvidence::new(
            name,
            Outcome::Inconclusive,
            format!("waiting for data: canary {c_requests} requests, baseline {b_requests}"),
        ),
        Some(t) => {
            let fail = t.z > t.critical;
            let outcome = if fail {
                Outcome::Fail
            } else if c_requests >= need {
                Outcome::Pass
            } else {
                Outcome::Inconclusive
            };
            let rates =
                format!("canary {c_errors}/{c_requests} vs baseline {b_errors}/{b_requests}");
            let reason = match outcome {
                Outcome::Fail => format!(
                    "z = {:.3} > {:.3} (one-sided p = {:.3e}): canary error rate higher ({rates}); fixed-horizon test, valid for one look only",
                    t.z, t.critical, t.p_value
                ),
                Outcome::Pass => format!(
                    "z = {:.3} ≤ {:.3} (p = {:.3}): no significant increase ({rates}); fixed-horizon test, valid for one look only",
                    t.z, t.critical, t.p_value
                ),
                Outcome::Inconclusive => format!(
                    "z = {:.3} ≤ {:.3}; waiting for {need} canary requests ({rates})",
                    t.z, t.critical
                ),
            };
            let mut m = MetricEvidence::new(name, outcome, reason);
            m.statistic = Some(t.z);
            m.threshold = Some(t.critical);
            m.p_value = Some(t.p_value);
            m.interval = Some(t.interval);
            m.interval_of = Some(format!(
                "error-rate difference canary − baseline (Wald, {:.0} %)",
                100.0 * (1.0 - 2.0 * alpha)
            ));
            m
        }
    };
    m.n_baseline = b_requests;
    m.n_canary = c_requests;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_value() {
        // 10/1000 vs 25/1000: p = 0.0175, se = sqrt(p(1−p)·2/1000).
        let t = ztest(10, 1000, 25, 1000, 0.05).unwrap();
        let p: f64 = 0.0175;
        let z = 0.015 / (p * (1.0 - p) * 0.002).sqrt();
        assert!((t.z - z).abs() < 1e-12);
        assert!((t.critical - 1.644_853_626_951_472).abs() < 1e-12);
        assert!(t.z > t.critical);
        assert!(t.interval[0] < 0.015 && 0.015 < t.interval[1]);
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(ztest(0, 0, 0, 10, 0.05), None, "zero requests");
        assert_eq!(ztest(5, 4, 0, 10, 0.05), None, "more errors than requests");
        let t = ztest(0, 100, 0, 100, 0.05).unwrap();
        assert_eq!(t.z, 0.0);
        assert_eq!(t.p_value, 0.5);
        let t = ztest(100, 100, 100, 100, 0.05).unwrap();
        assert_eq!(t.z, 0.0, "all errors on both sides");
        // Zero errors on one side only.
        let t = ztest(0, 1000, 8, 1000, 0.05).unwrap();
        assert!(t.z > t.critical);
    }
}
