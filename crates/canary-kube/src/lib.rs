//! Kubernetes traffic layers: canary sets the split between the stable and
//! canary versions in a Gateway API `HTTPRoute`, an Istio
//! `VirtualService`, ingress-nginx's canary `Ingress` annotations or an SMI
//! `TrafficSplit`, through the kube client, and counts a weight as applied
//! only once it reads it back. It also checks that both versions'
//! Deployments are ready.
//!
//! # Guarantees
//! - Every write touches only the fields canary owns (the two weights, its
//!   A/B routes, its annotations): a JSON patch (or, for annotations, a
//!   JSON merge patch) with the field manager `canary`; everything else in
//!   the object is left as it was.
//! - Every write carries the `resourceVersion` it was computed from: if
//!   the object changed meanwhile the API server refuses it (409) and
//!   canary reads it again and recomputes, up to [`CONFLICT_RETRIES`]
//!   times in one call.
//! - API errors become [`ActuatorError`]s that say what to do: 403 names
//!   the verb and resource canary lacks, 404 the object; 429, 5xx and
//!   connection failures are transient (retried on later ticks), the rest
//!   permanent (the rollout pauses).
//!
//! The objects are read as dynamic objects (no CRD crates): their shapes
//! are handled as JSON in [`object`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod object;
pub mod testing;

use std::time::Duration;

use canary_core::spec::{KubernetesTraffic, VersionNames};
use canary_core::TrafficProvider;
use canary_engine::{ActuatorError, TrafficActuator};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
pub use object::{Kind, Split};
use serde_json::Value;

/// How many times one weight change re-reads and retries after a 409.
pub const CONFLICT_RETRIES: usize = 5;

/// The field manager of canary's writes.
pub const FIELD_MANAGER: &str = "canary";

/// The Kubernetes provider a spec names, if it names one.
pub fn kind_of(provider: TrafficProvider) -> Option<Kind> {
    match provider {
        TrafficProvider::GatewayApi => Some(Kind::GatewayApi),
        TrafficProvider::Istio => Some(Kind::Istio),
        TrafficProvider::IngressNginx => Some(Kind::IngressNginx),
        TrafficProvider::Smi => Some(Kind::Smi),
        _ => None,
    }
}

/// Why the client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The kubeconfig could not be read or parsed, or lacks the context.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Neither a kubeconfig nor the in-cluster service account was found.
    #[error("no Kubernetes configuration: {0}")]
    Infer(String),
    /// The client could not be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// The kubeconfig file the spec (or `KUBECONFIG`) names, if any.
fn kubeconfig_path(spec: &KubernetesTraffic) -> Option<String> {
    spec.kubeconfig.clone().or_else(|| {
        std::env::var("KUBECONFIG")
            .ok()
            .and_then(|v| v.split(':').find(|p| !p.is_empty()).map(str::to_string))
    })
}

/// Reads and parses the kubeconfig the spec names (`kubeconfig`, else
/// `KUBECONFIG`), and checks that it has the spec's context: what
/// `canary validate` can check without a cluster. `Ok` when there is no
/// file to check (the default chain then applies at run time).
///
/// # Errors
/// The file does not exist, does not parse, or lacks the context.
pub fn check_kubeconfig(spec: &KubernetesTraffic) -> Result<(), ConfigError> {
    let Some(path) = kubeconfig_path(spec) else {
        return Ok(());
    };
    let kc = read_kubeconfig(&path)?;
    check_context(&kc, spec, &path)
}

fn read_kubeconfig(path: &str) -> Result<Kubeconfig, ConfigError> {
    Kubeconfig::read_from(path).map_err(|e| ConfigError::Kubeconfig {
        path: path.into(),
        message: chain(&e),
    })
}

