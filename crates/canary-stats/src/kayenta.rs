//! `kayenta`: the Mann-Whitney classifier and weighted score of Spinnaker's
//! automated canary analysis (ACA).
//!
//! Per metric, on two *series* (canary x, baseline y): NaN removal (or
//! replacement by 0), optional IQR outlier removal, then the Hodges–Lehmann
//! shift estimate with the tie- and continuity-corrected Mann-Whitney
//! confidence interval ([`mann_whitney`]). The metric is High when the
//! interval's lower end exceeds `tolerance`·|estimate| (and the mean ratio
//! reaches the allowed increase), Low symmetrically, else Pass. Scores:
//! a critical metric that is not Pass makes the whole score 0; a group
//! scores 100·Pass/(Pass + High + Low + NoDataFail); the summary is the
//! weighted mean of the groups; ≥ `pass_score` passes, ≥ `marginal_score`
//! is inconclusive, below fails.
//!
//! In a rollout the series are per-tick values kept per stage: each
//! window's error rate and mean latency, for canary and baseline. At 100 %,
//! where the baseline gets no traffic, the canary's stage series is
//! compared with every baseline value recorded earlier in the rollout.
//! Unlike the other judges this one keeps (short) series by design; the
//! work per tick grows with the ticks of the stage, not with the requests.
//! Like `ztest` it is a fixed-sample test re-applied at every look, so its
//! false-alarm rate grows with the looks.

use canary_core::spec::{KayentaOptions, NanStrategy};
use canary_core::{JudgeKind, MetricEvidence, Observations, Outcome, Stage, Verdict};
use serde::{Deserialize, Serialize};

pub mod mann_whitney;

use mann_whitney::{hodges_lehmann_sorted, mann_whitney_sorted, shift_interval_sorted, sorted};

pub use canary_core::analyze_input::MetricDirection;

/// How one metric is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// Metric name.
    pub name: String,
    /// Which change is a regression.
    pub direction: MetricDirection,
    /// A critical metric that is not Pass makes the score 0.
    pub critical: bool,
    /// No data is a failure rather than "not counted".
    pub must_have_data: bool,
    /// The group the metric scores in.
    pub group: String,
    /// High needs mean(canary)/mean(baseline) ≥ this.
    pub allowed_increase: f64,
    /// Low needs mean(canary)/mean(baseline) ≤ this.
    pub allowed_decrease: f64,
}

impl MetricConfig {
    /// A non-critical metric in its own group, increase is bad.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            direction: MetricDirection::Increase,
            critical: false,
            must_have_data: false,
            group: name.to_string(),
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
        }
    }
}

/// A metric's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Classification {
    /// No significant regression.
    Pass,
    /// Canary significantly higher.
    High,
    /// Canary significantly lower.
    Low,
    /// No data on a side, not counted.
    NoData,
    /// No data on a side where data is required: counts as a failure.
    NoDataFail,
}

/// One metric's classification and numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// The metric's configuration.
    pub config: MetricConfig,
    /// Its class.
    pub class: Classification,
    /// Hodges–Lehmann estimate of the shift canary − baseline.
    pub estimate: Option<f64>,
    /// Confidence interval for the shift.
    pub interval: Option<[f64; 2]>,
    /// Mann-Whitney U of the canary series.
    pub u: Option<f64>,
    /// Two-sided asymptotic Mann-Whitney p-value.
    pub p_value: Option<f64>,
    /// mean(canary) / mean(baseline).
    pub mean_ratio: Option<f64>,
    /// Canary values used.
    pub n_canary: usize,
    /// Baseline values used.
    pub n_baseline: usize,
    /// Why, in words.
    pub reason: String,
}

