//! The `sequential` judge's latency tests: the mSPRT on the mean of
//! ln(latency) ([`msprt`]) between the versions, or at 100 % against the
//! upper bound of stable's earlier mean; and the time-uniform band test
//! ([`band`]) on the whole distribution. Both against the latency margin
//! (`analysis.margins`).

use canary_core::{LatencyHistogram, MetricEvidence, Outcome, Stage};

use super::{band, intersect, msprt, Look, Reference, SequentialJudge};

/// Smallest variance of ln(latency) the mean test assumes: the histogram's
/// resolution, (ln(1 + 1.09 %))².
pub(super) const MIN_LOG_VAR: f64 = 1.184e-4;

impl SequentialJudge {
    pub(super) fn latency_two_sample(
        &mut self,
        stage: &Stage,
        b: &LatencyHistogram,
        c: &LatencyHistogram,
    ) -> Look {
        let n = (b.count(), c.count());
        let (Some((mb, vb)), Some((mc, vc))) = (b.log_moments(), c.log_moments()) else {
            return Look::nothing(n, "no latencies on one side yet");
        };
        let (nb, nc) = (n.0 as f64, n.1 as f64);
        let pooled = if nb + nc > 2.0 {
            ((nb - 1.0) * vb + (nc - 1.0) * vc) / (nb + nc - 2.0)
        } else {
            0.0
        };
        let var = pooled.max(MIN_LOG_VAR);
        let s2 = var * (1.0 / nb + 1.0 / nc);
        let w = (stage.routed_weight() / 100.0).clamp(1e-6, 1.0 - 1e-6);
        let nopt_c = stage.min_requests.max(1) as f64;
        let nopt_b = nopt_c * (1.0 - w) / w;
        let tau2 = msprt::kappa(self.mean_alpha()) * var * (1.0 / nopt_c + 1.0 / nopt_b);
        self.latency_look(
            mc - mb,
            self.latency_margin(mb),
            s2,
            tau2,
            0.0,
            n,
            format!(
                "mean ln latency canary {mc:.4} vs baseline {mb:.4} (pooled sd {:.3})",
                var.sqrt()
            ),
        )
    }

    pub(super) fn latency_one_sample(
        &mut self,
        stage: &Stage,
        r: &Reference,
        c: &LatencyHistogram,
    ) -> Look {
        let n = (r.latencies, c.count());
        let (Some([ref_lo, ref_hi]), Some((mc, vc))) = (r.log_mean, c.log_moments()) else {
            return Look::nothing(n, "no baseline latency to compare with");
        };
        let var = vc.max(MIN_LOG_VAR);
        let s2 = var / n.1 as f64;
        let tau2 = msprt::kappa(self.mean_alpha()) * var / stage.min_requests.max(1) as f64;
        // The test is against the upper bound; the interval also carries the
        // bound's own width.
        self.latency_look(
            mc - ref_hi,
            self.latency_margin(ref_hi),
            s2,
            tau2,
            ref_hi - ref_lo,
            n,
            format!(
            "100 %: canary mean ln latency {mc:.4} against the baseline's upper bound {ref_hi:.4}"
        ),
        )
    }

    /// The harmless shift of mean ln latency for a baseline mean ln
    /// latency `ln_base` (0: none; one-sided tests only).
    pub(super) fn latency_margin(&self, ln_base: f64) -> f64 {
        if self.opts.one_sided {
            self.margins.latency_log_shift(ln_base.exp())
        } else {
            0.0
        }
    }

    /// One look of the mean test: `d` the estimated difference, tested
    /// against `margin` (harm is `d > margin`); the interval is `d`'s.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn latency_look(
        &mut self,
        d: f64,
        margin: f64,
        s2: f64,
        tau2: f64,
        extra: f64,
        n: (u64, u64),
        detail: String,
    ) -> Look {
        let t = if margin > 0.0 { d - margin } else { d };
        let detail = if margin > 0.0 {
            format!(
                "{detail}; harm is an increase beyond {:.2} % (analysis.margins)",
                100.0 * margin.exp_m1()
            )
        } else {
            detail
        };
        let ln_e = if self.opts.one_sided {
            msprt::log_lambda_one_sided(t, s2, tau2)
        } else {
            msprt::log_lambda(t, s2, tau2)
        };
        let hw = msprt::half_width(s2, tau2, self.mean_alpha());
        let cs = [(d - hw - extra).exp(), (d + hw).exp()];
        let iv = intersect(self.stage.latency_ratio, cs);
        self.stage.latency_ratio = Some(iv);
        Look {
            ln_e,
            harm: t > 0.0,
            interval: Some(iv),
            n,
            detail,
        }
    }

    /// The band test on the stage's histograms (`hb` the baseline's, the
    /// rollout's baseline at 100 %), against the latency margin: its
    /// evidence, decided (fail, or inconclusive until the combination).
    pub(super) fn distribution(
        &mut self,
        hb: &LatencyHistogram,
        hc: &LatencyHistogram,
    ) -> MetricEvidence {
        let alpha_d = self.band_alpha_per_stage();
        let (nb, nc) = (hb.count() as f64, hc.count() as f64);
        // Against a margin: the baseline's distribution made that much
        // slower, in whole buckets (rounded down: never more margin than
        // asked for).
        let shift = hb
            .log_moments()
            .map_or(0.0, |(m, _)| self.margins.latency_log_shift(m.exp()));
        let k = (shift / LatencyHistogram::BUCKET_LN_WIDTH).floor() as usize;
        let d = if k > 0 {
            band::sup_diff_histograms(&hb.shifted_up(k), hc)
        } else {
            band::sup_diff_histograms(hb, hc)
        };
        let thr_d = band::threshold(nb, nc, alpha_d);
        let p_stage = band::p_value(d, nb, nc);
        // Bonferroni over the stages: comparable with this test's share.
        self.min_p_dist = self
            .min_p_dist
            .min((p_stage * self.n_stages as f64).min(1.0));
        let dist_fail = nb > 0.0 && nc > 0.0 && d > thr_d;
        let mut md =
            MetricEvidence::new("latency_distribution", Outcome::Inconclusive, String::new());
        md.statistic = Some(d);
        md.threshold = Some(thr_d);
        md.p_value = Some(self.min_p_dist);
        md.n_baseline = hb.count();
        md.n_canary = hc.count();
        if nb > 0.0 && nc > 0.0 {
            let (eb, ecn) = (
                band::epsilon(nb, alpha_d / 2.0),
                band::epsilon(nc, alpha_d / 2.0),
            );
            let [bl, bh] = band::quantile_band_histogram(hb, 0.5, eb);
            let [cl, ch] = band::quantile_band_histogram(hc, 0.5, ecn);
            md.interval = Some([
                if bh > 0.0 { cl / bh } else { 0.0 },
                if bl > 0.0 { ch / bl } else { f64::INFINITY },
            ]);
            md.interval_of = Some(self.interval_of.distribution.clone());
        }
        md.outcome = if dist_fail {
            Outcome::Fail
        } else {
            Outcome::Inconclusive
        };
        md
    }
}
