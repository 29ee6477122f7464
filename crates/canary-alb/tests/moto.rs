//! The ALB actuator against moto's server mode, the AWS stand-in these
//! machines can run (no real AWS here): a VPC's subnets, a load balancer,
//! two target groups and a listener are created by each test; every weight
//! is checked by reading the listener (or rule) back with
//! `describe_listeners` / `describe_rules`, independently of the actuator.
//!
//! Needs `moto_server` (`pip install 'moto[server]'`); without it the tests
//! say "skipped", unless `CANARY_REQUIRE_MOTO=1` (CI) makes that a failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, ProtocolEnum, RuleCondition, TargetGroupTuple,
};
use canary_alb::testing::{client, moto, setup, Setup};
use canary_alb::{weights_for, Alb, Weights};
use canary_core::spec::AlbTraffic;
use canary_core::{Pair, Policy, VersionStats};
use canary_engine::{ActuatorError, Engine, MetricsSource, SourceError, TrafficActuator};

/// The listener as `describe_listeners` gives it.
async fn listener(s: &Setup) -> aws_sdk_elasticloadbalancingv2::types::Listener {
    let out = s
        .client
        .describe_listeners()
        .listener_arns(&s.listener)
        .send()
        .await
        .unwrap();
    out.listeners()[0].clone()
}

/// The listener's weights as `describe_listeners` gives them, per ARN.
async fn listener_weights(s: &Setup) -> Vec<(String, i32)> {
    forward_weights(listener(s).await.default_actions())
}

/// A forward action to these target groups with these weights.
fn forward(groups: &[(&str, i32)]) -> Action {
    let mut f = ForwardActionConfig::builder();
    for (arn, w) in groups {
        f = f.target_groups(
            TargetGroupTuple::builder()
                .target_group_arn(*arn)
                .weight(*w)
                .build(),
        );
    }
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(f.build())
        .build()
}

