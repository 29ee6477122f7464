//! The `metrics` section: where a live rollout reads its per-version
//! numbers. The built-in proxy (the default), a Prometheus server, or each
//! version's own `/metrics` endpoints, scraped by canary itself.
//!
//! Only the shape is checked here: URLs, required fields, the `$version`
//! placeholder, label names. Whether a selector or a PromQL query parses
//! is for the adapter (`canary-prometheus`), which `canary validate`,
//! `canary run` and `canary serve` also ask.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::Findings;
use crate::duration::HumanDuration;

/// Where the judges' numbers come from, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    /// `proxy` (the default: the built-in proxy counts what it carries),
    /// `prometheus` or `scrape`.
    #[serde(default)]
    pub provider: MetricsProvider,
    /// `provider: prometheus`: the server and the queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    /// `provider: scrape`: each version's endpoints and the metric names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeSpec>,
    /// Business metrics: a ratio of two counters per version (checkouts
    /// per session, ...), judged by the chosen judge against the stable
    /// version's, as it judges the error rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub business: Vec<BusinessMetric>,
    /// Threshold metrics: one number about the canary (memory, saturation,
    /// queue depth, ...) held to a `max` or `min`, without a baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdMetric>,
}

/// A business metric (`metrics.business[i]`): per version, `numerator`
/// events among `denominator` events over each window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessMetric {
    /// The metric's name in the evidence, the report and the log
    /// (`[a-z_][a-z0-9_]*`).
    pub name: String,
    /// The counted events, e.g. checkouts: with `provider: prometheus` a
    /// PromQL query giving one number with `$version` and `$window`
    /// placeholders (`sum(increase(checkouts_total{version="$version"}[$window]))`);
    /// with `provider: scrape` a counter selector (`checkouts_total`).
    pub numerator: String,
    /// The events they are counted among, e.g. sessions, the same way.
    pub denominator: String,
    /// Whether a higher ratio is better (conversion) or worse (refunds).
    pub direction: Direction,
}

/// Which way a business metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A canary with a lower ratio is worse (conversion, sign-ups).
    HigherIsBetter,
    /// A canary with a higher ratio is worse (refunds, abandoned carts).
    LowerIsBetter,
}

impl Direction {
    /// The direction as written.
    pub fn name(self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "higher_is_better",
            Direction::LowerIsBetter => "lower_is_better",
        }
    }
}

/// A threshold metric (`metrics.thresholds[i]`): the canary's reading at
/// each look, held to `max` and/or `min`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdMetric {
    /// The metric's name in the evidence, the report and the log.
    pub name: String,
    /// With `provider: prometheus` a PromQL query giving one number
    /// (`$version` is the canary's label value, `$window` the window);
    /// with `provider: scrape` a gauge selector read from the canary's
    /// endpoints (matching series added up).
    pub query: String,
    /// The largest acceptable reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The smallest acceptable reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Readings in a row out of bounds that fail the canary (default 1).
    /// Fewer hold the stage: it does not pass while the last reading is
    /// out of bounds.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub consecutive: u32,
}

fn one() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_one(n: &u32) -> bool {
    *n == 1
}

impl ThresholdMetric {
    /// Whether `value` is within the bounds.
    pub fn holds(&self, value: f64) -> bool {
        value.is_finite()
            && self.max.is_none_or(|m| value <= m)
            && self.min.is_none_or(|m| value >= m)
    }

    /// The bounds in words, e.g. `≤ 5e8`, `≥ 10 and ≤ 90`.
    pub fn bounds(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!(">= {lo} and <= {hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => "(no bounds)".into(),
        }
    }
}

/// Names the judges' own evidence uses, which a business or threshold
/// metric may not take.
pub const RESERVED_METRIC_NAMES: [&str; 4] =
    ["error_rate", "latency", "latency_distribution", "guardrail"];

/// What supplies the numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsProvider {
    /// The traffic layer's own counts (the built-in proxy, a simulated
    /// service, HAProxy's counters).
    #[default]
    Proxy,
    /// PromQL queries against a Prometheus server (or anything that speaks
    /// its HTTP API).
    Prometheus,
    /// Each version's own `/metrics` endpoints, read by canary in the
    /// Prometheus text format.
    Scrape,
}

