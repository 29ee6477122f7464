//! `sequential` (the default judge): anytime-valid tests whose false-alarm
//! rate stays at or below alpha however often they are looked at.
//!
//! Three tests, each updated per tick from counts and histograms only (the
//! work per tick does not grow with the requests seen):
//!
//! - `error_rate`: the Poisson count e-process ([`count`]) on the stage's
//!   errors, with the canary's share ρ_c taken from the stage's observed
//!   request shares. Given the requests, under "same error rate" each error
//!   is the canary's with probability ρ_c (exactly so for rare errors;
//!   sampling without replacement is less variable than that and only makes
//!   the e-value smaller in expectation), so the count test is a test of the
//!   error *rate*, immune to a traffic split that differs from the weight.
//! - `latency`: the normal-mixture mSPRT ([`msprt`]) on the mean of
//!   ln(latency), from the histograms' exact log moments, with a plug-in
//!   pooled variance (assumption: many requests per arm, so the variance is
//!   well estimated; floored at the histogram's resolution). Its confidence
//!   sequence gives the ratio of geometric-mean latencies.
//! - `latency_distribution`: the time-uniform band test ([`band`]) on the
//!   stage's latency histograms: does the canary's CDF fall below the
//!   baseline's by more than both bands together?
//!
//! **Across stages** each e-process restarts at a stage's start and the
//! rollout's e-value is the product of the per-stage e-values (a test
//! martingale started afresh and multiplied on is still one), so one alpha
//! covers every look of every stage. The band test has no e-value; its share
//! of alpha is split evenly over the stages.
//!
//! **Across metrics** (`combine`): `bonferroni` gives the error test α/3,
//! the latency mean test 4α/15 and the band test 2α/5 (a weighted
//! Bonferroni split, [`ROLLOUT_MEAN_WEIGHT`]: the mean test's false alarms
//! dominate on healthy canaries, the band test's are nil); `average`
//! averages the error and latency e-values (an average of e-values is an
//! e-value) at level 2α/3 and gives the band test α/3.
//!
//! **At 100 %** the stable version gets no traffic and the split test has
//! nothing to split. The stage then becomes a one-sample comparison of the
//! canary with the baseline seen earlier in the rollout: the canary's error
//! rate is tested against the *upper end* of the baseline rate's confidence
//! sequence (the count test as a Bernoulli test, one-sided), and its mean
//! log latency against the upper end of the baseline mean's confidence
//! sequence. Both bounds are frozen at the stage's first look and hold with
//! probability ≥ 1 − α/8 each, so when the policy has a 100 % stage the
//! judge reserves α/4 for them and runs its tests at 3α/4: the rollout-wide
//! false-alarm rate stays ≤ α. The band test compares with the rollout's
//! baseline histogram directly (its band is time-uniform, frozen or not).
//!
//! **Pass** means: the stage's `min_requests` canary requests have been
//! served and no test has failed; with `evidence_mode`, also the upper ends
//! of the error-rate-ratio and latency-ratio confidence sequences lie below
//! the tolerated ratios. The state machine waits for the bake time itself.
//!
//! The e-processes and the band are valid under the models named above;
//! taking ρ_c from the cumulative request shares and σ² from the data make
//! them approximately, not exactly, martingales. `tests/monte_carlo.rs`
//! checks the rollout-wide false-alarm rate on A/A data at every tick.

use canary_core::spec::{Combine, Margins, SequentialOptions};
use canary_core::{
    JudgeKind, LatencyHistogram, MetricEvidence, Observations, Outcome, Policy, Stage, Verdict,
    VersionStats,
};

use crate::special::ln_mean_exp;

pub mod band;
pub mod count;
pub mod msprt;

/// Smallest variance of ln(latency) the mean test assumes: the histogram's
/// resolution, (ln(1 + 1.09 %))².
const MIN_LOG_VAR: f64 = 1.184e-4;

/// The latency mean test's share of α under Bonferroni, as a fraction of an
/// even third; the band test gets the rest of the two latency thirds. The
/// rollout judge uses 4/5: tests at α·(5, 4, 6)/15 for (errors, latency
/// mean, latency distribution). See docs/tuning.md, 2026-11-22.
pub const ROLLOUT_MEAN_WEIGHT: f64 = 0.8;

/// How alpha is divided between the tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The rollout-wide level.
    pub alpha: f64,
    /// Reserved for the baseline bounds of a 100 % stage (α/4 or 0).
    pub reserve: f64,
    /// How the e-valued tests are combined.
    pub combine: Combine,
    /// Number of e-valued tests (error counts, means).
    pub n_e: usize,
    /// Number of band tests.
    pub n_band: usize,
    /// Under Bonferroni, the latency mean test's level as a fraction of an
    /// even share (1 = even); the band test takes what it gives up, so the
    /// levels still sum to the tests' α. Used with one mean and one band
    /// test (a rollout); `average` ignores it.
    pub mean_weight: f64,
}

