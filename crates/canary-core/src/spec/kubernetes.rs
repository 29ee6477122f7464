//! The Kubernetes traffic layers (`gateway-api`, `istio`, `ingress-nginx`,
//! `smi`): the `traffic.kubernetes` section they share, the readiness
//! check of the two Deployments, and the HTTP health probe any provider
//! can use (`traffic.health`). Checked here, with no I/O, so that a build
//! without the Kubernetes client still validates these specs.

use serde::{Deserialize, Serialize};

use super::policy::Findings;
use crate::duration::HumanDuration;

/// `traffic.kubernetes`: which object canary changes, in which cluster and
/// namespace, and which of its backends are the two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTraffic {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The namespace of the objects (default: the context's namespace, or
    /// the pod's in a cluster, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `gateway-api`: the HTTPRoute (gateway.networking.k8s.io/v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<String>,
    /// `istio`: the VirtualService (networking.istio.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// `ingress-nginx`: the canary Ingress (the one with the canary
    /// Service as its backend; the stable Ingress is not touched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// `smi`: the TrafficSplit (split.smi-spec.io/v1alpha4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split: Option<String>,
    /// The stable backend: a Service name (`gateway-api`, `smi`), or an
    /// Istio destination's subset, or its host when it has no subset.
    /// Not used by `ingress-nginx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The canary backend, as `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// `istio`: the name of the HTTP route to set (default: the first
    /// route with both destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// A/B route: a request header whose value forces a version
    /// (`canary`/`stable`; ingress-nginx: `always`/`never`). Default
    /// `x-canary`; `""` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_header: Option<String>,
    /// A/B route: a cookie that forces a version (`istio`, `ingress-nginx`;
    /// the Gateway API and SMI match no cookies, and refuse one written
    /// here). Default `canary`; `""` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_cookie: Option<String>,
    /// How long one API call may take (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

impl KubernetesTraffic {
    /// The A/B header, lower case, unless turned off.
    pub fn header(&self) -> Option<String> {
        let h = self.route_header.as_deref().unwrap_or("x-canary");
        (!h.is_empty()).then(|| h.to_ascii_lowercase())
    }

    /// The A/B cookie, unless turned off.
    pub fn cookie(&self) -> Option<String> {
        let c = self.route_cookie.as_deref().unwrap_or("canary");
        (!c.is_empty()).then(|| c.to_string())
    }
}

/// `traffic.health`: what must be healthy before the rollout starts and
/// before each stage. Not healthy: the weight is held (time passes, nothing
/// advances); still not healthy after `deadline`, the rollout pauses with
/// the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// The two versions' Deployments (Kubernetes providers): each needs
    /// `readyReplicas` equal to `replicas` and its `observedGeneration`
    /// at its `generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<VersionNames>,
    /// An HTTP URL per version that must answer 2xx (any provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<VersionNames>,
    /// How long to hold for health before pausing (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<HumanDuration>,
    /// How long one probe may take (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// One name (or URL) per version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionNames {
    /// The stable version's.
    pub stable: String,
    /// The canary's.
    pub canary: String,
}

/// The default `traffic.health.deadline`.
pub const DEFAULT_HEALTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The largest Gateway API backendRef weight.
pub const GATEWAY_MAX_WEIGHT: u32 = 1_000_000;

/// Which Kubernetes object a provider changes, as its field is named.
pub(super) fn object_field(provider: &str) -> &'static str {
    match provider {
        "gateway-api" => "http_route",
        "istio" => "virtual_service",
        "ingress-nginx" => "ingress",
        _ => "traffic_split",
    }
}

/// Whether `s` is a Kubernetes object name (an RFC 1123 subdomain).
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether `s` is a namespace or Service name (an RFC 1123 label).
pub fn is_label(s: &str) -> bool {
    is_object_name(s) && s.len() <= 63 && !s.contains('.')
}

