//! The rollout spec users write (`*Spec`, serde, unknown fields rejected) and
//! its validation into the [`Policy`] the engine runs.
//!
//! Validation reports every problem it finds, each naming the field path
//! (`stages[1].weight`), the value, the rule and, for files, the line.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::document::{deserialize_all, SourceDoc};
pub use crate::document::{parse_document, SpecError, SpecErrors};
use crate::duration::HumanDuration;

/// A rollout as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The service or rollout name.
    pub name: String,
    /// The stages, in order; weights strictly increasing.
    pub stages: Vec<StageSpec>,
    /// How canary and baseline are compared.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Where live traffic goes (used by `canary run`; ignored by the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,
}

/// One stage as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Percentage of traffic sent to the canary, in (0, 100].
    pub weight: f64,
    /// Bake time at this weight before the stage may pass.
    pub duration: HumanDuration,
    /// Hold for a manual promote once the stage has passed.
    #[serde(default)]
    pub pause: bool,
    /// Threshold judge: largest tolerated canary − baseline error rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_delta: Option<f64>,
    /// Threshold judge: largest tolerated canary − baseline latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_delta_ms: Option<f64>,
    /// Canary requests needed before the stage may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// How long the stage may wait for a pass before `on_inconclusive` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// The judges, by the names users select them with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    /// Absolute deltas per stage (the seed's judge).
    Threshold,
    /// Relative deviation per metric.
    Deviation,
    /// One-sided pooled two-proportion z-test (valid for one look only).
    Ztest,
    /// Mann-Whitney classifier with a weighted score (Spinnaker's ACA).
    Kayenta,
    /// Anytime-valid e-process tests (the default).
    #[default]
    Sequential,
}

impl JudgeKind {
    /// Every judge, in documentation order.
    pub const ALL: [JudgeKind; 5] = [
        JudgeKind::Threshold,
        JudgeKind::Deviation,
        JudgeKind::Ztest,
        JudgeKind::Kayenta,
        JudgeKind::Sequential,
    ];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            JudgeKind::Threshold => "threshold",
            JudgeKind::Deviation => "deviation",
            JudgeKind::Ztest => "ztest",
            JudgeKind::Kayenta => "kayenta",
            JudgeKind::Sequential => "sequential",
        }
    }
}

impl fmt::Display for JudgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for JudgeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JudgeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = JudgeKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown judge `{s}`; choose one of {}", names.join(", "))
            })
    }
}

/// What to do when a stage reaches its timeout without a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnInconclusive {
    /// Pause the rollout at its current weight and wait for a person.
    #[default]
    Pause,
    /// Roll back: never promote without evidence.
    Rollback,
}

/// Analysis settings as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    /// Which judge decides.
    pub judge: JudgeKind,
    /// How often the judge looks.
    pub interval: HumanDuration,
    /// False-alarm level of the statistical judges, in (0, 0.5).
    pub alpha: f64,
    /// Default canary requests needed before a stage may pass.
    pub min_requests: u64,
    /// Default latency limit of the threshold judge, ms.
    pub max_latency_delta_ms: f64,
    /// Stage timeout as a multiple of its duration, when a stage sets none.
    pub timeout_factor: f64,
    /// What happens at a stage's timeout without a pass.
    pub on_inconclusive: OnInconclusive,
    /// Options of the judges that have them.
    pub judges: JudgeOptions,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            judge: JudgeKind::default(),
            interval: HumanDuration(Duration::from_secs(10)),
            alpha: 0.05,
            min_requests: 100,
            max_latency_delta_ms: 50.0,
            timeout_factor: 3.0,
            on_inconclusive: OnInconclusive::default(),
            judges: JudgeOptions::default(),
        }
    }
}

/// Judge-specific options (each with defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeOptions {
    /// Options of the `deviation` judge.
    pub deviation: DeviationOptions,
    /// Options of the `kayenta` judge.
    pub kayenta: KayentaOptions,
    /// Options of the `sequential` judge.
    pub sequential: SequentialOptions,
}

/// Options of the `deviation` judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviationOptions {
    /// Largest tolerated relative increase of the error rate, percent.
    pub max_error_deviation_pct: f64,
    /// Largest tolerated relative increase of the latency, percent.
    pub max_latency_deviation_pct: f64,
}