impl Budget {
    fn tests(&self) -> f64 {
        (self.n_e + self.n_band).max(1) as f64
    }

    /// Level left for the tests.
    pub fn test_alpha(&self) -> f64 {
        self.alpha - self.reserve
    }

    /// Level of one e-valued test under Bonferroni (each test's share).
    pub fn per_test(&self) -> f64 {
        self.test_alpha() / self.tests()
    }

    /// Level of the latency mean test under Bonferroni.
    pub fn mean_alpha(&self) -> f64 {
        self.per_test() * self.mean_weight
    }

    /// Level of the band test: its Bonferroni share plus what the mean
    /// test gave up (under `average`, an even share).
    pub fn band_alpha(&self) -> f64 {
        match self.combine {
            Combine::Bonferroni => self.per_test() * (2.0 - self.mean_weight),
            Combine::Average => self.per_test(),
        }
    }

    /// Level of the averaged e-values under `average`.
    pub fn averaged(&self) -> f64 {
        self.test_alpha() * self.n_e as f64 / self.tests()
    }

    /// The combination in words, for the evidence.
    pub fn describe(&self) -> String {
        let ta = self.test_alpha();
        let mut s = match self.combine {
            Combine::Bonferroni if self.mean_weight != 1.0 => format!(
                "Bonferroni: errors at {:.4}, latency mean at {:.4}, latency distribution at {:.4}",
                self.per_test(),
                self.mean_alpha(),
                self.band_alpha()
            ),
            Combine::Bonferroni => format!(
                "Bonferroni: {} tests at α/{} = {:.4} each",
                self.n_e + self.n_band,
                self.n_e + self.n_band,
                self.per_test()
            ),
            Combine::Average => format!(
                "e-values of {} tests averaged at level {:.4}, {} band test(s) at {:.4} each",
                self.n_e,
                self.averaged(),
                self.n_band,
                self.per_test()
            ),
        };
        if self.reserve > 0.0 {
            s.push_str(&format!(
                "; α = {} of which {} reserved for the baseline bounds at 100 % (tests at {ta:.4})",
                self.alpha, self.reserve
            ));
        }
        s
    }
}

/// The error margin in words, for the evidence ("" without one).
fn margin_note(ratio: f64) -> String {
    if ratio > 1.0 {
        format!("; harm is a rate ratio beyond {ratio:.3} (analysis.margins)")
    } else {
        String::new()
    }
}

/// Caps e^l to the largest finite f64 so the evidence stays printable.
fn e_of(l: f64) -> f64 {
    l.exp().min(f64::MAX)
}

fn intersect(prev: Option<[f64; 2]>, cur: [f64; 2]) -> [f64; 2] {
    match prev {
        Some([a, b]) => {
            let (lo, hi) = (a.max(cur[0]), b.min(cur[1]));
            if lo <= hi {
                [lo, hi]
            } else {
                cur
            }
        }
        None => cur,
    }
}

/// The frozen baseline bounds a 100 % stage compares with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reference {
    /// Confidence sequence of the baseline error rate.
    rate: [f64; 2],
    /// Confidence sequence of the baseline mean ln latency, if any latency.
    log_mean: Option<[f64; 2]>,
    requests: u64,
    latencies: u64,
}

/// Per-stage state.
#[derive(Debug, Clone, Default)]
struct StageState {
    ln_e_err: f64,
    ln_e_lat: f64,
    rate_ratio: Option<[f64; 2]>,
    latency_ratio: Option<[f64; 2]>,
    reference: Option<Reference>,
}

/// Per-metric numbers of one look.
struct Look {
    ln_e: Option<f64>,
    harm: bool,
    interval: Option<[f64; 2]>,
    n: (u64, u64),
    detail: String,
}

impl Look {
    /// A look with no evidence yet (too little data), saying why.
    fn nothing(n: (u64, u64), detail: impl Into<String>) -> Self {
        Look {
            ln_e: None,
            harm: false,
            interval: None,
            n,
            detail: detail.into(),
        }
    }
}

/// The `sequential` judge.
#[derive(Debug, Clone)]
pub struct SequentialJudge {
    opts: SequentialOptions,
    margins: Margins,
    budget: Budget,
    n_stages: usize,
    past_ln_e_err: f64,
    past_ln_e_lat: f64,
    max_ln_e_err: f64,
    max_ln_e_lat: f64,
    min_p_dist: f64,
    stage: StageState,
}

