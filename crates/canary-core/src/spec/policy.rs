//! The validated rollout the engine runs ([`Policy`], its [`Stage`]s and
//! [`Analysis`]) and the validation that builds it from a [`RolloutSpec`].
//!
//! Validation checks every rule and reports every violation it finds, each
//! naming the field path (`stages[1].weight`), the value, the rule and, when
//! the spec came from a document, the line.

use std::time::Duration;

use serde::Serialize;

use super::{
    AnalysisSpec, DeviationOptions, GuardrailsSpec, JudgeKind, JudgeOptions, KayentaOptions,
    MarginsSpec, MetricsSpec, Mode, OnInconclusive, OnMetricsUnavailable, RollbackMode,
    RollbackSpec, RolloutSpec, SequentialOptions, StageSpec, TrafficProvider, TrafficSpec,
};
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
    /// Percent of traffic kept on the stable version while the stage is
    /// judged: `analysis.holdback` on a stage of weight 100, else 0.
    pub holdback: f64,
}

impl Stage {
    /// The canary's share of traffic while the stage is judged, percent:
    /// its weight less the stable holdback (95 for a 100 % stage with the
    /// default holdback). A stage that passes at 100 % with a holdback ends
    /// the rollout at weight 100.
    pub fn routed_weight(&self) -> f64 {
        self.weight - self.holdback
    }

    /// The stage's weight in words, for reasons and status: `50 %`, or
    /// `100 %, 5 % held back on stable`.
    pub fn describe_weight(&self) -> String {
        if self.holdback > 0.0 {
            format!("{} %, {} % held back on stable", self.weight, self.holdback)
        } else {
            format!("{} %", self.weight)
        }
    }
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
    /// Percent of traffic kept on stable while a 100 % stage is judged
    /// (each stage carries its own share in [`Stage::holdback`]).
    pub holdback: f64,
    /// What happens at a stage's timeout without a pass.
    pub on_inconclusive: OnInconclusive,
    /// Judge-specific options.
    pub judges: JudgeOptions,
    /// Absolute limits on the canary.
    pub guardrails: Guardrails,
    /// Differences too small to matter.
    pub margins: Margins,
    /// What happens when the metrics stay unreadable.
    pub on_metrics_unavailable: OnMetricsUnavailable,
    /// Looks in a row without numbers before it applies.
    pub metrics_unavailable_after: u32,
    /// The traffic expected, requests per second, if stated.
    pub expected_rate: Option<f64>,
}

/// Validated margins of practical significance (see
/// [`MarginsSpec`](super::MarginsSpec)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Margins {
    /// Harmless latency increase, as a fraction.
    pub latency_relative: f64,
    /// Harmless latency increase, ms.
    pub latency_ms: f64,
    /// Harmless error-rate increase, as a fraction of the baseline's rate.
    pub error_relative: f64,
    /// Harmless error-rate increase, absolute.
    pub error_absolute: f64,
}

impl Margins {
    /// No margins: the plain tests.
    pub const ZERO: Margins = Margins {
        latency_relative: 0.0,
        latency_ms: 0.0,
        error_relative: 0.0,
        error_absolute: 0.0,
    };

    /// The harmless shift of mean ln latency for a baseline whose geometric
    /// mean latency is `baseline_ms`: an increase within either the relative
    /// or the absolute margin is harmless, so the larger of the two.
    pub fn latency_log_shift(&self, baseline_ms: f64) -> f64 {
        let rel = self.latency_relative.ln_1p();
        let abs = if baseline_ms > 0.0 && baseline_ms.is_finite() {
            (self.latency_ms / baseline_ms).ln_1p()
        } else {
            0.0
        };
        rel.max(abs).max(0.0)
    }

    /// The harmless canary/baseline error-rate ratio for a baseline rate
    /// `baseline_rate` (≥ 1), capped at 10⁶: within either margin is
    /// harmless.
    pub fn error_ratio(&self, baseline_rate: f64) -> f64 {
        let rel = 1.0 + self.error_relative;
        let abs = if self.error_absolute > 0.0 {
            if baseline_rate > 0.0 {
                1.0 + self.error_absolute / baseline_rate
            } else {
                f64::INFINITY
            }
        } else {
            1.0
        };
        rel.max(abs).clamp(1.0, 1e6)
    }
}

