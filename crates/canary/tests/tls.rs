//! Metrics read over `https://`: `canary run` judging on a real Prometheus
//! that serves only TLS and asks for a client certificate (its
//! `--web.config.file`), and on the backends' `/metrics` behind a real
//! nginx terminating TLS. The certificates come from a private CA made by
//! the test (rcgen). Every process is started on loopback by the test and
//! stopped by its PID.
//!
//! Without Prometheus or nginx installed those tests say "skipped"; CI
//! installs both and sets `CANARY_REQUIRE_PROMETHEUS=1` and
//! `CANARY_REQUIRE_NGINX=1`, where a missing binary fails.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use canary_demo::launch::ChildBackend;
use support::{free_port, prometheus_binary, scratch, Pki, Prometheus};

fn backend(name: &str, extra: &[&str]) -> ChildBackend {
    ChildBackend::start(env!("CARGO_BIN_EXE_canary"), name, extra).unwrap()
}

/// A spec whose canary stays at 20 % for 4 s, judged every 2 s on
/// `metrics`.
fn spec(stable: &ChildBackend, canary: &ChildBackend, metrics: &str) -> String {
    format!(
        "name: tls-test\nstages:\n  - {{weight: 20, duration: 4s}}\n  - {{weight: 100, duration: 2s}}\n\
         analysis: {{interval: 2s, min_requests: 50}}\n\
         traffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n{metrics}",
        stable.url(),
        canary.url()
    )
}

fn tls_lines(indent: &str, ca: &Path, client: Option<&Pki>) -> String {
    let mut s = format!("{indent}tls:\n{indent}  ca_file: {}\n", ca.display());
    if let Some(p) = client {
        s += &format!(
            "{indent}  cert_file: {}\n{indent}  key_file: {}\n",
            p.client_cert.display(),
            p.client_key.display()
        );
    }
    s
}

/// Runs `canary run` on `text` under load until it exits: its exit code,
/// its JSON report (if any) and its stderr.
fn run(dir: &Path, text: &str) -> (Option<i32>, serde_json::Value, String) {
    let path = dir.join("rollout.yaml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["run", "--threads", "1", "--spec"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The proxy's address is on the first line of stderr; the load goes
    // there until the run ends.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut load = None;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        if let Some(addr) = line.trim().strip_prefix("proxy listening on http://") {
            load = Some(support::send_load(&format!("http://{addr}/")));
            break;
        }
    }
    let Output { status, stdout, .. } = child.wait_with_output().unwrap();
    if let Some((stop, handle)) = load {
        stop.stop();
        let _ = handle.join();
    }
    let stderr = reader.join().unwrap();
    let report = serde_json::from_slice(&stdout).unwrap_or(serde_json::Value::Null);
    (status.code(), report, stderr)
}

#[test]
fn prometheus_over_mutual_tls_judges_the_rollout() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let dir = scratch("tls-prom");
    let pki = Pki::new(&dir);
    let stable = backend("stable", &[]);
    let canary = backend("canary", &["--error-rate", "0.1"]);
    let prom = Prometheus::start_tls(
        &bin,
        &dir,
        free_port(),
        &[stable.addr(), canary.addr()],
        &pki,
    );
    let url = format!(
        "https://localhost:{}",
        prom.url().rsplit(':').next().unwrap()
    );
    let metrics = |tls: String| {
        format!(
            "metrics:\n  provider: prometheus\n  prometheus:\n    address: {url}\n    preset: http\n{tls}"
        )
    };

    // Trusting the private CA and showing the client certificate: the
    // failing canary is judged on Prometheus's numbers and rolled back.
    let (code, report, stderr) = run(
        &dir,
        &spec(
            &stable,
            &canary,
            &metrics(tls_lines("    ", &pki.ca, Some(&pki))),
        ),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["phase"], "rolled_back", "{stderr}");
    assert!(
        report["stages"][0]["canary"]["errors"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["rollback_reason"]
            .as_str()
            .unwrap()
            .contains("error_rate"),
        "{report}"
    );

    // A CA that did not sign the server's certificate, or no client
    // certificate: no numbers, never promoted, and the reason says TLS.
    for (what, tls) in [
        (
            "untrusted server",
            tls_lines("    ", &pki.other_ca, Some(&pki)),
        ),
        ("no client certificate", tls_lines("    ", &pki.ca, None)),
    ] {
        let (code, report, stderr) = run(&dir, &spec(&stable, &canary, &metrics(tls)));
        assert_ne!(code, Some(0), "{what}: {stderr}");
        assert_ne!(report["phase"], "succeeded", "{what}: {stderr}");
        assert_eq!(report["final_weight"], 0.0, "{what}: {stderr}");
        assert!(stderr.contains("TLS"), "{what}: {stderr}");
    }
}

