//! Judging recorded numbers (`canary analyze`): one look at each metric of
//! an input document ([`canary_core::analyze_input`], where it is parsed
//! like every other document), one report. Each metric goes through its
//! judge's per-metric kernel (`ztest::error_metric`,
//! `deviation::judge_metric`, `kayenta::classify`, the sequential count,
//! mean and band tests with its α `Budget`); this module checks the
//! input against the judge and combines. The binary reads the file and
//! prints.
//!
//! A count metric gives event counts per arm and the canary's share of the
//! traffic (`canary_share`), or the request counts (`baseline_requests`,
//! `canary_requests`) from which the share is taken. A samples metric gives
//! two series; `null` stands for NaN.

use std::fmt;

use canary_core::spec::Combine;
use canary_core::{JudgeKind, MetricEvidence, Outcome, Verdict};
use serde::Serialize;

use crate::deviation::{self, Direction};
use crate::kayenta::{self, mann_whitney::sorted, MetricConfig, MetricDirection};
use crate::sequential::{band, count, msprt, Budget};
use crate::special::ln_mean_exp;
use crate::ztest;

pub use canary_core::analyze_input::{AnalyzeInput, MetricInput, MetricKind, Side};

/// Values per side below which a samples metric gets no mean test (its
/// plug-in variance would be too uncertain); the band test still runs.
pub const MIN_FOR_MEAN: usize = 30;

/// A problem with the input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AnalyzeError {
    /// Path of the field, e.g. `metrics[1].canary_share`.
    pub path: String,
    /// The line of the input, when the problem was found while reading it.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for AnalyzeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path == "." { "" } else { &self.path };
        match (path.is_empty(), self.line) {
            (true, None) => write!(f, "{}", self.message),
            (true, Some(l)) => write!(f, "line {l}: {}", self.message),
            (false, None) => write!(f, "{path}: {}", self.message),
            (false, Some(l)) => write!(f, "{path} (line {l}): {}", self.message),
        }
    }
}

fn bad(path: impl Into<String>, message: impl Into<String>) -> AnalyzeError {
    AnalyzeError {
        path: path.into(),
        line: None,
        message: message.into(),
    }
}

/// Parses the input text: [`canary_core::analyze_input::parse`], its error
/// as an [`AnalyzeError`].
///
/// # Errors
/// The syntax or shape error, or text after the document, with the path of
/// the offending field and its line.
pub fn parse(text: &str) -> Result<AnalyzeInput, AnalyzeError> {
    canary_core::analyze_input::parse(text).map_err(|e| AnalyzeError {
        path: e.path,
        line: e.line,
        message: e.rule,
    })
}

/// One metric in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricReport {
    /// Name.
    pub name: String,
    /// pass, fail or inconclusive.
    pub verdict: Outcome,
    /// p-value (anytime-valid for `sequential`).
    pub p_value: Option<f64>,
    /// e-value, where the judge has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// Interval for the effect.
    pub interval: Option<[f64; 2]>,
    /// What the interval is of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_of: Option<String>,
    /// The statistic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The threshold it was held to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Baseline sample size.
    pub n_baseline: u64,
    /// Canary sample size.
    pub n_canary: u64,
    /// Why.
    pub reason: String,
}

/// The report `canary analyze` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalyzeReport {
    /// Overall verdict.
    pub verdict: Outcome,
    /// The judge.
    pub judge: String,
    /// The level.
    pub alpha: f64,
    /// Why, in words.
    pub reason: String,
    /// Per metric.
    pub metrics: Vec<MetricReport>,
}

impl From<MetricEvidence> for MetricReport {
    fn from(m: MetricEvidence) -> Self {
        Self {
            name: m.name,
            verdict: m.outcome,
            p_value: m.p_value,
            e_value: m.e_value,
            interval: m.interval,
            interval_of: m.interval_of,
            statistic: m.statistic,
            threshold: m.threshold,
            n_baseline: m.n_baseline,
            n_canary: m.n_canary,
            reason: m.reason,
        }
    }
}

