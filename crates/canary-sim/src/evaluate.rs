//! Monte Carlo evaluation of a policy: many seeded rollouts per scenario ×
//! judge pair, run in parallel, summarised with 95 % intervals.
//!
//! # Guarantees
//! Run `r` of pair `p` (pairs numbered scenario-major, then judge) is
//! simulated from [`run_seed`]`(seed, p · runs + r)`, and its outcome is
//! stored at that index whatever thread computed it; every bootstrap has its
//! own seed derived the same way. So the same inputs give the same
//! [`Evaluation`], bit for bit, with one thread or many.
//!
//! What is measured, per pair (see STATISTICS.md, "Measures of a judge's
//! quality"):
//! - `rolled_back`, `promoted`, `inconclusive` rates with Wilson 95 %
//!   intervals. On a healthy scenario `rolled_back` is the false-rollback
//!   rate; otherwise it is the detection rate;
//! - exposure: canary requests and errors served before the rollback (over
//!   the runs that rolled back), and until the end of the rollout whatever
//!   the outcome (over all runs);
//! - time to a decision (rollback or full promotion), to a rollback, and to
//!   full promotion, in simulated seconds;
//! - the stage at which rollbacks happened.
//!
//! Means carry a percentile-bootstrap interval (seeded); medians and p90s a
//! distribution-free order-statistic interval.

use canary_core::{JudgeKind, Policy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::run::{run_seed, simulate, time_limit, SimError, SimOptions};
use crate::scenario::Scenario;

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;
/// Bootstrap resamples of a mean.
const BOOTSTRAP_RESAMPLES: usize = 400;
/// Tag mixed into the seed of bootstrap RNGs, so they never share a stream
/// with a simulated run.
const BOOTSTRAP_TAG: u64 = 0xB007_5724_9E37_79B9;

/// How one simulated rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Rolled back (or aborted) on the judge's evidence.
    RolledBack,
    /// Reached 100 % and passed.
    Promoted,
    /// Neither: paused at a stage's timeout, or stopped at a gate.
    Inconclusive,
}

/// The few numbers kept of one simulated rollout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunOutcome {
    /// How it ended.
    pub end: RunEnd,
    /// Index of the stage it ended in (the stage rolled back from, the last
    /// stage when promoted, the stage paused at).
    pub stage: usize,
    /// Simulated seconds from the start to the end.
    pub seconds: f64,
    /// Canary requests served.
    pub canary_requests: u64,
    /// Canary errors served.
    pub canary_errors: u64,
    /// Requests simulated, both versions.
    pub simulated_requests: u64,
}

/// Simulates one rollout and keeps what the evaluation needs.
///
/// # Errors
/// As [`simulate`].
pub fn run_once(policy: &Policy, scenario: &Scenario, seed: u64) -> Result<RunOutcome, SimError> {
    let sim = simulate(policy, scenario, seed, &SimOptions::default())?;
    let end = match sim.report.phase.as_str() {
        "rolled_back" | "aborted" => RunEnd::RolledBack,
        "succeeded" => RunEnd::Promoted,
        _ => RunEnd::Inconclusive,
    };
    let stage = sim
        .report
        .stages
        .last()
        .map_or(0, |s| s.index)
        .min(policy.stages.len().saturating_sub(1));
    Ok(RunOutcome {
        end,
        stage,
        seconds: sim.report.elapsed_seconds,
        canary_requests: sim.exposure.canary_requests,
        canary_errors: sim.exposure.canary_errors,
        simulated_requests: sim.simulated_requests,
    })
}

/// A rate with its Wilson 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Runs where it happened.
    pub count: u64,
    /// Of this many.
    pub runs: u64,
    /// count / runs.
    pub rate: f64,
    /// Wilson score interval, 95 %.
    pub ci: [f64; 2],
}

