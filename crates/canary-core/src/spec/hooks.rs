//! Webhooks, notifications and time limits on waiting, as written
//! (`webhooks:`, `notifications:`, `pause_timeout:`, `gate_timeout:`), and
//! their validation into the parts of the [`Policy`](super::Policy) that
//! `canary serve` carries out.
//!
//! This module only describes and checks: calling a URL, signing a body and
//! reading a secret are the server's (`canary-server`), which keeps this
//! crate free of I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::Findings;
use crate::duration::HumanDuration;

/// How long one webhook call may take when the spec says nothing (and, for
/// `pre-rollout`, how long it is retried).
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one notification delivery may take when the spec says nothing.
pub const DEFAULT_NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a notification is retried when the spec says nothing.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(3600);

/// How long a rollout waits at a webhook gate when the spec says nothing
/// (then it is aborted): nothing waits forever unless the user chose that.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest a single webhook or notification call may be given.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// One webhook as written (`webhooks[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// A name for the log and the status: 1–63 of `[A-Za-z0-9._-]`, unique
    /// among the webhooks.
    pub name: String,
    /// When it is called and what its answer means.
    #[serde(rename = "type")]
    pub kind: WebhookType,
    /// Where it is POSTed: `http://host:port/path`.
    pub url: String,
    /// How long one call may take (default 10s); for `pre-rollout`, also
    /// how long a failing hook is retried before the rollout is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Passed through, as given, in every call's body.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
    /// The shared secret the body is signed with (HMAC-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// When a webhook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookType {
    /// Before any traffic moves; a non-2xx answer is retried until the
    /// hook's timeout, then the rollout does not start.
    PreRollout,
    /// Every analysis interval: a non-2xx answer is a failing check.
    Rollout,
    /// A gate before the first weight moves.
    ConfirmRollout,
    /// A gate before each increase of the canary's weight below 100 %.
    ConfirmTrafficIncrease,
    /// A gate before the canary gets 100 %.
    ConfirmPromotion,
    /// After success or rollback, with the outcome.
    PostRollout,
    /// Polled while the rollout runs: a 2xx answer rolls it back.
    Rollback,
    /// Every event of the rollout's log.
    Event,
}

impl WebhookType {
    /// Every type, in documentation order.
    pub const ALL: [WebhookType; 8] = [
        WebhookType::PreRollout,
        WebhookType::Rollout,
        WebhookType::ConfirmRollout,
        WebhookType::ConfirmTrafficIncrease,
        WebhookType::ConfirmPromotion,
        WebhookType::PostRollout,
        WebhookType::Rollback,
        WebhookType::Event,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            WebhookType::PreRollout => "pre-rollout",
            WebhookType::Rollout => "rollout",
            WebhookType::ConfirmRollout => "confirm-rollout",
            WebhookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            WebhookType::ConfirmPromotion => "confirm-promotion",
            WebhookType::PostRollout => "post-rollout",
            WebhookType::Rollback => "rollback",
            WebhookType::Event => "event",
        }
    }
}

impl fmt::Display for WebhookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a shared secret is read from: exactly one of `env` and `file`.
/// The secret itself is never written in a spec (specs are stored and
/// shown by the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// An environment variable of `canary serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file (its contents, trailing newline removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, &self.file) {
            (Some(e), _) => write!(f, "env {e}"),
            (None, Some(p)) => write!(f, "file {p}"),
            (None, None) => f.write_str("(none)"),
        }
    }
}

/// One notification target as written (`notifications[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    /// A name: 1–63 of `[A-Za-z0-9._-]`, unique among the notifications.
    pub name: String,
    /// Where it is POSTed: `http://host:port/path`.
    pub url: String,
    /// `generic` (a JSON event, the default) or `slack` (an
    /// incoming-webhook message).
    #[serde(default)]
    pub format: NotificationFormat,
    /// The events sent (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<NotificationEvent>>,
    /// How long one delivery attempt may take (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// How long a delivery is retried before it is given up (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_for: Option<HumanDuration>,
    /// The shared secret the body is signed with (HMAC-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// The body a notification is sent as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationFormat {
    /// A JSON event: the rollout, the event, the reason and its detail.
    #[default]
    Generic,
    /// A Slack-compatible incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// The events a notification can be sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationEvent {
    /// The first stage began.
    Started,
    /// A stage passed (or was promoted by hand) and the next began.
    StageAdvanced,
    /// The rollout paused (by hand, at a `pause: true` stage, at a timeout,
    /// a guardrail, missing metrics).
    Paused,
    /// The rollout resumed.
    Resumed,
    /// The canary got all the traffic: the rollout succeeded.
    Promoted,
    /// The canary was rolled back.
    RolledBack,
    /// The rollout was aborted.
    Aborted,
    /// The rollout waits for a gate webhook.
    GateWaiting,
}

