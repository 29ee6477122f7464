//! Live rollouts judged on metrics the service exports itself: `canary run`
//! with `metrics.provider: prometheus` against a real Prometheus (Debian's
//! `prometheus`) scraping two real `canary demo-backend` processes, and with
//! `metrics.provider: scrape` reading the backends' `/metrics` directly.
//! Every process is started on loopback by the test and stopped by its PID.
//!
//! Without Prometheus installed its tests say "skipped" and pass, so that
//! `cargo test` works on a machine with only the Rust toolchain; CI sets
//! `CANARY_REQUIRE_PROMETHEUS=1` (and installs it), where a missing binary
//! fails.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use canary_demo::launch::ChildBackend;
use canary_demo::loadgen::{self, StopLoad};
use support::{free_port, prometheus_binary, scratch, Prometheus};

fn backend(name: &str, extra: &[&str]) -> ChildBackend {
    ChildBackend::start(env!("CARGO_BIN_EXE_canary"), name, extra).unwrap()
}

/// A `canary run` child under load from this test, its stderr followed
/// line by line.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
    stop_load: StopLoad,
    load: Option<std::thread::JoinHandle<loadgen::LoadReport>>,
}

impl Run {
    /// Starts `canary run --spec` on `spec` (its `traffic.listen` is port 0)
    /// and sends it load at 4 concurrent connections until it exits.
    fn start(dir: &Path, spec: &str) -> Self {
        let path = dir.join("rollout.yaml");
        std::fs::write(&path, spec).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(["run", "--threads", "1", "--spec"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut run = Self {
            child,
            lines,
            seen: String::new(),
            stop_load: StopLoad::new(),
            load: None,
        };
        let line = run.wait_for("proxy listening on");
        let addr = line.trim().trim_start_matches("proxy listening on http://");
        let (stop, load) = support::send_load(&format!("http://{addr}/"));
        run.stop_load = stop;
        run.load = Some(load);
        run
    }

    /// The next stderr line containing `what` (panics after 60 s or at the
    /// end of the output, with everything seen).
    fn wait_for(&mut self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(e) => panic!("no line with {what:?} ({e}); stderr so far:\n{}", self.seen),
            }
        }
    }

    /// Waits for the exit: (code, report, all of stderr).
    fn finish(mut self) -> (Option<i32>, serde_json::Value, String) {
        let mut stdout = self.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("canary run did not finish; stderr:\n{}", self.seen));
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.stop_load.stop();
        if let Some(l) = self.load.take() {
            let _ = l.join();
        }
        let report = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{}", self.seen));
        (status.code(), report, std::mem::take(&mut self.seen))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop_load.stop();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(stable: &ChildBackend, canary: &ChildBackend, stages: &str, metrics: &str) -> String {
    format!(
        "name: metrics-test\nstages:\n{stages}analysis: {{interval: 2s, min_requests: 50}}\n\
         traffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n{metrics}",
        stable.url(),
        canary.url()
    )
}

const SHORT: &str = "  - {weight: 20, duration: 4s}\n  - {weight: 100, duration: 2s}\n";

fn prometheus_metrics(url: &str, extra: &str) -> String {
    format!("metrics:\n  provider: prometheus\n  prometheus:\n    address: {url}\n{extra}")
}

const PRESET: &str = "    preset: http\n";

#[test]
fn prometheus_numbers_roll_back_a_failing_canary_and_promote_a_healthy_one() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    for (errors, want_phase, want_code) in [("0.1", "rolled_back", 1), ("0", "succeeded", 0)] {
        let dir = scratch(&format!("prom-verdict-{errors}"));
        let stable = backend("stable", &[]);
        let canary = backend("canary", &["--error-rate", errors]);
        let prom = Prometheus::start(&bin, &dir, free_port(), &[stable.addr(), canary.addr()]);
        let run = Run::start(
            &dir,
            &spec(
                &stable,
                &canary,
                SHORT,
                &prometheus_metrics(&prom.url(), PRESET),
            ),
        );
        let (code, report, stderr) = run.finish();
        assert_eq!(code, Some(want_code), "{stderr}");
        assert_eq!(report["phase"], want_phase, "{stderr}");
        assert!(stderr.contains("metrics from prometheus"), "{stderr}");
        // The judged numbers are Prometheus's: the stage saw requests of both
        // versions, and a failing canary's errors.
        let stage = &report["stages"][0];
        assert!(
            stage["baseline"]["requests"].as_u64().unwrap() > 0,
            "{report}"
        );
        assert!(
            stage["canary"]["requests"].as_u64().unwrap() > 0,
            "{report}"
        );
        if want_phase == "rolled_back" {
            assert!(stage["canary"]["errors"].as_u64().unwrap() > 0, "{report}");
            assert_eq!(report["final_weight"], 0.0);
            assert!(
                report["rollback_reason"]
                    .as_str()
                    .unwrap()
                    .contains("error_rate"),
                "{report}"
            );
        } else {
            assert_eq!(report["final_weight"], 100.0);
        }
    }
}

