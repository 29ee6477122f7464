//! Scenarios: how the stable and the canary version behave.
//!
//! A scenario gives the traffic rate, the baseline's error rate and latency
//! distribution (log-normal), and the canary's regression: an error-rate
//! multiplier, a latency multiplier, gradual degradation over time,
//! intermittent error bursts, or a fault that appears only above a weight.
//! Built-in scenarios have names (`healthy`, `errors-2x`, ...); others are
//! YAML or JSON files of the same shape.

use std::time::Duration;

use canary_core::spec::parse_document;
use canary_core::{HumanDuration, SpecError, SpecErrors};
use serde::{Deserialize, Serialize};

/// How the stable version behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineModel {
    /// Fraction of requests that fail.
    pub error_rate: f64,
    /// Median latency, ms.
    pub latency_median_ms: f64,
    /// Shape (σ of ln latency) of the log-normal latency.
    pub latency_sigma: f64,
}

impl Default for BaselineModel {
    fn default() -> Self {
        Self {
            error_rate: 0.01,
            latency_median_ms: 100.0,
            latency_sigma: 0.5,
        }
    }
}

/// Intermittent error bursts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// A burst starts this often (the first one after one period).
    pub every: HumanDuration,
    /// And lasts this long.
    pub length: HumanDuration,
    /// The canary's error rate during a burst.
    pub error_rate: f64,
}

/// A fault that appears only when the canary carries enough traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFault {
    /// The fault is active at weights strictly above this percentage.
    pub above_weight: f64,
    /// Error-rate multiplier while active.
    #[serde(default = "one")]
    pub error_multiplier: f64,
    /// Latency multiplier while active.
    #[serde(default = "one")]
    pub latency_multiplier: f64,
}

fn one() -> f64 {
    1.0
}

/// How the canary differs from the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryModel {
    /// The canary's error rate is the baseline's times this.
    pub error_multiplier: f64,
    /// The canary's latencies are the baseline's times this.
    pub latency_multiplier: f64,
    /// Gradual degradation: the error multiplier grows by this much per
    /// minute since the rollout started (a memory leak).
    pub error_growth_per_minute: f64,
    /// Intermittent error bursts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<Burst>,
    /// A fault that appears only above a weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_fault: Option<LoadFault>,
}

impl Default for CanaryModel {
    fn default() -> Self {
        Self {
            error_multiplier: 1.0,
            latency_multiplier: 1.0,
            error_growth_per_minute: 0.0,
            burst: None,
            load_fault: None,
        }
    }
}

/// A scenario: traffic, baseline and canary behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Requests per second to the service, both versions together.
    #[serde(default = "default_rate")]
    pub request_rate: f64,
    /// The stable version.
    #[serde(default)]
    pub baseline: BaselineModel,
    /// The canary's regression (none by default).
    #[serde(default)]
    pub canary: CanaryModel,
    /// Report latencies as a Prometheus histogram with these bucket upper
    /// bounds (ms, increasing; `+Inf` implied) would: each request at its
    /// bucket's upper bound, as canary reads Prometheus. Empty (the
    /// default): per-request latencies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets_ms: Vec<f64>,
    /// Common-mode incidents: for a while both versions' error rate and/or
    /// latency are multiplied (a dependency failing for everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<Incident>,
    /// Changes of `request_rate` over time (traffic ramping during the
    /// rollout): from `at` on, `rate` requests per second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_changes: Vec<RateChange>,
    /// Per-tick noise shared by both versions (GC pauses, caches, noisy
    /// neighbours): each tick both versions' error rate and latency are
    /// multiplied by the same mean-one log-normal draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_noise: Option<TickNoise>,
    /// Per-tick noise of each version on its own (a canary on few pods):
    /// independent draws for each version and tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_noise: Option<TickNoise>,
    /// A heavy latency tail: this share of requests (both versions) is
    /// drawn from a Pareto distribution above the log-normal body's 99th
    /// percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_tail: Option<LatencyTail>,
}