fn check_context(kc: &Kubeconfig, spec: &KubernetesTraffic, path: &str) -> Result<(), ConfigError> {
    let want = spec.context.clone().or_else(|| kc.current_context.clone());
    let names: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
    match want {
        Some(w) if names.contains(&w.as_str()) => Ok(()),
        Some(w) => Err(ConfigError::Kubeconfig {
            path: path.into(),
            message: format!(
                "has no context `{w}` (it has: {})",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
        }),
        None => Err(ConfigError::Kubeconfig {
            path: path.into(),
            message: "has no current-context; set traffic.kubernetes.context".into(),
        }),
    }
}

/// The client and namespace the spec's settings give: its kubeconfig (or
/// `KUBECONFIG`, `~/.kube/config`) and context, else the in-cluster service
/// account; the namespace as written, else the context's (or the pod's).
///
/// # Errors
/// [`ConfigError`] naming the file and what is wrong with it.
pub async fn connect(spec: &KubernetesTraffic) -> Result<(Client, String), ConfigError> {
    let timeout = spec.timeout.map_or(Duration::from_secs(10), |t| t.0);
    let mut config = match kubeconfig_path(spec) {
        Some(path) => {
            let kc = read_kubeconfig(&path)?;
            check_context(&kc, spec, &path)?;
            let opts = KubeConfigOptions {
                context: spec.context.clone(),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| ConfigError::Kubeconfig {
                    path,
                    message: chain(&e),
                })?
        }
        None if spec.context.is_some() => {
            let opts = KubeConfigOptions {
                context: spec.context.clone(),
                ..KubeConfigOptions::default()
            };
            Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| ConfigError::Infer(chain(&e)))?
        }
        None => Config::infer()
            .await
            .map_err(|e| ConfigError::Infer(chain(&e)))?,
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // The client's own retries (up to 15, backing off to minutes) would
    // hold a tick far longer than its interval: a 429 or 503 is transient
    // here instead, retried on the next tick.
    config.default_retry = false;
    let ns = spec
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| ConfigError::Client(chain(&e)))?;
    Ok((client, ns))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// What a failed call was, for messages: the verb, the resource and the
/// object.
struct Call<'a> {
    verb: &'a str,
    /// `plural.group` (`deployments.apps`, `httproutes.gateway.networking.k8s.io`).
    resource: String,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

/// An API error as an actuator error; `Err(())` for a 409 Conflict (the
/// caller re-reads and retries).
fn api_error(call: &Call<'_>, e: kube::Error) -> Result<ActuatorError, ()> {
    let obj = format!("{} {}/{}", call.kind, call.namespace, call.name);
    match e {
        kube::Error::Api(s) => {
            let m = format!(
                "Kubernetes: {} {obj}: {} {}: {}",
                call.verb, s.code, s.reason, s.message
            );
            Ok(match s.code {
                409 => return Err(()),
                403 => ActuatorError::permanent(format!(
                    "Kubernetes: forbidden: canary's account may not `{}` {} in namespace \
                     `{}` (grant it in the Role, see docs/kubernetes.md): {}",
                    call.verb, call.resource, call.namespace, s.message
                )),
                404 => ActuatorError::permanent(format!(
                    "Kubernetes: {obj} does not exist (or the API server does not serve {}: \
                     is its CRD installed?): {}",
                    call.resource, s.message
                )),
                401 => ActuatorError::permanent(format!(
                    "Kubernetes: {} {obj}: unauthorized (the credentials were refused): {}",
                    call.verb, s.message
                )),
                429 | 500..=599 => ActuatorError::transient(m),
                _ => ActuatorError::permanent(m),
            })
        }
        other => Ok(ActuatorError::transient(format!(
            "Kubernetes: {} {obj}: {}",
            call.verb,
            chain(&other)
        ))),
    }
}

/// One rollout's Kubernetes traffic layer.
pub struct KubeTraffic {
    kind: Kind,
    spec: KubernetesTraffic,
    client: Option<(Client, String)>,
}

impl std::fmt::Debug for KubeTraffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTraffic")
            .field("kind", &self.kind)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl KubeTraffic {
    /// The layer the spec names; the client is configured on first use.
    pub fn new(kind: Kind, spec: &KubernetesTraffic) -> Self {
        Self {
            kind,
            spec: spec.clone(),
            client: None,
        }
    }

    /// The same with a client and namespace made by the caller.
    pub fn with_client(
        kind: Kind,
        spec: &KubernetesTraffic,
        client: Client,
        namespace: &str,
    ) -> Self {
        Self {
            client: Some((client, namespace.to_string())),
            ..Self::new(kind, spec)
        }
    }

    /// The object canary sets, by name.
    pub fn object_name(&self) -> &str {
        let s = &self.spec;
        match self.kind {
            Kind::GatewayApi => s.http_route.as_deref(),
            Kind::Istio => s.virtual_service.as_deref(),
            Kind::IngressNginx => s.ingress.as_deref(),
            Kind::Smi => s.traffic_split.as_deref(),
        }
        .unwrap_or_default()
    }

    async fn client(&mut self) -> Result<(Client, String), ActuatorError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = connect(&self.spec)
            .await
            .map_err(|e| ActuatorError::permanent(format!("Kubernetes: {e}")))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    fn resource(&self) -> ApiResource {
        let (group, version, plural) = self.kind.resource();
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: self.kind.object_kind().into(),
            plural: plural.into(),
        }
    }

    fn call<'a>(&'a self, verb: &'a str, ns: &'a str) -> Call<'a> {
        let (group, _, plural) = self.kind.resource();
        Call {
            verb,
            resource: format!("{plural}.{group}"),
            kind: self.kind.object_kind(),
            namespace: ns,
            name: self.object_name(),
        }
    }

    async fn api(&mut self) -> Result<(Api<DynamicObject>, String), ActuatorError> {
        let (client, ns) = self.client().await?;
        Ok((Api::namespaced_with(client, &ns, &self.resource()), ns))
    }

    /// The object as the API server has it now.
    ///
    /// # Errors
    /// The call failed (see the crate's guarantees).
    pub async fn object(&mut self) -> Result<Value, ActuatorError> {
        let (api, ns) = self.api().await?;
        let name = self.object_name().to_string();
        let got = api.get(&name).await.map_err(|e| {
            api_error(&self.call("get", &ns), e).unwrap_or_else(|()| {
                ActuatorError::transient(format!("Kubernetes: get {name}: conflict"))
            })
        })?;
        serde_json::to_value(&got)
            .map_err(|e| ActuatorError::permanent(format!("Kubernetes: {name}: {e}")))
    }

    fn object_error(&self, ns: &str, e: &object::ObjectError) -> ActuatorError {
        ActuatorError::permanent(format!(
            "Kubernetes: {} {ns}/{}: {e}",
            self.kind.object_kind(),
            self.object_name()
        ))
    }

    /// The weights the object holds now.
    ///
    /// # Errors
    /// The call failed, or the object lacks the two versions' backends.
    pub async fn split(&mut self) -> Result<Split, ActuatorError> {
        let obj = self.object().await?;
        let ns = self.namespace();
        object::read_split(self.kind, &obj, &self.spec).map_err(|e| self.object_error(&ns, &e))
    }

    fn namespace(&self) -> String {
        self.client
            .as_ref()
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    }

    /// Whether both Deployments are ready: `Ok(Err(why))` when one is not.
    ///
    /// # Errors
    /// The API call failed (403, 404: permanent; 5xx: transient).
    pub async fn deployments_ready(
        &mut self,
        names: &VersionNames,
    ) -> Result<Result<(), String>, ActuatorError> {
        let (client, ns) = self.client().await?;
        let api: Api<Deployment> = Api::namespaced(client, &ns);
        let mut not_ready = Vec::new();
        for (side, name) in [("stable", &names.stable), ("canary", &names.canary)] {
            let d = api.get(name).await.map_err(|e| {
                let call = Call {
                    verb: "get",
                    resource: "deployments.apps".into(),
                    kind: "Deployment",
                    namespace: &ns,
                    name,
                };
                api_error(&call, e).unwrap_or_else(|()| ActuatorError::transient("conflict"))
            })?;
            if let Err(why) = deployment_ready(&d) {
                not_ready.push(format!("{side} Deployment {ns}/{name} {why}"));
            }
        }
        Ok(if not_ready.is_empty() {
            Ok(())
        } else {
            Err(not_ready.join("; "))
        })
    }
}

