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
//! # Taking over as soon as the lease has expired
//! etcd deletes an expired lease's key only when its lessor next looks for
//! expired leases (every 500 ms) and the revocation is committed, so the
//! key outlives the lease by up to half a second. A follower therefore
//! also reads the holder's lease (`timetolive`) at each look, every half
//! interval while there is a holder, and revokes the lease itself (which
//! deletes the key at once) when its readings prove that the lease has
//! expired, never earlier: [`ExpiryWatch`] has the rule and the proof.
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

use crate::etcd::{self, Client, EtcdError, Kv, TimeToLive};

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
    /// How often a follower looks whether it can lead (every half of it
    /// while another replica's lease is timed: [`Leadership::next_look`]).
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
    /// What this replica, following, has read of the holder's lease.
    watch: ExpiryWatch,
    /// The holder whose expired lease this replica revoked last, until
    /// [`Leadership::take_revoked`].
    revoked: Option<String>,
}

/// What a reading of the holder's lease shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not proven expired: wait.
    Alive,
    /// Expired, proven by the readings: revoking it is not early.
    Expired,
    /// etcd no longer has it (revoked, or swept after its expiry): its key
    /// is gone with it.
    Gone,
}

/// A follower's readings of the holder's lease, which tell when the lease
/// has certainly expired.
///
/// # The rule
/// Times are this replica's monotonic clock. A reading is sent at `s`,
/// answered at `r`, and evaluated by etcd's raft leader at some `e` in
/// `[s, r]` as `v = int64(R(e).Seconds())`, where `R` is the lease's
/// remaining time: truncated toward zero (etcd's
/// `server/etcdserver/v3_server.go`, `LeaseTimeToLive`; measured against
/// etcd 3.4.23: a lease of 2 s reads 1 from its grant, 0 from 1 s before
/// its expiry until etcd revokes it, -1 once gone). `G` is the granted
/// TTL. `R` falls at the rate of time; only a renewal (`R = G` when etcd
/// applies it) or an etcd leader change (which extends every lease) raise
/// it. The two clocks are assumed to run at the same rate, as the
/// leader's step-down rule already assumes.
///
/// A **run** is a sequence of readings `j..=k` of one lease, each 0, each
/// answered less than `G - 1 s` after the previous one was sent. With
/// `D = r_j + 1 s`, the lease has expired once a reading `k` of the run was
/// sent at `s_k >= D`:
///
/// 1. `v_j = 0` means `R(e_j) < 1 s` (0 stands for anything in (-1 s,
///    1 s)), so without a renewal after `e_j` the lease expires at
///    `X = e_j + R(e_j) < e_j + 1 s <= D`.
/// 2. No renewal (or extension) was applied in `(e_j, e_k]`: one applied
///    at `a` falls in some `(e_(m-1), e_m]`, and since
///    `e_m - e_(m-1) <= r_m - s_(m-1) < G - 1 s`, reading `m` would have
///    been `R(e_m) >= G - (e_m - a) > 1 s`, so `v_m >= 1`, not 0.
/// 3. So `X < D <= s_k <= e_k`: the lease had expired when etcd evaluated
///    reading `k`, and etcd renews an expired lease no more (its lessor's
///    `Renew` waits for the revocation and answers "not found"). Revoking
///    it after `r_k` is not earlier than etcd's own expiry.
///
/// Any reading of 1 or more ends the run (a renewal, or not yet the last
/// second); a reading answered `G - 1 s` or more after the previous was
/// sent (etcd slow, this replica paused) starts a new run; another holder
/// or lease starts over. A replica that has just started needs no history:
/// its first zero reading starts a run. With `G = 1 s` no run can form and
/// the follower waits for etcd to delete the key. A failed reading is not a
/// reading (the next one is checked against the last that succeeded).
///
/// How late: the first zero reading comes at most one look after
/// `X - 1 s`, so `D` is at most a look and a round trip after `X`; the
/// follower looks again at `D`, then revokes and campaigns (a few round
/// trips). A look is every half campaign interval while there is a holder.
///
/// # Where "never early" leans on etcd
/// The reading is trusted to be the current raft leader's: an etcd leader
/// cut off from its quorum answers as leader until it notices (about an
/// election timeout), and after a raft leader change the new leader extends
/// every lease, an expired one not yet revoked included. In both cases the
/// revocation can be earlier than the lease's end as etcd then sees it, but
/// never before `G` passed without a renewal (step 3), so the holder had
/// stopped acting already (at `G / 2`). And safety never rests on this
/// timing: every write of a leader is fenced by the key's create revision,
/// the leader stops acting at `G / 2` without a renewal, and it confirms
/// its term with a fenced transaction before each traffic-layer call. A
/// revocation that came too early would cost a change of leader, nothing
/// else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ExpiryWatch {
    /// The key's create revision and its lease, as last read.
    holder: Option<(i64, i64)>,
    /// The lease's granted TTL.
    granted: Duration,
    /// When the last successful reading was sent.
    last_sent: Option<Duration>,
    /// `D` of the current run of zero readings.
    expired_by: Option<Duration>,
    /// When the last reading was sent, answered or not.
    last_try: Option<Duration>,
}

