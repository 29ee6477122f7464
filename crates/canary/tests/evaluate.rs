//! `canary evaluate`, run as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn canary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(args)
        .output()
        .expect("the canary binary runs")
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SMALL: [&str; 7] = [
    "evaluate",
    "--judge",
    "threshold",
    "--scenario",
    "healthy",
    "--scenario",
    "errors-5x",
];

#[test]
fn same_seed_same_json_with_one_and_two_threads() {
    let run = |threads: &str, seed: &str| {
        let mut args = SMALL.to_vec();
        args.extend([
            "--runs",
            "60",
            "--json",
            "--seed",
            seed,
            "--threads",
            threads,
        ]);
        let o = canary(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    let one = run("1", "9");
    let two = run("2", "9");
    assert_eq!(one, two, "the thread count changed the results");
    assert_ne!(one, run("2", "10"), "another seed gave the same results");
    let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        for key in [
            "scenario",
            "judge",
            "runs",
            "rolled_back",
            "rolled_back_ci",
            "promoted",
            "exposure_requests",
            "exposure_errors",
            "decision_seconds",
        ] {
            assert!(r.get(key).is_some(), "result lacks {key}: {r}");
        }
        assert_eq!(r["runs"], 60);
    }
    assert_eq!(results[0]["rolled_back_means"], "false_rollback_rate");
    assert_eq!(results[1]["rolled_back_means"], "detection_rate");
}

#[test]
fn table_marks_false_rollbacks_and_detections_and_the_ztest_caveat() {
    let mut args = SMALL.to_vec();
    args.extend(["--runs", "20"]);
    let o = canary(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FALSE "), "{out}");
    assert!(out.contains("DETECT "), "{out}");
    // Progress bars are for terminals: none when stderr is a pipe.
    assert!(!stderr(&o).contains("eta"), "{}", stderr(&o));
    let z = canary(&["evaluate", "--judge", "ztest", "--runs", "5"]);
    // Whether or not this build has the ztest judge, it must say what it is.
    if z.status.success() {
        assert!(String::from_utf8_lossy(&z.stdout).contains("one look"));
    } else {
        assert!(stderr(&z).contains("ztest"), "{}", stderr(&z));
    }
}

#[test]
fn bad_flags_are_refused_with_exit_2() {
    let o = canary(&["evaluate", "--judge", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown judge"), "{}", stderr(&o));
    let o = canary(&["evaluate", "--scenario", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
    let o = canary(&["evaluate", "--runs", "3", "--plot", "x.jpg"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(".png or .svg"), "{}", stderr(&o));
}

#[test]
fn plots_are_written_as_png_and_svg() {
    for name in ["eval.png", "eval.svg"] {
        let p = tmp(name);
        let _ = std::fs::remove_file(&p);
        let mut args = SMALL.to_vec();
        args.extend(["--runs", "20", "--plot", p.to_str().unwrap()]);
        let o = canary(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let bytes = std::fs::read(&p).unwrap();
        if name.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("<svg") && text.contains("errors-5x"));
        }
    }
}

#[test]
fn simulate_draws_a_timeline_plot() {
    let p = tmp("timeline.png");
    let _ = std::fs::remove_file(&p);
    let o = canary(&[
        "simulate",
        "--judge",
        "threshold",
        "--scenario",
        "errors-2x",
        "--plot",
        p.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&std::fs::read(&p).unwrap()[..4], b"\x89PNG");
}
