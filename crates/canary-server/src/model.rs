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
    /// `pending`, `progressing`, `paused`, `succeeded`, `rolled_back` or
    /// `aborted`.
    pub phase: String,
    /// Why it is paused, rolled back or aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub verdict: Option<Value>,
    /// The traffic layer: provider and, for the proxy, where it listens.
    pub traffic: TrafficInfo,
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
    pub stable: Value,
    /// The canary's.
    #[schema(value_type = Object)]
    pub canary: Value,
}

/// Where a rollout's traffic goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficInfo {
    /// `proxy` or `simulated`.
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
    /// `weight_applied`, `weight_failed`, `recovered`.
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

/// The body of an action (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, for the log: at most 4096 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub reason: Option<String>,
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
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds.
pub(crate) fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