impl SequentialJudge {
    /// A sequential judge for `policy` (its alpha, options and stages).
    pub fn new(policy: &Policy) -> Self {
        let a = &policy.analysis;
        let has_full = policy.stages.iter().any(|s| s.weight >= 100.0);
        Self::with(
            a.alpha,
            a.judges.sequential.clone(),
            policy.stages.len(),
            has_full,
        )
        .with_margins(a.margins)
    }

    /// The same judge testing for harm beyond `margins` (one-sided tests
    /// only: a two-sided test keeps the plain null).
    pub fn with_margins(mut self, margins: Margins) -> Self {
        self.margins = margins;
        self
    }

    /// A sequential judge at level `alpha` for `n_stages` stages, reserving
    /// α/4 for the baseline bounds when a stage runs at 100 % (`has_full`).
    pub fn with(alpha: f64, opts: SequentialOptions, n_stages: usize, has_full: bool) -> Self {
        let budget = Budget {
            alpha,
            reserve: if has_full { alpha / 4.0 } else { 0.0 },
            combine: opts.combine,
            n_e: 2,
            n_band: 1,
            mean_weight: ROLLOUT_MEAN_WEIGHT,
        };
        Self {
            opts,
            margins: Margins::ZERO,
            budget,
            n_stages: n_stages.max(1),
            past_ln_e_err: 0.0,
            past_ln_e_lat: 0.0,
            max_ln_e_err: 0.0,
            max_ln_e_lat: 0.0,
            min_p_dist: 1.0,
            stage: StageState::default(),
        }
    }

    /// The alpha split in use.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// ln of the rollout-wide error e-value so far (product over stages).
    pub fn ln_e_errors(&self) -> f64 {
        self.past_ln_e_err + self.stage.ln_e_err
    }

    /// ln of the rollout-wide latency e-value so far (product over stages).
    pub fn ln_e_latency(&self) -> f64 {
        self.past_ln_e_lat + self.stage.ln_e_lat
    }

    fn reference(&mut self, rollout_base: &VersionStats) -> Reference {
        if let Some(r) = self.stage.reference {
            return r;
        }
        let each = self.budget.reserve / 2.0;
        let rate = count::rate_interval(
            rollout_base.errors as f64,
            rollout_base.requests as f64,
            self.opts.k,
            each,
        );
        let h = &rollout_base.latency;
        let log_mean = h.log_moments().map(|(m, v)| {
            let n = h.count() as f64;
            let var = v.max(MIN_LOG_VAR);
            let s2 = var / n;
            // Tuned for the baseline's own size: the bound is computed once.
            let tau2 = msprt::kappa(each) * s2;
            let hw = msprt::half_width(s2, tau2, each);
            [m - hw, m + hw]
        });
        let r = Reference {
            rate,
            log_mean,
            requests: rollout_base.requests,
            latencies: h.count(),
        };
        self.stage.reference = Some(r);
        r
    }

    /// Level of the error test (its Bonferroni share, or the averaged
    /// level under `average`, for its interval).
    fn e_alpha(&self) -> f64 {
        match self.budget.combine {
            Combine::Bonferroni => self.budget.per_test(),
            Combine::Average => self.budget.averaged(),
        }
    }

    /// Level of the latency mean test, for its tuning and interval.
    fn mean_alpha(&self) -> f64 {
        match self.budget.combine {
            Combine::Bonferroni => self.budget.mean_alpha(),
            Combine::Average => self.budget.averaged(),
        }
    }

    fn errors_two_sample(&mut self, b: &VersionStats, c: &VersionStats) -> Look {
        let k = self.opts.k;
        let n = (b.requests, c.requests);
        if b.requests == 0 || c.requests == 0 {
            return Look::nothing(n, "no requests on one side yet");
        }
        let rho = c.requests as f64 / (b.requests + c.requests) as f64;
        let (eb, ec) = (b.errors as f64, c.errors as f64);
        // Against a margin: under "canary rate ≤ r × baseline rate" an error
        // is the canary's with probability at most ρ' = ρr / (ρr + 1 − ρ).
        let ratio = self.error_margin(eb / b.requests as f64);
        let rho_null = if ratio > 1.0 {
            (rho * ratio / (rho * ratio + 1.0 - rho)).min(1.0 - 1e-12)
        } else {
            rho
        };
        let ln_e = count::log_e(eb, ec, rho_null, k, self.opts.one_sided);
        let harm = ec * (1.0 - rho_null) > eb * rho_null;
        let cs = count::rate_ratio_interval(eb, ec, rho, k, self.e_alpha());
        let iv = intersect(self.stage.rate_ratio, cs);
        self.stage.rate_ratio = Some(iv);
        Look {
            ln_e,
            harm,
            interval: Some(iv),
            n,
            detail: format!(
                "errors canary {}/{} vs baseline {}/{} (canary share of requests {:.4}){}",
                c.errors,
                c.requests,
                b.errors,
                b.requests,
                rho,
                margin_note(ratio)
            ),
        }
    }

