//! What the judges see: per version, request and error counts and a
//! mergeable latency histogram, for the last window, the current stage and
//! the whole rollout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Buckets per doubling of the latency: 32 gives buckets 2.2 % wide, so a
/// recorded value is known to within ±1.1 %.
const PER_OCTAVE: f64 = 32.0;
/// Smallest distinguished latency, milliseconds (1 µs).
const MIN_MS: f64 = 0.001;
/// Number of buckets: 1 µs · 2^(1024/32) ≈ 71 minutes at the top.
const BUCKETS: usize = 1024;

/// A log-bucketed latency histogram, in milliseconds.
///
/// Cheap to record into and to merge (only the occupied bucket range is
/// visited), and exact in its count, sum and sums of log-latency, so means of
/// latency and of log-latency carry no bucket error. Quantiles and the CDF are
/// within [`LatencyHistogram::RELATIVE_ERROR`] of the truth.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "HistogramWire")]
pub struct LatencyHistogram {
    /// Counts of buckets `base`, `base + 1`, …: only a span around the
    /// occupied buckets is allocated (a few hundred bytes, not 8 KiB).
    counts: Vec<u64>,
    base: usize,
    lo: usize,
    hi: usize,
    count: u64,
    sum: f64,
    sum_ln: f64,
    sum_ln2: f64,
}

/// Buckets allocated beyond the one touched when the span grows.
const SLACK: usize = 32;

/// Equal when they hold the same counts and sums, however much of the
/// bucket range each has allocated.
impl PartialEq for LatencyHistogram {
    fn eq(&self, o: &Self) -> bool {
        self.count == o.count
            && self.sum == o.sum
            && self.sum_ln == o.sum_ln
            && self.sum_ln2 == o.sum_ln2
            && (self.count == 0
                || (self.lo == o.lo
                    && self.hi == o.hi
                    && (self.lo..=self.hi).all(|i| self.at(i) == o.at(i))))
    }
}

/// The stored form of a [`LatencyHistogram`]: only the occupied span of
/// buckets, so an empty histogram costs a few bytes. The sums are kept
/// exactly, so a histogram read back judges exactly as the one written.
/// (Written by the `Serialize` impl below; this is what is read.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramWire {
    /// Index of the first stored bucket.
    lo: usize,
    /// Counts of buckets `lo`, `lo + 1`, ….
    counts: Counts,
    sum: f64,
    sum_ln: f64,
    sum_ln2: f64,
}

/// Bucket counts as stored: written as one string ([`write_counts`]) of
/// base-32 numbers ([`push_count`]: 1 character for a count below 32, 2
/// below 1,024), a run of 3 or more empty buckets as `.` and its length:
/// a fraction of the bytes of a JSON array of numbers, which is the bulk
/// of a `canary serve` journal entry. Read from that or from the array of
/// numbers that earlier versions wrote (journals already on disk).
struct Counts(Vec<u64>);

/// The last base-32 digit of a count.
const LAST_DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
/// The digits before the last.
const MORE_DIGITS: &[u8; 32] = b"wxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

/// Appends `n` in base 32, most significant digit first: every digit but
/// the last from [`MORE_DIGITS`], the last from [`LAST_DIGITS`].
fn push_count(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 13];
    let mut i = digits.len();
    loop {
        i -= 1;
        let d = (n % 32) as usize;
        digits[i] = if i == digits.len() - 1 {
            LAST_DIGITS[d]
        } else {
            MORE_DIGITS[d]
        };
        n /= 32;
        if n == 0 {
            break;
        }
    }
    for &c in &digits[i..] {
        out.push(char::from(c));
    }
}

/// Marks a run of empty buckets; its length follows.
const ZERO_RUN: char = '.';

/// Writes `counts` as [`Counts`] are stored.
fn write_counts(out: &mut String, counts: impl Iterator<Item = u64>) {
    let mut zeros = 0u64;
    let flush = |out: &mut String, zeros: u64| {
        if zeros >= 3 {
            out.push(ZERO_RUN);
            push_count(out, zeros);
        } else {
            for _ in 0..zeros {
                out.push('0');
            }
        }
    };
    for c in counts {
        if c == 0 {
            zeros += 1;
        } else {
            flush(out, zeros);
            zeros = 0;
            push_count(out, c);
        }
    }
    flush(out, zeros);
}

