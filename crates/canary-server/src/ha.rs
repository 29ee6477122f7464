//! High availability on etcd: several `canary serve` replicas, one
//! leader.
//!
//! # Election
//! A replica leads while it holds the election key (`<prefix>leader`),
//! put bound to an etcd lease of `--lease-ttl`. A follower looks at the
//! key every [`HaOptions::interval`]; when it is gone (its holder's lease
//! expired or was revoked) the follower creates it in a transaction
//! conditioned on its absence, so exactly one replica wins. Its **term**
//! is the key's create revision: a number etcd gives once, larger for
//! every later holder.
//!
//! # Stepping down before the lease expires
//! The leader renews its lease every `ttl / 5`. The lease cannot expire
//! before `ttl` after the last renewal that etcd took, which is after the
//! instant that renewal was sent; the leader counts from that instant and
//! stops acting once [`HaOptions::step_down_after`] (half the TTL) has
//! passed without a successful renewal: it moves no weight, its store
//! refuses its writes, and its rollouts are stopped, well before etcd can
//! give the key to someone else.
//!
//! # Fencing
//! Every write of the leader to the store is an etcd transaction that
//! also compares the election key's create revision with the leader's
//! term. A deposed leader (paused past its lease, cut off and back) holds
//! an old term: etcd refuses its writes, whatever its clock says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::etcd::{self, Client, EtcdError};

/// A monotonic clock: time since some fixed instant (passed in).
pub type Monotonic = Arc<dyn Fn() -> Duration + Send + Sync>;

/// How a replica takes part in the election.
#[derive(Clone)]
pub struct HaOptions {
    /// This replica's name (in the election key, `/readyz`, errors).
    pub id: String,
    /// Where this replica's API is reached (`http://host:port`); `None`:
    /// its listen address.
    pub url: Option<String>,
    /// The lease's time to live.
    pub ttl: Duration,
    /// How often a follower looks whether it can lead.
    pub interval: Duration,
    /// The monotonic clock.
    pub clock: Monotonic,
}

impl HaOptions {
    /// How often the leader renews its lease: a fifth of the TTL.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// How long without a successful renewal before the leader stops
    /// acting: half the TTL.
    pub fn step_down_after(&self) -> Duration {
        self.ttl / 2
    }
}

/// This replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It drives the rollouts.
    Leader,
    /// It serves reads and refuses writes.
    Follower,
}

/// Who holds the election key, as its value says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Holder {
    /// The replica's id.
    pub id: String,
    /// Its API's URL.
    pub url: String,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The term while leading.
    term: Option<i64>,
    lease: i64,
    /// When the last successful renewal (or the grant) was sent.
    renewed_at: Option<Duration>,
    /// The holder of the key when last seen, and its term.
    leader: Option<(Holder, i64)>,
    url: String,
    /// The last failure to reach etcd, cleared on success.
    last_error: Option<String>,
}

/// The election state of one replica, shared by its store (fencing), its
/// runners (no weight moves unless leading) and its API (roles, errors).
pub struct Leadership {
    client: Client,
    key: Vec<u8>,
    opts: HaOptions,
    state: Mutex<State>,
    /// Writes refused here because this replica does not lead (or its
    /// lease may be running out).
    refused_local: AtomicU64,
    /// Writes etcd refused because the election key is no longer this
    /// replica's term (a deposed leader's).
    refused_fenced: AtomicU64,
    /// Terms won by this replica.
    elected: AtomicU64,
}

