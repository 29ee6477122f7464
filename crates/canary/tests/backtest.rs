//! `canary backtest` over a recorded history: the test writes an hour of
//! OpenMetrics text for two services (one whose canary's error rate jumps at
//! a known minute, one healthy), builds TSDB blocks from it with `promtool
//! tsdb create-blocks-from openmetrics`, starts a real Prometheus on them and
//! replays the past.
//!
//! Without Prometheus installed the tests say "skipped" and pass; CI sets
//! `CANARY_REQUIRE_PROMETHEUS=1`, where a missing binary fails.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{free_port, prometheus_binary, scratch, Prometheus};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
/// One sample every 10 s for an hour.
const STEP: u64 = 10;
const SAMPLES: u64 = 360;

/// The minute the bad canary starts failing.
const JUMP_MINUTE: u64 = 12;

/// Cumulative counts per sample, deterministic: the stable version serves
/// 20 requests/s with 0.5 % errors, the canary 5/s with 0.5 % errors (for
/// `app="bad"` 10 % from `JUMP_MINUTE` on). Every request is fast: half
/// under 10 ms, 90 % under 50 ms, all under 250 ms.
fn history() -> String {
    let mut out = String::from("# TYPE http_requests counter\n");
    let mut hist = String::from("# TYPE http_request_duration_seconds histogram\n");
    let mut sessions = String::from("# TYPE sessions counter\n");
    let mut checkouts = String::from("# TYPE checkouts counter\n");
    let mut memory = String::from("# TYPE memory_bytes gauge\n");
    // Business counters and a memory gauge for every app: 30 % of sessions
    // check out, memory stays at 400 MB; from `JUMP_MINUTE` on, `conv`'s
    // canary converts 15 %, `mem`'s canary uses 2 GB.
    for app in ["bad", "good", "conv", "mem"] {
        let (mut ss, mut sc, mut cs, mut cc) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..=SAMPLES {
            let t = T0 + i * STEP;
            let after = i * STEP >= JUMP_MINUTE * 60;
            for (v, n, k) in [("stable", ss, sc), ("canary", cs, cc)] {
                let _ = writeln!(
                    sessions,
                    "sessions_total{{app=\"{app}\",version=\"{v}\"}} {n} {t}"
                );
                let _ = writeln!(
                    checkouts,
                    "checkouts_total{{app=\"{app}\",version=\"{v}\"}} {k} {t}"
                );
                let mb = if app == "mem" && v == "canary" && after {
                    2000
                } else {
                    400
                };
                let _ = writeln!(
                    memory,
                    "memory_bytes{{app=\"{app}\",version=\"{v}\"}} {} {t}",
                    mb * 1_000_000
                );
            }
            ss += 100;
            sc += 30;
            cs += 20;
            cc += if app == "conv" && after { 3 } else { 6 };
        }
    }
    for app in ["bad", "good"] {
        let (mut sr, mut se, mut cr, mut ce) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..=SAMPLES {
            let t = T0 + i * STEP;
            for (v, code, n) in [
                ("stable", "200", sr - se),
                ("stable", "500", se),
                ("canary", "200", cr - ce),
                ("canary", "500", ce),
            ] {
                let _ = writeln!(
                    out,
                    "http_requests_total{{app=\"{app}\",version=\"{v}\",code=\"{code}\"}} {n} {t}"
                );
            }
            for (v, n) in [("stable", sr), ("canary", cr)] {
                for (le, part) in [
                    ("0.01", n / 2),
                    ("0.05", n * 9 / 10),
                    ("0.25", n),
                    ("+Inf", n),
                ] {
                    let _ = writeln!(
                        hist,
                        "http_request_duration_seconds_bucket{{app=\"{app}\",version=\"{v}\",le=\"{le}\"}} {part} {t}"
                    );
                }
                let _ = writeln!(
                    hist,
                    "http_request_duration_seconds_sum{{app=\"{app}\",version=\"{v}\"}} {} {t}",
                    n as f64 * 0.02
                );
                let _ = writeln!(
                    hist,
                    "http_request_duration_seconds_count{{app=\"{app}\",version=\"{v}\"}} {n} {t}"
                );
            }
            sr += 200;
            se += 1;
            cr += 50;
            if app == "bad" && i * STEP >= JUMP_MINUTE * 60 {
                ce += 5;
            } else if i % 4 == 0 {
                ce += 1;
            }
        }
    }
    out.push_str(&hist);
    out.push_str(&sessions);
    out.push_str(&checkouts);
    out.push_str(&memory);
    out.push_str("# EOF\n");
    out
}

