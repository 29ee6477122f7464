//! The traffic layer of one rollout (the built-in proxy, a simulated
//! service, nginx, HAProxy, ALB or a Kubernetes object, chosen by the
//! spec's `traffic.provider`), the health gate in front of it
//! (`traffic.health`), and its metrics
//! source (the layer's own counts, or what `metrics.provider` names:
//! Prometheus, a scrape of each version's `/metrics`). Both seams in one
//! value, so the runner holds one thing per rollout.

use std::net::SocketAddr;
use std::time::Duration;

use canary_core::spec::HealthSpec;
use canary_core::{Pair, Policy, TrafficProvider, VersionStats};
use canary_engine::{ActuatorError, MetricsSource, SourceError, TrafficActuator};
use canary_prometheus::{Source, UnixClock};
use canary_proxy::route::HeaderName;
use canary_proxy::{KeySource, Proxy, ProxyConfig, ProxyHandle, RouteConfig, Upstream};
use canary_sim::live::Clock;
use canary_sim::{Scenario, SimulatedService};
use tokio::sync::oneshot;

/// A rollout's traffic layer and where its numbers come from.
pub struct Driver {
    layer: Layer,
    /// The spec's `metrics` source, when not the layer's own counts.
    source: Option<Source>,
    /// What must be healthy before the weight goes up.
    health: Option<Health>,
}

/// `traffic.health` and how long it has been failing.
struct Health {
    spec: HealthSpec,
    /// When the current failing streak began.
    failing_since: Option<tokio::time::Instant>,
}

/// A rollout's traffic layer.
pub(crate) enum Layer {
    /// The built-in proxy, serving on its own task until dropped.
    Proxy {
        handle: ProxyHandle,
        addr: Option<SocketAddr>,
        /// Dropping it stops the proxy (it drains in-flight requests).
        _stop: oneshot::Sender<()>,
    },
    /// A scenario drawn on the clock.
    Simulated(Box<SimulatedService>),
    /// nginx, through the include file canary owns (numbers from the
    /// `metrics` section: nginx does not count per version).
    Nginx {
        nginx: canary_traffic::Nginx,
        /// The weight nginx last accepted.
        applied: f64,
    },
    /// HAProxy's runtime API, and its per-server counters.
    Haproxy {
        haproxy: canary_traffic::Haproxy,
        stats: canary_traffic::HaproxyStats,
        /// The weight HAProxy last confirmed.
        applied: f64,
    },
    /// An AWS ALB listener's (or rule's) weighted target groups (numbers
    /// from the `metrics` section).
    #[cfg(feature = "alb")]
    Alb {
        alb: Box<canary_alb::Alb>,
        /// The weight last read back from the listener or rule.
        applied: f64,
    },
    /// A Kubernetes object: an HTTPRoute, a VirtualService, a canary
    /// Ingress or a TrafficSplit (numbers from the `metrics` section).
    #[cfg(feature = "kubernetes")]
    Kube {
        kube: Box<canary_kube::KubeTraffic>,
        /// The weight last read back from the object.
        applied: f64,
    },
}

/// Why a build without the `kubernetes` feature cannot drive a Kubernetes
/// provider.
#[cfg(not(feature = "kubernetes"))]
pub(crate) fn kube_not_built(provider: &str) -> String {
    format!(
        "traffic.provider: `{provider}` needs a canary built with the Kubernetes providers \
         (the kube client is not in the default build): cargo build --release --features \
         kubernetes"
    )
}

/// Why a build without the `alb` feature cannot drive an ALB.
#[cfg(not(feature = "alb"))]
pub(crate) const ALB_NOT_BUILT: &str = "traffic.provider: `alb` needs a canary built with the ALB \
     provider (the AWS SDK is not in the default build): cargo build --release --features alb";

