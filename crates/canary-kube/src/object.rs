//! What canary changes in each provider's object, as pure functions of the
//! object read (JSON) and the weights wanted: the patch that sets them
//! (touching only the fields canary owns), and the weights read back.
//!
//! Each patch carries the `metadata.resourceVersion` it was computed from,
//! so the API server refuses it (409 Conflict) if the object changed in
//! between; the caller then reads it again and computes a new one.

use canary_core::spec::{integer_split, KubernetesTraffic};
use serde_json::{json, Value};

/// The four Kubernetes providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Gateway API HTTPRoute, `gateway.networking.k8s.io/v1`.
    GatewayApi,
    /// Istio VirtualService, `networking.istio.io/v1`.
    Istio,
    /// ingress-nginx's canary Ingress, `networking.k8s.io/v1`.
    IngressNginx,
    /// SMI TrafficSplit, `split.smi-spec.io/v1alpha4`.
    Smi,
}

impl Kind {
    /// The object's kind, for messages.
    pub fn object_kind(self) -> &'static str {
        match self {
            Kind::GatewayApi => "HTTPRoute",
            Kind::Istio => "VirtualService",
            Kind::IngressNginx => "Ingress",
            Kind::Smi => "TrafficSplit",
        }
    }

    /// `(group, version, plural)` of the object's resource.
    pub fn resource(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::GatewayApi => ("gateway.networking.k8s.io", "v1", "httproutes"),
            Kind::Istio => ("networking.istio.io", "v1", "virtualservices"),
            Kind::IngressNginx => ("networking.k8s.io", "v1", "ingresses"),
            Kind::Smi => ("split.smi-spec.io", "v1alpha4", "trafficsplits"),
        }
    }
}

/// The weights of the two versions as the object holds them (proportions;
/// ingress-nginx: the canary's weight out of `canary-weight-total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The stable backend's weight (ingress-nginx: total − canary).
    pub stable: u64,
    /// The canary backend's weight.
    pub canary: u64,
}

impl Split {
    /// The canary's share, percent.
    pub fn percent(self) -> f64 {
        let total = self.stable + self.canary;
        if total == 0 {
            0.0
        } else {
            100.0 * self.canary as f64 / total as f64
        }
    }

    /// Whether both give the same share.
    pub fn same_share(self, other: Split) -> bool {
        u128::from(self.canary) * u128::from(other.stable + other.canary)
            == u128::from(other.canary) * u128::from(self.stable + self.canary)
    }
}

/// Why the object cannot carry the split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ObjectError(pub String);

/// How a change is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An RFC 6902 JSON patch (its operations).
    Json(Vec<Value>),
    /// An RFC 7386 JSON merge patch.
    Merge(Value),
}

impl Change {
    /// The body as sent.
    pub fn body(&self) -> Value {
        match self {
            Change::Json(ops) => Value::Array(ops.clone()),
            Change::Merge(v) => v.clone(),
        }
    }
}

/// The weights that give `percent` % to the canary in `kind`'s object.
///
/// # Errors
/// `percent` is outside [0, 100], or not a weight the object can hold
/// (Istio: a whole percentage).
pub fn split_for(kind: Kind, percent: f64) -> Result<Split, ObjectError> {
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        return Err(ObjectError(format!(
            "a canary weight of {percent} % is outside 0–100 %"
        )));
    }
    match kind {
        Kind::Istio => {
            if (percent - percent.round()).abs() > 1e-9 {
                return Err(ObjectError(format!(
                    "Istio's route weights are whole percentages summing to 100: {percent} % \
                     cannot be set"
                )));
            }
            let c = percent.round() as u64;
            Ok(Split {
                stable: 100 - c,
                canary: c,
            })
        }
        Kind::IngressNginx => {
            let (c, total) = if (percent - percent.round()).abs() < 1e-9 {
                (percent.round() as u64, 100)
            } else {
                ((percent * 100.0).round() as u64, 10_000)
            };
            Ok(Split {
                stable: total - c,
                canary: c,
            })
        }
        Kind::GatewayApi | Kind::Smi => {
            let s = integer_split(percent, 1, 1, None);
            Ok(Split {
                stable: u64::from(s.stable),
                canary: u64::from(s.canary),
            })
        }
    }
}

