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
//! **Across stages** each e-process restarts at a stage's start (the share
//! changes). `across_stages: product` multiplies the per-stage e-values into
//! one rollout-wide e-value (a test martingale started afresh and multiplied
//! on is still one), so one alpha covers every look of every stage; but a
//! healthy early phase drives the product below 1 and a fault that starts
//! later must first pay off that debt. `across_stages: restart` uses the
//! mixture Σ_k w_k C_k, where C_k is 1 until stage k starts and the product
//! of the stage e-values since then afterwards, with weights summing to 1
//! (`carried_weight` on C_0, the product, the rest evenly on the later
//! starts): each C_k is a test supermartingale because a stage's start is a
//! stopping time, so their average is one too, and no component carries the
//! debt of the stages before its start ([`carry`], docs/judges.md). The band
//! test has no e-value; its share of alpha is split evenly over the stages.
//!
//! **Across metrics** (`combine`): `bonferroni` gives the error test α/3,
//! the latency mean test 4α/15 and the band test 2α/5 (a weighted
//! Bonferroni split, [`ROLLOUT_MEAN_WEIGHT`]: the mean test's false alarms
//! dominate on healthy canaries, the band test's are nil); `average`
//! averages the error and latency e-values (an average of e-values is an
//! e-value) at level 2α/3 and gives the band test α/3.
//!
//! **At 100 %** with a stable holdback (`analysis.holdback` > 0) the stable
//! version keeps that share of the traffic while the stage is judged: the
//! stage's routed weight is below 100 and the tests above run as at any
//! other stage, concurrent with stable, so drift that moves both versions
//! at once cancels (but the small stable share limits their power). Without
//! one (the default) the stable version gets no traffic, and the split test
//! has nothing to split. The stage then becomes a one-sample comparison of
//! the canary with the baseline seen earlier in the rollout:
//! the canary's error rate is tested against the *upper end* of the
//! baseline rate's confidence sequence (the count test as a Bernoulli test,
//! one-sided), and its mean log latency against the upper end of the
//! baseline mean's confidence sequence. Both bounds are frozen at the
//! stage's first look and hold with probability ≥ 1 − α/8 each, so when the
//! policy has a 100 % stage the judge reserves α/4 for them and runs its
//! tests at 3α/4: the rollout-wide false-alarm rate stays ≤ α. With a
//! holdback the reserve is kept, unused, so the tests run at the levels the
//! default policy was tuned at (spending it raised healthy false rollbacks
//! above target: docs/records/2026-12-07-holdback.md). The one-sample comparison assumes the baseline does not drift;
//! docs/records/2026-12-05-realism.md shows what shared drift does to it. The band test compares with the rollout's
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

use canary_core::spec::{AcrossStages, Combine, Margins, SequentialOptions};
use canary_core::{JudgeKind, Observations, Policy, Stage, Verdict, VersionStats};

pub mod band;
mod budget;
pub mod carry;
pub mod count;
mod decide;
mod errors;
mod latency;
pub mod msprt;

pub use budget::{Budget, ROLLOUT_MEAN_WEIGHT};
pub(crate) use decide::fmt_e;
use latency::MIN_LOG_VAR;