/// The scenario a simulated traffic section names, or why not.
pub(crate) fn scenario_of(policy: &Policy) -> Result<Option<Scenario>, String> {
    let Some(t) = &policy.traffic else {
        return Ok(None);
    };
    if t.provider != TrafficProvider::Simulated {
        return Ok(None);
    }
    let name = t.scenario.as_deref().unwrap_or("healthy");
    let mut s = Scenario::built_in(name).ok_or_else(|| {
        format!(
            "traffic.scenario: `{name}` is not a built-in scenario (one of {})",
            canary_sim::BUILT_IN.join(", ")
        )
    })?;
    if let Some(r) = t.requests_per_second {
        s.request_rate = r;
    }
    Ok(Some(s))
}

impl Driver {
    /// Starts the traffic layer `policy.traffic` names. `seed` seeds the
    /// proxy's routing draws; `clock` (time since the rollout began)
    /// drives a simulated service.
    ///
    /// # Errors
    /// Why it cannot start, naming the field (no traffic section, a
    /// listen address in use, an unknown scenario).
    pub async fn start(
        policy: &Policy,
        seed: u64,
        clock: Clock,
        wall: UnixClock,
    ) -> Result<Driver, String> {
        let source = match &policy.metrics {
            Some(m) => Source::for_spec(m, wall, policy.analysis.interval)?,
            None => None,
        };
        let health = policy
            .traffic
            .as_ref()
            .and_then(|t| t.health.clone())
            .map(|spec| Health {
                spec,
                failing_since: None,
            });
        Ok(Driver {
            layer: Layer::start(policy, seed, clock).await?,
            source,
            health,
        })
    }

    /// The weight the traffic layer routes now, as it reports it.
    pub fn actuator_weight(&self) -> f64 {
        self.layer.actuator_weight()
    }

    /// The address the proxy serves on, if a proxy.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.layer.listen_addr()
    }
}

impl Layer {
    async fn start(policy: &Policy, seed: u64, clock: Clock) -> Result<Layer, String> {
        let t = policy.traffic.as_ref().ok_or_else(|| {
            "traffic: required: `provider: proxy` with listen, stable and canary, or `provider: simulated`"
                .to_string()
        })?;
        let section = |name: &str| format!("traffic.{name}: required for `provider: {name}`");
        match t.provider {
            TrafficProvider::Nginx => {
                let n = t.nginx.as_ref().ok_or_else(|| section("nginx"))?;
                Ok(Layer::Nginx {
                    nginx: canary_traffic::Nginx::new(n),
                    applied: 0.0,
                })
            }
            TrafficProvider::Haproxy => {
                let h = t.haproxy.as_ref().ok_or_else(|| section("haproxy"))?;
                Ok(Layer::Haproxy {
                    haproxy: canary_traffic::Haproxy::new(h),
                    stats: canary_traffic::HaproxyStats::new(h),
                    applied: 0.0,
                })
            }
            #[cfg(feature = "alb")]
            TrafficProvider::Alb => {
                let a = t.alb.as_ref().ok_or_else(|| section("alb"))?;
                Ok(Layer::Alb {
                    alb: Box::new(canary_alb::Alb::new(a)),
                    applied: 0.0,
                })
            }
            #[cfg(not(feature = "alb"))]
            TrafficProvider::Alb => Err(ALB_NOT_BUILT.to_string()),
            #[cfg(feature = "kubernetes")]
            TrafficProvider::GatewayApi
            | TrafficProvider::Istio
            | TrafficProvider::IngressNginx
            | TrafficProvider::Smi => {
                let k = t.kubernetes.as_ref().ok_or_else(|| {
                    format!(
                        "traffic.kubernetes: required for `provider: {}`",
                        t.provider.name()
                    )
                })?;
                let kind = canary_kube::kind_of(t.provider)
                    .ok_or_else(|| format!("traffic.provider: `{}`", t.provider.name()))?;
                // A kubeconfig that is missing or does not parse stops the
                // start, before any weight is set.
                canary_kube::check_kubeconfig(k).map_err(|e| format!("traffic.kubernetes: {e}"))?;
                Ok(Layer::Kube {
                    kube: Box::new(canary_kube::KubeTraffic::new(kind, k)),
                    applied: 0.0,
                })
            }
            #[cfg(not(feature = "kubernetes"))]
            TrafficProvider::GatewayApi
            | TrafficProvider::Istio
            | TrafficProvider::IngressNginx
            | TrafficProvider::Smi => Err(kube_not_built(t.provider.name())),
            TrafficProvider::Simulated => {
                let s = scenario_of(policy)?.unwrap_or_else(|| unreachable!("simulated"));
                let seed = t.seed.unwrap_or(1);
                Ok(Layer::Simulated(Box::new(SimulatedService::new(
                    s, seed, clock,
                ))))
            }
            TrafficProvider::Proxy => {
                let listen: SocketAddr = t
                    .listen
                    .parse()
                    .map_err(|_| format!("traffic.listen: `{}` is not ADDR:PORT", t.listen))?;
                let up = |field: &str, url: &str| {
                    Upstream::parse(url).map_err(|e| format!("traffic.{field}: {e}"))
                };
                let mut c =
                    ProxyConfig::new(listen, up("stable", &t.stable)?, up("canary", &t.canary)?);
                // As `canary run` does by default: `x-canary: canary` or the
                // cookie `canary=canary` force a version.
                c.route = RouteConfig {
                    sticky: None,
                    overrides: vec![
                        KeySource::Header(HeaderName::from_static("x-canary")),
                        KeySource::Cookie("canary".into()),
                    ],
                    seed,
                };
                c.connect_timeout = Duration::from_secs(2);
                c.drain_timeout = Duration::from_secs(5);
                let proxy = Proxy::bind(c)
                    .await
                    .map_err(|e| format!("traffic.listen: {listen}: {e}"))?;
                let handle = proxy.handle();
                let addr = proxy.local_addr();
                let (stop, stopped) = oneshot::channel::<()>();
                tokio::spawn(proxy.serve(async move {
                    let _ = stopped.await;
                }));
                Ok(Layer::Proxy {
                    handle,
                    addr,
                    _stop: stop,
                })
            }
        }
    }

