//! The API's JSON shapes, with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A rollout's status: `GET /api/v1/rollouts/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    /// The rollout's name (the spec's `name`).
    pub name: String,
    /// `enforce` or `advisory`.
    pub mode: String,
    /// `pending`, `progressing`, `paused`, `succeeded`, `rolling_back`
    /// (a gradual rollback stepping down), `rolled_back` or `aborted`.
    pub phase: String,
    /// Why it is paused, rolled back or aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it waits for, while it waits (a resume, a promote, a gate
    /// webhook's 2xx, with the hooks' last answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The current stage, 0-based, while one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    /// How many stages the spec has.
    pub stages: usize,
    /// The weight the decisions call for, percent (in advisory mode, the
    /// weight recommended).
    pub desired_weight: f64,
    /// The weight last confirmed by the traffic layer, percent.
    pub applied_weight: f64,
    /// The weight the traffic layer reports routing right now, percent.
    pub actuator_weight: f64,
    /// How many times the rollout was started over (`retry`).
    pub generation: u64,
    /// The store revision of this state.
    pub revision: u64,
    /// When the rollout was created (RFC 3339).
    pub created_at: String,
    /// When its state was last written (RFC 3339).
    pub updated_at: String,
    /// When this generation started (RFC 3339).
    pub started_at: String,
    /// Seconds since the current stage began (or resumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_elapsed_seconds: Option<f64>,
    /// The stage's bake time, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_bake_seconds: Option<f64>,
    /// Per version, the numbers in the current stage.
    pub counts: Counts,
    /// The judge's latest verdict with per-metric evidence (statistic,
    /// threshold, interval, e-value, sample sizes).
    ///
    /// Shared with the engine: a status refreshed at every look copies a
    /// pointer, not the evidence's words.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared::serialize",
        deserialize_with = "shared::deserialize"
    )]
    #[schema(value_type = Option<Object>)]
    pub verdict: Option<std::sync::Arc<canary_core::Verdict>>,
    /// The traffic layer: provider and, for the proxy, where it listens.
    pub traffic: TrafficInfo,
    /// Where the judges' numbers come from.
    pub metrics: MetricsInfo,
    /// Reads of the metrics source that failed, this run of the server.
    pub source_failures: u64,
    /// The last problem with the traffic layer or the store, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Per-version numbers of the current stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    /// The stable version's.
    #[schema(value_type = Object)]
    pub stable: canary_core::VersionSummary,
    /// The canary's.
    #[schema(value_type = Object)]
    pub canary: canary_core::VersionSummary,
}

/// Where a rollout's numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsInfo {
    /// `proxy` (the traffic layer's own counts), `prometheus` or `scrape`.
    pub provider: String,
    /// The business metrics judged beside requests, errors and latency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub business: Vec<String>,
    /// The threshold metrics the canary is held to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<String>,
}

/// Where a rollout's traffic goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficInfo {
    /// `proxy`, `simulated`, `nginx`, `haproxy` or `alb`.
    pub provider: String,
    /// The built-in proxy's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// One line of `GET /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutSummary {
    /// Name.
    pub name: String,
    /// Phase.
    pub phase: String,
    /// Mode.
    pub mode: String,
    /// Current stage, 0-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    /// Stage count.
    pub stages: usize,
    /// Weight confirmed by the traffic layer, percent.
    pub weight: f64,
    /// Weight the decisions call for, percent.
    pub desired_weight: f64,
    /// Last write (RFC 3339).
    pub updated_at: String,
}

/// `GET /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    /// Every rollout, by name.
    pub rollouts: Vec<RolloutSummary>,
}

/// One entry of a rollout's decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventEntry {
    /// Its number: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `controller`, or the API caller (`api`, or `api:<X-Canary-Actor>`).
    pub actor: String,
    /// What happened: `created`, `start`, `advance`, `pause`, `resume`,
    /// `promote`, `promote_full`, `succeed`, `rollback`, `abort`, `retry`,
    /// `weight_applied`, `weight_held` (the traffic layer has not taken the
    /// weight: the stage's clock stands still), `weight_failed`, `recovered`.
    pub event: String,
    /// Why, in words.
    pub reason: String,
    /// The weights, the verdict and anything else worth keeping.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// `GET /api/v1/rollouts/{name}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventLog {
    /// The rollout.
    pub rollout: String,
    /// Its events, oldest first.
    pub events: Vec<EventEntry>,
}

/// One look of a rollout's judge: a window judged, with each metric's
/// evidence as it stood then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Look {
    /// Its number in this generation: 1, 2, 3, … (a long history keeps
    /// every `stride`-th).
    pub seq: u64,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// When, seconds since this generation started.
    pub at_seconds: f64,
    /// The stage judged, 0-based.
    pub stage: usize,
    /// The weight the window was served at, percent.
    pub weight: f64,
    /// The verdict: `pass`, `fail` or `inconclusive`.
    pub outcome: String,
    /// Each metric's evidence.
    pub metrics: Vec<LookMetric>,
}

/// One metric's evidence at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LookMetric {
    /// The metric (`error_rate`, `latency`, a business or threshold metric).
    pub name: String,
    /// Its outcome: `pass`, `fail` or `inconclusive`.
    pub outcome: String,
    /// The judge's statistic (for `sequential`, the log e-value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The threshold the statistic is held to (for `sequential`, ln(1/α)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The e-value, where the judge has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// The p-value (anytime-valid for `sequential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
}

