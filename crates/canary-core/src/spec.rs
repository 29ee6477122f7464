//! The rollout spec users write: the `*Spec` types and their options, as
//! serde reads them from YAML or JSON (unknown fields rejected), with their
//! defaults.
//!
//! `policy` validates a spec into the [`Policy`] the engine runs; the
//! document layer ([`crate::document`]) parses the text and gives errors
//! their line. Their types are re-exported here (`spec::Policy`,
//! `spec::SpecErrors`, ...) as well as at the crate root.

mod hooks;
mod kubernetes;
mod metrics;
mod policy;
mod traffic;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::document::{deserialize_all, SourceDoc};
pub use crate::document::{parse_document, SpecError, SpecErrors};
use crate::duration::HumanDuration;
pub use hooks::{
    Hooks, Notification, NotificationEvent, NotificationFormat, NotificationSpec, SecretRef,
    WaitAction, WaitLimit, WaitLimitSpec, Webhook, WebhookSpec, WebhookType, DEFAULT_GATE_TIMEOUT,
    DEFAULT_NOTIFICATION_TIMEOUT, DEFAULT_RETRY_FOR, DEFAULT_WEBHOOK_TIMEOUT,
};
pub use kubernetes::{
    is_label, is_object_name, HealthSpec, KubernetesTraffic, VersionNames, DEFAULT_HEALTH_DEADLINE,
    GATEWAY_MAX_WEIGHT,
};
pub use metrics::{
    is_label_name, BusinessMetric, Direction, MetricsProvider, MetricsSpec, OnMetricsUnavailable,
    Preset, PrometheusSpec, ScrapeSpec, ThresholdMetric, TlsSpec, VersionValues,
    RESERVED_METRIC_NAMES,
};
pub use policy::{default_error_delta, Analysis, Guardrails, Margins, Policy, Rollback, Stage};
pub use traffic::{
    integer_split, AlbTraffic, HaproxyTraffic, IntegerSplit, NginxTraffic, ALB_MAX_WEIGHT,
    HAPROXY_MAX_WEIGHT,
};

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
    /// Where the judges' numbers come from (default: the traffic layer's
    /// own counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
    /// `enforce` (the default: the weight follows the decisions) or
    /// `advisory` (decisions are recorded as recommendations; the weight is
    /// never moved).
    #[serde(default)]
    pub mode: Mode,
    /// How a failed canary's traffic goes back to stable: at once (the
    /// default) or in steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackSpec>,
    /// HTTP hooks called at points of the rollout (`canary serve`): checks,
    /// gates, a kill switch, the outcome, every event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
    /// Where chosen events are sent (generic JSON or Slack), delivered at
    /// least once (`canary serve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationSpec>,
    /// How long a pause that waits for a person (by hand, a `pause: true`
    /// stage, a stage timeout, a guardrail) may last, and what then
    /// (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_timeout: Option<WaitLimitSpec>,
    /// How long the rollout may wait at a webhook gate, and what then
    /// (default: 1h, then abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_timeout: Option<WaitLimitSpec>,
}

/// `rollback`: how a failed canary's traffic goes back to stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackSpec {
    /// `immediate` (the default: the canary's weight goes to 0 at once) or
    /// `gradual` (through `steps`, one every `step_interval`).
    #[serde(default)]
    pub mode: RollbackMode,
    /// `gradual`: the canary weights to step down through, decreasing and
    /// ending at 0, e.g. `[50, 25, 10, 0]`; steps at or above the weight the
    /// canary had when it failed are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<f64>>,
    /// `gradual`: how long each step holds (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_interval: Option<HumanDuration>,
}

/// How a rollback moves the weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackMode {
    /// All of the canary's traffic to stable at once.
    #[default]
    Immediate,
    /// Step by step, so a cold stable side is not handed everything at
    /// once. An abort is still immediate.
    Gradual,
}

/// Whether a live rollout carries out its decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The weight follows the decisions.
    #[default]
    Enforce,
    /// The analysis runs and each decision is recorded as a recommendation,
    /// but no weight is ever set: for watching the judge before trusting it.
    Advisory,
}

