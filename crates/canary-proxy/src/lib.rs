//! `canary-proxy`: the built-in data plane of live rollouts.
//!
//! A reverse proxy in front of two upstreams, a stable and a canary version.
//! Clients speak HTTP/1.1 or h2c (HTTP/2 over cleartext with prior
//! knowledge, on the same port); upstreams are spoken to in HTTP/1.1 by the
//! proxy's own client (`upstream`). For each request it:
//! 1. picks a version ([`route`]): an override header or cookie first, then a
//!    hash of the client's sticky key, then a per-request draw, compared with
//!    the canary weight held in one atomic;
//! 2. forwards the request over a pooled keep-alive connection to that
//!    version, with a connect timeout and a response timeout;
//! 3. records the outcome and the latency to the response head into the
//!    per-version [`recorder`], which the controller reads once per tick as a
//!    window of [`canary_core::VersionStats`] and Prometheus reads as
//!    counters on the admin port.
//!
//! A weight change ([`ProxyHandle::set_weight`]) is one atomic store: requests
//! routed before it finish where they were sent, requests after it see the
//! new weight; nothing is dropped. Shutdown stops accepting, lets in-flight
//! requests finish (up to a drain limit) and closes idle connections.
//!
//! Why a new proxy rather than driving nginx: the controller needs
//! per-version numbers the moment a window closes, exact weights (not
//! integer server weights) and sticky clients that move only one way as the
//! weight grows; built in, `canary demo` and `canary run` need nothing
//! installed. Adapters for nginx, HAProxy and others come separately.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canary_core::{Pair, VersionStats};
use hyper::Uri;
use tokio::net::TcpListener;

mod adapter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
pub mod recorder;
pub mod route;
mod server;
mod upstream;

pub use recorder::{CounterSnapshot, Outcome, Recorder};
pub use route::{KeySource, RouteConfig, Router, Version};

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address to serve traffic on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address of the admin server (`/healthz`, `/metrics`), if any.
    pub admin: Option<SocketAddr>,
    /// Base URL of the stable version (`http://host:port[/prefix]`).
    pub stable: Upstream,
    /// Base URL of the canary version.
    pub canary: Upstream,
    /// Routing rules besides the weight.
    pub route: RouteConfig,
    /// Initial canary weight, percent.
    pub initial_weight: f64,
    /// Limit for connecting to an upstream.
    pub connect_timeout: Duration,
    /// Limit for an upstream's response head, from the request's arrival;
    /// also the longest a response body may go without a byte.
    pub response_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Idle keep-alive connections kept per upstream (per worker).
    pub max_idle_per_upstream: usize,
    /// Threads serving traffic, each a single-threaded runtime of its own
    /// with its own upstream pools; 0 serves on the caller's runtime.
    pub workers: usize,
}

impl ProxyConfig {
    /// A configuration with the defaults: no admin server, weight 0, 2 s
    /// connect timeout, 30 s response timeout, 30 s drain, 512 idle
    /// connections per upstream, served on the caller's runtime (no
    /// workers of its own).
    pub fn new(listen: SocketAddr, stable: Upstream, canary: Upstream) -> Self {
        Self {
            listen,
            admin: None,
            stable,
            canary,
            route: RouteConfig::default(),
            initial_weight: 0.0,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_idle_per_upstream: 512,
            workers: 0,
        }
    }
}

/// An upstream's base URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: hyper::http::uri::Authority,
    /// Path prefix without a trailing slash (may be empty).
    prefix: String,
    /// The `Host` header for requests that arrive without one, built once.
    host: hyper::header::HeaderValue,
}

impl Upstream {
    /// Parses `http://host:port[/prefix]`.
    ///
    /// # Errors
    /// [`ProxyError::BadUpstream`] for another scheme, a missing host, or a
    /// query or fragment in the base URL.
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::BadUpstream {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// upstreams are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a base URL takes no query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let host = hyper::header::HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("the host is not a valid Host header"))?;
        Ok(Self {
            authority,
            prefix,
            host,
        })
    }