/// The count test's mixture concentration at a canary share (or null
/// rate) `rho`: the option `k`, or with `ratio_prior_sd` the k that gives
/// the Beta mixture that standard deviation of ln(rate ratio), 1/(sd² ρ(1−ρ))
/// (the logit of a Beta(kρ, k(1−ρ)) has variance ≈ 1/(kρ) + 1/(k(1−ρ))).
pub fn concentration(opts: &SequentialOptions, rho: f64) -> f64 {
    match opts.ratio_prior_sd {
        Some(sd) => {
            let r = rho.clamp(1e-9, 1.0 - 1e-9);
            (1.0 / (sd * sd * r * (1.0 - r))).clamp(1e-3, 1e12)
        }
        None => opts.k,
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
    /// Weights of the error e-processes started at each stage's start (sum
    /// 1; `product`: all on the first).
    weights: Vec<f64>,
    /// The same for the latency mean test.
    weights_lat: Vec<f64>,
    /// ln E of each finished stage, errors and latency.
    done_err: Vec<f64>,
    done_lat: Vec<f64>,
    max_ln_e_err: f64,
    max_ln_e_lat: f64,
    min_p_dist: f64,
    stage: StageState,
    /// What each test's interval is an interval of, in words: fixed by
    /// the alpha split, so written once rather than at every look.
    interval_of: IntervalOf,
}

/// The judge's fixed phrases for [`MetricEvidence::interval_of`]
/// (`canary_core::MetricEvidence`).
#[derive(Debug, Clone, Default)]
struct IntervalOf {
    errors: String,
    latency: String,
    distribution: String,
}

impl SequentialJudge {
    /// A sequential judge for `policy` (its alpha, options and stages).
    pub fn new(policy: &Policy) -> Self {
        let a = &policy.analysis;
        // The reserve for the frozen bounds is kept when the 100 % stage is
        // judged with a holdback (and the bounds are not used): spending it
        // on the tests would raise every stage's false alarms above the
        // levels the default policy was tuned at
        // (docs/records/2026-12-07-holdback.md).
        let has_full = policy.stages.iter().any(|s| s.weight >= 100.0);
        let mut j = Self::with(
            a.alpha,
            a.judges.sequential.clone(),
            policy.stages.len(),
            has_full,
        )
        .with_margins(a.margins);
        let stage_weights: Vec<f64> = policy.stages.iter().map(|s| s.routed_weight()).collect();
        j.set_carry(&stage_weights);
        j
    }

    /// Sets the mixture weights of the restarted e-processes from the
    /// stages' traffic weights (`restart` shares what the first stage's
    /// process does not carry in proportion to them).
    fn set_carry(&mut self, stage_weights: &[f64]) {
        let o = &self.opts;
        self.weights = carry::weights(o.across_stages, o.carried_weight, stage_weights);
        self.weights_lat = carry::weights(o.across_stages, o.latency_carried_weight, stage_weights);
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
        let n_stages = n_stages.max(1);
        let mut j = Self {
            opts,
            margins: Margins::ZERO,
            budget,
            n_stages,
            weights: Vec::new(),
            weights_lat: Vec::new(),
            done_err: Vec::new(),
            done_lat: Vec::new(),
            max_ln_e_err: 0.0,
            max_ln_e_lat: 0.0,
            min_p_dist: 1.0,
            stage: StageState::default(),
            interval_of: IntervalOf::default(),
        };
        j.interval_of = IntervalOf {
            errors: format!(
                "error-rate ratio canary/baseline (confidence sequence, {:.0} %)",
                100.0 * (1.0 - j.e_alpha())
            ),
            latency: format!(
                "latency ratio canary/baseline, geometric means (confidence sequence, {:.0} %)",
                100.0 * (1.0 - j.mean_alpha())
            ),
            distribution: format!(
                "median latency ratio canary/baseline (time-uniform quantile bands at bucket edges, {:.1} %)",
                100.0 * (1.0 - j.band_alpha_per_stage())
            ),
        };
        // Without the stages' weights: the restarts share evenly.
        j.set_carry(&vec![1.0; n_stages]);
        j
    }

    /// The alpha split in use.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// ln of the rollout-wide error e-value so far (the product over the
    /// stages, or the mixture of restarted products: `across_stages`).
    pub fn ln_e_errors(&self) -> f64 {
        carry::ln_mixture(&self.weights, &self.done_err, self.stage.ln_e_err)
    }

    /// ln of the rollout-wide latency e-value so far (as the errors').
    pub fn ln_e_latency(&self) -> f64 {
        carry::ln_mixture(&self.weights_lat, &self.done_lat, self.stage.ln_e_lat)
    }

    /// The count test's mixture concentration for a stage whose canary
    /// share (or, at 100 %, null error rate) is about `rho`: `k`, or the one
    /// that gives the mixture the standard deviation `ratio_prior_sd` of
    /// ln(rate ratio).
    fn k_at(&self, rho: f64) -> f64 {
        concentration(&self.opts, rho)
    }

    /// How the evidence carries across stages, in words (for the reasons).
    fn describe_carry(&self) -> String {
        match self.opts.across_stages {
            AcrossStages::Product => "e-values multiplied across stages".into(),
            AcrossStages::Restart => format!(
                "e-values mixtures of e-processes restarted at each stage start (weight {} for errors, {} for latency on the one carried from the first stage)",
                self.weights.first().copied().unwrap_or(1.0),
                self.weights_lat.first().copied().unwrap_or(1.0)
            ),
        }
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

    /// Level of the band test at each stage (its share split evenly over
    /// the stages).
    fn band_alpha_per_stage(&self) -> f64 {
        self.budget.band_alpha() / self.n_stages as f64
    }

    /// Level of the latency mean test, for its tuning and interval.
    fn mean_alpha(&self) -> f64 {
        match self.budget.combine {
            Combine::Bonferroni => self.budget.mean_alpha(),
            Combine::Average => self.budget.averaged(),
        }
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
            self.done_err.clear();
            self.done_lat.clear();
            self.max_ln_e_err = 0.0;
            self.max_ln_e_lat = 0.0;
            self.min_p_dist = 1.0;
        } else {
            self.done_err.push(self.stage.ln_e_err);
            self.done_lat.push(self.stage.ln_e_lat);
        }
        self.stage = StageState::default();
    }

    /// One look at the observations of the current stage.
    pub fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
        let c = &obs.stage.canary;
        // All traffic on the canary (a 100 % stage without a holdback):
        // compare with the baseline frozen from the earlier stages.
        let full = stage.routed_weight() >= 100.0;
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
                self.errors_two_sample(stage, b, c),
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

        let thr_e = (1.0 / self.budget.per_test()).ln();
        let thr_l = (1.0 / self.budget.mean_alpha()).ln();
        let me = self.evidence(
            "error_rate",
            &err,
            le,
            self.max_ln_e_err,
            thr_e,
            &self.interval_of.errors,
        );
        let ml = self.evidence(
            "latency",
            &lat,
            ll,
            self.max_ln_e_lat,
            thr_l,
            &self.interval_of.latency,
        );
        let md = self.distribution(&dist_base.latency, &c.latency);
        let mut metrics = self.combine((&err, me, le, thr_e), (&lat, ml, ll, thr_l));
        metrics.push(md);
        self.explain(&mut metrics, stage, c.requests);
        Verdict::from_metrics("sequential", metrics)
    }
}

#[cfg(test)]
mod tests;
