//! The binary, run as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn canary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(args)
        .output()
        .expect("the canary binary runs")
}

fn file(name: &str, text: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn simulate_same_seed_same_bytes_other_seed_other_bytes() {
    let args = |seed: &'static str| {
        [
            "simulate",
            "--judge",
            "threshold",
            "--scenario",
            "errors-2x",
            "--seed",
            seed,
        ]
    };
    let a = canary(&args("42"));
    let b = canary(&args("42"));
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
    let one = canary(&args("1"));
    let two = canary(&args("2"));
    assert_ne!(one.stdout, two.stdout);
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    for key in [
        "phase",
        "stages_completed",
        "total_stages",
        "rollback_reason",
        "stages",
        "decisions",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let stage = &v["stages"][0];
    for key in ["weight", "verdict", "decision"] {
        assert!(stage.get(key).is_some(), "stage lacks {key}");
    }
    for key in [
        "requests",
        "errors",
        "error_rate",
        "latency_p50_ms",
        "latency_p99_ms",
    ] {
        assert!(stage["canary"].get(key).is_some(), "canary lacks {key}");
        assert!(stage["baseline"].get(key).is_some(), "baseline lacks {key}");
    }
}

#[test]
fn validate_names_the_non_increasing_weight() {
    let f = file(
        "bad-weights.yaml",
        "name: x\nstages:\n  - {weight: 50, duration: 1m}\n  - {weight: 25, duration: 1m}\n  - {weight: 100, duration: 1m}\n",
    );
    let o = canary(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("stages[1].weight"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn validate_names_an_empty_stage_list() {
    let f = file("empty.yaml", "name: x\nstages: []\n");
    let o = canary(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("stages (line 2)"), "{}", stderr(&o));
}

#[test]
fn validate_lists_every_error() {
    let f = file(
        "many.yaml",
        "name: x\nstages:\n  - {weight: 0, duration: 0s}\n  - {weight: 150, duration: 1m}\n",
    );
    let o = canary(&["validate", f.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(err.contains("3 error(s)"), "{err}");
}

#[test]
fn validate_accepts_the_examples() {
    for ex in ["checkout.yaml", "checkout.json"] {
        let o = canary(&["validate", &example(ex)]);
        assert!(o.status.success(), "{ex}: {}", stderr(&o));
        assert!(stdout(&o).starts_with("ok"), "{}", stdout(&o));
    }
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let f = file(
        "typo.yaml",
        "name: x\nstages: [{weight: 10, duraton: 1m}]\n",
    );
    let o = canary(&["simulate", "--spec", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stages[0]"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let o = canary(&["simulate", "--scenario", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("errors-2x"),
        "lists the built-ins: {}",
        stderr(&o)
    );

    let o = canary(&["simulate", "--judge", "vibes"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sequential"), "{}", stderr(&o));

    let o = canary(&["validate", "/no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn scenario_files_work() {
    let o = canary(&[
        "simulate",
        "--judge",
        "threshold",
        "--scenario",
        &example("slow-leak.scenario.yaml"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scenario"], "slow-leak");
}

#[test]
fn help_has_examples() {
    for sub in ["simulate", "validate"] {
        let o = canary(&[sub, "--help"]);
        assert!(o.status.success());
        assert!(stdout(&o).contains("Examples:"), "{sub}");
    }
}

#[test]
fn plan_warns_about_a_stage_that_cannot_decide_and_is_reproducible() {
    let spec = file(
        "plan-low.yaml",
        "name: low\nstages: [{weight: 1, duration: 5m}, {weight: 100, duration: 5m}]\nanalysis: {expected_rate: 5}\n",
    );
    let spec = spec.to_str().unwrap();
    let args = [
        "plan", "--spec", spec, "--rate", "5", "--runs", "20", "--json",
    ];
    let o = canary(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: stage 0 (1 %)"),
        "{}",
        stderr(&o)
    );
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["stages"][0]["seconds_to_min_requests"], 2000.0);
    assert!(plan["stages"][0]["warning"].is_string());
    assert!(plan["stages"][1]["warning"].is_null());
    // Nothing passes stage 0 at 5 req/s: no healthy canary is promoted.
    assert_eq!(plan["healthy"]["promoted"], 0.0);
    assert_eq!(canary(&args).stdout, o.stdout, "same seed, same plan");
    // validate says the same when the spec states its rate.
    let v = canary(&["validate", spec]);
    assert_eq!(v.status.code(), Some(0));
    assert!(
        stderr(&v).contains("warning: stage 0 (1 %)"),
        "{}",
        stderr(&v)
    );
    // At enough traffic nothing is warned about and a healthy canary passes.
    let o = canary(&["plan", "--spec", spec, "--rate", "500", "--runs", "20"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("healthy canary: promoted"),
        "{}",
        stdout(&o)
    );
    let o = canary(&["plan", "--rate", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--rate 0"), "{}", stderr(&o));
}