/// What `/readyz` and `/metrics` say of the election.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HaStatus {
    /// This replica.
    pub id: String,
    /// `leader` or `follower`.
    pub role: String,
    /// The term of the leader this replica knows of (its own while it
    /// leads); 0 when none is known.
    pub term: i64,
    /// The leader's id and API URL, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The leader's API URL, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// Seconds since the lease was last renewed (leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_renewal_seconds: Option<f64>,
    /// Writes refused because this replica did not lead.
    pub writes_refused_local: u64,
    /// Writes etcd refused as a deposed leader's (fencing).
    pub writes_refused_fenced: u64,
    /// Terms this replica won since it started.
    pub terms_won: u64,
    /// The last failure to reach etcd, if the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Outcome of one look at the election key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// This replica now leads, with this term.
    Won(i64),
    /// Someone else holds the key.
    Held(Holder, i64),
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("id", &self.opts.id)
            .field("term", &self.term())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// The election of the replicas sharing `prefix` on etcd.
    pub fn new(client: Client, prefix: &str, opts: HaOptions) -> Leadership {
        let mut key = prefix.as_bytes().to_vec();
        key.extend_from_slice(b"leader");
        Leadership {
            client,
            key,
            opts,
            state: Mutex::new(State::default()),
            refused_local: AtomicU64::new(0),
            refused_fenced: AtomicU64::new(0),
            elected: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The options.
    pub fn options(&self) -> &HaOptions {
        &self.opts
    }

    /// The election key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Sets this replica's API URL (once its listener is bound).
    pub fn set_url(&self, url: String) {
        self.state().url = url;
    }

    /// The term to fence a write with: `Some` only while this replica
    /// leads and its last renewal is younger than
    /// [`HaOptions::step_down_after`].
    pub fn fence(&self) -> Option<i64> {
        let s = self.state();
        let term = s.term?;
        let at = s.renewed_at?;
        let age = (self.opts.clock)().saturating_sub(at);
        (age < self.opts.step_down_after()).then_some(term)
    }

    /// The term this replica holds, overdue or not.
    pub fn term(&self) -> Option<i64> {
        self.state().term
    }

    /// Whether this replica may act (move weight, accept writes) now.
    pub fn acting(&self) -> bool {
        self.fence().is_some()
    }

    /// The current role: leading only while it may act (a leader whose
    /// renewal is overdue is a follower from that instant, before its
    /// rollouts are stopped).
    pub fn role(&self) -> Role {
        if self.acting() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Counts a write refused locally.
    pub(crate) fn refused_here(&self) {
        self.refused_local.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write etcd refused by its fence.
    pub(crate) fn refused_by_fence(&self) {
        self.refused_fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// The leader as last seen, unless it is this replica and it may no
    /// longer act (then who leads next is not known yet).
    fn known_leader(&self) -> Option<(Holder, i64)> {
        let acting = self.acting();
        self.state()
            .leader
            .clone()
            .filter(|(h, _)| acting || h.id != self.opts.id)
    }

    /// Who leads, in words, for a follower's refusal.
    pub fn leader_words(&self) -> String {
        match self.known_leader() {
            Some((h, term)) => format!("the leader is `{}` at {} (term {term})", h.id, h.url),
            None => "no leader is known at the moment (one is elected within the lease TTL)".into(),
        }
    }

    /// The leader's URL, when known.
    pub fn leader_url(&self) -> Option<String> {
        self.known_leader().map(|(h, _)| h.url)
    }

    /// What `/readyz` and `/metrics` show.
    pub fn status(&self) -> HaStatus {
        let acting = self.acting();
        let known = self.known_leader();
        let s = self.state();
        let now = (self.opts.clock)();
        HaStatus {
            id: self.opts.id.clone(),
            role: if acting { "leader" } else { "follower" }.into(),
            term: s.term.or(s.leader.as_ref().map(|l| l.1)).unwrap_or(0),
            leader: known.as_ref().map(|(h, _)| h.id.clone()),
            leader_url: known.as_ref().map(|(h, _)| h.url.clone()),
            since_renewal_seconds: s
                .term
                .and(s.renewed_at)
                .map(|at| now.saturating_sub(at).as_secs_f64()),
            writes_refused_local: self.refused_local.load(Ordering::Relaxed),
            writes_refused_fenced: self.refused_fenced.load(Ordering::Relaxed),
            terms_won: self.elected.load(Ordering::Relaxed),
            last_error: s.last_error.clone(),
        }
    }

    fn note(&self, r: &Result<impl Sized, EtcdError>) {
        self.state().last_error = r.as_ref().err().map(|e| e.to_string());
    }

    /// One look at the election key (blocking): takes it when it is free.
    ///
    /// # Errors
    /// etcd could not be asked, or could not commit (no quorum).
    pub fn campaign(&self) -> Result<Campaign, EtcdError> {
        let r = self.campaign_once();
        self.note(&r);
        if let Ok(Campaign::Held(h, term)) = &r {
            self.state().leader = Some((h.clone(), *term));
        }
        r
    }

    fn campaign_once(&self) -> Result<Campaign, EtcdError> {
        let held = |v: &Value| -> Option<Campaign> {
            let kv = etcd::kvs(v).into_iter().next()?;
            let h: Holder = serde_json::from_slice(&kv.value).unwrap_or(Holder {
                id: String::from_utf8_lossy(&kv.value).into_owned(),
                url: String::new(),
            });
            Some(Campaign::Held(h, kv.create_revision))
        };
        let now = self.client.range(&self.key, None, 0)?;
        if let Some(c) = held(&now) {
            return Ok(c);
        }
        let sent = (self.opts.clock)();
        let ttl = self.opts.ttl.as_secs().max(1);
        let grant = self
            .client
            .call("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        let lease = etcd::int(&grant["ID"]);
        if lease == 0 {
            return Err(EtcdError::Unexpected {
                endpoint: self.client.endpoints().join(","),
                message: format!("a lease grant without an ID: {grant}"),
            });
        }
        let me = Holder {
            id: self.opts.id.clone(),
            url: self.state().url.clone(),
        };
        let value = serde_json::to_vec(&me).unwrap_or_default();
        let r = self.client.txn(
            vec![etcd::compare("CREATE", &self.key, 0)],
            vec![etcd::put(&self.key, &value, lease)],
            vec![etcd::get(&self.key)],
        );
        let (won, answer) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = self.revoke(lease);
                return Err(e);
            }
        };
        if !won {
            let _ = self.revoke(lease);
            return Ok(held(etcd::txn_range(&answer, 0)).unwrap_or(Campaign::Held(
                Holder {
                    id: "?".into(),
                    url: String::new(),
                },
                0,
            )));
        }
        let term = etcd::header_revision(&answer);
        let mut s = self.state();
        s.term = Some(term);
        s.lease = lease;
        s.renewed_at = Some(sent);
        s.leader = Some((me, term));
        self.elected.fetch_add(1, Ordering::Relaxed);
        Ok(Campaign::Won(term))
    }

    /// Renews the lease once (blocking). Returns false when the lease is
    /// gone (expired or revoked): this replica no longer leads.
    ///
    /// # Errors
    /// etcd could not be reached.
    pub fn renew(&self) -> Result<bool, EtcdError> {
        let lease = self.state().lease;
        let sent = (self.opts.clock)();
        let r = self
            .client
            .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}));
        self.note(&r);
        let v = r?;
        let ttl = etcd::int(&v["result"]["TTL"]);
        if ttl <= 0 {
            return Ok(false);
        }
        let mut s = self.state();
        if s.term.is_some() && s.lease == lease {
            s.renewed_at = Some(sent);
        }
        Ok(true)
    }

    /// Gives up leading (the caller has stopped the rollouts first):
    /// forgets the term; returns the lease to revoke.
    pub fn step_down(&self) -> i64 {
        let mut s = self.state();
        s.term = None;
        s.renewed_at = None;
        s.leader = None;
        std::mem::take(&mut s.lease)
    }

    /// Revokes `lease` (blocking), which frees the election key at once.
    ///
    /// # Errors
    /// etcd could not be reached.
    pub fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        if lease == 0 {
            return Ok(());
        }
        self.client
            .call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A replica that won term 7 at t = 1 s (TTL 10 s), on a clock the
    /// test moves (ms).
    fn leading() -> (Leadership, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000));
        let clock = now.clone();
        let l = Leadership::new(
            Client::new(vec!["http://127.0.0.1:9".into()], Duration::from_millis(10)),
            "/t/",
            HaOptions {
                id: "me".into(),
                url: None,
                ttl: Duration::from_secs(10),
                interval: Duration::from_secs(1),
                clock: Arc::new(move || Duration::from_millis(clock.load(Ordering::SeqCst))),
            },
        );
        {
            let mut s = l.state();
            s.term = Some(7);
            s.lease = 42;
            s.renewed_at = Some(Duration::from_secs(1));
            s.leader = Some((
                Holder {
                    id: "me".into(),
                    url: "http://me".into(),
                },
                7,
            ));
        }
        (l, now)
    }

    #[test]
    fn a_leader_stops_acting_half_its_ttl_after_its_last_renewal() {
        let (l, now) = leading();
        assert_eq!((l.fence(), l.role()), (Some(7), Role::Leader));
        assert_eq!(l.leader_url().as_deref(), Some("http://me"));
        now.store(1_000 + 4_999, Ordering::SeqCst);
        assert!(l.acting());
        assert_eq!(l.status().since_renewal_seconds, Some(4.999));
        now.store(1_000 + 5_000, Ordering::SeqCst);
        assert_eq!((l.fence(), l.role()), (None, Role::Follower));
        let s = l.status();
        assert_eq!((s.role.as_str(), s.term), ("follower", 7));
        // It does not send clients to itself any more.
        assert_eq!(l.leader_url(), None);
        assert!(
            l.leader_words().contains("no leader is known"),
            "{}",
            l.leader_words()
        );
        // Stepping down forgets the term and hands back the lease.
        assert_eq!(l.step_down(), 42);
        assert_eq!(l.term(), None);
        assert_eq!(l.status().since_renewal_seconds, None);
    }

    #[test]
    fn renewals_and_step_down_follow_the_ttl() {
        let (l, _) = leading();
        let o = l.options();
        assert_eq!(o.renew_every(), Duration::from_secs(2));
        assert_eq!(o.step_down_after(), Duration::from_secs(5));
        assert!(
            o.renew_every() * 2 < o.step_down_after(),
            "two renewals may fail"
        );
        assert!(
            o.step_down_after() < o.ttl,
            "stops before etcd can expire the lease"
        );
    }
}
