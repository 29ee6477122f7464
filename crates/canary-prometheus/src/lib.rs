//! `canary-prometheus`: the metrics the users already have, as a
//! [`MetricsSource`]: PromQL queries against a Prometheus server
//! ([`PrometheusSource`], `metrics.provider: prometheus`), or each
//! version's own `/metrics` endpoints read by canary itself
//! ([`ScrapeSource`], `metrics.provider: scrape`).
//!
//! Both fail safe: what cannot be read, is empty, NaN or malformed is an
//! error (transient or permanent, with the query or endpoint and what came
//! back), never a zero that could promote.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod buckets;
pub mod query;
pub mod scrape;
pub mod selector;
pub mod text;
pub mod tls;

use std::io::Read;
use std::time::Duration;

use canary_core::spec::{MetricsProvider, MetricsSpec};
use canary_core::{Pair, VersionStats};
use canary_engine::{MetricsSource, SourceError};

pub use query::{PrometheusSource, Queries, UnixClock};
pub use scrape::ScrapeSource;

/// The longest body read from an endpoint or a server (64 MiB).
const MAX_BODY: u64 = 64 << 20;

/// What a GET brought back.
pub(crate) enum Fetched {
    /// A 2xx and its body.
    Ok(String),
    /// Another status and its body.
    Status(u16, String),
    /// No answer (refused, timed out, unreadable), in words.
    Failed(String),
    /// The TLS handshake failed (a certificate not trusted or not for this
    /// host, no client certificate): a setting to fix, not an outage.
    Tls(String),
}

pub(crate) fn fetch(agent: &ureq::Agent, url: &str, headers: &[(String, String)]) -> Fetched {
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut body = String::new();
            let read = resp
                .body_mut()
                .as_reader()
                .take(MAX_BODY)
                .read_to_string(&mut body);
            match read {
                Err(e) => Fetched::Failed(format!("reading the body: {e}")),
                Ok(_) if (200..300).contains(&status) => Fetched::Ok(body),
                Ok(_) => Fetched::Status(status, body),
            }
        }
        Err(e) => match tls_failure(&e) {
            Some(why) => Fetched::Tls(format!(
                "TLS: {why} (does `tls` trust the server's certificate authority, \
                 and show a client certificate if the server asks for one?)"
            )),
            None => Fetched::Failed(e.to_string()),
        },
    }
}

/// The TLS failure behind `e`, if that is what it is. rustls reports a
/// handshake that fails (an untrusted certificate, an alert from the
/// server) as an I/O error carrying its own error, and ureq passes it on
/// as such.
fn tls_failure(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Rustls(r) => Some(r.to_string()),
        ureq::Error::Tls(t) => Some((*t).to_string()),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

/// The first 200 characters of `s`, on one line.
pub(crate) fn clip(s: &str) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if one.len() < s.len() {
        format!("{}…", one.trim_end())
    } else {
        one.trim_end().to_string()
    }
}

/// What this crate finds wrong with a metrics section beyond its shape
/// (which `canary-core` checks): a selector or a query that does not
/// parse. Each as `(path, value, rule)`.
pub fn check(m: &MetricsSpec) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if let (MetricsProvider::Scrape, Some(s)) = (m.provider, &m.scrape) {
        if let Err((path, e)) = scrape::check_extras(s, &m.business, &m.thresholds) {
            out.push((path, String::new(), e));
        }
    }
    match m.provider {
        MetricsProvider::Proxy => {}
        MetricsProvider::Prometheus => {
            if let Some(p) = &m.prometheus {
                // A preset's own queries parse; only what the spec wrote
                // is checked (and named).
                let mut written: Vec<(String, &str)> = Vec::new();
                if let Some(r) = &p.requests {
                    written.push(("metrics.prometheus.requests".into(), r));
                }
                if let Some(e) = &p.errors {
                    written.push(("metrics.prometheus.errors".into(), e));
                }
                if let Some(l) = &p.latency {
                    written.push(("metrics.prometheus.latency".into(), l));
                }
                for (i, b) in m.business.iter().enumerate() {
                    written.push((format!("metrics.business[{i}].numerator"), &b.numerator));
                    written.push((format!("metrics.business[{i}].denominator"), &b.denominator));
                }
                for (i, t) in m.thresholds.iter().enumerate() {
                    written.push((format!("metrics.thresholds[{i}].query"), &t.query));
                }
                for (path, template) in written {
                    if let Err(e) = promql(template) {
                        out.push((path, template.to_string(), e));
                    }
                }
            }
        }
        MetricsProvider::Scrape => {
            if let Some(s) = &m.scrape {
                if let Err((path, e)) = scrape::selectors(s) {
                    let value = match path.rsplit('.').next() {
                        Some("requests") => s.requests.clone(),
                        Some("errors") => s.errors.clone(),
                        _ => s.latency.clone(),
                    };
                    out.push((path, value.unwrap_or_default(), e));
                }
            }
        }
    }
    out
}