/// `GET /api/v1/rollouts/{name}/history`: the judge's looks in the
/// current generation, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// The rollout.
    pub rollout: String,
    /// The generation (retries so far) the looks belong to.
    pub generation: u64,
    /// Looks made in this generation (the last one's `seq`).
    pub looks_seen: u64,
    /// Every `stride`-th look is kept (1 until the history is long).
    pub stride: u64,
    /// The looks kept, oldest first.
    pub looks: Vec<Look>,
}

/// The body of an action (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, for the log: at most 4096 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: Option<String>,
}

/// A rollout spec as `POST /api/v1/rollouts` takes it in JSON: the shape
/// `canary run` reads (docs/spec.md), with the `traffic` section canary
/// serve requires. This type only describes the body in the OpenAPI
/// document; the server reads the spec with canary-core's parser, which
/// also checks what a schema cannot say (weights strictly increasing, a
/// timeout no shorter than its stage, every duration within 365 days, the
/// `analysis` settings) and answers 422 with one detail per problem. The
/// schema is never stricter than the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "checkout",
    "stages": [{"weight": 50, "duration": "1m"}, {"weight": 100, "duration": "1m"}],
    "analysis": {"interval": "1s"},
    "traffic": {"provider": "simulated", "scenario": "healthy"}
}))]
pub struct RolloutSpecBody {
    /// The rollout's name: for canary serve 1–63 letters, digits, `-`, `_`
    /// or `.`, not starting with `.` (it is part of URLs).
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    /// The stages, in order; weights strictly increasing.
    #[schema(min_items = 1)]
    pub stages: Vec<StageBody>,
    /// How canary and baseline are compared: `judge`, `interval`, `alpha`,
    /// `min_requests`, `max_latency_delta_ms`, `timeout_factor`,
    /// `on_inconclusive`, `judges`, `margins`, `guardrails`
    /// (docs/spec.md).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub analysis: Value,
    /// Where the traffic goes: required by canary serve.
    pub traffic: TrafficBody,
    /// `enforce` (the default) or `advisory`.
    #[serde(default)]
    pub mode: ModeBody,
}

/// Whether a rollout carries out its decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeBody {
    /// The weight follows the decisions.
    #[default]
    Enforce,
    /// Decisions are recorded as recommendations; no weight is set.
    Advisory,
}

/// A duration: `250ms`, `30s`, `5m`, `2h`, `1d` or a sum such as `1m30s`,
/// or a number of seconds (≥ 0); at most 365 days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DurationBody {
    /// Seconds.
    Seconds(f64),
    /// Written with units.
    Text(String),
}

/// One stage of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    /// Percent of the traffic sent to the canary, in (0, 100].
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub weight: f64,
    /// Bake time at this weight before the stage may pass (> 0).
    pub duration: DurationBody,
    /// Hold for a manual promote once the stage has passed.
    #[serde(default)]
    pub pause: bool,
    /// Threshold judge: largest tolerated canary − baseline error rate.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub max_error_delta: Option<f64>,
    /// Threshold judge: largest tolerated canary − baseline latency, ms.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_latency_delta_ms: Option<f64>,
    /// Canary requests needed before the stage may pass.
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// How long the stage may wait for a pass (at least `duration`).
    #[serde(default)]
    pub timeout: Option<DurationBody>,
}

/// A spec's `traffic` section: the built-in proxy, or a simulated service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TrafficBody {
    /// `provider: proxy` (the default).
    Proxy(ProxyTrafficBody),
    /// `provider: simulated`.
    Simulated(SimulatedTrafficBody),
}

/// The built-in proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyTrafficBody {
    /// `proxy`, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ProxyProvider)]
    pub provider: Option<ProxyProvider>,
    /// Where the proxy listens, `host:port`.
    pub listen: String,
    /// The stable version, `http://host[:port][/path]`.
    pub stable: String,
    /// The canary, `http://host[:port][/path]`.
    pub canary: String,
}

/// The proxy provider's name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProvider {
    /// The built-in proxy.
    Proxy,
}

/// A simulated service, drawn from a built-in scenario on the wall clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedTrafficBody {
    /// `simulated`.
    pub provider: SimulatedProvider,
    /// The scenario (default `healthy`).
    #[serde(default)]
    pub scenario: Option<ScenarioName>,
    /// Requests per second, both versions together, in (0, 1000000]
    /// (default: the scenario's).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1_000_000)]
    pub requests_per_second: Option<f64>,
    /// The seed of the draws (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The simulated provider's name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimulatedProvider {
    /// A simulated service.
    Simulated,
}

/// A built-in scenario (`canary_sim::BUILT_IN`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ScenarioName {
    Healthy,
    #[serde(rename = "errors-2x")]
    Errors2x,
    #[serde(rename = "errors-5x")]
    Errors5x,
    #[serde(rename = "latency-20pct")]
    Latency20pct,
    #[serde(rename = "latency-50pct")]
    Latency50pct,
    MemoryLeak,
    Burst,
    LoadDependent,
}

/// Every error the API returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in one line.
    pub error: String,
    /// Each problem found (for a spec: one per field, as `canary validate`
    /// prints them).
    pub details: Vec<String>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
    /// With high availability: this replica's role, the term, the leader,
    /// the time since the lease was last renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<crate::ha::HaStatus>,
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// (De)serializes an `Option<Arc<T>>` as the `Option<T>` it holds (serde's
/// own impls for `Arc` need its `rc` feature, which would rebuild every
/// crate that uses serde).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Arc<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_deref().serialize(s)
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<T>>, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map(Arc::new))
    }
}