    fn errors_one_sample(&mut self, r: &Reference, c: &VersionStats) -> Look {
        let k = self.opts.k;
        let n = (r.requests, c.requests);
        let p0 = r.rate[1];
        if r.requests == 0 || c.requests == 0 || !(p0 > 0.0 && p0 < 1.0) {
            return Look::nothing(n, "no baseline error rate to compare with");
        }
        let (x, m) = (c.errors as f64, c.requests as f64);
        let margin = self.error_margin(p0);
        let p_null = if margin > 1.0 {
            (p0 * margin).min(1.0 - 1e-12)
        } else {
            p0
        };
        let ln_e = count::log_e(m - x, x, p_null, k, true);
        let harm = x > m * p_null;
        let pc = count::rate_interval(x, m, k, self.e_alpha());
        let ratio = [
            pc[0] / r.rate[1],
            if r.rate[0] > 0.0 {
                pc[1] / r.rate[0]
            } else {
                f64::INFINITY
            },
        ];
        let iv = intersect(self.stage.rate_ratio, ratio);
        self.stage.rate_ratio = Some(iv);
        Look {
            ln_e,
            harm,
            interval: Some(iv),
            n,
            detail: format!(
                "100 %: canary errors {}/{} against the baseline rate's upper bound {:.5} (from {} earlier baseline requests){}",
                c.errors, c.requests, p0, r.requests, margin_note(margin)
            ),
        }
    }

