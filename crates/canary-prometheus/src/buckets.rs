//! A Prometheus histogram's cumulative buckets, read into the judges'
//! latency histogram.
//!
//! Prometheus knows each request only as "at most `le` seconds", for the
//! application's own bucket bounds. Each request is recorded here at its
//! bucket's upper bound (those of the `+Inf` bucket at the largest finite
//! bound): both versions are read the same way, so a comparison between
//! them is like for like, but latencies in the report are bucket bounds,
//! not measured values, and a difference inside one bucket cannot be seen.

use canary_core::LatencyHistogram;

/// One bucket: its upper bound in seconds and the cumulative count.
pub type Bucket = (f64, f64);

/// The histogram of cumulative `buckets` (in any order), or why not.
///
/// Counts are rounded to whole requests (`increase()` extrapolates, so
/// they need not be whole), and a bucket whose count is below the one
/// before it (each bucket series is extrapolated on its own) is read as
/// holding no requests.
///
/// # Errors
/// No `+Inf` bucket, a bound that is not a number, a negative count.
pub fn histogram(buckets: &[Bucket]) -> Result<LatencyHistogram, String> {
    let mut b: Vec<Bucket> = buckets.to_vec();
    if b.iter().any(|(le, _)| le.is_nan()) {
        return Err("a bucket bound (`le`) is not a number".into());
    }
    if let Some((le, c)) = b.iter().find(|(_, c)| !c.is_finite() || *c < -0.5) {
        return Err(format!("bucket le={le} has the count {c}"));
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b.dedup_by(|x, y| x.0 == y.0);
    match b.last() {
        Some((le, _)) if *le == f64::INFINITY => {}
        _ => {
            return Err(
                "the histogram has no `+Inf` bucket: every Prometheus histogram has one; \
                 is this a histogram's `_bucket` series?"
                    .into(),
            )
        }
    }
    let largest_finite = b
        .iter()
        .rev()
        .map(|(le, _)| *le)
        .find(|le| le.is_finite() && *le > 0.0);
    let mut h = LatencyHistogram::new();
    let mut below = 0u64;
    for (le, c) in &b {
        let c = c.round().max(0.0) as u64;
        let n = c.saturating_sub(below);
        below = below.max(c);
        if n == 0 {
            continue;
        }
        let at_s = if le.is_finite() {
            *le
        } else {
            largest_finite.unwrap_or(1.0)
        };
        // A bound of 0 (or below) holds requests of no measurable time.
        let ms = (at_s * 1000.0).max(0.001);
        h.record_n(ms, n);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_become_counts_at_their_upper_bounds() {
        let h = histogram(&[
            (0.1, 30.0),
            (f64::INFINITY, 100.4),
            (0.05, 10.0),
            (0.5, 99.0),
        ])
        .unwrap();
        assert_eq!(h.count(), 100);
        // 10 at 50 ms, 20 at 100 ms, 69 at 500 ms, 1 (+Inf) at 500 ms.
        let mean = h.mean().unwrap();
        let want = (10.0 * 50.0 + 20.0 * 100.0 + 70.0 * 500.0) / 100.0;
        assert!((mean - want).abs() / want < 0.02, "{mean} vs {want}");
    }

    #[test]
    fn extrapolation_that_breaks_monotonicity_reads_as_an_empty_bucket() {
        let h = histogram(&[(0.1, 10.2), (0.2, 9.8), (f64::INFINITY, 12.0)]).unwrap();
        assert_eq!(h.count(), 12);
    }

    #[test]
    fn a_histogram_without_inf_is_refused() {
        let e = histogram(&[(0.1, 1.0), (0.5, 2.0)]).unwrap_err();
        assert!(e.contains("+Inf"), "{e}");
        assert!(histogram(&[]).is_err());
        assert!(histogram(&[(f64::NAN, 1.0), (f64::INFINITY, 1.0)]).is_err());
        assert!(histogram(&[(f64::INFINITY, -3.0)]).is_err());
    }
}
