//! Helpers shared by the live subcommands (`run`, `proxy`, `demo`,
//! `demo-backend`): the tokio runtime, signals, proxy flags, the status line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use canary_proxy::route::HeaderName;
use canary_proxy::{KeySource, ProxyConfig, RouteConfig, Upstream};

/// A multi-threaded runtime with `threads` workers (default: one per core).
pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The number of cores this process may use (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prints one line on stdout and flushes it (scripts read the first line).
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Drives `serve` (a server that drains in-flight requests once told to
/// stop) to its end, unless `signals` SIGINT/SIGTERMs arrive first: then it
/// stops at once, without waiting for in-flight requests, as a second
/// Ctrl-C should. Returns false when it was cut short.
pub async fn unless_signalled(
    signals: usize,
    serve: impl std::future::Future<Output = ()>,
) -> bool {
    let mut signals = std::pin::pin!(async move {
        for _ in 0..signals {
            shutdown_signal().await;
        }
    });
    let serve = std::pin::pin!(serve);
    tokio::select! {
        () = serve => true,
        () = &mut signals => {
            eprintln!("second signal: stopping now, without waiting for in-flight requests");
            false
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The built-in proxy's options, shared by `canary run` and `canary proxy`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Admin address for /healthz, /metrics and /weight (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Sticky routing: hash this request header to pick the version per client.
    #[arg(long, value_name = "NAME", conflicts_with = "sticky_cookie")]
    pub sticky_header: Option<String>,
    /// Sticky routing: hash this cookie to pick the version per client.
    #[arg(long, value_name = "NAME")]
    pub sticky_cookie: Option<String>,
    /// Header whose value `stable` or `canary` forces a version.
    #[arg(long, value_name = "NAME", default_value = "x-canary")]
    pub override_header: String,
    /// Cookie whose value `stable` or `canary` forces a version.
    #[arg(long, value_name = "NAME", default_value = "canary")]
    pub override_cookie: String,
    /// Upstream connect timeout, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub connect_timeout_ms: u64,
    /// Upstream response-head timeout, and the longest a response body may
    /// go without a byte, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30000)]
    pub response_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30000)]
    pub drain_timeout_ms: u64,
    /// Threads serving traffic, each with its own single-threaded runtime
    /// and upstream pools (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn header(flag: &str, name: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .with_context(|| format!("--{flag} `{name}` is not a header name"))
}

impl ProxyArgs {
    /// The proxy configuration for these flags.
    pub fn config(&self, listen: &str, stable: &str, canary: &str) -> Result<ProxyConfig> {
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address `{listen}` is not ADDR:PORT"))?;
        let mut c = ProxyConfig::new(listen, Upstream::parse(stable)?, Upstream::parse(canary)?);
        c.admin = self.admin;
        let sticky = match (&self.sticky_header, &self.sticky_cookie) {
            (Some(h), _) => Some(KeySource::Header(header("sticky-header", h)?)),
            (None, Some(c)) => Some(KeySource::Cookie(c.clone())),
            (None, None) => None,
        };
        let mut overrides = Vec::new();
        if !self.override_header.is_empty() {
            overrides.push(KeySource::Header(header(
                "override-header",
                &self.override_header,
            )?));
        }
        if !self.override_cookie.is_empty() {
            overrides.push(KeySource::Cookie(self.override_cookie.clone()));
        }
        c.route = RouteConfig {
            sticky,
            overrides,
            seed: seed(),
        };
        for (flag, ms) in [
            ("connect-timeout-ms", self.connect_timeout_ms),
            ("response-timeout-ms", self.response_timeout_ms),
        ] {
            if ms == 0 {
                bail!("--{flag} must be positive");
            }
        }
        c.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        c.response_timeout = Duration::from_millis(self.response_timeout_ms);
        c.drain_timeout = Duration::from_millis(self.drain_timeout_ms);
        c.workers = self.threads.unwrap_or_else(cores).max(1);
        Ok(c)
    }
}

/// A seed for the proxy's per-request draws: the binary is the edge that
/// may seed randomness.
pub fn seed() -> u64 {
    #[allow(clippy::disallowed_methods)] // the binary's edge seeds the proxy's draws
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// Writes the status line on stderr: redrawn in place on a terminal, one line
/// per update otherwise. Notes are printed above it.
pub struct StatusLine {
    tty: bool,
    drawn: bool,
}

impl StatusLine {
    /// A status line on stderr.
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Prints `notes`, then `status`.
    pub fn update(&mut self, notes: &[String], status: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty && self.drawn {
            let _ = write!(err, "\r\x1b[2K");
        }
        for n in notes {
            let _ = writeln!(err, "» {n}");
        }
        if self.tty {
            let _ = write!(err, "{status}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{status}");
        }
        let _ = err.flush();
    }

    /// Ends the line (on a terminal).
    pub fn finish(&mut self) {
        if self.tty && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
