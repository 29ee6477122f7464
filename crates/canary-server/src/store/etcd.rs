//! The distributed store: the same records, logs, journal and outbox as
//! the SQLite store, as keys under a prefix on an etcd cluster, written
//! through etcd's JSON gateway ([`crate::etcd`]).
//!
//! # Keys (under the prefix `P`)
//! - `P` `rollout/<name>`: the record (spec, state, revision, times,
//!   finished) with where its logs end and their incarnations;
//! - `P` `event/<name>/<inc>/<seq>`: the event log (`inc` changes when
//!   a finished rollout is replaced, so the old log is removed and the new
//!   one written in one transaction);
//! - `P` `journal/<name>/<inc>/<seq>`: the journal (its own `inc`,
//!   changed by a reset);
//! - `P` `outbox/<id>` and `P` `outbox-seq`: the outbox and its next
//!   number;
//! - `P` `leader`: the election key ([`crate::ha`]).
//!
//! # Writes
//! Every write is one etcd transaction that compares the record's
//! modification revision with the one read (compare-and-set: a stale
//! writer fails and changes nothing) and, when the store belongs to an
//! elected replica, the election key's create revision with the writer's
//! term (fencing: a deposed leader's late write fails). The record, its
//! events, its journal entries and its deliveries are written together or
//! not at all; etcd makes a committed transaction durable on a quorum of
//! members before it answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Attempted, Delivery, EventRecord, NewDelivery, NewEvent, NewRollout, RolloutRecord, Store,
    StoreError, Write, Written,
};
use crate::etcd::{self, Client, EtcdError};
use crate::ha::Leadership;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Prefix of every key (`/canary/`): several installations can share
    /// a cluster under different prefixes.
    pub prefix: String,
    /// Time limit of one request to etcd.
    pub timeout: Duration,
}

/// A [`Store`] on etcd.
pub struct EtcdStore {
    client: Client,
    prefix: Vec<u8>,
    /// The election this store fences its writes with (none: a single
    /// writer, as with SQLite).
    leadership: Option<Arc<Leadership>>,
    /// Each rollout's record as last written here, with its modification
    /// revision: a write then needs no read before its own.
    cache: Mutex<HashMap<String, (i64, Rec)>>,
    /// Serializes writes (the outbox's number is read, then written).
    writing: Mutex<()>,
}

/// A rollout's record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    spec: String,
    state: Value,
    revision: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    finished: bool,
    /// Incarnation of the event log, and its last number.
    event_inc: u64,
    events: u64,
    /// Incarnation of the journal, and its last number.
    journal_inc: u64,
    journal: u64,
}

/// A queued delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Queued {
    delivery: NewDelivery,
    attempts: u32,
    queued_ms: u64,
    next_ms: u64,
    given_up: bool,
    last_error: String,
}

fn backend(message: impl Into<String>) -> impl FnOnce(EtcdError) -> StoreError {
    let message = message.into();
    move |e| StoreError::Backend {
        message,
        source: Box::new(e),
    }
}

fn unreadable(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Backend {
        message: format!("{what}: a stored value does not parse"),
        source: Box::new(e),
    }
}

fn record_of(name: &str, r: &Rec) -> RolloutRecord {
    RolloutRecord {
        name: name.to_string(),
        spec: r.spec.clone(),
        state: r.state.clone(),
        revision: r.revision,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        finished: r.finished,
    }
}

