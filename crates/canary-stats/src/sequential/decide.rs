//! How the `sequential` judge turns its tests' numbers into a verdict: the
//! evidence of each test, their combination (Bonferroni or averaged
//! e-values), and each metric's outcome and reason in words.

use std::fmt::Write as _;

use canary_core::spec::Combine;
use canary_core::{MetricEvidence, Outcome, Stage};

use super::{e_of, Look, SequentialJudge};
use crate::special::ln_mean_exp;

/// An e-value in words: plain up to a million, in scientific notation
/// beyond (capped e-values reach 1.8 × 10³⁰⁸, 309 digits written out).
pub(crate) fn fmt_e(e: f64) -> String {
    let mut s = String::new();
    write_fmt_e(&mut s, e);
    s
}

/// [`fmt_e`] appended to `s`.
fn write_fmt_e(s: &mut String, e: f64) {
    if e.abs() < 1e6 {
        let _ = write!(s, "{e:.3}");
    } else {
        let _ = write!(s, "{e:.3e}");
    }
}

impl SequentialJudge {
    pub(super) fn evidence(
        &self,
        name: &str,
        look: &Look,
        ln_total: f64,
        max_total: f64,
        thr: f64,
        of: &str,
    ) -> MetricEvidence {
        let mut m = MetricEvidence::new(name, Outcome::Inconclusive, look.detail.clone());
        m.n_baseline = look.n.0;
        m.n_canary = look.n.1;
        m.statistic = Some(ln_total);
        m.threshold = Some(thr);
        m.e_value = Some(e_of(ln_total));
        m.p_value = Some((-max_total).exp().min(1.0));
        m.interval = look.interval;
        m.interval_of = look.interval.map(|_| of.to_string());
        m
    }

    /// Decides the error and latency mean tests (`(ln e, threshold)` of
    /// each), alone under Bonferroni or averaged under `average`.
    pub(super) fn combine(
        &self,
        (err, mut me, le, thr_e): (&Look, MetricEvidence, f64, f64),
        (lat, mut ml, ll, thr_l): (&Look, MetricEvidence, f64, f64),
    ) -> Vec<MetricEvidence> {
        let budget = self.budget;
        let e_fail = |l: &Look, ln: f64, thr: f64| l.harm && ln >= thr;
        match budget.combine {
            Combine::Bonferroni => {
                me.outcome = if e_fail(err, le, thr_e) {
                    Outcome::Fail
                } else {
                    Outcome::Inconclusive
                };
                ml.outcome = if e_fail(lat, ll, thr_l) {
                    Outcome::Fail
                } else {
                    Outcome::Inconclusive
                };
                vec![me, ml]
            }
            Combine::Average => {
                let avg = ln_mean_exp(&[le, ll]);
                let thr_a = (1.0 / budget.averaged()).ln();
                let fail = avg >= thr_a && (err.harm || lat.harm);
                me.threshold = None;
                ml.threshold = None;
                let mut mc = MetricEvidence::new(
                    "errors_and_latency",
                    if fail {
                        Outcome::Fail
                    } else {
                        Outcome::Inconclusive
                    },
                    format!(
                        "mean e-value {} {} 1/{:.4} = {:.1}",
                        fmt_e(e_of(avg)),
                        if fail { "reached" } else { "below" },
                        budget.averaged(),
                        1.0 / budget.averaged()
                    ),
                );
                mc.statistic = Some(avg);
                mc.threshold = Some(thr_a);
                mc.e_value = Some(e_of(avg));
                mc.p_value = Some(
                    (-ln_mean_exp(&[self.max_ln_e_err, self.max_ln_e_lat]))
                        .exp()
                        .min(1.0),
                );
                mc.n_baseline = me.n_baseline;
                mc.n_canary = me.n_canary;
                vec![me, ml, mc]
            }
        }
    }

