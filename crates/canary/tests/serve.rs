//! `canary serve` as users run it: a real server process on loopback (port
//! 0, its own temporary store, stopped by its PID), driven over HTTP; demo
//! backends as real child processes. Waits poll the API for a state; no
//! assertion depends on how long anything took.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

use canary_demo::launch::ChildBackend;
use serde_json::{json, Value};

mod support;

use support::{api_agent as agent, ServeProc, TempDir, SERVE_TOKEN as TOKEN};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_canary")
}

/// One call: (status, JSON body or Null).
fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let a = agent();
    let url = format!("{base}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let r = match method {
        "GET" => {
            let mut q = a.get(&url);
            if let Some(h) = &auth {
                q = q.header("Authorization", h);
            }
            q.call()
        }
        "DELETE" => {
            let mut q = a.delete(&url).header("X-Canary-Actor", "tester");
            if let Some(h) = &auth {
                q = q.header("Authorization", h);
            }
            q.call()
        }
        _ => {
            let mut q = a
                .post(&url)
                .header("X-Canary-Actor", "tester")
                .header("Content-Type", content_type);
            if let Some(h) = &auth {
                q = q.header("Authorization", h);
            }
            q.send(body)
        }
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(base: &str, path: &str) -> (u16, Value) {
    call(base, "GET", path, None, "", b"")
}

fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    let ct = if body.trim_start().starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    };
    call(base, "POST", path, Some(TOKEN), ct, body.as_bytes())
}

fn action(base: &str, name: &str, act: &str) -> (u16, Value) {
    post(
        base,
        &format!("/api/v1/rollouts/{name}/{act}"),
        &json!({"reason": format!("test {act}")}).to_string(),
    )
}

/// Polls the rollout until `ok` holds (or panics after `limit`).
fn wait_for(base: &str, name: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let step = Duration::from_millis(50);
    let mut polls = 0;
    loop {
        let (s, v) = get(base, &format!("/api/v1/rollouts/{name}"));
        if s == 200 && ok(&v) {
            return v;
        }
        polls += 1;
        assert!(step * polls < limit, "rollout {name} never got there: {v}");
        std::thread::sleep(step);
    }
}

