//! `metrics.provider: prometheus`: PromQL instant queries against a
//! Prometheus server's HTTP API (`GET /api/v1/query`), one per metric and
//! version, over the window since the previous read.
//!
//! `$version` in a query becomes the version's label value (escaped as a
//! PromQL string), `$window` the window's length (e.g. `10000ms`), and
//! the query is evaluated at the read's time (`time=`), which the caller's
//! clock gives: a backtest passes past times through the very same code.
//!
//! Missing data is never read as zero: a query that fails, times out,
//! returns no series for `requests`, or returns NaN is an error (transient:
//! time passes, nothing is promoted). A query the server rejects (bad
//! PromQL) or one returning several series where one number is expected
//! is permanent: it will not mend itself, and the message says which query
//! and what came back. `errors` returning no series reads as no errors
//! (a counter with a `code="500"` label exists only after the first one).

use std::sync::Arc;
use std::time::Duration;

use canary_core::spec::{BusinessMetric, Preset, PrometheusSpec, ThresholdMetric};
use canary_core::{Pair, Ratio, VersionStats};
use canary_engine::{MetricsSource, SourceError};
use serde_json::Value;

use crate::buckets::histogram;
use crate::{clip, fetch, Fetched};

/// Seconds since the Unix epoch, now (or at the instant a backtest
/// replays).
pub type UnixClock = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The three query templates, preset filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    /// Requests over `$window`.
    pub requests: String,
    /// Errors over `$window`.
    pub errors: String,
    /// Histogram buckets over `$window`, by `le`.
    pub latency: Option<String>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The queries `spec` names, its preset's where it writes none.
pub fn queries(spec: &PrometheusSpec) -> Queries {
    let version_label = spec.version_label.as_deref().unwrap_or("version");
    let mut sel: Vec<String> = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    sel.push(format!("{version_label}=\"$version\""));
    let sel = sel.join(",");
    let preset = spec.preset.map(|Preset::Http| {
        (
            format!("sum(increase(http_requests_total{{{sel}}}[$window]))"),
            format!("sum(increase(http_requests_total{{{sel},code=~\"5..\"}}[$window]))"),
            format!(
                "sum by (le) (increase(http_request_duration_seconds_bucket{{{sel}}}[$window]))"
            ),
        )
    });
    let (pr, pe, pl) = match preset {
        Some((r, e, l)) => (Some(r), Some(e), Some(l)),
        None => (None, None, None),
    };
    Queries {
        requests: spec.requests.clone().or(pr).unwrap_or_default(),
        errors: spec.errors.clone().or(pe).unwrap_or_default(),
        latency: spec.latency.clone().or(pl),
    }
}

/// Reads windows from a Prometheus server.
pub struct PrometheusSource {
    base: String,
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
    bearer_token_file: Option<String>,
    queries: Queries,
    versions: Pair<String>,
    clock: UnixClock,
    /// When the previous successful read was evaluated.
    last: Option<f64>,
    /// The first window's length, seconds.
    first_window: f64,
    /// `metrics.business`: numerator and denominator queries per version.
    business: Vec<BusinessMetric>,
    /// `metrics.thresholds`: one query for the canary.
    thresholds: Vec<ThresholdMetric>,
}

/// One query's result: a number, or one number per `le`.
enum Shape {
    One,
    Buckets,
}

impl PrometheusSource {
    /// A source for `spec`, evaluating at `clock`'s times; the first read
    /// covers `first_window` back from its time.
    ///
    /// # Errors
    /// A `tls` file that cannot be read or holds nothing usable, as
    /// `(field, message)`.
    pub fn new(
        spec: &PrometheusSpec,
        clock: UnixClock,
        first_window: Duration,
    ) -> Result<Self, (String, String)> {
        Ok(Self {
            base: spec.address.trim_end_matches('/').to_string(),
            agent: crate::tls::agent(
                spec.timeout.map_or(Duration::from_secs(5), |t| t.0),
                spec.tls.as_ref(),
                "metrics.prometheus.tls",
            )?,
            headers: spec
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bearer_token_file: spec.bearer_token_file.clone(),
            queries: queries(spec),
            versions: Pair {
                baseline: spec.versions.stable.clone(),
                canary: spec.versions.canary.clone(),
            },
            clock,
            last: None,
            first_window: first_window.as_secs_f64().max(1.0),
            business: Vec::new(),
            thresholds: Vec::new(),
        })
    }

