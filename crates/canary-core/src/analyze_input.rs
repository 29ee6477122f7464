//! The input document of `canary analyze`: recorded numbers to judge, one
//! metric at a time (count metrics with the canary's traffic share, or two
//! series of samples), with the judge and its options. Parsed by the
//! document layer like every other document ([`parse`]); judged by
//! `canary_stats::analyze`.
//!
//! ```json
//! {"judge": "sequential", "alpha": 0.05,
//!  "metrics": [
//!    {"name": "errors", "kind": "count", "baseline": 950, "canary": 80, "canary_share": 0.05},
//!    {"name": "latency_ms", "kind": "samples", "baseline": [101, 99, 130], "canary": [140, 151, 160]}]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::document::{parse_json, SpecError};
use crate::spec::{JudgeKind, JudgeOptions};

/// Which change of a metric is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricDirection {
    /// Only an increase is bad (errors, latency).
    #[default]
    Increase,
    /// Only a decrease is bad (throughput).
    Decrease,
    /// Either way is bad.
    Either,
}

/// The input document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeInput {
    /// Which judge (default `sequential`).
    #[serde(default)]
    pub judge: JudgeKind,
    /// False-alarm level, in (0, 0.5) (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Judge options, as under `analysis.judges` in a spec.
    #[serde(default)]
    pub options: JudgeOptions,
    /// `kayenta`: weight of each metric group (default 1 each).
    #[serde(default)]
    pub group_weights: BTreeMap<String, f64>,
    /// The metrics.
    pub metrics: Vec<MetricInput>,
}

fn default_alpha() -> f64 {
    0.05
}

/// Kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Event counts per arm.
    Count,
    /// Two series of values.
    Samples,
}

/// One side of a metric: a count or a series (`null` = NaN).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Side {
    /// An event count.
    Count(f64),
    /// A series.
    Samples(Vec<Option<f64>>),
}

/// One metric as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricInput {
    /// Name.
    pub name: String,
    /// `count` or `samples`.
    pub kind: MetricKind,
    /// The baseline's count or series.
    pub baseline: Side,
    /// The canary's count or series.
    pub canary: Side,
    /// Count: the canary's share of the traffic, in (0, 1).
    #[serde(default)]
    pub canary_share: Option<f64>,
    /// Count: requests the baseline served.
    #[serde(default)]
    pub baseline_requests: Option<u64>,
    /// Count: requests the canary served.
    #[serde(default)]
    pub canary_requests: Option<u64>,
    /// Which change is a regression (default `increase`).
    #[serde(default)]
    pub direction: MetricDirection,
    /// `kayenta`: a critical metric that is not Pass fails the analysis.
    #[serde(default)]
    pub critical: bool,
    /// `kayenta`: no data counts as a failure.
    #[serde(default)]
    pub must_have_data: bool,
    /// `kayenta`: the metric's group (default its name).
    #[serde(default)]
    pub group: Option<String>,
    /// `deviation`: the largest tolerated deviation, percent (default from
    /// the options: error deviation for counts, latency for samples).
    #[serde(default)]
    pub max_deviation_pct: Option<f64>,
}

/// Parses the input text (JSON; a byte-order mark is skipped, text after
/// the document refused).
///
/// # Errors
/// The first syntax or shape problem, with its field path and line.
pub fn parse(text: &str) -> Result<AnalyzeInput, SpecError> {
    parse_json(text)
}
