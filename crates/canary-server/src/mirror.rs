//! A follower's watch streams (with high availability).
//!
//! On the leader every runner publishes its changes as it makes them. A
//! follower has no runners: it looks at the store every campaign interval
//! and publishes, for each rollout whose revision moved since its last
//! look, the status rebuilt from the store (as its `GET` does) with the new
//! log entries, and a `deleted` change for a rollout that is gone. A
//! watcher of a follower therefore sees every change, up to one interval
//! late, without the judge's `look` (`/history` has it). A change between
//! a watcher's snapshot and the next look may come to it once more: the
//! same status again, never a lost one. While nobody watches, a look reads
//! only the list of rollouts; so the first change of each rollout after a
//! watcher connects to an idle follower carries its status but not the log
//! entries written before it (`/events` has them); every later one carries
//! its new entries, gapless.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::api::App;
use crate::rollout::{entry_of, placeholder, stored_status, Change};

/// What a follower saw at its last look: each rollout's revision and,
/// while someone watches, the number of its last log entry. `None` until
/// the first look, which publishes nothing (watchers get their snapshot
/// when they connect).
#[derive(Default)]
pub(crate) struct Mirror {
    seen: Option<HashMap<String, (u64, Option<u64>)>>,
}

/// While this replica follows, a look at the store every campaign
/// interval; forgets what it saw while it leads.
pub(crate) async fn follow(app: Arc<App>, l: Arc<crate::ha::Leadership>) {
    let mut m = Mirror::default();
    let every = l.options().interval;
    loop {
        tokio::time::sleep(every).await;
        if l.role() == crate::ha::Role::Follower {
            m.step(&app).await;
        } else {
            m.reset();
        }
    }
}

impl Mirror {
    /// Forgets what it saw (this replica led meanwhile).
    pub(crate) fn reset(&mut self) {
        self.seen = None;
    }

    /// One look at the store; publishes what changed since the last.
    pub(crate) async fn step(&mut self, app: &App) {
        let ctx = &app.ctx;
        let store = ctx.store.clone();
        let Ok(Ok(records)) = tokio::task::spawn_blocking(move || store.list()).await else {
            return;
        };
        let first = self.seen.is_none();
        let seen = self.seen.get_or_insert_with(HashMap::new);
        let watching = ctx.changes.receiver_count() > 0;
        let mut present = BTreeSet::new();
        for rec in records {
            present.insert(rec.name.clone());
            let before = seen.get(&rec.name).copied();
            if before.is_some_and(|(revision, _)| revision == rec.revision) {
                continue;
            }
            // Nobody watching: only the revision is kept (one list a look,
            // no log reads); the log's end is learnt again once someone
            // watches.
            if first || !watching {
                seen.insert(rec.name.clone(), (rec.revision, None));
                continue;
            }
            // A rollout new to this follower: its whole log is new. One
            // whose log end was not followed: read to learn it, sent without
            // entries (its status still is).
            let (after, send_entries) = match before {
                None => (0, true),
                Some((_, Some(seq))) => (seq, true),
                Some((_, None)) => (0, false),
            };
            let store = ctx.store.clone();
            let name = rec.name.clone();
            let Ok(Ok(events)) =
                tokio::task::spawn_blocking(move || store.events(&name, after)).await
            else {
                continue;
            };
            let last = events.last().map_or(after, |e| e.seq);
            seen.insert(rec.name.clone(), (rec.revision, Some(last)));
            let events = if send_entries { events } else { Vec::new() };
            let Ok(status) = stored_status(ctx, rec).await else {
                continue;
            };
            let _ = ctx.changes.send(Arc::new(Change {
                status,
                events: events.iter().map(entry_of).collect(),
                look: None,
                deleted: false,
            }));
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            let Some((revision, _)) = seen.remove(&name) else {
                continue;
            };
            if watching && !first {
                let mut status = placeholder(&name);
                status.revision = revision + 1;
                let _ = ctx.changes.send(Arc::new(Change {
                    status,
                    events: Vec::new(),
                    look: None,
                    deleted: true,
                }));
            }
        }
    }
}