/// The object's `metadata.resourceVersion`.
fn resource_version(obj: &Value) -> Result<&str, ObjectError> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| ObjectError("the object has no metadata.resourceVersion".into()))
}

/// A JSON patch that first pins the resourceVersion read (the API server
/// then refuses it with 409 if the object changed since).
fn pinned(obj: &Value, ops: Vec<Value>) -> Result<Option<Change>, ObjectError> {
    if ops.is_empty() {
        return Ok(None);
    }
    let rv = resource_version(obj)?;
    let mut all = vec![json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})];
    all.extend(ops);
    Ok(Some(Change::Json(all)))
}

fn weight_of(v: &Value) -> u64 {
    v.get("weight").and_then(Value::as_u64).unwrap_or(1)
}

/// A `replace` (or `add`, when absent) of `path/weight`.
fn set_weight_op(entry: &Value, path: &str, w: u64) -> Option<Value> {
    match entry.get("weight") {
        Some(old) if old.as_u64() == Some(w) => None,
        Some(_) => Some(json!({"op": "replace", "path": format!("{path}/weight"), "value": w})),
        None => Some(json!({"op": "add", "path": format!("{path}/weight"), "value": w})),
    }
}

fn names(list: &[Value], key: impl Fn(&Value) -> String) -> String {
    let n: Vec<String> = list.iter().map(key).collect();
    joined(&n, ", ")
}

/// `items` joined by `sep`, or `none` when there are none (for messages).
fn joined(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(sep)
    }
}

fn want_names(spec: &KubernetesTraffic) -> (&str, &str) {
    (
        spec.stable.as_deref().unwrap_or_default(),
        spec.canary.as_deref().unwrap_or_default(),
    )
}

/// Where the two versions' entries are in the object: the list's JSON
/// pointer, and each version's index in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    list: String,
    stable: usize,
    canary: usize,
    /// The route or rule holding the list (Gateway API, Istio).
    route: Option<usize>,
}

/// Finds the stable and canary entries.
fn find(kind: Kind, obj: &Value, spec: &KubernetesTraffic) -> Result<Found, ObjectError> {
    let (s, c) = want_names(spec);
    let empty = Vec::new();
    match kind {
        Kind::GatewayApi => {
            let rules = obj
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            let name = |r: &Value| {
                r.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            for (i, rule) in rules.iter().enumerate() {
                let refs = rule
                    .get("backendRefs")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let at = |n: &str| refs.iter().position(|r| name(r) == n);
                if let (Some(si), Some(ci)) = (at(s), at(c)) {
                    check_others(refs, &[si, ci], &name, &format!("rule {i}"))?;
                    return Ok(Found {
                        list: format!("/spec/rules/{i}/backendRefs"),
                        stable: si,
                        canary: ci,
                        route: Some(i),
                    });
                }
            }
            let have: Vec<String> = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let refs = r
                        .get("backendRefs")
                        .and_then(Value::as_array)
                        .unwrap_or(&empty);
                    format!("rule {i}: {}", names(refs, name))
                })
                .collect();
            Err(ObjectError(format!(
                "no rule has both backendRefs `{s}` (stable) and `{c}` (canary); the rules' \
                 backendRefs are: {}",
                joined(&have, "; ")
            )))
        }
        Kind::Istio => {
            let routes = obj
                .pointer("/spec/http")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            let dest_name = |d: &Value| {
                let dest = d.get("destination").unwrap_or(&Value::Null);
                match dest.get("subset").and_then(Value::as_str) {
                    Some(sub) => sub.to_string(),
                    None => dest
                        .get("host")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }
            };
            let is = |d: &Value, n: &str| {
                let got = dest_name(d);
                got == n || got.strip_prefix(n).is_some_and(|r| r.starts_with('.'))
            };
            for (i, route) in routes.iter().enumerate() {
                let rname = route.get("name").and_then(Value::as_str);
                if let Some(want) = &spec.route {
                    if rname != Some(want.as_str()) {
                        continue;
                    }
                }
                let dests = route
                    .get("route")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let at = |n: &str| dests.iter().position(|d| is(d, n));
                if let (Some(si), Some(ci)) = (at(s), at(c)) {
                    if dests.len() != 2 {
                        return Err(ObjectError(format!(
                            "http route {i} has {} destinations ({}); canary splits a route \
                             with exactly the two versions' destinations",
                            dests.len(),
                            names(dests, dest_name)
                        )));
                    }
                    return Ok(Found {
                        list: format!("/spec/http/{i}/route"),
                        stable: si,
                        canary: ci,
                        route: Some(i),
                    });
                }
            }
            let have: Vec<String> = routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let d = r.get("route").and_then(Value::as_array).unwrap_or(&empty);
                    let n = r.get("name").and_then(Value::as_str).unwrap_or("");
                    format!("route {i} {n:?}: {}", names(d, dest_name))
                })
                .collect();
            let which = spec
                .route
                .as_ref()
                .map(|r| format!("named `{r}` "))
                .unwrap_or_default();
            Err(ObjectError(format!(
                "no http route {which}has both destinations `{s}` (stable) and `{c}` (canary) \
                 (a subset, or a host without subset); the routes are: {}",
                joined(&have, "; ")
            )))
        }
        Kind::Smi => {
            let backends = obj
                .pointer("/spec/backends")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            let name = |b: &Value| {
                b.get("service")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let at = |n: &str| backends.iter().position(|b| name(b) == n);
            match (at(s), at(c)) {
                (Some(si), Some(ci)) => {
                    check_others(backends, &[si, ci], &name, "the split")?;
                    Ok(Found {
                        list: "/spec/backends".into(),
                        stable: si,
                        canary: ci,
                        route: None,
                    })
                }
                _ => Err(ObjectError(format!(
                    "its backends do not include both services `{s}` (stable) and `{c}` \
                     (canary); they are: {}",
                    names(backends, name)
                ))),
            }
        }
        Kind::IngressNginx => Err(ObjectError("an Ingress has no backend list".into())),
    }
}