impl MetricsProvider {
    /// The provider's name as written.
    pub fn name(self) -> &'static str {
        match self {
            MetricsProvider::Proxy => "proxy",
            MetricsProvider::Prometheus => "prometheus",
            MetricsProvider::Scrape => "scrape",
        }
    }
}

/// A set of metric names and labels for the common case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `http_requests_total` with a `code` label (errors: `code=~"5.."`),
    /// and the histogram `http_request_duration_seconds`.
    Http,
}

/// `metrics.prometheus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// The server's base URL, e.g. `http://prometheus:9090`.
    pub address: String,
    /// How long one query may take (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Extra request headers (for a proxy in front of Prometheus, a tenant
    /// header, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A file holding a bearer token, sent as `Authorization: Bearer ...`
    /// (read at each query, so a rotated token is picked up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// How to verify an `https://` server and, for mutual TLS, which client
    /// certificate to show (default: Mozilla's root certificates, no
    /// client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Queries for the common metric names (`http`); any query written
    /// below replaces the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The preset's label matchers besides the version's, e.g.
    /// `{app: checkout, namespace: shop}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The label that tells the versions apart (default `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_label: Option<String>,
    /// The label values of the two versions (default `stable` and `canary`).
    #[serde(default)]
    pub versions: VersionValues,
    /// Requests over the window: a PromQL query giving one number, with
    /// `$version` and `$window` placeholders, e.g.
    /// `sum(increase(http_requests_total{version="$version"}[$window]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// Failed requests over the window, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// Latency over the window: a query giving one series per histogram
    /// bucket, by `le` in seconds, e.g.
    /// `sum by (le) (increase(http_request_duration_seconds_bucket{version="$version"}[$window]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
}

/// The label values of the two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionValues {
    /// The stable version's (default `stable`).
    pub stable: String,
    /// The canary's (default `canary`).
    pub canary: String,
}

impl Default for VersionValues {
    fn default() -> Self {
        Self {
            stable: "stable".into(),
            canary: "canary".into(),
        }
    }
}

/// `metrics.scrape`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeSpec {
    /// The stable version's endpoints (`http://host:port/metrics`), one per
    /// instance; their counts are added up.
    pub stable: Vec<String>,
    /// The canary's endpoints.
    pub canary: Vec<String>,
    /// How long one scrape may take (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// How to verify `https://` endpoints, as for Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Metric names for the common case (`http`); any selector written
    /// below replaces the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Label matchers added to each selector, e.g. `{handler: /checkout}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The request counter: a selector, e.g. `http_requests_total` (every
    /// matching series is added up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// The failed-request counter, e.g. `http_requests_total{code=~"5.."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// A histogram's name (without `_bucket`), e.g.
    /// `http_request_duration_seconds`; bounds in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
}

/// `tls` of `metrics.prometheus` or `metrics.scrape`: the same fields as a
/// Prometheus `tls_config`. The files are read when a rollout starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of the certificate authorities to trust, instead of
    /// Mozilla's root certificates (for a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file of a client certificate (and its chain) to show, for a
    /// server that asks for one (mutual TLS); needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Accept any server certificate (no verification at all): for a
    /// test setup only; anyone on the path could forge the numbers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// What happens when the metrics cannot be read for
/// `analysis.metrics_unavailable_after` looks in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnMetricsUnavailable {
    /// Hold the weight (no timeout runs) until numbers come back; then
    /// the stage goes on with its clock restarted.
    #[default]
    Pause,
    /// Roll back.
    Rollback,
}

/// Is `s` a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`)?
pub fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Is `s` an HTTP header name (an RFC 9110 token)?
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_base_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("not an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("the URL has no host");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the URL has spaces or control characters");
    }
    Ok(())
}