fn events(base: &str, name: &str) -> Vec<Value> {
    let (s, v) = get(base, &format!("/api/v1/rollouts/{name}/events"));
    assert_eq!(s, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

fn proxy_spec(name: &str, stable: &ChildBackend, canary: &ChildBackend) -> String {
    format!(
        "name: {name}\nstages:\n  - {{weight: 10, duration: 1h}}\n  - {{weight: 50, duration: 1h}}\n  - {{weight: 100, duration: 1h}}\nanalysis: {{interval: 200ms}}\ntraffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n",
        stable.url(),
        canary.url()
    )
}

/// Every action over HTTP against a running server with demo backends;
/// the log records each with its actor, and a watcher sees them live.
#[test]
fn every_action_over_http_is_logged_with_its_actor_and_watched_live() {
    let dir = TempDir::new("actions");
    let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
    let canary = ChildBackend::start(bin(), "canary", &[]).unwrap();
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();

    let (s, v) = post(
        &base,
        "/api/v1/rollouts",
        &proxy_spec("web", &stable, &canary),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["phase"], "progressing");
    assert_eq!(v["stage"], 0);
    assert_eq!(v["applied_weight"], 10.0);
    assert_eq!(
        v["actuator_weight"], 10.0,
        "the proxy routes what was applied"
    );
    let listen = v["traffic"]["listen"].as_str().unwrap().to_string();
    assert!(listen.starts_with("127.0.0.1:"), "{v}");

    // The watch stream: a snapshot first, then one event per change.
    let rx = support::follow_events(format!("{base}/api/v1/rollouts/web/watch"));
    let (kind, first) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(kind, "snapshot");
    assert_eq!(first["status"]["name"], "web");

    // A request through the rollout's proxy reaches a backend.
    let (s, _) = call(&format!("http://{listen}"), "GET", "/", None, "", b"");
    assert!(s < 500, "the proxy serves: {s}");

    let (s, v) = action(&base, "web", "pause");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "paused");
    assert!(v["reason"].as_str().unwrap().contains("test pause"), "{v}");
    let (s, v) = action(&base, "web", "pause");
    assert_eq!(s, 409, "pausing a paused rollout: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("paused"),
        "names the phase: {v}"
    );
    let (s, v) = action(&base, "web", "resume");
    assert_eq!((s, v["phase"].as_str()), (200, Some("progressing")), "{v}");
    let (s, v) = action(&base, "web", "promote");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stage"], 1);
    assert_eq!(v["applied_weight"], 50.0);
    assert_eq!(v["actuator_weight"], 50.0);
    let (s, v) = action(&base, "web", "promote-full");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "succeeded");
    assert_eq!(
        (v["applied_weight"].as_f64(), v["actuator_weight"].as_f64()),
        (Some(100.0), Some(100.0))
    );
    let (s, v) = action(&base, "web", "retry");
    assert_eq!(s, 409, "a succeeded rollout is not retried: {v}");
    assert_eq!(v["details"][0], "phase: succeeded");

    // The watcher saw the changes, in order, ending at succeeded.
    let mut phases = Vec::new();
    let mut watched = Vec::new();
    let mut received = 0;
    while phases.last().map(String::as_str) != Some("succeeded") {
        let (kind, v) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("watch stream stalled after {phases:?}"));
        assert_eq!(kind, "change");
        for e in v["events"].as_array().unwrap() {
            watched.push((e["seq"].as_u64().unwrap(), e["event"].clone()));
        }
        let p = v["status"]["phase"].as_str().unwrap().to_string();
        if phases.last() != Some(&p) {
            phases.push(p);
        }
        received += 1;
        assert!(received < 10_000, "no end to the changes: {phases:?}");
    }
    assert!(phases.contains(&"paused".to_string()), "{phases:?}");

    let log = events(&base, "web");
    assert!(!watched.is_empty());
    for (seq, ev) in &watched {
        let logged = &log[*seq as usize - 1];
        assert_eq!(
            (logged["seq"].as_u64(), &logged["event"]),
            (Some(*seq), ev),
            "watched events carry their log numbers"
        );
    }
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "gapless");
    let by = |ev: &str| {
        log.iter()
            .find(|e| e["event"] == ev)
            .unwrap_or_else(|| panic!("no {ev} in {log:?}"))
    };
    for ev in ["created", "pause", "resume", "promote", "promote_full"] {
        assert_eq!(by(ev)["actor"], "api:tester", "{ev}");
    }
    assert!(by("pause")["reason"]
        .as_str()
        .unwrap()
        .contains("test pause"));
    assert_eq!(by("weight_applied")["actor"], "controller");

    let (s, _) = call(
        &base,
        "DELETE",
        "/api/v1/rollouts/web",
        Some(TOKEN),
        "",
        b"",
    );
    assert_eq!(s, 204);
    assert_eq!(get(&base, "/api/v1/rollouts/web").0, 404);

    // Abort, retry, and delete of an unfinished rollout.
    let (s, v) = post(
        &base,
        "/api/v1/rollouts",
        &proxy_spec("api", &stable, &canary),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(
        &base,
        "/api/v1/rollouts",
        &proxy_spec("api", &stable, &canary),
    );
    assert_eq!(s, 409, "a running name: {v}");
    let (s, v) = action(&base, "api", "abort");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "aborted");
    assert_eq!(
        (v["applied_weight"].as_f64(), v["actuator_weight"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    let (s, v) = action(&base, "api", "retry");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "progressing");
    assert_eq!(v["generation"], 1);
    assert_eq!(v["actuator_weight"], 10.0);
    let (s, v) = call(
        &base,
        "DELETE",
        "/api/v1/rollouts/api",
        Some(TOKEN),
        "",
        b"",
    );
    assert_eq!(s, 409, "unfinished, no force: {v}");
    let (s, _) = call(
        &base,
        "DELETE",
        "/api/v1/rollouts/api?force=true",
        Some(TOKEN),
        "",
        b"",
    );
    assert_eq!(s, 204);
    let (s, v) = get(&base, "/api/v1/rollouts");
    assert_eq!(
        (s, v["rollouts"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
}

fn snapshot(base: &str) -> (Value, Vec<(String, Vec<Value>)>) {
    let (_, list) = get(base, "/api/v1/rollouts");
    let mut logs = Vec::new();
    for r in list["rollouts"].as_array().unwrap() {
        let n = r["name"].as_str().unwrap().to_string();
        logs.push((n.clone(), events(base, &n)));
    }
    (list, logs)
}

/// Without the token, or with a wrong one, every mutating call is 401 and
/// nothing changes.
#[test]
fn mutating_calls_without_the_right_token_are_refused_and_change_nothing() {
    let dir = TempDir::new("auth");
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();
    let spec = "name: held\nstages: [{weight: 10, duration: 1h}, {weight: 100, duration: 1h}]\nanalysis: {interval: 1h}\ntraffic: {provider: simulated}\n";
    assert_eq!(post(&base, "/api/v1/rollouts", spec).0, 201);
    let before = snapshot(&base);
    let other =
        "name: other\nstages: [{weight: 100, duration: 1h}]\ntraffic: {provider: simulated}\n";
    for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let mut calls: Vec<(&str, String, &str)> = vec![
            ("POST", "/api/v1/rollouts".into(), other),
            ("DELETE", "/api/v1/rollouts/held".into(), ""),
            ("DELETE", "/api/v1/rollouts/held?force=true".into(), ""),
        ];
        for a in [
            "pause",
            "resume",
            "promote",
            "promote-full",
            "abort",
            "retry",
        ] {
            calls.push(("POST", format!("/api/v1/rollouts/held/{a}"), "{}"));
        }
        for (m, path, body) in &calls {
            let (s, v) = call(&base, m, path, token, "application/yaml", body.as_bytes());
            assert_eq!(s, 401, "{m} {path} with {token:?}: {v}");
            assert!(v["error"].is_string(), "{v}");
        }
    }
    assert_eq!(snapshot(&base), before, "the store is unchanged");
}

/// Bad input gets a clear 4xx and changes nothing; the server stays up.
#[test]
fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let dir = TempDir::new("bad");
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();
    let ok = "name: fine\nstages: [{weight: 10, duration: 1h}, {weight: 100, duration: 1h}]\nanalysis: {interval: 1h}\ntraffic: {provider: simulated}\n";
    assert_eq!(post(&base, "/api/v1/rollouts", ok).0, 201);
    let before = snapshot(&base);

    // An invalid spec: 422 whose details are what `canary validate` prints.
    let bad = "name: broken\nstages:\n  - {weight: 50, duration: 1m}\n  - {weight: 20, duration: -1m}\nanalysis:\n  alpha: 2\n";
    let (s, v) = post(&base, "/api/v1/rollouts", bad);
    assert_eq!(s, 422, "{v}");
    let file = dir.0.join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let printed: Vec<String> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&format!("{}: ", file.display()))
                .map(str::to_string)
        })
        .collect();
    let details: Vec<String> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert!(!printed.is_empty());
    assert_eq!(
        details, printed,
        "the same field-path errors as canary validate"
    );

    let cases: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        ("POST", "/api/v1/rollouts".into(), "application/yaml", b"name: [unclosed\n".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/json", b"{\"name\": 1,".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", b"".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", vec![0xff, 0xfe, 0x00], 400),
        ("POST", "/api/v1/rollouts".into(), "image/png", ok.as_bytes().to_vec(), 415),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", b"name: x\nstages: [{weight: 100, duration: 1m}]\n".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", b"name: a/b\nstages: [{weight: 100, duration: 1m}]\ntraffic: {provider: simulated}\n".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", b"name: s\nstages: [{weight: 100, duration: 1m}]\ntraffic: {provider: simulated, scenario: nope}\n".to_vec(), 422),
        ("POST", "/api/v1/rollouts".into(), "application/yaml", ok.as_bytes().to_vec(), 409),
        ("POST", "/api/v1/rollouts/nobody/pause".into(), "application/json", b"{}".to_vec(), 404),
        ("POST", "/api/v1/rollouts/fine/explode".into(), "application/json", b"{}".to_vec(), 404),
        ("POST", "/api/v1/rollouts/fine/pause".into(), "application/json", b"{\"reason\": 5}".to_vec(), 400),
        ("POST", "/api/v1/rollouts/fine/pause".into(), "application/json", b"{\"why\": \"x\"}".to_vec(), 400),
        ("POST", "/api/v1/rollouts/fine/resume".into(), "application/json", b"{}".to_vec(), 409),
        ("POST", "/api/v1/rollouts/fine/retry".into(), "application/json", b"{}".to_vec(), 409),
        ("DELETE", "/api/v1/rollouts/fine".into(), "", Vec::new(), 409),
        ("DELETE", "/api/v1/rollouts/nobody".into(), "", Vec::new(), 404),
        ("DELETE", "/api/v1/rollouts/fine?force=maybe".into(), "", Vec::new(), 400),
        ("GET", "/api/v1/rollouts/nobody".into(), "", Vec::new(), 404),
        ("GET", "/api/v1/rollouts/nobody/events".into(), "", Vec::new(), 404),
        ("GET", "/api/v1/nothing".into(), "", Vec::new(), 404),
    ];
    for (m, path, ct, body, want) in &cases {
        let (s, v) = call(&base, m, path, Some(TOKEN), ct, body);
        assert_eq!(s, *want, "{m} {path} ({ct}, {} bytes): {v}", body.len());
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{m} {path}: a JSON error: {v}"
        );
    }
    // A body over 1 MiB: refused on its Content-Length, before it is sent
    // (sending it as well would race the server's close against the
    // client's write).
    let addr = base.strip_prefix("http://").unwrap();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /api/v1/rollouts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .unwrap();
    let mut head = String::new();
    BufReader::new(&c).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (s, v) = post(&base, "/api/v1/rollouts", "name: [unclosed\n");
    assert_eq!(s, 422);
    assert!(
        v["details"][0].as_str().unwrap().starts_with("line "),
        "names the line: {v}"
    );
    assert_eq!(snapshot(&base), before, "nothing changed");
    assert_eq!(get(&base, "/healthz").0, 200, "still serving");
    assert_eq!(get(&base, "/readyz").0, 200);
}

