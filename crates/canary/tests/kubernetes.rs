//! The Kubernetes providers through the `canary` binary and the live
//! controller, against the stand-in API server of the test kit
//! (`canary_kube::testing`; no real cluster here). With `--features
//! kubernetes`: `canary run` rolls back a bad canary and promotes a good
//! one through each provider, and every version of the object the
//! stand-in stored is read back (the weights after every stage); a 403
//! and a Deployment that never gets ready pause the rollout with the
//! reason; a missing or unparseable kubeconfig is a validation error.
//! Without the feature, a Kubernetes spec validates and `canary run` says
//! how to get a build that drives it.
//!
//! The stand-in routes no traffic, so the load goes to both demo backends
//! directly and the judges read their `/metrics` (a `scrape` section):
//! what is tested is what canary writes to the objects and what it
//! decides, not a mesh's routing.

mod support;

use std::process::Command;

fn canary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canary"))
}

/// A spec for `provider` with its object, and a scrape section.
fn spec(name: &str, provider: &str, kube: &str, scrape: (&str, &str), extra: &str) -> String {
    format!(
        "name: {name}\n\
         stages:\n  - {{weight: 20, duration: 3s}}\n  - {{weight: 50, duration: 2s}}\n  - {{weight: 100, duration: 1s}}\n\
         analysis: {{interval: 500ms, min_requests: 40}}\n\
         traffic:\n  provider: {provider}\n  kubernetes:\n    namespace: shop\n{kube}{extra}\
         metrics:\n  provider: scrape\n  scrape:\n    preset: http\n    stable: [\"{}/metrics\"]\n    canary: [\"{}/metrics\"]\n",
        scrape.0, scrape.1
    )
}

fn object_fields(provider: &str) -> String {
    let backends = "    stable: checkout-stable\n    canary: checkout-canary\n";
    match provider {
        "gateway-api" => format!("    http_route: checkout\n    route_cookie: \"\"\n{backends}"),
        "istio" => format!("    virtual_service: checkout\n{backends}"),
        "ingress-nginx" => "    ingress: checkout-canary\n".into(),
        _ => format!(
            "    traffic_split: checkout\n    route_header: \"\"\n    route_cookie: \"\"\n{backends}"
        ),
    }
}