/// Refuses a list where a third entry carries traffic (the split would
/// not be canary's).
fn check_others(
    list: &[Value],
    ours: &[usize],
    name: &impl Fn(&Value) -> String,
    what: &str,
) -> Result<(), ObjectError> {
    let others: Vec<String> = list
        .iter()
        .enumerate()
        .filter(|(i, e)| !ours.contains(i) && weight_of(e) > 0)
        .map(|(_, e)| format!("`{}` (weight {})", name(e), weight_of(e)))
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(ObjectError(format!(
            "{what} also sends traffic to {}; canary splits only between its two backends",
            others.join(", ")
        )))
    }
}

const ANN: &str = "nginx.ingress.kubernetes.io/";

/// The weights the object holds now.
///
/// # Errors
/// The object lacks the two versions' backends (ingress-nginx: is not a
/// canary Ingress yet counts as 0 %).
pub fn read_split(kind: Kind, obj: &Value, spec: &KubernetesTraffic) -> Result<Split, ObjectError> {
    if kind == Kind::IngressNginx {
        let ann = |k: &str| {
            obj.pointer("/metadata/annotations")
                .and_then(|a| a.get(format!("{ANN}{k}")))
                .and_then(Value::as_str)
        };
        if ann("canary") != Some("true") {
            return Ok(Split {
                stable: 100,
                canary: 0,
            });
        }
        let num = |k: &str, default: u64| -> Result<u64, ObjectError> {
            match ann(k) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    ObjectError(format!("annotation {ANN}{k} is {v:?}, not a whole number"))
                }),
            }
        };
        let total = num("canary-weight-total", 100)?;
        let c = num("canary-weight", 0)?.min(total);
        return Ok(Split {
            stable: total - c,
            canary: c,
        });
    }
    let f = find(kind, obj, spec)?;
    let list = obj
        .pointer(&f.list)
        .and_then(Value::as_array)
        .ok_or_else(|| ObjectError("the backends vanished".into()))?;
    Ok(Split {
        stable: weight_of(&list[f.stable]),
        canary: weight_of(&list[f.canary]),
    })
}

