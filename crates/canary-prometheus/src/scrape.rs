//! `metrics.provider: scrape`: canary reads each version's own `/metrics`
//! endpoints and takes the differences itself, for users without a
//! Prometheus server.
//!
//! Each read fetches every endpoint of both versions, selects the request
//! and error counters (and the latency histogram's buckets), and subtracts
//! what each series held at the previous read. A series whose value went
//! down was reset (its process restarted): its whole new value counts. A
//! series that appears after an endpoint's first read counts whole too (a
//! counter a process creates at its first 500); on an endpoint's first read
//! everything is a starting point and counts nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use canary_core::spec::{BusinessMetric, Preset, ScrapeSpec, ThresholdMetric};
use canary_core::{Pair, Ratio, VersionStats};
use canary_engine::{MetricsSource, SourceError};

use crate::buckets::histogram;
use crate::selector::{Matcher, Selector};
use crate::text::{self, Sample};
use crate::{fetch, Fetched};

/// The selectors a scrape section names, preset filled in.
#[derive(Debug, Clone)]
pub struct ScrapeSelectors {
    /// Requests.
    pub requests: Selector,
    /// Errors.
    pub errors: Selector,
    /// The latency histogram (its name without `_bucket`), if any.
    pub latency: Option<Selector>,
}

/// The selectors of `spec`, or the first problem as `(field, message)`.
///
/// # Errors
/// A selector that does not parse, naming its field.
pub fn selectors(spec: &ScrapeSpec) -> Result<ScrapeSelectors, (String, String)> {
    let preset = spec.preset.map(|Preset::Http| {
        (
            "http_requests_total",
            "http_requests_total{code=~\"5..\"}",
            "http_request_duration_seconds",
        )
    });
    let extra: Vec<Matcher> = spec
        .labels
        .iter()
        .map(|(k, v)| Matcher::equal(k, v))
        .collect();
    let one = |field: &str, given: &Option<String>, preset: Option<&str>| {
        let text = given.as_deref().or(preset);
        text.map(|t| {
            Selector::parse(t)
                .map(|s| s.with(extra.clone()))
                .map_err(|e| (format!("metrics.scrape.{field}"), e))
        })
        .transpose()
    };
    let missing = |f: &str| {
        (
            format!("metrics.scrape.{f}"),
            "required without a preset".to_string(),
        )
    };
    let requests =
        one("requests", &spec.requests, preset.map(|p| p.0))?.ok_or_else(|| missing("requests"))?;
    let errors =
        one("errors", &spec.errors, preset.map(|p| p.1))?.ok_or_else(|| missing("errors"))?;
    let latency = one("latency", &spec.latency, preset.map(|p| p.2))?;
    Ok(ScrapeSelectors {
        requests,
        errors,
        latency,
    })
}

/// A business metric's two counter selectors.
#[derive(Debug, Clone)]
struct BusinessSelectors {
    name: String,
    numerator: Selector,
    denominator: Selector,
}

/// The business and threshold selectors, with the section's labels added.
///
/// # Errors
/// A selector that does not parse, as `(field, message)`.
#[allow(clippy::type_complexity)]
fn extra_selectors(
    spec: &ScrapeSpec,
    business: &[BusinessMetric],
    thresholds: &[ThresholdMetric],
) -> Result<(Vec<BusinessSelectors>, Vec<(String, Selector)>), (String, String)> {
    let extra: Vec<Matcher> = spec
        .labels
        .iter()
        .map(|(k, v)| Matcher::equal(k, v))
        .collect();
    let parse = |path: String, text: &str| {
        Selector::parse(text)
            .map(|s| s.with(extra.clone()))
            .map_err(|e| (path, e))
    };
    let b = business
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(BusinessSelectors {
                name: b.name.clone(),
                numerator: parse(format!("metrics.business[{i}].numerator"), &b.numerator)?,
                denominator: parse(format!("metrics.business[{i}].denominator"), &b.denominator)?,
            })
        })
        .collect::<Result<_, (String, String)>>()?;
    let t = thresholds
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok((
                t.name.clone(),
                parse(format!("metrics.thresholds[{i}].query"), &t.query)?,
            ))
        })
        .collect::<Result<_, (String, String)>>()?;
    Ok((b, t))
}

/// Checks the business and threshold selectors of a scrape section.
///
/// # Errors
/// The first that does not parse, as `(field, message)`.
pub fn check_extras(
    spec: &ScrapeSpec,
    business: &[BusinessMetric],
    thresholds: &[ThresholdMetric],
) -> Result<(), (String, String)> {
    extra_selectors(spec, business, thresholds).map(|_| ())
}

