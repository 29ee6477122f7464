//! Seeded Monte Carlo checks of the false-alarm rate on A/A data: canary and
//! baseline are the same code, so every rollback is a false alarm.
//!
//! The sequential judge, looked at after every tick of a whole five-stage
//! rollout, must stay at or below alpha within Monte Carlo error; the
//! z-test, looked at just as often, must not. That contrast is the reason
//! the sequential judge is the default: the z-test is a fixed-horizon test,
//! valid for one look only, and every extra look is another chance of a
//! false alarm.
//!
//! Monte Carlo error: with R runs and a true rate p the estimate's standard
//! error is sqrt(p(1−p)/R). The bounds below are alpha plus two standard
//! errors at p = alpha (a one-sided 97.7 % check that the rate is ≤ alpha)
//! and, for the z-test, alpha plus four standard errors from below.

use std::time::Duration;

use canary_core::{Event, Pair, Policy, VersionStats};
use canary_engine::Engine;
use canary_stats::sequential::count;
use canary_stats::special::norm_ppf;
use canary_stats::ztest::ztest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

const ALPHA: f64 = 0.05;

fn se(p: f64, runs: usize) -> f64 {
    (p * (1.0 - p) / runs as f64).sqrt()
}

/// 256 equally likely latencies: the quantiles of lognormal(ln 100, 0.35).
fn latency_points() -> Vec<f64> {
    (0..256)
        .map(|i| (100f64.ln() + 0.35 * norm_ppf((i as f64 + 0.5) / 256.0)).exp())
        .collect()
}

/// One version's window: `n` requests at error rate `p`, latencies drawn
/// from `points` (four draws per random u64).
fn version(rng: &mut ChaCha8Rng, n: u64, p: f64, points: &[f64]) -> VersionStats {
    let mut v = VersionStats {
        requests: n,
        errors: if n == 0 {
            0
        } else {
            Binomial::new(n, p).unwrap().sample(rng)
        },
        ..Default::default()
    };
    let mut hits = [0u64; 256];
    let mut left = n;
    while left > 0 {
        let r: u64 = rng.random();
        for s in 0..left.min(4) {
            hits[((r >> (16 * s + 8)) & 0xff) as usize] += 1;
        }
        left = left.saturating_sub(4);
    }
    for (x, h) in points.iter().zip(hits) {
        v.latency.record_n(*x, h);
    }
    v
}

/// The policy of the A/A runs, with no margins: the false-alarm guarantee
/// is checked for the plain tests (a margin only makes alarms rarer).
fn policy(judge: &str) -> Policy {
    Policy::from_text(&format!(
        "name: aa\nstages:\n  - {{weight: 1, duration: 2m}}\n  - {{weight: 5, duration: 2m}}\n  - {{weight: 25, duration: 2m}}\n  - {{weight: 50, duration: 2m}}\n  - {{weight: 100, duration: 2m}}\nanalysis: {{judge: {judge}, interval: 10s, alpha: {ALPHA}, min_requests: 100, margins: {{latency_ms: 0}}}}\n"
    ))
    .unwrap()
}

/// Runs one rollout with `judge`, the canary at error rate `p_canary` and
/// latencies `canary_points`; true when it was rolled back.
fn rolled_back_with(
    judge: &str,
    seed: u64,
    per_tick: u64,
    points: &[f64],
    p_canary: f64,
    canary_points: &[f64],
) -> bool {
    let p = policy(judge);
    let mut e = Engine::new(p);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    e.apply(Event::Start, Duration::ZERO).unwrap();
    let mut t = 0;
    while !e.state().phase.is_terminal() && t < 1000 {
        t += 10;
        let w = e.state().weight / 100.0;
        let nc = Binomial::new(per_tick, w).unwrap().sample(&mut rng);
        let window = Pair {
            baseline: version(&mut rng, per_tick - nc, 0.01, points),
            canary: version(&mut rng, nc, p_canary, canary_points),
        };
        e.observe(Some(window), Duration::from_secs(t)).unwrap();
    }
    assert!(e.state().phase.is_terminal(), "the rollout ended");
    e.state().phase.name() == "rolled_back"
}