impl ExpiryWatch {
    /// Forgets the holder (the key is gone, or this replica leads).
    fn forget(&mut self) {
        *self = ExpiryWatch::default();
    }

    /// Notes that a reading is sent at `sent` (it may fail: then it is no
    /// reading, but the next look is not hurried for it).
    fn trying(&mut self, sent: Duration) {
        self.last_try = Some(sent);
    }

    /// Takes one reading `t` of `lease`, bound to the key created at
    /// revision `term`, sent at `sent` and answered at `received`.
    fn read(
        &mut self,
        (term, lease): (i64, i64),
        sent: Duration,
        received: Duration,
        t: TimeToLive,
    ) -> Verdict {
        if self.holder != Some((term, lease)) {
            *self = ExpiryWatch {
                holder: Some((term, lease)),
                last_try: self.last_try,
                ..ExpiryWatch::default()
            };
        }
        if t.ttl < 0 {
            return Verdict::Gone;
        }
        self.granted = Duration::from_secs(u64::try_from(t.granted).unwrap_or(0));
        let close = self.last_sent.is_some_and(|prev| {
            received.saturating_sub(prev) < self.granted.saturating_sub(Duration::from_secs(1))
        });
        self.last_sent = Some(sent);
        if t.ttl > 0 {
            self.expired_by = None;
            return Verdict::Alive;
        }
        match self.expired_by {
            Some(d) if close && sent >= d => Verdict::Expired,
            Some(_) if close => Verdict::Alive,
            _ => {
                self.expired_by = Some(received + Duration::from_secs(1));
                Verdict::Alive
            }
        }
    }

    /// How long until the next look: half of `interval` while there is a
    /// holder whose lease can be timed (but never so long that two readings
    /// are too far apart to form a run), and not past `D` unless a reading
    /// sent since `D` failed (no hurry then: etcd is failing).
    fn next_look(&self, now: Duration, interval: Duration) -> Duration {
        let room = self.granted.saturating_sub(Duration::from_secs(1));
        if self.holder.is_none() || room.is_zero() {
            return interval;
        }
        let look = (interval / 2).min(room / 2);
        match self.expired_by {
            Some(d) if self.last_try.is_some_and(|t| t >= d) => look,
            Some(d) => look.min(d.saturating_sub(now)),
            None => look,
        }
    }
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

    /// How long a follower waits before its next look at the key.
    pub fn next_look(&self) -> Duration {
        let now = (self.opts.clock)();
        self.state().watch.next_look(now, self.opts.interval)
    }

    /// The holder whose expired lease this replica revoked before it last
    /// won, once.
    pub fn take_revoked(&self) -> Option<String> {
        self.state().revoked.take()
    }

