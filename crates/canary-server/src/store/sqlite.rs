//! The embedded default store: one SQLite file (compiled in; nothing to
//! install), in WAL mode with `synchronous = FULL`, so a write that returned
//! survives a kill -9 and a power cut. Each write is one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;

use super::{
    Attempted, Delivery, EventRecord, NewDelivery, NewEvent, NewRollout, RolloutRecord, Store,
    StoreError, Update, Write, Written,
};

/// The schema this build writes; a newer one on disk is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    finished INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    rollout TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (rollout, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    meta TEXT NOT NULL,
    queued_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    given_up INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (given_up, rollout, target, id);
CREATE TABLE IF NOT EXISTS journal (
    rollout TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (rollout, seq)
);
";

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Each written rollout's revision and last event and journal numbers,
    /// as committed: a write then needs no query before its own. Locked
    /// after `conn`, and only while `conn` is held. (One process writes
    /// the file: `canary serve` holds a lock on it.)
    tails: Mutex<HashMap<String, Tail>>,
}

/// Where a rollout's record and logs end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    revision: u64,
    events: i64,
    journal: i64,
}

/// The tail of `name` as stored.
fn read_tail(tx: &Connection, name: &str) -> Result<Tail, StoreError> {
    let revision: i64 = tx
        .prepare_cached("SELECT revision FROM rollouts WHERE name = ?1")
        .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
        .map_err(|e| backend(format!("read rollout `{name}`"))(e))?
        .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
    let last = |table: &str| -> Result<i64, StoreError> {
        tx.prepare_cached(&format!(
            "SELECT COALESCE(MAX(seq), 0) FROM {table} WHERE rollout = ?1"
        ))
        .and_then(|mut st| st.query_row([name], |r| r.get(0)))
        .map_err(backend(format!("read the {table}")))
    };
    Ok(Tail {
        revision: uint(revision),
        events: last("events")?,
        journal: last("journal")?,
    })
}

fn backend(message: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let message = message.into();
    move |e| StoreError::Backend {
        message,
        source: Box::new(e),
    }
}

fn json(v: &Value) -> String {
    v.to_string()
}

fn parse_json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend {
        message: "a stored JSON value does not parse".into(),
        source: Box::new(e),
    })
}

/// Milliseconds and revisions are stored as SQLite's signed 64-bit integers.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

type Row = (String, String, String, i64, i64, i64, bool);

fn record(row: Row) -> Result<RolloutRecord, StoreError> {
    let (name, spec, state, revision, created, updated, finished) = row;
    Ok(RolloutRecord {
        name,
        spec,
        state: parse_json(&state)?,
        revision: uint(revision),
        created_at_ms: uint(created),
        updated_at_ms: uint(updated),
        finished,
    })
}

const SELECT: &str =
    "SELECT name, spec, state, revision, created_at_ms, updated_at_ms, finished FROM rollouts";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn get_in(tx: &Connection, name: &str) -> Result<Option<RolloutRecord>, StoreError> {
    let row = tx
        .query_row(&format!("{SELECT} WHERE name = ?1"), [name], read_row)
        .optional()
        .map_err(backend(format!("read rollout `{name}`")))?;
    row.map(record).transpose()
}