impl NotificationEvent {
    /// Every event, in documentation order.
    pub const ALL: [NotificationEvent; 8] = [
        NotificationEvent::Started,
        NotificationEvent::StageAdvanced,
        NotificationEvent::Paused,
        NotificationEvent::Resumed,
        NotificationEvent::Promoted,
        NotificationEvent::RolledBack,
        NotificationEvent::Aborted,
        NotificationEvent::GateWaiting,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            NotificationEvent::Started => "started",
            NotificationEvent::StageAdvanced => "stage-advanced",
            NotificationEvent::Paused => "paused",
            NotificationEvent::Resumed => "resumed",
            NotificationEvent::Promoted => "promoted",
            NotificationEvent::RolledBack => "rolled-back",
            NotificationEvent::Aborted => "aborted",
            NotificationEvent::GateWaiting => "gate-waiting",
        }
    }
}

/// A limit on waiting, as written (`pause_timeout`, `gate_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitLimitSpec {
    /// How long the rollout may wait.
    pub after: HumanDuration,
    /// What happens then: `abort` (the default) or `keep-waiting`.
    #[serde(default)]
    pub action: WaitAction,
}

/// What happens when a wait reaches its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitAction {
    /// Abort the rollout: all traffic back to stable.
    #[default]
    Abort,
    /// Go on waiting (the user chose to wait without limit).
    KeepWaiting,
}

impl WaitAction {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            WaitAction::Abort => "abort",
            WaitAction::KeepWaiting => "keep-waiting",
        }
    }
}

/// A validated webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: WebhookType,
    /// Its URL (`http://`).
    pub url: String,
    /// How long one call may take (and a `pre-rollout` hook is retried).
    pub timeout: Duration,
    /// Passed through in every call's body.
    pub metadata: BTreeMap<String, Value>,
    /// The signing secret's reference.
    pub secret: Option<SecretRef>,
}

/// A validated notification target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Its name.
    pub name: String,
    /// Its URL (`http://`).
    pub url: String,
    /// The body's format.
    pub format: NotificationFormat,
    /// The events it is sent on.
    pub events: BTreeSet<NotificationEvent>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How long a delivery is retried.
    pub retry_for: Duration,
    /// The signing secret's reference.
    pub secret: Option<SecretRef>,
}

/// A validated limit on waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WaitLimit {
    /// How long.
    pub after: Duration,
    /// Then what.
    pub action: WaitAction,
}

/// The validated `webhooks`, `notifications`, `pause_timeout` and
/// `gate_timeout` of a spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hooks {
    /// The webhooks, in the order written.
    pub webhooks: Vec<Webhook>,
    /// The notification targets, in the order written.
    pub notifications: Vec<Notification>,
    /// The limit on a pause that waits for a person (none: wait).
    pub pause_timeout: Option<WaitLimit>,
    /// The limit on waiting at a webhook gate (default 1h, then abort).
    pub gate_timeout: WaitLimit,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            notifications: Vec::new(),
            pause_timeout: None,
            gate_timeout: WaitLimit {
                after: DEFAULT_GATE_TIMEOUT,
                action: WaitAction::Abort,
            },
        }
    }
}

impl Hooks {
    /// The webhooks of type `kind`.
    pub fn of(&self, kind: WebhookType) -> impl Iterator<Item = &Webhook> {
        self.webhooks.iter().filter(move |w| w.kind == kind)
    }

    /// Whether any webhook has type `kind`.
    pub fn has(&self, kind: WebhookType) -> bool {
        self.of(kind).next().is_some()
    }
}

/// Whether `name` is 1–63 of `[A-Za-z0-9._-]`.
fn good_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(path: String, name: &str, seen: &mut BTreeSet<String>, found: &mut Findings) {
    if !good_name(name) {
        found.add(
            path,
            name.escape_default().to_string(),
            "must be 1–63 of A-Z, a-z, 0-9, `.`, `_`, `-`".into(),
        );
    } else if !seen.insert(name.to_string()) {
        found.add(
            path,
            name.to_string(),
            "is used twice: each needs a name of its own".into(),
        );
    }
}

fn check_url(path: String, url: &str, found: &mut Findings) {
    if let Err(why) = super::policy::check_http_url(url) {
        let rule = if url.starts_with("https://") {
            "https:// is not supported by this build yet: reach the receiver over http:// on a \
             trusted network, or through a local TLS-terminating proxy"
                .to_string()
        } else {
            format!("must be an http://host[:port]/path URL: {why}")
        };
        found.add(path, url.escape_default().to_string(), rule);
    }
}

fn check_call_timeout(path: String, given: Option<HumanDuration>, found: &mut Findings) {
    if let Some(HumanDuration(d)) = given {
        if d.is_zero() || d > MAX_CALL_TIMEOUT {
            found.add(
                path,
                format!("{}s", d.as_secs_f64()),
                format!(
                    "must be longer than 0s and at most {}s",
                    MAX_CALL_TIMEOUT.as_secs()
                ),
            );
        }
    }
}