/// Checks a `tls` section; `urls` are the addresses it applies to.
fn check_tls(found: &mut Findings, at: &str, tls: Option<&TlsSpec>, urls: &[&String]) {
    let Some(t) = tls else { return };
    let at = format!("{at}.tls");
    if !urls.iter().any(|u| u.starts_with("https://")) {
        found.add(
            at.clone(),
            "(a section)".into(),
            "only applies to https:// addresses, and none is given".into(),
        );
    }
    for (f, v) in [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
    ] {
        if v.as_deref().is_some_and(|p| p.trim().is_empty()) {
            found.add(
                format!("{at}.{f}"),
                "\"\"".into(),
                "must be a file path".into(),
            );
        }
    }
    match (&t.cert_file, &t.key_file) {
        (Some(_), None) => found.add(
            format!("{at}.key_file"),
            "(missing)".into(),
            "a client certificate (cert_file) needs its private key (key_file)".into(),
        ),
        (None, Some(_)) => found.add(
            format!("{at}.cert_file"),
            "(missing)".into(),
            "a private key (key_file) needs its client certificate (cert_file)".into(),
        ),
        _ => {}
    }
    if t.insecure_skip_verify && t.ca_file.is_some() {
        found.add(
            format!("{at}.insecure_skip_verify"),
            "true".into(),
            "give either ca_file (verify against it) or insecure_skip_verify, not both".into(),
        );
    }
}

fn check_timeout(found: &mut Findings, path: &str, t: Option<&HumanDuration>) {
    if let Some(t) = t {
        if t.0.is_zero() {
            found.add(path.into(), t.to_string(), "must be positive".into());
        }
    }
}

fn check_labels(found: &mut Findings, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if !is_label_name(k) {
            found.add(
                format!("{path}.{k}"),
                k.clone(),
                "not a label name ([a-zA-Z_][a-zA-Z0-9_]*)".into(),
            );
        }
        if v.chars().any(char::is_control) {
            found.add(
                format!("{path}.{k}"),
                v.escape_default().to_string(),
                "a label value must not contain control characters".into(),
            );
        }
    }
}

/// Checks the metrics section; `live` is whether a traffic section names
/// the built-in proxy or another layer that counts (for `provider: proxy`).
pub(super) fn check_metrics(m: &MetricsSpec, found: &mut Findings) {
    let provider = m.provider.name();
    let only = |found: &mut Findings, field: &str, of: &str| {
        found.add(
            format!("metrics.{field}"),
            "(a section)".into(),
            format!("only for `provider: {of}`; this metrics section has `provider: {provider}`"),
        );
    };
    if m.provider != MetricsProvider::Prometheus && m.prometheus.is_some() {
        only(found, "prometheus", "prometheus");
    }
    if m.provider != MetricsProvider::Scrape && m.scrape.is_some() {
        only(found, "scrape", "scrape");
    }
    check_business(m, found);
    match m.provider {
        MetricsProvider::Proxy => {}
        MetricsProvider::Prometheus => match &m.prometheus {
            None => found.add(
                "metrics.prometheus".into(),
                "(missing)".into(),
                "`provider: prometheus` needs a `prometheus` section with an `address` and a \
                 `preset` or `requests` and `errors` queries"
                    .into(),
            ),
            Some(p) => check_prometheus(p, found),
        },
        MetricsProvider::Scrape => match &m.scrape {
            None => found.add(
                "metrics.scrape".into(),
                "(missing)".into(),
                "`provider: scrape` needs a `scrape` section with `stable` and `canary` \
                 endpoint URLs and a `preset` or `requests` and `errors`"
                    .into(),
            ),
            Some(s) => check_scrape(s, found),
        },
    }
}