    /// The same source, also reading `business` (numerator and denominator
    /// per version over each window) and `thresholds` (the canary's reading
    /// at each window's end).
    #[must_use]
    pub fn with_metrics(
        mut self,
        business: &[BusinessMetric],
        thresholds: &[ThresholdMetric],
    ) -> Self {
        self.business = business.to_vec();
        self.thresholds = thresholds.to_vec();
        self
    }

    /// The queries this source runs (templates).
    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    /// The server's base URL.
    pub fn address(&self) -> &str {
        &self.base
    }

    /// The request headers, the bearer token (read now) included.
    fn request_headers(&self) -> Result<Vec<(String, String)>, String> {
        let mut headers = self.headers.clone();
        if let Some(f) = &self.bearer_token_file {
            let token = std::fs::read_to_string(f)
                .map_err(|e| format!("bearer_token_file {f}: cannot read it: {e}"))?;
            headers.push(("Authorization".into(), format!("Bearer {}", token.trim())));
        }
        Ok(headers)
    }

    /// Asks the server who it is (`/api/v1/status/buildinfo`): its version,
    /// or why it could not be reached, for a command that needs the server
    /// up before it starts (a backtest).
    ///
    /// # Errors
    /// The server's address and what went wrong, in words.
    pub fn probe(&self) -> Result<String, String> {
        let headers = self.request_headers()?;
        let url = format!("{}/api/v1/status/buildinfo", self.base);
        let say = |m: String| format!("Prometheus at {}: {m}", self.base);
        match crate::fetch(&self.agent, &url, &headers) {
            crate::Fetched::Ok(body) => {
                let v: Value = serde_json::from_str(&body).map_err(|e| {
                    say(format!(
                        "not a Prometheus API answer ({e}): {}",
                        clip(&body)
                    ))
                })?;
                Ok(v.pointer("/data/version")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown version")
                    .to_string())
            }
            crate::Fetched::Status(code, body) => Err(say(format!("HTTP {code}: {}", clip(&body)))),
            crate::Fetched::Failed(e) | crate::Fetched::Tls(e) => Err(say(e)),
        }
    }