fn forward_weights(actions: &[Action]) -> Vec<(String, i32)> {
    let a = actions
        .iter()
        .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
        .expect("a forward action");
    a.forward_config()
        .map(|f| {
            f.target_groups()
                .iter()
                .map(|t| {
                    (
                        t.target_group_arn().unwrap().to_string(),
                        t.weight().unwrap_or(1),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn expect(s: &Setup, w: Weights) -> Vec<(String, i32)> {
    vec![(s.stable.clone(), w.stable), (s.canary.clone(), w.canary)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_weight_reads_back_from_describe_listeners() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    let mut alb = Alb::with_client(&s.spec, s.client.clone());
    for p in [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 25.0, 10.0, 0.0] {
        alb.set_weight(p)
            .await
            .unwrap_or_else(|e| panic!("{p} %: {e}"));
        let w = weights_for(p).unwrap();
        assert_eq!(listener_weights(&s).await, expect(&s, w), "{p} %");
        assert_eq!(alb.weights().await.unwrap(), w);
        let share = 100.0 * f64::from(w.canary) / f64::from(w.stable + w.canary);
        assert!((share - p).abs() < 1e-9, "{p} % gives {share} %");
    }
    // The listener's own settings are untouched.
    let l = listener(&s).await;
    assert_eq!(l.port(), Some(80));
    assert_eq!(l.protocol(), Some(&ProtocolEnum::Http));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_gets_the_weights_and_the_default_action_is_left_alone() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    let rule = s
        .client
        .create_rule()
        .listener_arn(&s.listener)
        .priority(10)
        .conditions(
            RuleCondition::builder()
                .field("path-pattern")
                .values("/api/*")
                .build(),
        )
        .actions(forward(&[(&s.stable, 1)]))
        .send()
        .await
        .expect("CreateRule");
    let rule = rule.rules()[0].rule_arn().unwrap().to_string();
    let before = listener(&s).await.default_actions().to_vec();
    let spec = AlbTraffic {
        rule: Some(rule.clone()),
        ..s.spec.clone()
    };
    let mut alb = Alb::with_client(&spec, s.client.clone());
    alb.set_weight(10.0).await.unwrap();
    let rules = s
        .client
        .describe_rules()
        .rule_arns(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(
        forward_weights(rules.rules()[0].actions()),
        expect(&s, weights_for(10.0).unwrap())
    );
    assert_eq!(rules.rules()[0].conditions().len(), 1, "conditions kept");
    let after = listener(&s).await.default_actions().to_vec();
    assert_eq!(
        before, after,
        "the listener's default action is not touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_listener_is_a_permanent_error_naming_it() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    let gone = format!("{}0", s.listener.trim_end_matches(char::is_alphanumeric));
    let spec = AlbTraffic {
        listener: gone.clone(),
        ..s.spec.clone()
    };
    let mut alb = Alb::with_client(&spec, s.client.clone());
    let e = alb.set_weight(10.0).await.unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let text = e.to_string();
    assert!(text.contains("ALB") && text.contains(&gone), "{text}");
    assert!(text.contains("ListenerNotFound"), "{text}");
    // Nothing was written to the real listener.
    assert_eq!(listener_weights(&s).await, Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_takes_weights_aws_rejects_so_canary_refuses_them_itself() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    // The stand-in accepts a weight of 1000 (AWS allows 0–999) ...
    let over = forward(&[(&s.stable, 1000), (&s.canary, 0)]);
    let accepted = s
        .client
        .modify_listener()
        .listener_arn(&s.listener)
        .default_actions(over)
        .send()
        .await;
    assert!(accepted.is_ok(), "moto took weight 1000: {accepted:?}");
    // ... so the check is ours: every weight canary computes is within
    // 0–999, a percent outside 0–100 never reaches the API, and a stage
    // weight ALB's integers cannot give is a validation error.
    for p in (0..=1000).map(|i| f64::from(i) / 10.0) {
        let w = weights_for(p).unwrap();
        assert!((0..=999).contains(&w.stable) && (0..=999).contains(&w.canary));
    }
    let mut alb = Alb::with_client(&s.spec, s.client.clone());
    let e = alb.set_weight(150.0).await.unwrap_err();
    assert!(
        e.is_permanent() && e.to_string().contains("outside 0–100"),
        "{e}"
    );
    let spec = format!(
        "name: t\nstages:\n  - {{weight: 0.04, duration: 1m}}\n  - {{weight: 100, duration: 1m}}\n\
         traffic:\n  provider: alb\n  alb:\n    listener: {}\n    stable_target_group: {}\n    \
         canary_target_group: {}\nmetrics:\n  provider: scrape\n  scrape:\n    stable: [\"http://127.0.0.1:1/metrics\"]\n    canary: [\"http://127.0.0.1:2/metrics\"]\n",
        s.listener, s.stable, s.canary
    );
    let err = Policy::from_text(&spec).unwrap_err().to_string();
    assert!(
        err.contains("stages[0].weight") && err.contains("0–999"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_action_sending_traffic_elsewhere_is_refused() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    // A third target group with traffic of its own: the split would not be
    // canary's to set.
    let third = s
        .client
        .describe_target_groups()
        .target_group_arns(&s.stable)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let other = s
        .client
        .create_target_group()
        .name("web-other")
        .protocol(ProtocolEnum::Http)
        .port(8081)
        .vpc_id(third)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let mixed = forward(&[(&s.stable, 5), (&other, 5)]);
    s.client
        .modify_listener()
        .listener_arn(&s.listener)
        .default_actions(mixed)
        .send()
        .await
        .unwrap();
    let before = listener_weights(&s).await;
    let mut alb = Alb::with_client(&s.spec, s.client.clone());
    let e = alb.set_weight(10.0).await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains(&other), "{e}");
    assert_eq!(listener_weights(&s).await, before, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let spec = AlbTraffic {
        listener: "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/1/2".into(),
        rule: None,
        stable_target_group: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/s/1"
            .into(),
        canary_target_group: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/c/1"
            .into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.clone()),
        timeout: None,
    };
    let mut alb = Alb::with_client(&spec, client(&url));
    let e = alb.set_weight(10.0).await.unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    assert!(e.to_string().contains("DescribeListeners"), "{e}");
}

/// Canary numbers that fail the judge from the first look (a scripted
/// source: the subject here is the traffic layer).
struct Failing;

impl MetricsSource for Failing {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let v = |n: u64, e: u64| {
            let mut s = VersionStats {
                requests: n,
                errors: e,
                ..Default::default()
            };
            s.latency.record_n(10.0, n);
            s
        };
        Ok(Pair {
            baseline: v(1000, 5),
            canary: v(1000, 300),
        })
    }
}

/// The ALB actuator, recording the weights it was asked for.
struct Recording(Alb, Arc<Mutex<Vec<f64>>>);

impl TrafficActuator for Recording {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        self.0.set_weight(percent).await?;
        self.1.lock().unwrap().push(percent);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gradual_rollback_steps_the_listener_down_through_its_weights() {
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    let policy = Policy::from_text(
        "name: t\nstages:\n  - {weight: 50, duration: 10s, min_requests: 10}\n  - {weight: 100, duration: 10s}\n\
         analysis: {judge: threshold, interval: 1s}\n\
         rollback: {mode: gradual, steps: [25, 10, 0], step_interval: 1s}\n",
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let act = Recording(Alb::with_client(&s.spec, s.client.clone()), seen.clone());
    let mut c = canary_controller::Controller::new(Engine::new(policy), Failing, act);
    c.start(Duration::ZERO).await.unwrap();
    assert_eq!(
        listener_weights(&s).await,
        expect(&s, weights_for(50.0).unwrap())
    );
    let mut read = vec![50.0];
    let mut t = 0;
    while !c.is_finished() {
        t += 1;
        c.tick(Duration::from_secs(t)).await.unwrap();
        let w = *seen.lock().unwrap().last().unwrap();
        if *read.last().unwrap() != w {
            // Each step is on the listener before the next one is asked.
            assert_eq!(
                listener_weights(&s).await,
                expect(&s, weights_for(w).unwrap())
            );
            read.push(w);
        }
        assert!(t < 30, "still {:?}", c.report().phase);
    }
    assert_eq!(c.report().phase, "rolled_back");
    assert_eq!(read, vec![50.0, 25.0, 10.0, 0.0]);
    assert_eq!(
        listener_weights(&s).await,
        expect(&s, weights_for(0.0).unwrap())
    );
}
