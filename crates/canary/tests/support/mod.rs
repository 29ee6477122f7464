//! What the integration tests share: finding the Prometheus binary
//! (or saying "skipped"), free ports, scratch directories, load, and the server
//! itself, stopped by its PID.
#![allow(dead_code)] // each test crate uses its part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn prometheus_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CANARY_REQUIRE_PROMETHEUS").is_none(),
            "CANARY_REQUIRE_PROMETHEUS is set but no prometheus binary is installed"
        );
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
    }
    found
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One blocking GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// A Prometheus server scraping `targets` every 500 ms, on `port`, with its
/// data under `dir`; killed by its PID when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Prometheus scraping `targets` every 500 ms, once it has scraped
    /// each of them.
    pub fn start(bin: &Path, dir: &Path, port: u16, targets: &[SocketAddr]) -> Self {
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let conf = format!(
            "global: {{scrape_interval: 500ms, evaluation_interval: 10s}}\n\
             scrape_configs:\n  - job_name: demo\n    static_configs: [{{targets: [{}]}}]\n",
            list.join(", ")
        );
        let p = Self::with_config(bin, dir, port, &conf, &[]);
        let n = targets.len();
        p.wait_until(dir, "scrape its targets", |addr| {
            http_get(addr, "/api/v1/query?query=count(up%3D%3D1)").is_ok_and(|(code, body)| {
                code == 200 && body.contains("\"value\":[") && body.contains(&format!("\"{n}\"]"))
            })
        });
        p
    }

    /// Prometheus on the data already under `dir/data` (blocks built by
    /// promtool), scraping nothing, keeping every block however old.
    pub fn on_history(bin: &Path, dir: &Path, port: u16) -> Self {
        Self::with_config(
            bin,
            dir,
            port,
            "global: {evaluation_interval: 1m}\n",
            &["--storage.tsdb.retention.time=100y"],
        )
    }

    fn with_config(bin: &Path, dir: &Path, port: u16, conf: &str, extra: &[&str]) -> Self {
        std::fs::write(dir.join("prometheus.yml"), conf).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let p = Self { child, addr };
        p.wait_until(dir, "become ready", |addr| {
            http_get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
        });
        p
    }

    fn wait_until(&self, dir: &Path, what: &str, ok: impl Fn(SocketAddr) -> bool) {
        for _ in 0..400 {
            if ok(self.addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "prometheus on {} did not {what}: {}",
            self.addr,
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends load to `url` at 4 concurrent connections on a thread of its own
/// until the returned switch is stopped; the handle gives the load's report.
pub fn send_load(
    url: &str,
) -> (
    canary_demo::loadgen::StopLoad,
    std::thread::JoinHandle<canary_demo::loadgen::LoadReport>,
) {
    use canary_demo::loadgen::{self, LoadConfig, StopLoad};
    let url: loadgen::Uri = url.parse().unwrap();
    let stop = StopLoad::new();
    let switch = stop.clone();
    let load = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(loadgen::run(LoadConfig::new(url, 4), switch))
    });
    (stop, load)
}