/// A common-mode incident: both versions degrade together for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// When it begins, since the rollout's start.
    pub at: HumanDuration,
    /// How long it lasts.
    pub length: HumanDuration,
    /// Both versions' error rates are multiplied by this.
    #[serde(default = "one")]
    pub error_multiplier: f64,
    /// Both versions' latencies are multiplied by this.
    #[serde(default = "one")]
    pub latency_multiplier: f64,
}

/// From `at` on, the service gets `rate` requests per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateChange {
    /// When, since the rollout's start.
    pub at: HumanDuration,
    /// Requests per second from then on, both versions.
    pub rate: f64,
}

/// Multiplicative per-tick noise: σ of the log of mean-one log-normal
/// multipliers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TickNoise {
    /// On the error rate.
    pub error_sigma: f64,
    /// On the latency.
    pub latency_sigma: f64,
}

/// A Pareto tail on the latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTail {
    /// The share of requests in the tail, in [0, 1).
    pub share: f64,
    /// The Pareto shape (smaller: heavier; below 2 the variance is
    /// infinite).
    pub shape: f64,
}

fn default_rate() -> f64 {
    50.0
}

/// The names of the built-in scenarios.
pub const BUILT_IN: [&str; 8] = [
    "healthy",
    "errors-2x",
    "errors-5x",
    "latency-20pct",
    "latency-50pct",
    "memory-leak",
    "burst",
    "load-dependent",
];

/// Whether a healthy scenario (canary identical to baseline).
impl Scenario {
    /// True when the canary behaves exactly like the baseline, so any
    /// rollback is a false alarm.
    pub fn is_healthy(&self) -> bool {
        self.canary == CanaryModel::default()
    }

    /// A built-in scenario by name.
    pub fn built_in(name: &str) -> Option<Scenario> {
        let canary = match name {
            "healthy" => CanaryModel::default(),
            "errors-2x" => CanaryModel {
                error_multiplier: 2.0,
                ..Default::default()
            },
            "errors-5x" => CanaryModel {
                error_multiplier: 5.0,
                ..Default::default()
            },
            "latency-20pct" => CanaryModel {
                latency_multiplier: 1.2,
                ..Default::default()
            },
            "latency-50pct" => CanaryModel {
                latency_multiplier: 1.5,
                ..Default::default()
            },
            "memory-leak" => CanaryModel {
                error_growth_per_minute: 0.25,
                ..Default::default()
            },
            "burst" => CanaryModel {
                burst: Some(Burst {
                    every: HumanDuration(Duration::from_secs(240)),
                    length: HumanDuration(Duration::from_secs(30)),
                    error_rate: 0.2,
                }),
                ..Default::default()
            },
            "load-dependent" => CanaryModel {
                load_fault: Some(LoadFault {
                    above_weight: 20.0,
                    error_multiplier: 3.0,
                    latency_multiplier: 1.3,
                }),
                ..Default::default()
            },
            _ => return None,
        };
        Some(Scenario {
            name: name.to_string(),
            request_rate: default_rate(),
            baseline: BaselineModel::default(),
            canary,
            latency_buckets_ms: Vec::new(),
            incidents: Vec::new(),
            rate_changes: Vec::new(),
            tick_noise: None,
            version_noise: None,
            latency_tail: None,
        })
    }

