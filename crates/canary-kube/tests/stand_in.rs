//! The Kubernetes providers through the real kube client against the
//! stand-in API server of the test kit (no real cluster here): for each
//! provider the weights after every stage and the A/B routes, read back
//! from the stand-in, with everything canary does not own left as it was;
//! the exact requests and patch bodies; conflicts, 403, 404 and 503; and
//! the Deployments' readiness.

use canary_core::spec::{KubernetesTraffic, VersionNames};
use canary_engine::TrafficActuator;
use canary_kube::testing::{Faults, Recorded, StandIn};
use canary_kube::{Kind, KubeTraffic};
use serde_json::{json, Value};

fn spec() -> KubernetesTraffic {
    KubernetesTraffic {
        kubeconfig: None,
        context: None,
        namespace: Some("shop".into()),
        http_route: None,
        virtual_service: None,
        ingress: None,
        traffic_split: None,
        stable: Some("checkout-stable".into()),
        canary: Some("checkout-canary".into()),
        route: None,
        route_header: None,
        route_cookie: None,
        timeout: None,
    }
}

fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": "shop", "labels": {"team": "payments"}},
        "spec": {
            "parentRefs": [{"name": "web-gateway"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "assets", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"add": [{"name": "x-env", "value": "prod"}]}}],
                 "backendRefs": [{"name": "checkout-stable", "port": 8080},
                                 {"name": "checkout-canary", "port": 8080, "weight": 0}]}
            ]
        }
    })
}

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "hosts": ["checkout.shop.svc.cluster.local"],
            "gateways": ["mesh"],
            "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "admin"}}]},
                {"name": "primary", "timeout": "5s", "retries": {"attempts": 3},
                 "route": [{"destination": {"host": "checkout", "subset": "checkout-stable"}, "weight": 100},
                           {"destination": {"host": "checkout", "subset": "checkout-canary"}, "weight": 0}]}
            ]
        }
    })
}

fn ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "checkout-canary", "namespace": "shop",
                     "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/",
                                     "team": "payments"}},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "checkout-canary", "port": {"number": 80}}}}]}}]
        }
    })
}

fn traffic_split() -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"service": "checkout",
                 "backends": [{"service": "checkout-stable", "weight": 100},
                              {"service": "checkout-canary", "weight": 0},
                              {"service": "checkout-old", "weight": 0}]}
    })
}

fn layer(s: &StandIn, kind: Kind, spec: &KubernetesTraffic) -> KubeTraffic {
    KubeTraffic::with_client(kind, spec, s.client(), "shop")
}

/// The object without what changes on every write (resourceVersion) and
/// without the paths canary owns, for comparing what it must not touch.
fn without(mut v: Value, drop: &[&str]) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    for p in drop {
        let (parent, key) = p.rsplit_once('/').unwrap();
        if let Some(o) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
            o.remove(key);
        }
    }
    v
}

fn weights(v: &Value, list: &str, key: &str) -> Vec<(String, u64)> {
    v.pointer(list)
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|e| {
            let name = e
                .pointer(key)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            (name, e.get("weight").and_then(Value::as_u64).unwrap_or(1))
        })
        .collect()
}

