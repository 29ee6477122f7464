//! The etcd store against a real one-member etcd on loopback (skipped,
//! saying so, when etcd is not installed, unless `CANARY_REQUIRE_ETCD`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::super::tests::{batches, event, guarantees, j, outbox, rollout, write};
use super::*;
use crate::ha::{Campaign, HaOptions, Leadership};

/// One etcd member with its data in a scratch directory, killed by its
/// PID when dropped.
struct Etcd {
    child: Child,
    dir: PathBuf,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start(tag: &str) -> Option<Etcd> {
        let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CANARY_REQUIRE_ETCD").is_none(),
                "CANARY_REQUIRE_ETCD is set but etcd is not installed"
            );
            eprintln!("skipped: etcd is not installed (apt-get install etcd-server etcd-client)");
            return None;
        };
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("canary-etcd-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let child = Command::new(bin)
            .args(["--name", "u"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=u=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Etcd { child, dir, url };
        let c = Client::new(vec![e.url.clone()], Duration::from_secs(1));
        for _ in 0..200 {
            if c.range(b"probe", None, 0).is_ok() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd at {} did not answer", e.url);
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.url.clone()],
            prefix: prefix.into(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn etcd_keeps_the_guarantees_of_every_store() {
    let Some(e) = Etcd::start("guarantees") else {
        return;
    };
    guarantees(&EtcdStore::connect(&e.config("/g/"), None).unwrap());
    batches(&EtcdStore::connect(&e.config("/b/"), None).unwrap());
    outbox(&EtcdStore::connect(&e.config("/o/"), None).unwrap());
}

/// Two handles on the same keys: the one whose remembered revision is old
/// gets a conflict and writes nothing; once it reads again it writes after
/// the other's entries. Two prefixes do not see each other.
#[test]
fn a_stale_writer_on_etcd_gets_a_conflict() {
    let Some(e) = Etcd::start("stale") else {
        return;
    };
    let a = EtcdStore::connect(&e.config("/s/"), None).unwrap();
    let b = EtcdStore::connect(&e.config("/s/"), None).unwrap();
    a.create(rollout("r"), event(1, "created")).unwrap();
    a.update(
        "r",
        1,
        write(json!(1), false, 2, &[event(2, "x")], &[j("1")]),
    )
    .unwrap();
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
    a.update(
        "r",
        3,
        write(json!(4), false, 5, &[event(5, "z")], &[j("4")]),
    )
    .unwrap();
    let seqs: Vec<u64> = a.events("r", 0).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(a.journal("r").unwrap(), vec![j("1"), j("2"), j("4")]);
    let other = EtcdStore::connect(&e.config("/other/"), None).unwrap();
    assert!(other.list().unwrap().is_empty());
}

/// A replica's election on `url`, on a clock the test moves.
fn replica(url: &str, id: &str, now: Arc<AtomicU64>) -> Arc<Leadership> {
    let clock = now.clone();
    Arc::new(Leadership::new(
        Client::new(vec![url.to_string()], Duration::from_secs(2)),
        "/f/",
        HaOptions {
            id: id.into(),
            url: Some(format!("http://{id}")),
            ttl: Duration::from_secs(10),
            interval: Duration::from_millis(100),
            clock: Arc::new(move || Duration::from_millis(clock.load(Ordering::SeqCst))),
        },
    ))
}

/// Fencing: a leader whose term ended (its lease gone, here revoked) but
/// which still believes it leads has its writes refused by etcd, not
/// by its own clock; the new leader writes; the old one's election says
/// who leads now. A follower writes nothing at all.
#[test]
fn etcd_refuses_the_writes_of_a_deposed_leader() {
    let Some(e) = Etcd::start("fence") else {
        return;
    };
    let now = Arc::new(AtomicU64::new(1_000));
    let a = replica(&e.url, "a", now.clone());
    let b = replica(&e.url, "b", now.clone());
    let Campaign::Won(term_a) = a.campaign().unwrap() else {
        panic!("the first campaign wins");
    };
    assert!(matches!(b.campaign().unwrap(), Campaign::Held(h, t) if h.id == "a" && t == term_a));
    let sa = EtcdStore::connect(&e.config("/f/"), Some(a.clone())).unwrap();
    let sb = EtcdStore::connect(&e.config("/f/"), Some(b.clone())).unwrap();
    sa.create(rollout("r"), event(1, "created")).unwrap();
    sa.update("r", 1, write(json!(1), false, 2, &[event(2, "x")], &[]))
        .unwrap();
    // The leader may move traffic; a follower may not.
    sa.confirm_term().unwrap();
    assert!(matches!(sb.confirm_term(), Err(StoreError::NotLeader(_))));
    // A follower: refused before anything is sent.
    let r = sb.update("r", 2, write(json!("b"), false, 3, &[], &[]));
    assert!(matches!(r, Err(StoreError::NotLeader(_))), "{r:?}");
    // Both refusals counted: the confirmation and the write.
    assert_eq!(b.status().writes_refused_local, 2);

    // a's lease ends (as when it expires while a is paused); b is elected.
    let lease = a_lease(&e.url);
    Client::new(vec![e.url.clone()], Duration::from_secs(2))
        .call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
        .unwrap();
    let Campaign::Won(term_b) = b.campaign().unwrap() else {
        panic!("the key is free: b wins");
    };
    assert!(term_b > term_a);
    // a still believes it leads (its clock says its renewal is recent).
    assert_eq!(a.fence(), Some(term_a));
    let late = sa.update(
        "r",
        2,
        write(json!("late"), true, 4, &[event(4, "late")], &[j("late")]),
    );
    assert!(matches!(late, Err(StoreError::NotLeader(_))), "{late:?}");
    assert_eq!(a.status().writes_refused_fenced, 1);
    // Nor may it move traffic: etcd refuses its term before the traffic
    // layer is called.
    let moved = sa.confirm_term();
    assert!(matches!(moved, Err(StoreError::NotLeader(_))), "{moved:?}");
    assert_eq!(a.status().writes_refused_fenced, 2);
    sb.confirm_term().unwrap();
    let late = sa.delete("r", 2);
    assert!(matches!(late, Err(StoreError::NotLeader(_))), "{late:?}");
    // Nothing of it landed; the new leader writes on.
    let rec = sb.get("r").unwrap().unwrap();
    assert_eq!((rec.revision, rec.state.clone()), (2, json!(1)));
    assert_eq!(sb.events("r", 0).unwrap().len(), 2);
    assert!(sb.journal("r").unwrap().is_empty());
    sb.update("r", 2, write(json!("b"), false, 5, &[event(5, "b")], &[]))
        .unwrap();
    // a's renewal finds its lease gone.
    assert!(!a.renew().unwrap());
    // Past the step-down margin a refuses by itself.
    now.fetch_add(5_000, Ordering::SeqCst);
    assert_eq!(a.fence(), None);
    assert_eq!(b.fence(), None, "b too, without a renewal");
    assert!(b.renew().unwrap());
    assert_eq!(b.fence(), Some(term_b));
}

/// The lease bound to the election key `/f/leader`.
fn a_lease(url: &str) -> i64 {
    let c = Client::new(vec![url.to_string()], Duration::from_secs(2));
    let v = c.range(b"/f/leader", None, 0).unwrap();
    etcd::int(&v["kvs"][0]["lease"])
}

/// A follower takes over a lease that expired without waiting for etcd's
/// sweep to delete the key, and never before the lease could have
/// expired. On the real clock (etcd times the lease on its own): `a` wins
/// with a lease of 2 s and never renews it; `b` looks every 50 ms.
#[test]
fn a_follower_revokes_an_expired_lease_never_before_it_expired() {
    let Some(e) = Etcd::start("expiry") else {
        return;
    };
    #[allow(clippy::disallowed_methods)] // etcd's lease runs on real time
    let origin = std::time::Instant::now();
    let real = move || origin.elapsed();
    let on = |id: &str| {
        Arc::new(Leadership::new(
            Client::new(vec![e.url.clone()], Duration::from_secs(2)),
            "/x/",
            HaOptions {
                id: id.into(),
                url: Some(format!("http://{id}")),
                ttl: Duration::from_secs(2),
                interval: Duration::from_millis(100),
                clock: Arc::new(real),
            },
        ))
    };
    let (a, b) = (on("a"), on("b"));
    let sent = real();
    let Campaign::Won(term_a) = a.campaign().unwrap() else {
        panic!("the first campaign wins");
    };
    // etcd granted the lease after `sent`: it cannot end before sent + 2 s.
    let earliest_end = sent + Duration::from_secs(2);
    let (term_b, at) = loop {
        let before = real();
        match b.campaign().unwrap() {
            Campaign::Won(t) => break (t, before),
            Campaign::Held(h, t) => assert_eq!((h.id.as_str(), t), ("a", term_a)),
        }
        assert!(
            real() < earliest_end + Duration::from_secs(5),
            "no takeover"
        );
        std::thread::sleep(b.next_look());
    };
    assert!(term_b > term_a);
    // The look that won began after the lease's earliest end (its revoke,
    // if it revoked, came later still).
    assert!(at >= earliest_end, "{at:?} < {earliest_end:?}");
    // Revoked by b, or deleted by etcd's sweep first (then nothing to say).
    let revoked = b.take_revoked();
    assert!(
        matches!(revoked.as_deref(), Some("a") | None),
        "{revoked:?}"
    );
    eprintln!(
        "b won {:?} after the lease's earliest end; revoked it: {}",
        at - earliest_end,
        revoked.is_some()
    );
}