/// The patch that makes the object hold `want` and the A/B routes, or
/// `None` when it already does.
///
/// # Errors
/// The object cannot carry the split: no matching backends, a third
/// backend with traffic, an Ingress with no backend.
pub fn plan(
    kind: Kind,
    obj: &Value,
    spec: &KubernetesTraffic,
    want: Split,
) -> Result<Option<Change>, ObjectError> {
    match kind {
        Kind::IngressNginx => plan_ingress(obj, spec, want),
        Kind::Smi => {
            let f = find(kind, obj, spec)?;
            let list = obj
                .pointer(&f.list)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ops = weight_ops(&f, &list, want);
            pinned(obj, ops)
        }
        Kind::GatewayApi => {
            let f = find(kind, obj, spec)?;
            let list = obj
                .pointer(&f.list)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut ops = weight_ops(&f, &list, want);
            if let Some(h) = spec.header() {
                ops.extend(gateway_ab(obj, &f, &list, &h));
            }
            pinned(obj, ops)
        }
        Kind::Istio => {
            let f = find(kind, obj, spec)?;
            let list = obj
                .pointer(&f.list)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut ops = weight_ops(&f, &list, want);
            ops.extend(istio_ab(obj, &f, &list, spec));
            pinned(obj, ops)
        }
    }
}

fn weight_ops(f: &Found, list: &[Value], want: Split) -> Vec<Value> {
    [(f.stable, want.stable), (f.canary, want.canary)]
        .into_iter()
        .filter_map(|(i, w)| set_weight_op(&list[i], &format!("{}/{i}", f.list), w))
        .collect()
}

/// Gateway API A/B rules: for `value` in (canary, stable), a rule with the
/// weighted rule's matches plus `header: value`, sending everything to
/// that version; added when missing. A header match makes a rule more
/// specific than the weighted one, so it takes precedence.
fn gateway_ab(obj: &Value, f: &Found, list: &[Value], header: &str) -> Vec<Value> {
    let empty = Vec::new();
    let rules = obj
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let weighted = f
        .route
        .and_then(|i| rules.get(i))
        .cloned()
        .unwrap_or(Value::Null);
    let mut ops = Vec::new();
    for (value, idx) in [("canary", f.canary), ("stable", f.stable)] {
        let has = rules.iter().any(|r| {
            let m = r.get("matches").and_then(Value::as_array).unwrap_or(&empty);
            !m.is_empty()
                && m.iter().all(|m| {
                    m.get("headers")
                        .and_then(Value::as_array)
                        .is_some_and(|hs| {
                            hs.iter().any(|h| {
                                h.get("name")
                                    .and_then(Value::as_str)
                                    .is_some_and(|n| n.eq_ignore_ascii_case(header))
                                    && h.get("value").and_then(Value::as_str) == Some(value)
                            })
                        })
                })
        });
        if has {
            continue;
        }
        let base = weighted
            .get("matches")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![json!({})]);
        let matches: Vec<Value> = base
            .into_iter()
            .map(|mut m| {
                let hdr = json!({"type": "Exact", "name": header, "value": value});
                match m.get_mut("headers").and_then(Value::as_array_mut) {
                    Some(hs) => hs.push(hdr),
                    None => {
                        if let Some(o) = m.as_object_mut() {
                            o.insert("headers".into(), json!([hdr]));
                        }
                    }
                }
                m
            })
            .collect();
        let mut backend = list[idx].clone();
        if let Some(o) = backend.as_object_mut() {
            o.remove("weight");
        }
        ops.push(json!({"op": "add", "path": "/spec/rules/-", "value": {
            "matches": matches,
            "backendRefs": [backend],
        }}));
    }
    ops
}