/// Whether a Deployment is ready: its controller has seen its current
/// generation and every desired replica is ready.
///
/// # Errors
/// Why not, in words.
pub fn deployment_ready(d: &Deployment) -> Result<(), String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Err(format!(
            "has not been seen by its controller yet (observedGeneration {observed} < \
             generation {generation})"
        ));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready != want {
        return Err(format!("has {ready} of {want} replicas ready"));
    }
    Ok(())
}

impl TrafficActuator for KubeTraffic {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        let want = object::split_for(self.kind, percent).map_err(|e| {
            ActuatorError::permanent(format!("Kubernetes: {}: {e}", self.kind.object_kind()))
        })?;
        let (api, ns) = self.api().await?;
        let name = self.object_name().to_string();
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let mut conflicts = 0;
        loop {
            let obj = self.object().await?;
            let change = object::plan(self.kind, &obj, &self.spec, want)
                .map_err(|e| self.object_error(&ns, &e))?;
            let Some(change) = change else { break };
            let sent = match change {
                object::Change::Merge(v) => api.patch(&name, &params, &Patch::Merge(v)).await,
                object::Change::Json(ops) => {
                    let p: json_patch::Patch =
                        serde_json::from_value(Value::Array(ops)).map_err(|e| {
                            ActuatorError::permanent(format!("Kubernetes: a JSON patch: {e}"))
                        })?;
                    api.patch(&name, &params, &Patch::Json::<()>(p)).await
                }
            };
            match sent {
                Ok(_) => break,
                Err(e) => match api_error(&self.call("patch", &ns), e) {
                    Ok(err) => return Err(err),
                    Err(()) => {
                        conflicts += 1;
                        if conflicts > CONFLICT_RETRIES {
                            return Err(ActuatorError::transient(format!(
                                "Kubernetes: {} {ns}/{name} changed under every one of {} \
                                 writes (409 Conflict)",
                                self.kind.object_kind(),
                                conflicts
                            )));
                        }
                    }
                },
            }
        }
        let got = self.split().await?;
        if !got.same_share(want) {
            return Err(ActuatorError::transient(format!(
                "Kubernetes: {} {ns}/{name} reads back {:.2} % to the canary after setting \
                 {percent} %",
                self.kind.object_kind(),
                got.percent()
            )));
        }
        Ok(())
    }
}