    /// Gives each metric its outcome and reason in words: a failed test
    /// fails; the others pass once the stage's `min_requests` canary
    /// requests are in, nothing failed and (in evidence mode) safety is
    /// shown.
    pub(super) fn explain(
        &self,
        metrics: &mut [MetricEvidence],
        stage: &Stage,
        canary_requests: u64,
    ) {
        // Only a failed test's reason names the alpha split.
        let combine = || format!("{}; {}", self.budget.describe(), self.describe_carry());
        let ok_size = canary_requests >= stage.min_requests.max(1);
        let any_fail = metrics.iter().any(|m| m.outcome == Outcome::Fail);
        let tol_e = self.opts.tolerated_error_ratio;
        let tol_l = self.opts.tolerated_latency_ratio;
        for m in metrics.iter_mut() {
            let base = std::mem::take(&mut m.reason);
            // The reason is written into one string: a verdict is made at
            // every look, and its words are most of a look's allocations.
            let mut r = String::with_capacity(base.len() + 160);
            m.reason = match m.outcome {
                Outcome::Fail if m.name == "latency_distribution" => {
                    let _ = write!(
                        r,
                        "canary latency distribution slower: D = {:.4} > band {:.4} (anytime p {:.3e})",
                        m.statistic.unwrap_or(0.0),
                        m.threshold.unwrap_or(0.0),
                        m.p_value.unwrap_or(1.0)
                    );
                    r
                }
                Outcome::Fail => {
                    r.push_str("canary worse: ");
                    write_e(&mut r, m);
                    r.push_str(" reached its threshold (");
                    r.push_str(&base);
                    write_interval(&mut r, m);
                    r.push_str("; ");
                    r.push_str(&combine());
                    r.push(')');
                    r
                }
                _ => {
                    // Not failed: pass once the sample is in (and, in
                    // evidence mode, the harm is shown small).
                    let shown = !self.opts.evidence_mode
                        || match m.name.as_str() {
                            "error_rate" => m.interval.is_some_and(|[_, h]| h < tol_e),
                            "latency" => m.interval.is_some_and(|[_, h]| h < tol_l),
                            _ => true,
                        };
                    if !any_fail && ok_size && shown {
                        m.outcome = Outcome::Pass;
                        r.push_str("no evidence of harm: ");
                    } else if !ok_size {
                        let _ = write!(
                            r,
                            "waiting for {} canary requests ({} so far): ",
                            stage.min_requests.max(1),
                            canary_requests
                        );
                    } else if !shown {
                        r.push_str("safety not shown yet (evidence mode): ");
                    }
                    // What was seen.
                    if m.name == "latency_distribution" {
                        let _ = write!(
                            r,
                            "D = {:.4} within band {:.4}",
                            m.statistic.unwrap_or(0.0),
                            m.threshold.unwrap_or(0.0)
                        );
                    } else if base.is_empty() {
                        write_e(&mut r, m);
                    } else {
                        r.push_str(&base);
                        r.push_str("; ");
                        write_e(&mut r, m);
                    }
                    write_interval(&mut r, m);
                    r
                }
            };
        }
    }
}

/// Appends the e-value and anytime p of `m` in words, if it has an e-value.
fn write_e(r: &mut String, m: &MetricEvidence) {
    if let Some(e) = m.e_value {
        r.push_str("e-value ");
        write_fmt_e(r, e);
        let _ = write!(r, ", anytime p {:.3e}", m.p_value.unwrap_or(1.0));
    }
}

/// Appends `; <name in words> in [a, b]` for the interval of `m`, if any.
fn write_interval(r: &mut String, m: &MetricEvidence) {
    if let Some([a, b]) = m.interval {
        r.push_str("; ");
        for (i, part) in m.name.split('_').enumerate() {
            if i > 0 {
                r.push(' ');
            }
            r.push_str(part);
        }
        let _ = write!(r, " in [{a:.3}, {b:.3}]");
    }
}

#[cfg(test)]
mod tests {
    /// Issue 10: an e-value was printed as a 309-digit number.
    #[test]
    fn huge_e_values_are_written_short() {
        assert_eq!(super::fmt_e(12.34567), "12.346");
        assert_eq!(super::fmt_e(f64::MAX), "1.798e308");
    }
}
