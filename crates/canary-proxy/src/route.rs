//! The routing decision, in one place: which version serves a request.
//!
//! Order of precedence:
//! 1. an override header or cookie naming a version (`stable` or `canary`)
//!    forces it, whatever the weight (A/B tests, internal testers);
//! 2. a sticky key (a header or cookie value identifying the client) is hashed
//!    to a fraction in [0, 1); the client goes to the canary iff that fraction
//!    is below the weight. The same client therefore stays on one version
//!    while the weight holds, and can only move from stable to canary as the
//!    weight grows (and back only when it shrinks, e.g. on a rollback);
//! 3. otherwise a per-request fraction from a counter-based pseudo-random
//!    sequence (splitmix64 of a counter and the seed) decides. It needs no
//!    lock and no RNG state: one atomic increment.
//!
//! The weight is held in parts per million in one atomic, so a change takes
//! effect for every request that routes after it, and never for one already
//! routed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Header names, re-exported for the proxy's users.
pub use hyper::header::HeaderName;
use hyper::header::COOKIE;
use hyper::HeaderMap;

/// One of the two upstream versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The version in production.
    Stable,
    /// The new version under test.
    Canary,
}

impl Version {
    /// Both versions, stable first.
    pub const BOTH: [Version; 2] = [Version::Stable, Version::Canary];

    /// `stable` or `canary`.
    pub fn name(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }

    /// Index into per-version arrays: 0 stable, 1 canary.
    pub fn index(self) -> usize {
        match self {
            Version::Stable => 0,
            Version::Canary => 1,
        }
    }

    /// Parses `stable`/`baseline` or `canary` (any case).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("stable") || s.eq_ignore_ascii_case("baseline") {
            Some(Version::Stable)
        } else if s.eq_ignore_ascii_case("canary") {
            Some(Version::Canary)
        } else {
            None
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a per-client value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header.
    Header(HeaderName),
    /// A cookie, by name.
    Cookie(String),
}

impl KeySource {
    /// The value for this request, if present and non-empty.
    pub fn read<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        match self {
            KeySource::Header(name) => headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty()),
            KeySource::Cookie(name) => cookie(headers, name),
        }
    }
}

/// Finds cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                if &pair[..eq] == name.as_bytes() {
                    let v = pair[eq + 1..].trim_ascii();
                    let v = v
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(v);
                    if !v.is_empty() {
                        return Some(v);
                    }
                }
            }
        }
    }
    None
}

/// How requests are assigned to versions (besides the weight).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// Sticky routing: the client key, if any.
    pub sticky: Option<KeySource>,
    /// Overrides: sources whose value `stable` or `canary` forces a version.
    pub overrides: Vec<KeySource>,
    /// Seed of the per-request sequence for requests without a sticky key.
    pub seed: u64,
}

/// Parts per million in 100 %.
const PPM: u32 = 1_000_000;

/// Converts a percentage to parts per million, or `None` when not in [0, 100].
pub fn percent_to_ppm(percent: f64) -> Option<u32> {
    (0.0..=100.0)
        .contains(&percent)
        .then(|| (percent * 10_000.0).round() as u32)
}

/// splitmix64's finalizer: a bijection on u64 with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a client key (FNV-1a, then mixed): the same key
/// maps to the same value in every process and build.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// Maps a hash to [0, 1 000 000) uniformly.
fn to_ppm(h: u64) -> u32 {
    ((u128::from(h) * u128::from(PPM)) >> 64) as u32
}

/// The fraction (in parts per million) a client key hashes to; the client
/// routes to the canary iff this is below the weight in ppm.
pub fn key_fraction_ppm(key: &[u8]) -> u32 {
    to_ppm(key_hash(key))
}

/// Why a request went where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An override header or cookie.
    Override,
    /// The client's sticky key.
    Sticky,
    /// The per-request draw.
    Draw,
}

/// The router: the weight plus the rules above.
///
/// The weight and its generation (how many times it was set) share one
/// atomic word, so a request knows exactly which weight routed it: the
/// recorder leaves requests routed under an older weight out of the window
/// the controller judges at the new one.
#[derive(Debug)]
pub struct Router {
    /// `generation << 32 | weight_ppm`.
    state: AtomicU64,
    counter: AtomicU64,
    config: RouteConfig,
}

/// Which version a request goes to, why, and under which weight generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The version.
    pub version: Version,
    /// Why.
    pub reason: Reason,
    /// The weight generation it was routed under.
    pub generation: u32,
}

impl Router {
    /// A router at weight 0.
    pub fn new(config: RouteConfig) -> Self {
        Self {
            state: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            config,
        }
    }

    /// The canary weight, percent.
    pub fn weight(&self) -> f64 {
        f64::from(self.state.load(Ordering::Acquire) as u32) / 10_000.0
    }

    /// The current weight generation.
    pub fn generation(&self) -> u32 {
        (self.state.load(Ordering::Acquire) >> 32) as u32
    }