fn check_prometheus(p: &PrometheusSpec, found: &mut Findings) {
    let at = "metrics.prometheus";
    if let Err(why) = check_base_url(&p.address) {
        found.add(
            format!("{at}.address"),
            p.address.clone(),
            format!("{why}: write the server's URL, e.g. http://127.0.0.1:9090"),
        );
    }
    check_timeout(found, &format!("{at}.timeout"), p.timeout.as_ref());
    check_tls(found, at, p.tls.as_ref(), &[&p.address]);
    for (k, v) in &p.headers {
        if !is_header_name(k) {
            found.add(
                format!("{at}.headers.{k}"),
                k.clone(),
                "not an HTTP header name".into(),
            );
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            found.add(
                format!("{at}.headers.{k}"),
                v.escape_default().to_string(),
                "a header value must not contain control characters".into(),
            );
        }
        if k.eq_ignore_ascii_case("authorization") && p.bearer_token_file.is_some() {
            found.add(
                format!("{at}.headers.{k}"),
                "(set)".into(),
                "give either an Authorization header or bearer_token_file, not both".into(),
            );
        }
    }
    if let Some(f) = &p.bearer_token_file {
        if f.trim().is_empty() {
            found.add(
                format!("{at}.bearer_token_file"),
                "\"\"".into(),
                "must be a file path".into(),
            );
        }
    }
    check_labels(found, &format!("{at}.labels"), &p.labels);
    if let Some(l) = &p.version_label {
        if !is_label_name(l) {
            found.add(
                format!("{at}.version_label"),
                l.clone(),
                "not a label name ([a-zA-Z_][a-zA-Z0-9_]*)".into(),
            );
        }
    }
    for (f, v) in [
        ("stable", &p.versions.stable),
        ("canary", &p.versions.canary),
    ] {
        if v.is_empty() || v.chars().any(char::is_control) {
            found.add(
                format!("{at}.versions.{f}"),
                v.escape_default().to_string(),
                "must be a non-empty label value without control characters".into(),
            );
        }
    }
    if p.versions.stable == p.versions.canary {
        found.add(
            format!("{at}.versions.canary"),
            p.versions.canary.clone(),
            "must differ from versions.stable: the versions would read the same series".into(),
        );
    }
    if p.preset.is_none() {
        if !p.labels.is_empty() {
            found.add(
                format!("{at}.labels"),
                "(set)".into(),
                "labels only apply to a preset's queries: write them into your own queries".into(),
            );
        }
        require_queries(found, at, [&p.requests, &p.errors]);
    }
    for (f, q) in [
        ("requests", &p.requests),
        ("errors", &p.errors),
        ("latency", &p.latency),
    ] {
        if let Some(q) = q {
            if q.trim().is_empty() {
                found.add(
                    format!("{at}.{f}"),
                    "\"\"".into(),
                    "must not be empty".into(),
                );
            } else if !q.contains("$version") {
                found.add(
                    format!("{at}.{f}"),
                    q.clone(),
                    "must contain `$version`, where each version's label value goes: \
                     without it both versions read the same numbers"
                        .into(),
                );
            }
        }
    }
}

/// Without a preset, `requests` and `errors` (in that order) must be given.
fn require_queries(found: &mut Findings, at: &str, given: [&Option<String>; 2]) {
    for (f, q) in ["requests", "errors"].into_iter().zip(given) {
        if q.is_none() {
            found.add(
                format!("{at}.{f}"),
                "(missing)".into(),
                "required without a `preset` (e.g. `preset: http`)".into(),
            );
        }
    }
}

