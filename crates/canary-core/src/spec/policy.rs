//! The validated rollout the engine runs ([`Policy`], its [`Stage`]s and
//! [`Analysis`]) and the validation that builds it from a [`RolloutSpec`].
//!
//! Validation checks every rule and reports every violation it finds, each
//! naming the field path (`stages[1].weight`), the value, the rule and, when
//! the spec came from a document, the line.

use std::time::Duration;

use serde::Serialize;

use super::{JudgeKind, JudgeOptions, OnInconclusive, RolloutSpec, TrafficSpec};
use crate::document::{SourceDoc, SpecError, SpecErrors};

/// A validated stage, as the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Canary weight, percent, in (0, 100].
    pub weight: f64,
    /// Bake time.
    pub bake: Duration,
    /// Deadline for a pass, measured from the stage start; ≥ `bake`.
    pub timeout: Duration,
    /// Hold for a manual promote after passing.
    pub pause_after: bool,
    /// Threshold judge's error-rate delta limit.
    pub max_error_delta: f64,
    /// Threshold judge's latency delta limit, ms.
    pub max_latency_delta_ms: f64,
    /// Canary requests needed before the stage may pass.
    pub min_requests: u64,
}

/// Validated analysis settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Which judge decides.
    pub judge: JudgeKind,
    /// How often the judge looks.
    pub interval: Duration,
    /// False-alarm level.
    pub alpha: f64,
    /// What happens at a stage's timeout without a pass.
    pub on_inconclusive: OnInconclusive,
    /// Judge-specific options.
    pub judges: JudgeOptions,
}

/// A validated rollout: what the state machine and judges run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Rollout name.
    pub name: String,
    /// Stages, weights strictly increasing.
    pub stages: Vec<Stage>,
    /// Analysis settings.
    pub analysis: Analysis,
    /// Live traffic settings, if given.
    pub traffic: Option<TrafficSpec>,
}

/// The seed's per-stage error-delta limit, tightening as the weight grows:
/// 0.02 below 5 %, 0.015 below 25 %, 0.01 below 100 %, 0.005 at 100 %.
pub fn default_error_delta(weight: f64) -> f64 {
    if weight < 5.0 {
        0.02
    } else if weight < 25.0 {
        0.015
    } else if weight < 100.0 {
        0.01
    } else {
        0.005
    }
}