fn check_secret(path: &str, s: &SecretRef, found: &mut Findings) {
    match (&s.env, &s.file) {
        (Some(_), Some(_)) | (None, None) => found.add(
            path.to_string(),
            s.to_string(),
            "needs exactly one of `env` (a variable of canary serve) and `file`".into(),
        ),
        (Some(e), None) => {
            let ok = !e.is_empty()
                && !e.starts_with(|c: char| c.is_ascii_digit())
                && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                found.add(
                    format!("{path}.env"),
                    e.escape_default().to_string(),
                    "must be an environment variable name: A-Z, a-z, 0-9 and `_`, not \
                     starting with a digit"
                        .into(),
                );
            }
        }
        (None, Some(f)) => {
            if f.trim().is_empty() || f.chars().any(char::is_control) {
                found.add(
                    format!("{path}.file"),
                    f.escape_default().to_string(),
                    "must be a file path".into(),
                );
            }
        }
    }
}

fn check_wait(path: &str, w: Option<&WaitLimitSpec>, found: &mut Findings) -> Option<WaitLimit> {
    let w = w?;
    if w.after.0.is_zero() {
        found.add(
            format!("{path}.after"),
            "0s".into(),
            "must be longer than 0s".into(),
        );
    }
    Some(WaitLimit {
        after: w.after.0,
        action: w.action,
    })
}

/// Checks the webhooks, notifications and wait limits and builds their
/// validated form.
pub(super) fn check_hooks(
    webhooks: &[WebhookSpec],
    notifications: &[NotificationSpec],
    pause_timeout: Option<&WaitLimitSpec>,
    gate_timeout: Option<&WaitLimitSpec>,
    found: &mut Findings,
) -> Hooks {
    let mut seen = BTreeSet::new();
    let mut hooks = Vec::with_capacity(webhooks.len());
    for (i, w) in webhooks.iter().enumerate() {
        let p = format!("webhooks[{i}]");
        check_name(format!("{p}.name"), &w.name, &mut seen, found);
        check_url(format!("{p}.url"), &w.url, found);
        check_call_timeout(format!("{p}.timeout"), w.timeout, found);
        if let Some(s) = &w.secret {
            check_secret(&format!("{p}.secret"), s, found);
        }
        for k in w.metadata.keys() {
            if k.is_empty() || k.chars().any(char::is_control) {
                found.add(
                    format!("{p}.metadata"),
                    k.escape_default().to_string(),
                    "a key must be a non-empty text without control characters".into(),
                );
            }
        }
        hooks.push(Webhook {
            name: w.name.clone(),
            kind: w.kind,
            url: w.url.clone(),
            timeout: w.timeout.map_or(DEFAULT_WEBHOOK_TIMEOUT, |d| d.0),
            metadata: w.metadata.clone(),
            secret: w.secret.clone(),
        });
    }
    let mut seen = BTreeSet::new();
    let mut notes = Vec::with_capacity(notifications.len());
    for (i, n) in notifications.iter().enumerate() {
        let p = format!("notifications[{i}]");
        check_name(format!("{p}.name"), &n.name, &mut seen, found);
        check_url(format!("{p}.url"), &n.url, found);
        check_call_timeout(format!("{p}.timeout"), n.timeout, found);
        if let Some(s) = &n.secret {
            check_secret(&format!("{p}.secret"), s, found);
        }
        if let Some(HumanDuration(d)) = n.retry_for {
            if d.is_zero() {
                found.add(
                    format!("{p}.retry_for"),
                    "0s".into(),
                    "must be longer than 0s".into(),
                );
            }
        }
        let events: BTreeSet<NotificationEvent> = match &n.events {
            Some(list) => {
                if list.is_empty() {
                    found.add(
                        format!("{p}.events"),
                        "[]".into(),
                        "lists no event: leave it out for all of them, or remove the \
                         notification"
                            .into(),
                    );
                }
                list.iter().copied().collect()
            }
            None => NotificationEvent::ALL.into_iter().collect(),
        };
        notes.push(Notification {
            name: n.name.clone(),
            url: n.url.clone(),
            format: n.format,
            events,
            timeout: n.timeout.map_or(DEFAULT_NOTIFICATION_TIMEOUT, |d| d.0),
            retry_for: n.retry_for.map_or(DEFAULT_RETRY_FOR, |d| d.0),
            secret: n.secret.clone(),
        });
    }
    let pause_timeout = check_wait("pause_timeout", pause_timeout, found);
    let gate_timeout =
        check_wait("gate_timeout", gate_timeout, found).unwrap_or(Hooks::default().gate_timeout);
    Hooks {
        webhooks: hooks,
        notifications: notes,
        pause_timeout,
        gate_timeout,
    }
}
