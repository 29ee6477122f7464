//! Timing harness for the judges (run by `bench/judges.sh`, release mode):
//! Mann-Whitney on 10⁶ + 10⁶ samples, the full Kayenta classification of
//! the same data, and one sequential-judge update per tick. Writes the
//! samples to the file given as the first argument (raw little-endian f64,
//! canary then baseline) so SciPy can be timed on the very same data.
//!
//! Benchmarks are benchmarks: nothing here asserts a time.
// A timing harness is a program's edge: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use canary_core::spec::KayentaOptions;
use canary_core::{Observations, Pair, Policy, VersionStats};
use canary_stats::kayenta::{classify, mann_whitney, MetricConfig};
use canary_stats::sequential::SequentialJudge;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    (median(times), last.expect("runs > 0"))
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench_mw.f64".into());
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let n = 1_000_000;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (dx, dy) = (
        LogNormal::new(4.61, 0.4).unwrap(),
        LogNormal::new(4.6, 0.4).unwrap(),
    );
    let x: Vec<f64> = (0..n).map(|_| dx.sample(&mut rng)).collect();
    let y: Vec<f64> = (0..n).map(|_| dy.sample(&mut rng)).collect();
    let mut bytes = Vec::with_capacity(16 * n);
    for v in x.iter().chain(&y) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes).expect("write the samples");

    let (t_mw, mw) = time(runs, || mann_whitney::mann_whitney(&x, &y).expect("data"));
    println!(
        "mann_whitney_1e6x1e6_seconds_median {t_mw:.4} (runs {runs}) U {} p {:.6e}",
        mw.u, mw.p_value
    );

    let opts = KayentaOptions::default();
    let cfg = MetricConfig::new("latency");
    let (t_k, r) = time(runs.min(3), || classify(&x, &y, &cfg, &opts));
    println!(
        "kayenta_classify_1e6x1e6_seconds_median {t_k:.4} (runs {}) estimate {:?} interval {:?}",
        runs.min(3),
        r.estimate,
        r.interval
    );

    // One sequential update per tick: a 10 % stage, 1000 requests a tick.
    let policy = Policy::default_strategy();
    let stage = &policy.stages[2];
    let mut judge = SequentialJudge::new(&policy);
    judge.start_stage(0, stage);
    let mut obs = Observations::new();
    let mut window = Pair::<VersionStats>::default();
    for (i, v) in x.iter().take(1000).enumerate() {
        let side = if i % 10 == 0 {
            &mut window.canary
        } else {
            &mut window.baseline
        };
        side.requests += 1;
        side.errors += u64::from(i % 97 == 0);
        side.latency.record(*v);
    }
    let ticks = 10_000;
    let mut per_tick = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..ticks {
            obs.push_window(window.clone(), stage.weight);
            std::hint::black_box(judge.judge(stage, &obs));
        }
        per_tick.push(t.elapsed().as_secs_f64() / ticks as f64 * 1e6);
    }
    println!(
        "sequential_update_per_tick_microseconds_median {:.2} (runs {runs} × {ticks} ticks, including merging the window)",
        median(per_tick)
    );
}