#[test]
fn a_tls_file_that_cannot_be_read_is_refused_before_traffic_moves() {
    let dir = scratch("tls-missing-file");
    let stable = backend("stable", &[]);
    let canary = backend("canary", &[]);
    let metrics = format!(
        "metrics:\n  provider: prometheus\n  prometheus:\n    address: https://127.0.0.1:9\n    \
         preset: http\n{}",
        tls_lines("    ", &dir.join("no-such-ca.pem"), None)
    );
    let (code, _, stderr) = run(&dir, &spec(&stable, &canary, &metrics));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("metrics.prometheus.tls.ca_file"),
        "{stderr}"
    );
    assert!(stderr.contains("no-such-ca.pem"), "{stderr}");
    assert!(!stderr.contains("proxy listening"), "{stderr}");
}

#[test]
fn a_tls_section_for_plain_http_addresses_is_a_spec_error() {
    let dir = scratch("tls-on-http");
    let file = dir.join("spec.yaml");
    std::fs::write(
        &file,
        "name: t\nstages:\n  - {weight: 100, duration: 1m}\nmetrics:\n  provider: scrape\n  \
         scrape:\n    stable: [http://127.0.0.1:1/metrics]\n    canary: [http://127.0.0.1:2/metrics]\n    \
         preset: http\n    tls:\n      cert_file: /tmp/c.pem\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for says in [
        "metrics.scrape.tls",
        "only applies to https://",
        "metrics.scrape.tls.key_file",
    ] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

#[test]
fn scraped_metrics_behind_an_https_nginx_judge_the_rollout() {
    let Some(nginx) = canary_traffic::testing::nginx_binary() else {
        return;
    };
    let dir = scratch("tls-scrape");
    let pki = Pki::new(&dir);
    let stable = backend("stable", &[]);
    let canary = backend("canary", &["--error-rate", "0.1"]);
    // nginx serves each backend's /metrics over TLS on a port of its own.
    let (sp, cp) = (free_port(), free_port());
    let servers = format!(
        "server {{ listen 127.0.0.1:{sp} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
                   location / {{ proxy_pass {s}; }} }}
         server {{ listen 127.0.0.1:{cp} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
                   location / {{ proxy_pass {c}; }} }}",
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        s = stable.url(),
        c = canary.url(),
    );
    let _nginx = canary_traffic::testing::start_nginx_with(&nginx, &dir, &servers, cp);
    let metrics = |ca: &Path| {
        format!(
            "metrics:\n  provider: scrape\n  scrape:\n    stable: [https://localhost:{sp}/metrics]\n    \
             canary: [https://localhost:{cp}/metrics]\n    preset: http\n{}",
            tls_lines("    ", ca, None)
        )
    };
    let (code, report, stderr) = run(&dir, &spec(&stable, &canary, &metrics(&pki.ca)));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["phase"], "rolled_back", "{stderr}");
    assert!(
        report["stages"][0]["canary"]["errors"].as_u64().unwrap() > 0,
        "{report}"
    );

    // Without the private CA (Mozilla's roots only): never promoted, and
    // the reason says TLS and names the endpoint.
    let default_roots = format!(
        "metrics:\n  provider: scrape\n  scrape:\n    stable: [https://localhost:{sp}/metrics]\n    \
         canary: [https://localhost:{cp}/metrics]\n    preset: http\n"
    );
    let (code, report, stderr) = run(&dir, &spec(&stable, &canary, &default_roots));
    assert_ne!(code, Some(0), "{stderr}");
    assert_ne!(report["phase"], "succeeded", "{stderr}");
    assert_eq!(report["final_weight"], 0.0, "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(
        stderr.contains(&format!("localhost:{sp}/metrics")),
        "{stderr}"
    );
}
