//! `canary plan`: what a policy can see at a given traffic rate, before a
//! rollout. Per stage the canary's requests and the time its
//! `min_requests` take (arithmetic), and, from quick seeded simulation, the
//! smallest error-rate and latency regressions rolled back by the end of
//! that stage in at least 90 % of runs, and how a healthy canary fares.

use rayon::prelude::*;
use serde::Serialize;

use canary_core::Policy;

use crate::evaluate::{run_once, RunEnd};
use crate::run::run_seed;
use crate::scenario::{BaselineModel, CanaryModel, Scenario};
use crate::SimError;

/// The error-rate multipliers tried, smallest first.
pub const ERROR_MULTIPLIERS: [f64; 8] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0];
/// The latency multipliers tried, smallest first.
pub const LATENCY_MULTIPLIERS: [f64; 7] = [1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0];
/// The share of runs that must roll a regression back for it to count as
/// detected.
pub const POWER: f64 = 0.9;

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Requests per second, both versions together.
    pub rate: f64,
    /// The stable version's behaviour.
    pub baseline: BaselineModel,
    /// Simulated rollouts per regression tried.
    pub runs: u64,
    /// Seed of the simulations.
    pub seed: u64,
}

/// One stage's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePlan {
    /// Stage index.
    pub index: usize,
    /// Canary weight, percent.
    pub weight: f64,
    /// Bake time, seconds.
    pub bake_seconds: f64,
    /// Timeout, seconds.
    pub timeout_seconds: f64,
    /// Canary requests per second while the stage is judged (a 100 % stage
    /// less its stable holdback).
    pub canary_rate: f64,
    /// Canary requests expected over the bake time.
    pub canary_requests_bake: f64,
    /// The stage's `min_requests`.
    pub min_requests: u64,
    /// Seconds until `min_requests` canary requests have been served.
    pub seconds_to_min_requests: f64,
    /// The smallest error-rate multiplier rolled back by the end of this
    /// stage in ≥ 90 % of runs (`None`: none tried was).
    pub detects_errors_x: Option<f64>,
    /// The same for the latency multiplier.
    pub detects_latency_x: Option<f64>,
    /// Why this stage cannot pass as written, if it cannot.
    pub warning: Option<String>,
}

/// How a healthy canary fares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthyOutcome {
    /// Share of runs promoted to 100 %.
    pub promoted: f64,
    /// Share rolled back (false alarms).
    pub rolled_back: f64,
    /// Share that ended neither (paused at a timeout, or out of time).
    pub undecided: f64,
    /// Median seconds to full promotion among the promoted runs.
    pub median_seconds_to_promotion: Option<f64>,
}

/// A policy's plan at one traffic rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The rollout's name.
    pub name: String,
    /// The judge.
    pub judge: String,
    /// Requests per second, both versions.
    pub rate: f64,
    /// The baseline's error rate.
    pub baseline_error_rate: f64,
    /// The baseline's median latency, ms.
    pub baseline_latency_median_ms: f64,
    /// Simulated rollouts per regression tried.
    pub runs: u64,
    /// Seed of the simulations.
    pub seed: u64,
    /// Per stage.
    pub stages: Vec<StagePlan>,
    /// A healthy canary.
    pub healthy: HealthyOutcome,
}

/// The warnings arithmetic alone gives for `policy` at `rate` requests per
/// second: each stage whose `min_requests` canary requests cannot arrive
/// before its timeout.
pub fn rate_warnings(policy: &Policy, rate: f64) -> Vec<(usize, String)> {
    policy
        .stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            // The stable holdback of a 100 % stage stays on stable.
            let canary = rate * s.routed_weight() / 100.0;
            let need = if canary > 0.0 {
                s.min_requests as f64 / canary
            } else {
                f64::INFINITY
            };
            let timeout = s.timeout.as_secs_f64();
            (need > timeout).then(|| {
                (
                    i,
                    format!(
                        "stage {i} ({}): at {rate} req/s the canary gets {canary:.2} req/s and \
                         needs {need:.0} s for its min_requests ({}), longer than its timeout \
                         ({timeout:.0} s): it will end by `on_inconclusive` (pause or rollback) \
                         whatever the canary does; raise the weight, the timeout, or lower \
                         min_requests",
                        s.describe_weight(),
                        s.min_requests
                    ),
                )
            })
        })
        .collect()
}

