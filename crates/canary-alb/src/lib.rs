//! An AWS Application Load Balancer as a traffic layer: canary sets the
//! weights of the stable and canary target groups in the forward action of
//! a listener (its default action) or of one of its rules, through the
//! official SDK and the standard AWS configuration chain, and counts a
//! weight as applied only once it reads it back.
//!
//! Everything else in the listener or rule (other actions, their order,
//! the stickiness settings, other target groups left at weight 0) is
//! written back exactly as it was read.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod testing;

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
};
use aws_sdk_elasticloadbalancingv2::Client;
use canary_core::spec::{integer_split, AlbTraffic, ALB_MAX_WEIGHT};
use canary_engine::{ActuatorError, TrafficActuator};

/// One rollout's ALB: where its weights live and how to reach the API.
#[derive(Debug)]
pub struct Alb {
    spec: AlbTraffic,
    timeout: Duration,
    client: Option<Client>,
}

/// The weights read from the forward action, per target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// The stable target group's weight.
    pub stable: i32,
    /// The canary target group's weight.
    pub canary: i32,
}

impl Alb {
    /// The ALB `spec` names; the SDK client is built from the standard
    /// configuration chain (with the spec's region and endpoint) on first
    /// use.
    pub fn new(spec: &AlbTraffic) -> Self {
        Self {
            spec: spec.clone(),
            timeout: spec.timeout.map_or(Duration::from_secs(10), |t| t.0),
            client: None,
        }
    }

    /// The same, with a client built by the caller (its own credentials or
    /// retry settings).
    pub fn with_client(spec: &AlbTraffic, client: Client) -> Self {
        Self {
            client: Some(client),
            ..Self::new(spec)
        }
    }

    /// What the weights are set on, for messages.
    fn target(&self) -> String {
        match &self.spec.rule {
            Some(r) => format!("rule {r}"),
            None => format!("listener {}", self.spec.listener),
        }
    }

