//! The per-version recorder: what the proxy saw, for the controller (windows
//! of [`VersionStats`]) and for Prometheus (cumulative counters).
//!
//! # Cost on the request path
//! One response costs a few relaxed atomic increments (cumulative requests,
//! status class, failure kind) and one short critical section on one of
//! [`SHARDS`] cache-line-aligned mutexes, chosen per worker thread, holding
//! the window's counts and latency histogram. Threads never share a shard
//! unless there are more threads than shards, so the locks are uncontended
//! in practice; there is no global lock. A snapshot visits every shard once.
//!
//! # Windows and totals
//! [`Recorder::snapshot_window`] takes (and resets) what was recorded since
//! the previous call and adds it to the running total;
//! [`Recorder::cumulative`] is that total plus the window in progress.
//! Every request routed under the current weight lands in exactly one
//! window. A request routed under an earlier weight that finishes after a
//! weight change is *stale*: it counts in the cumulative counters (and in
//! [`CounterSnapshot::stale`]) but in no window, so the window the controller
//! judges at a weight holds only traffic routed at that weight. (Without
//! this, the stable stragglers of the last stage would pose as the 100 %
//! stage's baseline.)

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use canary_core::{Pair, VersionStats};

use crate::route::Version;

/// Number of window shards per version.
pub const SHARDS: usize = 16;

/// How one proxied request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// The upstream could not be connected to (the proxy answered 502).
    ConnectError,
    /// The upstream did not answer in time (the proxy answered 504).
    Timeout,
    /// Another upstream failure, e.g. a reset connection (502).
    UpstreamError,
    /// The client went away before the response head came: no response
    /// was sent. Counted as an error with its latency so far, so that a
    /// canary too slow for its clients is seen, not lost.
    Abandoned,
}

impl Outcome {
    /// True for 5xx and every upstream failure: what the judges count.
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Status(s) => s >= 500,
            Outcome::ConnectError
            | Outcome::Timeout
            | Outcome::UpstreamError
            | Outcome::Abandoned => true,
        }
    }
}

#[derive(Default)]
struct Window {
    stats: VersionStats,
}

/// A mutex on its own cache line, so shards do not false-share.
#[repr(align(64))]
#[derive(Default)]
struct Shard(Mutex<Window>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic while holding the lock cannot leave a window half-written
        // in a way that matters for counting; keep recording.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cumulative counters of one version, for metrics.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Responses by status class, 1xx..5xx (index 0..4); others in 5.
    classes: [AtomicU64; 6],
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    upstream_errors: AtomicU64,
    abandoned: AtomicU64,
    stale: AtomicU64,
    in_flight: AtomicI64,
}

#[derive(Default)]
struct PerVersion {
    counters: Counters,
    shards: [Shard; SHARDS],
}

/// Cumulative counts of one version, as Prometheus shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Requests completed.
    pub requests: u64,
    /// Of which errors (5xx and upstream failures).
    pub errors: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub classes: [u64; 6],
    /// Upstream connect failures.
    pub connect_errors: u64,
    /// Upstream timeouts.
    pub timeouts: u64,
    /// Other upstream failures.
    pub upstream_errors: u64,
    /// Requests whose client went away before the response head.
    pub abandoned: u64,
    /// Requests routed under an earlier weight and finished after a change
    /// (counted here, left out of the windows).
    pub stale: u64,
    /// Requests routed to this version and not yet answered.
    pub in_flight: i64,
}

