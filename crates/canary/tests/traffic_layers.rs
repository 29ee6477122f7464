//! `canary run` through the traffic layers users run: a real HAProxy
//! (judged on its own per-server counters) and a real nginx (judged on the
//! demo backends' /metrics, scraped), each started on free loopback ports
//! by the test and stopped by PID, in front of two `canary demo-backend`
//! processes. A bad canary is rolled back, a healthy one promoted, and
//! every weight change the report records went through the layer.
//! Without the servers installed the tests say "skipped" and pass unless
//! `CANARY_REQUIRE_HAPROXY` / `CANARY_REQUIRE_NGINX` is set (CI).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use canary_demo::launch::ChildBackend;
use canary_traffic::testing::{
    haproxy_binary, haproxy_spec, nginx_binary, nginx_spec, start_haproxy, start_nginx,
};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_canary")
}

const STAGES: &str = "stages:\n  - {weight: 20, duration: 4s}\n  - {weight: 100, duration: 2s}\n\
                      analysis: {interval: 1s, min_requests: 50}\n\
                      rollback: {mode: gradual, steps: [10, 5, 0], step_interval: 1s}\n";

/// A bad canary's rollback went 20 → 10 → 5 → 0 through the layer, each
/// step in the log.
fn assert_stepped_down(report: &serde_json::Value) {
    let steps: Vec<(String, f64)> = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("rollback"))
        })
        .map(|d| {
            (
                d["action"].as_str().unwrap_or("").to_string(),
                d["weight_after"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    let want = [
        ("rollback", 10.0),
        ("rollback_step", 5.0),
        ("rollback_step", 0.0),
    ];
    let want: Vec<(String, f64)> = want.iter().map(|(a, w)| (a.to_string(), *w)).collect();
    assert_eq!(steps, want, "{report}");
}

/// Runs `canary run --spec` on `spec` under load sent to `url`; returns
/// the exit code, the report and stderr.
fn run_under_load(dir: &Path, spec: &str, url: &str) -> (Option<i32>, serde_json::Value, String) {
    let file = dir.join("spec.yaml");
    std::fs::write(&file, spec).unwrap();
    let child = Command::new(bin())
        .args(["run", "--spec"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stop, load) = support::send_load(url);
    let out = child.wait_with_output().unwrap();
    stop.stop();
    let load = load.join().unwrap();
    assert!(load.sent > 0, "{load:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no report ({e}): {stderr}"));
    (out.status.code(), report, stderr)
}

fn weights_of(report: &serde_json::Value) -> Vec<f64> {
    report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["weight_after"].as_f64())
        .collect()
}

#[test]
fn canary_run_through_haproxy_rolls_back_a_bad_canary_and_promotes_a_good_one() {
    let Some(haproxy) = haproxy_binary() else {
        return;
    };
    for (name, errors, code, phase) in [
        ("bad", "0.2", 1, "rolled_back"),
        ("good", "0", 0, "succeeded"),
    ] {
        let dir = support::scratch(&format!("haproxy-run-{name}"));
        let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
        let canary = ChildBackend::start(bin(), "canary", &["--error-rate", errors]).unwrap();
        let server = start_haproxy(&haproxy, &dir, stable.addr(), canary.addr());
        let h = haproxy_spec(&dir);
        let spec = format!(
            "name: hap-{name}\n{STAGES}traffic:\n  provider: haproxy\n  haproxy:\n    socket: {}\n    backend: {}\n    stable: [{}]\n    canary: [{}]\n",
            h.socket, h.backend, h.stable[0], h.canary[0]
        );
        let (got, report, stderr) =
            run_under_load(&dir, &spec, &format!("http://{}/", server.addr));
        assert_eq!(report["phase"], phase, "{name}: {report}\n{stderr}");
        assert_eq!(got, Some(code), "{name}: {stderr}");
        assert!(stderr.contains("traffic through haproxy"), "{stderr}");
        // Judged on HAProxy's counters: the canary's requests were counted.
        let canary_requests: u64 = report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|st| st["canary"]["requests"].as_u64())
            .sum();
        assert!(canary_requests >= 50, "{name}: {report}");
        if phase == "rolled_back" {
            assert_eq!(report["final_weight"], 0.0, "{report}");
            assert_stepped_down(&report);
        } else {
            assert_eq!(report["final_weight"], 100.0, "{report}");
        }
        assert!(weights_of(&report).contains(&20.0), "{report}");
    }
}

#[test]
fn canary_run_through_nginx_rolls_back_a_bad_canary_and_promotes_a_good_one() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    for (name, errors, code, phase) in [
        ("bad", "0.2", 1, "rolled_back"),
        ("good", "0", 0, "succeeded"),
    ] {
        let dir = support::scratch(&format!("nginx-run-{name}"));
        let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
        let canary = ChildBackend::start(bin(), "canary", &["--error-rate", errors]).unwrap();
        let n = nginx_spec(&dir, &nginx, stable.addr(), canary.addr());
        let server = start_nginx(&nginx, &dir, &n);
        let argv = |v: &Option<Vec<String>>| {
            let quoted: Vec<String> = v.iter().flatten().map(|a| format!("\"{a}\"")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let spec = format!(
            "name: ngx-{name}\n{STAGES}traffic:\n  provider: nginx\n  nginx:\n    config: {}\n    upstream: {}\n    stable: [{}]\n    canary: [{}]\n    test_command: {}\n    reload_command: {}\n    pid_file: {}\n\
             metrics:\n  provider: scrape\n  scrape:\n    stable: [{}/metrics]\n    canary: [{}/metrics]\n    preset: http\n",
            n.config,
            n.upstream,
            n.stable[0],
            n.canary[0],
            argv(&n.test_command),
            argv(&n.reload_command),
            n.pid_file.as_deref().unwrap_or(""),
            stable.url(),
            canary.url()
        );
        let (got, report, stderr) =
            run_under_load(&dir, &spec, &format!("http://{}/", server.addr));
        assert_eq!(report["phase"], phase, "{name}: {report}\n{stderr}");
        assert_eq!(got, Some(code), "{name}: {stderr}");
        assert!(stderr.contains("traffic through nginx"), "{stderr}");
        if phase == "rolled_back" {
            assert_stepped_down(&report);
        }
        let file = std::fs::read_to_string(&n.config).unwrap();
        let want = if phase == "rolled_back" {
            "0.00 %"
        } else {
            "100.00 %"
        };
        assert!(file.contains(&format!("# canary {want}")), "{file}");
    }
}
