//! Accept loops, the forwarding service and the admin service.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Version as HttpVersion};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use crate::recorder::Outcome;
use crate::upstream::{Pool, SendError, UpstreamBody, PURGE_AFTER};

use crate::route::Version;
use crate::{ProxyConfig, Shared};

/// The body the proxy answers with: the upstream's, streamed, or its own.
pub(crate) type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// The connection pools of the two upstreams, stable first.
type Pools = [Arc<Pool>; 2];

/// Which version served the request, on every proxied response.
pub(crate) static VERSION_HEADER: HeaderName = HeaderName::from_static("x-canary-version");

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names (a few
    // comparisons each) instead of a removal, hash and all, per name.
    if !headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    // transfer-encoding is hop-by-hop too, but hyper re-frames bodies
    // itself and needs it to know how the incoming body is framed.
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A routed request not yet recorded. If the request's future is dropped
/// first (hyper drops it when the client goes away), the drop records it as
/// abandoned, with its latency so far: a canary too slow for its clients is
/// counted, and `in_flight` returns to 0.
struct Pending<'a> {
    shared: &'a Shared,
    version: Version,
    generation: u32,
    started: std::time::Instant,
    recorded: bool,
}

impl Pending<'_> {
    fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let current = self.shared.router.generation() == self.generation;
        self.shared
            .recorder
            .finish(self.version, outcome, self.started.elapsed(), current);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

async fn forward(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    pools: Pools,
    forwarded_for: Option<HeaderValue>,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        // A reverse proxy, not a forward one: there is no tunnel to open,
        // and neither version is asked.
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: this is a reverse proxy\n",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
        return r;
    }
    let started = crate::now();
    let route = shared.router.route(req.headers());
    let version = route.version;
    shared.recorder.start(version);
    let mut pending = Pending {
        shared: &shared,
        version,
        generation: route.generation,
        started,
        recorded: false,
    };
    let upstream = &shared.upstreams[version.index()];
    // HTTP/2 names the host in the `:authority` pseudo-header (the URI's
    // authority), not in `Host`: forwarded over HTTP/1.1 it becomes `Host`.
    let authority = match req.uri().authority() {
        Some(a) if !req.headers().contains_key(HOST) => HeaderValue::from_str(a.as_str()).ok(),
        _ => None,
    };
    match upstream.origin_form(req.uri()) {
        Ok(None) => {}
        Ok(Some(uri)) => *req.uri_mut() = uri,
        Err(_) => {
            pending.finish(Outcome::Status(400));
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        }
    }
    *req.version_mut() = HttpVersion::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if !headers.contains_key(HOST) {
        headers.insert(HOST, authority.unwrap_or_else(|| upstream.host_header()));
    }
    if let Some(v) = forwarded_for {
        headers.append(X_FORWARDED_FOR.clone(), v);
    }
    let pool = &pools[version.index()];
    let result = tokio::time::timeout(shared.response_timeout, pool.send(req)).await;
    let (outcome, response) = match result {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            (
                Outcome::Status(parts.status.as_u16()),
                Response::from_parts(parts, Either::Left(body)),
            )
        }
        Ok(Err(SendError::Connect)) => (
            Outcome::ConnectError,
            text(StatusCode::BAD_GATEWAY, "upstream unreachable\n"),
        ),
        Ok(Err(SendError::Upstream)) => (
            Outcome::UpstreamError,
            text(StatusCode::BAD_GATEWAY, "upstream failed\n"),
        ),
        // The client's own upload failed: not the version's fault.
        Ok(Err(SendError::Client)) => (
            Outcome::Status(400),
            text(StatusCode::BAD_REQUEST, "request body failed\n"),
        ),
        Err(_) => (
            Outcome::Timeout,
            text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        ),
    };
    pending.finish(outcome);
    drop(pending);
    let mut response = response;
    response.headers_mut().insert(
        VERSION_HEADER.clone(),
        HeaderValue::from_static(version.name()),
    );
    response
}

fn admin(req: &Request<Incoming>, shared: &Shared) -> Response<ProxyBody> {
    // Every admin endpoint only reads.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin endpoints answer GET and HEAD only\n",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            let body = crate::metrics::render(shared);
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/weight" => {
            let body = format!("{}\n", shared.router.weight());
            Response::new(Either::Right(Full::new(Bytes::from(body))))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /metrics, /weight\n",
        ),
    }
}

fn pools(shared: &Shared, config: &ProxyConfig) -> Pools {
    Version::BOTH.map(|v| {
        Pool::new(
            shared.upstreams[v.index()].connect_addr(),
            config.max_idle_per_upstream,
            config.connect_timeout,
            config.response_timeout,
            shared.upstream_connects[v.index()].clone(),
        )
    })
}