    /// The origin-form URI to send upstream for a request to `uri`: `None`
    /// when `uri` can be sent as it is (no prefix, already origin-form).
    pub(crate) fn origin_form(&self, uri: &Uri) -> Result<Option<Uri>, hyper::http::Error> {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if self.prefix.is_empty() {
            if uri.scheme().is_none() && uri.authority().is_none() {
                return Ok(None);
            }
            return Ok(Some(Uri::try_from(pq)?));
        }
        Ok(Some(Uri::try_from(format!("{}{pq}", self.prefix))?))
    }

    /// The `Host` header for requests that arrive without one.
    fn host_header(&self) -> hyper::header::HeaderValue {
        self.host.clone()
    }

    /// `host:port` to connect to (port 80 when the URL names none).
    fn connect_addr(&self) -> String {
        match self.authority.port_u16() {
            Some(_) => self.authority.as_str().to_string(),
            None => format!("{}:80", self.authority.host()),
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// What can go wrong starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An upstream URL was not usable.
    #[error("upstream `{url}`: {why}")]
    BadUpstream {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A weight outside [0, 100].
    #[error("weight {0} is not a percentage in [0, 100]")]
    BadWeight(f64),
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// State shared by every connection and every handle.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) recorder: Recorder,
    pub(crate) upstreams: [Upstream; 2],
    pub(crate) response_timeout: Duration,
    pub(crate) weight_changes: std::sync::atomic::AtomicU64,
    /// Upstream connections opened, per version (stable first).
    pub(crate) upstream_connects: [Arc<std::sync::atomic::AtomicU64>; 2],
}

/// A cheap, cloneable handle to a running proxy: set the weight, read the
/// recorder. This is what the controller holds.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    /// Sets the canary weight, percent. Atomic: every request routed after
    /// this call sees the new weight; none in flight is affected.
    ///
    /// # Errors
    /// [`ProxyError::BadWeight`] outside [0, 100] (the weight is unchanged).
    pub fn set_weight(&self, percent: f64) -> Result<(), ProxyError> {
        let ppm = route::percent_to_ppm(percent).ok_or(ProxyError::BadWeight(percent))?;
        self.shared.router.set_weight_ppm(ppm);
        self.shared
            .weight_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The canary weight, percent.
    pub fn weight(&self) -> f64 {
        self.shared.router.weight()
    }

    /// Per version, what was recorded since the previous call.
    pub fn snapshot_window(&self) -> Pair<VersionStats> {
        self.shared.recorder.snapshot_window()
    }

    /// Per version, everything recorded so far.
    pub fn cumulative(&self) -> Pair<VersionStats> {
        self.shared.recorder.cumulative()
    }

    /// The cumulative counters of one version.
    pub fn counters(&self, version: Version) -> CounterSnapshot {
        self.shared.recorder.counters(version)
    }

    /// The proxy's metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        metrics::render(&self.shared)
    }
}

/// A bound, not yet serving, proxy.
pub struct Proxy {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    config: ProxyConfig,
}

impl Proxy {
    /// Binds the traffic port (and the admin port, if configured).
    ///
    /// # Errors
    /// [`ProxyError::Bind`] when a port cannot be opened,
    /// [`ProxyError::BadWeight`] for a bad initial weight.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        let ppm = route::percent_to_ppm(config.initial_weight)
            .ok_or(ProxyError::BadWeight(config.initial_weight))?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { addr, source })
        };
        let listener = if config.workers > 1 {
            server::bind_first_shared_port(config.listen).map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?
        } else {
            bind(config.listen).await?
        };
        let admin = match config.admin {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let router = Router::new(config.route.clone());
        router.set_weight_ppm(ppm);
        let shared = Arc::new(Shared {
            router,
            recorder: Recorder::new(),
            upstreams: [config.stable.clone(), config.canary.clone()],
            response_timeout: config.response_timeout,
            weight_changes: Default::default(),
            upstream_connects: Default::default(),
        });
        Ok(Self {
            listener,
            admin,
            shared,
            config,
        })
    }

    /// The traffic address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The admin address actually bound, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for the controller.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (up to the drain timeout) and returns.
    /// Must run inside a tokio runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        server::serve(
            self.listener,
            self.admin,
            self.shared,
            &self.config,
            shutdown,
        )
        .await
    }
}

/// The clock the data plane measures latency with. The proxy is an edge of
/// the system (it does I/O and times it), so it may read the wall clock; the
/// readings never reach the engine except as recorded latencies.
#[allow(clippy::disallowed_methods)] // the data plane's one clock read: request latency
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}
