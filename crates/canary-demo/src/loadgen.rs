//! A small HTTP load generator: the traffic of `canary demo` and of the
//! live tests.
//!
//! `concurrency` workers each send one request at a time over keep-alive
//! connections, optionally paced so that all of them together send about
//! `rate` requests per second, until `max_requests` have been sent or the
//! stop signal fires. Each response is read to its end and counted by status
//! class and by the `x-canary-version` header the proxy sets.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
/// URIs, re-exported for the load generator's users.
pub use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

/// The header the proxy names the serving version in: `stable` or `canary`.
static VERSION_HEADER: HeaderName = HeaderName::from_static("x-canary-version");

/// Index into [`LoadReport::by_version`] of a `x-canary-version` value:
/// `stable` (or `baseline`) 0, `canary` 1, any case.
fn version_index(s: &str) -> Option<usize> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("stable") || s.eq_ignore_ascii_case("baseline") {
        Some(0)
    } else if s.eq_ignore_ascii_case("canary") {
        Some(1)
    } else {
        None
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The URL to request.
    pub url: Uri,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Total requests per second across workers; `None` for as fast as
    /// possible.
    pub rate: Option<f64>,
    /// Stop after this many requests.
    pub max_requests: Option<u64>,
    /// Send `header: user-<i>` with `i` cycling over this many users (for
    /// sticky routing), if set.
    pub users: Option<(HeaderName, u64)>,
}

impl LoadConfig {
    /// `concurrency` unpaced workers against `url`, without a request limit.
    pub fn new(url: Uri, concurrency: usize) -> Self {
        Self {
            url,
            concurrency,
            rate: None,
            max_requests: None,
            users: None,
        }
    }
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub classes: [u64; 6],
    /// Requests that got no response at all (connection refused, reset).
    pub failed: u64,
    /// Responses served by stable and by canary (in that order), per
    /// `x-canary-version`.
    pub by_version: [u64; 2],
}

impl LoadReport {
    /// 5xx responses plus requests without a response.
    pub fn errors(&self) -> u64 {
        self.classes[4] + self.failed
    }

    fn merge(&mut self, other: &LoadReport) {
        self.sent += other.sent;
        self.failed += other.failed;
        for i in 0..6 {
            self.classes[i] += other.classes[i];
        }
        for i in 0..2 {
            self.by_version[i] += other.by_version[i];
        }
    }
}

/// A stop switch for a running load.
#[derive(Debug, Clone)]
pub struct StopLoad(Arc<watch::Sender<bool>>);

impl StopLoad {
    /// A new, unfired switch.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Tells the workers to stop after their current request.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl Default for StopLoad {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the load until `max_requests` are sent or `stop` fires.
pub async fn run(config: LoadConfig, stop: StopLoad) -> LoadReport {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.concurrency.max(1))
        .build(connector);
    let issued = Arc::new(AtomicU64::new(0));
    let workers = config.concurrency.max(1);
    let period = config
        .rate
        .filter(|r| *r > 0.0 && r.is_finite())
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let client = client.clone();
        let config = config.clone();
        let issued = issued.clone();
        let mut stop_rx = stop.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            let mut ticker = period.map(|p| {
                // Spread the workers' first requests over one period.
                let offset = p.mul_f64(w as f64 / workers as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                if let Some(t) = ticker.as_mut() {
                    tokio::select! {
                        _ = t.tick() => {}
                        _ = stop_rx.changed() => break,
                    }
                }
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if config.max_requests.is_some_and(|m| n >= m) {
                    break;
                }
                one(&client, &config, n, &mut report).await;
            }
            report
        }));
    }
    let mut total = LoadReport::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.merge(&r);
        }
    }
    total
}

/// Runs the load until `max_requests` are sent or `until` completes.
pub async fn run_until(config: LoadConfig, until: impl Future<Output = ()>) -> LoadReport {
    let stop = StopLoad::new();
    let load = run(config, stop.clone());
    let mut load = std::pin::pin!(load);
    tokio::select! {
        r = &mut load => r,
        _ = until => {
            stop.stop();
            load.await
        }
    }
}

async fn one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    config: &LoadConfig,
    n: u64,
    report: &mut LoadReport,
) {
    report.sent += 1;
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = config.url.clone();
    if let Some((name, users)) = &config.users {
        if let Ok(v) = HeaderValue::from_str(&format!("user-{}", n % (*users).max(1))) {
            req.headers_mut().insert(name.clone(), v);
        }
    }
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let version = resp
                .headers()
                .get(&VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(version_index);
            if resp.into_body().collect().await.is_err() {
                // The head came but the body broke off: no complete response.
                report.failed += 1;
                return;
            }
            let class = match status {
                100..=599 => usize::from(status / 100) - 1,
                _ => 5,
            };
            report.classes[class] += 1;
            if let Some(i) = version {
                report.by_version[i] += 1;
            }
        }
        Err(_) => report.failed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::version_index;

    #[test]
    fn version_header_values_index_stable_first() {
        assert_eq!(version_index("stable"), Some(0));
        assert_eq!(version_index(" Baseline "), Some(0));
        assert_eq!(version_index("CANARY"), Some(1));
        assert_eq!(version_index("other"), None);
    }
}
