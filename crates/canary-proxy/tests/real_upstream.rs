//! The proxy in front of a real nginx (Debian's `nginx`), started by the test
//! on loopback and stopped by its PID: large static bodies, gzip'd chunked
//! bodies, HEAD, errors and request bodies must come through byte for byte,
//! over HTTP/1.1 and h2c.
//!
//! Without nginx installed the test says so and passes, so that
//! `cargo test` works on a machine with only the Rust toolchain; CI sets
//! `CANARY_REQUIRE_NGINX=1` (and installs nginx), where a missing nginx fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use canary_proxy::{Proxy, ProxyConfig, Upstream};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// nginx serving `dir` on a free loopback port; killed (by PID) on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path) -> Self {
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1; daemon off; master_process off;
             pid {d}/nginx.pid; error_log {d}/error.log warn;
             events {{ worker_connections 256; }}
             http {{
               access_log off;
               client_body_temp_path {d}/b; proxy_temp_path {d}/p;
               fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
               gzip on; gzip_types text/plain; gzip_min_length 10;
               server {{
                 listen 127.0.0.1:{port};
                 root {d}/www;
                 location = /upload {{ client_max_body_size 10m; proxy_pass http://127.0.0.1:{port}/sink; }}
                 location = /sink {{ return 200 \"got it\\n\"; }}
               }}
             }}"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, headers and the (decoded) body of one request through `addr`.
async fn fetch(
    addr: SocketAddr,
    h2: bool,
    req: hyper::Request<Full<Bytes>>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, body)
}

fn request(method: &str, addr: SocketAddr, path: &str) -> hyper::http::request::Builder {
    hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
}

#[test]
fn bodies_come_through_a_real_nginx_upstream_byte_for_byte() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var_os("CANARY_REQUIRE_NGINX").is_none(),
            "CANARY_REQUIRE_NGINX is set but nginx is not installed (apt-get install nginx)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("canary-real-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    // A 3 MiB incompressible file and a compressible text (gzip'd, chunked).
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("www/big.bin"), &big).unwrap();
    let text = "hello canary ".repeat(20_000);
    std::fs::write(dir.join("www/text.txt"), &text).unwrap();
    let nginx = Nginx::start(&bin, &dir);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = Upstream::parse(&format!("http://127.0.0.1:{}", nginx.port)).unwrap();
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream.clone(), upstream);
    config.workers = 2;
    config.initial_weight = 50.0;
    let proxy = rt.block_on(Proxy::bind(config)).unwrap();
    let addr = proxy.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));

    rt.block_on(async {
        for h2 in [false, true] {
            let empty = || Full::new(Bytes::new());
            let (status, headers, body) = fetch(
                addr,
                h2,
                request("GET", addr, "/big.bin").body(empty()).unwrap(),
            )
            .await;
            assert_eq!((status, body.len()), (200, big.len()), "h2 {h2}");
            assert!(body[..] == big[..], "h2 {h2}: big.bin differs");
            assert!(headers.contains_key("x-canary-version"));

            let gz = request("GET", addr, "/text.txt")
                .header("accept-encoding", "gzip")
                .body(empty())
                .unwrap();
            let (status, headers, body) = fetch(addr, h2, gz).await;
            assert_eq!(status, 200);
            assert_eq!(headers["content-encoding"], "gzip");
            assert!(body.len() < text.len() / 10, "gzip'd: {} bytes", body.len());
            let (_, _, plain) = fetch(
                addr,
                h2,
                request("GET", addr, "/text.txt").body(empty()).unwrap(),
            )
            .await;
            assert_eq!(plain, text.as_bytes());

            let (status, headers, body) = fetch(
                addr,
                h2,
                request("HEAD", addr, "/big.bin").body(empty()).unwrap(),
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(headers["content-length"], big.len().to_string());
            assert!(body.is_empty());

            let (status, _, _) = fetch(
                addr,
                h2,
                request("GET", addr, "/missing").body(empty()).unwrap(),
            )
            .await;
            assert_eq!(status, 404);

            let upload = request("POST", addr, "/upload")
                .body(Full::new(Bytes::from(big[..1 << 20].to_vec())))
                .unwrap();
            let (status, _, body) = fetch(addr, h2, upload).await;
            assert_eq!((status, &body[..]), (200, &b"got it\n"[..]), "h2 {h2}");
        }
    });
    let _ = stop.send(());
    rt.block_on(served).unwrap();
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