/// One A/A rollout; true when it was (falsely) rolled back.
fn rolled_back(judge: &str, seed: u64, per_tick: u64, points: &[f64]) -> bool {
    rolled_back_with(judge, seed, per_tick, points, 0.01, points)
}

/// Whole rollouts through the engine, every tick a look: 1 → 5 → 25 → 50
/// → 100 %, 12 ticks per stage, 2000 requests per tick, 1 % errors.
#[test]
fn aa_rollouts_sequential_holds_alpha_ztest_does_not() {
    let runs = 300;
    let points = latency_points();
    let (mut seq, mut z) = (0, 0);
    for r in 0..runs {
        seq += usize::from(rolled_back("sequential", 1000 + r as u64, 2000, &points));
        z += usize::from(rolled_back("ztest", 5000 + r as u64, 2000, &points));
    }
    let (fs, fz) = (seq as f64 / runs as f64, z as f64 / runs as f64);
    let bound = ALPHA + 2.0 * se(ALPHA, runs);
    println!("A/A rollouts, {runs} runs: sequential {fs:.3}, ztest every tick {fz:.3} (alpha {ALPHA}, MC s.e. at alpha {:.3})", se(ALPHA, runs));
    assert!(fs <= bound, "sequential false-alarm rate {fs} > {bound}");
    assert!(
        fz > ALPHA + 4.0 * se(ALPHA, runs),
        "the repeated z-test should exceed alpha clearly, got {fz}"
    );
}

/// The error tests alone, on counts, with more runs and looks: 200 looks of
/// 500 requests each at a 10 % canary share.
#[test]
fn aa_counts_many_looks() {
    let (runs, looks, per_look, share, p) = (2000, 200, 500u64, 0.10, 0.02);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let thr = (1.0 / ALPHA).ln();
    let (mut seq, mut z) = (0, 0);
    for _ in 0..runs {
        let (mut nb, mut nc, mut eb, mut ec) = (0u64, 0u64, 0u64, 0u64);
        let (mut s_hit, mut z_hit) = (false, false);
        for _ in 0..looks {
            let c = Binomial::new(per_look, share).unwrap().sample(&mut rng);
            nc += c;
            nb += per_look - c;
            ec += Binomial::new(c, p).unwrap().sample(&mut rng);
            eb += Binomial::new(per_look - c, p).unwrap().sample(&mut rng);
            let rho = nc as f64 / (nb + nc) as f64;
            let l = count::log_e(eb as f64, ec as f64, rho, 100.0, true).unwrap();
            s_hit |= l >= thr;
            z_hit |= ztest(eb, nb, ec, nc, ALPHA).is_some_and(|t| t.z > t.critical);
        }
        seq += usize::from(s_hit);
        z += usize::from(z_hit);
    }
    let (fs, fz) = (seq as f64 / runs as f64, z as f64 / runs as f64);
    println!("A/A counts, {runs} runs × {looks} looks: count e-process {fs:.4}, ztest {fz:.4} (MC s.e. at alpha {:.4})", se(ALPHA, runs));
    assert!(fs <= ALPHA + 2.0 * se(ALPHA, runs), "count test {fs}");
    assert!(fz > ALPHA + 4.0 * se(ALPHA, runs), "ztest {fz}");
}

/// Power, so the A/A result is not bought by never failing: the sequential
/// judge rolls back a canary with three times the error rate, or 20 %
/// slower, in nearly every run.
#[test]
fn sequential_detects_real_regressions() {
    let runs = 40;
    let points = latency_points();
    let slow: Vec<f64> = points.iter().map(|x| x * 1.2).collect();
    let errs = (0..runs)
        .filter(|r| rolled_back_with("sequential", 9000 + r, 2000, &points, 0.03, &points))
        .count();
    let lat = (0..runs)
        .filter(|r| rolled_back_with("sequential", 9500 + r, 2000, &points, 0.01, &slow))
        .count();
    println!("detection over {runs} runs: 3× errors {errs}, +20 % latency {lat}");
    assert!(errs >= 36, "3× error rate detected in {errs}/{runs}");
    assert!(lat >= 36, "+20 % latency detected in {lat}/{runs}");
}
