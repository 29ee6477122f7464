//! The outbox's sender: delivers what the rollouts queued in the store
//! (notifications, `event` and `post-rollout` webhooks) at least once.
//!
//! A delivery is queued in the transaction that logs its event, so a crash
//! neither loses nor doubles it in the queue. The sender takes, of each
//! rollout and target, the oldest queued delivery whose attempt is due,
//! POSTs it (signed, bounded by its timeout), and marks it delivered on a
//! 2xx; otherwise it is tried again after a backoff (0.25 s, doubling, at
//! most [`MAX_BACKOFF`]) until its deadline, then given up (and said on
//! stderr). A delivery is marked only after its answer, so a crash between
//! the two sends it again: at least once, in order per rollout and target.

use std::sync::Arc;
use std::time::Duration;

use canary_core::spec::SecretRef;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::hooks::{call, DELIVERY_HEADER};
use crate::rollout::{Ctx, WallClock};
use crate::store::{Attempted, Delivery, Store};

/// The longest wait between two attempts at a delivery.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How often the queue is looked at when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(250);

/// How a delivery is sent (the store keeps it opaque).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// One attempt's timeout, ms.
    pub timeout_ms: u64,
    /// The signing secret's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

/// The wait before attempt `attempts + 1`.
fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << attempts.min(16))).min(MAX_BACKOFF)
}

/// Starts the sender for `ctx`'s store; it runs until the task is aborted.
/// Each attempt's outcome is counted in `ctx`'s counters (`/metrics`).
pub(crate) fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let store = ctx.store.clone();
    let clock = ctx.clock.clone();
    let wake: Arc<Notify> = ctx.outbox_wake.clone();
    tokio::spawn(async move {
        loop {
            let now = clock();
            let s = store.clone();
            let due = tokio::task::spawn_blocking(move || s.due_deliveries(now, 64)).await;
            let due = match due {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    eprintln!("outbox: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = wake.notified() => {}
                }
                continue;
            }
            let sends = due
                .into_iter()
                .map(|d| deliver(store.clone(), clock.clone(), d));
            let outcomes = futures_util::future::join_all(sends).await;
            let mut c = ctx.counters.lock().unwrap_or_else(|p| p.into_inner());
            for o in outcomes {
                *c.deliveries.entry(o).or_default() += 1;
            }
        }
    })
}

/// One attempt at `d`, and its outcome recorded; gives the outcome's name.
async fn deliver(store: Arc<dyn Store>, clock: WallClock, d: Delivery) -> &'static str {
    let meta: Option<Meta> = serde_json::from_value(d.delivery.meta.clone()).ok();
    let now = clock();
    let answer = match &meta {
        Some(m) => {
            call(
                d.delivery.url.clone(),
                d.delivery.body.clone().into_bytes(),
                m.secret.clone(),
                vec![(DELIVERY_HEADER, d.id.to_string())],
                Duration::from_millis(m.timeout_ms.max(1)),
                now / 1000,
            )
            .await
        }
        None => crate::hooks::Answer {
            status: None,
            body: String::new(),
            error: Some("the queued delivery is unreadable".into()),
        },
    };
    let after = clock();
    let outcome = if answer.ok() {
        Attempted::Delivered
    } else if after >= d.delivery.deadline_ms || meta.is_none() {
        eprintln!(
            "outbox: gave up delivering #{} of rollout `{}` to `{}` after {} attempts: {}",
            d.id,
            d.delivery.rollout,
            d.delivery.target,
            d.attempts + 1,
            answer.describe()
        );
        Attempted::GaveUp {
            error: answer.describe(),
        }
    } else {
        Attempted::Retry {
            next_ms: after + backoff(d.attempts).as_millis() as u64,
            error: answer.describe(),
        }
    };
    let name = match outcome {
        Attempted::Delivered => "delivered",
        Attempted::Retry { .. } => "retry",
        Attempted::GaveUp { .. } => "gave_up",
    };
    let id = d.id;
    let r = tokio::task::spawn_blocking(move || store.attempted(id, outcome)).await;
    if let Ok(Err(e)) = r {
        eprintln!("outbox: {e}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