/// Reads the counts [`write_counts`] wrote.
fn parse_counts(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut acc: u64 = 0;
    let mut open = false;
    let mut run = false;
    for c in text.bytes() {
        if char::from(c) == ZERO_RUN && !open && !run {
            run = true;
            continue;
        }
        let (d, last) = match LAST_DIGITS.iter().position(|&x| x == c) {
            Some(d) => (d, true),
            None => match MORE_DIGITS.iter().position(|&x| x == c) {
                Some(d) => (d, false),
                None => {
                    return Err(format!(
                        "latency counts: unexpected character {:?}",
                        char::from(c)
                    ))
                }
            },
        };
        acc = acc
            .checked_mul(32)
            .and_then(|a| a.checked_add(d as u64))
            .ok_or("latency counts: a count overflows")?;
        open = !last;
        if last {
            if run {
                let n = usize::try_from(acc)
                    .ok()
                    .filter(|&n| out.len().saturating_add(n) <= BUCKETS)
                    .ok_or_else(|| format!("latency counts: more than {BUCKETS} buckets"))?;
                out.resize(out.len() + n, 0);
                run = false;
            } else {
                out.push(acc);
            }
            acc = 0;
        }
    }
    if open || run {
        return Err("latency counts: the last count is cut short".into());
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Counts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bucket counts: a string of base-32 digits or an array of numbers")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Counts, E> {
                parse_counts(v).map(Counts).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Counts, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(n) = a.next_element::<u64>()? {
                    out.push(n);
                }
                Ok(Counts(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes the stored form ([`HistogramWire`]) straight from the histogram.
impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let occupied = self.count > 0 && !self.counts.is_empty();
        let mut counts = String::new();
        if occupied {
            counts.reserve(self.hi + 1 - self.lo);
            write_counts(&mut counts, (self.lo..=self.hi).map(|i| self.at(i)));
        }
        let mut w = s.serialize_struct("HistogramWire", 5)?;
        w.serialize_field("lo", &if occupied { self.lo } else { 0 })?;
        w.serialize_field("counts", &counts)?;
        w.serialize_field("sum", &self.sum)?;
        w.serialize_field("sum_ln", &self.sum_ln)?;
        w.serialize_field("sum_ln2", &self.sum_ln2)?;
        w.end()
    }
}

impl TryFrom<HistogramWire> for LatencyHistogram {
    type Error = String;
    fn try_from(w: HistogramWire) -> Result<Self, String> {
        let empty = LatencyHistogram {
            sum: w.sum,
            sum_ln: w.sum_ln,
            sum_ln2: w.sum_ln2,
            ..Default::default()
        };
        let counts = w.counts.0;
        if counts.is_empty() {
            return Ok(empty);
        }
        if w.lo.checked_add(counts.len()).is_none_or(|e| e > BUCKETS) {
            return Err(format!(
                "latency buckets {}+{} beyond {BUCKETS}",
                w.lo,
                counts.len()
            ));
        }
        let first = counts.iter().position(|&c| c > 0);
        let last = counts.iter().rposition(|&c| c > 0);
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(empty);
        };
        let count = counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))
            .ok_or("latency bucket counts overflow")?;
        Ok(LatencyHistogram {
            base: w.lo,
            lo: w.lo + first,
            hi: w.lo + last,
            count,
            counts,
            ..empty
        })
    }
}

impl LatencyHistogram {
    /// Largest relative distance between a value and its bucket's midpoint.
    pub const RELATIVE_ERROR: f64 = 0.010_889_286_051_700_46; // 2^(1/64) − 1

    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// The count of bucket `i`.
    fn at(&self, i: usize) -> u64 {
        i.checked_sub(self.base)
            .and_then(|j| self.counts.get(j))
            .copied()
            .unwrap_or(0)
    }