/// A validated count metric.
struct Counts {
    base: f64,
    canary: f64,
    share: f64,
    requests: Option<(u64, u64)>,
}

/// The largest count taken: 2^53, below which every whole number is exact
/// in an f64 and two counts sum without overflow.
const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

fn counts(i: usize, m: &MetricInput) -> Result<Counts, AnalyzeError> {
    let p = |f: &str| format!("metrics[{i}].{f}");
    let get = |s: &Side, f: &str| match s {
        Side::Count(c) if (0.0..=MAX_COUNT).contains(c) && c.fract() == 0.0 => Ok(*c),
        Side::Count(c) => Err(bad(
            p(f),
            format!("{c} — a count is a whole number in [0, 2^53]"),
        )),
        Side::Samples(_) => Err(bad(p(f), "a count metric takes a number, not a list")),
    };
    let (base, canary) = (get(&m.baseline, "baseline")?, get(&m.canary, "canary")?);
    let requests = match (m.baseline_requests, m.canary_requests) {
        (Some(b), Some(c)) => {
            if (b as f64) < base {
                return Err(bad(
                    p("baseline_requests"),
                    format!("{b} is fewer than the baseline's {base} events"),
                ));
            }
            if (c as f64) < canary {
                return Err(bad(
                    p("canary_requests"),
                    format!("{c} is fewer than the canary's {canary} events"),
                ));
            }
            Some((b, c))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                p("canary_requests"),
                "missing: give both request counts or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                p("baseline_requests"),
                "missing: give both request counts or neither",
            ))
        }
    };
    let share = match (m.canary_share, requests) {
        (Some(s), _) if s > 0.0 && s < 1.0 => s,
        (Some(s), _) => {
            return Err(bad(
                p("canary_share"),
                format!("{s} — a share is in (0, 1)"),
            ))
        }
        // In f64: the two counts may sum past u64.
        (None, Some((b, c))) if b > 0 && c > 0 => c as f64 / (b as f64 + c as f64),
        (None, Some(_)) => {
            return Err(bad(
                p("canary_requests"),
                "both arms need requests to give the canary's share",
            ))
        }
        (None, None) => return Err(bad(
            p("canary_share"),
            "missing: a count metric needs canary_share, or baseline_requests and canary_requests",
        )),
    };
    Ok(Counts {
        base,
        canary,
        share,
        requests,
    })
}

fn samples(i: usize, m: &MetricInput) -> Result<(Vec<f64>, Vec<f64>), AnalyzeError> {
    let get = |s: &Side, f: &str| match s {
        Side::Samples(v) => Ok(v
            .iter()
            .map(|x| x.unwrap_or(f64::NAN))
            .collect::<Vec<f64>>()),
        Side::Count(_) => Err(bad(
            format!("metrics[{i}].{f}"),
            "a samples metric takes a list of numbers",
        )),
    };
    Ok((get(&m.baseline, "baseline")?, get(&m.canary, "canary")?))
}