impl RolloutSpec {
    /// Checks every rule and builds the [`Policy`]; `doc` adds line numbers.
    ///
    /// # Errors
    /// All the rule violations found, not only the first.
    pub fn validate(&self, doc: Option<&SourceDoc>) -> Result<Policy, SpecErrors> {
        let mut errors = Vec::new();
        let mut err = |path: String, value: String, rule: String| {
            let line = doc.and_then(|d| d.line_of(&path));
            errors.push(SpecError {
                path,
                line,
                value,
                rule,
            });
        };
        if self.name.trim().is_empty() {
            err("name".into(), "\"\"".into(), "must not be empty".into());
        }
        if self.stages.is_empty() {
            err(
                "stages".into(),
                "[]".into(),
                "at least one stage is needed".into(),
            );
        }
        let a = &self.analysis;
        let mut prev: Option<f64> = None;
        let mut stages = Vec::with_capacity(self.stages.len());
        for (i, s) in self.stages.iter().enumerate() {
            let p = |f: &str| format!("stages[{i}].{f}");
            if !(s.weight > 0.0 && s.weight <= 100.0) {
                err(
                    p("weight"),
                    fmt_f64(s.weight),
                    "a weight is a percentage in (0, 100]".into(),
                );
            } else if let Some(w) = prev {
                if s.weight <= w {
                    err(
                        p("weight"),
                        fmt_f64(s.weight),
                        format!(
                            "weights must increase strictly from stage to stage: stages[{}].weight is {}",
                            i - 1,
                            fmt_f64(w)
                        ),
                    );
                }
            }
            if s.weight.is_finite() {
                prev = Some(prev.map_or(s.weight, |w: f64| w.max(s.weight)));
            }
            if s.duration.0.is_zero() {
                err(
                    p("duration"),
                    s.duration.to_string(),
                    "a stage needs a positive bake time".into(),
                );
            }
            check_non_negative(&mut err, p("max_error_delta"), s.max_error_delta);
            if let Some(d) = s.max_error_delta {
                if d > 1.0 {
                    err(
                        p("max_error_delta"),
                        fmt_f64(d),
                        "an error-rate delta is a fraction in [0, 1]".into(),
                    );
                }
            }
            check_non_negative(&mut err, p("max_latency_delta_ms"), s.max_latency_delta_ms);
            let timeout = match s.timeout {
                Some(t) if t.0 < s.duration.0 => {
                    err(
                        p("timeout"),
                        t.to_string(),
                        format!(
                            "must not be shorter than the stage's duration {}",
                            s.duration
                        ),
                    );
                    t.0
                }
                Some(t) => t.0,
                None => s.duration.0.mul_f64(a.timeout_factor.clamp(1.0, 1e6)),
            };
            stages.push(Stage {
                weight: s.weight,
                bake: s.duration.0,
                timeout,
                pause_after: s.pause,
                max_error_delta: s
                    .max_error_delta
                    .unwrap_or_else(|| default_error_delta(s.weight)),
                max_latency_delta_ms: s.max_latency_delta_ms.unwrap_or(a.max_latency_delta_ms),
                min_requests: s.min_requests.unwrap_or(a.min_requests),
            });
        }
        if a.interval.0.is_zero() {
            err(
                "analysis.interval".into(),
                a.interval.to_string(),
                "the analysis interval must be positive".into(),
            );
        }
        if !(a.alpha > 0.0 && a.alpha < 0.5) {
            err(
                "analysis.alpha".into(),
                fmt_f64(a.alpha),
                "alpha must be in (0, 0.5)".into(),
            );
        }
        check_non_negative(
            &mut err,
            "analysis.max_latency_delta_ms".into(),
            Some(a.max_latency_delta_ms),
        );
        if !(a.timeout_factor >= 1.0 && a.timeout_factor.is_finite()) {
            err(
                "analysis.timeout_factor".into(),
                fmt_f64(a.timeout_factor),
                "the timeout factor must be a finite number ≥ 1".into(),
            );
        }
        let j = &a.judges;
        check_non_negative(
            &mut err,
            "analysis.judges.deviation.max_error_deviation_pct".into(),
            Some(j.deviation.max_error_deviation_pct),
        );
        check_non_negative(
            &mut err,
            "analysis.judges.deviation.max_latency_deviation_pct".into(),
            Some(j.deviation.max_latency_deviation_pct),
        );
        let k = &j.kayenta;
        if !(k.confidence > 0.0 && k.confidence < 1.0) {
            err(
                "analysis.judges.kayenta.confidence".into(),
                fmt_f64(k.confidence),
                "a confidence is in (0, 1)".into(),
            );
        }
        check_non_negative(
            &mut err,
            "analysis.judges.kayenta.tolerance".into(),
            Some(k.tolerance),
        );
        if !(0.0..=100.0).contains(&k.marginal_score)
            || !(0.0..=100.0).contains(&k.pass_score)
            || k.marginal_score > k.pass_score
        {
            err(
                "analysis.judges.kayenta.pass_score".into(),
                format!(
                    "{} (marginal {})",
                    fmt_f64(k.pass_score),
                    fmt_f64(k.marginal_score)
                ),
                "scores are in [0, 100] with marginal_score ≤ pass_score".into(),
            );
        }
        if let Some(f) = k.outlier_factor {
            if !(f > 0.0 && f.is_finite()) {
                err(
                    "analysis.judges.kayenta.outlier_factor".into(),
                    fmt_f64(f),
                    "the IQR factor must be positive and finite".into(),
                );
            }
        }
        for (f, v) in [
            ("tolerated_error_ratio", j.sequential.tolerated_error_ratio),
            (
                "tolerated_latency_ratio",
                j.sequential.tolerated_latency_ratio,
            ),
        ] {
            if !(v > 1.0 && v.is_finite()) {
                err(
                    format!("analysis.judges.sequential.{f}"),
                    fmt_f64(v),
                    "a tolerated ratio must be a finite number > 1".into(),
                );
            }
        }
        if !(j.sequential.k > 0.0 && j.sequential.k.is_finite()) {
            err(
                "analysis.judges.sequential.k".into(),
                fmt_f64(j.sequential.k),
                "the mixture concentration must be positive and finite".into(),
            );
        }
        if let Some(t) = &self.traffic {
            if t.listen.parse::<std::net::SocketAddr>().is_err() {
                err(
                    "traffic.listen".into(),
                    t.listen.clone(),
                    "must be an address with a port, e.g. 127.0.0.1:8080".into(),
                );
            }
            for (f, url) in [("traffic.stable", &t.stable), ("traffic.canary", &t.canary)] {
                if !url.starts_with("http://") {
                    err(
                        f.into(),
                        url.clone(),
                        "must be an http:// URL, e.g. http://127.0.0.1:9001".into(),
                    );
                }
            }
        }
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        Ok(Policy {
            name: self.name.clone(),
            stages,
            analysis: Analysis {
                judge: a.judge,
                interval: a.interval.0,
                alpha: a.alpha,
                on_inconclusive: a.on_inconclusive,
                judges: a.judges.clone(),
            },
            traffic: self.traffic.clone(),
        })
    }
}

impl Policy {
    /// Parses, deserializes and validates a spec document.
    ///
    /// # Errors
    /// Every problem found, each naming its path, value, rule and line.
    pub fn from_text(text: &str) -> Result<Policy, SpecErrors> {
        let (spec, doc) = RolloutSpec::from_text(text)?;
        spec.validate(Some(&doc))
    }

    /// The default strategy, validated.
    pub fn default_strategy() -> Policy {
        RolloutSpec::default_strategy()
            .validate(None)
            .unwrap_or_else(|e| unreachable!("the built-in strategy is valid: {e}"))
    }
}

fn check_non_negative(
    err: &mut impl FnMut(String, String, String),
    path: String,
    value: Option<f64>,
) {
    if let Some(v) = value {
        if !(v >= 0.0 && v.is_finite()) {
            err(path, fmt_f64(v), "must be a finite number ≥ 0".into());
        }
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}