fn to_vec(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Where the state of a failed transaction stands.
enum Why {
    NotLeader,
    Record(Option<(i64, Rec)>),
}

impl EtcdStore {
    /// Connects to the cluster (one read, to check it answers).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when no endpoint answers.
    pub fn connect(
        config: &EtcdConfig,
        leadership: Option<Arc<Leadership>>,
    ) -> Result<EtcdStore, StoreError> {
        let client = Client::new(config.endpoints.clone(), config.timeout);
        Self::connect_with(client, &config.prefix, leadership)
    }

    /// [`EtcdStore::connect`] through a client already built (with TLS,
    /// say), under key prefix `prefix`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when etcd does not answer.
    pub fn connect_with(
        client: Client,
        prefix: &str,
        leadership: Option<Arc<Leadership>>,
    ) -> Result<EtcdStore, StoreError> {
        let endpoints = client.endpoints().join(",");
        let store = EtcdStore {
            client,
            prefix: prefix.as_bytes().to_vec(),
            leadership,
            cache: Mutex::new(HashMap::new()),
            writing: Mutex::new(()),
        };
        let probe = store.key(&["rollout", ""]);
        store
            .client
            .range(&probe, None, 0)
            .map_err(backend(format!("etcd at {endpoints}")))?;
        Ok(store)
    }

    fn key(&self, parts: &[&str]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(parts.join("/").as_bytes());
        k
    }

    fn record_key(&self, name: &str) -> Vec<u8> {
        self.key(&["rollout", name])
    }

    fn log_prefix(&self, kind: &str, name: &str, inc: u64) -> Vec<u8> {
        self.key(&[kind, name, &format!("{inc:016x}"), ""])
    }

    fn log_key(&self, kind: &str, name: &str, inc: u64, seq: u64) -> Vec<u8> {
        self.key(&[kind, name, &format!("{inc:016x}"), &format!("{seq:016x}")])
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, (i64, Rec)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fence compare of a write, or the refusal when this replica
    /// does not lead.
    fn fence(&self) -> Result<Vec<Value>, StoreError> {
        let Some(l) = &self.leadership else {
            return Ok(Vec::new());
        };
        match l.fence() {
            Some(term) => Ok(vec![etcd::compare("CREATE", l.key(), term)]),
            None => {
                l.refused_here();
                Err(StoreError::NotLeader(l.leader_words()))
            }
        }
    }

    /// The record of `name` and its modification revision, read.
    fn read(&self, name: &str) -> Result<Option<(i64, Rec)>, StoreError> {
        let v = self
            .client
            .range(&self.record_key(name), None, 0)
            .map_err(backend(format!("read rollout `{name}`")))?;
        Self::parse_record(name, &v)
    }

    fn parse_record(name: &str, range: &Value) -> Result<Option<(i64, Rec)>, StoreError> {
        match etcd::kvs(range).into_iter().next() {
            None => Ok(None),
            Some(kv) => {
                let r: Rec = serde_json::from_slice(&kv.value)
                    .map_err(|e| unreadable(&format!("rollout `{name}`"), e))?;
                Ok(Some((kv.mod_revision, r)))
            }
        }
    }

    /// Why a fenced transaction failed: its failure branch read the
    /// election key (operation 0) and the record (operation 1).
    fn why(&self, name: &str, answer: &Value) -> Result<Why, StoreError> {
        if self.fenced_out(answer) {
            return Ok(Why::NotLeader);
        }
        Ok(Why::Record(Self::parse_record(
            name,
            etcd::txn_range(answer, 1),
        )?))
    }

    /// Whether a failed transaction failed on its fence (the election
    /// key, read by operation 0 of its failure branch, is not this
    /// replica's term); counted.
    fn fenced_out(&self, answer: &Value) -> bool {
        let Some(l) = &self.leadership else {
            return false;
        };
        let held = etcd::kvs(etcd::txn_range(answer, 0))
            .into_iter()
            .next()
            .map(|kv| kv.create_revision);
        if held.is_some() && held == l.term() {
            return false;
        }
        l.refused_by_fence();
        true
    }

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader(self.leadership.as_ref().map_or_else(String::new, |l| {
            format!(
                "etcd refused the write: the election key is not this replica's term \
                         any more; {}",
                l.leader_words()
            )
        }))
    }

    /// The failure branch: the election key, then `record`.
    fn failure_reads(&self, record: &[u8]) -> Vec<Value> {
        let leader = self
            .leadership
            .as_ref()
            .map_or_else(|| self.key(&["leader"]), |l| l.key().to_vec());
        vec![etcd::get(&leader), etcd::get(record)]
    }

    /// Puts of `deliveries` queued at `at_ms`, with the outbox number's
    /// compare and put; none when there are none.
    fn enqueue(
        &self,
        deliveries: &[NewDelivery],
        at_ms: u64,
    ) -> Result<(Vec<Value>, Vec<Value>), StoreError> {
        if deliveries.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let seq_key = self.key(&["outbox-seq"]);
        let v = self
            .client
            .range(&seq_key, None, 0)
            .map_err(backend("read the outbox's number"))?;
        let (modrev, next) = match etcd::kvs(&v).into_iter().next() {
            Some(kv) => (
                kv.mod_revision,
                String::from_utf8_lossy(&kv.value)
                    .parse::<u64>()
                    .unwrap_or(1),
            ),
            None => (0, 1),
        };
        let mut ops = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            let id = next.saturating_add(i as u64);
            let q = Queued {
                delivery: d.clone(),
                attempts: 0,
                queued_ms: at_ms,
                next_ms: at_ms,
                given_up: false,
                last_error: String::new(),
            };
            ops.push(etcd::put(
                &self.key(&["outbox", &format!("{id:016x}")]),
                &to_vec(&q),
                0,
            ));
        }
        let after = next.saturating_add(deliveries.len() as u64);
        ops.push(etcd::put(&seq_key, after.to_string().as_bytes(), 0));
        Ok((vec![etcd::compare("MOD", &seq_key, modrev)], ops))
    }

    fn update_locked(
        &self,
        name: &str,
        expected: u64,
        w: &Write<'_>,
    ) -> Result<Written, StoreError> {
        let known = self.cache().remove(name);
        let (modrev, rec) = match known {
            Some(k) => k,
            None => self
                .read(name)?
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?,
        };
        if rec.revision != expected {
            return Err(StoreError::Conflict {
                name: name.to_string(),
                expected,
                found: rec.revision,
            });
        }
        let mut next = rec.clone();
        next.state = w.state.clone();
        next.finished = w.finished;
        next.updated_at_ms = w.at_ms;
        next.revision = expected.saturating_add(1);
        let mut ops = Vec::new();
        for e in w.events {
            next.events = next.events.saturating_add(1);
            ops.push(etcd::put(
                &self.log_key("event", name, next.event_inc, next.events),
                &to_vec(e),
                0,
            ));
        }
        if w.reset_journal {
            let old = self.log_prefix("journal", name, rec.journal_inc);
            ops.push(etcd::delete(&old, Some(&etcd::prefix_end(&old))));
            next.journal_inc = next.journal_inc.saturating_add(1);
            next.journal = 0;
        }
        for j in w.journal {
            next.journal = next.journal.saturating_add(1);
            ops.push(etcd::put(
                &self.log_key("journal", name, next.journal_inc, next.journal),
                j.as_bytes(),
                0,
            ));
        }
        let key = self.record_key(name);
        ops.push(etcd::put(&key, &to_vec(&next), 0));
        let mut compares = self.fence()?;
        compares.push(etcd::compare("MOD", &key, modrev));
        let (seq_cmp, seq_ops) = self.enqueue(w.outbox, w.at_ms)?;
        compares.extend(seq_cmp);
        ops.extend(seq_ops);
        let (ok, answer) = self
            .client
            .txn(compares, ops, self.failure_reads(&key))
            .map_err(backend(format!("write rollout `{name}`")))?;
        if ok {
            let written = Written {
                revision: next.revision,
                updated_at_ms: w.at_ms,
                last_event_seq: next.events,
            };
            self.cache()
                .insert(name.to_string(), (etcd::header_revision(&answer), next));
            return Ok(written);
        }
        match self.why(name, &answer)? {
            Why::NotLeader => Err(self.not_leader()),
            Why::Record(None) => Err(StoreError::NotFound(name.to_string())),
            Why::Record(Some((_, now))) if now.revision != expected => Err(StoreError::Conflict {
                name: name.to_string(),
                expected,
                found: now.revision,
            }),
            // The record is as read: the outbox's number moved meanwhile.
            Why::Record(Some(_)) => Err(StoreError::Backend {
                message: format!("write rollout `{name}`"),
                source: "the outbox's number changed meanwhile; try again".into(),
            }),
        }
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all_queued(&self) -> Result<Vec<(u64, Queued)>, StoreError> {
        let p = self.key(&["outbox", ""]);
        let v = self
            .client
            .range(&p, Some(&etcd::prefix_end(&p)), 0)
            .map_err(backend("read the outbox"))?;
        let mut out = Vec::new();
        for kv in etcd::kvs(&v) {
            let id =
                u64::from_str_radix(&String::from_utf8_lossy(&kv.key[p.len()..]), 16).unwrap_or(0);
            let q: Queued =
                serde_json::from_slice(&kv.value).map_err(|e| unreadable("the outbox", e))?;
            out.push((id, q));
        }
        Ok(out)
    }

    /// A log (`event` or `journal`) of `name` after number `after`, at
    /// the same revision as its record.
    fn log(&self, kind: &str, name: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let v = self
            .client
            .range(&self.record_key(name), None, 0)
            .map_err(backend(format!("read rollout `{name}`")))?;
        let at = etcd::header_revision(&v);
        let Some((_, rec)) = Self::parse_record(name, &v)? else {
            return Ok(Vec::new());
        };
        let inc = if kind == "event" {
            rec.event_inc
        } else {
            rec.journal_inc
        };
        let p = self.log_prefix(kind, name, inc);
        let from = self.log_key(kind, name, inc, after.saturating_add(1));
        let v = self
            .client
            .range(&from, Some(&etcd::prefix_end(&p)), at)
            .map_err(backend(format!("read the {kind} log of `{name}`")))?;
        Ok(etcd::kvs(&v)
            .into_iter()
            .map(|kv| {
                let seq = u64::from_str_radix(&String::from_utf8_lossy(&kv.key[p.len()..]), 16)
                    .unwrap_or(0);
                (seq, kv.value)
            })
            .collect())
    }
}

impl Store for EtcdStore {
    fn create(&self, r: NewRollout, first: NewEvent) -> Result<RolloutRecord, StoreError> {
        let _w = self.writing();
        self.cache().remove(&r.name);
        let key = self.record_key(&r.name);
        let old = self.read(&r.name)?;
        let mut ops = Vec::new();
        let (modrev, event_inc, journal_inc) = match &old {
            Some((_, o)) if !o.finished => return Err(StoreError::Exists(r.name)),
            Some((m, o)) => {
                for (kind, inc) in [("event", o.event_inc), ("journal", o.journal_inc)] {
                    let p = self.log_prefix(kind, &r.name, inc);
                    ops.push(etcd::delete(&p, Some(&etcd::prefix_end(&p))));
                }
                (
                    *m,
                    o.event_inc.saturating_add(1),
                    o.journal_inc.saturating_add(1),
                )
            }
            None => (0, 0, 0),
        };
        let rec = Rec {
            spec: r.spec.clone(),
            state: r.state.clone(),
            revision: 1,
            created_at_ms: r.at_ms,
            updated_at_ms: r.at_ms,
            finished: false,
            event_inc,
            events: 1,
            journal_inc,
            journal: 0,
        };
        ops.push(etcd::put(
            &self.log_key("event", &r.name, event_inc, 1),
            &to_vec(&first),
            0,
        ));
        ops.push(etcd::put(&key, &to_vec(&rec), 0));
        let mut compares = self.fence()?;
        compares.push(etcd::compare("MOD", &key, modrev));
        let (seq_cmp, seq_ops) = self.enqueue(&r.outbox, r.at_ms)?;
        compares.extend(seq_cmp);
        ops.extend(seq_ops);
        let (ok, answer) = self
            .client
            .txn(compares, ops, self.failure_reads(&key))
            .map_err(backend(format!("store rollout `{}`", r.name)))?;
        if !ok {
            return Err(match self.why(&r.name, &answer)? {
                Why::NotLeader => self.not_leader(),
                _ => StoreError::Exists(r.name),
            });
        }
        self.cache().insert(
            r.name.clone(),
            (etcd::header_revision(&answer), rec.clone()),
        );
        Ok(record_of(&r.name, &rec))
    }

    fn get(&self, name: &str) -> Result<Option<RolloutRecord>, StoreError> {
        Ok(self.read(name)?.map(|(_, r)| record_of(name, &r)))
    }

    fn list(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let p = self.key(&["rollout", ""]);
        let v = self
            .client
            .range(&p, Some(&etcd::prefix_end(&p)), 0)
            .map_err(backend("list rollouts"))?;
        etcd::kvs(&v)
            .into_iter()
            .map(|kv| {
                let name = String::from_utf8_lossy(&kv.key[p.len()..]).into_owned();
                let r: Rec = serde_json::from_slice(&kv.value)
                    .map_err(|e| unreadable(&format!("rollout `{name}`"), e))?;
                Ok(record_of(&name, &r))
            })
            .collect()
    }

    fn update(&self, name: &str, expected: u64, w: Write<'_>) -> Result<Written, StoreError> {
        let _w = self.writing();
        let r = self.update_locked(name, expected, &w);
        if r.is_err() {
            // What is stored is read again before the next write (a
            // timed-out transaction may have been committed).
            self.cache().remove(name);
        }
        r
    }

    fn journal(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .log("journal", name, 0)?
            .into_iter()
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect())
    }

    fn events(&self, name: &str, after: u64) -> Result<Vec<EventRecord>, StoreError> {
        self.log("event", name, after)?
            .into_iter()
            .map(|(seq, v)| {
                let event: NewEvent =
                    serde_json::from_slice(&v).map_err(|e| unreadable("the event log", e))?;
                Ok(EventRecord {
                    rollout: name.to_string(),
                    seq,
                    event,
                })
            })
            .collect()
    }

    fn delete(&self, name: &str, expected: u64) -> Result<(), StoreError> {
        let _w = self.writing();
        self.cache().remove(name);
        let (modrev, rec) = self
            .read(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        if rec.revision != expected {
            return Err(StoreError::Conflict {
                name: name.to_string(),
                expected,
                found: rec.revision,
            });
        }
        let key = self.record_key(name);
        let mut ops = vec![etcd::delete(&key, None)];
        for (kind, inc) in [("event", rec.event_inc), ("journal", rec.journal_inc)] {
            let p = self.log_prefix(kind, name, inc);
            ops.push(etcd::delete(&p, Some(&etcd::prefix_end(&p))));
        }
        let mut compares = self.fence()?;
        compares.push(etcd::compare("MOD", &key, modrev));
        let (ok, answer) = self
            .client
            .txn(compares, ops, self.failure_reads(&key))
            .map_err(backend(format!("remove rollout `{name}`")))?;
        if ok {
            return Ok(());
        }
        Err(match self.why(name, &answer)? {
            Why::NotLeader => self.not_leader(),
            Why::Record(None) => StoreError::NotFound(name.to_string()),
            Why::Record(Some((_, now))) => StoreError::Conflict {
                name: name.to_string(),
                expected,
                found: now.revision,
            },
        })
    }

    fn due_deliveries(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut heads: Vec<(u64, Queued)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Keys sort by number: the first open one of each rollout and
        // target is its head.
        for (id, q) in self.all_queued()? {
            if q.given_up {
                continue;
            }
            let k = (q.delivery.rollout.clone(), q.delivery.target.clone());
            if seen.insert(k) {
                heads.push((id, q));
            }
        }
        Ok(heads
            .into_iter()
            .filter(|(_, q)| q.next_ms <= now_ms)
            .take(limit)
            .map(|(id, q)| Delivery {
                id,
                attempts: q.attempts,
                queued_ms: q.queued_ms,
                delivery: q.delivery,
            })
            .collect())
    }

    fn attempted(&self, id: u64, outcome: Attempted) -> Result<(), StoreError> {
        let _w = self.writing();
        let key = self.key(&["outbox", &format!("{id:016x}")]);
        let v = self
            .client
            .range(&key, None, 0)
            .map_err(backend("read the outbox"))?;
        let Some(kv) = etcd::kvs(&v).into_iter().next() else {
            return Ok(());
        };
        let mut q: Queued =
            serde_json::from_slice(&kv.value).map_err(|e| unreadable("the outbox", e))?;
        let op = match outcome {
            Attempted::Delivered => etcd::delete(&key, None),
            Attempted::Retry { next_ms, error } => {
                q.attempts = q.attempts.saturating_add(1);
                q.next_ms = next_ms;
                q.last_error = error;
                etcd::put(&key, &to_vec(&q), 0)
            }
            Attempted::GaveUp { error } => {
                q.attempts = q.attempts.saturating_add(1);
                q.given_up = true;
                q.last_error = error;
                etcd::put(&key, &to_vec(&q), 0)
            }
        };
        let mut compares = self.fence()?;
        compares.push(etcd::compare("MOD", &key, kv.mod_revision));
        let (ok, answer) = self
            .client
            .txn(compares, vec![op], self.failure_reads(&key))
            .map_err(backend("record a delivery attempt"))?;
        // A failure other than the fence: recorded by someone else
        // meanwhile, nothing to add.
        if !ok && self.fenced_out(&answer) {
            return Err(self.not_leader());
        }
        Ok(())
    }

    fn confirm_term(&self) -> Result<(), StoreError> {
        let Some(l) = &self.leadership else {
            return Ok(());
        };
        // A transaction with the fence as its only compare and nothing to
        // write: it succeeds only while the election key is this term's.
        let compares = self.fence()?;
        let (ok, answer) = self
            .client
            .txn(compares, Vec::new(), vec![etcd::get(l.key())])
            .map_err(backend("confirm the leader's term"))?;
        if !ok {
            self.fenced_out(&answer);
            return Err(self.not_leader());
        }
        Ok(())
    }

    fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let all = self.all_queued()?;
        let given_up = all.iter().filter(|(_, q)| q.given_up).count() as u64;
        Ok((all.len() as u64 - given_up, given_up))
    }
}

#[cfg(test)]
mod tests;