/// The compare of compare-and-set: the stored revision must be `expected`.
fn check_revision(tx: &Connection, name: &str, expected: u64) -> Result<(), StoreError> {
    let found: i64 = tx
        .prepare_cached("SELECT revision FROM rollouts WHERE name = ?1")
        .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
        .map_err(|e| backend(format!("read rollout `{name}`"))(e))?
        .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
    let found = uint(found);
    if found != expected {
        return Err(StoreError::Conflict {
            name: name.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Appends `events` after number `last`; returns the new last number.
fn append(tx: &Connection, name: &str, events: &[NewEvent], last: i64) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(last);
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO events (rollout, seq, at_ms, actor, event, reason, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(backend("append to the event log"))?;
    for (i, e) in events.iter().enumerate() {
        stmt.execute(params![
            name,
            last + 1 + i as i64,
            int(e.at_ms),
            e.actor,
            e.event,
            e.reason,
            json(&e.detail)
        ])
        .map_err(backend("append to the event log"))?;
    }
    Ok(last + events.len() as i64)
}

/// Appends journal `entries` after number `last`; returns the new last.
fn append_journal(
    tx: &Connection,
    name: &str,
    entries: &[String],
    last: i64,
) -> Result<i64, StoreError> {
    if entries.is_empty() {
        return Ok(last);
    }
    let mut stmt = tx
        .prepare_cached("INSERT INTO journal (rollout, seq, entry) VALUES (?1, ?2, ?3)")
        .map_err(backend("append to the journal"))?;
    for (i, e) in entries.iter().enumerate() {
        stmt.execute(params![name, last + 1 + i as i64, e])
            .map_err(backend("append to the journal"))?;
    }
    Ok(last + entries.len() as i64)
}

/// Queues `deliveries` at `at_ms`.
fn enqueue(tx: &Connection, deliveries: &[NewDelivery], at_ms: u64) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (rollout, target, url, body, meta, queued_ms, deadline_ms, next_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6)",
        )
        .map_err(backend("queue in the outbox"))?;
    for d in deliveries {
        stmt.execute(params![
            d.rollout,
            d.target,
            d.url,
            d.body,
            json(&d.meta),
            int(at_ms),
            int(d.deadline_ms)
        ])
        .map_err(backend("queue in the outbox"))?;
    }
    Ok(())
}

/// Removes everything stored of `name`.
fn remove(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    for table in ["events", "journal"] {
        tx.execute(&format!("DELETE FROM {table} WHERE rollout = ?1"), [name])
            .map_err(backend(format!("remove the rollout's {table}")))?;
    }
    tx.execute("DELETE FROM rollouts WHERE name = ?1", [name])
        .map_err(backend("remove the rollout"))?;
    Ok(())
}

/// One compare-and-set write inside an open transaction, from the
/// rollout's `tail` (read from the store when not known); returns the new
/// tail.
fn update_in(
    tx: &Connection,
    name: &str,
    expected: u64,
    w: &Write<'_>,
    tail: Option<Tail>,
) -> Result<Tail, StoreError> {
    let tail = match tail {
        Some(t) => t,
        None => read_tail(tx, name)?,
    };
    let conflict = |found| StoreError::Conflict {
        name: name.to_string(),
        expected,
        found,
    };
    if tail.revision != expected {
        return Err(conflict(tail.revision));
    }
    let changed = tx
        .prepare_cached(
            "UPDATE rollouts SET state = ?2, finished = ?3, updated_at_ms = ?4, revision = revision + 1 \
             WHERE name = ?1 AND revision = ?5",
        )
        .and_then(|mut st| {
            st.execute(params![name, json(&w.state), w.finished, int(w.at_ms), int(expected)])
        })
        .map_err(|e| backend(format!("write rollout `{name}`"))(e))?;
    if changed != 1 {
        // Not as remembered: written by someone else. Say what is there.
        return Err(match read_tail(tx, name) {
            Ok(t) => conflict(t.revision),
            Err(e) => e,
        });
    }
    let events = append(tx, name, w.events, tail.events)?;
    let mut journal = tail.journal;
    if w.reset_journal {
        tx.prepare_cached("DELETE FROM journal WHERE rollout = ?1")
            .and_then(|mut st| st.execute([name]))
            .map_err(backend("empty the journal"))?;
        journal = 0;
    }
    let journal = append_journal(tx, name, w.journal, journal)?;
    enqueue(tx, w.outbox, w.at_ms)?;
    Ok(Tail {
        revision: expected + 1,
        events,
        journal,
    })
}

/// The same failure, for each write of a batch it failed.
fn copy(e: &StoreError) -> StoreError {
    StoreError::Backend {
        message: e.to_string(),
        source: "the batch's transaction failed".into(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be opened, is not a
    /// canary store, or was written by a newer canary.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open(path).map_err(backend(format!("cannot open {}", path.display())))?;
        Self::init(conn, &path.display().to_string())
    }

    /// A store in memory, gone when dropped (for tests and demos).
    ///
    /// # Errors
    /// [`StoreError::Backend`].
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend("cannot open a memory store"))?;
        Self::init(conn, ":memory:")
    }

    fn init(conn: Connection, name: &str) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend("set the busy timeout"))?;
        // WAL keeps readers off the writer's back; FULL makes every commit
        // durable before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend(format!("{name}: enable WAL")))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend(format!("{name}: set synchronous")))?;
        conn.execute_batch(SCHEMA).map_err(backend(format!(
            "{name}: not a canary store (cannot create the schema)"
        )))?;
        let found: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend(format!("{name}: read the schema version")))?;
        match found.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(backend(format!("{name}: write the schema version")))?;
            }
            Some(Ok(v)) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::Backend {
                    message: format!(
                        "{name}: schema version {v:?} is not {SCHEMA_VERSION}: written by another canary version"
                    ),
                    source: "unsupported schema".into(),
                })
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            tails: Mutex::new(HashMap::new()),
        })
    }

    fn tails(&self) -> MutexGuard<'_, HashMap<String, Tail>> {
        self.tails.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done
        // transaction behind (SQLite rolls it back), so the lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn begin(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("begin a transaction"))
}

fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().map_err(backend("commit"))
}

impl Store for SqliteStore {
    fn create(&self, r: NewRollout, first: NewEvent) -> Result<RolloutRecord, StoreError> {
        let mut conn = self.conn();
        self.tails().remove(&r.name);
        let tx = begin(&mut conn)?;
        if let Some(old) = get_in(&tx, &r.name)? {
            if !old.finished {
                return Err(StoreError::Exists(r.name));
            }
            remove(&tx, &r.name)?;
        }
        tx.execute(
            "INSERT INTO rollouts (name, spec, state, revision, created_at_ms, updated_at_ms, finished) \
             VALUES (?1, ?2, ?3, 1, ?4, ?4, 0)",
            params![r.name, r.spec, json(&r.state), int(r.at_ms)],
        )
        .map_err(backend(format!("store rollout `{}`", r.name)))?;
        append(&tx, &r.name, std::slice::from_ref(&first), 0)?;
        enqueue(&tx, &r.outbox, r.at_ms)?;
        let rec = get_in(&tx, &r.name)?.ok_or_else(|| StoreError::NotFound(r.name.clone()))?;
        commit(tx)?;
        Ok(rec)
    }

    fn get(&self, name: &str) -> Result<Option<RolloutRecord>, StoreError> {
        get_in(&self.conn(), name)
    }