    async fn client(&mut self) -> Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(self.timeout)
                    .build(),
            );
        if let Some(r) = &self.spec.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(u) = &self.spec.endpoint_url {
            loader = loader.endpoint_url(u.clone());
        }
        let c = Client::new(&loader.load().await);
        self.client = Some(c.clone());
        c
    }

    /// The actions of the listener's default or of the rule, as AWS has
    /// them now.
    async fn actions(&mut self) -> Result<Vec<Action>, ActuatorError> {
        let c = self.client().await;
        let target = self.target();
        let (listener, rule) = (self.spec.listener.clone(), self.spec.rule.clone());
        let call = async move {
            match rule {
                Some(rule) => {
                    let out = c
                        .describe_rules()
                        .rule_arns(&rule)
                        .send()
                        .await
                        .map_err(|e| api_error(&format!("DescribeRules on {target}"), e))?;
                    out.rules()
                        .first()
                        .map(|r| r.actions().to_vec())
                        .ok_or_else(|| {
                            ActuatorError::permanent(format!("ALB: {target} does not exist"))
                        })
                }
                None => {
                    let out = c
                        .describe_listeners()
                        .listener_arns(&listener)
                        .send()
                        .await
                        .map_err(|e| api_error(&format!("DescribeListeners on {target}"), e))?;
                    out.listeners()
                        .first()
                        .map(|l| l.default_actions().to_vec())
                        .ok_or_else(|| {
                            ActuatorError::permanent(format!("ALB: {target} does not exist"))
                        })
                }
            }
        };
        self.bounded(call).await
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ActuatorError>>,
    ) -> Result<T, ActuatorError> {
        // The SDK's operation timeout bounds each call; this one also
        // bounds the credential and region lookups before it.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), call).await {
            Ok(r) => r,
            Err(_) => Err(ActuatorError::transient(format!(
                "ALB: {}: no answer within {:?}",
                self.target(),
                self.timeout
            ))),
        }
    }

    /// The stable and canary weights in the forward action now.
    ///
    /// # Errors
    /// The API call failed, the listener or rule does not exist, or its
    /// actions do not forward to both target groups.
    pub async fn weights(&mut self) -> Result<Weights, ActuatorError> {
        let actions = self.actions().await?;
        let i = self.forward_index(&actions)?;
        Ok(weights_of(&actions[i], &self.spec))
    }

    /// The forward action that carries the stable target group, or why
    /// none does; refuses one that also sends traffic to a target group
    /// that is neither version's (the split would not be canary's).
    fn forward_index(&self, actions: &[Action]) -> Result<usize, ActuatorError> {
        let (s, c) = (
            &self.spec.stable_target_group,
            &self.spec.canary_target_group,
        );
        let groups = |a: &Action| -> Vec<(String, i32)> {
            match a.forward_config() {
                Some(f) if !f.target_groups().is_empty() => f
                    .target_groups()
                    .iter()
                    .map(|t| {
                        (
                            t.target_group_arn().unwrap_or_default().to_string(),
                            t.weight().unwrap_or(1),
                        )
                    })
                    .collect(),
                _ => a
                    .target_group_arn()
                    .map(|t| vec![(t.to_string(), 1)])
                    .unwrap_or_default(),
            }
        };
        let found = actions.iter().position(|a| {
            a.r#type() == Some(&ActionTypeEnum::Forward)
                && groups(a).iter().any(|(arn, _)| arn == s || arn == c)
        });
        let Some(i) = found else {
            return Err(ActuatorError::permanent(format!(
                "ALB: {} has no forward action to the stable target group {s} or the canary \
                 target group {c}",
                self.target()
            )));
        };
        let others: Vec<String> = groups(&actions[i])
            .into_iter()
            .filter(|(arn, w)| arn != s && arn != c && *w > 0)
            .map(|(arn, w)| format!("{arn} (weight {w})"))
            .collect();
        if !others.is_empty() {
            return Err(ActuatorError::permanent(format!(
                "ALB: the forward action of {} also sends traffic to {}; canary sets the split \
                 only between its two target groups",
                self.target(),
                others.join(", ")
            )));
        }
        Ok(i)
    }

    async fn write(&mut self, actions: Vec<Action>) -> Result<(), ActuatorError> {
        let c = self.client().await;
        let target = self.target();
        let (listener, rule) = (self.spec.listener.clone(), self.spec.rule.clone());
        let call = async move {
            match rule {
                Some(rule) => c
                    .modify_rule()
                    .rule_arn(rule)
                    .set_actions(Some(actions))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(&format!("ModifyRule on {target}"), e)),
                None => c
                    .modify_listener()
                    .listener_arn(listener)
                    .set_default_actions(Some(actions))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api_error(&format!("ModifyListener on {target}"), e)),
            }
        };
        self.bounded(call).await
    }
}

/// The integer target group weights for `percent` % to the canary, each
/// within ALB's 0–999.
///
/// # Errors
/// `percent` is not a number in [0, 100].
pub fn weights_for(percent: f64) -> Result<Weights, ActuatorError> {
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        return Err(ActuatorError::permanent(format!(
            "ALB: a canary weight of {percent} % is outside 0–100 %"
        )));
    }
    let split = integer_split(percent, 1, 1, Some(ALB_MAX_WEIGHT));
    let w = Weights {
        stable: i32::try_from(split.stable).unwrap_or(i32::MAX),
        canary: i32::try_from(split.canary).unwrap_or(i32::MAX),
    };
    let max = i32::try_from(ALB_MAX_WEIGHT).unwrap_or(i32::MAX);
    if !(0..=max).contains(&w.stable) || !(0..=max).contains(&w.canary) {
        // integer_split keeps within the bound; never send AWS what it
        // rejects (moto would accept it).
        return Err(ActuatorError::permanent(format!(
            "ALB: target group weights {} and {} are outside 0–{ALB_MAX_WEIGHT}",
            w.stable, w.canary
        )));
    }
    Ok(w)
}

fn weights_of(a: &Action, spec: &AlbTraffic) -> Weights {
    let mut w = Weights {
        stable: 0,
        canary: 0,
    };
    match a.forward_config() {
        Some(f) if !f.target_groups().is_empty() => {
            for t in f.target_groups() {
                let arn = t.target_group_arn().unwrap_or_default();
                if arn == spec.stable_target_group {
                    w.stable = t.weight().unwrap_or(1);
                } else if arn == spec.canary_target_group {
                    w.canary = t.weight().unwrap_or(1);
                }
            }
        }
        _ => {
            if a.target_group_arn() == Some(spec.stable_target_group.as_str()) {
                w.stable = 1;
            } else if a.target_group_arn() == Some(spec.canary_target_group.as_str()) {
                w.canary = 1;
            }
        }
    }
    w
}