    /// The count of bucket `i`, to change: grows the allocated span to
    /// hold it (with some slack, so a run of nearby buckets allocates once).
    fn slot(&mut self, i: usize) -> &mut u64 {
        if self.counts.is_empty() {
            self.base = i.saturating_sub(SLACK);
            self.counts = vec![0; (i + SLACK + 1).min(BUCKETS) - self.base];
        } else if i < self.base {
            let base = i.saturating_sub(SLACK);
            let mut grown = vec![0; self.base - base + self.counts.len()];
            grown[self.base - base..].copy_from_slice(&self.counts);
            self.counts = grown;
            self.base = base;
        } else if i >= self.base + self.counts.len() {
            self.counts
                .resize((i + SLACK + 1).min(BUCKETS) - self.base, 0);
        }
        &mut self.counts[i - self.base]
    }

    /// Marks the occupied range empty before the first record.
    fn start(&mut self) {
        if self.count == 0 {
            self.lo = BUCKETS;
            self.hi = 0;
        }
    }

    fn index(ms: f64) -> usize {
        if ms.is_nan() || ms <= MIN_MS {
            return 0;
        }
        let i = ((ms / MIN_MS).log2() * PER_OCTAVE).floor() as usize + 1;
        i.min(BUCKETS - 1)
    }

    /// Lower edge of bucket `i`, ms.
    fn lower(i: usize) -> f64 {
        if i == 0 {
            0.0
        } else {
            MIN_MS * ((i - 1) as f64 / PER_OCTAVE).exp2()
        }
    }

    /// Upper edge of bucket `i`, ms.
    pub fn upper(i: usize) -> f64 {
        MIN_MS * (i as f64 / PER_OCTAVE).exp2()
    }

    /// The value that stands for bucket `i` (its geometric midpoint).
    fn mid(i: usize) -> f64 {
        if i == 0 {
            MIN_MS
        } else {
            MIN_MS * ((i as f64 - 0.5) / PER_OCTAVE).exp2()
        }
    }

    /// Records `n` requests that took `ms` milliseconds. NaN and negative
    /// values count as the smallest bucket.
    pub fn record_n(&mut self, ms: f64, n: u64) {
        if n == 0 {
            return;
        }
        self.start();
        let i = Self::index(ms);
        *self.slot(i) += n;
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
        self.count += n;
        let v = if ms.is_finite() {
            ms.max(MIN_MS)
        } else {
            MIN_MS
        };
        let nf = n as f64;
        self.sum += v * nf;
        let l = v.ln();
        self.sum_ln += l * nf;
        self.sum_ln2 += l * l * nf;
    }

    /// Records one request given the natural log of its latency in ms
    /// (saves a logarithm when the latency was drawn on the log scale).
    pub fn record_ln(&mut self, ln_ms: f64) {
        if ln_ms.is_nan() || ln_ms <= MIN_MS.ln() {
            self.record(MIN_MS);
            return;
        }
        self.start();
        let i = (((ln_ms - MIN_MS.ln()) * std::f64::consts::LOG2_E * PER_OCTAVE).floor() as usize
            + 1)
        .min(BUCKETS - 1);
        *self.slot(i) += 1;
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
        self.count += 1;
        self.sum += ln_ms.exp();
        self.sum_ln += ln_ms;
        self.sum_ln2 += ln_ms * ln_ms;
    }

    /// Width of one bucket on the ln scale: ln 2 / 32.
    pub const BUCKET_LN_WIDTH: f64 = std::f64::consts::LN_2 / PER_OCTAVE;

    /// This histogram with every value multiplied by 2^(k/32), i.e. moved
    /// up `k` buckets (the top bucket holds what would fall beyond it): the
    /// distribution a version would have if it were that much slower.
    pub fn shifted_up(&self, k: usize) -> LatencyHistogram {
        if k == 0 || self.count == 0 {
            return self.clone();
        }
        let mut h = LatencyHistogram {
            lo: BUCKETS,
            hi: 0,
            ..Default::default()
        };
        for i in self.occupied() {
            let j = (i + k).min(BUCKETS - 1);
            *h.slot(j) += self.at(i);
            h.lo = h.lo.min(j);
            h.hi = h.hi.max(j);
        }
        h.count = self.count;
        let c = k as f64 * Self::BUCKET_LN_WIDTH;
        let n = self.count as f64;
        h.sum = self.sum * c.exp();
        h.sum_ln = self.sum_ln + n * c;
        h.sum_ln2 = self.sum_ln2 + 2.0 * c * self.sum_ln + n * c * c;
        h
    }

