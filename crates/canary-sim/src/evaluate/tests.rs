use super::*;

fn cfg(runs: u64, seed: u64) -> EvalConfig {
    EvalConfig {
        policy: Policy::default_strategy(),
        scenarios: vec![
            Scenario::built_in("healthy").unwrap(),
            Scenario::built_in("errors-5x").unwrap(),
        ],
        judges: vec![JudgeKind::Threshold],
        runs,
        seed,
    }
}

#[test]
fn wilson_matches_published_values() {
    // Wilson (1927) / Newcombe (1998), table I: 81 of 263 → [0.2553, 0.3662];
    // 0 of 10 → [0, 0.2775].
    let [lo, hi] = wilson(81, 263);
    assert!(
        (lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4,
        "{lo} {hi}"
    );
    let [lo, hi] = wilson(0, 10);
    assert!(lo == 0.0 && (hi - 0.2775).abs() < 5e-4, "{hi}");
    assert_eq!(wilson(0, 0), [0.0, 1.0]);
}

#[test]
fn order_statistic_interval_brackets_the_quantile() {
    let v: Vec<f64> = (1..=1000).map(f64::from).collect();
    let (m, [lo, hi]) = quantile_with_ci(&v, 0.5);
    assert_eq!(m, 500.0);
    // n q ∓ 1.96 √(n q (1−q)) = 500 ∓ 31.
    assert!(
        (468.0..=470.0).contains(&lo) && (531.0..=533.0).contains(&hi),
        "{lo} {hi}"
    );
    let (p90, [lo, hi]) = quantile_with_ci(&v, 0.9);
    assert_eq!(p90, 900.0);
    assert!(lo < 900.0 && hi > 900.0);
    let one = Stat::of(vec![3.0], 1);
    assert_eq!(one.median_ci, Some([3.0, 3.0]));
    assert_eq!(one.mean_ci, Some([3.0, 3.0]));
}

#[test]
fn bootstrap_interval_of_a_mean_has_the_normal_width() {
    // 0..999 uniform-ish: sd ≈ 288.7, se ≈ 9.13, 95 % half-width ≈ 17.9.
    let v: Vec<f64> = (0..1000).map(f64::from).collect();
    let [lo, hi] = bootstrap_mean(&v, 9);
    let half = (hi - lo) / 2.0;
    assert!((half - 17.9).abs() < 3.0, "{lo} {hi}");
    assert!(lo < 499.5 && hi > 499.5);
}

#[test]
fn same_seed_same_evaluation_whatever_the_thread_count() {
    let c = cfg(40, 11);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| evaluate(&c, &|_| {})).unwrap();
    let two = pool(2).install(|| evaluate(&c, &|_| {})).unwrap();
    assert_eq!(one, two);
    let other = pool(2).install(|| evaluate(&cfg(40, 12), &|_| {})).unwrap();
    assert_ne!(one.results, other.results);
}

#[test]
fn aggregates_count_every_run_once_and_report_progress() {
    let c = cfg(30, 5);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let e = evaluate(&c, &|n| {
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(seen.into_inner(), 60);
    assert_eq!(e.results.len(), 2);
    for r in &e.results {
        assert_eq!(r.runs, 30);
        assert!((r.rolled_back + r.promoted + r.inconclusive - 1.0).abs() < 1e-12);
        assert!(r.rolled_back_ci[0] <= r.rolled_back && r.rolled_back <= r.rolled_back_ci[1]);
        let rolled = (r.rolled_back * 30.0).round() as u64;
        assert_eq!(r.rollback_stages.iter().sum::<u64>(), rolled);
        assert_eq!(r.exposure_requests.n, rolled);
        assert_eq!(r.exposure_requests_all_runs.n, 30);
    }
    let healthy = &e.results[0];
    assert_eq!(
        healthy.rolled_back_means,
        RollbackMeaning::FalseRollbackRate
    );
    // A canary with 5× the errors (5 % vs 1 %) is caught almost always, and
    // early: its exposure is far below a full rollout's.
    let bad = &e.results[1];
    assert_eq!(bad.rolled_back_means, RollbackMeaning::DetectionRate);
    assert!(bad.rolled_back > 0.9, "{}", bad.rolled_back);
    let full = healthy.exposure_requests_all_runs.median.unwrap();
    assert!(bad.exposure_requests.median.unwrap() < full / 5.0);
}

#[test]
fn ztest_results_carry_the_one_look_caveat() {
    assert!(judge_note(JudgeKind::Ztest).unwrap().contains("one look"));
    assert!(judge_note(JudgeKind::Sequential).is_none());
}

#[test]
fn the_oracle_matches_the_worked_figures() {
    let at = |name: &str| oracle_requests(&Scenario::built_in(name).unwrap(), 0.05, 0.99);
    // docs/tuning.md: KL(Bernoulli(0.02) ‖ Bernoulli(0.01)) = 0.003914 nats, 744 requests.
    assert_eq!(at("errors-2x").map(f64::round), Some(744.0));
    assert!(at("errors-5x").unwrap() < at("errors-2x").unwrap());
    assert!(at("latency-20pct").unwrap() < 100.0);
    for none in ["healthy", "memory-leak", "burst", "load-dependent"] {
        assert_eq!(at(none), None, "{none}");
    }
}