impl Rate {
    /// `count` of `runs`, with its Wilson interval.
    pub fn new(count: u64, runs: u64) -> Self {
        Rate {
            count,
            runs,
            rate: if runs == 0 {
                0.0
            } else {
                count as f64 / runs as f64
            },
            ci: wilson(count, runs),
        }
    }
}

/// The Wilson score 95 % interval for `k` successes in `n` trials
/// (`[0, 1]` when `n` is 0).
pub fn wilson(k: u64, n: u64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    // At k = 0 and k = n the bound is exactly 0 or 1; say so rather than
    // leave it to rounding.
    let lo = if k == 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    [lo, hi]
}

/// Mean, median and p90 of a sample, each with a 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    /// Sample size (0: every other field is absent).
    pub n: u64,
    /// Mean.
    pub mean: Option<f64>,
    /// Percentile-bootstrap interval of the mean.
    pub mean_ci: Option<[f64; 2]>,
    /// Median.
    pub median: Option<f64>,
    /// Order-statistic interval of the median.
    pub median_ci: Option<[f64; 2]>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// Order-statistic interval of the p90.
    pub p90_ci: Option<[f64; 2]>,
}

impl Stat {
    /// Summarises `values`; `seed` drives the bootstrap.
    pub fn of(mut values: Vec<f64>, seed: u64) -> Stat {
        let n = values.len();
        if n == 0 {
            return Stat {
                n: 0,
                mean: None,
                mean_ci: None,
                median: None,
                median_ci: None,
                p90: None,
                p90_ci: None,
            };
        }
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / n as f64;
        let (median, median_ci) = quantile_with_ci(&values, 0.5);
        let (p90, p90_ci) = quantile_with_ci(&values, 0.9);
        Stat {
            n: n as u64,
            mean: Some(mean),
            mean_ci: Some(bootstrap_mean(&values, seed)),
            median: Some(median),
            median_ci: Some(median_ci),
            p90: Some(p90),
            p90_ci: Some(p90_ci),
        }
    }
}

/// The `q` quantile of sorted `v` (the ⌈nq⌉-th value) and a distribution-free
/// 95 % interval: the order statistics at ranks nq ∓ z·√(nq(1−q)) (the normal
/// approximation of the binomial count of values below the quantile).
fn quantile_with_ci(v: &[f64], q: f64) -> (f64, [f64; 2]) {
    let n = v.len();
    let nf = n as f64;
    let at = |rank: f64| {
        // 1-based rank, clamped to the sample.
        let r = (rank as usize).clamp(1, n);
        v[r - 1]
    };
    let point = at((nf * q).ceil());
    let half = Z95 * (nf * q * (1.0 - q)).sqrt();
    let lo = at((nf * q - half).floor());
    let hi = at((nf * q + half).ceil() + 1.0);
    (point, [lo, hi])
}

/// Percentile-bootstrap 95 % interval of the mean of `v`, from `seed`.
fn bootstrap_mean(v: &[f64], seed: u64) -> [f64; 2] {
    let n = v.len();
    if n < 2 || v[0] == v[n - 1] {
        return [v[0], v[0]];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..n {
                s += v[rng.random_range(0..n)];
            }
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let b = BOOTSTRAP_RESAMPLES as f64;
    let lo = means[((0.025 * b).floor() as usize).min(BOOTSTRAP_RESAMPLES - 1)];
    let hi = means[((0.975 * b).ceil() as usize).min(BOOTSTRAP_RESAMPLES - 1)];
    [lo, hi]
}

/// What `rolled_back` measures for a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackMeaning {
    /// The scenario is healthy: every rollback is a false alarm.
    FalseRollbackRate,
    /// The canary is worse: a rollback is a detection.
    DetectionRate,
}