    /// Records one request.
    pub fn record(&mut self, ms: f64) {
        self.record_n(ms, 1);
    }

    /// Adds every count of `other` to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.slot(other.lo);
        self.slot(other.hi);
        let (base, obase) = (self.base, other.base);
        for i in other.lo..=other.hi {
            self.counts[i - base] += other.counts.get(i - obase).copied().unwrap_or(0);
        }
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.max(other.hi);
        self.count += other.count;
        self.sum += other.sum;
        self.sum_ln += other.sum_ln;
        self.sum_ln2 += other.sum_ln2;
    }

    /// Number of recorded requests.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean latency, ms (exact).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Mean and sample variance of ln(latency in ms) (exact).
    pub fn log_moments(&self) -> Option<(f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let mean = self.sum_ln / n;
        let var = if self.count > 1 {
            ((self.sum_ln2 - n * mean * mean) / (n - 1.0)).max(0.0)
        } else {
            0.0
        };
        Some((mean, var))
    }

    /// The `lo` and `hi` quantiles (`lo` ≤ `hi`), as [`Self::quantile`]
    /// gives them, in one walk over the buckets (a status shows the median
    /// and the 99th percentile of each version after every look).
    pub fn quantile_pair(&self, lo: f64, hi: f64) -> (Option<f64>, Option<f64>) {
        if self.count == 0 {
            return (None, None);
        }
        let rank = |q: f64| ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let (ra, rb) = (rank(lo), rank(hi));
        if ra > rb {
            return (self.quantile(lo), self.quantile(hi));
        }
        let mut a = None;
        let mut seen = 0;
        for i in self.lo..=self.hi {
            seen += self.at(i);
            if a.is_none() && seen >= ra {
                a = Some(Self::mid(i));
            }
            if seen >= rb {
                return (a, Some(Self::mid(i)));
            }
        }
        let top = Some(Self::mid(self.hi));
        (a.or(top), top)
    }

    /// The `q` quantile (0 ≤ q ≤ 1), ms, within the bucket error.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for i in self.lo..=self.hi {
            seen += self.at(i);
            if seen >= rank {
                return Some(Self::mid(i));
            }
        }
        Some(Self::mid(self.hi))
    }

    /// Indices of the occupied buckets, in increasing order.
    fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        let range = if self.count == 0 {
            0..0
        } else {
            self.lo..self.hi + 1
        };
        range.filter(|&i| self.at(i) > 0)
    }

    /// Occupied buckets in increasing order: (upper edge in ms, count).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.occupied().map(|i| (Self::upper(i), self.at(i)))
    }

    /// The histogram a Prometheus histogram with these upper bounds (ms,
    /// increasing; `+Inf` implied) would report, read the way canary reads
    /// one: every request at its bucket's upper bound, the `+Inf` bucket at
    /// the largest finite bound. Each of this histogram's own (much finer)
    /// buckets goes to the Prometheus bucket holding its midpoint.
    pub fn at_bucket_bounds(&self, bounds_ms: &[f64]) -> LatencyHistogram {
        let mut out = LatencyHistogram::new();
        let Some(&largest) = bounds_ms.last() else {
            return self.clone();
        };
        for i in self.occupied() {
            let mid = Self::mid(i);
            let at = bounds_ms
                .iter()
                .copied()
                .find(|&b| mid <= b)
                .unwrap_or(largest);
            out.record_n(at, self.at(i));
        }
        out
    }

    /// Occupied buckets as (lower edge, upper edge, count).
    pub fn bucket_ranges(&self) -> impl Iterator<Item = (f64, f64, u64)> + '_ {
        self.occupied()
            .map(|i| (Self::lower(i), Self::upper(i), self.at(i)))
    }
}

/// Counts and latencies of one version over some span of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    /// Requests served.
    pub requests: u64,
    /// Requests that failed (5xx, connect errors, timeouts).
    pub errors: u64,
    /// Latency of the requests.
    pub latency: LatencyHistogram,
    /// The business metrics' counts (`metrics.business`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub business: BTreeMap<String, Ratio>,
    /// The threshold metrics' latest readings (`metrics.thresholds`), by
    /// name; only the canary's side has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, f64>,
}

