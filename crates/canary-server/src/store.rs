//! The store of `canary serve`: one record per rollout and an append-only
//! event log per rollout, behind a trait so that a distributed store (etcd,
//! with leader election) can stand in for the embedded SQLite one without
//! the controller noticing.
//!
//! # Guarantees every implementation gives
//! - **Compare-and-set.** Every write of a rollout names the revision it
//!   read; if the stored revision differs, the write fails with
//!   [`StoreError::Conflict`] and changes nothing. A stale writer (a second
//!   process, a deposed leader) cannot overwrite newer state.
//! - **Atomic with its events.** The events given to a write are appended
//!   in the same transaction as the state: both are there or neither is.
//! - **Gapless, ordered events.** A rollout's events are numbered 1, 2, 3, …
//!   in commit order; none is lost or duplicated.
//! - **Durable before return.** When a write returns `Ok`, it survives the
//!   process being killed (kill -9) at any instant afterwards.
//! - **A journal beside the log.** Each rollout also has a journal: the
//!   driver's inputs (each a JSON text, opaque to the store), appended in the same transaction as the
//!   state, in order, so that replaying them rebuilds the driver exactly.
//!   The journal is for the machine; the event log is for people.
//! - **An outbox.** Deliveries to send (notifications, `event` and
//!   `post-rollout` webhooks) are queued in the same transaction as the
//!   events they are about, so none is lost or queued twice by a crash.
//!   They are handed out in queue order per rollout and target, one at a
//!   time, and leave the queue only once they are marked delivered or
//!   given up.

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod etcd;
mod sqlite;

pub use etcd::{EtcdConfig, EtcdStore};
pub use sqlite::SqliteStore;

/// A rollout as first stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    /// Its name (unique among stored rollouts).
    pub name: String,
    /// The spec as submitted (YAML or JSON text).
    pub spec: String,
    /// The driver's state, opaque to the store.
    pub state: Value,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Deliveries to queue with it.
    pub outbox: Vec<NewDelivery>,
}

/// A delivery to queue in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The rollout it is about.
    pub rollout: String,
    /// Who receives it (a webhook's or a notification's name); deliveries
    /// of one rollout to one target go out in queue order.
    pub target: String,
    /// Where it is POSTed.
    pub url: String,
    /// The body.
    pub body: String,
    /// How the sender sends it (opaque to the store).
    pub meta: Value,
    /// Until when, ms since the epoch, it is retried.
    pub deadline_ms: u64,
}

/// A queued delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Its number in the outbox, increasing in queue order (stable across
    /// retries: receivers can drop duplicates by it).
    pub id: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued, ms since the epoch.
    pub queued_ms: u64,
    /// What it is.
    #[serde(flatten)]
    pub delivery: NewDelivery,
}

/// What became of an attempt at a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempted {
    /// The receiver took it: it leaves the queue.
    Delivered,
    /// It failed: try again at `next_ms` (ms since the epoch).
    Retry {
        /// When.
        next_ms: u64,
        /// What went wrong.
        error: String,
    },
    /// It failed past its deadline: it leaves the queue, kept as given up.
    GaveUp {
        /// What went wrong last.
        error: String,
    },
}

/// A stored rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutRecord {
    /// Its name.
    pub name: String,
    /// The spec as submitted.
    pub spec: String,
    /// The driver's state.
    pub state: Value,
    /// Starts at 1; each successful write adds 1.
    pub revision: u64,
    /// When it was created, ms since the epoch.
    pub created_at_ms: u64,
    /// When it was last written, ms since the epoch.
    pub updated_at_ms: u64,
    /// True once it reached a terminal phase.
    pub finished: bool,
}

/// An event to append to a rollout's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Who: `controller`, or the API caller.
    pub actor: String,
    /// What happened (`created`, `advance`, `pause`, `abort`, ...).
    pub event: String,
    /// Why, in words.
    pub reason: String,
    /// Anything else worth keeping (a verdict, the weights), as JSON.
    pub detail: Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// The rollout it belongs to.
    pub rollout: String,
    /// Its number in the rollout's log: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: NewEvent,
}

/// What a successful write left: the new revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The rollout's revision now.
    pub revision: u64,
    /// When it was written, ms since the epoch.
    pub updated_at_ms: u64,
    /// The number of the log's last event now (the write's events end
    /// there).
    pub last_event_seq: u64,
}

/// One compare-and-set write of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Write<'a> {
    /// The driver's new state.
    pub state: Value,
    /// True once the rollout reached a terminal phase.
    pub finished: bool,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Events to append to the log.
    pub events: &'a [NewEvent],
    /// Entries to append to the journal.
    pub journal: &'a [String],
    /// Empty the journal before appending (a rollout started over).
    pub reset_journal: bool,
    /// Deliveries to queue in the outbox.
    pub outbox: &'a [NewDelivery],
}

