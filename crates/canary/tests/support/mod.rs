//! What the integration tests share: finding the Prometheus binary
//! (or saying "skipped"), free ports, scratch directories, load, and the server
//! itself, stopped by its PID.
#![allow(dead_code)] // each test crate uses its part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The first of `paths` that exists, or `None` ("skipped", with how to
/// install it) unless the environment variable `require` is set (CI),
/// where a missing one fails.
fn system_binary(paths: &[&str], require: &str, what: &str, install: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {what} is not installed ({install})"
        );
        eprintln!("skipped: {what} is not installed ({install})");
    }
    found
}

/// Prometheus's binary, or `None` ("skipped") unless
/// `CANARY_REQUIRE_PROMETHEUS` is set.
pub fn prometheus_binary() -> Option<PathBuf> {
    system_binary(
        &["/usr/bin/prometheus", "/usr/local/bin/prometheus"],
        "CANARY_REQUIRE_PROMETHEUS",
        "prometheus",
        "apt-get install prometheus",
    )
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
        let p = Self::with_config(bin, dir, port, &scrape_config(targets), &[]);
        let n = targets.len();
        p.wait_until(dir, "scrape its targets", |addr| {
            http_get(addr, "/api/v1/query?query=count(up%3D%3D1)")
                .is_ok_and(|(code, body)| code == 200 && scraped_all(&body, n))
        });
        p
    }

    /// As [`Prometheus::start`], but serving only `https://` with the
    /// server certificate of `pki`, and only to clients that show a
    /// certificate its CA signed (Prometheus's `--web.config.file`).
    pub fn start_tls(bin: &Path, dir: &Path, port: u16, targets: &[SocketAddr], pki: &Pki) -> Self {
        let web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        );
        std::fs::write(dir.join("web.yml"), web).unwrap();
        let web_flag = format!("--web.config.file={}", dir.join("web.yml").display());
        let agent =
            canary_prometheus::tls::agent(Duration::from_secs(2), Some(&pki.client_tls()), "test")
                .unwrap();
        let n = targets.len();
        let probe = |addr: SocketAddr| {
            agent
                .get(format!(
                    "https://localhost:{}/api/v1/query?query=count(up%3D%3D1)",
                    addr.port()
                ))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|body| scraped_all(&body, n))
        };
        Self::launch(bin, dir, port, &scrape_config(targets), &[&web_flag], probe)
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
        Self::launch(bin, dir, port, conf, extra, |addr| {
            http_get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
        })
    }

    fn launch(
        bin: &Path,
        dir: &Path,
        port: u16,
        conf: &str,
        extra: &[&str],
        ready: impl Fn(SocketAddr) -> bool,
    ) -> Self {
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
        p.wait_until(dir, "become ready", ready);
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

/// A configuration scraping `targets` every 500 ms.
fn scrape_config(targets: &[SocketAddr]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global: {{scrape_interval: 500ms, evaluation_interval: 10s}}\n\
         scrape_configs:\n  - job_name: demo\n    static_configs: [{{targets: [{}]}}]\n",
        list.join(", ")
    )
}

/// Whether a `count(up==1)` answer counts `n` targets.
fn scraped_all(body: &str, n: usize) -> bool {
    body.contains("\"value\":[") && body.contains(&format!("\"{n}\"]"))
}