#[cfg(not(feature = "kubernetes"))]
#[test]
fn a_default_build_validates_kubernetes_specs_and_says_how_to_drive_them() {
    let dir = support::TempDir::new("kube-default");
    for provider in ["gateway-api", "istio", "ingress-nginx", "smi"] {
        let file = dir.0.join(format!("{provider}.yaml"));
        std::fs::write(
            &file,
            spec(
                "k",
                provider,
                &object_fields(provider),
                ("http://127.0.0.1:9", "http://127.0.0.1:8"),
                "",
            ),
        )
        .unwrap();
        let out = canary().args(["validate"]).arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{provider}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for args in [
            &["run", "--spec"][..],
            &["traffic", "set", "--weight", "10", "--spec"],
        ] {
            let out = canary().args(args).arg(&file).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                stderr.contains("--features kubernetes") && stderr.contains(provider),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_kubeconfig_that_is_missing_or_does_not_parse_is_a_validation_error() {
    let dir = support::TempDir::new("kube-config");
    let garbage = dir.0.join("garbage");
    std::fs::write(&garbage, "clusters: [this is: not, a kubeconfig").unwrap();
    let missing = dir.0.join("nope");
    let cases: Vec<(&std::path::Path, &str)> = vec![(&missing, "nope")];
    #[cfg(feature = "kubernetes")]
    let cases = {
        let mut c = cases;
        c.push((&garbage, "garbage"));
        c
    };
    for (path, shown) in cases {
        let file = dir.0.join("spec.yaml");
        let fields = format!(
            "    kubeconfig: {}\n{}",
            path.display(),
            object_fields("istio")
        );
        std::fs::write(
            &file,
            spec(
                "k",
                "istio",
                &fields,
                ("http://127.0.0.1:9", "http://127.0.0.1:8"),
                "",
            ),
        )
        .unwrap();
        let out = canary().args(["validate"]).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("traffic.kubernetes") && stderr.contains(shown),
            "{stderr}"
        );
    }
}

#[cfg(feature = "kubernetes")]
mod with_the_feature {
    use super::*;
    use std::process::Stdio;

    use canary_demo::launch::ChildBackend;
    use canary_kube::testing::{Faults, StandIn};
    use canary_kube::{object, Kind};
    use serde_json::{json, Value};

    fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_canary")
    }

    fn objects() -> Vec<(&'static str, Kind, Value)> {
        vec![
            (
                "gateway-api",
                Kind::GatewayApi,
                json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                       "metadata": {"name": "checkout", "namespace": "shop"},
                       "spec": {"parentRefs": [{"name": "web"}], "rules": [{"backendRefs": [
                           {"name": "checkout-stable", "port": 80, "weight": 1},
                           {"name": "checkout-canary", "port": 80, "weight": 0}]}]}}),
            ),
            (
                "istio",
                Kind::Istio,
                json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "checkout", "namespace": "shop"},
                       "spec": {"hosts": ["checkout"], "http": [{"name": "primary", "route": [
                           {"destination": {"host": "checkout-stable"}, "weight": 100},
                           {"destination": {"host": "checkout-canary"}, "weight": 0}]}]}}),
            ),
            (
                "ingress-nginx",
                Kind::IngressNginx,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                       "metadata": {"name": "checkout-canary", "namespace": "shop"},
                       "spec": {"defaultBackend": {"service": {"name": "checkout-canary",
                                                               "port": {"number": 80}}}}}),
            ),
            (
                "smi",
                Kind::Smi,
                json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
                       "metadata": {"name": "checkout", "namespace": "shop"},
                       "spec": {"service": "checkout", "backends": [
                           {"service": "checkout-stable", "weight": 1},
                           {"service": "checkout-canary", "weight": 0}]}}),
            ),
        ]
    }

    fn kube_spec(provider: &str) -> canary_core::spec::KubernetesTraffic {
        let text = spec(
            "k",
            provider,
            &object_fields(provider),
            ("http://127.0.0.1:9", "http://127.0.0.1:8"),
            "",
        );
        let p = canary_core::Policy::from_text(&text).unwrap();
        p.traffic.unwrap().kubernetes.unwrap()
    }

    /// The canary's share in each version of the object the stand-in
    /// stored, without repeats.
    fn shares(s: &StandIn, kind: Kind, provider: &str, obj: &Value) -> Vec<f64> {
        let k = kube_spec(provider);
        let mut out: Vec<f64> = Vec::new();
        for v in s.history(obj) {
            let p = object::read_split(kind, &v, &k).unwrap().percent();
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn canary_run_through_each_provider_rolls_back_a_bad_canary_and_promotes_a_good_one() {
        let cases = [
            ("gateway-api", "bad"),
            ("gateway-api", "good"),
            ("istio", "good"),
            ("ingress-nginx", "good"),
            ("smi", "bad"),
        ];
        let runs: Vec<_> = cases
            .iter()
            .map(|&(provider, which)| std::thread::spawn(move || run_one(provider, which)))
            .collect();
        for r in runs {
            r.join().unwrap();
        }
    }

    fn run_one(provider: &str, which: &str) {
        let (_, kind, obj) = objects()
            .into_iter()
            .find(|(p, _, _)| *p == provider)
            .unwrap();
        let dir = support::TempDir::new(&format!("kube-run-{provider}-{which}"));
        let s = StandIn::start();
        s.put(obj.clone());
        s.put_deployment("shop", "checkout-stable", 2, 2, true);
        s.put_deployment("shop", "checkout-canary", 1, 1, true);
        let kubeconfig = s.kubeconfig(&dir.0, "shop");
        let errors = if which == "bad" { "0.3" } else { "0" };
        let stable = ChildBackend::start(bin(), "stable", &[]).unwrap();
        let canary = ChildBackend::start(bin(), "canary", &["--error-rate", errors]).unwrap();
        let fields = format!(
            "    kubeconfig: {}\n{}",
            kubeconfig.display(),
            object_fields(provider)
        );
        let health = "  health:\n    deployments: {stable: checkout-stable, canary: checkout-canary}\n    deadline: 30s\n";
        let text = spec(
            &format!("{provider}-{which}"),
            provider,
            &fields,
            (&stable.url(), &canary.url()),
            health,
        );
        let file = dir.0.join("spec.yaml");
        std::fs::write(&file, text).unwrap();
        let child = Command::new(bin())
            .args(["run", "--spec"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let loads = [
            support::send_load(&format!("{}/", stable.url())),
            support::send_load(&format!("{}/", canary.url())),
        ];
        let out = child.wait_with_output().unwrap();
        for (stop, load) in loads {
            stop.stop();
            assert!(load.join().unwrap().sent > 0);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{provider} {which}: no report ({e}): {stderr}"));
        let history = shares(&s, kind, provider, &obj);
        if which == "bad" {
            assert_eq!(
                report["phase"], "rolled_back",
                "{provider}: {report}\n{stderr}"
            );
            assert_eq!(out.status.code(), Some(1));
            assert_eq!(history, [0.0, 20.0, 0.0], "{provider}: {stderr}");
        } else {
            assert_eq!(
                report["phase"], "succeeded",
                "{provider}: {report}\n{stderr}"
            );
            assert_eq!(out.status.code(), Some(0));
            assert_eq!(history, [0.0, 20.0, 50.0, 100.0], "{provider}: {stderr}");
        }
        assert!(
            stderr.contains(&format!("traffic through {provider}")),
            "{stderr}"
        );
        // Every write went through canary's field manager, and the
        // Deployments were read before each weight went up.
        let reqs = s.requests();
        assert!(reqs
            .iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.query.contains("fieldManager=canary")));
        let deployment_reads = reqs
            .iter()
            .filter(|r| r.path.ends_with("/deployments/checkout-canary"))
            .count();
        let increases = if which == "bad" { 1 } else { 3 };
        assert!(deployment_reads >= increases, "{reqs:#?}");
    }

    /// Runs the live controller (the code `canary run` and `canary serve`
    /// run) over the stand-in, tick by tick, until it pauses or `ticks`
    /// have passed; gives the report as JSON text.
    async fn until_paused(policy: canary_core::Policy, ticks: usize) -> String {
        let clock: canary_sim::live::Clock = std::sync::Arc::new(|| std::time::Duration::ZERO);
        let wall: canary_prometheus::UnixClock = std::sync::Arc::new(|| 0.0);
        let driver = canary_server::Driver::start(&policy, 1, clock, wall)
            .await
            .unwrap();
        let source = Idle;
        let mut c =
            canary_controller::Controller::new(canary_engine::Engine::new(policy), source, driver);
        let t0 = tokio::time::Instant::now();
        c.start(t0.elapsed()).await.unwrap();
        for _ in 0..ticks {
            if matches!(c.engine().state().phase, canary_core::Phase::Paused { .. }) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            c.tick(t0.elapsed()).await.unwrap();
        }
        serde_json::to_string(&c.report()).unwrap()
    }

    /// No numbers (the pause must come from the traffic layer alone).
    struct Idle;

    impl canary_engine::MetricsSource for Idle {
        async fn read_window(
            &mut self,
        ) -> Result<canary_core::Pair<canary_core::VersionStats>, canary_engine::SourceError>
        {
            Ok(canary_core::Pair::default())
        }
    }

    fn policy(s: &StandIn, dir: &std::path::Path, extra: &str) -> canary_core::Policy {
        let kubeconfig = s.kubeconfig(dir, "shop");
        let fields = format!(
            "    kubeconfig: {}\n{}",
            kubeconfig.display(),
            object_fields("gateway-api")
        );
        let text = spec(
            "paused",
            "gateway-api",
            &fields,
            ("http://127.0.0.1:9", "http://127.0.0.1:8"),
            extra,
        );
        canary_core::Policy::from_text(&text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_403_pauses_the_rollout_with_the_permission_named() {
        let dir = support::TempDir::new("kube-403");
        let s = StandIn::start();
        let (_, _, obj) = objects().remove(0);
        s.put(obj.clone());
        s.set_faults(Faults {
            forbid: vec![("patch".into(), "httproutes".into())],
            ..Faults::default()
        });
        let report = until_paused(policy(&s, &dir.0, ""), 5).await;
        assert!(report.contains("\"paused\""), "{report}");
        assert!(
            report.contains(
                "may not `patch` httproutes.gateway.networking.k8s.io in namespace `shop`"
            ),
            "{report}"
        );
        // Nothing was promoted: the object still sends nothing to the canary.
        assert_eq!(s.history(&obj).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_that_never_gets_ready_holds_then_pauses_at_the_deadline() {
        let dir = support::TempDir::new("kube-never-ready");
        let s = StandIn::start();
        let (_, _, obj) = objects().remove(0);
        s.put(obj.clone());
        s.put_deployment("shop", "checkout-stable", 2, 2, true);
        s.put_deployment("shop", "checkout-canary", 2, 0, true);
        let health = "  health:\n    deployments: {stable: checkout-stable, canary: checkout-canary}\n    deadline: 1s\n";
        let started = tokio::time::Instant::now();
        let report = until_paused(policy(&s, &dir.0, health), 20).await;
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        assert!(report.contains("\"paused\""), "{report}");
        assert!(
            report.contains("not healthy after 1s (traffic.health.deadline)")
                && report
                    .contains("canary Deployment shop/checkout-canary has 0 of 2 replicas ready"),
            "{report}"
        );
        // It held: the object was never written.
        assert_eq!(s.history(&obj).len(), 1);
        assert!(s.requests().iter().all(|r| r.method == "GET"));
    }
}