/// A [`Write`] that owns its parts, with the rollout and revision it is
/// for: one entry of [`Store::update_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The rollout.
    pub name: String,
    /// The revision the writer read.
    pub expected: u64,
    /// The new state.
    pub state: Value,
    /// True once the rollout reached a terminal phase.
    pub finished: bool,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Events to append to the log.
    pub events: Vec<NewEvent>,
    /// Entries to append to the journal.
    pub journal: Vec<String>,
    /// Empty the journal before appending.
    pub reset_journal: bool,
    /// Deliveries to queue in the outbox.
    pub outbox: Vec<NewDelivery>,
}

impl Update {
    /// The borrowed form.
    pub fn as_write(&self) -> Write<'_> {
        Write {
            state: self.state.clone(),
            finished: self.finished,
            at_ms: self.at_ms,
            events: &self.events,
            journal: &self.journal,
            reset_journal: self.reset_journal,
            outbox: &self.outbox,
        }
    }
}

/// What a store write can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An unfinished rollout of this name is stored already.
    #[error("rollout `{0}` exists and has not finished")]
    Exists(String),
    /// No rollout of this name is stored.
    #[error("no rollout `{0}`")]
    NotFound(String),
    /// The stored revision is not the one the writer read.
    #[error("rollout `{name}` is at revision {found}, not {expected}: written by someone else meanwhile")]
    Conflict {
        /// The rollout.
        name: String,
        /// The revision the writer read.
        expected: u64,
        /// The revision stored.
        found: u64,
    },
    /// This replica does not lead (high availability on etcd): it writes
    /// nothing; the words say who leads.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The store itself failed (disk, corruption, connection).
    #[error("store: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where `canary serve` keeps its rollouts. See the module docs for the
/// guarantees.
pub trait Store: Send + Sync + 'static {
    /// Stores a new rollout at revision 1, with `first` as event 1. A
    /// finished rollout of the same name is replaced (its log with it).
    ///
    /// # Errors
    /// [`StoreError::Exists`] when an unfinished one has the name.
    fn create(&self, rollout: NewRollout, first: NewEvent) -> Result<RolloutRecord, StoreError>;

    /// The rollout named `name`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn get(&self, name: &str) -> Result<Option<RolloutRecord>, StoreError>;

    /// Every stored rollout, by name.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn list(&self) -> Result<Vec<RolloutRecord>, StoreError>;

    /// Carries out `write` if the stored revision is `expected`: the state,
    /// its events and its journal entries in one transaction. Returns the
    /// new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (nothing written), [`StoreError::NotFound`].
    fn update(&self, name: &str, expected: u64, write: Write<'_>) -> Result<Written, StoreError>;

    /// Carries out many writes, each as [`Store::update`] would (each its
    /// own compare-and-set), returning each one's result in order. A store
    /// may make them durable together (one transaction, one sync to disk):
    /// that is what lets one server drive many rollouts.
    fn update_many(&self, updates: &[Update]) -> Vec<Result<Written, StoreError>> {
        updates
            .iter()
            .map(|u| self.update(&u.name, u.expected, u.as_write()))
            .collect()
    }

    /// The rollout's journal, oldest entry first.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn journal(&self, name: &str) -> Result<Vec<String>, StoreError>;

    /// The rollout's events with `seq > after`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn events(&self, name: &str, after: u64) -> Result<Vec<EventRecord>, StoreError>;

    /// Removes the rollout, its log and its journal if the stored revision is `expected`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], [`StoreError::NotFound`].
    fn delete(&self, name: &str, expected: u64) -> Result<(), StoreError>;

    /// The deliveries due at `now_ms`: of each rollout and target, the
    /// oldest queued one, if its next attempt is due; at most `limit`, in
    /// queue order. (A rollout's deleted record leaves its deliveries
    /// queued.)
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn due_deliveries(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Records what became of an attempt at delivery `id`.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn attempted(&self, id: u64, outcome: Attempted) -> Result<(), StoreError>;

    /// Confirms, just before the traffic layer is moved, that this server
    /// still holds the term its writes are fenced with, so a deposed
    /// leader that has not noticed yet does not move traffic. A store
    /// without leader election has nothing to confirm.
    ///
    /// # Errors
    /// [`StoreError::NotLeader`] when the term has passed to another
    /// replica, [`StoreError::Backend`] when it cannot be confirmed.
    fn confirm_term(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many deliveries are queued, and how many were given up.
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    fn outbox_counts(&self) -> Result<(u64, u64), StoreError>;
}

#[cfg(test)]
mod tests;