    /// Sets the canary weight, in parts per million (clamped to 100 %), and
    /// starts a new generation.
    pub fn set_weight_ppm(&self, ppm: u32) {
        let ppm = u64::from(ppm.min(PPM));
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let generation = (s >> 32).wrapping_add(1) & 0xffff_ffff;
                Some(generation << 32 | ppm)
            });
    }

    /// Picks the version for a request with these headers.
    pub fn route(&self, headers: &HeaderMap) -> Route {
        let state = self.state.load(Ordering::Acquire);
        let generation = (state >> 32) as u32;
        for source in &self.config.overrides {
            if let Some(v) = source
                .read(headers)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(Version::parse)
            {
                return Route {
                    version: v,
                    reason: Reason::Override,
                    generation,
                };
            }
        }
        let weight = state as u32;
        let (fraction, reason) = match self.config.sticky.as_ref().and_then(|s| s.read(headers)) {
            Some(key) => (key_fraction_ppm(key), Reason::Sticky),
            None => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                (to_ppm(mix(n ^ mix(self.config.seed))), Reason::Draw)
            }
        };
        let version = if fraction < weight {
            Version::Canary
        } else {
            Version::Stable
        };
        Route {
            version,
            reason,
            generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn weight_extremes_route_everything_one_way() {
        let r = Router::new(RouteConfig::default());
        for _ in 0..1000 {
            assert_eq!(r.route(&HeaderMap::new()).version, Version::Stable);
        }
        r.set_weight_ppm(PPM);
        for _ in 0..1000 {
            assert_eq!(r.route(&HeaderMap::new()).version, Version::Canary);
        }
    }

    #[test]
    fn draws_match_the_weight_within_a_binomial_interval() {
        // n = 100 000 at p = 0.1: sd = 94.9; ±4 sd = ±380.
        let r = Router::new(RouteConfig {
            seed: 7,
            ..RouteConfig::default()
        });
        r.set_weight_ppm(percent_to_ppm(10.0).unwrap());
        let canary = (0..100_000)
            .filter(|_| r.route(&HeaderMap::new()).version == Version::Canary)
            .count();
        assert!((9_620..=10_380).contains(&canary), "{canary}");
    }

    #[test]
    fn sticky_keys_move_one_way_as_the_weight_grows() {
        let r = Router::new(RouteConfig {
            sticky: Some(KeySource::Header(HeaderName::from_static("x-user"))),
            ..RouteConfig::default()
        });
        let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let mut on_canary = vec![false; users.len()];
        for w in [1.0, 5.0, 25.0, 50.0, 100.0] {
            r.set_weight_ppm(percent_to_ppm(w).unwrap());
            let mut n = 0;
            for (i, u) in users.iter().enumerate() {
                let v = r.route(&headers(&[("x-user", u)])).version;
                // Same answer twice in a row at one weight.
                assert_eq!(v, r.route(&headers(&[("x-user", u)])).version);
                let canary = v == Version::Canary;
                assert!(canary || !on_canary[i], "{u} moved back at {w} %");
                on_canary[i] = canary;
                n += usize::from(canary);
            }
            // Binomial, n = 2000: ±4 sd.
            let p = w / 100.0;
            let sd = (2000.0 * p * (1.0 - p)).sqrt();
            assert!(
                (n as f64 - 2000.0 * p).abs() <= 4.0 * sd + 1e-9,
                "{n} at {w} %"
            );
        }
    }

    #[test]
    fn overrides_beat_weight_and_stickiness() {
        let r = Router::new(RouteConfig {
            sticky: Some(KeySource::Cookie("uid".into())),
            overrides: vec![
                KeySource::Header(HeaderName::from_static("x-canary")),
                KeySource::Cookie("canary".into()),
            ],
            seed: 0,
        });
        r.set_weight_ppm(0);
        let h = headers(&[("x-canary", "Canary")]);
        let got = r.route(&h);
        assert_eq!(
            (got.version, got.reason),
            (Version::Canary, Reason::Override)
        );
        let h = headers(&[("cookie", "a=b; canary=canary; uid=42")]);
        let got = r.route(&h);
        assert_eq!(
            (got.version, got.reason),
            (Version::Canary, Reason::Override)
        );
        r.set_weight_ppm(PPM);
        let h = headers(&[("cookie", "uid=42"), ("x-canary", "stable")]);
        let got = r.route(&h);
        assert_eq!(
            (got.version, got.reason),
            (Version::Stable, Reason::Override)
        );
        let h = headers(&[("cookie", "uid=42"), ("x-canary", "nonsense")]);
        let got = r.route(&h);
        assert_eq!((got.version, got.reason), (Version::Canary, Reason::Sticky));
    }

    #[test]
    fn each_weight_change_starts_a_generation() {
        let r = Router::new(RouteConfig::default());
        assert_eq!(r.route(&HeaderMap::new()).generation, 0);
        r.set_weight_ppm(500_000);
        r.set_weight_ppm(2_000_000);
        assert_eq!(r.generation(), 2);
        assert_eq!(r.weight(), 100.0);
        assert_eq!(r.route(&HeaderMap::new()).generation, 2);
    }

    #[test]
    fn cookies_are_parsed_across_headers_and_quotes() {
        let h = headers(&[("cookie", "a=1"), ("cookie", "uid=\"abc\" ; b=2")]);
        assert_eq!(cookie(&h, "uid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "u"), None);
        assert_eq!(cookie(&headers(&[("cookie", "uid=")]), "uid"), None);
    }

    #[test]
    fn key_hash_is_pinned() {
        // Computed independently (Python) from the FNV-1a + splitmix64 spec.
        const PIN_USER_1: u32 = 767_970;
        const PIN_EMPTY: u32 = 957_673;
        // Pinned values: stickiness must survive a proxy upgrade, so the hash
        // may never change.
        assert_eq!(key_fraction_ppm(b"user-1"), PIN_USER_1);
        assert_eq!(key_fraction_ppm(b""), PIN_EMPTY);
        assert!(percent_to_ppm(-1.0).is_none() && percent_to_ppm(100.5).is_none());
        assert_eq!(percent_to_ppm(12.5), Some(125_000));
    }
}