fn patches(reqs: &[Recorded]) -> Vec<&Recorded> {
    reqs.iter().filter(|r| r.method == "PATCH").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_sets_the_rule_weights_adds_header_rules_and_touches_nothing_else() {
    let s = StandIn::start();
    s.put(http_route());
    let before = s.get(&http_route()).unwrap();
    let mut sp = spec();
    sp.http_route = Some("checkout".into());
    sp.route_cookie = Some(String::new());
    let mut k = layer(&s, Kind::GatewayApi, &sp);

    k.set_weight(10.0).await.unwrap();
    // Exactly: read, one JSON patch with canary's field manager, read back.
    let reqs = s.take_requests();
    let path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
    let shape: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(shape, [("GET", path), ("PATCH", path), ("GET", path)]);
    let p = patches(&reqs)[0];
    assert_eq!(p.content_type, "application/json-patch+json");
    assert!(p.query.contains("fieldManager=canary"), "{}", p.query);
    let rv = before["metadata"]["resourceVersion"].clone();
    assert_eq!(
        p.body,
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 9},
            {"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 1},
            {"op": "add", "path": "/spec/rules/-", "value": {
                "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"},
                             "headers": [{"type": "Exact", "name": "x-canary", "value": "canary"}]}],
                "backendRefs": [{"name": "checkout-canary", "port": 8080}]}},
            {"op": "add", "path": "/spec/rules/-", "value": {
                "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"},
                             "headers": [{"type": "Exact", "name": "x-canary", "value": "stable"}]}],
                "backendRefs": [{"name": "checkout-stable", "port": 8080}]}}
        ])
    );

    for (w, stable, canary) in [
        (10.0, 9, 1),
        (25.0, 3, 1),
        (50.0, 1, 1),
        (100.0, 0, 1),
        (0.0, 1, 0),
    ] {
        k.set_weight(w).await.unwrap();
        let now = s.get(&http_route()).unwrap();
        assert_eq!(
            weights(&now, "/spec/rules/1/backendRefs", "/name"),
            [
                ("checkout-stable".to_string(), stable),
                ("checkout-canary".to_string(), canary)
            ],
            "{w} %"
        );
        // The A/B rules are there once each, after the user's rules.
        let rules = now["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4, "{w} %");
        assert_eq!(rules[2]["backendRefs"][0]["name"], "checkout-canary");
        assert_eq!(rules[3]["matches"][0]["headers"][0]["value"], "stable");
        // Everything else is as it was.
        let mut rest = now.clone();
        rest["spec"]["rules"].as_array_mut().unwrap().truncate(2);
        assert_eq!(
            without(
                rest,
                &[
                    "/spec/rules/1/backendRefs/0/weight",
                    "/spec/rules/1/backendRefs/1/weight"
                ]
            ),
            without(
                before.clone(),
                &[
                    "/spec/rules/1/backendRefs/0/weight",
                    "/spec/rules/1/backendRefs/1/weight"
                ]
            ),
        );
    }
    // Setting the weight it has writes nothing.
    s.take_requests();
    k.set_weight(0.0).await.unwrap();
    assert!(patches(&s.requests()).is_empty());
    assert_eq!(k.split().await.unwrap().percent(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_sets_weights_summing_to_100_and_adds_header_and_cookie_routes() {
    let s = StandIn::start();
    s.put(virtual_service());
    let before = s.get(&virtual_service()).unwrap();
    let mut sp = spec();
    sp.virtual_service = Some("checkout".into());
    let mut k = layer(&s, Kind::Istio, &sp);
    k.set_weight(5.0).await.unwrap();
    let reqs = s.take_requests();
    let p = patches(&reqs);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].content_type, "application/json-patch+json");
    assert_eq!(
        p[0].path,
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout"
    );
    let ab = |value: &str, subset: &str| {
        json!({"op": "add", "path": "/spec/http/1", "value": {
            "name": format!("canary-ab-{value}"),
            "match": [{"headers": {"x-canary": {"exact": value}}},
                      {"headers": {"cookie": {"regex": format!("^(.*?;\\s*)?canary={value}(;.*)?$")}}}],
            "route": [{"destination": {"host": "checkout", "subset": subset}}]}})
    };
    assert_eq!(
        p[0].body,
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion",
             "value": before["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 95},
            {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 5},
            ab("stable", "checkout-stable"),
            ab("canary", "checkout-canary"),
        ])
    );
    for w in [5.0, 25.0, 50.0, 100.0, 0.0] {
        k.set_weight(w).await.unwrap();
        let now = s.get(&virtual_service()).unwrap();
        let http = now["spec"]["http"].as_array().unwrap();
        assert_eq!(http.len(), 4, "{w} %");
        assert_eq!(http[0]["name"], "admin");
        // The A/B routes come before the weighted one (Istio takes the
        // first route that matches).
        let names: Vec<&str> = http.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["admin", "canary-ab-canary", "canary-ab-stable", "primary"]
        );
        let ws = weights(&now, "/spec/http/3/route", "/destination/subset");
        let c = w as u64;
        assert_eq!(
            ws,
            [
                ("checkout-stable".to_string(), 100 - c),
                ("checkout-canary".to_string(), c)
            ],
            "{w} %"
        );
        assert_eq!(ws[0].1 + ws[1].1, 100);
        assert_eq!(
            http[1]["match"],
            json!([{"headers": {"x-canary": {"exact": "canary"}}},
                   {"headers": {"cookie": {"regex": "^(.*?;\\s*)?canary=canary(;.*)?$"}}}])
        );
        assert_eq!(
            http[1]["route"],
            json!([{"destination": {"host": "checkout", "subset": "checkout-canary"}}])
        );
        let mut rest = now.clone();
        let arr = rest["spec"]["http"].as_array_mut().unwrap();
        arr.remove(1);
        arr.remove(1);
        assert_eq!(
            without(
                rest,
                &["/spec/http/1/route/0/weight", "/spec/http/1/route/1/weight"]
            ),
            without(
                before.clone(),
                &["/spec/http/1/route/0/weight", "/spec/http/1/route/1/weight"]
            )
        );
    }
    // Istio's weights are whole percentages: 2.5 % is refused for good.
    let e = k.set_weight(2.5).await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("whole"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_sets_only_the_canary_annotations_with_a_merge_patch() {
    let s = StandIn::start();
    s.put(ingress());
    let before = s.get(&ingress()).unwrap();
    let mut sp = spec();
    sp.stable = None;
    sp.canary = None;
    sp.ingress = Some("checkout-canary".into());
    let mut k = layer(&s, Kind::IngressNginx, &sp);
    k.set_weight(5.0).await.unwrap();
    let reqs = s.take_requests();
    let p = patches(&reqs);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].content_type, "application/merge-patch+json");
    assert_eq!(
        p[0].path,
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/checkout-canary"
    );
    let a = "nginx.ingress.kubernetes.io/";
    assert_eq!(
        p[0].body,
        json!({"metadata": {
        "resourceVersion": before["metadata"]["resourceVersion"],
        "annotations": {
            format!("{a}canary"): "true",
            format!("{a}canary-weight"): "5",
            format!("{a}canary-weight-total"): "100",
            format!("{a}canary-by-header"): "x-canary",
            format!("{a}canary-by-cookie"): "canary",
        }}})
    );
    for (w, weight, total) in [
        (5.0, "5", "100"),
        (2.5, "250", "10000"),
        (100.0, "100", "100"),
        (0.0, "0", "100"),
    ] {
        k.set_weight(w).await.unwrap();
        let now = s.get(&ingress()).unwrap();
        let ann = &now["metadata"]["annotations"];
        assert_eq!(ann[format!("{a}canary-weight")], weight, "{w} %");
        assert_eq!(ann[format!("{a}canary-weight-total")], total, "{w} %");
        assert_eq!(ann[format!("{a}rewrite-target")], "/");
        assert_eq!(ann["team"], "payments");
        assert_eq!(now["spec"], before["spec"]);
    }
    // An Ingress with no backend Service is not a canary Ingress.
    let mut bare = ingress();
    bare["metadata"]["name"] = json!("empty");
    bare["spec"] = json!({"ingressClassName": "nginx"});
    s.put(bare);
    sp.ingress = Some("empty".into());
    let e = layer(&s, Kind::IngressNginx, &sp)
        .set_weight(5.0)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string().contains("Ingress shop/empty")
            && e.to_string().contains("no backend Service"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_sets_the_two_backends_and_leaves_a_third_at_zero() {
    let s = StandIn::start();
    s.put(traffic_split());
    let mut sp = spec();
    sp.traffic_split = Some("checkout".into());
    sp.route_header = Some(String::new());
    sp.route_cookie = Some(String::new());
    let mut k = layer(&s, Kind::Smi, &sp);
    let rv = s.get(&traffic_split()).unwrap()["metadata"]["resourceVersion"].clone();
    k.set_weight(1.0).await.unwrap();
    let reqs = s.take_requests();
    assert_eq!(
        patches(&reqs)[0].body,
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/spec/backends/0/weight", "value": 99},
            {"op": "replace", "path": "/spec/backends/1/weight", "value": 1},
        ])
    );
    for (w, st, ca) in [(1.0, 99, 1), (20.0, 4, 1), (100.0, 0, 1), (0.0, 1, 0)] {
        k.set_weight(w).await.unwrap();
        let now = s.get(&traffic_split()).unwrap();
        assert_eq!(
            weights(&now, "/spec/backends", "/service"),
            [
                ("checkout-stable".to_string(), st),
                ("checkout-canary".to_string(), ca),
                ("checkout-old".to_string(), 0)
            ],
            "{w} %"
        );
        assert_eq!(now["spec"]["service"], "checkout");
    }
    // A third backend with traffic: the split would not be canary's.
    let mut ts = traffic_split();
    ts["spec"]["backends"][2]["weight"] = json!(5);
    s.put(ts);
    let e = k.set_weight(10.0).await.unwrap_err();
    assert!(
        e.is_permanent() && e.to_string().contains("`checkout-old` (weight 5)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_every_first_write_still_converges_and_keeps_the_other_writers_change() {
    let s = StandIn::start();
    s.put(http_route());
    s.put(ingress());
    s.set_faults(Faults {
        conflict_every_first_write: true,
        ..Faults::default()
    });
    let mut sp = spec();
    sp.http_route = Some("checkout".into());
    sp.route_cookie = Some(String::new());
    let mut k = layer(&s, Kind::GatewayApi, &sp);
    let mut si = spec();
    si.stable = None;
    si.canary = None;
    si.ingress = Some("checkout-canary".into());
    let mut ki = layer(&s, Kind::IngressNginx, &si);
    for w in [10.0, 50.0, 100.0] {
        s.take_requests();
        k.set_weight(w).await.unwrap();
        let reqs = s.take_requests();
        // read, 409, read again, patch, read back
        assert_eq!(patches(&reqs).len(), 2, "{w} %: {reqs:#?}");
        assert_eq!(reqs.len(), 5, "{w} %");
        let now = s.get(&http_route()).unwrap();
        assert_eq!(
            canary_kube::object::read_split(Kind::GatewayApi, &now, &sp)
                .unwrap()
                .percent(),
            w
        );
        assert!(now["metadata"]["annotations"]["other-writer"].is_string());

        ki.set_weight(w).await.unwrap();
        let now = s.get(&ingress()).unwrap();
        assert_eq!(
            now["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
            format!("{w}")
        );
        assert!(now["metadata"]["annotations"]["other-writer"].is_string());
        assert_eq!(now["metadata"]["annotations"]["team"], "payments");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_say_what_to_do_and_whether_they_pass() {
    let s = StandIn::start();
    s.put(http_route());
    let mut sp = spec();
    sp.http_route = Some("checkout".into());
    let mut k = layer(&s, Kind::GatewayApi, &sp);
    // 403: permanent, naming the verb and the resource.
    s.set_faults(Faults {
        forbid: vec![("patch".into(), "httproutes".into())],
        ..Faults::default()
    });
    let e = k.set_weight(10.0).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("may not `patch` httproutes.gateway.networking.k8s.io in namespace `shop`"),
        "{m}"
    );
    // 503: transient; the next try goes through.
    s.set_faults(Faults {
        unavailable: 1,
        ..Faults::default()
    });
    let e = k.set_weight(10.0).await.unwrap_err();
    assert!(!e.is_permanent() && e.to_string().contains("503"), "{e}");
    k.set_weight(10.0).await.unwrap();
    // 404: the object named.
    sp.http_route = Some("nope".into());
    let e = layer(&s, Kind::GatewayApi, &sp)
        .set_weight(10.0)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string().contains("HTTPRoute shop/nope does not exist"),
        "{e}"
    );
    // No matching backends: what the rules have instead.
    sp.http_route = Some("checkout".into());
    sp.canary = Some("checkout-green".into());
    let e = layer(&s, Kind::GatewayApi, &sp)
        .set_weight(10.0)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(
        e.to_string().contains("`checkout-green` (canary)")
            && e.to_string()
                .contains("rule 1: checkout-stable, checkout-canary"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_ready_only_with_every_replica_ready_at_the_current_generation() {
    let s = StandIn::start();
    let mut sp = spec();
    sp.http_route = Some("checkout".into());
    let mut k = layer(&s, Kind::GatewayApi, &sp);
    let names = VersionNames {
        stable: "checkout-stable".into(),
        canary: "checkout-canary".into(),
    };
    s.put_deployment("shop", "checkout-stable", 3, 3, true);
    s.put_deployment("shop", "checkout-canary", 2, 1, true);
    let why = k.deployments_ready(&names).await.unwrap().unwrap_err();
    assert_eq!(
        why,
        "canary Deployment shop/checkout-canary has 1 of 2 replicas ready"
    );
    s.put_deployment("shop", "checkout-canary", 2, 2, false);
    let why = k.deployments_ready(&names).await.unwrap().unwrap_err();
    assert!(why.contains("observedGeneration 1 < generation 2"), "{why}");
    s.put_deployment("shop", "checkout-canary", 2, 2, true);
    k.deployments_ready(&names).await.unwrap().unwrap();
    let reqs = s.requests();
    assert_eq!(
        reqs.last().unwrap().path,
        "/apis/apps/v1/namespaces/shop/deployments/checkout-canary"
    );
    // A Deployment that does not exist, and one canary may not read.
    let e = k
        .deployments_ready(&VersionNames {
            stable: "checkout-stable".into(),
            canary: "gone".into(),
        })
        .await
        .unwrap_err();
    assert!(
        e.is_permanent()
            && e.to_string()
                .contains("Deployment shop/gone does not exist"),
        "{e}"
    );
    s.set_faults(Faults {
        forbid: vec![("get".into(), "deployments".into())],
        ..Faults::default()
    });
    let e = k.deployments_ready(&names).await.unwrap_err();
    assert!(
        e.to_string().contains("may not `get` deployments.apps"),
        "{e}"
    );
}
