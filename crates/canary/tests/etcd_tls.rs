//! `canary serve --store etcd` against a real etcd that serves only TLS and
//! requires client certificates (`--client-cert-auth`), the way production
//! clusters run: with the CA and a client certificate the replica leads
//! and drives a rollout to its end, stored on etcd; without the client
//! certificate, or trusting another CA, it stops at its start naming what
//! failed; bad TLS flags are errors naming the flag. The certificates are
//! made by the test (rcgen); etcd is started on free loopback ports and
//! stopped by its PID.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{api_agent as agent, free_port, Pki, TempDir, SERVE_TOKEN as TOKEN};

/// One etcd member serving clients over TLS only.
struct TlsEtcd {
    child: Child,
    url: String,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        support::terminate(&mut self.child);
    }
}

fn start_etcd(bin: &std::path::Path, dir: &std::path::Path, pki: &Pki) -> TlsEtcd {
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(bin)
        .args(["--name", "t"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg(format!("--listen-client-urls=https://{client}"))
        .arg(format!("--advertise-client-urls=https://{client}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=t=http://{peer}"))
        .arg("--cert-file")
        .arg(&pki.server_cert)
        .arg("--key-file")
        .arg(&pki.server_key)
        .arg("--trusted-ca-file")
        .arg(&pki.ca)
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let e = TlsEtcd {
        child,
        url: format!("https://{client}"),
    };
    // Ready when a client with the right certificate reads.
    let c = canary_server::etcd::Client::with_tls(
        vec![e.url.clone()],
        Duration::from_secs(2),
        Some(&pki.client_tls()),
    )
    .unwrap();
    for _ in 0..200 {
        if c.range(b"probe", None, 0).is_ok() {
            return e;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "etcd over TLS did not answer: {}",
        std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
    );
}

fn get(base: &str, path: &str) -> (u16, Value) {
    support::get_json(base, path)
}

fn serve(url: &str, tls: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "etcd"])
        .args(["--etcd-endpoints", url])
        .args(tls)
        .env("CANARY_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn flags(pairs: &[(&str, &std::path::Path)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
        .collect()
}

#[test]
fn serve_leads_over_tls_with_client_certificates_and_names_what_fails() {
    let Some(bin) = support::etcd_binary() else {
        return;
    };
    let dir = TempDir::new("etcd-tls");
    let pki = Pki::new(&dir.0);
    let etcd = start_etcd(&bin, &dir.0, &pki);
    let good = flags(&[
        ("--etcd-ca-file", &pki.ca),
        ("--etcd-cert-file", &pki.client_cert),
        ("--etcd-key-file", &pki.client_key),
    ]);

    // The CA and a client certificate: it leads, and a rollout runs to
    // its end with its record on etcd.
    let mut args: Vec<&str> = vec!["--lease-ttl", "2s", "--campaign-interval", "250ms"];
    args.extend(good.iter().map(String::as_str));
    let srv = support::serve_etcd(&etcd.url, &args, &dir.0.join("serve.log"));
    let base = srv.base.clone();
    let mut led = false;
    for _ in 0..200 {
        let (s, v) = get(&base, "/readyz");
        if s == 200 && v["ha"]["role"] == "leader" {
            led = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        led,
        "never led: {}",
        std::fs::read_to_string(dir.0.join("serve.log")).unwrap_or_default()
    );
    let spec = "name: over-tls\nstages:\n  - {weight: 10, duration: 1s}\n  - {weight: 100, duration: 1s}\nanalysis: {interval: 100ms, min_requests: 50}\ntraffic: {provider: simulated, scenario: healthy, requests_per_second: 3000}\n";
    let r = agent()
        .post(format!("{base}/api/v1/rollouts"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/yaml")
        .send(spec.as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut done = Value::Null;
    for _ in 0..400 {
        let (_, v) = get(&base, "/api/v1/rollouts/over-tls");
        if v["phase"] == "succeeded" {
            done = v;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(done["applied_weight"], 100.0, "{done}");
    let c = canary_server::etcd::Client::with_tls(
        vec![etcd.url.clone()],
        Duration::from_secs(2),
        Some(&pki.client_tls()),
    )
    .unwrap();
    let stored = c.range(b"/canary/rollout/over-tls", None, 0).unwrap();
    assert_eq!(canary_server::etcd::kvs(&stored).len(), 1, "{stored}");
    drop(srv);

    // No client certificate: etcd refuses the handshake.
    let out = serve(&etcd.url, &flags(&[("--etcd-ca-file", &pki.ca)]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach etcd") && err.contains(&etcd.url),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing listens: {err}");
    // Another CA: etcd's certificate is not trusted.
    let out = serve(
        &etcd.url,
        &flags(&[
            ("--etcd-ca-file", &pki.other_ca),
            ("--etcd-cert-file", &pki.client_cert),
            ("--etcd-key-file", &pki.client_key),
        ]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach etcd") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn bad_etcd_tls_flags_name_the_flag() {
    let dir = TempDir::new("etcd-tls-flags");
    let pki = Pki::new(&dir.0);
    let https = format!("https://127.0.0.1:{}", free_port());
    let http = format!("http://127.0.0.1:{}", free_port());
    let missing = dir.0.join("nope.pem");
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            https.clone(),
            flags(&[("--etcd-cert-file", &pki.client_cert)]),
            "--etcd-cert-file needs --etcd-key-file",
        ),
        (
            https.clone(),
            flags(&[("--etcd-key-file", &pki.client_key)]),
            "--etcd-key-file needs --etcd-cert-file",
        ),
        (
            http.clone(),
            flags(&[("--etcd-ca-file", &pki.ca)]),
            "--etcd-ca-file: TLS is for https:// endpoints",
        ),
        (
            https.clone(),
            flags(&[("--etcd-ca-file", &missing)]),
            "--etcd-ca-file: ",
        ),
        (
            https.clone(),
            flags(&[
                ("--etcd-cert-file", &pki.client_key),
                ("--etcd-key-file", &pki.client_key),
            ]),
            "--etcd-cert-file: ",
        ),
    ];
    for (url, tls, want) in cases {
        let out = serve(&url, &tls);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tls:?}: {err}");
        assert!(err.contains(want), "{tls:?}: wants {want:?} in {err}");
        assert!(out.stdout.is_empty(), "{tls:?}: nothing listens");
    }
}