fn validate(input: &AnalyzeInput) -> Result<(), AnalyzeError> {
    if !(input.alpha > 0.0 && input.alpha < 0.5) {
        return Err(bad(
            "alpha",
            format!("{} — alpha is in (0, 0.5)", input.alpha),
        ));
    }
    if input.metrics.is_empty() {
        return Err(bad("metrics", "at least one metric is needed"));
    }
    let o = &input.options;
    if !(o.sequential.k > 0.0 && o.sequential.k.is_finite()) {
        return Err(bad("options.sequential.k", "must be positive and finite"));
    }
    if !(o.kayenta.confidence > 0.0 && o.kayenta.confidence < 1.0) {
        return Err(bad(
            "options.kayenta.confidence",
            "a confidence is in (0, 1)",
        ));
    }
    for (g, w) in &input.group_weights {
        if !(*w >= 0.0 && w.is_finite()) {
            return Err(bad(
                format!("group_weights.{g}"),
                "a weight is a finite number ≥ 0",
            ));
        }
    }
    for (i, m) in input.metrics.iter().enumerate() {
        if let Some(d) = m.max_deviation_pct {
            if !(d >= 0.0 && d.is_finite()) {
                return Err(bad(
                    format!("metrics[{i}].max_deviation_pct"),
                    "must be a finite number ≥ 0",
                ));
            }
        }
        match (input.judge, m.kind) {
            (JudgeKind::Threshold, _) => {
                return Err(bad(
                    "judge",
                    "threshold needs a stage's limits; analyze takes sequential, ztest, deviation or kayenta",
                ))
            }
            (JudgeKind::Kayenta, MetricKind::Count) => {
                return Err(bad(format!("metrics[{i}].kind"), "the kayenta judge takes samples metrics only"))
            }
            (JudgeKind::Ztest, MetricKind::Samples) => {
                return Err(bad(format!("metrics[{i}].kind"), "the ztest judge takes count metrics only"))
            }
            (JudgeKind::Ztest, MetricKind::Count) => {
                if m.baseline_requests.is_none() {
                    return Err(bad(
                        format!("metrics[{i}].baseline_requests"),
                        "missing: the ztest judge needs request counts",
                    ));
                }
                counts(i, m)?;
            }
            (_, MetricKind::Count) => {
                counts(i, m)?;
            }
            (_, MetricKind::Samples) => {
                samples(i, m)?;
            }
        }
    }
    Ok(())
}

/// Judges `input` in one look.
///
/// # Errors
/// An input that does not fit the judge (a count metric without a share,
/// samples for `ztest`, ...), naming the field.
pub fn analyze(input: &AnalyzeInput) -> Result<AnalyzeReport, AnalyzeError> {
    validate(input)?;
    let v = match input.judge {
        JudgeKind::Sequential => sequential(input)?,
        JudgeKind::Ztest => {
            let mut ms = Vec::new();
            for (i, m) in input.metrics.iter().enumerate() {
                let c = counts(i, m)?;
                let (nb, nc) = c.requests.unwrap_or((0, 0));
                // One look: there is nothing more to wait for.
                ms.push(ztest::error_metric(
                    &m.name,
                    [c.base as u64, nb],
                    [c.canary as u64, nc],
                    input.alpha,
                    0,
                ));
            }
            Verdict::from_metrics("ztest", ms)
        }
        JudgeKind::Deviation => {
            let o = &input.options.deviation;
            let mut ms = Vec::new();
            for (i, m) in input.metrics.iter().enumerate() {
                let (b, c, n, max) = match m.kind {
                    MetricKind::Count => {
                        let k = counts(i, m)?;
                        let (b, c, n) = match k.requests {
                            Some((nb, nc)) => (
                                (nb > 0).then(|| k.base / nb as f64),
                                (nc > 0).then(|| k.canary / nc as f64),
                                (nb, nc),
                            ),
                            None => (
                                Some(k.base / (1.0 - k.share)),
                                Some(k.canary / k.share),
                                (k.base as u64, k.canary as u64),
                            ),
                        };
                        (
                            b,
                            c,
                            n,
                            m.max_deviation_pct.unwrap_or(o.max_error_deviation_pct),
                        )
                    }
                    MetricKind::Samples => {
                        let (b, c) = samples(i, m)?;
                        let mean = |v: &[f64]| {
                            let v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
                            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                        };
                        (
                            mean(&b),
                            mean(&c),
                            (b.len() as u64, c.len() as u64),
                            m.max_deviation_pct.unwrap_or(o.max_latency_deviation_pct),
                        )
                    }
                };
                let judge = |d| deviation::judge_metric(&m.name, b, c, max, d);
                let mut e = match m.direction {
                    MetricDirection::Increase => judge(Direction::LowerIsBetter),
                    MetricDirection::Decrease => judge(Direction::HigherIsBetter),
                    MetricDirection::Either => {
                        let up = judge(Direction::LowerIsBetter);
                        if up.outcome == Outcome::Pass {
                            judge(Direction::HigherIsBetter)
                        } else {
                            up
                        }
                    }
                };
                e.n_baseline = n.0;
                e.n_canary = n.1;
                ms.push(e);
            }
            Verdict::from_metrics("deviation", ms)
        }
        JudgeKind::Kayenta => {
            let mut rs = Vec::new();
            for (i, m) in input.metrics.iter().enumerate() {
                let (b, c) = samples(i, m)?;
                let cfg = MetricConfig {
                    name: m.name.clone(),
                    direction: m.direction,
                    critical: m.critical,
                    must_have_data: m.must_have_data,
                    group: m.group.clone().unwrap_or_else(|| m.name.clone()),
                    allowed_increase: 1.0,
                    allowed_decrease: 1.0,
                };
                rs.push(kayenta::classify(&c, &b, &cfg, &input.options.kayenta));
            }
            let w: Vec<(String, f64)> = input
                .group_weights
                .iter()
                .map(|(g, w)| (g.clone(), *w))
                .collect();
            kayenta::verdict(&rs, &w, &input.options.kayenta)
        }
        JudgeKind::Threshold => return Err(bad("judge", "threshold is not available in analyze")),
    };
    Ok(AnalyzeReport {
        verdict: v.outcome,
        judge: input.judge.name().to_string(),
        alpha: input.alpha,
        reason: v.reason,
        metrics: v.metrics.into_iter().map(MetricReport::from).collect(),
    })
}