impl Mode {
    /// `enforce` or `advisory`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Advisory => "advisory",
        }
    }
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
    /// Percent of the traffic kept on the stable version while a stage of
    /// weight 100 is judged, in [0, 50) (default 0: off): the canary gets
    /// 100 − holdback % until that stage passes, then 100 %. The stable
    /// share keeps the comparison concurrent, so drift that moves both
    /// versions together is not blamed on the canary; but a small share
    /// gives the stage little power against a fault that appears only
    /// there (docs/records/2026-12-07-holdback.md). 0 routes 100 % during
    /// the stage and compares with the baseline seen in earlier stages.
    pub holdback: f64,
    /// Absolute limits the canary must meet whatever the baseline does.
    pub guardrails: GuardrailsSpec,
    /// Differences too small to matter: the tests look for harm beyond them.
    pub margins: MarginsSpec,
    /// What happens when the metrics cannot be read for
    /// `metrics_unavailable_after` looks in a row: `pause` (hold until they
    /// are back) or `rollback`.
    pub on_metrics_unavailable: OnMetricsUnavailable,
    /// Looks in a row without numbers before `on_metrics_unavailable`
    /// applies (default 3); before that, time passes and nothing is
    /// promoted.
    pub metrics_unavailable_after: u32,
    /// The traffic the service is expected to get, requests per second
    /// (both versions): `canary validate` then warns about every stage that
    /// cannot gather its `min_requests` before its timeout (`canary plan`
    /// says more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_rate: Option<f64>,
}

/// Margins of practical significance, as written (`analysis.margins`): a
/// canary is only "worse" when it is worse by more than these. A
/// difference within a margin may be statistically clear (at high traffic
/// a 15 µs difference is) and still harmless. The `sequential` judge tests
/// against the margin (its false-alarm guarantee is then for "worse by
/// more than the margin"); at 0 the tests are the plain ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarginsSpec {
    /// A latency increase up to this fraction is harmless (default 0).
    pub latency_relative: f64,
    /// A latency increase up to this many ms is harmless (default 1).
    pub latency_ms: f64,
    /// An error-rate increase up to this fraction of the baseline's rate is
    /// harmless (default 0).
    pub error_relative: f64,
    /// An error-rate increase up to this absolute rate is harmless
    /// (default 0).
    pub error_absolute: f64,
}

impl Default for MarginsSpec {
    fn default() -> Self {
        Self {
            latency_relative: 0.0,
            latency_ms: 1.0,
            error_relative: 0.0,
            error_absolute: 0.0,
        }
    }
}

/// Absolute limits on the canary, as written (`analysis.guardrails`).
///
/// The judges compare the canary with the stable version; a guardrail does
/// not: a stage never passes while the canary's numbers over the stage break
/// one, even when the stable version is as bad (a broken release into a
/// broken world). The rollout pauses instead and says which limit and by how
/// much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsSpec {
    /// Highest canary error rate over a stage that may pass, in [0, 1]
    /// (default 0.1; 1 turns the guardrail off).
    pub max_error_rate: f64,
    /// Highest canary p99 latency over a stage that may pass, ms (default:
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_p99_ms: Option<f64>,
}

/// The default `analysis.holdback`: percent of traffic kept on stable while
/// the 100 % stage is judged. Off: at 2, 5 and 10 % the 3-minute 100 % stage
/// of the default policy caught 1–3 % of faults that appear only there,
/// against 99 % with the frozen baseline (docs/records/2026-12-07-holdback.md).
pub const DEFAULT_HOLDBACK: f64 = 0.0;

/// The default absolute ceiling on the canary's error rate over a stage.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.1;

impl Default for GuardrailsSpec {
    fn default() -> Self {
        Self {
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            max_latency_p99_ms: None,
        }
    }
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
            holdback: DEFAULT_HOLDBACK,
            guardrails: GuardrailsSpec::default(),
            margins: MarginsSpec::default(),
            on_metrics_unavailable: OnMetricsUnavailable::default(),
            metrics_unavailable_after: 3,
            expected_rate: None,
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

/// How the `sequential` judge carries evidence from stage to stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AcrossStages {
    /// One e-process over the whole rollout: the product of the stages'
    /// e-values. A healthy early phase drives it below 1, and a fault that
    /// starts later must first pay off that debt.
    #[default]
    Product,
    /// A mixture of e-processes, one started at each stage's start (the
    /// first of them is the product): no evidence debt.
    Restart,
}

/// Options of the `sequential` judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequentialOptions {
    /// Concentration of the Beta mixture of the Poisson count test, when
    /// `ratio_prior_sd` is null (and always in `canary analyze`).
    pub k: f64,
    /// The count test's mixture concentration is chosen per stage so that
    /// the mixture's standard deviation of ln(error-rate ratio) is this:
    /// k = 1 / (sd² ρ(1 − ρ)) at the stage's weight ρ (at 100 %, at the
    /// baseline error rate tested against). Keeps large ratios plausible at
    /// high weights, where a fixed k makes the mixture narrow. Default
    /// null: the fixed `k` at every stage.
    pub ratio_prior_sd: Option<f64>,
    /// How evidence carries from stage to stage.
    pub across_stages: AcrossStages,
    /// `restart`: the error test's mixture weight on the e-process carried
    /// from the first stage (the product); the rest is shared by the
    /// e-processes restarted at the later stages' starts, in proportion to
    /// their stages' weights. 1 is `product`.
    pub carried_weight: f64,
    /// `restart`: the same for the latency mean test.
    pub latency_carried_weight: f64,
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
            ratio_prior_sd: None,
            across_stages: AcrossStages::default(),
            carried_weight: 0.7,
            latency_carried_weight: 1.0,
            one_sided: true,
            combine: Combine::default(),
            evidence_mode: false,
            tolerated_error_ratio: 1.5,
            tolerated_latency_ratio: 1.1,
        }
    }
}