    fn actuator_weight(&self) -> f64 {
        match self {
            Layer::Proxy { handle, .. } => handle.weight(),
            Layer::Simulated(s) => s.weight(),
            Layer::Nginx { applied, .. } | Layer::Haproxy { applied, .. } => *applied,
            #[cfg(feature = "alb")]
            Layer::Alb { applied, .. } => *applied,
            #[cfg(feature = "kubernetes")]
            Layer::Kube { applied, .. } => *applied,
        }
    }

    fn listen_addr(&self) -> Option<SocketAddr> {
        match self {
            Layer::Proxy { addr, .. } => *addr,
            Layer::Simulated(_) | Layer::Nginx { .. } | Layer::Haproxy { .. } => None,
            #[cfg(feature = "alb")]
            Layer::Alb { .. } => None,
            #[cfg(feature = "kubernetes")]
            Layer::Kube { .. } => None,
        }
    }
}

impl MetricsSource for Driver {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        if let Some(s) = &mut self.source {
            // The layer's own recorder is still drained, so it holds no
            // more than one tick's requests.
            let _ = self.layer.read_window().await;
            return s.read_window().await;
        }
        self.layer.read_window().await
    }
}

impl MetricsSource for Layer {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        match self {
            Layer::Proxy { handle, .. } => handle.read_window().await,
            Layer::Simulated(s) => s.read_window().await,
            Layer::Haproxy { stats, .. } => stats.read_window().await,
            // Validation requires a metrics section with nginx.
            Layer::Nginx { .. } => Err(SourceError::permanent(
                "nginx does not count requests per version: the spec needs a metrics section",
            )),
            #[cfg(feature = "alb")]
            Layer::Alb { .. } => Err(SourceError::permanent(
                "canary does not read an ALB's counts: the spec needs a metrics section",
            )),
            #[cfg(feature = "kubernetes")]
            Layer::Kube { .. } => Err(SourceError::permanent(
                "canary does not read the mesh's or ingress's counts: the spec needs a metrics \
                 section",
            )),
        }
    }
}