/// Validated absolute limits on the canary's numbers over a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guardrails {
    /// Highest error rate that may pass, in [0, 1].
    pub max_error_rate: f64,
    /// Highest p99 latency that may pass, ms.
    pub max_latency_p99_ms: Option<f64>,
}

impl Guardrails {
    /// The limits `canary` (its numbers over the stage) breaks, in words,
    /// with `baseline`'s for comparison; `None` when it breaks none. A
    /// version with no requests breaks nothing (there is nothing to judge
    /// yet; `min_requests` keeps such a stage from passing).
    pub fn breached(
        &self,
        canary: &crate::VersionStats,
        baseline: &crate::VersionStats,
    ) -> Option<String> {
        if canary.requests == 0 {
            return None;
        }
        let rate = |v: &crate::VersionStats| v.errors as f64 / v.requests.max(1) as f64;
        let pct = |x: f64| format!("{:.2} %", 100.0 * x);
        let mut broken = Vec::new();
        let r = rate(canary);
        if r > self.max_error_rate {
            broken.push(format!(
                "canary error rate {} ({} of {}) is above the absolute limit {} \
                 (analysis.guardrails.max_error_rate; stable: {})",
                pct(r),
                canary.errors,
                canary.requests,
                pct(self.max_error_rate),
                if baseline.requests == 0 {
                    "no requests".to_string()
                } else {
                    pct(rate(baseline))
                },
            ));
        }
        if let (Some(max), Some(p99)) = (self.max_latency_p99_ms, canary.latency.quantile(0.99)) {
            if p99 > max {
                broken.push(format!(
                    "canary p99 latency {p99:.1} ms is above the absolute limit {max} ms \
                     (analysis.guardrails.max_latency_p99_ms; stable: {})",
                    baseline
                        .latency
                        .quantile(0.99)
                        .map_or_else(|| "no latencies".to_string(), |b| format!("{b:.1} ms")),
                ));
            }
        }
        (!broken.is_empty()).then(|| broken.join("; "))
    }
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
    /// Where the numbers come from, if not the traffic layer.
    pub metrics: Option<MetricsSpec>,
    /// Whether the decisions are carried out or only recommended.
    pub mode: Mode,
    /// How a rollback moves the weight.
    pub rollback: Rollback,
    /// Webhooks, notifications and the limits on waiting.
    pub hooks: super::Hooks,
}

/// A validated rollback policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Rollback {
    /// The weights a rollback steps down through, decreasing, ending at 0;
    /// empty for an immediate rollback.
    pub steps: Vec<f64>,
    /// How long each step holds.
    pub step_interval: Duration,
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