    /// Parses a scenario document (YAML or JSON) and checks its ranges.
    ///
    /// # Errors
    /// Every problem found, each with its field path and line.
    pub fn from_text(text: &str) -> Result<Scenario, SpecErrors> {
        let doc = parse_document(text)?;
        let scenario: Scenario = serde_path_to_error::deserialize(&doc.value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            SpecErrors(vec![SpecError {
                line: doc.line_of(&path),
                path,
                value: String::new(),
                rule: e.inner().to_string(),
            }])
        })?;
        let mut errors = Vec::new();
        if scenario.name.chars().any(char::is_control) {
            errors.push(SpecError {
                path: "name".into(),
                line: doc.line_of("name"),
                value: scenario.name.escape_default().to_string(),
                rule: "must not contain control characters (they would be echoed to terminals)"
                    .into(),
            });
        }
        let mut check = |path: &str, ok: bool, value: f64, rule: &str| {
            if !ok {
                errors.push(SpecError {
                    path: path.to_string(),
                    line: doc.line_of(path),
                    value: format!("{value}"),
                    rule: rule.to_string(),
                });
            }
        };
        let s = &scenario;
        let rate = |v: f64| (0.0..=1.0).contains(&v);
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        check(
            "request_rate",
            positive(s.request_rate),
            s.request_rate,
            "must be > 0 requests per second",
        );
        check(
            "baseline.error_rate",
            rate(s.baseline.error_rate),
            s.baseline.error_rate,
            "an error rate is in [0, 1]",
        );
        check(
            "baseline.latency_median_ms",
            positive(s.baseline.latency_median_ms),
            s.baseline.latency_median_ms,
            "must be > 0",
        );
        for (i, &b) in s.latency_buckets_ms.iter().enumerate() {
            let after = i.checked_sub(1).map(|j| s.latency_buckets_ms[j]);
            check(
                &format!("latency_buckets_ms[{i}]"),
                positive(b) && after.is_none_or(|a| b > a),
                b,
                "bucket bounds are > 0, finite and strictly increasing (+Inf is implied)",
            );
        }
        check(
            "baseline.latency_sigma",
            non_negative(s.baseline.latency_sigma),
            s.baseline.latency_sigma,
            "must be ≥ 0",
        );
        check(
            "canary.error_multiplier",
            non_negative(s.canary.error_multiplier),
            s.canary.error_multiplier,
            "must be ≥ 0",
        );
        check(
            "canary.latency_multiplier",
            positive(s.canary.latency_multiplier),
            s.canary.latency_multiplier,
            "must be > 0",
        );
        check(
            "canary.error_growth_per_minute",
            non_negative(s.canary.error_growth_per_minute),
            s.canary.error_growth_per_minute,
            "must be ≥ 0",
        );
        if let Some(b) = &s.canary.burst {
            check(
                "canary.burst.error_rate",
                rate(b.error_rate),
                b.error_rate,
                "an error rate is in [0, 1]",
            );
            check(
                "canary.burst.every",
                !b.every.0.is_zero(),
                b.every.0.as_secs_f64(),
                "must be a positive duration",
            );
        }
        for (i, inc) in s.incidents.iter().enumerate() {
            check(
                &format!("incidents[{i}].length"),
                !inc.length.0.is_zero(),
                inc.length.0.as_secs_f64(),
                "must be a positive duration",
            );
            check(
                &format!("incidents[{i}].error_multiplier"),
                non_negative(inc.error_multiplier),
                inc.error_multiplier,
                "must be ≥ 0",
            );
            check(
                &format!("incidents[{i}].latency_multiplier"),
                positive(inc.latency_multiplier),
                inc.latency_multiplier,
                "must be > 0",
            );
        }
        for (i, r) in s.rate_changes.iter().enumerate() {
            let after = i.checked_sub(1).map(|j| s.rate_changes[j].at.0);
            check(
                &format!("rate_changes[{i}].rate"),
                positive(r.rate),
                r.rate,
                "must be > 0 requests per second",
            );
            check(
                &format!("rate_changes[{i}].at"),
                after.is_none_or(|a| r.at.0 > a),
                r.at.0.as_secs_f64(),
                "changes are in time order, each later than the one before",
            );
        }
        for (field, noise) in [
            ("tick_noise", &s.tick_noise),
            ("version_noise", &s.version_noise),
        ] {
            if let Some(n) = noise {
                for (k, v) in [
                    ("error_sigma", n.error_sigma),
                    ("latency_sigma", n.latency_sigma),
                ] {
                    check(
                        &format!("{field}.{k}"),
                        non_negative(v) && v <= 3.0,
                        v,
                        "σ of the log of the multiplier, in [0, 3]",
                    );
                }
            }
        }
        if let Some(t) = &s.latency_tail {
            check(
                "latency_tail.share",
                (0.0..1.0).contains(&t.share),
                t.share,
                "a share of requests in [0, 1)",
            );
            check(
                "latency_tail.shape",
                t.shape > 0.5 && t.shape.is_finite(),
                t.shape,
                "the Pareto shape must be > 0.5",
            );
        }
        if let Some(f) = &s.canary.load_fault {
            check(
                "canary.load_fault.above_weight",
                (0.0..100.0).contains(&f.above_weight),
                f.above_weight,
                "a weight in [0, 100)",
            );
            check(
                "canary.load_fault.error_multiplier",
                non_negative(f.error_multiplier),
                f.error_multiplier,
                "must be ≥ 0",
            );
            check(
                "canary.load_fault.latency_multiplier",
                positive(f.latency_multiplier),
                f.latency_multiplier,
                "must be > 0",
            );
        }
        if errors.is_empty() {
            Ok(scenario)
        } else {
            Err(SpecErrors(errors))
        }
    }

    /// The request rate at `elapsed` since the rollout began.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        self.rate_changes
            .iter()
            .rev()
            .find(|c| elapsed >= c.at.0)
            .map_or(self.request_rate, |c| c.rate)
    }

    /// The highest request rate the scenario reaches.
    pub fn max_rate(&self) -> f64 {
        self.rate_changes
            .iter()
            .map(|c| c.rate)
            .fold(self.request_rate, f64::max)
    }

    /// The common-mode (error, latency) multipliers at `elapsed`.
    pub fn incident_at(&self, elapsed: Duration) -> (f64, f64) {
        self.incidents
            .iter()
            .filter(|i| elapsed >= i.at.0 && elapsed < i.at.0 + i.length.0)
            .fold((1.0, 1.0), |(e, l), i| {
                (e * i.error_multiplier, l * i.latency_multiplier)
            })
    }

    /// The canary's error rate and latency multiplier at `elapsed` since the
    /// rollout began, at `weight` percent.
    pub fn canary_at(&self, elapsed: Duration, weight: f64) -> (f64, f64) {
        let c = &self.canary;
        let minutes = elapsed.as_secs_f64() / 60.0;
        let mut err_mult = c.error_multiplier + c.error_growth_per_minute * minutes;
        let mut lat_mult = c.latency_multiplier;
        if let Some(f) = &c.load_fault {
            if weight > f.above_weight {
                err_mult *= f.error_multiplier;
                lat_mult *= f.latency_multiplier;
            }
        }
        let mut p = (self.baseline.error_rate * err_mult).clamp(0.0, 1.0);
        if let Some(b) = &c.burst {
            let every = b.every.0.as_secs_f64();
            if every > 0.0 {
                let t = elapsed.as_secs_f64();
                let phase = t % every;
                if t >= every && phase < b.length.0.as_secs_f64() {
                    p = p.max(b.error_rate);
                }
            }
        }
        (p, lat_mult)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_scenario_name_are_refused() {
        let e = Scenario::from_text("name: \"a\\x1bb\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("name (line 1): a\\u{1b}b"), "{e}");
    }

    #[test]
    fn every_built_in_exists_and_only_healthy_is_healthy() {
        for name in BUILT_IN {
            let s = Scenario::built_in(name).unwrap();
            assert_eq!(s.is_healthy(), name == "healthy", "{name}");
        }
        assert!(Scenario::built_in("nope").is_none());
    }

    #[test]
    fn file_form_round_trips() {
        let s = Scenario::from_text(
            "name: mine\nrequest_rate: 200\ncanary:\n  error_multiplier: 3\n  burst: {every: 5m, length: 30s, error_rate: 0.5}\n",
        )
        .unwrap();
        assert_eq!(s.request_rate, 200.0);
        assert_eq!(s.baseline, BaselineModel::default());
        assert_eq!(
            s.canary.burst.as_ref().unwrap().every.0,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn file_errors_name_the_field() {
        let e = Scenario::from_text("name: x\nbaseline:\n  error_rate: 2\n").unwrap_err();
        assert_eq!(e.0[0].path, "baseline.error_rate");
        assert_eq!(e.0[0].line, Some(3));
        let e = Scenario::from_text("name: x\ncanary:\n  eror_multiplier: 2\n").unwrap_err();
        assert_eq!(e.0[0].path, "canary.eror_multiplier");
        assert_eq!(e.0[0].line, Some(3));
        assert!(e.0[0].rule.contains("unknown field"), "{}", e.0[0].rule);
    }

    #[test]
    fn realism_fields_are_checked_with_their_paths() {
        for (text, path) in [
            ("incidents: [{at: 1m, length: 0s}]", "incidents[0].length"),
            (
                "incidents: [{at: 1m, length: 1m, latency_multiplier: 0}]",
                "incidents[0].latency_multiplier",
            ),
            (
                "rate_changes: [{at: 2m, rate: 10}, {at: 1m, rate: 20}]",
                "rate_changes[1].at",
            ),
            ("rate_changes: [{at: 2m, rate: 0}]", "rate_changes[0].rate"),
            ("tick_noise: {error_sigma: -1}", "tick_noise.error_sigma"),
            (
                "version_noise: {latency_sigma: 9}",
                "version_noise.latency_sigma",
            ),
            ("latency_tail: {share: 1, shape: 2}", "latency_tail.share"),
            (
                "latency_tail: {share: 0.01, shape: 0.1}",
                "latency_tail.shape",
            ),
        ] {
            let e = Scenario::from_text(&format!("name: x\n{text}\n")).unwrap_err();
            assert_eq!(e.0[0].path, path, "{text}: {e}");
            assert_eq!(e.0[0].line, Some(2), "{text}: {e}");
        }
    }

    #[test]
    fn latency_buckets_are_read_and_their_bounds_checked() {
        let s = Scenario::from_text("name: b\nlatency_buckets_ms: [5, 10, 25]\n").unwrap();
        assert_eq!(s.latency_buckets_ms, vec![5.0, 10.0, 25.0]);
        assert!(Scenario::built_in("healthy")
            .unwrap()
            .latency_buckets_ms
            .is_empty());
        let e = Scenario::from_text("name: b\nlatency_buckets_ms: [5, 10, 10, -1]\n").unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["latency_buckets_ms[2]", "latency_buckets_ms[3]"]);
        assert!(
            e.0[0].rule.contains("strictly increasing"),
            "{}",
            e.0[0].rule
        );
    }

    #[test]
    fn bucketed_latencies_land_on_the_upper_bounds() {
        let mut s = Scenario::built_in("healthy").unwrap();
        s.latency_buckets_ms = vec![50.0, 250.0, 1000.0];
        let plain = Scenario::built_in("healthy").unwrap();
        use rand::SeedableRng;
        let draw = |sc: &Scenario| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            crate::run::draw_window(&mut rng, sc, 2000.0, 50.0, Duration::from_secs(60))
        };
        let (w, p) = (draw(&s), draw(&plain));
        // The same requests, only their latencies moved onto the bounds.
        assert_eq!(w.canary.requests, p.canary.requests);
        assert_eq!(w.canary.latency.count(), p.canary.latency.count());
        for (lo, hi, _) in w.canary.latency.bucket_ranges() {
            assert!(
                [50.0, 250.0, 1000.0].iter().any(|b| lo <= *b && *b <= hi),
                "a bucket [{lo}, {hi}] holds none of the bounds"
            );
        }
    }

    #[test]
    fn regressions_apply_when_they_should() {
        let leak = Scenario::built_in("memory-leak").unwrap();
        assert!((leak.canary_at(Duration::ZERO, 1.0).0 - 0.01).abs() < 1e-12);
        assert!((leak.canary_at(Duration::from_secs(240), 1.0).0 - 0.02).abs() < 1e-12);
        let load = Scenario::built_in("load-dependent").unwrap();
        assert_eq!(load.canary_at(Duration::ZERO, 5.0), (0.01, 1.0));
        let (p, l) = load.canary_at(Duration::ZERO, 25.0);
        assert!((p - 0.03).abs() < 1e-12 && (l - 1.3).abs() < 1e-12);
        let burst = Scenario::built_in("burst").unwrap();
        assert_eq!(burst.canary_at(Duration::from_secs(100), 1.0).0, 0.01);
        assert_eq!(burst.canary_at(Duration::from_secs(250), 1.0).0, 0.2);
        assert_eq!(burst.canary_at(Duration::from_secs(280), 1.0).0, 0.01);
    }
}