    fn list(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("{SELECT} ORDER BY name"))
            .map_err(backend("list rollouts"))?;
        let rows = stmt
            .query_map([], read_row)
            .map_err(backend("list rollouts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend("list rollouts"))?;
        rows.into_iter().map(record).collect()
    }

    fn update(&self, name: &str, expected: u64, w: Write<'_>) -> Result<Written, StoreError> {
        let at = w.at_ms;
        let mut conn = self.conn();
        let mut tails = self.tails();
        let known = tails.get(name).copied();
        tails.remove(name);
        let tx = begin(&mut conn)?;
        let tail = update_in(&tx, name, expected, &w, known)?;
        commit(tx)?;
        tails.insert(name.to_string(), tail);
        Ok(Written {
            revision: tail.revision,
            updated_at_ms: at,
            last_event_seq: uint(tail.events),
        })
    }

    /// One transaction, one sync to disk, for the whole batch. Each write
    /// is checked (its compare-and-set) before any of it is written, so a
    /// refused one leaves nothing; a failure of the store itself fails the
    /// whole batch (nothing of it is committed).
    fn update_many(&self, updates: &[Update]) -> Vec<Result<Written, StoreError>> {
        let mut conn = self.conn();
        let mut tails = self.tails();
        let fail_all = |tails: &mut HashMap<String, Tail>, e: &StoreError| {
            for u in updates {
                tails.remove(&u.name);
            }
            updates.iter().map(|_| Err(copy(e))).collect()
        };
        let tx = match begin(&mut conn) {
            Ok(tx) => tx,
            Err(e) => return fail_all(&mut tails, &e),
        };
        let mut out = Vec::with_capacity(updates.len());
        let mut staged = Vec::with_capacity(updates.len());
        for u in updates {
            let known = staged
                .iter()
                .rev()
                .find(|(n, _): &&(&str, Tail)| *n == u.name.as_str())
                .map(|(_, t)| *t)
                .or_else(|| tails.get(&u.name).copied());
            match update_in(&tx, &u.name, u.expected, &u.as_write(), known) {
                Ok(tail) => {
                    staged.push((u.name.as_str(), tail));
                    out.push(Ok(Written {
                        revision: tail.revision,
                        updated_at_ms: u.at_ms,
                        last_event_seq: uint(tail.events),
                    }));
                }
                Err(e @ StoreError::Backend { .. }) => {
                    drop(tx);
                    return fail_all(&mut tails, &e);
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if let Err(e) = commit(tx) {
            return fail_all(&mut tails, &e);
        }
        for (n, t) in staged {
            tails.insert(n.to_string(), t);
        }
        out
    }

    fn events(&self, name: &str, after: u64) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, at_ms, actor, event, reason, detail FROM events \
                 WHERE rollout = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(backend("read the event log"))?;
        let rows = stmt
            .query_map(params![name, int(after)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(backend("read the event log"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend("read the event log"))?;
        rows.into_iter()
            .map(|(seq, at, actor, event, reason, detail)| {
                Ok(EventRecord {
                    rollout: name.to_string(),
                    seq: uint(seq),
                    event: NewEvent {
                        at_ms: uint(at),
                        actor,
                        event,
                        reason,
                        detail: parse_json(&detail)?,
                    },
                })
            })
            .collect()
    }

    fn journal(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT entry FROM journal WHERE rollout = ?1 ORDER BY seq")
            .map_err(backend("read the journal"))?;
        let rows = stmt
            .query_map([name], |r| r.get::<_, String>(0))
            .map_err(backend("read the journal"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend("read the journal"))?;
        Ok(rows)
    }

    fn delete(&self, name: &str, expected: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        self.tails().remove(name);
        let tx = begin(&mut conn)?;
        check_revision(&tx, name, expected)?;
        remove(&tx, name)?;
        commit(tx)
    }

    fn due_deliveries(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT o.id, o.attempts, o.queued_ms, o.rollout, o.target, o.url, o.body, o.meta, \
                 o.deadline_ms FROM outbox o \
                 WHERE o.given_up = 0 AND o.next_ms <= ?1 AND o.id = (SELECT MIN(p.id) FROM outbox p \
                 WHERE p.given_up = 0 AND p.rollout = o.rollout AND p.target = o.target) \
                 ORDER BY o.id LIMIT ?2",
            )
            .map_err(backend("read the outbox"))?;
        let rows = stmt
            .query_map(params![int(now_ms), int(limit as u64)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(backend("read the outbox"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend("read the outbox"))?;
        rows.into_iter()
            .map(
                |(id, attempts, queued, rollout, target, url, body, meta, deadline)| {
                    Ok(Delivery {
                        id: uint(id),
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        queued_ms: uint(queued),
                        delivery: NewDelivery {
                            rollout,
                            target,
                            url,
                            body,
                            meta: parse_json(&meta)?,
                            deadline_ms: uint(deadline),
                        },
                    })
                },
            )
            .collect()
    }

    fn attempted(&self, id: u64, outcome: Attempted) -> Result<(), StoreError> {
        let conn = self.conn();
        let r = match outcome {
            Attempted::Delivered => conn.execute("DELETE FROM outbox WHERE id = ?1", [int(id)]),
            Attempted::Retry { next_ms, error } => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 \
                 WHERE id = ?1",
                params![int(id), int(next_ms), error],
            ),
            Attempted::GaveUp { error } => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, given_up = 1, last_error = ?2 \
                 WHERE id = ?1",
                params![int(id), error],
            ),
        };
        r.map(|_| ()).map_err(backend("record a delivery attempt"))
    }

    fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT COALESCE(SUM(given_up = 0), 0), COALESCE(SUM(given_up = 1), 0) FROM outbox",
            [],
            |r| Ok((uint(r.get(0)?), uint(r.get(1)?))),
        )
        .map_err(backend("count the outbox"))
    }
}