/// Where live traffic is sent and read: the built-in proxy's upstreams, a
/// simulated service, or a traffic layer the user runs (nginx, HAProxy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// What moves the weight and counts the requests (default: `proxy`).
    #[serde(default)]
    pub provider: TrafficProvider,
    /// `proxy`: address the proxy listens on, e.g. `127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen: String,
    /// `proxy`: URL of the stable version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stable: String,
    /// `proxy`: URL of the canary version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canary: String,
    /// `simulated`: the built-in scenario that draws the traffic (default
    /// `healthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// `simulated`: requests per second, both versions together (default:
    /// the scenario's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// `simulated`: the seed of the draws (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `nginx`: the upstream canary writes and how nginx is reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxTraffic>,
    /// `haproxy`: the runtime API and the servers whose weights are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<HaproxyTraffic>,
    /// `alb`: the listener (or rule) and the two target groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alb: Option<AlbTraffic>,
    /// `gateway-api`, `istio`, `ingress-nginx`, `smi`: the cluster, the
    /// object canary sets and its two backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTraffic>,
    /// What must be healthy before the start and before each stage (the
    /// Deployments, an HTTP probe), and how long to wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
}

/// What carries a live rollout's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficProvider {
    /// The built-in proxy: `listen`, `stable` and `canary`.
    #[default]
    Proxy,
    /// A simulated service drawn from a scenario on the wall clock (for
    /// demos, load tests and trying the API): `scenario`,
    /// `requests_per_second`, `seed`.
    Simulated,
    /// nginx: a weighted upstream in an include file canary owns, checked
    /// with `nginx -t` and reloaded (`traffic.nginx`). The numbers come
    /// from the `metrics` section.
    Nginx,
    /// HAProxy: server weights set over the runtime API, no reload
    /// (`traffic.haproxy`); the numbers from HAProxy's own per-server
    /// counters unless a `metrics` section says otherwise.
    Haproxy,
    /// An AWS Application Load Balancer: the weights of two target groups
    /// in a listener's (or rule's) forward action, set through the AWS API
    /// (`traffic.alb`). The numbers come from the `metrics` section.
    Alb,
    /// Kubernetes Gateway API: the weights of an HTTPRoute rule's two
    /// backendRefs, header-match rules for A/B routes
    /// (`traffic.kubernetes`).
    #[serde(rename = "gateway-api")]
    GatewayApi,
    /// Istio: the weights of a VirtualService route's two destinations,
    /// header and cookie match routes for A/B (`traffic.kubernetes`).
    Istio,
    /// ingress-nginx: the canary Ingress's `canary-weight`,
    /// `canary-by-header` and `canary-by-cookie` annotations
    /// (`traffic.kubernetes`).
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
    /// SMI: the weights of a TrafficSplit's two backends (v1alpha4,
    /// `traffic.kubernetes`).
    Smi,
}

impl TrafficProvider {
    /// Whether the provider is one of the Kubernetes ones.
    pub fn is_kubernetes(self) -> bool {
        matches!(
            self,
            TrafficProvider::GatewayApi
                | TrafficProvider::Istio
                | TrafficProvider::IngressNginx
                | TrafficProvider::Smi
        )
    }

    /// The provider's name as written.
    pub fn name(self) -> &'static str {
        match self {
            TrafficProvider::Proxy => "proxy",
            TrafficProvider::Simulated => "simulated",
            TrafficProvider::Nginx => "nginx",
            TrafficProvider::Haproxy => "haproxy",
            TrafficProvider::Alb => "alb",
            TrafficProvider::GatewayApi => "gateway-api",
            TrafficProvider::Istio => "istio",
            TrafficProvider::IngressNginx => "ingress-nginx",
            TrafficProvider::Smi => "smi",
        }
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
            metrics: None,
            mode: Mode::Enforce,
            rollback: None,
            webhooks: Vec::new(),
            notifications: Vec::new(),
            pause_timeout: None,
            gate_timeout: None,
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
}

#[cfg(test)]
mod tests;