/// The summary of one scenario × judge pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairResult {
    /// Scenario name.
    pub scenario: String,
    /// Whether the scenario is healthy (canary identical to the baseline).
    pub healthy: bool,
    /// Judge name.
    pub judge: String,
    /// Runs simulated.
    pub runs: u64,
    /// What `rolled_back` is: the false-rollback or the detection rate.
    pub rolled_back_means: RollbackMeaning,
    /// Share of runs rolled back.
    pub rolled_back: f64,
    /// Its Wilson 95 % interval.
    pub rolled_back_ci: [f64; 2],
    /// Share of runs promoted to 100 %.
    pub promoted: f64,
    /// Its Wilson 95 % interval.
    pub promoted_ci: [f64; 2],
    /// Share of runs that ended neither way.
    pub inconclusive: f64,
    /// Its Wilson 95 % interval.
    pub inconclusive_ci: [f64; 2],
    /// Canary requests served before the rollback (runs that rolled back).
    pub exposure_requests: Stat,
    /// Canary errors served before the rollback (runs that rolled back).
    pub exposure_errors: Stat,
    /// Canary requests served until the rollout ended, over all runs.
    pub exposure_requests_all_runs: Stat,
    /// Canary errors served until the rollout ended, over all runs.
    pub exposure_errors_all_runs: Stat,
    /// Simulated seconds to a decision (rollback or full promotion).
    pub decision_seconds: Stat,
    /// Simulated seconds to a rollback (runs that rolled back).
    pub rollback_seconds: Stat,
    /// Simulated seconds to full promotion (runs that were promoted).
    pub promotion_seconds: Stat,
    /// Rollbacks per stage index (weight in `stage_weights`).
    pub rollback_stages: Vec<u64>,
    /// The policy's stage weights, for reading `rollback_stages`.
    pub stage_weights: Vec<f64>,
    /// The information limit, for a constant regression: the canary
    /// requests Wald's SPRT, knowing both versions exactly, needs on average
    /// to reject at the policy's alpha with 99 % power ([`oracle_requests`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_requests: Option<f64>,
    /// The median exposure of the rolled-back runs over `oracle_requests`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure_vs_oracle: Option<f64>,
    /// Requests simulated over all runs, both versions.
    pub simulated_requests: u64,
    /// A caveat about this judge's numbers, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The caveat attached to a judge's results.
pub fn judge_note(judge: JudgeKind) -> Option<&'static str> {
    match judge {
        JudgeKind::Ztest => Some(
            "ztest is a fixed-horizon test, valid for one look only; re-applied every \
             interval its false-alarm rate grows with the number of looks",
        ),
        _ => None,
    }
}