fn check_scrape(s: &ScrapeSpec, found: &mut Findings) {
    let at = "metrics.scrape";
    for (f, urls) in [("stable", &s.stable), ("canary", &s.canary)] {
        if urls.is_empty() {
            found.add(
                format!("{at}.{f}"),
                "[]".into(),
                "give at least one endpoint, e.g. http://10.0.0.1:8080/metrics".into(),
            );
        }
        for (i, u) in urls.iter().enumerate() {
            if let Err(why) = check_base_url(u) {
                found.add(
                    format!("{at}.{f}[{i}]"),
                    u.clone(),
                    format!("{why}: write the endpoint's URL, e.g. http://10.0.0.1:8080/metrics"),
                );
            }
        }
    }
    for u in &s.canary {
        if s.stable.contains(u) {
            found.add(
                format!("{at}.canary"),
                u.clone(),
                "is also a stable endpoint: each endpoint belongs to one version".into(),
            );
        }
    }
    check_timeout(found, &format!("{at}.timeout"), s.timeout.as_ref());
    let urls: Vec<&String> = s.stable.iter().chain(&s.canary).collect();
    check_tls(found, at, s.tls.as_ref(), &urls);
    check_labels(found, &format!("{at}.labels"), &s.labels);
    if s.preset.is_none() {
        require_queries(found, at, [&s.requests, &s.errors]);
    }
    for (f, q) in [
        ("requests", &s.requests),
        ("errors", &s.errors),
        ("latency", &s.latency),
    ] {
        if let Some(q) = q {
            if q.trim().is_empty() {
                found.add(
                    format!("{at}.{f}"),
                    "\"\"".into(),
                    "must not be empty".into(),
                );
            }
        }
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase() || f == '_')
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks `metrics.business` and `metrics.thresholds`: names, queries,
/// bounds, and a provider that can read them.
fn check_business(m: &MetricsSpec, found: &mut Findings) {
    let prometheus = m.provider == MetricsProvider::Prometheus;
    if m.provider == MetricsProvider::Proxy {
        for (f, n) in [
            ("business", m.business.len()),
            ("thresholds", m.thresholds.len()),
        ] {
            if n > 0 {
                found.add(
                    format!("metrics.{f}"),
                    format!("({n} metrics)"),
                    "need `provider: prometheus` or `provider: scrape`: the traffic layer \
                     counts only requests, errors and latencies"
                        .into(),
                );
            }
        }
    }
    let name = |found: &mut Findings, seen: &[&str], at: &str, n: &str| {
        if !is_metric_name(n) {
            found.add(
                format!("{at}.name"),
                n.escape_default().to_string(),
                "a metric name is lower case letters, digits and `_`, not starting with a digit"
                    .into(),
            );
        } else if RESERVED_METRIC_NAMES.contains(&n) {
            found.add(
                format!("{at}.name"),
                n.into(),
                format!(
                    "is one of the judges' own metrics ({}): choose another name",
                    RESERVED_METRIC_NAMES.join(", ")
                ),
            );
        } else if seen.contains(&n) {
            found.add(
                format!("{at}.name"),
                n.into(),
                "another business or threshold metric has this name".into(),
            );
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    let query = |found: &mut Findings, path: String, q: &str, version: bool| {
        if q.trim().is_empty() {
            found.add(path, "\"\"".into(), "must not be empty".into());
        } else if version && prometheus && !q.contains("$version") {
            found.add(
                path,
                q.into(),
                "must contain `$version`, where each version's label value goes: \
                 without it both versions read the same numbers"
                    .into(),
            );
        }
    };
    for (i, b) in m.business.iter().enumerate() {
        let at = format!("metrics.business[{i}]");
        name(found, &seen, &at, &b.name);
        seen.push(&b.name);
        query(found, format!("{at}.numerator"), &b.numerator, true);
        query(found, format!("{at}.denominator"), &b.denominator, true);
        if !b.numerator.trim().is_empty() && b.numerator.trim() == b.denominator.trim() {
            found.add(
                format!("{at}.denominator"),
                b.denominator.clone(),
                "is the numerator: the ratio would always be 1".into(),
            );
        }
    }
    for (i, t) in m.thresholds.iter().enumerate() {
        let at = format!("metrics.thresholds[{i}]");
        name(found, &seen, &at, &t.name);
        seen.push(&t.name);
        query(found, format!("{at}.query"), &t.query, false);
        for (f, v) in [("max", t.max), ("min", t.min)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    found.add(
                        format!("{at}.{f}"),
                        v.to_string(),
                        "must be a finite number".into(),
                    );
                }
            }
        }
        match (t.min, t.max) {
            (None, None) => found.add(
                format!("{at}.max"),
                "(missing)".into(),
                "give `max`, `min` or both: the bounds the canary's reading must stay within"
                    .into(),
            ),
            (Some(lo), Some(hi)) if lo > hi => found.add(
                format!("{at}.min"),
                lo.to_string(),
                format!("is above max ({hi}): no reading could pass"),
            ),
            _ => {}
        }
        if t.consecutive == 0 {
            found.add(
                format!("{at}.consecutive"),
                "0".into(),
                "must be at least 1 (readings in a row out of bounds that fail the canary)".into(),
            );
        }
    }
}