    fn latency_two_sample(
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
        let w = (stage.weight / 100.0).clamp(1e-6, 1.0 - 1e-6);
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

    fn latency_one_sample(&mut self, stage: &Stage, r: &Reference, c: &LatencyHistogram) -> Look {
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

    /// The harmless canary/baseline error-rate ratio at a baseline rate
    /// (1: none; one-sided tests only).
    fn error_margin(&self, baseline_rate: f64) -> f64 {
        if self.opts.one_sided {
            self.margins.error_ratio(baseline_rate)
        } else {
            1.0
        }
    }

    /// The harmless shift of mean ln latency for a baseline mean ln
    /// latency `ln_base` (0: none; one-sided tests only).
    fn latency_margin(&self, ln_base: f64) -> f64 {
        if self.opts.one_sided {
            self.margins.latency_log_shift(ln_base.exp())
        } else {
            0.0
        }
    }

    /// One look of the mean test: `d` the estimated difference, tested
    /// against `margin` (harm is `d > margin`); the interval is `d`'s.
    #[allow(clippy::too_many_arguments)]
    fn latency_look(
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

    fn evidence(
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
}

/// The judge's protocol (see the crate docs): the engine's `Judge` trait
/// calls these.
impl SequentialJudge {
    /// Which judge this is.
    pub fn kind(&self) -> JudgeKind {
        JudgeKind::Sequential
    }

    /// Stage `index` begins with `stage`'s settings: resets per-stage state.
    pub fn start_stage(&mut self, index: usize, _stage: &Stage) {
        if index == 0 {
            self.past_ln_e_err = 0.0;
            self.past_ln_e_lat = 0.0;
            self.max_ln_e_err = 0.0;
            self.max_ln_e_lat = 0.0;
            self.min_p_dist = 1.0;
        } else {
            self.past_ln_e_err += self.stage.ln_e_err;
            self.past_ln_e_lat += self.stage.ln_e_lat;
        }
        self.stage = StageState::default();
    }

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        let c = &obs.stage.canary;
        let full = stage.weight >= 100.0;
        let (err, lat, dist_base) = if full {
            let r = self.reference(&obs.rollout.baseline);
            (
                self.errors_one_sample(&r, c),
                self.latency_one_sample(stage, &r, &c.latency),
                &obs.rollout.baseline,
            )
        } else {
            let b = &obs.stage.baseline;
            (
                self.errors_two_sample(b, c),
                self.latency_two_sample(stage, &b.latency, &c.latency),
                b,
            )
        };
        if let Some(l) = err.ln_e {
            self.stage.ln_e_err = l;
        }
        if let Some(l) = lat.ln_e {
            self.stage.ln_e_lat = l;
        }
        let (le, ll) = (self.ln_e_errors(), self.ln_e_latency());
        self.max_ln_e_err = self.max_ln_e_err.max(le);
        self.max_ln_e_lat = self.max_ln_e_lat.max(ll);

        let budget = self.budget;
        let e_alpha = self.e_alpha();
        let thr_e = (1.0 / budget.per_test()).ln();
        let l_alpha = self.mean_alpha();
        let thr_l = (1.0 / budget.mean_alpha()).ln();
        let combine = budget.describe();
        let ok_size = c.requests >= stage.min_requests.max(1);
        let ea = format!("{:.0} %", 100.0 * (1.0 - e_alpha));
        let la = format!("{:.0} %", 100.0 * (1.0 - l_alpha));

        let mut me = self.evidence(
            "error_rate",
            &err,
            le,
            self.max_ln_e_err,
            thr_e,
            &format!("error-rate ratio canary/baseline (confidence sequence, {ea})"),
        );
        let mut ml = self.evidence(
            "latency",
            &lat,
            ll,
            self.max_ln_e_lat,
            thr_l,
            &format!("latency ratio canary/baseline, geometric means (confidence sequence, {la})"),
        );

        // Band test on the stage's histograms.
        let alpha_d = budget.band_alpha() / self.n_stages as f64;
        let (hb, hc) = (&dist_base.latency, &c.latency);
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
            md.interval_of = Some(format!(
                "median latency ratio canary/baseline (time-uniform quantile bands at bucket edges, {:.1} %)",
                100.0 * (1.0 - alpha_d)
            ));
        }

        // Decide each test.
        let e_fail = |l: &Look, ln: f64, thr: f64| l.harm && ln >= thr;
        let mut metrics;
        match budget.combine {
            Combine::Bonferroni => {
                me.outcome = if e_fail(&err, le, thr_e) {
                    Outcome::Fail
                } else {
                    Outcome::Inconclusive
                };
                ml.outcome = if e_fail(&lat, ll, thr_l) {
                    Outcome::Fail
                } else {
                    Outcome::Inconclusive
                };
                metrics = vec![me, ml];
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
                        "mean e-value {:.3} {} 1/{:.4} = {:.1}",
                        e_of(avg),
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
                metrics = vec![me, ml, mc];
            }
        }
        md.outcome = if dist_fail {
            Outcome::Fail
        } else {
            Outcome::Inconclusive
        };
        metrics.push(md);

        let any_fail = metrics.iter().any(|m| m.outcome == Outcome::Fail);
        let tol_e = self.opts.tolerated_error_ratio;
        let tol_l = self.opts.tolerated_latency_ratio;
        for m in &mut metrics {
            let e_txt = m
                .e_value
                .map(|e| format!("e-value {e:.3}, anytime p {:.3e}", m.p_value.unwrap_or(1.0)))
                .unwrap_or_default();
            let iv = m
                .interval
                .map(|[a, b]| format!("; {} in [{a:.3}, {b:.3}]", m.name.replace('_', " ")))
                .unwrap_or_default();
            let base = std::mem::take(&mut m.reason);
            m.reason = match m.outcome {
                Outcome::Fail if m.name == "latency_distribution" => format!(
                    "canary latency distribution slower: D = {:.4} > band {:.4} (anytime p {:.3e})",
                    m.statistic.unwrap_or(0.0),
                    m.threshold.unwrap_or(0.0),
                    m.p_value.unwrap_or(1.0)
                ),
                Outcome::Fail => {
                    format!("canary worse: {e_txt} reached its threshold ({base}{iv}; {combine})")
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
                    let what = if m.name == "latency_distribution" {
                        format!(
                            "D = {:.4} within band {:.4}",
                            m.statistic.unwrap_or(0.0),
                            m.threshold.unwrap_or(0.0)
                        )
                    } else if base.is_empty() {
                        e_txt.clone()
                    } else {
                        format!("{base}; {e_txt}")
                    };
                    if !any_fail && ok_size && shown {
                        m.outcome = Outcome::Pass;
                        format!("no evidence of harm: {what}{iv}")
                    } else if !ok_size {
                        format!(
                            "waiting for {} canary requests ({} so far): {what}{iv}",
                            stage.min_requests.max(1),
                            c.requests
                        )
                    } else if !shown {
                        format!("safety not shown yet (evidence mode): {what}{iv}")
                    } else {
                        format!("{what}{iv}")
                    }
                }
            };
        }
        Verdict::from_metrics("sequential", metrics)
    }
}

#[cfg(test)]
mod tests;
