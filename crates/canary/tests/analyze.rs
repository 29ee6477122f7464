//! `canary analyze` end to end: the built binary on files for each exit
//! code (0 pass, 1 fail, 2 input error, 3 inconclusive).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn run(name: &str, json: &str, extra: &[&str]) -> (i32, String, String) {
    // A directory of each call's own (tests run in parallel), removed after.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("canary-analyze-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{name}.json"));
    std::fs::write(&path, json).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .arg("analyze")
        .arg("--input")
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verdict(stdout: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["verdict"].as_str().unwrap().to_string()
}

/// A samples metric with 40 values a side from the same spread.
fn latency_ok() -> String {
    let series =
        |k: usize| -> Vec<String> { (0..40).map(|i| format!("{}", 100 + (i * k) % 23)).collect() };
    format!(
        r#"{{"name": "latency_ms", "kind": "samples", "baseline": [{}], "canary": [{}]}}"#,
        series(7).join(", "),
        series(11).join(", ")
    )
}

#[test]
fn pass_exits_0() {
    let (code, out, err) = run(
        "pass",
        &format!(
            r#"{{"judge": "sequential", "alpha": 0.05, "metrics": [
            {{"name": "errors", "kind": "count", "baseline": 950, "canary": 50, "canary_share": 0.05}},
            {}]}}"#,
            latency_ok()
        ),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(verdict(&out), "pass");
}

#[test]
fn fail_exits_1_with_evidence() {
    let (code, out, err) = run(
        "fail",
        r#"{"judge": "sequential", "alpha": 0.05,
         "metrics": [
           {"name": "errors", "kind": "count", "baseline": 950, "canary": 80, "canary_share": 0.05},
           {"name": "latency_ms", "kind": "samples", "baseline": [101, 99, 130], "canary": [140, 151, 160]}]}"#,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "fail");
    let m = &v["metrics"][0];
    assert_eq!(m["name"], "errors");
    assert_eq!(m["verdict"], "fail");
    for key in ["p_value", "e_value", "interval", "reason"] {
        assert!(!m[key].is_null(), "{key} missing: {m}");
    }
}

#[test]
fn inconclusive_exits_3() {
    let (code, out, err) = run(
        "inconclusive",
        r#"{"metrics": [{"name": "errors", "kind": "count", "baseline": 0, "canary": 0, "canary_share": 0.1}]}"#,
        &[],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(verdict(&out), "inconclusive");
}

#[test]
fn bad_input_exits_2_naming_the_field() {
    let (code, out, err) = run(
        "bad",
        r#"{"metrics": [{"name": "errors", "kind": "count", "baseline": 3, "canary": "two", "canary_share": 0.1}]}"#,
        &[],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("metrics[0].canary"), "{err}");
    let (code, _, err) = run("syntax", "{\"metrics\": [", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("syntax.json"), "{err}");
    let (code, _, err) = run("judge", r#"{"metrics": []}"#, &["--judge", "nope"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn judge_flag_overrides_the_file() {
    let (code, out, err) = run(
        "kayenta",
        r#"{"judge": "sequential", "metrics": [{"name": "lat", "kind": "samples",
            "baseline": [10, 11, 12, 13, 14, 15, 16, 17], "canary": [20, 21, 22, 23, 24, 25, 26, 27]}]}"#,
        &["--judge", "kayenta"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["judge"], "kayenta");
}
