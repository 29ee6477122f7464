//! Webhooks and notifications on the wire: the signature every request
//! carries, one bounded call, and the bodies sent.
//!
//! # The signature
//! Every request carries `X-Canary-Timestamp: <unix seconds>` and, when
//! the spec names a secret, `X-Canary-Signature: sha256=<hex>`, the
//! HMAC-SHA256 under the secret of `<timestamp>.<body>`. A receiver
//! recomputes it over the body as received ([`verify`]): a body changed by
//! one byte does not match, and a timestamp outside the receiver's window
//! is a replay. Deliveries from the outbox also carry
//! `X-Canary-Delivery: <id>`, the same on every retry, so a receiver can
//! drop duplicates.
//!
//! # Bounds
//! A call takes at most its timeout (connect, send, answer), follows no
//! redirect, and reads at most [`MAX_ANSWER_BYTES`] of an answer, whatever
//! its length: a hook that hangs or answers 300 MB costs its timeout and
//! 64 KiB, no more.

use std::io::Read;
use std::time::Duration;

use canary_core::spec::{NotificationEvent, NotificationFormat, SecretRef, Webhook};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;

/// The header with the signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Canary-Signature";
/// The header with the time of signing, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Canary-Timestamp";
/// The header with an outbox delivery's id (the same on every retry).
pub const DELIVERY_HEADER: &str = "X-Canary-Delivery";
/// The most of an answer read (64 KiB); the rest is never read.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// The most of an answer kept in the log.
const SHOWN_BYTES: usize = 256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes a key of any length; `new_from_slice` fails for none.
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The signature of `body` at `timestamp` under `secret`:
/// `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    match mac(secret, timestamp, body) {
        Some(m) => format!("sha256={}", hex::encode(m.finalize().into_bytes())),
        None => String::new(),
    }
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp header is missing or not a number.
    #[error("the timestamp is missing or not a number of seconds")]
    Timestamp,
    /// The timestamp is too far from now: a replay, or a clock far off.
    #[error("signed {age}s away from now, outside the {window}s window: a replay?")]
    Stale {
        /// Seconds between the timestamp and now.
        age: u64,
        /// The window accepted.
        window: u64,
    },
    /// The signature header is not `sha256=<hex>`.
    #[error("the signature is not `sha256=<hex>`")]
    Malformed,
    /// The signature is not the body's under the secret.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a request as a receiver would: `timestamp` and `signature` are
/// the headers' values, `body` the bytes received, `now_unix` the
/// receiver's clock; a timestamp more than `window_secs` from it is
/// refused.
///
/// # Errors
/// [`VerifyError`]: what is wrong.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix: u64,
    window_secs: u64,
) -> Result<(), VerifyError> {
    let t: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Timestamp)?;
    let age = now_unix.abs_diff(t);
    if age > window_secs {
        return Err(VerifyError::Stale {
            age,
            window: window_secs,
        });
    }
    let given = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::Malformed)?;
    let m = mac(secret, t, body).ok_or(VerifyError::Mismatch)?;
    m.verify_slice(&given).map_err(|_| VerifyError::Mismatch)
}

/// Reads the secret `r` points to (an environment variable of this
/// process, or a file without its trailing newline).
///
/// # Errors
/// It is missing or empty, in words (never the secret).
pub(crate) fn read_secret(r: &SecretRef) -> Result<Vec<u8>, String> {
    let bytes = match (&r.env, &r.file) {
        (Some(name), _) => std::env::var(name)
            .map_err(|_| format!("secret: environment variable {name} is not set"))?
            .into_bytes(),
        (None, Some(path)) => {
            let mut b = std::fs::read(path).map_err(|e| format!("secret: {path}: {e}"))?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            b
        }
        (None, None) => return Err("secret: no env or file given".into()),
    };
    if bytes.is_empty() {
        return Err(format!("secret ({r}) is empty"));
    }
    Ok(bytes)
}

/// What one call brought back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The HTTP status, if one came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's first bytes, on one line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Why there was no status (unreachable, timed out, no secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn failed(error: String) -> Answer {
        Answer {
            status: None,
            body: String::new(),
            error: Some(error),
        }
    }

    /// A 2xx status: the hook said yes.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The answer in words: `HTTP 403: not yet`, `unreachable: ...`.
    pub fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) if self.body.is_empty() => format!("HTTP {s}"),
            (None, Some(s)) => format!("HTTP {s}: {}", self.body),
            (None, None) => "no answer".into(),
        }
    }
}

/// The first bytes of an answer, on one line.
fn shown(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim().to_string();
    if bytes.len() > SHOWN_BYTES {
        format!("{text}…")
    } else {
        text
    }
}

/// An agent for one call to a user's endpoint (a webhook, a health
/// probe): `timeout` for the whole call, any status an answer, no
/// redirects followed.
pub(crate) fn plain_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// POSTs `body` (JSON) to `url`, signed with the secret `secret` points to
/// at `now_unix`, within `timeout`; reads at most [`MAX_ANSWER_BYTES`] of
/// the answer. Blocking. A secret that cannot be read fails the call
/// (nothing is sent unsigned that should be signed).
pub fn post(
    url: &str,
    body: &[u8],
    secret: Option<&SecretRef>,
    headers: &[(&str, String)],
    timeout: Duration,
    now_unix: u64,
) -> Answer {
    let signature = match secret.map(read_secret).transpose() {
        Ok(s) => s.map(|s| sign(&s, now_unix, body)),
        Err(e) => return Answer::failed(e),
    };
    let mut req = plain_agent(timeout)
        .post(url)
        .header("Content-Type", "application/json")
        .header(TIMESTAMP_HEADER, now_unix.to_string());
    if let Some(sig) = &signature {
        req = req.header(SIGNATURE_HEADER, sig.as_str());
    }
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut buf = Vec::new();
            // The status decides; the body is only shown, and only its
            // first bytes are ever read.
            let _ = resp
                .body_mut()
                .as_reader()
                .take(MAX_ANSWER_BYTES)
                .read_to_end(&mut buf);
            Answer {
                status: Some(status),
                body: shown(&buf),
                error: None,
            }
        }
        Err(ureq::Error::Timeout(_)) => Answer::failed(format!(
            "no answer within {}s (the timeout)",
            timeout.as_secs_f64()
        )),
        Err(e) => Answer::failed(format!("unreachable: {e}")),
    }
}

