//! The proxy serving on its own worker threads (`ProxyConfig::workers`):
//! forwarding, the weight split, stickiness and a draining shutdown, with
//! in-process backends on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use canary_demo::backend::BackendConfig;
use canary_demo::launch::{InProcess, LOOPBACK};
use canary_demo::loadgen::{self, LoadConfig, StopLoad};
use canary_proxy::route::HeaderName;
use canary_proxy::{KeySource, Proxy, ProxyConfig, ProxyHandle, Upstream, Version};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a backend on `rt`; returns its URL and the guard that stops it.
fn backend(rt: &Runtime, name: &str, latency: Duration) -> (String, InProcess) {
    let mut config = BackendConfig::new(LOOPBACK, name);
    config.latency = latency;
    let b = rt.block_on(InProcess::start(config)).unwrap();
    (b.url(), b)
}

struct Started {
    addr: SocketAddr,
    handle: ProxyHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn proxy(rt: &Runtime, stable: &str, canary: &str, weight: f64) -> Started {
    let mut config = ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Upstream::parse(stable).unwrap(),
        Upstream::parse(canary).unwrap(),
    );
    config.initial_weight = weight;
    config.workers = 2;
    config.route.seed = 3;
    config.route.overrides = vec![KeySource::Header(HeaderName::from_static("x-canary"))];
    let p = rt.block_on(Proxy::bind(config)).unwrap();
    let (addr, handle) = (p.local_addr().unwrap(), p.handle());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(p.serve(async move {
        let _ = rx.await;
    }));
    Started {
        addr,
        handle,
        stop,
        task,
    }
}

/// One blocking request; the status and the body.
fn get(addr: SocketAddr, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /x?y=1 HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn workers_split_by_weight_and_honour_overrides() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let (canary, _c) = backend(&rt, "canary", Duration::ZERO);
    let p = proxy(&rt, &stable, &canary, 20.0);
    let mut cfg = LoadConfig::new(format!("http://{}/", p.addr).parse().unwrap(), 16);
    cfg.max_requests = Some(4000);
    let r = rt.block_on(loadgen::run(cfg, StopLoad::new()));
    assert_eq!((r.errors(), r.failed, r.classes[1]), (0, 0, 4000), "{r:?}");
    // Binomial(4000, 0.2): sd = 25.3; ±4 sd.
    let canary_n = r.by_version[Version::Canary.index()];
    assert!((699..=901).contains(&canary_n), "{canary_n}");
    let seen = p.handle.cumulative();
    assert_eq!(seen.baseline.requests + seen.canary.requests, 4000);
    assert_eq!(seen.canary.requests, canary_n);
    assert_eq!(
        get(p.addr, "x-canary: canary\r\n"),
        (200, "canary\n".into())
    );
    p.handle.set_weight(100.0).unwrap();
    assert_eq!(
        get(p.addr, "x-canary: stable\r\n"),
        (200, "stable\n".into())
    );
    assert_eq!(get(p.addr, ""), (200, "canary\n".into()));
}

#[test]
fn workers_drain_in_flight_requests_on_shutdown() {
    let rt = runtime();
    let slow = Duration::from_millis(300);
    let (stable, _s) = backend(&rt, "stable", slow);
    let (canary, _c) = backend(&rt, "canary", slow);
    let p = proxy(&rt, &stable, &canary, 50.0);
    let addr = p.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(addr, "").0))
        .collect();
    let in_flight = |h: &ProxyHandle| {
        h.counters(Version::Stable).in_flight + h.counters(Version::Canary).in_flight
    };
    while in_flight(&p.handle) < 8 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = p.stop.send(());
    rt.block_on(p.task).unwrap();
    assert_eq!(in_flight(&p.handle), 0);
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn h2c_with_prior_knowledge_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let (canary, _c) = backend(&rt, "canary", Duration::ZERO);
    let p = proxy(&rt, &stable, &canary, 0.0);
    let addr = p.addr;
    let bodies = rt.block_on(async move {
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        // 50 streams at once on one connection, one of them forced to the canary.
        let requests = (0..50).map(|i| {
            let mut sender = sender.clone();
            async move {
                let mut req = hyper::Request::get(format!("http://{addr}/s/{i}"));
                if i == 7 {
                    req = req.header("x-canary", "canary");
                }
                let resp = sender
                    .send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.version(), hyper::Version::HTTP_2);
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                (
                    parts.status,
                    parts.headers["x-canary-version"].clone(),
                    body,
                )
            }
        });
        let handles: Vec<_> = requests.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    });
    for (i, (status, version, body)) in bodies.iter().enumerate() {
        let want = if i == 7 { "canary" } else { "stable" };
        assert_eq!(*status, 200);
        assert_eq!(version, want);
        assert_eq!(body, &format!("{want}\n"));
    }
    let seen = p.handle.cumulative();
    assert_eq!((seen.baseline.requests, seen.canary.requests), (49, 1));
}

#[test]
fn a_port_in_use_is_refused_even_with_workers_sharing_it() {
    let rt = runtime();
    let (stable, _s) = backend(&rt, "stable", Duration::ZERO);
    let first = proxy(&rt, &stable, &stable, 0.0);
    let mut config = ProxyConfig::new(
        first.addr,
        Upstream::parse(&stable).unwrap(),
        Upstream::parse(&stable).unwrap(),
    );
    config.workers = 2;
    let second = rt.block_on(Proxy::bind(config));
    assert!(
        matches!(second, Err(canary_proxy::ProxyError::Bind { .. })),
        "a second proxy bound the port of the first"
    );
}