/// Prometheus serving the history, or `None` (skipped) without it.
fn prometheus_on_history(name: &str) -> Option<(Prometheus, PathBuf)> {
    let bin = prometheus_binary()?;
    let promtool = bin.with_file_name("promtool");
    assert!(promtool.exists(), "{} is missing", promtool.display());
    let dir = scratch(name);
    std::fs::write(dir.join("history.om"), history()).unwrap();
    let built = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(dir.join("history.om"))
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let prom = Prometheus::on_history(&bin, &dir, free_port());
    Some((prom, dir))
}

const STAGES: &str = "\
stages:
  - {weight: 20, duration: 10m}
  - {weight: 50, duration: 10m}
  - {weight: 100, duration: 5m}
analysis: {interval: 1m, min_requests: 100}
";

fn write_spec(dir: &Path, file: &str, app: &str, prometheus: &str, extra: &str) -> PathBuf {
    let text = format!(
        "name: {app}\n{STAGES}metrics:\n  provider: prometheus\n  prometheus:\n    \
         address: {prometheus}\n    preset: http\n    labels: {{app: {app}}}\n{extra}"
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn backtest(spec: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .arg("backtest")
        .arg("--spec")
        .arg(spec)
        .args(args)
        .output()
        .unwrap()
}

const HOUR: [&str; 4] = [
    "--from",
    "2026-01-01T00:00:00Z",
    "--to",
    "2026-01-01T01:00:00Z",
];

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_backtest_rolls_back_where_the_history_went_bad_and_promotes_a_healthy_one() {
    let Some((prom, dir)) = prometheus_on_history("backtest-verdicts") else {
        return;
    };
    let args: Vec<&str> = HOUR
        .iter()
        .copied()
        .chain(["--json", "--timeline"])
        .collect();

    let bad = json(&backtest(
        &write_spec(&dir, "bad.yaml", "bad", &prom.url(), ""),
        &args,
    ));
    assert_eq!(bad["phase"], "rolled_back", "{bad}");
    // The jump is at minute 12, in the second stage (minutes 10–20); the
    // judge looks once a minute and needs a few looks of evidence.
    let at = bad["elapsed_seconds"].as_f64().unwrap();
    assert!(
        at > (JUMP_MINUTE * 60) as f64 && at <= ((JUMP_MINUTE + 5) * 60) as f64,
        "rolled back at {at} s"
    );
    assert_eq!(bad["stages_completed"], 1, "{bad}");
    assert_eq!(bad["final_weight"], 0.0);
    assert!(
        bad["rollback_reason"]
            .as_str()
            .unwrap()
            .contains("error_rate"),
        "{bad}"
    );
    // Before the jump every look passed or was inconclusive on the same
    // numbers the history holds: 5 canary requests/s over a 1 m window.
    let first = &bad["timeline"][0];
    assert_eq!(first["weight"], 20.0);
    let canary = first["canary"]["requests"].as_u64().unwrap();
    assert!((250..=350).contains(&canary), "{first}");

    let good = json(&backtest(
        &write_spec(&dir, "good.yaml", "good", &prom.url(), ""),
        &args,
    ));
    assert_eq!(good["phase"], "succeeded", "{good}");
    assert_eq!(good["final_weight"], 100.0);
    // Promoted when the last stage's bake time was over: 25 minutes.
    assert_eq!(good["elapsed_seconds"], 1500.0, "{good}");
    assert_eq!(good["from"], "2026-01-01T00:00:00Z");

    // The text summary gives the decisions at their times in the past.
    let text = backtest(&dir.join("bad.yaml"), &HOUR);
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(
        summary.contains("2026-01-01T00:10:00Z  advance"),
        "{summary}"
    );
    assert!(
        summary.contains("would have rolled back at 2026-01-01T00:1"),
        "{summary}"
    );
}

#[test]
fn a_history_too_short_for_the_rollout_ends_where_it_stood() {
    let Some((prom, dir)) = prometheus_on_history("backtest-short") else {
        return;
    };
    let spec = write_spec(&dir, "good.yaml", "good", &prom.url(), "");
    let out = json(&backtest(
        &spec,
        &["--from", "1767225600", "--to", "1767226500", "--json"],
    ));
    assert_eq!(out["phase"], "progressing", "{out}");
    assert_eq!(out["final_weight"], 50.0, "{out}");
    assert!(
        out["ended_early"]
            .as_str()
            .unwrap()
            .contains("2026-01-01T00:15:00Z"),
        "{out}"
    );
}

#[test]
fn bad_backtests_are_clear_errors() {
    let dir = scratch("backtest-errors");
    let port = free_port();
    // Nothing listens there.
    let spec = write_spec(
        &dir,
        "s.yaml",
        "bad",
        &format!("http://127.0.0.1:{port}"),
        "",
    );
    let out = backtest(&spec, &HOUR);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    // Times that do not parse, or a period shorter than one look.
    for (from, to, says) in [
        ("yesterday", "now", "--from `yesterday`"),
        ("now-1h", "now-1h", "at least one analysis.interval"),
        ("now-xyz", "now", "not a duration"),
    ] {
        let out = backtest(&spec, &["--from", from, "--to", to]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{says}: {err}");
    }

    // A spec without a Prometheus section and no --prometheus.
    let plain = dir.join("plain.yaml");
    std::fs::write(&plain, format!("name: p\n{STAGES}")).unwrap();
    let out = backtest(&plain, &HOUR);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prometheus URL"));
}

#[test]
fn a_promql_syntax_error_fails_the_backtest_before_it_reads_anything() {
    let Some((prom, dir)) = prometheus_on_history("backtest-bad-query") else {
        return;
    };
    let spec = dir.join("q.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: q\n{STAGES}metrics:\n  provider: prometheus\n  prometheus:\n    address: {}\n    \
             requests: 'sum(increase(http_requests_total{{version=\"$version\"}}[$window])'\n    \
             errors: 'sum(increase(http_requests_total{{version=\"$version\",code=\"500\"}}[$window]))'\n",
            prom.url()
        ),
    )
    .unwrap();
    let out = backtest(&spec, &HOUR);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.prometheus.requests (line 11)"),
        "{err}"
    );
    assert!(err.contains("not valid PromQL"), "{err}");
    assert!(err.contains("http_requests_total"), "{err}");
}

#[test]
fn a_backtest_judges_business_and_threshold_metrics() {
    let Some((prom, dir)) = prometheus_on_history("backtest-business") else {
        return;
    };
    let business = |app: &str| {
        format!(
            "  business:\n    - name: conversion\n      numerator: 'sum(increase(checkouts_total{{app=\"{app}\",version=\"$version\"}}[$window]))'\n      denominator: 'sum(increase(sessions_total{{app=\"{app}\",version=\"$version\"}}[$window]))'\n      direction: higher_is_better\n"
        )
    };
    let memory = |app: &str| {
        format!(
            "  thresholds:\n    - {{name: memory, query: 'max(memory_bytes{{app=\"{app}\",version=\"$version\"}})', max: 1e9, consecutive: 2}}\n"
        )
    };
    let args: Vec<&str> = HOUR.iter().copied().chain(["--json"]).collect();
    // Requests, errors and latencies of these apps are healthy: only the
    // business or threshold metric can stop them. The request counters of
    // `good` serve them all.
    let run = |name: &str, extra: String| {
        let spec = write_spec(&dir, &format!("{name}.yaml"), "good", &prom.url(), &extra);
        let text = std::fs::read_to_string(&spec).unwrap().replacen(
            "name: good",
            &format!("name: {name}"),
            1,
        );
        std::fs::write(&spec, text).unwrap();
        json(&backtest(&spec, &args))
    };
    let conv = run("conv", business("conv"));
    assert_eq!(conv["phase"], "rolled_back", "{conv}");
    let why = conv["rollback_reason"].as_str().unwrap();
    assert!(why.contains("conversion (higher_is_better"), "{why}");
    let at = conv["elapsed_seconds"].as_f64().unwrap();
    assert!(
        at > (JUMP_MINUTE * 60) as f64,
        "rolled back at {at} s, before the drop"
    );

    let same = run("conv-ok", business("good"));
    assert_eq!(same["phase"], "succeeded", "{same}");

    let mem = run("mem", memory("mem"));
    assert_eq!(mem["phase"], "rolled_back", "{mem}");
    let why = mem["rollback_reason"].as_str().unwrap();
    assert!(
        why.contains("memory: 2000000000 is outside <= 1000000000 for 2 readings"),
        "{why}"
    );

    let ok = run("mem-ok", memory("good"));
    assert_eq!(ok["phase"], "succeeded", "{ok}");
}