/// The recorder of both versions.
#[derive(Default)]
pub struct Recorder {
    versions: [PerVersion; 2],
    total: Mutex<Pair<VersionStats>>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn shard_index() -> usize {
    SHARD.try_with(|s| *s).unwrap_or(0)
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request was routed to `version` and is on its way.
    pub fn start(&self, version: Version) {
        self.versions[version.index()]
            .counters
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The request routed to `version` ended with `outcome` after `latency`;
    /// `current` is false when the weight changed since it was routed (it
    /// then goes into no window).
    pub fn finish(&self, version: Version, outcome: Outcome, latency: Duration, current: bool) {
        let v = &self.versions[version.index()];
        let c = &v.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.requests.fetch_add(1, Ordering::Relaxed);
        let error = outcome.is_error();
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Outcome::Status(s) => {
                let class = match s {
                    100..=599 => usize::from(s / 100) - 1,
                    _ => 5,
                };
                c.classes[class].fetch_add(1, Ordering::Relaxed);
            }
            // The proxy answered these itself (502, 504): 5xx responses too.
            Outcome::ConnectError => {
                c.connect_errors.fetch_add(1, Ordering::Relaxed);
                c.classes[4].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Timeout => {
                c.timeouts.fetch_add(1, Ordering::Relaxed);
                c.classes[4].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::UpstreamError => {
                c.upstream_errors.fetch_add(1, Ordering::Relaxed);
                c.classes[4].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Abandoned => {
                c.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !current {
            c.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let mut w = v.shards[shard_index()].lock();
        w.stats.requests += 1;
        w.stats.errors += u64::from(error);
        w.stats.latency.record(ms);
    }

    fn take_window(&self, version: Version) -> VersionStats {
        let mut out = VersionStats::default();
        for shard in &self.versions[version.index()].shards {
            let taken = std::mem::take(&mut shard.lock().stats);
            out.merge(&taken);
        }
        out
    }

    fn peek_window(&self, version: Version) -> VersionStats {
        let mut out = VersionStats::default();
        for shard in &self.versions[version.index()].shards {
            out.merge(&shard.lock().stats);
        }
        out
    }

    fn lock_total(&self) -> MutexGuard<'_, Pair<VersionStats>> {
        self.total.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was recorded since the previous call (or since the start), per
    /// version; it is also added to the running total.
    pub fn snapshot_window(&self) -> Pair<VersionStats> {
        let mut total = self.lock_total();
        let window = Pair {
            baseline: self.take_window(Version::Stable),
            canary: self.take_window(Version::Canary),
        };
        total.baseline.merge(&window.baseline);
        total.canary.merge(&window.canary);
        window
    }

    /// Everything recorded so far, per version.
    pub fn cumulative(&self) -> Pair<VersionStats> {
        let total = self.lock_total();
        let mut out = total.clone();
        out.baseline.merge(&self.peek_window(Version::Stable));
        out.canary.merge(&self.peek_window(Version::Canary));
        out
    }

    /// The cumulative counters of `version` (lock-free).
    pub fn counters(&self, version: Version) -> CounterSnapshot {
        let c = &self.versions[version.index()].counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: l(&c.requests),
            errors: l(&c.errors),
            classes: std::array::from_fn(|i| l(&c.classes[i])),
            connect_errors: l(&c.connect_errors),
            timeouts: l(&c.timeouts),
            upstream_errors: l(&c.upstream_errors),
            abandoned: l(&c.abandoned),
            stale: l(&c.stale),
            in_flight: c.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_partition_the_total() {
        let r = Recorder::new();
        let ms = Duration::from_millis;
        for i in 0..100u64 {
            r.start(Version::Stable);
            let status = if i % 10 == 0 { 503 } else { 200 };
            r.finish(
                Version::Stable,
                Outcome::Status(status),
                ms(5 + i % 7),
                true,
            );
        }
        r.start(Version::Canary);
        r.finish(Version::Canary, Outcome::ConnectError, ms(1), true);
        r.start(Version::Canary);
        r.finish(Version::Canary, Outcome::Status(404), ms(2), true);
        let w1 = r.snapshot_window();
        assert_eq!((w1.baseline.requests, w1.baseline.errors), (100, 10));
        assert_eq!((w1.canary.requests, w1.canary.errors), (2, 1));
        assert_eq!(w1.baseline.latency.count(), 100);

        r.start(Version::Canary);
        r.finish(Version::Canary, Outcome::Timeout, ms(1000), true);
        let cum = r.cumulative();
        assert_eq!((cum.canary.requests, cum.canary.errors), (3, 2));
        let w2 = r.snapshot_window();
        assert_eq!((w2.baseline.requests, w2.canary.requests), (0, 1));
        assert_eq!(r.snapshot_window(), Pair::default());
        assert_eq!(r.cumulative().canary.requests, 3);

        r.start(Version::Canary);
        r.finish(Version::Canary, Outcome::Status(500), ms(3), false);
        assert_eq!(r.snapshot_window(), Pair::default());
        let c = r.counters(Version::Canary);
        assert_eq!(c.stale, 1);
        assert_eq!((c.requests, c.errors), (4, 3));
        assert_eq!((c.connect_errors, c.timeouts, c.classes[3]), (1, 1, 1));
        assert_eq!(c.in_flight, 0);
        let s = r.counters(Version::Stable);
        assert_eq!((s.classes[1], s.classes[4]), (90, 10));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let r = std::sync::Arc::new(Recorder::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let v = if (i + t) % 4 == 0 {
                            Version::Canary
                        } else {
                            Version::Stable
                        };
                        r.start(v);
                        r.finish(v, Outcome::Status(200), Duration::from_micros(i), true);
                        if i % 1000 == 0 && t == 0 {
                            let _ = r.snapshot_window();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _ = r.snapshot_window();
        let cum = r.cumulative();
        assert_eq!(cum.baseline.requests + cum.canary.requests, 80_000);
        assert_eq!(cum.canary.requests, 20_000);
        assert_eq!(cum.canary.latency.count(), 20_000);
    }
}
