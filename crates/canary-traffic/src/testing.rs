//! Real nginx and HAProxy processes on loopback, for tests and for trying
//! canary out: each started on a free port with its own configuration in
//! a scratch directory, in front of two backends, and killed by its PID
//! when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canary_core::spec::{HaproxyTraffic, NginxTraffic};

use crate::{Haproxy, Nginx};

/// The first of `paths` that exists. When none does and the environment
/// variable `require` is set, panics (CI installs the package); otherwise
/// prints "skipped" and returns `None`.
pub fn binary(paths: &[&str], require: &str, package: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {package} is not installed (apt-get install {package})"
        );
        eprintln!("skipped: {package} is not installed (apt-get install {package})");
    }
    found
}

/// nginx's binary, or `None` ("skipped") unless `CANARY_REQUIRE_NGINX`.
pub fn nginx_binary() -> Option<PathBuf> {
    binary(
        &["/usr/sbin/nginx", "/usr/bin/nginx"],
        "CANARY_REQUIRE_NGINX",
        "nginx",
    )
}

/// HAProxy's binary, or `None` ("skipped") unless `CANARY_REQUIRE_HAPROXY`.
pub fn haproxy_binary() -> Option<PathBuf> {
    binary(
        &["/usr/sbin/haproxy", "/usr/bin/haproxy"],
        "CANARY_REQUIRE_HAPROXY",
        "haproxy",
    )
}

/// A free loopback port (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A server process on loopback, killed (by PID) when dropped.
pub struct Server {
    child: Child,
    /// The address it serves HTTP on.
    pub addr: SocketAddr,
}

impl Server {
    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    /// SIGTERM by PID first: nginx's master then stops its workers, which a
    /// SIGKILL of the master would leave running; SIGKILL after 5 s, or at
    /// once where `kill` cannot be run.
    fn drop(&mut self) {
        let asked = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if asked {
            for _ in 0..500 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(mut child: Child, port: u16, log: &Path) -> Server {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Server {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
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
    let _ = child.wait();
    panic!(
        "did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The `traffic.nginx` section for an nginx started by [`start_nginx`] in
/// `dir`: upstream `app`, check and reload commands naming its prefix and
/// configuration.
pub fn nginx_spec(dir: &Path, bin: &Path, stable: SocketAddr, canary: SocketAddr) -> NginxTraffic {
    let conf = dir.join("nginx.conf").display().to_string();
    let prefix = dir.display().to_string();
    let b = bin.display().to_string();
    let argv = |tail: &[&str]| {
        let mut v = vec![
            b.clone(),
            "-p".into(),
            prefix.clone(),
            "-c".into(),
            conf.clone(),
        ];
        v.extend(tail.iter().map(|s| s.to_string()));
        v
    };
    NginxTraffic {
        config: dir.join("canary-app.conf").display().to_string(),
        upstream: "app".into(),
        stable: vec![stable.to_string()],
        canary: vec![canary.to_string()],
        test_command: Some(argv(&["-q", "-t"])),
        reload_command: Some(argv(&["-s", "reload"])),
        command_timeout: None,
        pid_file: Some(dir.join("nginx.pid").display().to_string()),
        route_header: None,
        route_cookie: None,
    }
}

/// nginx with a master process (so it reloads) and two workers on a free
/// port, sending every request to `$app_route` from the file `spec` names
/// (written at 0 % first: nginx needs it to start).
pub fn start_nginx(bin: &Path, dir: &Path, spec: &NginxTraffic) -> Server {
    let port = free_port();
    let u = &spec.upstream;
    std::fs::write(&spec.config, Nginx::new(spec).render(0.0)).unwrap_or_else(|e| panic!("{e}"));
    let servers = format!(
        "include {};
         server {{
           listen 127.0.0.1:{port};
           location / {{ proxy_pass http://${u}_route; }}
         }}",
        spec.config
    );
    start_nginx_with(bin, dir, &servers, port)
}

/// nginx with a master process and two workers, its files in `dir`, with
/// `servers` (`server { ... }` blocks and what they need) in its `http`
/// block, once it listens on `port`.
pub fn start_nginx_with(bin: &Path, dir: &Path, servers: &str, port: u16) -> Server {
    let d = dir.display();
    let conf = format!(
        "worker_processes 2; daemon off;
         pid {d}/nginx.pid; error_log {d}/error.log warn;
         events {{ worker_connections 1024; }}
         http {{
           access_log off;
           client_body_temp_path {d}/b; proxy_temp_path {d}/p;
           fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
           {servers}
         }}"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start nginx: {e}"));
    wait_listening(child, port, &dir.join("error.log"))
}

/// The `traffic.haproxy` section for an HAProxy started by
/// [`start_haproxy`] in `dir`.
pub fn haproxy_spec(dir: &Path) -> HaproxyTraffic {
    HaproxyTraffic {
        socket: dir.join("admin.sock").display().to_string(),
        backend: "app".into(),
        stable: vec!["stable".into()],
        canary: vec!["canary".into()],
        timeout: None,
    }
}

/// HAProxy on a free port with backend `app` as
/// [`Haproxy::backend_snippet`] writes it (round robin over servers
/// `stable`, weight 1, and `canary`, weight 0, with the A/B routes) and its
/// runtime API on `dir/admin.sock`.
pub fn start_haproxy(bin: &Path, dir: &Path, stable: SocketAddr, canary: SocketAddr) -> Server {
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
{}",
        Haproxy::new(&haproxy_spec(dir))
            .backend_snippet(&[stable.to_string()], &[canary.to_string()])
    );
    std::fs::write(dir.join("haproxy.cfg"), conf).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("haproxy.log");
    let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start haproxy: {e}"));
    let s = wait_listening(child, port, &log);
    for _ in 0..200 {
        if dir.join("admin.sock").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}