#[test]
fn prometheus_going_down_holds_the_rollout_until_it_is_back() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let dir = scratch("prom-down");
    let stable = backend("stable", &[]);
    let canary = backend("canary", &[]);
    let port = free_port();
    let mut prom = Prometheus::start(&bin, &dir, port, &[stable.addr(), canary.addr()]);
    let stages = "  - {weight: 20, duration: 6s}\n  - {weight: 100, duration: 2s}\n";
    let mut run = Run::start(
        &dir,
        &spec(
            &stable,
            &canary,
            stages,
            &prometheus_metrics(&prom.url(), PRESET),
        ),
    );
    // Judged once on Prometheus's numbers, then Prometheus goes away.
    run.wait_for("stage 1/2 weight 20% | stable ");
    prom.stop();
    // Three looks without numbers: held at the same stage, saying why.
    let held = run.wait_for("» pause");
    assert!(held.contains(&format!("127.0.0.1:{port}")), "{held}");
    let status = run.wait_for("paused");
    assert!(status.contains("weight 20%"), "{status}");
    // Back on the same port (and data): the rollout goes on to the end.
    let _prom = Prometheus::start(&bin, &dir, port, &[stable.addr(), canary.addr()]);
    let (code, report, stderr) = run.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["phase"], "succeeded", "{stderr}");
    // Nothing advanced while it was down: the pause comes before the advance.
    let paused_at = stderr.find("» pause").unwrap();
    let advanced_at = stderr.find("» advance").expect("an advance");
    assert!(paused_at < advanced_at, "{stderr}");
}

#[test]
fn unreachable_prometheus_rolls_back_when_the_spec_says_so() {
    // No Prometheus needed: nothing listens on the address.
    let dir = scratch("prom-unreachable");
    let stable = backend("stable", &[]);
    let canary = backend("canary", &[]);
    let port = free_port();
    let metrics = prometheus_metrics(&format!("http://127.0.0.1:{port}"), PRESET);
    let text = spec(&stable, &canary, SHORT, &metrics).replace(
        "min_requests: 50}",
        "min_requests: 50, on_metrics_unavailable: rollback}",
    );
    let (code, report, stderr) = Run::start(&dir, &text).finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["phase"], "rolled_back");
    assert_eq!(report["final_weight"], 0.0);
    let why = report["rollback_reason"].as_str().unwrap();
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert!(why.contains("3 looks"), "{why}");
}