    /// The window from `from` to `to` (Unix seconds), read now.
    ///
    /// # Errors
    /// As the module says.
    pub async fn window_between(
        &self,
        from: f64,
        to: f64,
    ) -> Result<Pair<VersionStats>, SourceError> {
        let window_ms = ((to - from) * 1000.0).round().max(1000.0) as u64;
        let headers = self.request_headers().map_err(SourceError::transient)?;
        let base = self.base.clone();
        let agent = self.agent.clone();
        let q = self.queries.clone();
        let versions = self.versions.clone();
        let business = self.business.clone();
        let thresholds = self.thresholds.clone();
        tokio::task::spawn_blocking(move || {
            let run = |template: &str, version: &str, shape: Shape| {
                let query = template
                    .replace("$version", &escape(version))
                    .replace("$window", &format!("{window_ms}ms"));
                instant(&agent, &base, &headers, &query, to, shape, version)
            };
            let mut out = Pair::<VersionStats>::default();
            for (v, stats) in [
                (&versions.baseline, &mut out.baseline),
                (&versions.canary, &mut out.canary),
            ] {
                let requests = match run(&q.requests, v, Shape::One)? {
                    Answer::One(Some(n)) => n,
                    Answer::One(None) => {
                        return Err(SourceError::transient(format!(
                            "requests of `{v}`: the query returned no series \
                             (nothing scraped in the window, or a wrong label?): {}",
                            render(&q.requests, v, window_ms)
                        )))
                    }
                    Answer::Buckets(_) => unreachable!("asked for one"),
                };
                let errors = match run(&q.errors, v, Shape::One)? {
                    Answer::One(n) => n.unwrap_or(0.0),
                    Answer::Buckets(_) => unreachable!("asked for one"),
                };
                stats.requests = requests.round().max(0.0) as u64;
                stats.errors = (errors.round().max(0.0) as u64).min(stats.requests);
                if let Some(lq) = &q.latency {
                    if let Answer::Buckets(b) = run(lq, v, Shape::Buckets)? {
                        if b.is_empty() {
                            if stats.requests > 0 {
                                return Err(SourceError::transient(format!(
                                    "latency of `{v}`: the query returned no series: {}",
                                    render(lq, v, window_ms)
                                )));
                            }
                        } else {
                            stats.latency = histogram(&b).map_err(|e| {
                                SourceError::permanent(format!(
                                    "latency of `{v}`: {e}: {}",
                                    render(lq, v, window_ms)
                                ))
                            })?;
                        }
                    }
                }
                // A numerator without series counts 0 (a counter appears
                // with its first event); a denominator without series is
                // missing data, never a zero.
                for b in &business {
                    let one = |template: &str| match run(template, v, Shape::One)? {
                        Answer::One(n) => Ok(n),
                        Answer::Buckets(_) => unreachable!("asked for one"),
                    };
                    let numerator = one(&b.numerator)?.unwrap_or(0.0);
                    let Some(denominator) = one(&b.denominator)? else {
                        return Err(SourceError::transient(format!(
                            "business metric {} of `{v}`: the denominator query returned no \
                             series: {}",
                            b.name,
                            render(&b.denominator, v, window_ms)
                        )));
                    };
                    let den = denominator.round().max(0.0) as u64;
                    stats.business.insert(
                        b.name.clone(),
                        Ratio {
                            numerator: (numerator.round().max(0.0) as u64).min(den),
                            denominator: den,
                        },
                    );
                }
            }
            for t in &thresholds {
                let v = &versions.canary;
                match run(&t.query, v, Shape::One)? {
                    Answer::One(Some(x)) => {
                        out.canary.gauges.insert(t.name.clone(), x);
                    }
                    Answer::One(None) => {
                        return Err(SourceError::transient(format!(
                            "threshold metric {} of `{v}`: the query returned no series: {}",
                            t.name,
                            render(&t.query, v, window_ms)
                        )))
                    }
                    Answer::Buckets(_) => unreachable!("asked for one"),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| SourceError::transient(format!("query task: {e}")))?
    }
}

/// A template filled in as a real look would fill it, for checking that it
/// parses.
pub(crate) fn render_for_check(template: &str) -> String {
    render(template, "v1", 60_000)
}

fn render(template: &str, version: &str, window_ms: u64) -> String {
    template
        .replace("$version", &escape(version))
        .replace("$window", &format!("{window_ms}ms"))
}

enum Answer {
    One(Option<f64>),
    Buckets(Vec<(f64, f64)>),
}

fn instant(
    agent: &ureq::Agent,
    base: &str,
    headers: &[(String, String)],
    query: &str,
    at: f64,
    shape: Shape,
    version: &str,
) -> Result<Answer, SourceError> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={at:.3}",
        urlencode(query)
    );
    let what = |m: String| format!("query `{query}` ({version}) at {base}: {m}");
    let body = match fetch(agent, &url, headers) {
        Fetched::Ok(b) => b,
        Fetched::Status(code, b) => {
            let detail = serde_json::from_str::<Value>(&b)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| clip(&b));
            let m = what(format!("HTTP {code}: {detail}"));
            // 400: the server rejects the query itself; it will not mend.
            return Err(
                if code == 400 || code == 401 || code == 403 || code == 404 {
                    SourceError::permanent(m)
                } else {
                    SourceError::transient(m)
                },
            );
        }
        Fetched::Failed(e) => return Err(SourceError::transient(what(e))),
        Fetched::Tls(e) => return Err(SourceError::permanent(what(e))),
    };
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| SourceError::transient(what(format!("not JSON ({e}): {}", clip(&body)))))?;
    if v.get("status").and_then(Value::as_str) != Some("success") {
        return Err(SourceError::permanent(what(format!(
            "status {}: {}",
            v.get("status").unwrap_or(&Value::Null),
            v.get("error").and_then(Value::as_str).unwrap_or("")
        ))));
    }
    let data = v.get("data").unwrap_or(&Value::Null);
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    let result = data.get("result").unwrap_or(&Value::Null);
    let number = |pair: &Value| -> Result<f64, SourceError> {
        let s = pair.get(1).and_then(Value::as_str).unwrap_or("");
        let n = crate::text::parse_value(s).unwrap_or(f64::NAN);
        if n.is_finite() {
            Ok(n)
        } else {
            Err(SourceError::transient(what(format!(
                "returned `{s}`, not a number"
            ))))
        }
    };
    match (kind, shape) {
        ("scalar", Shape::One) => Ok(Answer::One(Some(number(result)?))),
        ("vector", Shape::One) => {
            let series = result.as_array().map_or(&[][..], Vec::as_slice);
            match series {
                [] => Ok(Answer::One(None)),
                [one] => Ok(Answer::One(Some(number(
                    one.get("value").unwrap_or(&Value::Null),
                )?))),
                many => Err(SourceError::permanent(what(format!(
                    "returned {} series where one number is expected (wrap it in sum(...)); \
                     the first: {}",
                    many.len(),
                    clip(&many[0].get("metric").unwrap_or(&Value::Null).to_string())
                )))),
            }
        }
        ("vector", Shape::Buckets) => {
            let series = result.as_array().map_or(&[][..], Vec::as_slice);
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                let le = s
                    .get("metric")
                    .and_then(|m| m.get("le"))
                    .and_then(Value::as_str)
                    .and_then(crate::text::parse_value)
                    .ok_or_else(|| {
                        SourceError::permanent(what(format!(
                            "a series has no numeric `le` label (write `sum by (le) (...)` over \
                             a histogram's `_bucket` series): {}",
                            clip(&s.get("metric").unwrap_or(&Value::Null).to_string())
                        )))
                    })?;
                out.push((le, number(s.get("value").unwrap_or(&Value::Null))?));
            }
            Ok(Answer::Buckets(out))
        }
        (other, _) => Err(SourceError::permanent(what(format!(
            "returned a {other}, not an instant vector or scalar"
        )))),
    }
}