impl PairResult {
    /// Aggregates the outcomes of one pair's runs (judged by the judge
    /// `policy` names); `seed` drives the bootstraps.
    pub fn aggregate(
        scenario: &Scenario,
        policy: &Policy,
        runs: &[RunOutcome],
        seed: u64,
    ) -> PairResult {
        let n = runs.len() as u64;
        let count = |e: RunEnd| runs.iter().filter(|r| r.end == e).count() as u64;
        let rb = Rate::new(count(RunEnd::RolledBack), n);
        let pr = Rate::new(count(RunEnd::Promoted), n);
        let inc = Rate::new(count(RunEnd::Inconclusive), n);
        let pick = |f: &dyn Fn(&RunOutcome) -> Option<f64>| -> Vec<f64> {
            runs.iter().filter_map(f).collect()
        };
        let rolled = |r: &RunOutcome| r.end == RunEnd::RolledBack;
        let s = |i: u64| run_seed(seed ^ BOOTSTRAP_TAG, i);
        let mut stages = vec![0u64; policy.stages.len()];
        for r in runs.iter().filter(|r| rolled(r)) {
            if let Some(c) = stages.get_mut(r.stage) {
                *c += 1;
            }
        }
        let oracle = oracle_requests(scenario, policy.analysis.alpha, 0.99);
        let exposure = Stat::of(
            pick(&|r| rolled(r).then_some(r.canary_requests as f64)),
            s(0),
        );
        let vs_oracle = oracle.zip(exposure.median).map(|(o, m)| m / o);
        PairResult {
            scenario: scenario.name.clone(),
            healthy: scenario.is_healthy(),
            judge: policy.analysis.judge.name().to_string(),
            runs: n,
            rolled_back_means: if scenario.is_healthy() {
                RollbackMeaning::FalseRollbackRate
            } else {
                RollbackMeaning::DetectionRate
            },
            rolled_back: rb.rate,
            rolled_back_ci: rb.ci,
            promoted: pr.rate,
            promoted_ci: pr.ci,
            inconclusive: inc.rate,
            inconclusive_ci: inc.ci,
            exposure_requests: exposure,
            exposure_errors: Stat::of(pick(&|r| rolled(r).then_some(r.canary_errors as f64)), s(1)),
            exposure_requests_all_runs: Stat::of(pick(&|r| Some(r.canary_requests as f64)), s(2)),
            exposure_errors_all_runs: Stat::of(pick(&|r| Some(r.canary_errors as f64)), s(3)),
            decision_seconds: Stat::of(
                pick(&|r| (r.end != RunEnd::Inconclusive).then_some(r.seconds)),
                s(4),
            ),
            rollback_seconds: Stat::of(pick(&|r| rolled(r).then_some(r.seconds)), s(5)),
            promotion_seconds: Stat::of(
                pick(&|r| (r.end == RunEnd::Promoted).then_some(r.seconds)),
                s(6),
            ),
            rollback_stages: stages,
            stage_weights: policy.stages.iter().map(|s| s.weight).collect(),
            oracle_requests: oracle,
            exposure_vs_oracle: vs_oracle,
            simulated_requests: runs.iter().map(|r| r.simulated_requests).sum(),
            note: judge_note(policy.analysis.judge).map(str::to_string),
        }
    }
}

