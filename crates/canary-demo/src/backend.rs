//! A small HTTP server with injectable faults, for demos, tests and
//! benchmarks: `canary demo-backend` and the backends of `canary demo`.
//!
//! Every request (except `/healthz`) waits `latency + U(0, jitter)` and then
//! answers `500` with probability `error_rate`, else `200` with the
//! backend's name as the body. The draws come from a counter-based sequence
//! (splitmix64 of the seed and a request counter): no RNG state, no lock, and
//! the same seed gives the same multiset of outcomes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::DemoError;

/// Faults and identity of a demo backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Name returned in the body and the `x-backend` header.
    pub name: String,
    /// Probability of answering 500, in [0, 1].
    pub error_rate: f64,
    /// Fixed delay before answering.
    pub latency: Duration,
    /// Extra uniform random delay, up to this much.
    pub jitter: Duration,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl BackendConfig {
    /// A healthy, instant backend named `name` on `listen`.
    pub fn new(listen: SocketAddr, name: &str) -> Self {
        Self {
            listen,
            name: name.to_string(),
            error_rate: 0.0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 0,
        }
    }
}

/// Prometheus's default histogram bounds, seconds.
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct State {
    config: BackendConfig,
    name: HeaderValue,
    body: Bytes,
    counter: AtomicU64,
    /// Answers 200 and 500.
    ok: AtomicU64,
    failed: AtomicU64,
    /// Requests at most `BOUNDS[i]` seconds (not cumulative).
    buckets: [AtomicU64; BOUNDS.len()],
    /// Total time, microseconds.
    sum_us: AtomicU64,
}

impl State {
    fn observe(&self, failed: bool, took: Duration) {
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        let s = took.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(
            took.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition of what was served.
    fn exposition(&self) -> String {
        use std::fmt::Write as _;
        let v = self.config.name.replace('\\', "\\\\").replace('"', "\\\"");
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP http_requests_total Requests served, by status code.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        let _ = writeln!(
            out,
            "http_requests_total{{version=\"{v}\",code=\"200\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "http_requests_total{{version=\"{v}\",code=\"500\"}} {failed}"
        );
        out.push_str("# HELP http_request_duration_seconds Time to answer.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let mut cumulative = 0u64;
        for (b, n) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let total = ok + failed;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{version=\"{v}\",le=\"+Inf\"}} {total}"
        );
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum{{version=\"{v}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count{{version=\"{v}\"}} {total}"
        );
        out
    }
}

/// A bound demo backend.
pub struct Backend {
    listener: TcpListener,
    state: Arc<State>,
}

fn unit(z: u64) -> f64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Backend {
    /// Binds the listening socket.
    ///
    /// # Errors
    /// [`DemoError::Bind`] when the address cannot be bound,
    /// [`DemoError::BadName`] when the name is not a header value.
    pub async fn bind(config: BackendConfig) -> Result<Self, DemoError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| DemoError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let name = HeaderValue::from_str(&config.name).map_err(|_| DemoError::BadName {
            name: config.name.clone(),
        })?;
        let body = Bytes::from(format!("{}\n", config.name));
        Ok(Self {
            listener,
            state: Arc::new(State {
                config,
                name,
                body,
                counter: AtomicU64::new(0),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_us: AtomicU64::new(0),
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.clone();
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(req, &state).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc);
                    let watched = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = watched.await;
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    }
}

async fn answer(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let c = &state.config;
    if req.uri().path() == "/healthz" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    if req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(state.exposition())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return r;
    }
    // The demo service's own clock read, as a real app's metrics library
    // times its handlers.
    #[allow(clippy::disallowed_methods)]
    let began = std::time::Instant::now();
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let base = c.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ n.wrapping_mul(2);
    let delay = c.latency + c.jitter.mul_f64(unit(base + 1));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fail = unit(base) < c.error_rate;
    let mut r = if fail {
        let mut r = Response::new(Full::new(Bytes::from_static(b"injected error\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    } else {
        Response::new(Full::new(state.body.clone()))
    };
    state.observe(fail, began.elapsed());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(HeaderName::from_static("x-backend"), state.name.clone());
    r
}

#[cfg(test)]
mod tests {
    use super::unit;

    #[test]
    fn draws_are_uniform_enough() {
        let n = 100_000;
        let below = (0..n).filter(|&i| unit(i * 2) < 0.05).count();
        // Binomial(100 000, 0.05): sd = 68.9; ±4 sd.
        assert!((4_724..=5_276).contains(&below), "{below}");
        let mean = (0..n).map(|i| unit(i * 2 + 1)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }
}