/// Percent-encodes a query parameter's value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl MetricsSource for PrometheusSource {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let now = (self.clock)();
        let from = self.last.unwrap_or(now - self.first_window);
        let w = self.window_between(from, now).await?;
        self.last = Some(now);
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_http_preset_writes_the_common_queries() {
        let spec = PrometheusSpec {
            address: "http://p:9090".into(),
            timeout: None,
            headers: BTreeMap::new(),
            bearer_token_file: None,
            tls: None,
            preset: Some(Preset::Http),
            labels: BTreeMap::from([("app".to_string(), "shop".to_string())]),
            version_label: None,
            versions: Default::default(),
            requests: None,
            errors: None,
            latency: None,
        };
        let q = queries(&spec);
        assert_eq!(
            q.requests,
            r#"sum(increase(http_requests_total{app="shop",version="$version"}[$window]))"#
        );
        assert!(q.errors.contains(r#"code=~"5..""#));
        assert!(q
            .latency
            .unwrap()
            .starts_with("sum by (le) (increase(http_request_duration_seconds_bucket{"));
        assert_eq!(
            render(&q.requests, "ca\"n", 5000),
            r#"sum(increase(http_requests_total{app="shop",version="ca\"n"}[5000ms]))"#
        );
        assert_eq!(urlencode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