/// Plans `policy` under `cfg`; `progress` is told the runs done.
///
/// # Errors
/// What a simulation refuses (a policy that cannot finish in time).
pub fn plan(
    policy: &Policy,
    cfg: &PlanConfig,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Plan, SimError> {
    let scenario = |name: &str, canary: CanaryModel| Scenario {
        name: name.into(),
        request_rate: cfg.rate,
        baseline: cfg.baseline.clone(),
        canary,
        latency_buckets_ms: Vec::new(),
        incidents: Vec::new(),
        rate_changes: Vec::new(),
        tick_noise: None,
        version_noise: None,
        latency_tail: None,
    };
    let n_stages = policy.stages.len();
    // For each regression, per stage: runs rolled back by its end.
    let caught = |s: &Scenario, index: u64| -> Result<Vec<u64>, SimError> {
        let ends: Vec<Option<usize>> = (0..cfg.runs)
            .into_par_iter()
            .map(|i| {
                let seed = run_seed(cfg.seed, index * cfg.runs + i);
                let o = run_once(policy, s, seed)?;
                progress(1);
                Ok((o.end == RunEnd::RolledBack).then_some(o.stage))
            })
            .collect::<Result<_, SimError>>()?;
        Ok((0..n_stages)
            .map(|st| ends.iter().filter(|e| e.is_some_and(|x| x <= st)).count() as u64)
            .collect())
    };
    let smallest = |multipliers: &[f64],
                    make: &dyn Fn(f64) -> CanaryModel,
                    offset: u64|
     -> Result<Vec<Option<f64>>, SimError> {
        let mut best = vec![None; n_stages];
        for (j, &m) in multipliers.iter().enumerate() {
            let counts = caught(&scenario("plan", make(m)), offset + j as u64)?;
            for (st, &c) in counts.iter().enumerate() {
                if best[st].is_none() && c as f64 >= POWER * cfg.runs as f64 {
                    best[st] = Some(m);
                }
            }
        }
        Ok(best)
    };
    let errors = smallest(
        &ERROR_MULTIPLIERS,
        &|m| CanaryModel {
            error_multiplier: m,
            ..Default::default()
        },
        1,
    )?;
    let latency = smallest(
        &LATENCY_MULTIPLIERS,
        &|m| CanaryModel {
            latency_multiplier: m,
            ..Default::default()
        },
        100,
    )?;
    let healthy_runs: Vec<(RunEnd, f64)> = (0..cfg.runs)
        .into_par_iter()
        .map(|i| {
            let o = run_once(
                policy,
                &scenario("healthy", CanaryModel::default()),
                run_seed(cfg.seed, i),
            )?;
            progress(1);
            Ok((o.end, o.seconds))
        })
        .collect::<Result<_, SimError>>()?;
    let n = cfg.runs.max(1) as f64;
    let share = |e: RunEnd| healthy_runs.iter().filter(|(x, _)| *x == e).count() as f64 / n;
    let mut times: Vec<f64> = healthy_runs
        .iter()
        .filter(|(e, _)| *e == RunEnd::Promoted)
        .map(|(_, t)| *t)
        .collect();
    times.sort_by(f64::total_cmp);
    let median = (!times.is_empty()).then(|| times[times.len() / 2]);
    let warnings = rate_warnings(policy, cfg.rate);
    let stages = policy
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let canary_rate = cfg.rate * s.routed_weight() / 100.0;
            StagePlan {
                index: i,
                weight: s.weight,
                bake_seconds: s.bake.as_secs_f64(),
                timeout_seconds: s.timeout.as_secs_f64(),
                canary_rate,
                canary_requests_bake: canary_rate * s.bake.as_secs_f64(),
                min_requests: s.min_requests,
                seconds_to_min_requests: if canary_rate > 0.0 {
                    s.min_requests as f64 / canary_rate
                } else {
                    f64::INFINITY
                },
                detects_errors_x: errors[i],
                detects_latency_x: latency[i],
                warning: warnings
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, w)| w.clone()),
            }
        })
        .collect();
    Ok(Plan {
        name: policy.name.clone(),
        judge: policy.analysis.judge.name().to_string(),
        rate: cfg.rate,
        baseline_error_rate: cfg.baseline.error_rate,
        baseline_latency_median_ms: cfg.baseline.latency_median_ms,
        runs: cfg.runs,
        seed: cfg.seed,
        stages,
        healthy: HealthyOutcome {
            promoted: share(RunEnd::Promoted),
            rolled_back: share(RunEnd::RolledBack),
            undecided: share(RunEnd::Inconclusive),
            median_seconds_to_promotion: median,
        },
    })
}

/// The simulated rollouts [`plan`] runs under `cfg`.
pub fn runs_needed(cfg: &PlanConfig) -> u64 {
    cfg.runs * (ERROR_MULTIPLIERS.len() + LATENCY_MULTIPLIERS.len() + 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_text(
            "name: p\nstages:\n  - {weight: 1, duration: 1m}\n  - {weight: 50, duration: 2m}\n  - {weight: 100, duration: 1m}\nanalysis: {interval: 10s, min_requests: 200}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_stage_that_cannot_reach_min_requests_is_warned_about() {
        let p = policy();
        // 1 % of 5 req/s is 0.05 req/s: 200 requests take 4000 s.
        let w = rate_warnings(&p, 5.0);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, 0);
        assert!(w[0].1.contains("4000 s"), "{}", w[0].1);
        assert!(rate_warnings(&p, 10_000.0).is_empty());
    }

    #[test]
    fn more_traffic_detects_smaller_regressions_and_the_plan_is_reproducible() {
        let p = policy();
        let cfg = |rate| PlanConfig {
            rate,
            baseline: BaselineModel::default(),
            runs: 40,
            seed: 3,
        };
        let low = plan(&p, &cfg(20.0), &|_| {}).unwrap();
        let high = plan(&p, &cfg(400.0), &|_| {}).unwrap();
        let last = |pl: &Plan| {
            pl.stages
                .last()
                .unwrap()
                .detects_errors_x
                .unwrap_or(f64::INFINITY)
        };
        assert!(last(&high) < last(&low), "{high:?}\n{low:?}");
        assert!(high.stages[2].detects_errors_x.is_some(), "{high:?}");
        assert_eq!(plan(&p, &cfg(400.0), &|_| {}).unwrap(), high);
        assert!(high.healthy.promoted >= 0.9, "{:?}", high.healthy);
    }
}