impl RolloutSpec {
    /// Checks every rule and builds the [`Policy`]; `doc` adds line numbers.
    ///
    /// The sections are checked in the order of the file (name, stages,
    /// analysis, judge options, traffic), so the errors come in that order.
    ///
    /// # Errors
    /// All the rule violations found, not only the first.
    pub fn validate(&self, doc: Option<&SourceDoc>) -> Result<Policy, SpecErrors> {
        let mut found = Findings {
            doc,
            errors: Vec::new(),
        };
        if self.name.trim().is_empty() {
            found.add("name".into(), "\"\"".into(), "must not be empty".into());
        } else if self.name.chars().any(char::is_control) {
            found.add(
                "name".into(),
                self.name.escape_default().to_string(),
                "must not contain control characters (they would be echoed to terminals)".into(),
            );
        }
        let a = &self.analysis;
        let holdback = check_holdback(&self.stages, a.holdback, &mut found);
        let stages = check_stages(&self.stages, a, holdback, &mut found);
        check_analysis(a, &mut found);
        check_judges(&a.judges, &mut found);
        check_guardrails(&a.guardrails, &mut found);
        check_margins(&a.margins, &mut found);
        if let Some(t) = &self.traffic {
            let mut weights: Vec<(String, f64)> = self
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("stages[{i}].weight"), s.weight))
                .collect();
            if let Some(s) = stages.iter().find(|s| s.holdback > 0.0) {
                // The layer must also give the split while a 100 % stage is judged.
                weights.push(("analysis.holdback".into(), s.routed_weight()));
            }
            if let Some(steps) = self.rollback.as_ref().and_then(|r| r.steps.as_ref()) {
                weights.extend(
                    steps
                        .iter()
                        .enumerate()
                        .map(|(i, &w)| (format!("rollback.steps[{i}]"), w)),
                );
            }
            check_traffic(t, &weights, &mut found);
        }
        if let Some(m) = &self.metrics {
            super::metrics::check_metrics(m, &mut found);
        }
        let uncounted = self.traffic.as_ref().map(|t| t.provider).filter(|p| {
            matches!(p, TrafficProvider::Nginx | TrafficProvider::Alb) || p.is_kubernetes()
        });
        let own_counts = self
            .metrics
            .as_ref()
            .is_none_or(|m| m.provider == super::MetricsProvider::Proxy);
        if let (Some(p), true) = (uncounted, own_counts) {
            let name = p.name();
            let layer = if p == TrafficProvider::Alb {
                "canary does not read an ALB's counts"
            } else if p.is_kubernetes() {
                "canary does not read the mesh's or ingress's counts"
            } else {
                "nginx does not count requests per version"
            };
            found.add(
                "metrics".into(),
                "(missing)".into(),
                format!(
                    "`traffic.provider: {name}` needs a metrics section with `provider: \
                     prometheus` or `scrape`: {layer}"
                ),
            );
        }
        let rollback = check_rollback(self.rollback.as_ref(), &mut found);
        let hooks = super::hooks::check_hooks(
            &self.webhooks,
            &self.notifications,
            self.pause_timeout.as_ref(),
            self.gate_timeout.as_ref(),
            &mut found,
        );
        if !found.errors.is_empty() {
            return Err(SpecErrors(found.errors));
        }
        Ok(Policy {
            name: self.name.clone(),
            stages,
            analysis: Analysis {
                judge: a.judge,
                interval: a.interval.0,
                alpha: a.alpha,
                holdback,
                on_inconclusive: a.on_inconclusive,
                judges: a.judges.clone(),
                margins: Margins {
                    latency_relative: a.margins.latency_relative,
                    latency_ms: a.margins.latency_ms,
                    error_relative: a.margins.error_relative,
                    error_absolute: a.margins.error_absolute,
                },
                guardrails: Guardrails {
                    max_error_rate: a.guardrails.max_error_rate,
                    max_latency_p99_ms: a.guardrails.max_latency_p99_ms,
                },
                on_metrics_unavailable: a.on_metrics_unavailable,
                metrics_unavailable_after: a.metrics_unavailable_after,
                expected_rate: a.expected_rate,
            },
            traffic: self.traffic.clone(),
            metrics: self.metrics.clone(),
            mode: self.mode,
            rollback,
            hooks,
        })
    }
}

/// The rule violations found so far, each given its line from the document.
pub(super) struct Findings<'d> {
    doc: Option<&'d SourceDoc>,
    errors: Vec<SpecError>,
}

impl Findings<'_> {
    /// Records that `value`, written at `path`, breaks `rule`.
    pub(super) fn add(&mut self, path: String, value: String, rule: String) {
        let line = self.doc.and_then(|d| d.line_of(&path));
        self.errors.push(SpecError {
            path,
            line,
            value,
            rule,
        });
    }

    /// Records `value` at `path` if it is given and not a finite number ≥ 0.
    fn non_negative(&mut self, path: String, value: Option<f64>) {
        if let Some(v) = value {
            if !(v >= 0.0 && v.is_finite()) {
                self.add(path, fmt_f64(v), "must be a finite number ≥ 0".into());
            }
        }
    }
}

