use serde_json::json;

use super::*;

pub(super) fn event(n: u64, what: &str) -> NewEvent {
    NewEvent {
        at_ms: n,
        actor: "controller".into(),
        event: what.into(),
        reason: format!("because {n}"),
        detail: json!({"n": n}),
    }
}

/// A journal entry.
pub(super) fn j(t: &str) -> String {
    format!("{{\"input\": {t:?}}}")
}

pub(super) fn write<'a>(
    state: serde_json::Value,
    finished: bool,
    at_ms: u64,
    events: &'a [NewEvent],
    journal: &'a [String],
) -> Write<'a> {
    Write {
        state,
        finished,
        at_ms,
        events,
        journal,
        reset_journal: false,
        outbox: &[],
    }
}

pub(super) fn rollout(name: &str) -> NewRollout {
    NewRollout {
        name: name.into(),
        spec: "name: x\nstages: [{weight: 100, duration: 1m}]\n".into(),
        state: json!({"phase": "pending"}),
        at_ms: 1,
        outbox: Vec::new(),
    }
}

/// The guarantees of the module docs, for any store.
pub(super) fn guarantees(s: &dyn Store) {
    let r = s.create(rollout("a"), event(1, "created")).unwrap();
    assert_eq!(r.revision, 1);
    assert!(!r.finished);
    assert!(matches!(
        s.create(rollout("a"), event(2, "created")),
        Err(StoreError::Exists(_))
    ));

    // Compare-and-set: a writer with a stale revision changes nothing.
    let r2 = s
        .update(
            "a",
            1,
            write(
                json!({"phase": "progressing"}),
                false,
                5,
                &[event(5, "start")],
                &[j("1"), j("2")],
            ),
        )
        .unwrap();
    assert_eq!(r2.revision, 2);
    assert_eq!(r2.updated_at_ms, 5);
    let stale = s.update(
        "a",
        1,
        write(
            json!({"phase": "stale"}),
            true,
            6,
            &[event(6, "stale")],
            &[j("stale")],
        ),
    );
    assert!(
        matches!(
            stale,
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let now = s.get("a").unwrap().unwrap();
    assert_eq!(now.state, json!({"phase": "progressing"}));
    assert_eq!(
        s.events("a", 0).unwrap().len(),
        2,
        "the stale write's event is not logged"
    );
    assert_eq!(
        s.journal("a").unwrap(),
        vec![j("1"), j("2")],
        "nor its journal entry"
    );

    // Events: gapless, ordered, atomic with the state.
    s.update(
        "a",
        2,
        write(
            json!({"phase": "succeeded"}),
            true,
            9,
            &[event(7, "advance"), event(9, "succeed")],
            &[j("3")],
        ),
    )
    .unwrap();
    assert_eq!(s.journal("a").unwrap().len(), 3, "appended in order");
    assert_eq!(s.journal("a").unwrap()[2], j("3"));
    let log = s.events("a", 0).unwrap();
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(log[3].event.event, "succeed");
    assert_eq!(log[3].event.detail, json!({"n": 9}));
    assert_eq!(s.events("a", 2).unwrap().len(), 2);

    // A finished rollout's name may be used again: a fresh record and log.
    let again = s.create(rollout("a"), event(10, "created")).unwrap();
    assert_eq!(again.revision, 1);
    assert_eq!(s.events("a", 0).unwrap().len(), 1);
    assert!(s.journal("a").unwrap().is_empty(), "and an empty journal");

    // A reset empties the journal before appending, in the same write.
    s.update("a", 1, write(json!({}), false, 11, &[], &[j("1"), j("2")]))
        .unwrap();
    let three = [j("3")];
    let mut w = write(json!({}), false, 12, &[], &three);
    w.reset_journal = true;
    s.update("a", 2, w).unwrap();
    assert_eq!(s.journal("a").unwrap(), vec![j("3")]);

    assert!(matches!(
        s.update("nope", 1, write(json!({}), false, 1, &[], &[])),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(s.delete("a", 7), Err(StoreError::Conflict { .. })));
    assert!(
        !s.journal("a").unwrap().is_empty(),
        "a refused delete keeps it"
    );
    s.create(rollout("b"), event(1, "created")).unwrap();
    let names: Vec<String> = s.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["a", "b"]);
    s.delete("a", 3).unwrap();
    assert!(s.get("a").unwrap().is_none());
    assert!(s.events("a", 0).unwrap().is_empty());
    assert!(s.journal("a").unwrap().is_empty());
}

#[test]
fn sqlite_in_memory_keeps_the_guarantees() {
    guarantees(&SqliteStore::in_memory().unwrap());
}

#[test]
fn sqlite_file_keeps_the_guarantees_and_survives_reopening() {
    let dir = std::env::temp_dir().join(format!("canary-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("canary.db");
    guarantees(&SqliteStore::open(&path).unwrap());
    let reopened = SqliteStore::open(&path).unwrap();
    let b = reopened.get("b").unwrap().unwrap();
    assert_eq!(b.revision, 1);
    assert_eq!(reopened.events("b", 0).unwrap()[0].event.event, "created");
    drop(reopened);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_that_is_not_a_store_is_refused_with_its_name() {
    let dir = std::env::temp_dir().join(format!("canary-notstore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("junk.db");
    std::fs::write(&path, vec![0x55u8; 8192]).unwrap();
    let e = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(e.contains("junk.db"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch: each write its own compare-and-set; a refused one changes
/// nothing of its own and leaves the others written.
#[test]
fn update_many_is_each_write_on_its_own_in_one_commit() {
    batches(&SqliteStore::in_memory().unwrap());
}

/// The checks of [`update_many_is_each_write_on_its_own_in_one_commit`],
/// for any store.
pub(super) fn batches(s: &dyn Store) {
    s.create(rollout("a"), event(1, "created")).unwrap();
    s.create(rollout("b"), event(1, "created")).unwrap();
    let up = |name: &str, expected: u64, n: u64| Update {
        name: name.into(),
        expected,
        state: json!({"n": n}),
        finished: false,
        at_ms: n,
        events: vec![event(n, "tick")],
        journal: vec![n.to_string()],
        reset_journal: false,
        outbox: Vec::new(),
    };
    let r = s.update_many(&[
        up("a", 1, 2),
        up("b", 7, 3),
        up("nope", 1, 4),
        up("b", 1, 5),
    ]);
    assert_eq!(r[0].as_ref().unwrap().revision, 2);
    assert!(
        matches!(r[1], Err(StoreError::Conflict { .. })),
        "{:?}",
        r[1]
    );
    assert!(matches!(r[2], Err(StoreError::NotFound(_))), "{:?}", r[2]);
    assert_eq!(r[3].as_ref().unwrap().revision, 2);
    assert_eq!(s.get("b").unwrap().unwrap().state, json!({"n": 5}));
    assert_eq!(
        s.journal("b").unwrap(),
        vec!["5".to_string()],
        "the refused write left nothing"
    );
    let seqs: Vec<u64> = s.events("b", 0).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
}

/// The remembered revision is only a shortcut: a write by another handle
/// on the same file is still seen, and the stale writer gets a conflict.
#[test]
fn a_stale_remembered_revision_is_still_a_conflict() {
    let dir = std::env::temp_dir().join(format!("canary-store-tails-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.db");
    let a = SqliteStore::open(&path).unwrap();
    a.create(rollout("r"), event(1, "created")).unwrap();
    a.update(
        "r",
        1,
        write(json!(1), false, 2, &[event(2, "x")], &[j("1")]),
    )
    .unwrap();
    let b = SqliteStore::open(&path).unwrap();
    b.update(
        "r",
        2,
        write(json!(2), false, 3, &[event(3, "y")], &[j("2")]),
    )
    .unwrap();
    let stale = a.update("r", 2, write(json!(3), false, 4, &[], &[j("3")]));
    assert!(
        matches!(
            stale,
            Err(StoreError::Conflict {
                expected: 2,
                found: 3,
                ..
            })
        ),
        "{stale:?}"
    );
    // Once it has read the revision again it writes after b's entries.
    a.update(
        "r",
        3,
        write(json!(4), false, 5, &[event(5, "z")], &[j("4")]),
    )
    .unwrap();
    let seqs: Vec<u64> = a.events("r", 0).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(a.journal("r").unwrap(), vec![j("1"), j("2"), j("4")]);
    drop((a, b));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn delivery(rollout: &str, target: &str, body: &str) -> NewDelivery {
    NewDelivery {
        rollout: rollout.into(),
        target: target.into(),
        url: "http://127.0.0.1:9/x".into(),
        body: body.into(),
        meta: json!({"timeout_ms": 1000}),
        deadline_ms: 1_000_000,
    }
}

/// The outbox: queued with the write, handed out oldest first per rollout
/// and target (a failing one holds the ones after it), gone once delivered.
#[test]
fn outbox_is_queued_with_its_write_and_handed_out_in_order_per_target() {
    outbox(&SqliteStore::in_memory().unwrap());
}

/// The checks of the outbox test, for any store.
pub(super) fn outbox(s: &dyn Store) {
    let mut r = rollout("a");
    r.outbox = vec![delivery("a", "n1", "created")];
    s.create(r, event(1, "created")).unwrap();
    let out = [
        delivery("a", "n1", "one"),
        delivery("a", "n2", "one"),
        delivery("a", "n1", "two"),
    ];
    let mut w = write(json!({}), false, 5, &[], &[]);
    w.outbox = &out;
    s.update("a", 1, w).unwrap();
    // A refused write queues nothing.
    let mut w = write(json!({}), false, 6, &[], &[]);
    w.outbox = &out;
    assert!(matches!(
        s.update("a", 1, w),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.outbox_counts().unwrap(), (4, 0));

    let due = s.due_deliveries(10, 100).unwrap();
    let bodies: Vec<_> = due.iter().map(|d| d.delivery.body.as_str()).collect();
    assert_eq!(bodies, ["created", "one"], "the oldest of each target");
    assert_eq!(due[0].delivery.target, "n1");
    assert_eq!(due[0].queued_ms, 1);
    // n1's first fails: n1's second waits behind it.
    s.attempted(
        due[0].id,
        Attempted::Retry {
            next_ms: 50,
            error: "HTTP 500".into(),
        },
    )
    .unwrap();
    s.attempted(due[1].id, Attempted::Delivered).unwrap();
    assert!(s.due_deliveries(20, 100).unwrap().is_empty());
    let again = s.due_deliveries(50, 100).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, due[0].id);
    assert_eq!(again[0].attempts, 1);
    s.attempted(again[0].id, Attempted::Delivered).unwrap();
    let next = s.due_deliveries(50, 100).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (
            next[0].delivery.target.as_str(),
            next[0].delivery.body.as_str()
        ),
        ("n1", "one")
    );
    s.attempted(next[0].id, Attempted::Delivered).unwrap();
    let next = s.due_deliveries(50, 100).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].delivery.body, "two");
    s.attempted(
        next[0].id,
        Attempted::GaveUp {
            error: "deadline".into(),
        },
    )
    .unwrap();
    assert!(s.due_deliveries(u64::MAX >> 2, 100).unwrap().is_empty());
    assert_eq!(s.outbox_counts().unwrap(), (0, 1));
}
