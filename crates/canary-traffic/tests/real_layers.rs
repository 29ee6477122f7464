//! The nginx and HAProxy layers against the real servers (Debian's `nginx`
//! and `haproxy`), started by each test on free loopback ports with their
//! own temporary configuration and stopped by PID, in front of two demo
//! backends. Without the binaries the tests say "skipped" and pass, unless
//! `CANARY_REQUIRE_NGINX` / `CANARY_REQUIRE_HAPROXY` is set (CI sets both
//! and installs them), where a missing one fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use canary_demo::launch::{InProcess, LOOPBACK};
use canary_demo::BackendConfig;
use canary_engine::{MetricsSource, TrafficActuator};
use canary_traffic::testing::{
    free_port, haproxy_binary, haproxy_spec, nginx_binary, nginx_spec, start_haproxy, start_nginx,
};
use canary_traffic::{Haproxy, HaproxyStats, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "canary-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Which backend answered one GET (its `x-backend` header), with extra
/// request headers.
async fn backend_of(addr: SocketAddr, headers: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("x-backend: "))
        .unwrap_or_else(|| panic!("no x-backend header: {text}"))
        .trim()
        .to_string()
}

/// Canary answers among `n` requests.
async fn canary_share(addr: SocketAddr, n: usize) -> usize {
    let mut canary = 0;
    for _ in 0..n {
        if backend_of(addr, "").await == "canary" {
            canary += 1;
        }
    }
    canary
}