/// Reads each version's endpoints.
pub struct ScrapeSource {
    endpoints: Pair<Vec<String>>,
    sel: ScrapeSelectors,
    business: Vec<BusinessSelectors>,
    thresholds: Vec<(String, Selector)>,
    spec: ScrapeSpec,
    agent: ureq::Agent,
    /// Each series' value at the previous read, by endpoint and series.
    last: HashMap<String, f64>,
    /// Endpoints read at least once.
    seen: HashSet<String>,
}

impl ScrapeSource {
    /// A source for `spec`.
    ///
    /// # Errors
    /// A selector that does not parse, or a `tls` file that cannot be read
    /// or holds nothing usable, as `(field, message)`.
    pub fn new(spec: &ScrapeSpec) -> Result<Self, (String, String)> {
        Ok(Self {
            endpoints: Pair {
                baseline: spec.stable.clone(),
                canary: spec.canary.clone(),
            },
            sel: selectors(spec)?,
            business: Vec::new(),
            thresholds: Vec::new(),
            spec: spec.clone(),
            agent: crate::tls::agent(
                spec.timeout.map_or(Duration::from_secs(2), |t| t.0),
                spec.tls.as_ref(),
                "metrics.scrape.tls",
            )?,
            last: HashMap::new(),
            seen: HashSet::new(),
        })
    }

    /// The same source, also reading `business` (two counters per version,
    /// their growth over each window) and `thresholds` (a gauge on the
    /// canary's endpoints, matching series added up).
    ///
    /// # Errors
    /// A selector that does not parse, as `(field, message)`.
    pub fn with_metrics(
        mut self,
        business: &[BusinessMetric],
        thresholds: &[ThresholdMetric],
    ) -> Result<Self, (String, String)> {
        let (b, t) = extra_selectors(&self.spec, business, thresholds)?;
        self.business = b;
        self.thresholds = t;
        Ok(self)
    }

    /// The window of the texts `fetched` (endpoint, body) per version.
    fn window(
        &mut self,
        fetched: Pair<Vec<(String, String)>>,
    ) -> Result<Pair<VersionStats>, SourceError> {
        let mut out = Pair::<VersionStats>::default();
        for (version, texts, stats) in [
            ("stable", fetched.baseline, &mut out.baseline),
            ("canary", fetched.canary, &mut out.canary),
        ] {
            let mut requests = 0.0;
            let mut errors = 0.0;
            let mut ratios = vec![(0.0, 0.0, false); self.business.len()];
            let mut gauges = vec![(0.0, false); self.thresholds.len()];
            let business = self.business.clone();
            let thresholds = self.thresholds.clone();
            let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for (url, body) in texts {
                let samples = text::parse(&body).map_err(|e| {
                    SourceError::permanent(format!(
                        "{url} ({version}): not the Prometheus text format: {e}"
                    ))
                })?;
                let first = self.seen.insert(url.clone());
                let mut found_requests = false;
                for s in &samples {
                    if self.sel.requests.matches(&s.name, &s.labels) {
                        found_requests = true;
                        requests += self.delta(&url, "r", s, first);
                    }
                    if self.sel.errors.matches(&s.name, &s.labels) {
                        errors += self.delta(&url, "e", s, first);
                    }
                    for (i, b) in business.iter().enumerate() {
                        if b.numerator.matches(&s.name, &s.labels) {
                            ratios[i].0 += self.delta(&url, &format!("n{i}"), s, first);
                        }
                        if b.denominator.matches(&s.name, &s.labels) {
                            ratios[i].1 += self.delta(&url, &format!("d{i}"), s, first);
                            ratios[i].2 = true;
                        }
                    }
                    if version == "canary" {
                        for (i, (_, sel)) in thresholds.iter().enumerate() {
                            if sel.matches(&s.name, &s.labels) && s.value.is_finite() {
                                gauges[i].0 += s.value;
                                gauges[i].1 = true;
                            }
                        }
                    }
                }
                if !found_requests {
                    return Err(SourceError::transient(format!(
                        "{url} ({version}): no series matches `{}`",
                        self.sel.requests
                    )));
                }
                if let Some(lat) = self.sel.latency.clone() {
                    let bucket = lat.renamed(format!("{}_bucket", lat.name));
                    let mut with_inf: HashMap<String, bool> = HashMap::new();
                    for s in samples
                        .iter()
                        .filter(|s| bucket.matches(&s.name, &s.labels))
                    {
                        let Some(le) = s.label("le").and_then(text::parse_value) else {
                            return Err(SourceError::permanent(format!(
                                "{url} ({version}): `{}` has a series without a numeric `le` label",
                                bucket.name
                            )));
                        };
                        let group = series_key(&s.labels, Some("le"));
                        let inf = with_inf.entry(group).or_default();
                        *inf |= le == f64::INFINITY;
                        let d = self.delta(&url, "b", s, first);
                        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += d;
                    }
                    if let Some((g, _)) = with_inf.iter().find(|(_, inf)| !**inf) {
                        return Err(SourceError::permanent(format!(
                            "{url} ({version}): histogram `{}` {{{g}}} has no `+Inf` bucket",
                            lat.name
                        )));
                    }
                }
            }
            stats.requests = requests.round().max(0.0) as u64;
            stats.errors = (errors.round().max(0.0) as u64).min(stats.requests);
            // A denominator or gauge no endpoint has is missing data, never
            // a zero; a numerator without series counts 0.
            for (b, (num, den, found)) in business.iter().zip(&ratios) {
                if !found {
                    return Err(SourceError::transient(format!(
                        "{version}: business metric {}: no series matches `{}`",
                        b.name, b.denominator
                    )));
                }
                let den = den.round().max(0.0) as u64;
                stats.business.insert(
                    b.name.clone(),
                    Ratio {
                        numerator: (num.round().max(0.0) as u64).min(den),
                        denominator: den,
                    },
                );
            }
            if version == "canary" {
                for ((name, sel), (sum, found)) in thresholds.iter().zip(&gauges) {
                    if !found {
                        return Err(SourceError::transient(format!(
                            "canary: threshold metric {name}: no series matches `{sel}`"
                        )));
                    }
                    stats.gauges.insert(name.clone(), *sum);
                }
            }
            if !buckets.is_empty() {
                let b: Vec<(f64, f64)> = buckets.into_values().collect();
                stats.latency = histogram(&b)
                    .map_err(|e| SourceError::permanent(format!("{version}: latency: {e}")))?;
            }
        }
        Ok(out)
    }