/// Checks `analysis.holdback` (a percentage in [0, 50) that leaves the
/// canary, while a 100 % stage is judged, more than the stage before it)
/// and returns it, or 0 when it is not valid.
fn check_holdback(specs: &[StageSpec], holdback: f64, found: &mut Findings) -> f64 {
    let path = || "analysis.holdback".to_string();
    if !(holdback.is_finite() && (0.0..50.0).contains(&holdback)) {
        found.add(
            path(),
            fmt_f64(holdback),
            "the stable holdback is a percentage in [0, 50): the traffic kept on stable while \
             the 100 % stage is judged (0 turns it off)"
                .into(),
        );
        return 0.0;
    }
    let full = specs.iter().position(|s| s.weight == 100.0);
    if let Some(i) = full.filter(|&i| i > 0 && holdback > 0.0) {
        let prev = specs[i - 1].weight;
        if prev.is_finite() && 100.0 - holdback <= prev {
            found.add(
                path(),
                fmt_f64(holdback),
                format!(
                    "while stages[{i}] (100 %) is judged the canary would get {} %, not more \
                     than stages[{}].weight ({}): the holdback must leave the last stage above \
                     the one before it",
                    fmt_f64(100.0 - holdback),
                    i - 1,
                    fmt_f64(prev)
                ),
            );
            return 0.0;
        }
    }
    holdback
}

/// Checks the stages (at least one, weights strictly increasing) and builds
/// them, with the analysis defaults `a` filled in; a stage of weight 100
/// gets the stable `holdback`.
fn check_stages(
    specs: &[StageSpec],
    a: &AnalysisSpec,
    holdback: f64,
    found: &mut Findings,
) -> Vec<Stage> {
    if specs.is_empty() {
        found.add(
            "stages".into(),
            "[]".into(),
            "at least one stage is needed".into(),
        );
    }
    let mut prev: Option<f64> = None;
    let mut stages = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        check_weight(i, s.weight, prev, found);
        if s.weight.is_finite() {
            prev = Some(prev.map_or(s.weight, |w: f64| w.max(s.weight)));
        }
        let mut stage = check_stage(i, s, a, found);
        if stage.weight == 100.0 {
            stage.holdback = holdback;
        }
        stages.push(stage);
    }
    stages
}

/// Stage `i`'s weight is a percentage in (0, 100] above `prev`, the largest
/// finite weight before it.
fn check_weight(i: usize, weight: f64, prev: Option<f64>, found: &mut Findings) {
    let path = || format!("stages[{i}].weight");
    if !(weight > 0.0 && weight <= 100.0) {
        found.add(
            path(),
            fmt_f64(weight),
            "a weight is a percentage in (0, 100]".into(),
        );
    } else if let Some(w) = prev {
        if weight <= w {
            found.add(
                path(),
                fmt_f64(weight),
                format!(
                    "weights must increase strictly from stage to stage: stages[{}].weight is {}",
                    i - 1,
                    fmt_f64(w)
                ),
            );
        }
    }
}