/// Whether a query template parses as PromQL once its placeholders are
/// filled in (`$version` with a label value, `$window` with a duration);
/// the parser's complaint, as a rule, when not.
fn promql(template: &str) -> Result<(), String> {
    let q = query::render_for_check(template);
    promql_parser::parser::parse(&q)
        .map(|_| ())
        .map_err(|e| format!("is not valid PromQL: {e}"))
}

/// A metrics source a spec names other than the traffic layer's own.
pub enum Source {
    /// A Prometheus server.
    Prometheus(Box<PrometheusSource>),
    /// Each version's endpoints.
    Scrape(Box<ScrapeSource>),
}

impl Source {
    /// The source `m` names, or `None` for `provider: proxy`. `clock`
    /// gives the Unix time of each read; `interval` is the first window.
    ///
    /// # Errors
    /// The first problem [`check`] finds, as `path: rule`.
    pub fn for_spec(
        m: &MetricsSpec,
        clock: UnixClock,
        interval: Duration,
    ) -> Result<Option<Source>, String> {
        if let Some((path, value, rule)) = check(m).into_iter().next() {
            return Err(format!("{path}: `{value}`: {rule}"));
        }
        Ok(match (m.provider, &m.prometheus, &m.scrape) {
            (MetricsProvider::Prometheus, Some(p), _) => Some(Source::Prometheus(Box::new(
                PrometheusSource::new(p, clock, interval)
                    .map_err(|(p, e)| format!("{p}: {e}"))?
                    .with_metrics(&m.business, &m.thresholds),
            ))),
            (MetricsProvider::Scrape, _, Some(s)) => Some(Source::Scrape(Box::new(
                ScrapeSource::new(s)
                    .and_then(|src| src.with_metrics(&m.business, &m.thresholds))
                    .map_err(|(p, e)| format!("{p}: {e}"))?,
            ))),
            (MetricsProvider::Proxy, _, _) => None,
            (p, _, _) => {
                return Err(format!(
                    "metrics: `provider: {}` needs its section",
                    p.name()
                ))
            }
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Prometheus(_) => "prometheus",
            Source::Scrape(_) => "scrape",
        }
    }
}

impl MetricsSource for Source {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        match self {
            Source::Prometheus(p) => p.read_window().await,
            Source::Scrape(s) => s.read_window().await,
        }
    }
}

/// Parses and validates a spec as [`canary_core::Policy::from_text`] does,
/// and adds what [`check`] finds in its metrics section, each error with
/// its line: what `canary validate`, `canary run` and `canary serve` all
/// use, so they agree.
///
/// # Errors
/// Every problem found, with path, value, rule and line.
pub fn policy_from_text(text: &str) -> Result<canary_core::Policy, canary_core::SpecErrors> {
    let (spec, doc) = canary_core::RolloutSpec::from_text(text)?;
    let policy = spec.validate(Some(&doc));
    let extra: Vec<canary_core::SpecError> = spec
        .metrics
        .as_ref()
        .map(check)
        .unwrap_or_default()
        .into_iter()
        .map(|(path, value, rule)| canary_core::SpecError {
            line: doc.line_of(&path),
            path,
            value,
            rule,
        })
        .collect();
    match policy {
        Ok(p) if extra.is_empty() => Ok(p),
        Ok(_) => Err(canary_core::SpecErrors(extra)),
        Err(mut e) => {
            e.0.extend(extra);
            Err(e)
        }
    }
}