/// A business metric's counts over some span: `numerator` events among
/// `denominator` (checkouts among sessions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    /// The counted events (at most `denominator`).
    pub numerator: u64,
    /// The events they are counted among.
    pub denominator: u64,
}

impl Ratio {
    /// numerator / denominator, or `None` without a denominator.
    pub fn value(&self) -> Option<f64> {
        (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64)
    }
}

impl VersionStats {
    /// errors / requests, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &VersionStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        for (name, r) in &other.business {
            let mine = self.business.entry(name.clone()).or_default();
            mine.numerator += r.numerator;
            mine.denominator += r.denominator;
        }
        for (name, v) in &other.gauges {
            self.gauges.insert(name.clone(), *v);
        }
    }

    /// A short summary for reports.
    pub fn summary(&self) -> VersionSummary {
        let (p50, p99) = self.latency.quantile_pair(0.5, 0.99);
        VersionSummary {
            requests: self.requests,
            errors: self.errors,
            error_rate: self.error_rate(),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            business: self.business.clone(),
            gauges: self.gauges.clone(),
        }
    }
}

/// The numbers of [`VersionStats`] that reports print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// Requests served.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: Option<f64>,
    /// Median latency, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub latency_p99_ms: Option<f64>,
    /// The business metrics' counts, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub business: BTreeMap<String, Ratio>,
    /// The threshold metrics' latest readings, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, f64>,
}

/// A value for the baseline (stable) and for the canary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pair<T> {
    /// The stable version.
    pub baseline: T,
    /// The new version.
    pub canary: T,
}

/// Everything a judge is shown at one look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// The canary's weight (percent) while the last window was recorded.
    pub canary_weight: f64,
    /// The last window (one tick).
    pub window: Pair<VersionStats>,
    /// Cumulative since the current stage began.
    pub stage: Pair<VersionStats>,
    /// Cumulative since the rollout began.
    pub rollout: Pair<VersionStats>,
}

impl Observations {
    /// Empty observations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one window recorded at `canary_weight` percent.
    pub fn push_window(&mut self, window: Pair<VersionStats>, canary_weight: f64) {
        self.canary_weight = canary_weight;
        self.stage.baseline.merge(&window.baseline);
        self.stage.canary.merge(&window.canary);
        self.rollout.baseline.merge(&window.baseline);
        self.rollout.canary.merge(&window.canary);
        self.window = window;
    }

    /// Starts a new stage: the stage totals begin again from zero.
    pub fn start_stage(&mut self) {
        self.stage = Pair::default();
        self.window = Pair::default();
    }

    /// The baseline to compare the stage's canary with: the stage's own
    /// baseline, or, at 100 % where the stable version gets no traffic, the
    /// baseline recorded over the whole rollout.
    pub fn reference_baseline(&self) -> &VersionStats {
        if self.stage.baseline.requests > 0 {
            &self.stage.baseline
        } else {
            &self.rollout.baseline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocated span grows on either side as needed; counts, merges,
    /// equality and the stored form do not depend on how much is allocated.
    #[test]
    fn sparse_span_grows_both_ways_and_is_invisible() {
        let mut a = LatencyHistogram::new();
        for ms in [100.0, 0.002, 90_000.0, 100.0, 5.0] {
            a.record(ms);
        }
        let mut b = LatencyHistogram::new();
        for ms in [5.0, 90_000.0, 100.0, 0.002, 100.0] {
            b.record(ms);
        }
        assert_eq!(a.count(), 5);
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            b.buckets().collect::<Vec<_>>()
        );
        assert_eq!(a.buckets().map(|(_, c)| c).sum::<u64>(), 5);
        let mut m = LatencyHistogram::new();
        m.record(1.0);
        m.merge(&a);
        let mut n = a.clone();
        n.record(1.0);
        assert_eq!(
            m.buckets().collect::<Vec<_>>(),
            n.buckets().collect::<Vec<_>>()
        );
        let wire = serde_json::to_string(&a).unwrap();
        let back: LatencyHistogram = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.quantile(0.5), a.quantile(0.5));
        let small = LatencyHistogram::new();
        let mut one = small.clone();
        one.record(20.0);
        assert!(one.counts.len() <= 2 * SLACK + 1, "{}", one.counts.len());
        assert_eq!(a.shifted_up(3).count(), 5);
    }