/// The monotone rank of a status: a restart never moves it back.
fn rank(v: &Value) -> (u64, u64, u64) {
    let g = v["generation"].as_u64().unwrap();
    let p = match v["phase"].as_str().unwrap() {
        "succeeded" | "rolled_back" | "aborted" => 2,
        _ => 1,
    };
    let stage = v["stage"].as_u64().map_or(0, |s| s + 1);
    (g, p, if p == 2 { 99 } else { stage })
}

/// At least 20 kill -9s at random instants while several rollouts run;
/// after each restart no rollout's phase goes back, each log is gapless
/// with no decision twice, and each finished rollout's weight is what the
/// traffic layer shows.
#[test]
fn kill_9_at_random_instants_loses_and_repeats_nothing() {
    let dir = TempDir::new("kill9");
    let db = dir.0.join("t.db");
    let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
    let canary = ChildBackend::start(bin(), "canary", &[]).unwrap();
    let specs: Vec<String> = {
        let sim = |name: &str, scenario: &str| {
            format!("name: {name}\nstages:\n  - {{weight: 10, duration: 1s}}\n  - {{weight: 50, duration: 1s}}\n  - {{weight: 100, duration: 1s}}\nanalysis: {{interval: 100ms, min_requests: 50}}\ntraffic: {{provider: simulated, scenario: {scenario}, requests_per_second: 3000}}\n")
        };
        vec![
            sim("good-a", "healthy"),
            sim("good-b", "healthy"),
            sim("bad-a", "errors-5x"),
            sim("slow-a", "latency-50pct"),
            proxy_spec("proxied", &stable, &canary),
        ]
    };
    let mut seen: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut created = 0;
    let kills = 24;
    for round in 0..kills {
        let mut srv = ServeProc::start(&db);
        let base = srv.base.clone();
        // After the restart: nothing went back, logs are whole.
        let (_, list) = get(&base, "/api/v1/rollouts");
        for r in list["rollouts"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let (_, v) = get(&base, &format!("/api/v1/rollouts/{name}"));
            let now = rank(&v);
            if let Some(before) = seen.get(name) {
                assert!(
                    now >= *before,
                    "round {round}: {name} went back from {before:?} to {now:?}: {v}"
                );
            }
            seen.insert(name.to_string(), now);
            let log = events(&base, name);
            let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            assert_eq!(
                seqs,
                (1..=log.len() as u64).collect::<Vec<_>>(),
                "round {round}: {name}: gapless"
            );
            let mut decisions = std::collections::BTreeSet::new();
            let mut generation = 0;
            for e in &log {
                let ev = e["event"].as_str().unwrap();
                if ev == "retry" {
                    generation += 1;
                }
                if matches!(ev, "start" | "advance" | "succeed" | "rollback" | "abort") {
                    let key = (generation, ev.to_string(), e["detail"]["stage"].to_string());
                    assert!(
                        decisions.insert(key.clone()),
                        "round {round}: {name}: {key:?} twice in {log:?}"
                    );
                }
            }
            if matches!(
                v["phase"].as_str(),
                Some("succeeded" | "rolled_back" | "aborted")
            ) {
                let want = if v["phase"] == "succeeded" {
                    100.0
                } else {
                    0.0
                };
                assert_eq!(v["desired_weight"].as_f64(), Some(want), "{v}");
                assert_eq!(
                    v["applied_weight"].as_f64(),
                    Some(want),
                    "round {round}: {name}: {v}"
                );
                assert_eq!(
                    v["actuator_weight"].as_f64(),
                    Some(want),
                    "round {round}: {name}: {v}"
                );
            }
        }
        // Add rollouts as the rounds go on, and act on some.
        if created < specs.len() && (round % 2 == 0 || round > 8) {
            let (s, v) = post(&base, "/api/v1/rollouts", &specs[created]);
            assert_eq!(s, 201, "{v}");
            created += 1;
        }
        if round == 12 {
            let _ = action(&base, "proxied", "promote");
        }
        if round == 16 {
            let _ = action(&base, "bad-a", "retry");
        }
        std::thread::sleep(Duration::from_millis(50 + next(600)));
        srv.kill9();
    }
    assert_eq!(created, specs.len());
    // At the end every simulated rollout has finished: the healthy ones
    // promoted, the errors-5x one rolled back.
    let srv = ServeProc::start(&db);
    let base = srv.base.clone();
    for (name, want) in [
        ("good-a", "succeeded"),
        ("good-b", "succeeded"),
        ("bad-a", "rolled_back"),
    ] {
        let v = wait_for(&base, name, Duration::from_secs(60), |v| {
            matches!(
                v["phase"].as_str(),
                Some("succeeded" | "rolled_back" | "aborted")
            )
        });
        assert_eq!(v["phase"], want, "{name}: {v}");
    }
}