    /// How much `s` grew since the previous read of `url`.
    fn delta(&mut self, url: &str, kind: &str, s: &Sample, first: bool) -> f64 {
        let key = format!(
            "{kind}\u{1}{url}\u{1}{}\u{1}{}",
            s.name,
            series_key(&s.labels, None)
        );
        let v = if s.value.is_finite() { s.value } else { 0.0 };
        let prev = self.last.insert(key, v);
        match prev {
            Some(p) if v >= p => v - p,
            // Went down: reset, the new value is all new.
            Some(_) => v,
            // A new series on an endpoint already read: all new.
            None if !first => v,
            None => 0.0,
        }
    }
}

/// The labels as one sorted string, without `skip`.
fn series_key(labels: &[(String, String)], skip: Option<&str>) -> String {
    let mut l: Vec<&(String, String)> = labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    l.sort();
    l.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl MetricsSource for ScrapeSource {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let urls = self.endpoints.clone();
        let agent = self.agent.clone();
        let got = tokio::task::spawn_blocking(move || {
            let get = |list: &Vec<String>| -> Result<Vec<(String, String)>, SourceError> {
                list.iter()
                    .map(|u| match fetch(&agent, u, &[]) {
                        Fetched::Ok(body) => Ok((u.clone(), body)),
                        Fetched::Status(code, body) => {
                            let m = format!("GET {u}: HTTP {code}: {}", crate::clip(&body));
                            Err(if code == 404 || code == 401 || code == 403 {
                                SourceError::permanent(m)
                            } else {
                                SourceError::transient(m)
                            })
                        }
                        Fetched::Failed(e) => Err(SourceError::transient(format!("GET {u}: {e}"))),
                        Fetched::Tls(e) => Err(SourceError::permanent(format!("GET {u}: {e}"))),
                    })
                    .collect()
            };
            Ok::<_, SourceError>(Pair {
                baseline: get(&urls.baseline)?,
                canary: get(&urls.canary)?,
            })
        })
        .await
        .map_err(|e| SourceError::transient(format!("scrape task: {e}")))??;
        self.window(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScrapeSpec {
        ScrapeSpec {
            stable: vec!["http://s/metrics".into()],
            canary: vec!["http://c/metrics".into()],
            timeout: None,
            tls: None,
            preset: Some(Preset::Http),
            labels: BTreeMap::new(),
            requests: None,
            errors: None,
            latency: None,
        }
    }

    fn page(ok: u64, err: u64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{code=\"200\"}} {ok}\n\
             http_requests_total{{code=\"500\"}} {err}\n\
             # TYPE http_request_duration_seconds histogram\n\
             http_request_duration_seconds_bucket{{le=\"0.1\"}} {fast}\n\
             http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
            fast + slow
        )
    }

    fn pair(s: String, c: String) -> Pair<Vec<(String, String)>> {
        Pair {
            baseline: vec![("http://s/metrics".into(), s)],
            canary: vec![("http://c/metrics".into(), c)],
        }
    }

    #[test]
    fn differences_between_reads_with_resets_and_new_series() {
        let mut src = ScrapeSource::new(&spec()).unwrap();
        let w = src
            .window(pair(page(100, 1, 90, 11), page(10, 0, 10, 0)))
            .unwrap();
        assert_eq!(w.baseline.requests, 0, "the first read is a starting point");
        let w = src
            .window(pair(page(200, 3, 180, 23), page(20, 5, 15, 10)))
            .unwrap();
        assert_eq!((w.baseline.requests, w.baseline.errors), (102, 2));
        assert_eq!((w.canary.requests, w.canary.errors), (15, 5));
        assert_eq!(w.canary.latency.count(), 15);
        // The canary restarted: its counters start again from 0.
        let w = src
            .window(pair(page(300, 3, 280, 23), page(7, 1, 8, 0)))
            .unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (8, 1));
        assert_eq!(w.baseline.requests, 100);
    }

    #[test]
    fn business_counters_and_threshold_gauges_are_read() {
        let business: Vec<BusinessMetric> = vec![serde_json::from_value(serde_json::json!({
            "name": "conversion", "numerator": "checkouts_total", "denominator": "sessions_total",
            "direction": "higher_is_better"
        }))
        .unwrap()];
        let thresholds: Vec<ThresholdMetric> = vec![serde_json::from_value(serde_json::json!({
            "name": "memory", "query": "memory_bytes", "max": 100.0
        }))
        .unwrap()];
        let mut src = ScrapeSource::new(&spec())
            .unwrap()
            .with_metrics(&business, &thresholds)
            .unwrap();
        let text = |s: u64, c: u64, mem: f64| {
            format!("http_requests_total{{code=\"200\"}} 1\nsessions_total {s}\ncheckouts_total {c}\nmemory_bytes {mem}\n")
        };
        src.window(pair(text(100, 30, 5.0), text(10, 3, 50.0)))
            .unwrap();
        let w = src
            .window(pair(text(200, 60, 5.0), text(30, 5, 70.0)))
            .unwrap();
        let r = w.canary.business["conversion"];
        assert_eq!((r.numerator, r.denominator), (2, 20));
        assert_eq!(w.baseline.business["conversion"].denominator, 100);
        assert_eq!(w.canary.gauges["memory"], 70.0);
        assert!(w.baseline.gauges.is_empty(), "thresholds are the canary's");
        // A denominator no endpoint has is missing data.
        let e = src
            .window(pair(
                text(300, 90, 5.0),
                "http_requests_total{code=\"200\"} 2\nmemory_bytes 1\n".into(),
            ))
            .unwrap_err();
        assert!(
            !e.is_permanent() && e.to_string().contains("sessions_total"),
            "{e}"
        );
    }

    #[test]
    fn a_series_created_after_the_first_read_counts_whole() {
        let mut src = ScrapeSource::new(&spec()).unwrap();
        let only_ok = "http_requests_total{code=\"200\"} 10\n".to_string();
        src.window(pair(only_ok.clone(), only_ok)).unwrap();
        let w = src
            .window(pair(
                "http_requests_total{code=\"200\"} 20\n".into(),
                "http_requests_total{code=\"200\"} 20\nhttp_requests_total{code=\"503\"} 4\n"
                    .into(),
            ))
            .unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (14, 4));
    }

    #[test]
    fn bad_pages_are_errors_naming_the_endpoint() {
        let mut src = ScrapeSource::new(&spec()).unwrap();
        let e = src
            .window(pair("<html>".into(), page(1, 0, 1, 0)))
            .unwrap_err();
        assert!(
            e.is_permanent() && e.to_string().contains("http://s/metrics"),
            "{e}"
        );
        let e = src
            .window(pair("other_total 3\n".into(), page(1, 0, 1, 0)))
            .unwrap_err();
        assert!(
            !e.is_permanent() && e.to_string().contains("no series matches"),
            "{e}"
        );
        let no_inf = "http_requests_total{code=\"200\"} 1\nhttp_request_duration_seconds_bucket{le=\"0.1\"} 1\n";
        let e = src
            .window(pair(page(1, 0, 1, 0), no_inf.into()))
            .unwrap_err();
        assert!(e.is_permanent() && e.to_string().contains("+Inf"), "{e}");
    }

    #[test]
    fn labels_narrow_every_selector() {
        let mut s = spec();
        s.labels.insert("handler".into(), "/buy".into());
        let mut src = ScrapeSource::new(&s).unwrap();
        let p = |n: u64| {
            format!("http_requests_total{{handler=\"/buy\",code=\"200\"}} {n}\nhttp_requests_total{{handler=\"/other\",code=\"200\"}} {}\n", n * 10)
        };
        src.window(pair(p(1), p(1))).unwrap();
        let w = src.window(pair(p(5), p(3))).unwrap();
        assert_eq!((w.baseline.requests, w.canary.requests), (4, 2));
    }
}