impl Default for DeviationOptions {
    fn default() -> Self {
        Self {
            max_error_deviation_pct: 50.0,
            max_latency_deviation_pct: 15.0,
        }
    }
}

/// Options of the `kayenta` judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KayentaOptions {
    /// Confidence of the Mann-Whitney interval.
    pub confidence: f64,
    /// Effect size below which a shift is not classified High/Low, as a
    /// fraction of the estimate.
    pub tolerance: f64,
    /// Summary score at or above which the canary passes.
    pub pass_score: f64,
    /// Summary score at or above which the canary is marginal.
    pub marginal_score: f64,
    /// What to do with NaN values in a series.
    pub nan_strategy: NanStrategy,
    /// Drop values outside [Q1 − f·IQR, Q3 + f·IQR] with this factor f
    /// (Kayenta uses 3); absent: keep every value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_factor: Option<f64>,
}

impl Default for KayentaOptions {
    fn default() -> Self {
        Self {
            confidence: 0.98,
            tolerance: 0.25,
            pass_score: 75.0,
            marginal_score: 50.0,
            nan_strategy: NanStrategy::default(),
            outlier_factor: None,
        }
    }
}

/// What the `kayenta` judge does with NaN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NanStrategy {
    /// Drop them.
    #[default]
    Remove,
    /// Replace them by 0.
    Replace,
}

/// How several metrics' evidence is combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Split alpha evenly between metrics.
    #[default]
    Bonferroni,
    /// Average the metrics' e-values.
    Average,
}

/// Options of the `sequential` judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequentialOptions {
    /// Concentration of the Beta mixture of the Poisson count test.
    pub k: f64,
    /// Test only for "canary worse" (one-sided).
    pub one_sided: bool,
    /// How error and latency evidence are combined.
    pub combine: Combine,
    /// Require evidence of safety to pass a stage, not only absence of harm.
    pub evidence_mode: bool,
    /// Evidence mode: the largest tolerated canary/baseline error-rate
    /// ratio; a stage shows safety when the ratio's confidence sequence
    /// lies below it.
    pub tolerated_error_ratio: f64,
    /// Evidence mode: the largest tolerated canary/baseline latency ratio
    /// (of geometric means).
    pub tolerated_latency_ratio: f64,
}

impl Default for SequentialOptions {
    fn default() -> Self {
        Self {
            k: 100.0,
            one_sided: true,
            combine: Combine::default(),
            evidence_mode: false,
            tolerated_error_ratio: 1.5,
            tolerated_latency_ratio: 1.1,
        }
    }
}

/// Where live traffic is sent (the built-in proxy's upstreams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Address the proxy listens on, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// URL of the stable version.
    pub stable: String,
    /// URL of the canary version.
    pub canary: String,
}

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
    /// The default strategy: 1 → 5 → 25 → 50 → 100 %, the seed's stages,
    /// 5 minutes each but 10 at 5 % and 3 at 100 % (docs/tuning.md).
    pub fn default_strategy() -> Self {
        let stage = |weight: f64, minutes: u64| StageSpec {
            weight,
            duration: HumanDuration(Duration::from_secs(minutes * 60)),
            pause: false,
            max_error_delta: None,
            max_latency_delta_ms: None,
            min_requests: None,
            timeout: None,
        };
        Self {
            name: "default".into(),
            stages: vec![
                stage(1.0, 5),
                // 10 minutes at 5 %: see docs/tuning.md.
                stage(5.0, 10),
                stage(25.0, 5),
                stage(50.0, 5),
                stage(100.0, 3),
            ],
            analysis: AnalysisSpec::default(),
            traffic: None,
        }
    }

    /// Parses and deserializes a YAML or JSON document.
    ///
    /// # Errors
    /// Every syntax or shape problem found, each with its path and line.
    pub fn from_text(text: &str) -> Result<(Self, SourceDoc), SpecErrors> {
        let doc = parse_document(text)?;
        let spec = deserialize_all(&doc)?;
        Ok((spec, doc))
    }

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

#[cfg(test)]
mod tests;