/// `mode: advisory`: decisions are recorded as recommendations, and no
/// weight is ever set on the traffic layer.
#[test]
fn advisory_mode_records_recommendations_and_moves_no_weight() {
    let dir = TempDir::new("advisory");
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();
    let spec = "name: watch-only\nmode: advisory\nstages: [{weight: 10, duration: 1h}, {weight: 50, duration: 1h}, {weight: 100, duration: 1h}]\nanalysis: {interval: 100ms}\ntraffic: {provider: simulated, requests_per_second: 1000}\n";
    let (s, v) = post(&base, "/api/v1/rollouts", spec);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["mode"], "advisory");
    assert_eq!(v["desired_weight"], 10.0, "the recommended weight");
    assert_eq!(
        (v["applied_weight"].as_f64(), v["actuator_weight"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    let (s, v) = action(&base, "watch-only", "promote");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["desired_weight"], 50.0);
    assert_eq!(
        (v["applied_weight"].as_f64(), v["actuator_weight"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    // Ticks run (the judge looks) and still nothing moves.
    let v = wait_for(&base, "watch-only", Duration::from_secs(20), |v| {
        v["counts"]["stable"]["requests"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(v["actuator_weight"], 0.0);
    let log = events(&base, "watch-only");
    assert!(
        log.iter().all(|e| e["event"] != "weight_applied"),
        "{log:?}"
    );
    let promote = log.iter().find(|e| e["event"] == "promote").unwrap();
    assert_eq!(promote["detail"]["advisory"], true);
    assert!(
        promote["reason"].as_str().unwrap().starts_with("advisory"),
        "{promote}"
    );
}

/// A rollout posted to `canary serve` with a `metrics` section is judged on
/// what that source reads (here each version's own `/metrics`, scraped by
/// canary), not on the proxy's counts: a failing canary is rolled back, a
/// healthy one promoted.
#[test]
fn serve_judges_on_the_metrics_section_it_is_given() {
    let dir = TempDir::new("metrics");
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();
    // The third canary is healthy, but its metrics endpoint answers
    // nothing (port 9 on loopback is closed): judged on the proxy's counts
    // it would be promoted; judged on its metrics it is held.
    for (name, errors, want, gone) in [
        ("scraped-bad", "0.2", "rolled_back", false),
        ("scraped-good", "0", "succeeded", false),
        ("scraped-gone", "0", "paused", true),
    ] {
        let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
        let canary = ChildBackend::start(bin(), "canary", &["--error-rate", errors]).unwrap();
        let canary_metrics = if gone {
            "http://127.0.0.1:9".to_string()
        } else {
            canary.url()
        };
        let spec = format!(
            "name: {name}\nstages:\n  - {{weight: 20, duration: 4s}}\n  - {{weight: 100, duration: 2s}}\n\
             analysis: {{interval: 1s, min_requests: 50}}\n\
             traffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n\
             metrics:\n  provider: scrape\n  scrape:\n    stable: [{}/metrics]\n    canary: [{}/metrics]\n    preset: http\n",
            stable.url(),
            canary.url(),
            stable.url(),
            canary_metrics
        );
        let (s, v) = post(&base, "/api/v1/rollouts", &spec);
        assert_eq!(s, 201, "{v}");
        let listen = v["traffic"]["listen"].as_str().unwrap().to_string();
        let (stop, load) = support::send_load(&format!("http://{listen}/"));
        let v = wait_for(&base, name, Duration::from_secs(60), |v| {
            ["rolled_back", "succeeded", "paused"].contains(&v["phase"].as_str().unwrap_or(""))
        });
        stop.stop();
        let _ = load.join();
        assert_eq!(v["phase"], want, "{v}");
        if gone {
            let why = v["reason"].as_str().unwrap_or("");
            assert!(
                why.contains("127.0.0.1:9"),
                "the pause names the endpoint: {v}"
            );
        }
    }
}

#[test]
fn serve_pauses_a_rollout_whose_traffic_layer_refuses_and_moves_nothing() {
    use canary_traffic::testing::{haproxy_binary, haproxy_spec, start_haproxy};
    let Some(haproxy) = haproxy_binary() else {
        return;
    };
    let dir = TempDir::new("refused");
    let srv = ServeProc::start(&dir.0.join("t.db"));
    let base = srv.base.clone();
    let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
    let canary = ChildBackend::start(bin(), "canary", &[]).unwrap();
    let hap = dir.0.join("hap");
    std::fs::create_dir_all(&hap).unwrap();
    let server = start_haproxy(&haproxy, &hap, stable.addr(), canary.addr());
    let h = haproxy_spec(&hap);
    let stages = "stages:\n  - {weight: 20, duration: 2s}\n  - {weight: 100, duration: 2s}\n\
                  analysis: {interval: 1s, min_requests: 10}\n";
    for (name, socket, server, want) in [
        // A server the backend does not have.
        (
            "unknown-server",
            h.socket.clone(),
            "nope",
            "`get weight app/nope`",
        ),
        // A runtime-API socket that does not exist.
        (
            "no-socket",
            hap.join("gone.sock").display().to_string(),
            "canary",
            "gone.sock",
        ),
    ] {
        let spec = format!(
            "name: {name}\n{stages}traffic:\n  provider: haproxy\n  haproxy: {{socket: {socket}, backend: app, stable: [stable], canary: [{server}]}}\n"
        );
        let (s, v) = post(&base, "/api/v1/rollouts", &spec);
        assert_eq!(s, 201, "{v}");
        let v = wait_for(&base, name, Duration::from_secs(20), |v| {
            v["phase"] != "pending" && v["phase"] != "progressing"
        });
        assert_eq!(v["phase"], "paused", "{name}: {v}");
        let why = v["reason"].as_str().unwrap_or("");
        assert!(why.contains("haproxy") && why.contains(want), "{name}: {v}");
        assert_eq!(v["applied_weight"], 0.0, "{name}: {v}");
        // Still paused a few ticks later: never promoted.
        std::thread::sleep(Duration::from_secs(3));
        let (_, v) = get(&base, &format!("/api/v1/rollouts/{name}"));
        assert_eq!(v["phase"], "paused", "{name}: {v}");
    }
    // nginx whose reload fails: paused, and the file it tried is not left.
    let conf = dir.0.join("canary-app.conf");
    let spec = format!(
        "name: nginx-reload-fails\n{stages}traffic:\n  provider: nginx\n  nginx:\n    config: {}\n    upstream: app\n    stable: [{}]\n    canary: [{}]\n    test_command: [/bin/true]\n    reload_command: [/bin/false]\n    pid_file: \"\"\n\
         metrics:\n  provider: scrape\n  scrape: {{stable: [{}/metrics], canary: [{}/metrics], preset: http}}\n",
        conf.display(),
        stable.addr(),
        canary.addr(),
        stable.url(),
        canary.url()
    );
    let (s, v) = post(&base, "/api/v1/rollouts", &spec);
    assert_eq!(s, 201, "{v}");
    let v = wait_for(&base, "nginx-reload-fails", Duration::from_secs(20), |v| {
        v["phase"] != "pending" && v["phase"] != "progressing"
    });
    assert_eq!(v["phase"], "paused", "{v}");
    let why = v["reason"].as_str().unwrap_or("");
    assert!(
        why.contains("nginx: the reload command `/bin/false` failed"),
        "{v}"
    );
    assert!(!conf.exists(), "nothing half-written");

    // HAProxy's weights did not move: everything still goes to stable.
    for _ in 0..20 {
        let (code, body) = support::http_get(server.addr, "/").unwrap();
        assert_eq!((code, body.trim()), (200, "stable"));
    }
}

/// `canary serve` built with `--features alb` (CI: `cargo test -p canary
/// --features alb --test serve alb`) drives an ALB listener on moto: the
/// first stage's weights are on the listener (read back independently)
/// when the status says applied, and an abort puts everything back on
/// stable.
#[cfg(feature = "alb")]
#[test]
fn serve_drives_an_alb_listener_and_an_abort_returns_it_to_stable() {
    use canary_alb::testing::{moto, setup};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(m) = moto() else { return };
    let s = rt.block_on(setup(&m.url));
    let dir = TempDir::new("alb");
    let serve = ServeProc::start_with_env(
        &dir.0.join("c.db"),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let base = serve.base.clone();
    // Metrics from endpoints nobody serves: the rollout holds at its first
    // stage (no evidence, nothing promoted) with the weight applied.
    let spec = format!(
        "name: web\nstages:\n  - {{weight: 10, duration: 1m}}\n  - {{weight: 100, duration: 1m}}\n\
         analysis: {{interval: 200ms}}\n\
         traffic:\n  provider: alb\n  alb:\n    listener: {}\n    stable_target_group: {}\n    \
         canary_target_group: {}\n    region: us-east-1\n    endpoint_url: {}\n\
         metrics:\n  provider: scrape\n  scrape:\n    preset: http\n    \
         stable: [\"http://127.0.0.1:9/metrics\"]\n    canary: [\"http://127.0.0.1:8/metrics\"]\n",
        s.listener, s.stable, s.canary, m.url
    );
    let (code, v) = post(&base, "/api/v1/rollouts", &spec);
    assert_eq!(code, 201, "{v}");
    let v = wait_for(&base, "web", Duration::from_secs(20), |v| {
        v["applied_weight"] == json!(10.0)
    });
    assert_eq!(v["phase"], "progressing", "{v}");
    let mut alb = canary_alb::Alb::with_client(&s.spec, s.client.clone());
    let w = rt.block_on(alb.weights()).unwrap();
    assert_eq!((w.stable, w.canary), (9, 1));
    let (code, v) = action(&base, "web", "abort");
    assert_eq!(code, 200, "{v}");
    wait_for(&base, "web", Duration::from_secs(20), |v| {
        v["phase"] == "aborted" && v["applied_weight"] == json!(0.0)
    });
    let w = rt.block_on(alb.weights()).unwrap();
    assert_eq!((w.stable, w.canary), (1, 0));
}

/// `canary serve` built with `--features kubernetes` (CI: `cargo test -p
/// canary --features kubernetes --test serve kubernetes`) drives an Istio
/// VirtualService on the test kit's stand-in API server, through a
/// kubeconfig: the first stage's weights are in the object (read back from
/// the stand-in) when the status says applied, and an abort puts
/// everything back on stable.
#[cfg(feature = "kubernetes")]
#[test]
fn serve_drives_a_kubernetes_virtual_service_and_an_abort_returns_it_to_stable() {
    use canary_kube::testing::StandIn;
    let s = StandIn::start();
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]}]}});
    s.put(vs.clone());
    let dir = TempDir::new("kubernetes");
    let kubeconfig = s.kubeconfig(&dir.0, "shop");
    let serve = ServeProc::start(&dir.0.join("c.db"));
    let base = serve.base.clone();
    // Metrics from endpoints nobody serves: the rollout holds at its first
    // stage (no evidence, nothing promoted) with the weight applied.
    let spec = format!(
        "name: web\nstages:\n  - {{weight: 10, duration: 1m}}\n  - {{weight: 100, duration: 1m}}\n\
         analysis: {{interval: 200ms}}\n\
         traffic:\n  provider: istio\n  kubernetes:\n    kubeconfig: {}\n    \
         virtual_service: web\n    stable: stable\n    canary: canary\n\
         metrics:\n  provider: scrape\n  scrape:\n    preset: http\n    \
         stable: [\"http://127.0.0.1:9/metrics\"]\n    canary: [\"http://127.0.0.1:8/metrics\"]\n",
        kubeconfig.display()
    );
    let (code, v) = post(&base, "/api/v1/rollouts", &spec);
    assert_eq!(code, 201, "{v}");
    let v = wait_for(&base, "web", Duration::from_secs(20), |v| {
        v["applied_weight"] == json!(10.0)
    });
    assert_eq!(v["phase"], "progressing", "{v}");
    let weights = |v: &serde_json::Value| -> Vec<u64> {
        v["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "primary")
            .unwrap()["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["weight"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(weights(&s.get(&vs).unwrap()), [90, 10]);
    let (code, v) = action(&base, "web", "abort");
    assert_eq!(code, 200, "{v}");
    wait_for(&base, "web", Duration::from_secs(20), |v| {
        v["phase"] == "aborted" && v["applied_weight"] == json!(0.0)
    });
    assert_eq!(weights(&s.get(&vs).unwrap()), [100, 0]);
}

/// A tiny health endpoint: 200 while `ok` is set, 503 otherwise.
fn health_endpoint(ok: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let answer = if ok.load(std::sync::atomic::Ordering::SeqCst) {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
            };
            let _ = s.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}/healthz")
}

/// A weight held back by `traffic.health` for longer than its stage: the
/// stage does not pass at the old weight meanwhile, the log says it was
/// held and when it was applied, and the stage's bake counts from then.
#[test]
fn a_health_hold_stops_the_stage_clock_until_the_weight_is_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = TempDir::new("health-hold");
    let db = dir.0.join("t.db");
    let mut srv = ServeProc::start(&db);
    let mut base = srv.base.clone();
    let stable_ok = Arc::new(AtomicBool::new(true));
    let canary_ok = Arc::new(AtomicBool::new(true));
    let spec = format!(
        "name: held\nstages:\n  - {{weight: 10, duration: 3s}}\n  - {{weight: 50, duration: 2s}}\n  - {{weight: 100, duration: 1s}}\n\
         analysis: {{interval: 200ms, min_requests: 50}}\n\
         traffic:\n  provider: simulated\n  scenario: healthy\n  requests_per_second: 3000\n  health:\n    http: {{stable: {}, canary: {}}}\n    deadline: 1m\n",
        health_endpoint(stable_ok),
        health_endpoint(canary_ok.clone()),
    );
    let (s, v) = post(&base, "/api/v1/rollouts", &spec);
    assert_eq!(s, 201, "{v}");
    wait_for(&base, "held", Duration::from_secs(20), |v| {
        v["applied_weight"] == 10.0
    });
    // The canary turns unhealthy before its first stage (3 s) passes.
    canary_ok.store(false, Ordering::SeqCst);
    let v = wait_for(&base, "held", Duration::from_secs(20), |v| {
        v["desired_weight"] == 50.0
    });
    assert_eq!(v["applied_weight"], 10.0, "{v}");
    // Held for 40 polls 100 ms apart (over 4 s, twice the stage's 2 s):
    // never past the 50 % stage, also across a kill -9 and a restart (the
    // hold is in the journal).
    for i in 0..40 {
        if i == 10 {
            srv.kill9();
            srv = ServeProc::start(&db);
            base = srv.base.clone();
        }
        let (_, v) = get(&base, "/api/v1/rollouts/held");
        assert_eq!(v["phase"], "progressing", "{v}");
        assert_eq!(v["desired_weight"], 50.0, "{v}");
        assert_eq!(v["applied_weight"], 10.0, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, v) = get(&base, "/api/v1/rollouts/held");
    let waiting = v["waiting_for"].as_str().unwrap_or("");
    assert!(waiting.contains("traffic layer to take 50 %"), "{v}");
    canary_ok.store(true, Ordering::SeqCst);
    let v = wait_for(&base, "held", Duration::from_secs(30), |v| {
        v["phase"] == "succeeded"
    });
    assert_eq!(v["applied_weight"], 100.0, "{v}");
    let log = events(&base, "held");
    let find = |event: &str, weight: f64| {
        log.iter()
            .find(|e| {
                e["event"] == event
                    && (e["detail"]["weight"] == weight || e["detail"]["weight_after"] == weight)
            })
            .unwrap_or_else(|| panic!("no {event} at {weight}: {log:#?}"))
    };
    let held = find("weight_held", 50.0);
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("canary health probe"),
        "{held}"
    );
    assert_eq!(
        log.iter().filter(|e| e["event"] == "weight_held").count(),
        1,
        "{log:#?}"
    );
    let applied = find("weight_applied", 50.0);
    assert!(
        applied["reason"]
            .as_str()
            .unwrap()
            .contains("clock restarts"),
        "{applied}"
    );
    let advance = find("advance", 100.0);
    let ms = |e: &Value| e["at_ms"].as_u64().unwrap();
    assert!(ms(applied) - ms(held) >= 4000, "{log:#?}");
    // The 2 s bake of the 50 % stage counts from when 50 % was applied.
    assert!(ms(advance) - ms(applied) >= 2000, "{log:#?}");
}