    #[test]
    fn a_shifted_histogram_is_the_same_distribution_that_much_slower() {
        let mut h = LatencyHistogram::new();
        for i in 0..100 {
            h.record(10.0 + f64::from(i));
        }
        let s = h.shifted_up(32);
        assert_eq!(s.count(), h.count());
        let (q, qs) = (h.quantile(0.5).unwrap(), s.quantile(0.5).unwrap());
        assert!((qs / q - 2.0).abs() < 1e-9, "{q} {qs}");
        let ((m, v), (ms, vs)) = (h.log_moments().unwrap(), s.log_moments().unwrap());
        assert!((ms - m - std::f64::consts::LN_2).abs() < 1e-9);
        assert!((vs - v).abs() < 1e-9);
        assert_eq!(h.shifted_up(0), h);
    }

    #[test]
    fn histograms_read_back_exactly_and_bad_stored_forms_are_refused() {
        let mut v = VersionStats::default();
        for i in 0..500 {
            v.latency.record(0.5 + f64::from(i) * 1.37);
        }
        v.requests = 500;
        v.errors = 3;
        let text = serde_json::to_string(&v).unwrap();
        let back: VersionStats = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.latency.quantile(0.99), v.latency.quantile(0.99));
        let empty: VersionStats =
            serde_json::from_str(&serde_json::to_string(&VersionStats::default()).unwrap())
                .unwrap();
        assert_eq!(empty, VersionStats::default());
        assert!(
            text.len() < 4000,
            "only the occupied span is stored: {}",
            text.len()
        );
        let bad = r#"{"requests":1,"errors":0,"latency":{"lo":1020,"counts":[1,1,1,1,1,1],"sum":1,"sum_ln":0,"sum_ln2":0}}"#;
        let e = serde_json::from_str::<VersionStats>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("beyond 1024"), "{e}");
    }

    #[test]
    fn counts_are_stored_short_and_read_back_from_the_string_or_the_older_array() {
        for n in [0, 1, 31, 32, 1023, 1024, 99_999, u64::MAX] {
            let mut text = String::new();
            push_count(&mut text, n);
            assert_eq!(parse_counts(&text).unwrap(), [n], "{n}: {text}");
        }
        let counts = [0, 0, 0, 0, 5, 0, 1, 0, 0, 40_000, 0, 0, 0, 7, 0, 0];
        let mut text = String::new();
        write_counts(&mut text, counts.into_iter());
        assert_eq!(parse_counts(&text).unwrap(), counts, "{text}");
        assert_eq!(text, ".450100xDy0.3700");

        let mut h = LatencyHistogram::new();
        for i in 0..300 {
            h.record(20.0 + f64::from(i % 37) * 3.1);
        }
        h.record_n(900.0, 123_456_789);
        let new = serde_json::to_string(&h).unwrap();
        assert!(new.contains(r#""counts":""#), "{new}");
        let back: LatencyHistogram = serde_json::from_str(&new).unwrap();
        assert_eq!(back, h);
        // The form earlier versions wrote: the counts as an array.
        let dense: Vec<u64> = (h.lo..=h.hi).map(|i| h.at(i)).collect();
        let old = format!(
            r#"{{"lo":{},"counts":{},"sum":{},"sum_ln":{},"sum_ln2":{}}}"#,
            h.lo,
            serde_json::to_string(&dense).unwrap(),
            serde_json::to_string(&h.sum).unwrap(),
            serde_json::to_string(&h.sum_ln).unwrap(),
            serde_json::to_string(&h.sum_ln2).unwrap()
        );
        let back: LatencyHistogram = serde_json::from_str(&old).unwrap();
        assert_eq!(back, h);
        assert!(new.len() < old.len(), "{} vs {}", new.len(), old.len());

        for bad in [
            "w",
            ".",
            "..3",
            "1.",
            "!",
            "1w.3",
            "._",
            ".__v",
            "w_____________0",
        ] {
            assert!(parse_counts(bad).is_err(), "{bad:?} was read");
        }
        let bad = r#"{"lo":1000,"counts":"1.Av","sum":1,"sum_ln":0,"sum_ln2":0}"#;
        let e = serde_json::from_str::<LatencyHistogram>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("beyond 1024"), "{e}");
    }

    #[test]
    fn a_pair_of_quantiles_is_the_two_quantiles() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile_pair(0.5, 0.99), (None, None));
        h.record(7.0);
        assert_eq!(
            h.quantile_pair(0.5, 0.99),
            (h.quantile(0.5), h.quantile(0.99))
        );
        for i in 0..997 {
            h.record(1.0 + f64::from(i % 89) * 2.7);
        }
        h.record_n(4000.0, 13);
        for (a, b) in [
            (0.5, 0.99),
            (0.0, 1.0),
            (0.5, 0.5),
            (0.99, 0.5),
            (0.001, 0.999),
        ] {
            assert_eq!(
                h.quantile_pair(a, b),
                (h.quantile(a), h.quantile(b)),
                "{a} {b}"
            );
        }
    }

    #[test]
    fn quantiles_within_bucket_error() {
        let mut h = LatencyHistogram::new();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.01, 10.0)] {
            let got = h.quantile(q).unwrap();
            assert!(
                (got - want).abs() / want <= 2.0 * LatencyHistogram::RELATIVE_ERROR,
                "q{q}: {got} vs {want}"
            );
        }
        assert_eq!(h.count(), 1000);
        assert!((h.mean().unwrap() - 500.5).abs() < 1e-9);
    }

    #[test]
    fn merge_equals_recording_everything() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for i in 0..500 {
            let v = 1.0 + i as f64 * 0.37;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            all.buckets().collect::<Vec<_>>()
        );
        assert!((a.sum - all.sum).abs() < 1e-6);
    }

    #[test]
    fn record_ln_matches_record() {
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        for i in 0..2000 {
            let v = 0.0005 + i as f64 * 0.731;
            a.record(v);
            b.record_ln(v.ln());
        }
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            b.buckets().collect::<Vec<_>>()
        );
        assert!((a.sum - b.sum).abs() < 1e-6 * a.sum);
    }

    #[test]
    fn empty_and_odd_values() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        h.record(f64::NAN);
        h.record(-3.0);
        h.record(1e12);
        assert_eq!(h.count(), 3);
        assert!(h.quantile(1.0).unwrap() > 1e6);
    }

    #[test]
    fn log_moments_are_exact() {
        let mut h = LatencyHistogram::new();
        h.record(1.0);
        h.record(std::f64::consts::E);
        let (m, v) = h.log_moments().unwrap();
        assert!((m - 0.5).abs() < 1e-12);
        assert!((v - 0.5).abs() < 1e-12);
    }

    #[test]
    fn stage_totals_reset_but_rollout_totals_do_not() {
        let mut o = Observations::new();
        let w = |n| Pair {
            baseline: VersionStats {
                requests: n,
                errors: 1,
                ..VersionStats::default()
            },
            canary: VersionStats::default(),
        };
        o.push_window(w(10), 5.0);
        o.start_stage();
        assert_eq!(o.reference_baseline().requests, 10);
        o.push_window(w(7), 25.0);
        assert_eq!(o.stage.baseline.requests, 7);
        assert_eq!(o.rollout.baseline.requests, 17);
        assert_eq!(o.reference_baseline().requests, 7);
    }
}

#[cfg(test)]
mod bucket_bound_tests {
    use super::LatencyHistogram;

    #[test]
    fn requests_move_to_their_prometheus_buckets_upper_bound() {
        let mut h = LatencyHistogram::new();
        h.record_n(3.0, 10); // ≤ 5
        h.record_n(7.0, 20); // ≤ 10
        h.record_n(40.0, 5); // > 10: the +Inf bucket, read at 10
        let q = h.at_bucket_bounds(&[5.0, 10.0]);
        assert_eq!(q.count(), 35);
        let b: Vec<(f64, u64)> = q.buckets().collect();
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].1, 10);
        assert_eq!(b[1].1, 25);
        // The values recorded are the bounds themselves.
        let mean = q.mean().unwrap();
        assert!(
            (mean - (10.0 * 5.0 + 25.0 * 10.0) / 35.0).abs() < 1e-9,
            "{mean}"
        );
        // No bounds: unchanged.
        assert_eq!(h.at_bucket_bounds(&[]), h);
    }
}
