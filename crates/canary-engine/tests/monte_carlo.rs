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
/// `judge` is a judge's name, or `sequential` followed by its options
/// (`sequential {across_stages: restart}`).
fn policy(judge: &str) -> Policy {
    let (name, opts) = judge.split_once(' ').unwrap_or((judge, "{}"));
    Policy::from_text(&format!(
        "name: aa\nstages:\n  - {{weight: 1, duration: 2m}}\n  - {{weight: 5, duration: 2m}}\n  - {{weight: 25, duration: 2m}}\n  - {{weight: 50, duration: 2m}}\n  - {{weight: 100, duration: 2m}}\nanalysis: {{judge: {name}, interval: 10s, alpha: {ALPHA}, min_requests: 100, margins: {{latency_ms: 0}}, judges: {{sequential: {opts}}}}}\n"
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
    let restart = "sequential {across_stages: restart, ratio_prior_sd: 1}";
    let (mut seq, mut rs, mut z) = (0, 0, 0);
    for r in 0..runs {
        seq += usize::from(rolled_back("sequential", 1000 + r as u64, 2000, &points));
        rs += usize::from(rolled_back(restart, 3000 + r as u64, 2000, &points));
        z += usize::from(rolled_back("ztest", 5000 + r as u64, 2000, &points));
    }
    let (fs, fr, fz) = (
        seq as f64 / runs as f64,
        rs as f64 / runs as f64,
        z as f64 / runs as f64,
    );
    let bound = ALPHA + 2.0 * se(ALPHA, runs);
    println!("A/A rollouts, {runs} runs: sequential {fs:.3}, sequential restarted per stage {fr:.3}, ztest every tick {fz:.3} (alpha {ALPHA}, MC s.e. at alpha {:.3})", se(ALPHA, runs));
    assert!(fs <= bound, "sequential false-alarm rate {fs} > {bound}");
    assert!(
        fr <= bound,
        "restarted sequential false-alarm rate {fr} > {bound}"
    );
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

/// One run of the count test over `stages` stages of `looks` looks each
/// (500 requests a look, baseline error rate `p`), the canary's share
/// growing 5 → 10 → 25 → 50 % (then staying at 50 %), and its error rate
/// `p × mult[stage]`. Returns whether the product of the stage e-values and
/// whether the restarted mixture (`carried` on the product) reached 1/α.
fn count_rollout(
    rng: &mut ChaCha8Rng,
    looks: usize,
    p: f64,
    mult: &[f64],
    carried: f64,
) -> (bool, bool) {
    use canary_core::spec::AcrossStages;
    use canary_stats::sequential::carry;
    let shares = [0.05, 0.10, 0.25, 0.50];
    let n = mult.len();
    let thr = (1.0 / ALPHA).ln();
    let stages = vec![1.0; n];
    let prod_w = carry::weights(AcrossStages::Product, 1.0, &stages);
    let mix_w = carry::weights(AcrossStages::Restart, carried, &stages);
    let (mut done, mut hit_p, mut hit_m) = (Vec::new(), false, false);
    for (s, m) in mult.iter().enumerate() {
        let share = shares[s.min(shares.len() - 1)];
        let (mut nb, mut nc, mut eb, mut ec) = (0u64, 0u64, 0u64, 0u64);
        let mut l = 0.0;
        for _ in 0..looks {
            let c = Binomial::new(500, share).unwrap().sample(rng);
            nc += c;
            nb += 500 - c;
            ec += Binomial::new(c, (p * m).min(1.0)).unwrap().sample(rng);
            eb += Binomial::new(500 - c, p).unwrap().sample(rng);
            let rho = nc as f64 / (nb + nc) as f64;
            l = count::log_e(eb as f64, ec as f64, rho, 100.0, true).unwrap();
            hit_p |= carry::ln_mixture(&prod_w, &done, l) >= thr;
            hit_m |= carry::ln_mixture(&mix_w, &done, l) >= thr;
        }
        done.push(l);
    }
    (hit_p, hit_m)
}

/// Issue 12: the mixture of e-processes restarted at each stage start is a
/// test supermartingale, so on A/A counts it stays at or below alpha over
/// every look of every stage, like the product.
#[test]
fn aa_counts_restarted_mixture_holds_alpha() {
    let (runs, looks) = (1500, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (mut prod, mut mix) = (0, 0);
    for _ in 0..runs {
        let (hp, hm) = count_rollout(&mut rng, looks, 0.02, &[1.0; 5], 0.5);
        prod += usize::from(hp);
        mix += usize::from(hm);
    }
    let (fp, fm) = (prod as f64 / runs as f64, mix as f64 / runs as f64);
    let bound = ALPHA + 2.0 * se(ALPHA, runs);
    println!("A/A counts, {runs} runs × 5 stages × {looks} looks: product {fp:.4}, restarted mixture {fm:.4} (bound {bound:.4})");
    assert!(fp <= bound, "product {fp}");
    assert!(fm <= bound, "restarted mixture {fm}");
}

/// Issue 12: a fault that starts in the last stage, after four healthy
/// ones. The product must first pay off the healthy stages' debt; the
/// mixture's component restarted at the last stage carries none, so it
/// catches the fault more often on the same data (McNemar: the runs only
/// the mixture caught against those only the product caught, more than
/// three standard errors apart).
#[test]
fn a_late_fault_is_caught_more_often_without_evidence_debt() {
    let (runs, looks) = (300, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (mut only_mix, mut only_prod, mut both) = (0, 0, 0);
    for _ in 0..runs {
        match count_rollout(&mut rng, looks, 0.02, &[1.0, 1.0, 1.0, 1.0, 1.3], 0.5) {
            (true, true) => both += 1,
            (false, true) => only_mix += 1,
            (true, false) => only_prod += 1,
            (false, false) => {}
        }
    }
    println!("late fault (errors ×1.3 in the last of 5 stages), {runs} runs: both caught {both}, only the restarted mixture {only_mix}, only the product {only_prod}");
    let (b, c) = (only_mix as f64, only_prod as f64);
    assert!(
        b - c > 3.0 * (b + c).sqrt().max(1.0),
        "mixture only {only_mix} vs product only {only_prod}"
    );
}
