//! Live rollouts on loopback: real `canary demo-backend` processes (port 0,
//! stopped by their PID), the proxy and the controller in this process.
//! Ticks are driven by hand with chosen `now` values, so no assertion depends
//! on timing the test does not control.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use canary_controller::Controller;
use canary_core::Policy;
use canary_demo::launch::ChildBackend;
use canary_demo::loadgen::{self, LoadConfig, StopLoad};
use canary_engine::Engine;
use canary_proxy::{Proxy, ProxyConfig, ProxyHandle, Upstream, Version};
use tokio::runtime::Runtime;

/// A `canary demo-backend` child process of this build, killed when dropped.
fn backend(name: &str, extra: &[&str]) -> ChildBackend {
    ChildBackend::start(env!("CARGO_BIN_EXE_canary"), name, extra).unwrap()
}

/// The proxy, serving on a runtime until dropped or stopped.
struct ProxyUnderTest {
    handle: ProxyHandle,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyUnderTest {
    fn start(rt: &Runtime, stable: &ChildBackend, canary: &ChildBackend, weight: f64) -> Self {
        Self::start_with(rt, stable, canary, weight, |_| {})
    }

    fn start_with(
        rt: &Runtime,
        stable: &ChildBackend,
        canary: &ChildBackend,
        weight: f64,
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Self {
        let mut config = ProxyConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            Upstream::parse(&stable.url()).unwrap(),
            Upstream::parse(&canary.url()).unwrap(),
        );
        config.initial_weight = weight;
        config.route.seed = 11;
        config.connect_timeout = Duration::from_millis(500);
        tweak(&mut config);
        let proxy = rt.block_on(Proxy::bind(config)).unwrap();
        let addr = proxy.local_addr().unwrap();
        let handle = proxy.handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(proxy.serve(async move {
            let _ = rx.await;
        }));
        Self {
            handle,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn load(&self, rt: &Runtime, requests: u64, concurrency: usize) -> loadgen::LoadReport {
        let mut cfg = LoadConfig::new(
            format!("http://{}/", self.addr).parse().unwrap(),
            concurrency,
        );
        cfg.max_requests = Some(requests);
        rt.block_on(loadgen::run(cfg, StopLoad::new()))
    }

    /// Signals shutdown and waits until the proxy has drained.
    fn shutdown(&mut self, rt: &Runtime) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            rt.block_on(t).unwrap();
        }
    }
}

/// One blocking HTTP/1.1 request: (status, x-canary-version, x-backend).
fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    (status, header("x-canary-version"), header("x-backend"))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Within `k` binomial standard deviations of `n·p`.
fn within(count: u64, n: u64, p: f64, k: f64) -> bool {
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - n as f64 * p).abs() <= k * sd
}

#[test]
fn split_matches_the_weight_within_a_binomial_interval() {
    let rt = runtime();
    let (stable, canary) = (backend("stable", &[]), backend("canary", &[]));
    let proxy = ProxyUnderTest::start(&rt, &stable, &canary, 20.0);
    let n = 4000;
    let r = proxy.load(&rt, n, 16);
    assert_eq!(r.sent, n);
    assert_eq!(r.classes[1], n, "{r:?}");
    let on_canary = r.by_version[Version::Canary.index()];
    // ±4 sd: a correct router fails this about once in 16 000 runs.
    assert!(within(on_canary, n, 0.2, 4.0), "{on_canary} of {n}");
    // The recorder agrees with what the clients saw.
    let w = proxy.handle.snapshot_window();
    assert_eq!(w.canary.requests, on_canary);
    assert_eq!(w.baseline.requests + w.canary.requests, n);
    assert_eq!(w.canary.latency.count(), on_canary);
}

#[test]
fn sticky_clients_stay_put_and_move_only_toward_the_canary() {
    let rt = runtime();
    let (stable, canary) = (backend("stable", &[]), backend("canary", &[]));
    let proxy = ProxyUnderTest::start_with(&rt, &stable, &canary, 10.0, |c| {
        c.route.sticky = Some(canary_proxy::KeySource::Cookie("uid".into()));
        c.route.overrides = vec![canary_proxy::KeySource::Header(
            canary_proxy::route::HeaderName::from_static("x-canary"),
        )];
    });
    let users: Vec<String> = (0..300).map(|i| format!("uid=u{i}")).collect();
    let mut was_canary = vec![false; users.len()];
    for weight in [10.0, 40.0, 70.0] {
        proxy.handle.set_weight(weight).unwrap();
        let mut n = 0;
        for (i, u) in users.iter().enumerate() {
            let (status, version, backend) = get(proxy.addr, &[("cookie", u)]);
            assert_eq!(status, 200);
            // The header names the version, and that version's backend answered.
            assert_eq!(version, backend);
            // Asking again at the same weight gives the same version.
            assert_eq!(get(proxy.addr, &[("cookie", u)]).1, version);
            let is_canary = version == "canary";
            assert!(is_canary || !was_canary[i], "{u} moved back at {weight} %");
            was_canary[i] = is_canary;
            n += u64::from(is_canary);
        }
        assert!(
            within(n, 300, weight / 100.0, 4.0),
            "{n} of 300 at {weight} %"
        );
    }
    // An override beats stickiness either way.
    let (_, v, b) = get(proxy.addr, &[("cookie", "uid=u1"), ("x-canary", "canary")]);
    assert_eq!((v.as_str(), b.as_str()), ("canary", "canary"));
    proxy.handle.set_weight(100.0).unwrap();
    let (_, v, _) = get(proxy.addr, &[("cookie", "uid=u1"), ("x-canary", "stable")]);
    assert_eq!(v, "stable");
}