    /// Reads the lease of the key `kv` and, when that proves it expired,
    /// revokes it. Returns whether the key is gone (or going): then this
    /// replica may try to take it.
    ///
    /// # Errors
    /// The revocation failed (a failed reading is only no reading).
    fn free_if_expired(&self, kv: &Kv, holder: &Holder) -> Result<bool, EtcdError> {
        if kv.lease == 0 {
            return Ok(false);
        }
        let sent = (self.opts.clock)();
        self.state().watch.trying(sent);
        let Ok(t) = self.client.time_to_live(kv.lease) else {
            return Ok(false);
        };
        let received = (self.opts.clock)();
        let verdict = self
            .state()
            .watch
            .read((kv.create_revision, kv.lease), sent, received, t);
        match verdict {
            Verdict::Alive => Ok(false),
            Verdict::Gone => Ok(true),
            Verdict::Expired => {
                match self.revoke(kv.lease) {
                    Ok(()) => {}
                    // Another follower (or etcd's sweep) was first.
                    Err(e) if etcd::is_lease_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
                let mut s = self.state();
                s.watch.forget();
                s.revoked = Some(holder.id.clone());
                Ok(true)
            }
        }
    }

    fn campaign_once(&self) -> Result<Campaign, EtcdError> {
        let holder = |kv: &Kv| -> Holder {
            serde_json::from_slice(&kv.value).unwrap_or(Holder {
                id: String::from_utf8_lossy(&kv.value).into_owned(),
                url: String::new(),
            })
        };
        let held = |v: &Value| -> Option<Campaign> {
            let kv = etcd::kvs(v).into_iter().next()?;
            Some(Campaign::Held(holder(&kv), kv.create_revision))
        };
        self.state().revoked = None;
        let now = self.client.range(&self.key, None, 0)?;
        match etcd::kvs(&now).into_iter().next() {
            Some(kv) => {
                let h = holder(&kv);
                if !self.free_if_expired(&kv, &h)? {
                    return Ok(Campaign::Held(h, kv.create_revision));
                }
            }
            None => self.state().watch.forget(),
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
        s.watch.forget();
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ttl(ttl: i64, granted: i64) -> TimeToLive {
        TimeToLive { ttl, granted }
    }

    /// A lease of `G` = 2 s renewed every 400 ms (etcd applying each at
    /// `renewals`) until the holder dies; a follower looks every `look`
    /// from `phase`, each reading answered `rtt` after it was sent and
    /// evaluated at `at` (0..=1) of the way. Whatever the phases, the
    /// follower never revokes before the lease's real expiry `X`, and does
    /// within a look and three round trips after it (the zero reading comes
    /// up to a look and a round trip after `X - 1 s`, is answered a round
    /// trip later, and the reading at `D` may wait for the one before).
    #[test]
    fn a_lease_is_declared_expired_never_before_it_expired_and_soon_after() {
        let g = 2_000_u64;
        let mut latest = 0;
        for death in (10_000..10_400).step_by(7) {
            for phase in (0..125).step_by(9) {
                for (rtt, at) in [(1, 0.5), (30, 0.0), (30, 1.0), (90, 0.3)] {
                    // The last renewal etcd applied before the death.
                    let last = death / 400 * 400;
                    let x = last + g;
                    let remaining = |e: u64| x as f64 / 1e3 - e as f64 / 1e3;
                    let mut w = ExpiryWatch::default();
                    let mut t = phase;
                    let found = loop {
                        let (s, r) = (t, t + rtt);
                        let e = s + (rtt as f64 * at) as u64;
                        // etcd: int64(Remaining().Seconds()), truncated.
                        let v = remaining(e).trunc() as i64;
                        w.trying(ms(s));
                        match w.read((7, 42), ms(s), ms(r), ttl(v, 2)) {
                            Verdict::Expired => break Some((s, e)),
                            Verdict::Gone => break None,
                            Verdict::Alive => {}
                        }
                        assert!(t < x + 2_000, "never found expired");
                        t = r + w.next_look(ms(r), ms(250)).as_millis() as u64;
                    };
                    let (s, e) = found.unwrap();
                    assert!(
                        x <= s && x <= e,
                        "death {death}, phase {phase}: expired at {x}, declared at {s}"
                    );
                    latest = latest.max(s - x);
                    assert!(
                        s - x <= 125 + 3 * rtt + 1,
                        "death {death}, phase {phase}, rtt {rtt}: {s} is {} ms after {x}",
                        s - x
                    );
                }
            }
        }
        assert!(latest > 100, "the bound above is not slack: {latest}");
    }

    /// A renewal that etcd applied while the follower was not reading (a
    /// pause longer than `G - 1 s` between two readings) is not missed: the
    /// run starts again, so the revocation is not early.
    #[test]
    fn a_long_gap_between_readings_starts_the_run_again() {
        let mut w = ExpiryWatch::default();
        // Zero at 1000 (the lease ends before 2000 if nothing renews it).
        assert_eq!(
            w.read((7, 42), ms(1_000), ms(1_005), ttl(0, 2)),
            Verdict::Alive
        );
        // Renewed at 1200 (ends at 3200), unseen; read again at 2500: 0.7 s.
        assert_eq!(
            w.read((7, 42), ms(2_500), ms(2_505), ttl(0, 2)),
            Verdict::Alive
        );
        // Without the gap rule 2600 >= 2005 would have revoked it early.
        assert_eq!(
            w.read((7, 42), ms(2_600), ms(2_605), ttl(0, 2)),
            Verdict::Alive
        );
        assert_eq!(w.expired_by, Some(ms(3_505)));
        assert_eq!(
            w.read((7, 42), ms(3_400), ms(3_405), ttl(0, 2)),
            Verdict::Alive
        );
        // Sent at D of the new run: past the real end (3200).
        assert_eq!(
            w.read((7, 42), ms(3_505), ms(3_510), ttl(0, 2)),
            Verdict::Expired
        );
    }

    #[test]
    fn a_renewal_a_new_lease_or_a_one_second_ttl_resets_the_watch() {
        let mut w = ExpiryWatch::default();
        assert_eq!(w.read((7, 42), ms(0), ms(5), ttl(0, 2)), Verdict::Alive);
        assert_eq!(w.next_look(ms(5), ms(250)), ms(125));
        assert_eq!(w.next_look(ms(950), ms(250)), ms(55), "looks again at D");
        assert_eq!(w.next_look(ms(1_100), ms(250)), ms(0));
        // A reading sent after D that failed: no hurry (etcd is failing).
        w.trying(ms(1_100));
        assert_eq!(w.next_look(ms(1_200), ms(250)), ms(125));
        // A renewal: 1 again, the run is over.
        assert_eq!(w.read((7, 42), ms(500), ms(505), ttl(1, 2)), Verdict::Alive);
        assert_eq!(w.read((7, 42), ms(600), ms(605), ttl(0, 2)), Verdict::Alive);
        assert_eq!(
            w.read((7, 42), ms(1_100), ms(1_105), ttl(0, 2)),
            Verdict::Alive
        );
        // Another lease (the holder re-elected, or another holder).
        assert_eq!(
            w.read((8, 43), ms(1_605), ms(1_610), ttl(0, 2)),
            Verdict::Alive
        );
        assert_eq!(w.expired_by, Some(ms(2_610)));
        assert_eq!(
            w.read((8, 43), ms(2_000), ms(2_005), ttl(0, 2)),
            Verdict::Alive
        );
        assert_eq!(
            w.read((8, 43), ms(2_610), ms(2_615), ttl(0, 2)),
            Verdict::Expired
        );
        // A lease etcd no longer has: its key is gone with it.
        assert_eq!(
            w.read((8, 43), ms(2_700), ms(2_705), ttl(-1, 0)),
            Verdict::Gone
        );
        // A granted TTL of 1 s tells nothing: wait for etcd to delete the key.
        let mut w = ExpiryWatch::default();
        for t in (0..3_000).step_by(100) {
            assert_eq!(w.read((9, 44), ms(t), ms(t + 1), ttl(0, 1)), Verdict::Alive);
        }
        assert_eq!(w.next_look(ms(3_000), ms(250)), ms(250));
        w.forget();
        assert_eq!(w.next_look(ms(3_000), ms(250)), ms(250));
    }
}
