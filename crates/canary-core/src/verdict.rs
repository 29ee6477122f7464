//! A judge's verdict and the evidence behind it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a judge concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The canary may go on (given the stage's bake time is met).
    Pass,
    /// The canary is worse: roll back.
    Fail,
    /// Not enough evidence either way yet.
    Inconclusive,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        })
    }
}

/// The answer of one external check at one look (a `rollout` webhook):
/// a check that did not pass fails the verdict, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name (the webhook's).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it answered, in words.
    pub reason: String,
}

/// The evidence about one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvidence {
    /// Metric name, e.g. `error_rate`, `latency`.
    pub name: String,
    /// This metric's outcome.
    pub outcome: Outcome,
    /// The test statistic (z, deviation %, log e-value, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The threshold the statistic was held to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// p-value (anytime-valid for the sequential judge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// e-value, where the judge has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// An interval for the effect, `[low, high]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// What the interval is an interval of (e.g. "rate ratio").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_of: Option<String>,
    /// Baseline sample size behind the evidence.
    pub n_baseline: u64,
    /// Canary sample size behind the evidence.
    pub n_canary: u64,
    /// The reason, in words.
    pub reason: String,
}

impl MetricEvidence {
    /// Evidence with only the essentials set.
    pub fn new(name: &str, outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            outcome,
            statistic: None,
            threshold: None,
            p_value: None,
            e_value: None,
            interval: None,
            interval_of: None,
            n_baseline: 0,
            n_canary: 0,
            reason: reason.into(),
        }
    }
}

/// A judge's verdict at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The overall outcome.
    pub outcome: Outcome,
    /// The judge's name.
    pub judge: String,
    /// Evidence per metric.
    pub metrics: Vec<MetricEvidence>,
    /// The reason, in words.
    pub reason: String,
    /// The absolute guardrails (`analysis.guardrails`) the canary breaks, in
    /// words: set by the engine, not the judge. A breached guardrail keeps
    /// the stage from passing whatever the outcome: the rollout pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<String>,
}

impl Verdict {
    /// Combines per-metric evidence the usual way: any fail fails; else any
    /// inconclusive is inconclusive; else pass. The reason names the metrics
    /// that decided.
    pub fn from_metrics(judge: &str, metrics: Vec<MetricEvidence>) -> Self {
        let any = |o: Outcome| metrics.iter().any(|m| m.outcome == o);
        let outcome = if any(Outcome::Fail) {
            Outcome::Fail
        } else if metrics.is_empty() || any(Outcome::Inconclusive) {
            Outcome::Inconclusive
        } else {
            Outcome::Pass
        };
        // "name: reason; name: reason" of the deciding metrics, written
        // into one string (a verdict is made at every look).
        let deciding = || metrics.iter().filter(|m| m.outcome == outcome);
        let len: usize = deciding().map(|m| m.name.len() + m.reason.len() + 4).sum();
        let mut reason = String::with_capacity(len);
        for m in deciding() {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&m.name);
            reason.push_str(": ");
            reason.push_str(&m.reason);
        }
        if reason.is_empty() {
            reason.push_str("no metrics to judge");
        }
        Self {
            outcome,
            judge: judge.to_string(),
            metrics,
            reason,
            guardrail: None,
        }
    }
}