/// Istio A/B routes, named `canary-ab-canary` and `canary-ab-stable`,
/// inserted before the weighted route when missing: the weighted route's
/// matches plus the header (and, as another match, the cookie), sending
/// everything to that version's destination.
fn istio_ab(obj: &Value, f: &Found, list: &[Value], spec: &KubernetesTraffic) -> Vec<Value> {
    let (header, cookie) = (spec.header(), spec.cookie());
    if header.is_none() && cookie.is_none() {
        return Vec::new();
    }
    let empty = Vec::new();
    let routes = obj
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let at = f.route.unwrap_or(0);
    let weighted = routes.get(at).cloned().unwrap_or(Value::Null);
    let mut ops = Vec::new();
    for (value, idx) in [("stable", f.stable), ("canary", f.canary)] {
        let name = format!("canary-ab-{value}");
        if routes
            .iter()
            .any(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
        {
            continue;
        }
        let base = weighted
            .get("match")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![json!({})]);
        let mut matches = Vec::new();
        let mut with = |key: &str, cond: Value| {
            for m in &base {
                let mut m = m.clone();
                if let Some(o) = m.as_object_mut() {
                    let hs = o.entry("headers").or_insert_with(|| json!({}));
                    if let Some(hs) = hs.as_object_mut() {
                        hs.insert(key.to_string(), cond.clone());
                    }
                }
                matches.push(m);
            }
        };
        if let Some(h) = &header {
            with(h, json!({"exact": value}));
        }
        if let Some(c) = &cookie {
            with(
                "cookie",
                json!({"regex": format!("^(.*?;\\s*)?{c}={value}(;.*)?$")}),
            );
        }
        let mut dest = list[idx].clone();
        if let Some(o) = dest.as_object_mut() {
            o.remove("weight");
        }
        ops.push(
            json!({"op": "add", "path": format!("/spec/http/{at}"), "value": {
                "name": name,
                "match": matches,
                "route": [dest],
            }}),
        );
    }
    ops
}

/// ingress-nginx: a merge patch of the canary annotations only.
fn plan_ingress(
    obj: &Value,
    spec: &KubernetesTraffic,
    want: Split,
) -> Result<Option<Change>, ObjectError> {
    let has_backend = obj.pointer("/spec/defaultBackend/service/name").is_some()
        || obj
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .is_some_and(|rules| {
                rules.iter().any(|r| {
                    r.pointer("/http/paths")
                        .and_then(Value::as_array)
                        .is_some_and(|p| {
                            p.iter()
                                .any(|p| p.pointer("/backend/service/name").is_some())
                        })
                })
            });
    if !has_backend {
        return Err(ObjectError(
            "it has no backend Service (spec.defaultBackend or spec.rules[].http.paths[].backend): \
             the canary Ingress routes to the canary's Service"
                .into(),
        ));
    }
    let total = want.stable + want.canary;
    let mut wanted: Vec<(String, Value)> = vec![
        ("canary".into(), json!("true")),
        ("canary-weight".into(), json!(want.canary.to_string())),
        ("canary-weight-total".into(), json!(total.to_string())),
    ];
    wanted.push((
        "canary-by-header".into(),
        spec.header().map_or(Value::Null, Value::String),
    ));
    wanted.push((
        "canary-by-cookie".into(),
        spec.cookie().map_or(Value::Null, Value::String),
    ));
    let current = obj.pointer("/metadata/annotations");
    let mut changes = serde_json::Map::new();
    for (k, v) in wanted {
        let key = format!("{ANN}{k}");
        let now = current
            .and_then(|a| a.get(&key))
            .cloned()
            .unwrap_or(Value::Null);
        if now != v {
            changes.insert(key, v);
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let rv = resource_version(obj)?;
    Ok(Some(Change::Merge(json!({
        "metadata": {"resourceVersion": rv, "annotations": changes}
    }))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_per_provider() {
        assert_eq!(
            split_for(Kind::Istio, 10.0).unwrap(),
            Split {
                stable: 90,
                canary: 10
            }
        );
        assert!(split_for(Kind::Istio, 2.5).unwrap_err().0.contains("whole"));
        assert_eq!(
            split_for(Kind::GatewayApi, 10.0).unwrap(),
            Split {
                stable: 9,
                canary: 1
            }
        );
        assert_eq!(
            split_for(Kind::Smi, 0.0).unwrap(),
            Split {
                stable: 1,
                canary: 0
            }
        );
        assert_eq!(
            split_for(Kind::IngressNginx, 2.5).unwrap(),
            Split {
                stable: 9750,
                canary: 250
            }
        );
        assert_eq!(
            split_for(Kind::IngressNginx, 100.0).unwrap(),
            Split {
                stable: 0,
                canary: 100
            }
        );
        assert!(split_for(Kind::Smi, 101.0).is_err());
        assert!(Split {
            stable: 9,
            canary: 1
        }
        .same_share(Split {
            stable: 90,
            canary: 10
        }));
        assert!(!Split {
            stable: 9,
            canary: 1
        }
        .same_share(Split {
            stable: 1,
            canary: 0
        }));
    }
}
