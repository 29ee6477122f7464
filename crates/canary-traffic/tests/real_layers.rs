//! The nginx and HAProxy layers against the real servers (Debian's `nginx`
//! and `haproxy`), started by each test on free loopback ports with their
//! own temporary configuration and stopped by PID, in front of two demo
//! backends. Without the binaries the tests say "skipped" and pass, unless
//! `CANARY_REQUIRE_NGINX` / `CANARY_REQUIRE_HAPROXY` is set (CI sets both
//! and installs them), where a missing one fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canary_core::spec::{HaproxyTraffic, NginxTraffic};
use canary_demo::launch::{InProcess, LOOPBACK};
use canary_demo::BackendConfig;
use canary_engine::{MetricsSource, TrafficActuator};
use canary_traffic::{Haproxy, HaproxyStats, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn binary(names: &[&str], require: &str, package: &str) -> Option<PathBuf> {
    let found = names.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {package} is not installed (apt-get install {package})"
        );
        eprintln!("skipped: {package} is not installed (apt-get install {package})");
    }
    found
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "canary-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server process, killed (by PID) on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(mut child: Child, port: u16, log: &Path) -> Server {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Server { child, port };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!(
        "did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
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

fn nginx_spec(dir: &Path, bin: &Path, stable: SocketAddr, canary: SocketAddr) -> NginxTraffic {
    let conf = dir.join("nginx.conf").display().to_string();
    let prefix = dir.display().to_string();
    let b = bin.display().to_string();
    NginxTraffic {
        config: dir.join("canary-app.conf").display().to_string(),
        upstream: "app".into(),
        stable: vec![stable.to_string()],
        canary: vec![canary.to_string()],
        test_command: Some(vec![
            b.clone(),
            "-q".into(),
            "-t".into(),
            "-p".into(),
            prefix.clone(),
            "-c".into(),
            conf.clone(),
        ]),
        reload_command: Some(vec![
            b,
            "-p".into(),
            prefix,
            "-c".into(),
            conf,
            "-s".into(),
            "reload".into(),
        ]),
        command_timeout: None,
        route_header: None,
        route_cookie: None,
    }
}

/// nginx with a master process (so it can reload) on a free port, including
/// the file canary writes.
fn start_nginx(bin: &Path, dir: &Path, spec: &NginxTraffic) -> Server {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 2; daemon off;
         pid {d}/nginx.pid; error_log {d}/error.log warn;
         events {{ worker_connections 512; }}
         http {{
           access_log off;
           client_body_temp_path {d}/b; proxy_temp_path {d}/p;
           fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
           include {};
           server {{
             listen 127.0.0.1:{port};
             location / {{ proxy_pass http://$app_route; }}
           }}
         }}",
        spec.config
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    // The include must exist before nginx starts: the file at 0 %.
    std::fs::write(&spec.config, Nginx::new(spec).render(0.0)).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_listening(child, port, &dir.join("error.log"))
}

/// Waits until nginx's workers answer from the configuration with the
/// canary at `percent` (a reload replaces workers asynchronously).
async fn settle(addr: SocketAddr, percent: f64) {
    for _ in 0..200 {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(backend_of(addr, "").await);
        }
        let canary = seen.iter().filter(|b| *b == "canary").count();
        let ok = if percent == 0.0 {
            canary == 0
        } else if percent == 100.0 {
            canary == 20
        } else {
            canary > 0 && canary < 20
        };
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nginx never served the configuration at {percent} %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_the_split_it_is_given_and_keeps_its_file_when_a_change_fails() {
    let Some(bin) = binary(
        &["/usr/sbin/nginx", "/usr/bin/nginx"],
        "CANARY_REQUIRE_NGINX",
        "nginx",
    ) else {
        return;
    };
    let dir = temp_dir("nginx");
    let (stable, canary) = backends().await;
    let spec = nginx_spec(&dir, &bin, stable.addr(), canary.addr());
    let nginx = start_nginx(&bin, &dir, &spec);
    let addr: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let mut layer = Nginx::new(&spec);

    settle(addr, 0.0).await;
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
    settle(addr, 10.0).await;
    let n = 2000;
    let got = canary_share(addr, n).await;
    let (lo, hi) = binomial_999(n, 0.10);
    assert!(
        (lo..=hi).contains(&got),
        "10 %: {got} of {n} to the canary, not in [{lo}, {hi}]"
    );
    eprintln!("nginx at 10 %: {got} of {n} requests to the canary (99.9 % interval [{lo}, {hi}])");

    layer.set_weight(100.0).await.unwrap();
    settle(addr, 100.0).await;
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

fn start_haproxy(bin: &Path, dir: &Path, stable: SocketAddr, canary: SocketAddr) -> Server {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "global
           stats socket {d}/admin.sock mode 600 level admin
           log stderr format raw local0 err
         defaults
           mode http
           timeout connect 2s
           timeout client 10s
           timeout server 10s
         frontend fe
           bind 127.0.0.1:{port}
           default_backend app
         backend app
           balance roundrobin
           server stable {stable} weight 1
           server canary {canary} weight 0
"
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
    let log = dir.join("haproxy.log");
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start haproxy");
    let s = wait_listening(child, port, &log);
    for _ in 0..200 {
        if dir.join("admin.sock").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

fn haproxy_spec(dir: &Path) -> HaproxyTraffic {
    HaproxyTraffic {
        socket: dir.join("admin.sock").display().to_string(),
        backend: "app".into(),
        stable: vec!["stable".into()],
        canary: vec!["canary".into()],
        timeout: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sets_weights_reads_them_back_and_counts_per_server() {
    let Some(bin) = binary(
        &["/usr/sbin/haproxy", "/usr/bin/haproxy"],
        "CANARY_REQUIRE_HAPROXY",
        "haproxy",
    ) else {
        return;
    };
    let dir = temp_dir("haproxy");
    let (stable, canary) = backends().await;
    let server = start_haproxy(&bin, &dir, stable.addr(), canary.addr());
    let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let spec = haproxy_spec(&dir);
    let mut layer = Haproxy::new(&spec);
    let mut stats = HaproxyStats::new(&spec);
    assert_eq!(stats.read_window().await.unwrap().canary.requests, 0);

    assert_eq!(
        canary_share(addr, 100).await,
        0,
        "weight 0 routes nothing to the canary"
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
    assert_eq!(w.canary.requests + w.baseline.requests, 2100, "{w:?}");
    assert_eq!(w.canary.requests, got as u64);
    assert_eq!(w.canary.errors + w.baseline.errors, 0);

    layer.set_weight(100.0).await.unwrap();
    assert_eq!(canary_share(addr, 50).await, 50);

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