/// One look of the sequential tests: count metrics by the count test,
/// samples metrics by the mSPRT on their means and the band test on their
/// empirical CDFs.
fn sequential(input: &AnalyzeInput) -> Result<Verdict, AnalyzeError> {
    let o = &input.options.sequential;
    let n_samples = input
        .metrics
        .iter()
        .filter(|m| m.kind == MetricKind::Samples)
        .count();
    let budget = Budget {
        alpha: input.alpha,
        reserve: 0.0,
        combine: o.combine,
        n_e: input.metrics.len(),
        n_band: n_samples,
        // One look at any number of metrics: an even split.
        mean_weight: 1.0,
    };
    let e_alpha = match o.combine {
        Combine::Bonferroni => budget.per_test(),
        Combine::Average => budget.averaged(),
    };
    let thr = (1.0 / budget.per_test()).ln();
    // (evidence, ln e, harmful, band failed)
    let mut rows: Vec<(MetricEvidence, Option<f64>, bool, bool)> = Vec::new();
    for (i, m) in input.metrics.iter().enumerate() {
        match m.kind {
            MetricKind::Count => {
                let c = counts(i, m)?;
                // One look at a given share: the fixed concentration `k`
                // (`ratio_prior_sd` is the rollout judge's, per stage).
                let k = o.k;
                let ln_e = count::log_e(c.base, c.canary, c.share, k, o.one_sided);
                let harm = match m.direction {
                    MetricDirection::Increase => c.canary * (1.0 - c.share) > c.base * c.share,
                    MetricDirection::Decrease => c.canary * (1.0 - c.share) < c.base * c.share,
                    MetricDirection::Either => true,
                };
                let iv = count::rate_ratio_interval(c.base, c.canary, c.share, k, e_alpha);
                let mut e = MetricEvidence::new(
                    &m.name,
                    Outcome::Inconclusive,
                    format!(
                        "events canary {} vs baseline {} at canary share {:.4}",
                        c.canary, c.base, c.share
                    ),
                );
                e.statistic = ln_e;
                e.threshold = Some(thr);
                e.e_value = ln_e.map(|l| l.exp().min(f64::MAX));
                e.p_value = ln_e.map(count::p_value);
                e.interval = Some(iv);
                e.interval_of = Some(format!(
                    "rate ratio canary/baseline (confidence sequence, {:.1} %)",
                    100.0 * (1.0 - e_alpha)
                ));
                let (nb, nc) = c.requests.unwrap_or((c.base as u64, c.canary as u64));
                e.n_baseline = nb;
                e.n_canary = nc;
                let no_data = c.base + c.canary == 0.0;
                if no_data {
                    e.reason = "no events on either side".into();
                }
                rows.push((e, ln_e.filter(|_| !no_data), harm, false));
            }
            MetricKind::Samples => {
                let (b, c) = samples(i, m)?;
                let clean = |v: &[f64]| {
                    sorted(
                        &v.iter()
                            .copied()
                            .filter(|x| !x.is_nan())
                            .collect::<Vec<_>>(),
                    )
                };
                let (b, c) = (clean(&b), clean(&c));
                let mut e = MetricEvidence::new(&m.name, Outcome::Inconclusive, String::new());
                e.n_baseline = b.len() as u64;
                e.n_canary = c.len() as u64;
                if b.len() < 2 || c.len() < 2 {
                    e.reason = format!(
                        "too few values (canary {}, baseline {}; 2 each needed)",
                        c.len(),
                        b.len()
                    );
                    rows.push((e, None, false, false));
                    continue;
                }
                let (nb, nc) = (b.len() as f64, c.len() as f64);
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
                let (mb, mc) = (mean(&b), mean(&c));
                let pooled = (var(&b, mb) + var(&c, mc)) / (nb + nc - 2.0);
                let d = mc - mb;
                // The plug-in variance understates the uncertainty of a
                // small sample: the mean test needs MIN_FOR_MEAN values a side.
                let (ln_e, hw) = if pooled > 0.0 && b.len().min(c.len()) >= MIN_FOR_MEAN {
                    let s2 = pooled * (1.0 / nb + 1.0 / nc);
                    // Tuned for this look: one look is all there is.
                    let tau2 = msprt::kappa(e_alpha) * s2;
                    let signed = match m.direction {
                        MetricDirection::Decrease => -d,
                        _ => d,
                    };
                    let l = if o.one_sided && m.direction != MetricDirection::Either {
                        msprt::log_lambda_one_sided(signed, s2, tau2)
                    } else {
                        msprt::log_lambda(signed, s2, tau2)
                    };
                    (l, msprt::half_width(s2, tau2, e_alpha))
                } else {
                    (None, f64::INFINITY)
                };
                let harm = match m.direction {
                    MetricDirection::Increase => d > 0.0,
                    MetricDirection::Decrease => d < 0.0,
                    MetricDirection::Either => d != 0.0,
                };
                // Band test on the exact empirical CDFs.
                let dist = match m.direction {
                    MetricDirection::Increase => band::sup_diff_sorted(&b, &c),
                    MetricDirection::Decrease => band::sup_diff_sorted(&c, &b),
                    MetricDirection::Either => {
                        band::sup_diff_sorted(&b, &c).max(band::sup_diff_sorted(&c, &b))
                    }
                };
                let a_band = budget.per_test();
                let thr_d = band::threshold(nb, nc, a_band);
                let band_fail = dist > thr_d;
                let p_band = band::p_value(dist, nb, nc);
                e.statistic = ln_e;
                e.threshold = Some(thr);
                e.e_value = ln_e.map(|l| l.exp().min(f64::MAX));
                e.p_value = Some(ln_e.map_or(1.0, count::p_value).min(p_band));
                e.interval = Some([d - hw, d + hw]);
                e.interval_of = Some(format!(
                    "mean difference canary − baseline (confidence sequence, {:.1} %)",
                    100.0 * (1.0 - e_alpha)
                ));
                e.reason = format!(
                    "means canary {mc:.4} vs baseline {mb:.4}{}; distribution D = {dist:.4} vs band {thr_d:.4} (p {p_band:.3e})",
                    if ln_e.is_none() {
                        format!(" (no mean test: needs {MIN_FOR_MEAN} values a side with some spread)")
                    } else {
                        String::new()
                    }
                );
                rows.push((e, ln_e, harm, band_fail));
            }
        }
    }
    let describe = budget.describe();
    let mut metrics = Vec::new();
    let avg_fail = match o.combine {
        Combine::Average => {
            let logs: Vec<f64> = rows.iter().map(|r| r.1.unwrap_or(0.0)).collect();
            let avg = ln_mean_exp(&logs);
            let fail = avg >= (1.0 / budget.averaged()).ln()
                && rows.iter().any(|r| r.2 && r.1.is_some_and(|l| l > 0.0));
            Some((avg, fail))
        }
        Combine::Bonferroni => None,
    };
    for (mut e, ln_e, harm, band_fail) in rows {
        let e_fail = match avg_fail {
            None => harm && ln_e.is_some_and(|l| l >= thr),
            Some((_, f)) => f && harm && ln_e.is_some_and(|l| l > 0.0),
        };
        let shown = !o.evidence_mode
            || e.interval.is_some_and(|[_, h]| {
                if e.interval_of
                    .as_deref()
                    .is_some_and(|s| s.starts_with("rate ratio"))
                {
                    h < o.tolerated_error_ratio
                } else {
                    h <= 0.0
                }
            });
        let detail = std::mem::take(&mut e.reason);
        if e_fail || band_fail {
            e.outcome = Outcome::Fail;
            e.reason = format!(
                "canary worse{}: {detail}; {describe}",
                if band_fail && !e_fail {
                    " (distribution)"
                } else {
                    ""
                }
            );
        } else if ln_e.is_none() && e.e_value.is_none() {
            e.reason = if detail.is_empty() {
                "no data".into()
            } else {
                detail
            };
        } else if ln_e.is_none() {
            e.reason = format!("no evidence either way: {detail}");
        } else if !shown {
            e.reason = format!("safety not shown (evidence mode): {detail}");
        } else {
            e.outcome = Outcome::Pass;
            e.reason = format!("no evidence of harm: {detail}");
        }
        metrics.push(e);
    }
    if let Some((avg, fail)) = avg_fail {
        let mut c = MetricEvidence::new(
            "combined",
            if fail { Outcome::Fail } else { Outcome::Pass },
            format!(
                "mean e-value {}; {describe}",
                crate::sequential::fmt_e(avg.exp().min(f64::MAX))
            ),
        );
        c.statistic = Some(avg);
        c.threshold = Some((1.0 / budget.averaged()).ln());
        c.e_value = Some(avg.exp().min(f64::MAX));
        metrics.push(c);
    }
    Ok(Verdict::from_metrics("sequential", metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<AnalyzeReport, AnalyzeError> {
        analyze(&parse(text)?)
    }

    #[test]
    fn the_issue_example_fails() {
        let r = run(r#"{"judge": "sequential", "alpha": 0.05,
         "metrics": [
           {"name": "errors", "kind": "count", "baseline": 950, "canary": 80, "canary_share": 0.05},
           {"name": "latency_ms", "kind": "samples", "baseline": [101, 99, 130], "canary": [140, 151, 160]}]}"#)
        .unwrap();
        assert_eq!(r.verdict, Outcome::Fail, "{}", r.reason);
        assert_eq!(r.metrics[0].verdict, Outcome::Fail);
        // Three values a side: no mean test, and the band cannot reject.
        assert_eq!(
            r.metrics[1].verdict,
            Outcome::Inconclusive,
            "{}",
            r.metrics[1].reason
        );
        // ln E one-sided for (950, 80, 0.05) vs the Bonferroni threshold ln(3/0.05).
        assert!(r.metrics[0].e_value.unwrap() > 60.0);
        assert!(r.reason.contains("Bonferroni"), "{}", r.reason);
    }

    #[test]
    fn errors_name_the_field() {
        let e = run(r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1, "canary": 2}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "metrics[0].canary_share");
        let e = run(r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1, "canary": 2, "canary_share": 1.5}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].canary_share");
        let e = run(r#"{"alpha": 0.7, "metrics": []}"#).unwrap_err();
        assert_eq!(e.path, "alpha");
        let e =
            run(r#"{"metrics": [{"name": "e", "kind": "counts", "baseline": 1, "canary": 2}]}"#)
                .unwrap_err();
        assert_eq!(e.path, "metrics[0].kind");
        let e = run(r#"{"judge": "ztest", "metrics": [{"name": "l", "kind": "samples", "baseline": [1], "canary": [2]}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].kind");
        let e = run(r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1.5, "canary": 2, "canary_share": 0.5}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].baseline");
        let e = run(r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1, "canary": 2, "canary_share": 0.5, "extra": 1}]}"#).unwrap_err();
        assert_eq!(e.path, "metrics[0].extra");
        assert!(e.message.contains("extra"), "{e}");
    }

    /// Issue 10: trailing garbage after the input was accepted; request
    /// counts summing past u64 gave "canary share 2.0".
    #[test]
    fn trailing_text_and_overflowing_counts_are_refused() {
        let ok = r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1, "canary": 2, "canary_share": 0.5}]}"#;
        assert!(run(ok).is_ok());
        let e = run(&format!("{ok}\n{{\"judge\": \"ztest\"}}")).unwrap_err();
        assert!(e.message.contains("more after the end"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = run(&format!("{ok} trailing")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let big = r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1, "canary": 2,
            "baseline_requests": 18446744073709551615, "canary_requests": 10}]}"#;
        let r = run(big).unwrap();
        let m = &r.metrics[0];
        assert!(m.reason.contains("canary share 0.0000"), "{}", m.reason);
        let huge = r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 1e300, "canary": 2, "canary_share": 0.5}]}"#;
        let e = run(huge).unwrap_err();
        assert_eq!(e.path, "metrics[0].baseline");
        assert!(e.message.contains("2^53"), "{e}");
    }

    #[test]
    fn every_judge_runs() {
        let counts = r#""metrics": [{"name": "errors", "kind": "count", "baseline": 100, "canary": 12,
            "baseline_requests": 10000, "canary_requests": 1000}]"#;
        for judge in ["sequential", "ztest", "deviation"] {
            let r = run(&format!(r#"{{"judge": "{judge}", {counts}}}"#)).unwrap();
            assert_eq!(r.verdict, Outcome::Pass, "{judge}: {}", r.reason);
        }
        let samples = r#""metrics": [{"name": "lat", "kind": "samples",
            "baseline": [10, 11, 12, 13, 14, 15, 16, 17], "canary": [20, 21, 22, 23, 24, 25, 26, 27]}]"#;
        for judge in ["kayenta", "deviation"] {
            let r = run(&format!(r#"{{"judge": "{judge}", {samples}}}"#)).unwrap();
            assert_eq!(r.verdict, Outcome::Fail, "{judge}: {}", r.reason);
        }
    }

    #[test]
    fn edge_cases_are_inconclusive_not_errors() {
        let r = run(
            r#"{"metrics": [{"name": "l", "kind": "samples", "baseline": [], "canary": [1, 2]}]}"#,
        )
        .unwrap();
        assert_eq!(r.verdict, Outcome::Inconclusive);
        let r = run(r#"{"metrics": [{"name": "e", "kind": "count", "baseline": 0, "canary": 0, "canary_share": 0.1}]}"#).unwrap();
        assert_eq!(r.verdict, Outcome::Inconclusive, "{}", r.reason);
        let r = run(r#"{"metrics": [{"name": "l", "kind": "samples", "baseline": [5, 5, 5], "canary": [5, 5, null]}]}"#).unwrap();
        assert_eq!(
            r.verdict,
            Outcome::Inconclusive,
            "all equal: no variance, {}",
            r.reason
        );
        let r = run(r#"{"judge": "kayenta", "metrics": [{"name": "l", "kind": "samples", "baseline": [5, 5, 5], "canary": [5, 5, null]}]}"#).unwrap();
        assert_eq!(r.verdict, Outcome::Pass, "{}", r.reason);
    }
}
