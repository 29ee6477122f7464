//! Hostile and careless clients against the proxy (issue 10), with
//! in-process backends on loopback: clients that give up on a slow canary,
//! CONNECT, writes to the admin port, an unreachable upstream. Waits are
//! bounded polls of the proxy's own counters, never a timed assertion.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use canary_demo::backend::BackendConfig;
use canary_demo::launch::{InProcess, LOOPBACK};
use canary_proxy::{Proxy, ProxyConfig, ProxyHandle, Upstream, Version};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn backend(rt: &Runtime, name: &str, latency: Duration) -> (String, InProcess) {
    let mut config = BackendConfig::new(LOOPBACK, name);
    config.latency = latency;
    let b = rt.block_on(InProcess::start(config)).unwrap();
    (b.url(), b)
}

struct Started {
    addr: SocketAddr,
    admin: SocketAddr,
    handle: ProxyHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn proxy(rt: &Runtime, stable: &str, canary: &str, weight: f64) -> Started {
    let mut config = ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Upstream::parse(stable).unwrap(),
        Upstream::parse(canary).unwrap(),
    );
    config.initial_weight = weight;
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let p = rt.block_on(Proxy::bind(config)).unwrap();
    let (addr, admin, handle) = (p.local_addr().unwrap(), p.admin_addr().unwrap(), p.handle());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(p.serve(async move {
        let _ = rx.await;
    }));
    Started {
        addr,
        admin,
        handle,
        _stop: stop,
    }
}

fn request(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Polls `done` every 20 ms for up to 10 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Issue 10: clients that gave up on a 10 s canary were recorded nowhere
/// (0 canary requests, `in_flight` stuck), so the judge never saw the
/// slowest, worst canary.
#[test]
fn requests_whose_client_leaves_count_as_the_versions_errors() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let (canary, _c) = backend(&rt, "canary", Duration::from_secs(30));
    let p = proxy(&rt, &stable, &canary, 100.0);
    for i in 1..=5 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // Wait until the proxy has routed this one (the earlier ones are
        // in flight or recorded), then give up.
        assert!(eventually(|| {
            let c = p.handle.counters(Version::Canary);
            c.requests as i64 + c.in_flight >= i
        }));
        drop(s);
    }
    assert!(
        eventually(|| {
            let c = p.handle.counters(Version::Canary);
            c.requests == 5 && c.in_flight == 0
        }),
        "{:?}",
        p.handle.counters(Version::Canary)
    );
    let c = p.handle.counters(Version::Canary);
    assert_eq!((c.errors, c.abandoned), (5, 5));
    let w = p.handle.snapshot_window();
    assert_eq!((w.canary.requests, w.canary.errors), (5, 5));
    assert_eq!(w.canary.latency.count(), 5, "with their latency so far");
    let metrics = request(
        p.admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains(
            "canary_proxy_upstream_failures_total{version=\"canary\",kind=\"abandoned\"} 5"
        ),
        "{metrics}"
    );
}

/// Issue 10: CONNECT was forwarded as `CONNECT / HTTP/1.1`.
#[test]
fn connect_is_refused_without_asking_either_version() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let (canary, _c) = backend(&rt, "canary", Duration::ZERO);
    let p = proxy(&rt, &stable, &canary, 50.0);
    let out = request(
        p.addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(out.to_ascii_lowercase().contains("allow:"), "{out}");
    for v in Version::BOTH {
        assert_eq!(p.handle.counters(v).requests, 0);
    }
}

/// Issue 10: `/weight` and `/metrics` answered any method.
#[test]
fn the_admin_port_answers_get_and_head_only() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let (canary, _c) = backend(&rt, "canary", Duration::ZERO);
    let p = proxy(&rt, &stable, &canary, 10.0);
    for path in ["/weight", "/metrics", "/healthz"] {
        let out = request(
            p.admin,
            &format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n50"),
        );
        assert!(out.starts_with("HTTP/1.1 405"), "{path}: {out}");
        assert!(
            out.to_ascii_lowercase().contains("allow: get, head"),
            "{out}"
        );
    }
    assert_eq!(p.handle.weight(), 10.0, "nothing changed");
    let out = request(
        p.admin,
        "GET /weight HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("10\n"),
        "{out}"
    );
}

/// Issue 10: the proxy's own 502s were missing from `responses_total{class}`.
#[test]
fn the_proxys_own_502s_count_as_5xx_responses() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let p = proxy(&rt, &stable, &url, 100.0);
    let out = request(
        p.addr,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    let c = p.handle.counters(Version::Canary);
    assert_eq!((c.connect_errors, c.classes[4], c.errors), (1, 1, 1));
    let metrics = request(
        p.admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("canary_proxy_responses_total{version=\"canary\",class=\"5xx\"} 1"),
        "{metrics}"
    );
}