#[test]
fn a_query_prometheus_rejects_stops_the_rollout_naming_the_query() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let dir = scratch("prom-bad-query");
    let stable = backend("stable", &[]);
    let canary = backend("canary", &[]);
    let prom = Prometheus::start(&bin, &dir, free_port(), &[stable.addr(), canary.addr()]);
    // (A syntax error never gets this far: `a_promql_syntax_error_is_refused_at_validate_time`.)
    // One series per status code where one number is needed.
    let (queries, says) = (
            "    requests: 'increase(http_requests_total{version=\"$version\"}[$window])'\n    \
             errors: 'sum(increase(http_requests_total{version=\"$version\",code=~\"5..\"}[$window]))'\n",
            "series",
        );
    {
        let run = Run::start(
            &dir,
            &spec(
                &stable,
                &canary,
                SHORT,
                &prometheus_metrics(&prom.url(), queries),
            ),
        );
        let (code, report, stderr) = run.finish();
        assert_ne!(code, Some(0), "{stderr}");
        assert_ne!(report["phase"], "succeeded", "{stderr}");
        assert_eq!(report["final_weight"], 0.0, "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(stderr.contains("http_requests_total"), "{stderr}");
    }
}

#[test]
fn a_promql_syntax_error_is_refused_at_validate_time() {
    let dir = scratch("prom-syntax");
    let file = dir.join("spec.yaml");
    let metrics = "metrics:\n  provider: prometheus\n  prometheus:\n    address: http://127.0.0.1:9\n    \
         requests: 'sum(increase(http_requests_total{version=\"$version\"}[$window])'\n    \
         errors: 'sum(increase(http_requests_total{version=\"$version\",code=~\"5..\"}[$window]))'\n  \
         thresholds:\n    - {name: memory, query: 'max(process_resident_memory_bytes{version=\"$version\"} >', max: 1e9}\n";
    std::fs::write(
        &file,
        format!("name: t\nstages:\n  - {{weight: 100, duration: 1m}}\n{metrics}"),
    )
    .unwrap();
    for args in [&["validate"][..], &["run", "--spec"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(args)
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        for says in [
            "metrics.prometheus.requests (line 8)",
            "not valid PromQL",
            "metrics.thresholds[0].query (line 11)",
        ] {
            assert!(stderr.contains(says), "{args:?}: {says}: {stderr}");
        }
        assert!(!stderr.contains("metrics.prometheus.errors"), "{stderr}");
    }
}

#[test]
fn scraped_metrics_roll_back_a_failing_canary_and_promote_a_healthy_one() {
    for (errors, want_phase) in [("0.1", "rolled_back"), ("0", "succeeded")] {
        let dir = scratch(&format!("scrape-verdict-{errors}"));
        let stable = backend("stable", &[]);
        let canary = backend("canary", &["--error-rate", errors]);
        let metrics = format!(
            "metrics:\n  provider: scrape\n  scrape:\n    stable: [{}/metrics]\n    \
             canary: [{}/metrics]\n    preset: http\n",
            stable.url(),
            canary.url()
        );
        let (code, report, stderr) =
            Run::start(&dir, &spec(&stable, &canary, SHORT, &metrics)).finish();
        assert_eq!(report["phase"], want_phase, "{stderr}");
        assert_eq!(code, Some(if want_phase == "succeeded" { 0 } else { 1 }));
        let stage = &report["stages"][0];
        assert!(
            stage["canary"]["requests"].as_u64().unwrap() > 0,
            "{report}"
        );
    }
}

#[test]
fn a_version_whose_metrics_endpoint_vanishes_is_never_promoted() {
    let dir = scratch("scrape-gone");
    let stable = backend("stable", &[]);
    let mut canary = backend("canary", &[]);
    let metrics = format!(
        "metrics:\n  provider: scrape\n  scrape:\n    stable: [{}/metrics]\n    \
         canary: [{}/metrics]\n    preset: http\n",
        stable.url(),
        canary.url()
    );
    let text = spec(&stable, &canary, SHORT, &metrics).replace(
        "min_requests: 50}",
        "min_requests: 50, on_metrics_unavailable: rollback}",
    );
    let mut run = Run::start(&dir, &text);
    run.wait_for("stage 1/2 weight 20% | stable ");
    canary.kill();
    let (code, report, stderr) = run.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["phase"], "rolled_back", "{stderr}");
    assert_eq!(report["final_weight"], 0.0);
    let why = report["rollback_reason"].as_str().unwrap();
    assert!(why.contains(&format!("{}/metrics", canary.url())), "{why}");
}