/// [`post`] off the async workers.
pub(crate) async fn call(
    url: String,
    body: Vec<u8>,
    secret: Option<SecretRef>,
    headers: Vec<(&'static str, String)>,
    timeout: Duration,
    now_unix: u64,
) -> Answer {
    tokio::task::spawn_blocking(move || {
        post(&url, &body, secret.as_ref(), &headers, timeout, now_unix)
    })
    .await
    .unwrap_or_else(|e| Answer::failed(format!("the call did not finish: {e}")))
}

/// What a webhook's body says about the rollout.
#[derive(Debug, Clone)]
pub(crate) struct About<'a> {
    pub rollout: &'a str,
    pub phase: &'a str,
    pub stage: Option<usize>,
    pub weight: f64,
    pub generation: u64,
    pub verdict: Option<&'a canary_core::Verdict>,
    pub time: String,
}

/// The JSON body of a call to `hook`; `extra`'s keys are added.
pub(crate) fn hook_body(hook: &Webhook, about: &About<'_>, extra: Value) -> Vec<u8> {
    let mut v = json!({
        "rollout": about.rollout,
        "hook": hook.name,
        "type": hook.kind.name(),
        "phase": about.phase,
        "stage": about.stage,
        "weight": about.weight,
        "generation": about.generation,
        "verdict": about.verdict,
        "metadata": hook.metadata,
        "time": about.time,
    });
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The notification event a log event is, if any.
pub(crate) fn notification_event(event: &str) -> Option<NotificationEvent> {
    Some(match event {
        "start" => NotificationEvent::Started,
        "advance" | "promote" => NotificationEvent::StageAdvanced,
        "pause" => NotificationEvent::Paused,
        "resume" => NotificationEvent::Resumed,
        "succeed" | "promote_full" => NotificationEvent::Promoted,
        "rollback" => NotificationEvent::RolledBack,
        "abort" => NotificationEvent::Aborted,
        "await_gate" => NotificationEvent::GateWaiting,
        _ => return None,
    })
}

/// One logged event, as a notification tells it.
#[derive(Debug, Clone)]
pub(crate) struct Told<'a> {
    pub rollout: &'a str,
    pub event: NotificationEvent,
    pub log_event: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
    pub detail: &'a Value,
    pub time: String,
    pub at_ms: u64,
}

/// The evidence of the verdict in `detail`, in words, one line a metric.
fn evidence(detail: &Value) -> Vec<String> {
    detail
        .pointer("/verdict/metrics")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let name = m.get("name")?.as_str()?;
                    let outcome = m.get("outcome")?.as_str()?;
                    let reason = m.get("reason").and_then(Value::as_str).unwrap_or("");
                    Some(format!("{name} ({outcome}): {reason}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The body of a notification in `format`.
pub(crate) fn notification_body(format: NotificationFormat, t: &Told<'_>) -> String {
    let weight = |k: &str| t.detail.get(k).and_then(Value::as_f64);
    match format {
        NotificationFormat::Generic => json!({
            "kind": "canary.notification",
            "event": t.event.name(),
            "rollout": t.rollout,
            "log_event": t.log_event,
            "actor": t.actor,
            "reason": t.reason,
            "time": t.time,
            "at_ms": t.at_ms,
            "stage": t.detail.get("stage"),
            "weight_before": weight("weight_before"),
            "weight_after": weight("weight_after"),
            "evidence": evidence(t.detail),
            "detail": t.detail,
        })
        .to_string(),
        NotificationFormat::Slack => {
            let (mark, what) = match t.event {
                NotificationEvent::Started => (":rocket:", "started"),
                NotificationEvent::StageAdvanced => (":arrow_up:", "advanced a stage"),
                NotificationEvent::Paused => (":double_vertical_bar:", "paused"),
                NotificationEvent::Resumed => (":arrow_forward:", "resumed"),
                NotificationEvent::Promoted => (":white_check_mark:", "promoted to 100 %"),
                NotificationEvent::RolledBack => (":x:", "rolled back"),
                NotificationEvent::Aborted => (":octagonal_sign:", "aborted"),
                NotificationEvent::GateWaiting => (":hourglass:", "is waiting at a gate"),
            };
            let mut text = format!("{mark} Rollout *{}* {what}", t.rollout);
            if let (Some(b), Some(a)) = (weight("weight_before"), weight("weight_after")) {
                if a != b {
                    text.push_str(&format!(" (canary {b} % → {a} %)"));
                }
            }
            text.push_str(&format!(".\n*Why:* {}", t.reason));
            let ev = evidence(t.detail);
            if !ev.is_empty() {
                text.push_str("\n*Evidence:*");
                for e in ev {
                    text.push_str("\n• ");
                    text.push_str(&e);
                }
            }
            text.push_str(&format!("\n_by {} at {}_", t.actor, t.time));
            json!({ "text": text }).to_string()
        }
    }
}

#[cfg(test)]
mod tests;