#[test]
fn a_thousand_weight_changes_under_load_fail_no_request() {
    let rt = runtime();
    let (stable, canary) = (backend("stable", &[]), backend("canary", &[]));
    let proxy = ProxyUnderTest::start(&rt, &stable, &canary, 50.0);
    let url: canary_demo::loadgen::Uri = format!("http://{}/", proxy.addr).parse().unwrap();
    let handle = proxy.handle.clone();
    let report = rt.block_on(async move {
        let stop = StopLoad::new();
        let load = tokio::spawn(loadgen::run(LoadConfig::new(url, 32), stop.clone()));
        let served = |h: &ProxyHandle| {
            h.counters(Version::Stable).requests + h.counters(Version::Canary).requests
        };
        // Each change waits until at least one more request has been served,
        // so changes and requests interleave whatever the machine's speed.
        for i in 0..1000u32 {
            let before = served(&handle);
            while served(&handle) == before {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            handle.set_weight(f64::from((i * 37) % 101)).unwrap();
        }
        stop.stop();
        load.await.unwrap()
    });
    assert!(report.sent >= 1000, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.classes[1], report.sent, "{report:?}");
    assert!(report.by_version[0] > 0 && report.by_version[1] > 0);
    let metrics = proxy.handle.metrics_text();
    assert!(
        metrics.contains("canary_proxy_weight_changes_total 1000\n"),
        "{metrics}"
    );
    assert!(metrics.contains("canary_proxy_errors_total{version=\"canary\"} 0\n"));
    // Keep-alive upstream connections are reused: at most one per client
    // connection (32) and version, however many requests went through.
    for v in ["stable", "canary"] {
        let key = format!("canary_proxy_upstream_connections_opened_total{{version=\"{v}\"}} ");
        let opened: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {metrics}"));
        assert!((1..=32).contains(&opened), "{v}: {opened} opened");
    }
}

fn policy(spec: &str) -> Policy {
    Policy::from_text(spec).unwrap()
}

/// A controller with the policy's (default) judge driving the proxy.
fn controller(policy: Policy, proxy: &ProxyUnderTest) -> Controller<ProxyHandle, ProxyHandle> {
    Controller::new(
        Engine::new(policy),
        proxy.handle.clone(),
        proxy.handle.clone(),
    )
}

const LONG_STAGES: &str = "\
name: live-test
stages:
  - {weight: 20, duration: 1h}
  - {weight: 100, duration: 1h}
analysis: {interval: 1s, min_requests: 50}
";

#[test]
fn a_killed_canary_is_recorded_as_errors_and_rolled_back() {
    let rt = runtime();
    let (stable, mut canary) = (backend("stable", &[]), backend("canary", &[]));
    let proxy = ProxyUnderTest::start(&rt, &stable, &canary, 0.0);
    let mut c = controller(policy(LONG_STAGES), &proxy);
    let s = Duration::from_secs;
    rt.block_on(c.start(s(0))).unwrap();
    assert_eq!(proxy.handle.weight(), 20.0);
    let r = proxy.load(&rt, 1000, 8);
    assert_eq!(r.errors(), 0);
    // No look at the healthy traffic alone: on a loaded machine the
    // wall-clock latencies of two identical backends are not exchangeable,
    // and a latency alarm there is not what this test is about.

    canary.kill();
    let r = proxy.load(&rt, 1000, 8);
    // Every request routed to the dead canary failed, and only those.
    assert_eq!(r.classes[4], r.by_version[Version::Canary.index()]);
    assert!(r.classes[4] > 100, "{r:?}");
    let counters = proxy.handle.counters(Version::Canary);
    assert!(
        counters.connect_errors + counters.upstream_errors >= r.classes[4],
        "{counters:?}"
    );
    rt.block_on(c.tick(s(20))).unwrap();
    let report = c.report();
    assert_eq!(report.phase, "rolled_back", "{report:#?}");
    assert!(
        report.rollback_reason.contains("error"),
        "{}",
        report.rollback_reason
    );
    assert_eq!(proxy.handle.weight(), 0.0);

    // After the rollback every request goes to the stable version and succeeds.
    let r = proxy.load(&rt, 300, 8);
    assert_eq!((r.classes[1], r.by_version[0]), (300, 300));
}

#[test]
fn a_gradual_rollback_steps_the_proxy_down_and_measures_each_step() {
    let rt = runtime();
    let (stable, canary) = (
        backend("stable", &[]),
        backend("canary", &["--error-rate", "0.3"]),
    );
    let proxy = ProxyUnderTest::start(&rt, &stable, &canary, 0.0);
    let spec = format!(
        "{LONG_STAGES}rollback: {{mode: gradual, steps: [10, 5, 0], step_interval: 10s}}\n"
    );
    let mut c = controller(policy(&spec), &proxy);
    let s = Duration::from_secs;
    rt.block_on(c.start(s(0))).unwrap();
    proxy.load(&rt, 1000, 8);
    rt.block_on(c.tick(s(1))).unwrap();
    assert_eq!(c.report().phase, "rolling_back", "{:#?}", c.report());
    let mut seen = vec![proxy.handle.weight()];
    // Each step holds 10 s and the proxy routes it: about that share of
    // 2,000 requests reaches the canary.
    for t in [6, 11, 16, 21] {
        let r = proxy.load(&rt, 2000, 8);
        let w = proxy.handle.weight();
        assert!(
            within(r.by_version[Version::Canary.index()], 2000, w / 100.0, 4.0),
            "{w} %: {r:?}"
        );
        rt.block_on(c.tick(s(t))).unwrap();
        if proxy.handle.weight() != *seen.last().unwrap() {
            seen.push(proxy.handle.weight());
        }
    }
    assert_eq!(seen, [10.0, 5.0, 0.0]);
    let report = c.report();
    assert_eq!(report.phase, "rolled_back");
    let logged = report
        .decisions
        .iter()
        .filter(|d| d.action == canary_core::Action::RollbackStep)
        .count();
    assert_eq!(logged, 2, "{:#?}", report.decisions);
}

#[test]
fn a_slow_canary_is_caught_by_its_latency() {
    let rt = runtime();
    let (stable, canary) = (
        backend("stable", &["--latency-ms", "2", "--jitter-ms", "2"]),
        backend("canary", &["--latency-ms", "25", "--jitter-ms", "2"]),
    );
    let proxy = ProxyUnderTest::start(&rt, &stable, &canary, 0.0);
    let mut c = controller(policy(LONG_STAGES), &proxy);
    let s = Duration::from_secs;
    rt.block_on(c.start(s(0))).unwrap();
    let mut t = 0;
    while c.report().phase == "progressing" && t < 10 {
        let r = proxy.load(&rt, 500, 32);
        assert_eq!(r.errors(), 0);
        t += 1;
        rt.block_on(c.tick(s(t))).unwrap();
    }
    let report = c.report();
    assert_eq!(report.phase, "rolled_back", "{report:#?}");
    assert!(
        report.rollback_reason.contains("latency"),
        "{}",
        report.rollback_reason
    );
    // No error-rate difference was involved.
    assert_eq!(report.stages[0].canary.errors, 0);
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let rt = runtime();
    let (stable, canary) = (
        backend("stable", &["--latency-ms", "400"]),
        backend("canary", &["--latency-ms", "400"]),
    );
    let mut proxy = ProxyUnderTest::start(&rt, &stable, &canary, 50.0);
    let addr = proxy.addr;
    let clients: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || get(addr, &[]).0))
        .collect();
    // Wait (on the proxy's own gauge, not the clock) until all are in flight.
    let in_flight = |h: &ProxyHandle| {
        h.counters(Version::Stable).in_flight + h.counters(Version::Canary).in_flight
    };
    while in_flight(&proxy.handle) < 16 {
        std::thread::sleep(Duration::from_millis(1));
    }
    proxy.shutdown(&rt);
    // serve() returned only after every in-flight request was answered.
    assert_eq!(in_flight(&proxy.handle), 0);
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    // And the listener is closed.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn canary_run_aborts_on_sigint_with_weight_zero_and_a_report() {
    let (stable, canary) = (backend("stable", &[]), backend("canary", &[]));
    let spec = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-run.yaml");
    std::fs::write(
        &spec,
        format!(
            "{LONG_STAGES}traffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n",
            stable.url(),
            canary.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["run", "--spec"])
        .arg(&spec)
        .args(["--admin", "127.0.0.1:0", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let find = |seen: &mut String, stderr: &mut BufReader<_>, what: &str| -> SocketAddr {
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
            seen.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix(what) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr.trim_start_matches("http://").parse().unwrap();
            }
        }
    };
    let addr = find(&mut seen, &mut stderr, "proxy listening on");
    let admin = find(&mut seen, &mut stderr, "admin (healthz, metrics) on");
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    // The rollout started: the proxy serves, the admin port answers.
    for _ in 0..20 {
        assert_eq!(get(addr, &[]).0, 200);
    }
    let mut s = TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut health = String::new();
    s.read_to_string(&mut health).unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let rest = drain.join().unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}{rest}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["phase"], "aborted");
    assert_eq!(report["final_weight"], 0.0);
    assert!(rest.contains("abort"), "{rest}");
}