/// Type-7 (linear) quantile of sorted, non-empty `s`.
fn quantile(s: &[f64], q: f64) -> f64 {
    let h = (s.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

/// Applies the NaN strategy and the IQR filter, returning a sorted copy.
pub fn clean(values: &[f64], opts: &KayentaOptions) -> Vec<f64> {
    let v: Vec<f64> = match opts.nan_strategy {
        NanStrategy::Remove => values.iter().copied().filter(|x| !x.is_nan()).collect(),
        NanStrategy::Replace => values
            .iter()
            .map(|&x| if x.is_nan() { 0.0 } else { x })
            .collect(),
    };
    let s = sorted(&v);
    match opts.outlier_factor {
        Some(f) if s.len() >= 4 => {
            let (q1, q3) = (quantile(&s, 0.25), quantile(&s, 0.75));
            let iqr = q3 - q1;
            let (lo, hi) = (q1 - f * iqr, q3 + f * iqr);
            s.into_iter().filter(|&x| x >= lo && x <= hi).collect()
        }
        _ => s,
    }
}

fn mean(s: &[f64]) -> f64 {
    s.iter().sum::<f64>() / s.len() as f64
}

/// Classifies one metric from its canary and baseline series.
pub fn classify(
    canary: &[f64],
    baseline: &[f64],
    cfg: &MetricConfig,
    opts: &KayentaOptions,
) -> MetricResult {
    let x = clean(canary, opts);
    let y = clean(baseline, opts);
    let mut r = MetricResult {
        config: cfg.clone(),
        class: Classification::Pass,
        estimate: None,
        interval: None,
        u: None,
        p_value: None,
        mean_ratio: None,
        n_canary: x.len(),
        n_baseline: y.len(),
        reason: String::new(),
    };
    if x.is_empty() || y.is_empty() {
        r.class = if cfg.must_have_data {
            Classification::NoDataFail
        } else {
            Classification::NoData
        };
        r.reason = format!(
            "no data (canary {} values, baseline {}){}",
            x.len(),
            y.len(),
            if cfg.must_have_data {
                ": data is required"
            } else {
                ""
            }
        );
        return r;
    }
    if x == y {
        r.reason = "canary and baseline series are identical".into();
        return r;
    }
    if x.first() == x.last() && y.first() == y.last() && x.first() == y.first() {
        r.reason = "a single distinct value on both sides".into();
        return r;
    }
    let (mx, my) = (mean(&x), mean(&y));
    let ratio = if my != 0.0 {
        mx / my
    } else if mx == 0.0 {
        1.0
    } else {
        f64::INFINITY.copysign(mx)
    };
    r.mean_ratio = Some(ratio);
    if let Some(mw) = mann_whitney_sorted(&x, &y) {
        r.u = Some(mw.u);
        r.p_value = Some(mw.p_value);
    }
    let est = hodges_lehmann_sorted(&x, &y);
    let iv = shift_interval_sorted(&x, &y, opts.confidence);
    r.estimate = est;
    r.interval = iv;
    // With each side constant (all baseline values tied, all canary values
    // tied) the normal approximation gives no interval, yet the shift is
    // exact: every pairwise difference is the same. It counts when the
    // rank-sum test itself says the two sides differ.
    let separated = r.p_value.is_some_and(|p| p < 1.0 - opts.confidence);
    let iv = match (est, iv) {
        (Some(e), None) if separated => Some([e, e]),
        (_, iv) => iv,
    };
    let (Some(est), Some([lo, hi])) = (est, iv) else {
        r.reason = "no interval: every value tied".into();
        return r;
    };
    let margin = opts.tolerance * est.abs();
    let up = matches!(
        cfg.direction,
        MetricDirection::Increase | MetricDirection::Either
    );
    let down = matches!(
        cfg.direction,
        MetricDirection::Decrease | MetricDirection::Either
    );
    let conf = 100.0 * opts.confidence;
    if up && lo > margin && ratio >= cfg.allowed_increase {
        r.class = Classification::High;
        r.reason = format!(
            "High: shift {est:.4}, {conf:.0} % interval [{lo:.4}, {hi:.4}] above {margin:.4} ({} × |shift|), mean ratio {ratio:.3}",
            opts.tolerance
        );
    } else if down && hi < -margin && ratio <= cfg.allowed_decrease {
        r.class = Classification::Low;
        r.reason = format!(
            "Low: shift {est:.4}, {conf:.0} % interval [{lo:.4}, {hi:.4}] below −{margin:.4}, mean ratio {ratio:.3}"
        );
    } else {
        r.reason = format!(
            "Pass: shift {est:.4}, {conf:.0} % interval [{lo:.4}, {hi:.4}], mean ratio {ratio:.3}"
        );
    }
    r
}

/// The summary score, 0–100, of classified metrics; `None` when no metric
/// counts (all without data). `group_weights` weighs groups by name;
/// groups not named weigh 1.
pub fn score(results: &[MetricResult], group_weights: &[(String, f64)]) -> Option<f64> {
    let counted = |c: Classification| c != Classification::NoData;
    if results
        .iter()
        .any(|r| r.config.critical && counted(r.class) && r.class != Classification::Pass)
    {
        return Some(0.0);
    }
    let mut groups: Vec<(&str, u32, u32)> = Vec::new();
    for r in results.iter().filter(|r| counted(r.class)) {
        let g = r.config.group.as_str();
        let pass = u32::from(r.class == Classification::Pass);
        match groups.iter_mut().find(|(n, _, _)| *n == g) {
            Some(e) => {
                e.1 += pass;
                e.2 += 1;
            }
            None => groups.push((g, pass, 1)),
        }
    }
    let weight = |g: &str| {
        group_weights
            .iter()
            .find(|(n, _)| n == g)
            .map_or(1.0, |(_, w)| *w)
    };
    let total: f64 = groups.iter().map(|(g, _, _)| weight(g)).sum();
    if groups.is_empty() || total.is_nan() || total <= 0.0 {
        return None;
    }
    Some(
        groups
            .iter()
            .map(|(g, p, n)| weight(g) * 100.0 * f64::from(*p) / f64::from(*n))
            .sum::<f64>()
            / total,
    )
}

/// The verdict of classified metrics under `opts`' score thresholds.
pub fn verdict(
    results: &[MetricResult],
    group_weights: &[(String, f64)],
    opts: &KayentaOptions,
) -> Verdict {
    let metrics: Vec<MetricEvidence> = results
        .iter()
        .map(|r| {
            let outcome = match r.class {
                Classification::Pass => Outcome::Pass,
                Classification::NoData => Outcome::Inconclusive,
                _ => Outcome::Fail,
            };
            let mut m = MetricEvidence::new(&r.config.name, outcome, r.reason.clone());
            m.statistic = r.estimate;
            m.threshold = r.estimate.map(|e| opts.tolerance * e.abs());
            m.p_value = r.p_value;
            m.interval = r.interval;
            m.interval_of = r.interval.map(|_| {
                format!(
                    "shift canary − baseline (Hodges–Lehmann, {:.0} % Mann-Whitney interval)",
                    100.0 * opts.confidence
                )
            });
            m.n_baseline = r.n_baseline as u64;
            m.n_canary = r.n_canary as u64;
            m
        })
        .collect();
    let s = score(results, group_weights);
    let (outcome, head) = match s {
        None => (Outcome::Inconclusive, "no metric has data".to_string()),
        Some(s) => {
            let o = if s >= opts.pass_score {
                Outcome::Pass
            } else if s >= opts.marginal_score {
                Outcome::Inconclusive
            } else {
                Outcome::Fail
            };
            (
                o,
                format!(
                    "score {s:.1} (pass ≥ {}, marginal ≥ {})",
                    opts.pass_score, opts.marginal_score
                ),
            )
        }
    };
    let notes: Vec<String> = results
        .iter()
        .filter(|r| r.class != Classification::Pass)
        .map(|r| {
            format!(
                "{}{}: {}",
                r.config.name,
                if r.config.critical { " (critical)" } else { "" },
                r.reason
            )
        })
        .collect();
    let reason = if notes.is_empty() {
        format!("{head}: every metric Pass")
    } else {
        format!("{head}: {}", notes.join("; "))
    };
    Verdict {
        outcome,
        judge: "kayenta".into(),
        metrics,
        reason,
        guardrail: None,
    }
}

/// Per-tick series of one version.
#[derive(Debug, Clone, Default)]
struct Series {
    error_rate: Vec<f64>,
    latency: Vec<f64>,
}

impl Series {
    fn push(&mut self, v: &canary_core::VersionStats) {
        if let Some(r) = v.error_rate() {
            self.error_rate.push(r);
        }
        if let Some(m) = v.latency.mean() {
            self.latency.push(m);
        }
    }
}

/// The `kayenta` judge over per-tick series of error rate and mean
/// latency. Both metrics are critical: with two metrics a non-critical
/// regression could only pull the score to 50 (marginal), which would
/// stall the rollout instead of rolling it back.
#[derive(Debug, Clone)]
pub struct KayentaJudge {
    opts: KayentaOptions,
    canary: Series,
    baseline: Series,
    earlier_baseline: Series,
}

impl KayentaJudge {
    /// A Kayenta judge with these options.
    pub fn new(opts: KayentaOptions) -> Self {
        Self {
            opts,
            canary: Series::default(),
            baseline: Series::default(),
            earlier_baseline: Series::default(),
        }
    }
}

/// The judge's protocol (see the crate docs): the engine's `Judge` trait
/// calls these.
impl KayentaJudge {
    /// Which judge this is.
    pub fn kind(&self) -> JudgeKind {
        JudgeKind::Kayenta
    }

    /// Stage `index` begins with `stage`'s settings: resets per-stage state.
    pub fn start_stage(&mut self, index: usize, _stage: &Stage) {
        if index == 0 {
            self.earlier_baseline = Series::default();
        } else {
            let b = std::mem::take(&mut self.baseline);
            self.earlier_baseline.error_rate.extend(b.error_rate);
            self.earlier_baseline.latency.extend(b.latency);
        }
        self.canary = Series::default();
        self.baseline = Series::default();
    }

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        self.canary.push(&obs.window.canary);
        self.baseline.push(&obs.window.baseline);
        let base = if self.baseline.error_rate.is_empty() {
            &self.earlier_baseline
        } else {
            &self.baseline
        };
        let need = stage.min_requests.max(1);
        let c = &obs.stage.canary;
        let enough = |v: &Vec<f64>| v.len() >= 3;
        if c.requests < need || !enough(&self.canary.error_rate) || !enough(&base.error_rate) {
            let why = format!(
                "waiting for data: canary {} of {need} requests, {} canary and {} baseline points (3 needed)",
                c.requests,
                self.canary.error_rate.len(),
                base.error_rate.len()
            );
            return Verdict::from_metrics(
                "kayenta",
                vec![
                    MetricEvidence::new("error_rate", Outcome::Inconclusive, why.clone()),
                    MetricEvidence::new("latency", Outcome::Inconclusive, why),
                ],
            );
        }
        let mut e = MetricConfig::new("error_rate");
        e.critical = true;
        let mut l = MetricConfig::new("latency");
        l.critical = true;
        let results = [
            classify(&self.canary.error_rate, &base.error_rate, &e, &self.opts),
            classify(&self.canary.latency, &base.latency, &l, &self.opts),
        ];
        verdict(&results, &[], &self.opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> KayentaOptions {
        KayentaOptions::default()
    }

    #[test]
    fn identical_and_single_valued_series_pass() {
        let c = MetricConfig::new("m");
        let r = classify(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], &c, &opts());
        assert_eq!(r.class, Classification::Pass);
        assert!(r.reason.contains("identical"));
        let r = classify(&[5.0, 5.0], &[5.0, 5.0, 5.0], &c, &opts());
        assert_eq!(r.class, Classification::Pass);
        assert!(r.reason.contains("single distinct"));
    }

    /// Issue 10: a critical metric whose baseline is ten 0s and canary ten 7s
    /// passed ("every value tied").
    #[test]
    fn two_constant_but_different_sides_are_a_shift_not_a_tie() {
        let mut c = MetricConfig::new("errors");
        c.critical = true;
        let r = classify(&[7.0; 10], &[0.0; 10], &c, &opts());
        assert_eq!(r.class, Classification::High, "{}", r.reason);
        assert_eq!(r.estimate, Some(7.0));
        let v = verdict(&[r], &[], &opts());
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.reason);
        let r = classify(&[0.0; 10], &[7.0; 10], &c, &opts());
        assert_eq!(
            r.class,
            Classification::Pass,
            "lower is not worse: {}",
            r.reason
        );
        // One value a side is no evidence of a shift.
        let r = classify(&[7.0], &[0.0], &c, &opts());
        assert_eq!(r.class, Classification::Pass, "{}", r.reason);
    }

    #[test]
    fn no_data_counts_only_when_required() {
        let mut c = MetricConfig::new("m");
        let r = classify(&[f64::NAN, f64::NAN], &[1.0], &c, &opts());
        assert_eq!(r.class, Classification::NoData);
        c.must_have_data = true;
        let r = classify(&[], &[1.0], &c, &opts());
        assert_eq!(r.class, Classification::NoDataFail);
        assert_eq!(score(&[r], &[]), Some(0.0));
        let mut o = opts();
        o.nan_strategy = NanStrategy::Replace;
        let r = classify(&[f64::NAN, 0.0], &[0.0, 0.0], &c, &o);
        assert_eq!(r.class, Classification::Pass, "NaN replaced by 0");
    }

    #[test]
    fn clear_shift_is_high_or_low_by_direction() {
        let base: Vec<f64> = (0..30).map(|i| 100.0 + (i % 7) as f64).collect();
        let high: Vec<f64> = base.iter().map(|v| v + 20.0).collect();
        let mut c = MetricConfig::new("latency");
        assert_eq!(
            classify(&high, &base, &c, &opts()).class,
            Classification::High
        );
        c.direction = MetricDirection::Decrease;
        assert_eq!(
            classify(&high, &base, &c, &opts()).class,
            Classification::Pass
        );
        assert_eq!(
            classify(&base, &high, &c, &opts()).class,
            Classification::Low
        );
        c.allowed_increase = 1.5;
        c.direction = MetricDirection::Either;
        assert_eq!(
            classify(&high, &base, &c, &opts()).class,
            Classification::Pass,
            "mean ratio 1.19 below the allowed increase 1.5"
        );
    }

    #[test]
    fn outliers_are_dropped_with_a_factor() {
        let mut o = opts();
        o.outlier_factor = Some(3.0);
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 1000.0];
        assert_eq!(clean(&v, &o).len(), 5);
        assert_eq!(clean(&v, &opts()).len(), 6);
    }

    #[test]
    fn scores_weigh_groups_and_criticals() {
        let mk = |name: &str, group: &str, class, critical| MetricResult {
            config: MetricConfig {
                group: group.into(),
                critical,
                ..MetricConfig::new(name)
            },
            class,
            estimate: None,
            interval: None,
            u: None,
            p_value: None,
            mean_ratio: None,
            n_canary: 1,
            n_baseline: 1,
            reason: String::new(),
        };
        let rs = [
            mk("a", "g1", Classification::Pass, false),
            mk("b", "g1", Classification::High, false),
            mk("c", "g2", Classification::Pass, false),
            mk("d", "g2", Classification::NoData, false),
        ];
        // g1: 50, g2: 100 → equal weights 75; weights 3:1 → 62.5.
        assert_eq!(score(&rs, &[]), Some(75.0));
        assert_eq!(
            score(&rs, &[("g1".into(), 3.0), ("g2".into(), 1.0)]),
            Some(62.5)
        );
        let v = verdict(&rs, &[("g1".into(), 3.0)], &opts());
        assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.reason);
        let mut crit = rs.clone();
        crit[1].config.critical = true;
        assert_eq!(score(&crit, &[]), Some(0.0));
        assert_eq!(verdict(&crit, &[], &opts()).outcome, Outcome::Fail);
        assert_eq!(score(&[], &[]), None);
    }
}