/// `action` with its forward config giving the two target groups `w`,
/// everything else (stickiness, other groups at 0, the order) as it was.
fn with_weights(action: &Action, spec: &AlbTraffic, w: Weights) -> Action {
    let tuple = |arn: &str, weight: i32| {
        TargetGroupTuple::builder()
            .target_group_arn(arn)
            .weight(weight)
            .build()
    };
    let mut groups = vec![
        tuple(&spec.stable_target_group, w.stable),
        tuple(&spec.canary_target_group, w.canary),
    ];
    let stickiness = action
        .forward_config()
        .and_then(|f| f.target_group_stickiness_config())
        .cloned();
    if let Some(f) = action.forward_config() {
        groups.extend(
            f.target_groups()
                .iter()
                .filter(|t| {
                    let arn = t.target_group_arn().unwrap_or_default();
                    arn != spec.stable_target_group && arn != spec.canary_target_group
                })
                .cloned(),
        );
    }
    let mut a = action.clone();
    // With more than one target group AWS takes the forward config only.
    a.target_group_arn = None;
    a.forward_config = Some(
        ForwardActionConfig::builder()
            .set_target_groups(Some(groups))
            .set_target_group_stickiness_config(stickiness)
            .build(),
    );
    a
}

/// An SDK error as an actuator error: throttling, timeouts, a connection
/// that failed and AWS's own 5xx may pass; a missing listener, rule or
/// target group, a refused request or missing credentials will not.
fn api_error<E, R>(what: &str, e: SdkError<E, R>) -> ActuatorError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let transient_codes = [
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "PriorRequestNotComplete",
    ];
    let message = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("an error without a code");
            let text = err.message().unwrap_or_default();
            let m = format!("ALB: {what}: {code}: {text}");
            return if transient_codes.contains(&code) {
                ActuatorError::transient(m)
            } else {
                ActuatorError::permanent(m)
            };
        }
        SdkError::ConstructionFailure(_) => {
            return ActuatorError::permanent(format!(
                "ALB: {what}: the request could not be built: {}",
                describe(&e)
            ))
        }
        _ => describe(&e),
    };
    ActuatorError::transient(format!("ALB: {what}: {message}"))
}

/// An error and its causes on one line (the SDK's top-level messages
/// alone say little, e.g. "dispatch failure").
fn describe(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cause = c.source();
    }
    parts.join(": ")
}

impl TrafficActuator for Alb {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        let want = weights_for(percent)?;
        let mut actions = self.actions().await?;
        let i = self.forward_index(&actions)?;
        if weights_of(&actions[i], &self.spec) != want {
            actions[i] = with_weights(&actions[i], &self.spec, want);
            self.write(actions).await?;
        }
        let got = self.weights().await?;
        if got != want {
            return Err(ActuatorError::transient(format!(
                "ALB: {} reads back weights {} (stable) and {} (canary) after setting {} and {}",
                self.target(),
                got.stable,
                got.canary,
                want.stable,
                want.canary
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_stay_within_albs_range_and_give_the_split() {
        for (p, s, c) in [
            (0.0, 1, 0),
            (100.0, 0, 1),
            (10.0, 9, 1),
            (1.0, 99, 1),
            (50.0, 1, 1),
        ] {
            assert_eq!(
                weights_for(p).unwrap(),
                Weights {
                    stable: s,
                    canary: c
                },
                "{p} %"
            );
        }
        let w = weights_for(0.1).unwrap();
        assert!(w.stable <= 999 && w.canary <= 999);
        assert!((100.0 * f64::from(w.canary) / f64::from(w.stable + w.canary) - 0.1).abs() < 1e-9);
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            let e = weights_for(bad).unwrap_err();
            assert!(e.to_string().contains("outside 0–100"), "{e}");
            assert!(e.is_permanent());
        }
    }
}