/// A private certificate authority and what it signed, as PEM files in a
/// directory: a server certificate for `localhost` and `127.0.0.1`, and a
/// client certificate; and a second CA that signed nothing here.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let ca_params = || {
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p
        };
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params().self_signed(&ca_key).unwrap();
        let ca = write("ca.pem", ca_cert.pem());
        let issuer = Issuer::new(ca_params(), ca_key);
        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let mut p = CertificateParams::new(names).unwrap();
            p.extended_key_usages = usages;
            p.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        // The server certificate allows client auth too: etcd's JSON
        // gateway connects to etcd itself with it, and with
        // `--client-cert-auth` etcd checks that usage.
        let (sc, sk) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (cc, ck) = leaf(
            vec!["canary-client".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let other_key = KeyPair::generate().unwrap();
        let other = ca_params().self_signed(&other_key).unwrap();
        Self {
            ca,
            server_cert: write("server.pem", sc),
            server_key: write("server-key.pem", sk),
            client_cert: write("client.pem", cc),
            client_key: write("client-key.pem", ck),
            other_ca: write("other-ca.pem", other.pem()),
        }
    }

    /// Trust this CA and show the client certificate.
    pub fn client_tls(&self) -> canary_core::spec::TlsSpec {
        canary_core::spec::TlsSpec {
            ca_file: Some(self.ca.display().to_string()),
            cert_file: Some(self.client_cert.display().to_string()),
            key_file: Some(self.client_key.display().to_string()),
            insecure_skip_verify: false,
        }
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

/// The bearer token the tests' `canary serve` processes take.
pub const SERVE_TOKEN: &str = "test-token-0123456789abcdef";

/// A fresh directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("canary-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `canary serve` child process on a free loopback port with
/// [`SERVE_TOKEN`], killed (SIGKILL) when dropped.
pub struct ServeProc {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl ServeProc {
    pub fn start(db: &Path) -> Self {
        Self::start_with_env(db, &[])
    }

    /// The same, with more environment variables.
    pub fn start_with_env(db: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(db, &[], env)
    }

    /// The same, with more arguments (`--auth-reads`) and environment.
    pub fn start_with(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(args)
            .env("CANARY_TOKEN", SERVE_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start canary serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("canary serve listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        ServeProc { child, base }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client for the API: statuses are answers, not errors.
pub fn api_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// GET `base` + `path` with [`api_agent`]: the status and the body as
/// JSON (`Null` when it is not); (0, `Null`) when nothing answered.
pub fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    match api_agent().get(format!("{base}{path}")).call() {
        Ok(mut r) => {
            let s = r.status().as_u16();
            let t = r.body_mut().read_to_string().unwrap_or_default();
            (
                s,
                serde_json::from_str(&t).unwrap_or(serde_json::Value::Null),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Follows a server-sent event stream at `url` on a thread of its own:
/// each event as (its `event:` kind, its `data:` as JSON). The channel
/// closes when the stream ends or cannot be opened.
pub fn follow_events(url: String) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(r) = api_agent().get(&url).call() else {
            return;
        };
        let mut kind = String::new();
        for line in std::io::BufReader::new(r.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().into();
            } else if let Some(d) = line.strip_prefix("data:") {
                let Ok(v) = serde_json::from_str(d.trim()) else {
                    return;
                };
                if tx.send((kind.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// etcd's binary, or `None` ("skipped") unless `CANARY_REQUIRE_ETCD` is
/// set (CI), where a missing one fails.
pub fn etcd_binary() -> Option<PathBuf> {
    system_binary(
        &["/usr/bin/etcd", "/usr/local/bin/etcd"],
        "CANARY_REQUIRE_ETCD",
        "etcd",
        "apt-get install etcd-server etcd-client",
    )
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited within 5 s.
pub fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // A stopped process does not act on SIGTERM until it runs again.
    signal(child.id(), "CONT");
    signal(child.id(), "TERM");
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One member of an [`EtcdCluster`].
pub struct EtcdMember {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub child: Option<Child>,
}

/// A three-member (or `n`) etcd cluster on loopback ports, with data dirs
/// in a scratch directory (on /dev/shm when there is one: etcd syncs
/// every commit to disk); each member stopped by its PID when dropped.
pub struct EtcdCluster {
    bin: PathBuf,
    dir: PathBuf,
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster commits.
    pub fn start(bin: &Path, tag: &str, n: usize) -> Self {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("canary-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                peer: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster {
            bin: bin.to_path_buf(),
            dir,
            members,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_committing();
        c
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` on its data dir.
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .arg(format!("--listen-client-urls=http://{}", m.client))
            .arg(format!("--advertise-client-urls=http://{}", m.client))
            .arg(format!("--listen-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-advertise-peer-urls=http://{}", m.peer))
            .arg(format!("--initial-cluster={initial}"))
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "canary-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Client URLs, comma-separated, as `--etcd-endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` (SIGKILL, by its PID).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether a write commits (through any running member) within 1 s.
    pub fn commits(&self) -> bool {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .into();
        // key "probe", value "1", base64.
        let body = r#"{"key":"cHJvYmU=","value":"MQ=="}"#;
        self.members.iter().filter(|m| m.child.is_some()).any(|m| {
            agent
                .post(format!("http://{}/v3/kv/put", m.client))
                .send(body)
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|t| t.contains("\"header\"") && !t.contains("error"))
        })
    }

    /// Waits (at most 30 s) until no running member has a raft leader:
    /// after losing its quorum, a member that led keeps answering (lease
    /// renewals among it) until it notices, an election timeout later.
    pub fn wait_no_raft_leader(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .into();
        let led = |m: &EtcdMember| {
            agent
                .post(format!("http://{}/v3/maintenance/status", m.client))
                .send("{}")
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| match &v["leader"] {
                    serde_json::Value::String(s) => s != "0",
                    serde_json::Value::Number(n) => n.as_u64() != Some(0),
                    _ => false,
                })
        };
        for _ in 0..300 {
            if !self.members.iter().filter(|m| m.child.is_some()).any(led) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("an etcd member still has a raft leader 30 s after losing its quorum");
    }

    /// Waits (at most 30 s) until the cluster commits writes.
    pub fn wait_committing(&self) {
        for _ in 0..300 {
            if self.commits() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                    .unwrap_or_default()
            })
            .collect();
        panic!(
            "the etcd cluster does not commit: {}",
            logs.join("\n----\n")
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                terminate(&mut c);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `canary serve --store etcd` replica with [`SERVE_TOKEN`], its
/// stderr in `log`; stopped by its PID when dropped.
pub fn serve_etcd(endpoints: &str, args: &[&str], log: &Path) -> ServeProc {
    use std::io::BufRead;
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "etcd"])
        .args(["--etcd-endpoints", endpoints])
        .args(args)
        .env("CANARY_TOKEN", SERVE_TOKEN)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start canary serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("canary serve listening on ")
        .unwrap_or_else(|| {
            panic!(
                "unexpected first line {line:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    ServeProc { child, base }
}