/// Checks stage `i`'s bake time, limits and timeout (its weight is checked
/// by [`check_weight`]) and builds it.
fn check_stage(i: usize, s: &StageSpec, a: &AnalysisSpec, found: &mut Findings) -> Stage {
    let p = |f: &str| format!("stages[{i}].{f}");
    if s.duration.0.is_zero() {
        found.add(
            p("duration"),
            s.duration.to_string(),
            "a stage needs a positive bake time".into(),
        );
    }
    found.non_negative(p("max_error_delta"), s.max_error_delta);
    if let Some(d) = s.max_error_delta {
        if d > 1.0 {
            found.add(
                p("max_error_delta"),
                fmt_f64(d),
                "an error-rate delta is a fraction in [0, 1]".into(),
            );
        }
    }
    found.non_negative(p("max_latency_delta_ms"), s.max_latency_delta_ms);
    let timeout = match s.timeout {
        Some(t) if t.0 < s.duration.0 => {
            found.add(
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
    Stage {
        weight: s.weight,
        bake: s.duration.0,
        timeout,
        pause_after: s.pause,
        max_error_delta: s
            .max_error_delta
            .unwrap_or_else(|| default_error_delta(s.weight)),
        max_latency_delta_ms: s.max_latency_delta_ms.unwrap_or(a.max_latency_delta_ms),
        min_requests: s.min_requests.unwrap_or(a.min_requests),
        holdback: 0.0,
    }
}

/// Checks the analysis settings other than the judges' options.
fn check_analysis(a: &AnalysisSpec, found: &mut Findings) {
    if a.interval.0.is_zero() {
        found.add(
            "analysis.interval".into(),
            a.interval.to_string(),
            "the analysis interval must be positive".into(),
        );
    }
    if !(a.alpha > 0.0 && a.alpha < 0.5) {
        found.add(
            "analysis.alpha".into(),
            fmt_f64(a.alpha),
            "alpha must be in (0, 0.5)".into(),
        );
    }
    found.non_negative(
        "analysis.max_latency_delta_ms".into(),
        Some(a.max_latency_delta_ms),
    );
    if !(a.timeout_factor >= 1.0 && a.timeout_factor.is_finite()) {
        found.add(
            "analysis.timeout_factor".into(),
            fmt_f64(a.timeout_factor),
            "the timeout factor must be a finite number ≥ 1".into(),
        );
    }
    if let Some(r) = a.expected_rate {
        if !(r.is_finite() && r > 0.0 && r <= 1e6) {
            found.add(
                "analysis.expected_rate".into(),
                fmt_f64(r),
                "must be a number of requests per second in (0, 1000000]".into(),
            );
        }
    }
    if a.metrics_unavailable_after == 0 {
        found.add(
            "analysis.metrics_unavailable_after".into(),
            "0".into(),
            "must be at least 1 (looks in a row without numbers)".into(),
        );
    }
}

/// Checks `analysis.margins`.
fn check_margins(m: &MarginsSpec, found: &mut Findings) {
    for (f, v, max) in [
        ("latency_relative", m.latency_relative, 10.0),
        ("latency_ms", m.latency_ms, 3.6e6),
        ("error_relative", m.error_relative, 100.0),
        ("error_absolute", m.error_absolute, 1.0),
    ] {
        if !(v >= 0.0 && v < max) {
            found.add(
                format!("analysis.margins.{f}"),
                fmt_f64(v),
                format!("a margin is a number in [0, {max})"),
            );
        }
    }
}

/// Checks `analysis.guardrails`.
fn check_guardrails(g: &GuardrailsSpec, found: &mut Findings) {
    if !(0.0..=1.0).contains(&g.max_error_rate) {
        found.add(
            "analysis.guardrails.max_error_rate".into(),
            fmt_f64(g.max_error_rate),
            "an error rate is in [0, 1] (1 turns the guardrail off)".into(),
        );
    }
    if let Some(ms) = g.max_latency_p99_ms {
        if !(ms > 0.0 && ms.is_finite()) {
            found.add(
                "analysis.guardrails.max_latency_p99_ms".into(),
                fmt_f64(ms),
                "a latency limit is a positive number of milliseconds".into(),
            );
        }
    }
}

/// Checks `analysis.judges`, one judge's options after the other.
fn check_judges(j: &JudgeOptions, found: &mut Findings) {
    check_deviation(&j.deviation, found);
    check_kayenta(&j.kayenta, found);
    check_sequential(&j.sequential, found);
}

/// Checks `analysis.judges.deviation`.
fn check_deviation(d: &DeviationOptions, found: &mut Findings) {
    found.non_negative(
        "analysis.judges.deviation.max_error_deviation_pct".into(),
        Some(d.max_error_deviation_pct),
    );
    found.non_negative(
        "analysis.judges.deviation.max_latency_deviation_pct".into(),
        Some(d.max_latency_deviation_pct),
    );
}

/// Checks `analysis.judges.kayenta`.
fn check_kayenta(k: &KayentaOptions, found: &mut Findings) {
    if !(k.confidence > 0.0 && k.confidence < 1.0) {
        found.add(
            "analysis.judges.kayenta.confidence".into(),
            fmt_f64(k.confidence),
            "a confidence is in (0, 1)".into(),
        );
    }
    found.non_negative(
        "analysis.judges.kayenta.tolerance".into(),
        Some(k.tolerance),
    );
    if !(0.0..=100.0).contains(&k.marginal_score)
        || !(0.0..=100.0).contains(&k.pass_score)
        || k.marginal_score > k.pass_score
    {
        found.add(
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
            found.add(
                "analysis.judges.kayenta.outlier_factor".into(),
                fmt_f64(f),
                "the IQR factor must be positive and finite".into(),
            );
        }
    }
}

/// Checks `analysis.judges.sequential`.
fn check_sequential(s: &SequentialOptions, found: &mut Findings) {
    for (f, v) in [
        ("tolerated_error_ratio", s.tolerated_error_ratio),
        ("tolerated_latency_ratio", s.tolerated_latency_ratio),
    ] {
        if !(v > 1.0 && v.is_finite()) {
            found.add(
                format!("analysis.judges.sequential.{f}"),
                fmt_f64(v),
                "a tolerated ratio must be a finite number > 1".into(),
            );
        }
    }
    if !(s.k > 0.0 && s.k.is_finite()) {
        found.add(
            "analysis.judges.sequential.k".into(),
            fmt_f64(s.k),
            "the mixture concentration must be positive and finite".into(),
        );
    }
    if let Some(sd) = s.ratio_prior_sd {
        if !(sd > 0.0 && sd.is_finite()) {
            found.add(
                "analysis.judges.sequential.ratio_prior_sd".into(),
                fmt_f64(sd),
                "the mixture's standard deviation must be positive and finite".into(),
            );
        }
    }
    for (f, w) in [
        ("carried_weight", s.carried_weight),
        ("latency_carried_weight", s.latency_carried_weight),
    ] {
        if !(w > 0.0 && w <= 1.0) {
            found.add(
                format!("analysis.judges.sequential.{f}"),
                fmt_f64(w),
                "a mixture weight must be in (0, 1]".into(),
            );
        }
    }
}

/// Checks the live traffic settings: for the proxy a listen address with a
/// port and http:// URLs for both versions, for nginx and HAProxy their
/// sections; each provider's fields only with that provider.
fn check_traffic(t: &TrafficSpec, weights: &[(String, f64)], found: &mut Findings) {
    let provider = t.provider.name();
    let only = |found: &mut Findings, field: &str, value: String, of: &str| {
        found.add(
            format!("traffic.{field}"),
            value,
            format!("only for `provider: {of}`; this traffic section has `provider: {provider}`"),
        );
    };
    if t.provider != TrafficProvider::Simulated {
        if let Some(s) = &t.scenario {
            only(found, "scenario", s.clone(), "simulated");
        }
        if let Some(r) = t.requests_per_second {
            only(found, "requests_per_second", fmt_f64(r), "simulated");
        }
        if let Some(s) = t.seed {
            only(found, "seed", s.to_string(), "simulated");
        }
    }
    if t.provider != TrafficProvider::Proxy {
        for (field, v) in [
            ("listen", &t.listen),
            ("stable", &t.stable),
            ("canary", &t.canary),
        ] {
            if !v.is_empty() {
                only(found, field, v.clone(), "proxy");
            }
        }
    }
    if t.provider != TrafficProvider::Nginx && t.nginx.is_some() {
        only(found, "nginx", "(a section)".into(), "nginx");
    }
    if t.provider != TrafficProvider::Haproxy && t.haproxy.is_some() {
        only(found, "haproxy", "(a section)".into(), "haproxy");
    }
    if t.provider != TrafficProvider::Alb && t.alb.is_some() {
        only(found, "alb", "(a section)".into(), "alb");
    }
    if !t.provider.is_kubernetes() && t.kubernetes.is_some() {
        only(
            found,
            "kubernetes",
            "(a section)".into(),
            "gateway-api`, `istio`, `ingress-nginx` or `smi",
        );
    }
    if let Some(h) = &t.health {
        super::kubernetes::check_health(h, provider, t.provider.is_kubernetes(), found);
    }
    let missing = |found: &mut Findings, field: &str, what: &str| {
        found.add(
            format!("traffic.{field}"),
            "(missing)".into(),
            format!("`provider: {provider}` needs a `{field}` section with {what}"),
        );
    };
    match t.provider {
        TrafficProvider::Proxy => check_proxy_traffic(t, found),
        TrafficProvider::Nginx => match &t.nginx {
            Some(n) => super::traffic::check_nginx(n, found),
            None => missing(
                found,
                "nginx",
                "`config`, `upstream`, `stable` and `canary`",
            ),
        },
        TrafficProvider::Haproxy => match &t.haproxy {
            Some(h) => super::traffic::check_haproxy(h, weights, found),
            None => missing(
                found,
                "haproxy",
                "`socket`, `backend`, `stable` and `canary`",
            ),
        },
        TrafficProvider::Alb => match &t.alb {
            Some(a) => super::traffic::check_alb(a, weights, found),
            None => missing(
                found,
                "alb",
                "`listener`, `stable_target_group` and `canary_target_group`",
            ),
        },
        TrafficProvider::GatewayApi
        | TrafficProvider::Istio
        | TrafficProvider::IngressNginx
        | TrafficProvider::Smi => match &t.kubernetes {
            Some(k) => super::kubernetes::check_kubernetes(provider, k, weights, found),
            None => missing(
                found,
                "kubernetes",
                &format!(
                    "`{}` (and, but for ingress-nginx, `stable` and `canary`)",
                    super::kubernetes::object_field(provider)
                ),
            ),
        },
        TrafficProvider::Simulated => {
            if let Some(r) = t.requests_per_second {
                if !(r.is_finite() && r > 0.0 && r <= 1e6) {
                    found.add(
                        "traffic.requests_per_second".into(),
                        fmt_f64(r),
                        "must be a number in (0, 1000000]".into(),
                    );
                }
            }
        }
    }
}

/// Checks `rollback`: a gradual one needs decreasing steps in [0, 100)
/// that end at 0, and an interval above 0.
fn check_rollback(r: Option<&RollbackSpec>, found: &mut Findings) -> Rollback {
    let Some(r) = r else {
        return Rollback::default();
    };
    let interval = r.step_interval.map_or(Duration::from_secs(30), |d| d.0);
    match r.mode {
        RollbackMode::Immediate => {
            for (field, given) in [
                ("steps", r.steps.is_some()),
                ("step_interval", r.step_interval.is_some()),
            ] {
                if given {
                    found.add(
                        format!("rollback.{field}"),
                        "(given)".into(),
                        "only for `mode: gradual`; this rollback is `immediate`".into(),
                    );
                }
            }
            Rollback::default()
        }
        RollbackMode::Gradual => {
            let steps = r.steps.clone().unwrap_or_default();
            if steps.is_empty() {
                found.add(
                    "rollback.steps".into(),
                    "(missing)".into(),
                    "`mode: gradual` needs the weights to step down through, e.g. [50, 25, 10, 0]"
                        .into(),
                );
            }
            for (i, &w) in steps.iter().enumerate() {
                let path = format!("rollback.steps[{i}]");
                if !(w.is_finite() && (0.0..100.0).contains(&w)) {
                    found.add(path, fmt_f64(w), "must be a weight in [0, 100)".into());
                } else if i > 0 && w >= steps[i - 1] {
                    found.add(
                        path,
                        fmt_f64(w),
                        format!("must be below the step before it ({})", steps[i - 1]),
                    );
                }
            }
            if steps.last().is_some_and(|&w| w != 0.0) {
                found.add(
                    format!("rollback.steps[{}]", steps.len() - 1),
                    fmt_f64(steps[steps.len() - 1]),
                    "the last step must be 0: a rollback ends with no canary traffic".into(),
                );
            }
            if interval.is_zero() {
                found.add(
                    "rollback.step_interval".into(),
                    "0s".into(),
                    "must be longer than 0s".into(),
                );
            }
            Rollback {
                steps,
                step_interval: interval,
            }
        }
    }
}

/// The proxy's fields: a listen address with a port, two http:// URLs.
fn check_proxy_traffic(t: &TrafficSpec, found: &mut Findings) {
    if t.listen.parse::<std::net::SocketAddr>().is_err() {
        found.add(
            "traffic.listen".into(),
            t.listen.clone(),
            "must be an address with a port, e.g. 127.0.0.1:8080".into(),
        );
    }
    for (f, url) in [("traffic.stable", &t.stable), ("traffic.canary", &t.canary)] {
        if let Err(why) = check_http_url(url) {
            found.add(
                f.into(),
                url.clone(),
                format!("{why}: write an http:// URL, e.g. http://127.0.0.1:9001"),
            );
        }
    }
}

/// Whether `url` is `http://host[:port][/path]` with a host and a port in
/// 1–65535.
pub(super) fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("user information is not supported");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host needs its closing `]`")?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host");
    }
    if host.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the host has spaces or control characters");
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err("the port is not a number in 1–65535"),
        }
    }
    Ok(())
}

/// A number as an error message shows it.
fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}