/// Checks `traffic.kubernetes` for a Kubernetes `provider`, and that every
/// weight the rollout can set (stages, rollback steps) is one the
/// provider's object can hold.
pub(super) fn check_kubernetes(
    provider: &str,
    k: &KubernetesTraffic,
    weights: &[(String, f64)],
    found: &mut Findings,
) {
    let path = |f: &str| format!("traffic.kubernetes.{f}");
    let own = object_field(provider);
    for (field, v) in [
        ("http_route", &k.http_route),
        ("virtual_service", &k.virtual_service),
        ("ingress", &k.ingress),
        ("traffic_split", &k.traffic_split),
    ] {
        match (field == own, v) {
            (true, None) => found.add(
                path(field),
                "(missing)".into(),
                format!("`provider: {provider}` needs the name of the object canary sets"),
            ),
            (true, Some(n)) if !is_object_name(n) => found.add(
                path(field),
                format!("{n:?}"),
                "must be a Kubernetes object name (lower-case letters, digits, `-`, `.`)".into(),
            ),
            (false, Some(_)) => found.add(
                path(field),
                "(given)".into(),
                format!("not for `provider: {provider}` (it sets `{own}`)"),
            ),
            _ => {}
        }
    }
    if let Some(ns) = &k.namespace {
        if !is_label(ns) {
            found.add(
                path("namespace"),
                format!("{ns:?}"),
                "must be a namespace name (lower-case letters, digits, `-`)".into(),
            );
        }
    }
    for (field, v) in [("kubeconfig", &k.kubeconfig), ("context", &k.context)] {
        if let Some(v) = v {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                found.add(
                    path(field),
                    format!("{v:?}"),
                    "must not be empty or hold control characters".into(),
                );
            }
        }
    }
    if provider == "ingress-nginx" {
        for (field, v) in [("stable", &k.stable), ("canary", &k.canary)] {
            if v.is_some() {
                found.add(
                    path(field),
                    "(given)".into(),
                    "not for `provider: ingress-nginx`: the canary Ingress's backend is the \
                     canary, the other Ingress stable"
                        .into(),
                );
            }
        }
    } else {
        for (field, v) in [("stable", &k.stable), ("canary", &k.canary)] {
            match v {
                None => found.add(
                    path(field),
                    "(missing)".into(),
                    format!("`provider: {provider}` needs the {field} backend's name"),
                ),
                Some(n) if !is_object_name(n) => found.add(
                    path(field),
                    format!("{n:?}"),
                    "must be a Service (or Istio subset or host) name".into(),
                ),
                _ => {}
            }
        }
        if k.stable.is_some() && k.stable == k.canary {
            found.add(
                path("canary"),
                format!("{:?}", k.canary.as_deref().unwrap_or_default()),
                "is the stable backend too: the versions need a backend each".into(),
            );
        }
    }
    if k.route.is_some() && provider != "istio" {
        found.add(
            path("route"),
            "(given)".into(),
            format!("only for `provider: istio`; this is `{provider}`"),
        );
    }
    if let Some(h) = &k.route_header {
        let ok = h.is_empty()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            found.add(
                path("route_header"),
                format!("{h:?}"),
                "must be a header name of letters, digits, `-` and `_` (or \"\" for none)".into(),
            );
        }
    }
    if let Some(c) = &k.route_cookie {
        let ok = c.is_empty() || c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            found.add(
                path("route_cookie"),
                format!("{c:?}"),
                "must be a cookie name of letters, digits and `_` (or \"\" for none)".into(),
            );
        } else if !c.is_empty() && matches!(provider, "gateway-api" | "smi") {
            found.add(
                path("route_cookie"),
                format!("{c:?}"),
                format!("`{provider}` cannot match a cookie: set \"\" (the header still works)"),
            );
        }
    }
    if k.route_header.as_deref().is_some_and(|h| !h.is_empty()) && provider == "smi" {
        found.add(
            path("route_header"),
            "(given)".into(),
            "an SMI TrafficSplit has no header routes: set \"\"".into(),
        );
    }
    if let Some(t) = k.timeout.filter(|t| t.0.is_zero()) {
        found.add(
            path("timeout"),
            t.to_string(),
            "must be longer than 0s".into(),
        );
    }
    for (p, w) in weights {
        let w = *w;
        let whole = (w - w.round()).abs() < 1e-9;
        match provider {
            "istio" if !whole => found.add(
                p.clone(),
                format!("{w}"),
                "Istio's route weights are whole percentages summing to 100: use a whole \
                 number"
                    .into(),
            ),
            "ingress-nginx" | "gateway-api" | "smi"
                if (w * 100.0 - (w * 100.0).round()).abs() > 1e-6 =>
            {
                found.add(
                    p.clone(),
                    format!("{w}"),
                    format!("`{provider}` weights are integers: use at most two decimals"),
                )
            }
            _ => {}
        }
    }
}

/// Checks `traffic.health`; `kubernetes` says whether the provider is one
/// of the Kubernetes ones (only those can check Deployments).
pub(super) fn check_health(h: &HealthSpec, provider: &str, kubernetes: bool, found: &mut Findings) {
    if h.deployments.is_none() && h.http.is_none() {
        found.add(
            "traffic.health".into(),
            "(empty)".into(),
            "needs `deployments` (Kubernetes providers) or `http`".into(),
        );
    }
    if let Some(d) = &h.deployments {
        if !kubernetes {
            found.add(
                "traffic.health.deployments".into(),
                "(given)".into(),
                format!(
                    "only for the Kubernetes providers (gateway-api, istio, ingress-nginx, smi); \
                     this is `{provider}`: use `http`"
                ),
            );
        }
        for (side, n) in [("stable", &d.stable), ("canary", &d.canary)] {
            if !is_object_name(n) {
                found.add(
                    format!("traffic.health.deployments.{side}"),
                    format!("{n:?}"),
                    "must be a Deployment name".into(),
                );
            }
        }
    }
    if let Some(u) = &h.http {
        for (side, url) in [("stable", &u.stable), ("canary", &u.canary)] {
            if let Err(why) = super::policy::check_http_url(url) {
                found.add(
                    format!("traffic.health.http.{side}"),
                    format!("{url:?}"),
                    format!("{why}: write an http:// URL, e.g. http://10.0.0.11:8080/healthz"),
                );
            }
        }
    }
    for (field, t) in [("deadline", h.deadline), ("timeout", h.timeout)] {
        if let Some(t) = t.filter(|t| t.0.is_zero()) {
            found.add(
                format!("traffic.health.{field}"),
                t.to_string(),
                "must be longer than 0s".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_object_name("checkout-canary"));
        assert!(is_object_name("a.b-c"));
        assert!(!is_object_name("Checkout"));
        assert!(!is_object_name("-a"));
        assert!(!is_object_name("a..b"));
        assert!(!is_object_name(""));
        assert!(is_label("shop"));
        assert!(!is_label("a.b"));
    }
}