/// How long a new connection may stay silent, and a request head take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with the HTTP/2 preface (h2c with prior
/// knowledge), looked at without consuming anything: the first byte of an
/// HTTP/1.1 request already differs, so HTTP/1.1 connections go straight to
/// hyper's HTTP/1.1 server with nothing in between. (hyper-util's `auto`
/// connection does the same by wrapping every read, and cost ~8 % of the
/// proxy's throughput under `bench/proxy.sh`.)
async fn opens_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut seen = [0u8; 24];
    let mut backoff = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 || seen[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A preface split over packets: rare, and a client that sends part
        // of one and goes quiet must not cost a core. Look again, less and
        // less often (the caller's head timeout bounds the wait).
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// Serves one connection: HTTP/2 when it opens with the preface, HTTP/1.1
/// otherwise, both watched for a graceful shutdown.
async fn serve_connection<S>(stream: TcpStream, service: S, watcher: Watcher)
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let h2 = match tokio::time::timeout(HEAD_TIMEOUT, opens_with_h2_preface(&stream)).await {
        Ok(Ok(h2)) => h2,
        _ => return, // silent for too long, or gone
    };
    let io = TokioIo::new(stream);
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(HEAD_TIMEOUT))
            .serve_connection(io, service);
        let _ = watcher.watch(conn).await;
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .serve_connection(io, service);
        let _ = watcher.watch(conn).await;
    }
}

/// Accepts connections until `shutdown` fires; each connection is served by
/// `make` and watched by `graceful`.
async fn accept_loop<S, F>(
    listener: TcpListener,
    graceful: &GracefulShutdown,
    shutdown: impl Future<Output = ()>,
    make: S,
) where
    S: Fn(SocketAddr) -> F,
    F: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    F::Future: Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(_) => {
                        // Out of descriptors or similar: back off briefly
                        // rather than spin, and keep serving.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, make(peer), graceful.watcher()));
            }
            _ = &mut shutdown => break,
        }
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shared: Arc<Shared>,
    config: &ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = admin_listener.map(|l| {
        let shared = shared.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let admin_graceful = GracefulShutdown::new();
            accept_loop(
                l,
                &admin_graceful,
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
                |_| {
                    let shared = shared.clone();
                    service_fn(move |req| {
                        let r = admin(&req, &shared);
                        async move { Ok::<_, Infallible>(r) }
                    })
                },
            )
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), admin_graceful.shutdown()).await;
        })
    });
    if config.workers == 0 {
        serve_traffic(listener, shared, config.clone(), shutdown).await;
    } else {
        serve_on_workers(listener, shared, config, shutdown).await;
    }
    let _ = stop_tx.send(true);
    if let Some(t) = admin_task {
        let _ = t.await;
    }
}

/// One accept loop with its own upstream pools, until `shutdown`; then the
/// in-flight requests are drained (up to the drain timeout).
async fn serve_traffic(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let pools = pools(&shared, &config);
    let sweeper = {
        let pools = pools.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_AFTER / 5);
            loop {
                every.tick().await;
                for p in &pools {
                    p.evict_idle();
                }
            }
        })
    };
    accept_loop(listener, &graceful, shutdown, |peer| {
        let shared = shared.clone();
        let pools = pools.clone();
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).ok();
        service_fn(move |req| {
            let fut = forward(req, shared.clone(), pools.clone(), forwarded_for.clone());
            async move { Ok::<_, Infallible>(fut.await) }
        })
    })
    .await;
    // Stop accepting (the listener is gone), finish what is in flight.
    let _ = tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await;
    sweeper.abort();
}

/// The first of the workers' listening sockets: as [`bind_shared_port`], but
/// an address some other socket already listens on is refused, as a plain
/// bind would refuse it. (`SO_REUSEPORT` alone would let a second proxy
/// started by the same user on the same port silently take half of the
/// connections.)
pub(crate) fn bind_first_shared_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if addr.port() != 0 {
        // Fails with "address in use" while anything listens there, our
        // own `SO_REUSEPORT` sockets included, since this one is without.
        drop(std::net::TcpListener::bind(addr)?);
    }
    bind_shared_port(addr)
}

/// A listening socket with `SO_REUSEPORT`, so that each traffic worker can
/// have a socket of its own on the same port and the kernel spreads new
/// connections evenly over them.
pub(crate) fn bind_shared_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves traffic on `config.workers` threads, each a single-threaded runtime
/// with its own connections and upstream pools: a request and its upstream
/// exchange stay on one thread, so waking a task is a local queue push (no
/// cross-thread hand-off, no work stealing), and the pools need no sharing.
/// The router and the recorder are shared.
///
/// Each worker accepts on a listening socket of its own, bound to the same
/// port with `SO_REUSEPORT` (the first is the one [`crate::Proxy::bind`]
/// opened): the kernel hashes each new connection to one of them, so the
/// connections, and with them the load and the upstream pools, are spread
/// evenly. (With one shared socket, a burst of connections tends to land on
/// whichever worker wakes first.)
async fn serve_on_workers(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: &ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listeners = Vec::with_capacity(config.workers);
    let mut first = listener.into_std().ok();
    for _ in 0..config.workers {
        let l = match first.take() {
            Some(l) => Some(l),
            None => bind_shared_port(addr).and_then(|l| l.into_std()).ok(),
        };
        // A worker without a socket of its own is not started; the others
        // serve (at least the first socket always has one).
        listeners.extend(l);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut done = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (shared, config, mut rx) = (shared.clone(), config.clone(), stop_rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("canary-proxy-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        let Ok(listener) = TcpListener::from_std(listener) else {
                            return;
                        };
                        let stop = async move {
                            let _ = rx.wait_for(|s| *s).await;
                        };
                        serve_traffic(listener, shared, config, stop).await;
                    });
                }
                drop(done_tx);
            });
        if spawned.is_ok() {
            done.push(done_rx);
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for d in done {
        let _ = d.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Version;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn version_names_are_header_values() {
        for v in Version::BOTH {
            assert!(HeaderValue::from_str(v.name()).is_ok());
        }
    }
}