/// The binomial 99.9 % interval for `n` draws at `p` (normal approximation,
/// z = 3.29, widened by one for the discreteness).
fn binomial_999(n: usize, p: f64) -> (usize, usize) {
    let (m, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    (
        ((m - 3.29 * sd).floor() - 1.0) as usize,
        ((m + 3.29 * sd).ceil() + 1.0) as usize,
    )
}

async fn backends() -> (InProcess, InProcess) {
    let s = InProcess::start(BackendConfig::new(LOOPBACK, "stable"))
        .await
        .unwrap();
    let c = InProcess::start(BackendConfig::new(LOOPBACK, "canary"))
        .await
        .unwrap();
    (s, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_the_split_it_is_given_and_keeps_its_file_when_a_change_fails() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let dir = temp_dir("nginx");
    let (stable, canary) = backends().await;
    let spec = nginx_spec(&dir, &bin, stable.addr(), canary.addr());
    let nginx = start_nginx(&bin, &dir, &spec);
    let addr = nginx.addr;
    let mut layer = Nginx::new(&spec);

    // A/B routes: the header, then the cookie, force a version at 0 %.
    assert_eq!(backend_of(addr, "x-canary: canary\r\n").await, "canary");
    assert_eq!(
        backend_of(addr, "cookie: canary=canary\r\n").await,
        "canary"
    );
    assert_eq!(
        backend_of(addr, "x-canary: stable\r\ncookie: canary=canary\r\n").await,
        "stable"
    );

    layer.set_weight(10.0).await.unwrap();
    let n = 2000;
    let got = canary_share(addr, n).await;
    let (lo, hi) = binomial_999(n, 0.10);
    assert!(
        (lo..=hi).contains(&got),
        "10 %: {got} of {n} to the canary, not in [{lo}, {hi}]"
    );
    eprintln!("nginx at 10 %: {got} of {n} requests to the canary (99.9 % interval [{lo}, {hi}])");

    // Applied means applied: no worker of the 10 % configuration answers
    // once `set_weight` has returned.
    layer.set_weight(100.0).await.unwrap();
    assert_eq!(canary_share(addr, 200).await, 200);
    assert_eq!(backend_of(addr, "x-canary: stable\r\n").await, "stable");
    let good = std::fs::read_to_string(&spec.config).unwrap();

    // A check that fails (a server nginx cannot resolve): the error names
    // nginx, the command and the file; the previous file stays.
    let mut broken = spec.clone();
    broken.canary = vec!["no-such-host.invalid:80".into()];
    let e = Nginx::new(&broken).set_weight(50.0).await.unwrap_err();
    let m = e.to_string();
    assert!(e.is_permanent(), "{m}");
    assert!(
        m.contains("nginx: the check command") && m.contains("canary-app.conf"),
        "{m}"
    );
    assert!(m.contains("previous file is back"), "{m}");
    assert_eq!(std::fs::read_to_string(&spec.config).unwrap(), good);

    // A reload that fails: the same, and nginx keeps serving 100 %.
    let mut no_reload = spec.clone();
    no_reload.reload_command = Some(vec!["/bin/false".into()]);
    let e = Nginx::new(&no_reload).set_weight(50.0).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("the reload command `/bin/false` failed"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&spec.config).unwrap(), good);
    assert_eq!(canary_share(addr, 50).await, 50);
    assert!(!Path::new(&format!("{}.canary-tmp", spec.config)).exists());

    drop(nginx);
    stable.stop().await;
    canary.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sets_weights_reads_them_back_and_counts_per_server() {
    let Some(bin) = haproxy_binary() else {
        return;
    };
    let dir = temp_dir("haproxy");
    let (stable, canary) = backends().await;
    let server = start_haproxy(&bin, &dir, stable.addr(), canary.addr());
    let addr = server.addr;
    let spec = haproxy_spec(&dir);
    let mut layer = Haproxy::new(&spec);
    let mut stats = HaproxyStats::new(&spec);
    assert_eq!(stats.read_window().await.unwrap().canary.requests, 0);

    assert_eq!(
        canary_share(addr, 100).await,
        0,
        "weight 0 routes nothing to the canary"
    );
    // A/B routes: the header or the cookie force a version, whatever the weight.
    assert_eq!(backend_of(addr, "x-canary: canary\r\n").await, "canary");
    assert_eq!(
        backend_of(addr, "cookie: canary=canary\r\n").await,
        "canary"
    );
    layer.set_weight(10.0).await.unwrap();
    let n = 2000;
    let got = canary_share(addr, n).await;
    let (lo, hi) = binomial_999(n, 0.10);
    assert!(
        (lo..=hi).contains(&got),
        "10 %: {got} of {n} to the canary, not in [{lo}, {hi}]"
    );
    eprintln!(
        "haproxy at 10 %: {got} of {n} requests to the canary (99.9 % interval [{lo}, {hi}])"
    );
    let w = stats.read_window().await.unwrap();
    // The 100 at weight 0, the two A/B requests, the 2,000 at 10 %.
    assert_eq!(w.canary.requests + w.baseline.requests, 2102, "{w:?}");
    assert_eq!(w.canary.requests, got as u64 + 2);
    assert_eq!(w.canary.errors + w.baseline.errors, 0);

    layer.set_weight(100.0).await.unwrap();
    assert_eq!(canary_share(addr, 50).await, 50);
    assert_eq!(backend_of(addr, "x-canary: stable\r\n").await, "stable");
    // The header wins over the cookie.
    assert_eq!(
        backend_of(addr, "x-canary: stable\r\ncookie: canary=canary\r\n").await,
        "stable"
    );
    layer.set_weight(0.0).await.unwrap();
    assert_eq!(
        backend_of(addr, "x-canary: canary\r\ncookie: canary=stable\r\n").await,
        "canary"
    );
    layer.set_weight(100.0).await.unwrap();

    // An unknown server: a clear error naming HAProxy and what it tried,
    // and no weight moved.
    let mut unknown = spec.clone();
    unknown.canary = vec!["canary".into(), "nope".into()];
    let e = Haproxy::new(&unknown).set_weight(50.0).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string().contains("haproxy: `get weight app/nope`"),
        "{e}"
    );
    assert_eq!(canary_share(addr, 20).await, 20);

    // A socket path that does not exist.
    let mut gone = spec.clone();
    gone.socket = dir.join("no.sock").display().to_string();
    let e = Haproxy::new(&gone).set_weight(50.0).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("no.sock"), "{e}");
    let e = HaproxyStats::new(&gone).read_window().await.unwrap_err();
    assert!(e.to_string().contains("haproxy: `show stat`"), "{e}");

    drop(server);
    stable.stop().await;
    canary.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