/// The information limit of a scenario with a constant regression (an
/// error-rate and/or latency multiplier, nothing that changes with time or
/// weight): the expected canary requests of Wald's SPRT, which knows both
/// versions exactly, to reject "no regression" at `alpha` with power
/// `power`: ((1−β)·ln((1−β)/α) + β·ln(β/(1−α))) / KL, where KL is the
/// Kullback–Leibler divergence per canary request, Bernoulli error rates
/// plus log-normal latencies ((ln m)²/2σ²). No test that must also measure
/// the baseline can do better on average. `None` for a healthy or
/// time-varying scenario.
pub fn oracle_requests(scenario: &Scenario, alpha: f64, power: f64) -> Option<f64> {
    let c = &scenario.canary;
    let constant = c.error_growth_per_minute == 0.0 && c.burst.is_none() && c.load_fault.is_none();
    if !constant || scenario.is_healthy() {
        return None;
    }
    let p0 = scenario.baseline.error_rate;
    let p1 = (p0 * c.error_multiplier).min(1.0);
    let kl_err = if c.error_multiplier == 1.0 {
        0.0
    } else if p0 <= 0.0 || p1 >= 1.0 {
        return None;
    } else {
        p1 * (p1 / p0).ln() + (1.0 - p1) * ((1.0 - p1) / (1.0 - p0)).ln()
    };
    let sigma = scenario.baseline.latency_sigma;
    let kl_lat = if c.latency_multiplier == 1.0 || sigma <= 0.0 {
        0.0
    } else {
        c.latency_multiplier.ln().powi(2) / (2.0 * sigma * sigma)
    };
    let kl = kl_err + kl_lat;
    let beta = 1.0 - power;
    let num = power * (power / alpha).ln() + beta * (beta / (1.0 - alpha)).ln();
    (kl > 0.0).then(|| num / kl)
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The policy every run follows (its own judge setting is ignored: each
    /// pair uses its judge).
    pub policy: Policy,
    /// Scenarios, in report order.
    pub scenarios: Vec<Scenario>,
    /// Judges, in report order.
    pub judges: Vec<JudgeKind>,
    /// Runs per scenario × judge pair.
    pub runs: u64,
    /// Seed of the whole evaluation.
    pub seed: u64,
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The policy's name.
    pub policy: String,
    /// Its stage weights.
    pub stage_weights: Vec<f64>,
    /// The statistical judges' false-alarm level.
    pub alpha: f64,
    /// The seed that reproduces every number.
    pub seed: u64,
    /// Runs per pair.
    pub runs: u64,
    /// Caveats about the results.
    pub notes: Vec<String>,
    /// One entry per scenario × judge pair, scenario-major.
    pub results: Vec<PairResult>,
}

impl Evaluation {
    /// Rollouts simulated.
    pub fn rollouts(&self) -> u64 {
        self.results.iter().map(|r| r.runs).sum()
    }

    /// Requests simulated, both versions, all runs.
    pub fn simulated_requests(&self) -> u64 {
        self.results.iter().map(|r| r.simulated_requests).sum()
    }
}

/// Runs the evaluation on the current rayon pool, calling `progress(n)` as
/// every `n` more runs finish (from any thread).
///
/// # Errors
/// [`SimError::TooMuchWork`] for a scenario × policy pair that cannot be
/// simulated in reasonable time (checked before any run);
/// [`SimError::Transition`] if the state machine refuses an event (a bug).
pub fn evaluate(cfg: &EvalConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<Evaluation, SimError> {
    // One policy per judge: the judge a run uses is its policy's.
    let policies: Vec<Policy> = cfg
        .judges
        .iter()
        .map(|&j| {
            let mut p = cfg.policy.clone();
            p.analysis.judge = j;
            p
        })
        .collect();
    let pairs: Vec<(usize, &Scenario, &Policy)> = cfg
        .scenarios
        .iter()
        .flat_map(|s| policies.iter().map(move |p| (s, p)))
        .enumerate()
        .map(|(i, (s, p))| (i, s, p))
        .collect();
    // Refuse work that cannot finish before any run starts.
    for &(_, scenario, policy) in &pairs {
        time_limit(policy, scenario)?;
    }
    let runs = cfg.runs;
    let total = pairs.len() as u64 * runs;
    // Runs report progress in chunks so the callback stays cheap.
    const CHUNK: u64 = 64;
    let outcomes: Vec<RunOutcome> = (0..total.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let range = c * CHUNK..((c + 1) * CHUNK).min(total);
            let len = range.end - range.start;
            let out = range
                .map(|i| {
                    let (_, scenario, policy) = pairs[(i / runs) as usize];
                    run_once(policy, scenario, run_seed(cfg.seed, i))
                })
                .collect::<Result<Vec<_>, _>>();
            progress(len);
            out
        })
        .collect::<Result<Vec<Vec<_>>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let results = pairs
        .par_iter()
        .map(|&(p, scenario, policy)| {
            let slice = &outcomes[(p as u64 * runs) as usize..((p as u64 + 1) * runs) as usize];
            PairResult::aggregate(scenario, policy, slice, run_seed(cfg.seed, p as u64))
        })
        .collect();
    let mut notes = vec![
        "rolled_back is the false-rollback rate on healthy scenarios and the detection rate \
         on the others"
            .to_string(),
        "exposure_* count what the canary served before the rollback, over the runs that \
         rolled back; exposure_*_all_runs count what it served until the rollout ended, \
         over all runs"
            .to_string(),
    ];
    for &j in &cfg.judges {
        if let Some(n) = judge_note(j) {
            notes.push(n.to_string());
        }
    }
    Ok(Evaluation {
        policy: cfg.policy.name.clone(),
        stage_weights: cfg.policy.stages.iter().map(|s| s.weight).collect(),
        alpha: cfg.policy.analysis.alpha,
        seed: cfg.seed,
        runs,
        notes,
        results,
    })
}

#[cfg(test)]
mod tests;