impl Driver {
    /// Whether `traffic.health` holds now: `Ok(Err(why))` when it does not.
    async fn healthy(&mut self) -> Result<Result<(), String>, ActuatorError> {
        let Some(h) = &self.health else {
            return Ok(Ok(()));
        };
        let spec = h.spec.clone();
        let mut why = Vec::new();
        if let Some(names) = &spec.deployments {
            match &mut self.layer {
                #[cfg(feature = "kubernetes")]
                Layer::Kube { kube, .. } => {
                    if let Err(w) = kube.deployments_ready(names).await? {
                        why.push(w);
                    }
                }
                _ => {
                    // Validation allows `deployments` with the Kubernetes
                    // providers only.
                    let _ = names;
                    return Err(ActuatorError::permanent(
                        "traffic.health.deployments: only with a Kubernetes provider",
                    ));
                }
            }
        }
        if let Some(urls) = &spec.http {
            let timeout = spec.timeout.map_or(Duration::from_secs(5), |t| t.0);
            for (side, url) in [("stable", &urls.stable), ("canary", &urls.canary)] {
                if let Err(w) = probe(url.clone(), timeout).await {
                    why.push(format!("{side} health probe {url}: {w}"));
                }
            }
        }
        Ok(if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        })
    }

    /// Before the weight goes up (the start, each stage): holds while
    /// `traffic.health` fails, and refuses for good once it has failed for
    /// its deadline.
    async fn gate(&mut self, percent: f64) -> Result<(), ActuatorError> {
        if self.health.is_none() || percent <= self.actuator_weight() {
            return Ok(());
        }
        let verdict = self.healthy().await?;
        let Some(h) = &mut self.health else {
            return Ok(());
        };
        match verdict {
            Ok(()) => {
                h.failing_since = None;
                Ok(())
            }
            Err(why) => {
                let now = tokio::time::Instant::now();
                let since = *h.failing_since.get_or_insert(now);
                let deadline = h
                    .spec
                    .deadline
                    .map_or(canary_core::spec::DEFAULT_HEALTH_DEADLINE, |d| d.0);
                if now.duration_since(since) >= deadline {
                    h.failing_since = None;
                    Err(ActuatorError::permanent(format!(
                        "not healthy after {} (traffic.health.deadline): {why}",
                        humantime::format_duration(deadline)
                    )))
                } else {
                    Err(ActuatorError::transient(format!(
                        "holding the weight below {percent} % until healthy: {why}"
                    )))
                }
            }
        }
    }
}

/// GETs `url`: `Ok` for a 2xx answer within `timeout`.
async fn probe(url: String, timeout: Duration) -> Result<(), String> {
    let r = tokio::task::spawn_blocking(move || {
        match crate::hooks::plain_agent(timeout).get(&url).call() {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("answered {}", resp.status().as_u16())),
            Err(e) => Err(format!("unreachable: {e}")),
        }
    })
    .await;
    r.unwrap_or_else(|e| Err(format!("the probe failed: {e}")))
}

impl TrafficActuator for Driver {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        self.gate(percent).await?;
        match &mut self.layer {
            Layer::Proxy { handle, .. } => TrafficActuator::set_weight(handle, percent).await,
            Layer::Simulated(s) => s.set_weight(percent).await,
            Layer::Nginx { nginx, applied } => {
                nginx.set_weight(percent).await?;
                *applied = percent;
                Ok(())
            }
            Layer::Haproxy {
                haproxy, applied, ..
            } => {
                haproxy.set_weight(percent).await?;
                *applied = percent;
                Ok(())
            }
            #[cfg(feature = "alb")]
            Layer::Alb { alb, applied } => {
                alb.set_weight(percent).await?;
                *applied = percent;
                Ok(())
            }
            #[cfg(feature = "kubernetes")]
            Layer::Kube { kube, applied } => {
                kube.set_weight(percent).await?;
                *applied = percent;
                Ok(())
            }
        }
    }
}
