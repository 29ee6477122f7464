//! The time-uniform distribution test (Howard & Ramdas 2022; Netflix part 1).
//!
//! For an empirical CDF of t i.i.d. samples,
//! `ε_t(α) = 0.85 · sqrt((ln ln(e·t) + 0.8 ln(1612/α)) / t)` bounds
//! `sup_x |F̂_t − F|` at every t at once with probability ≥ 1 − α. Two arms
//! with the same distribution therefore keep
//! `D = sup_x (F̂_base − F̂_canary)` below `ε_{n_b}(α/2) + ε_{n_c}(α/2)`
//! forever with probability ≥ 1 − α; crossing it means the canary is slower
//! somewhere in its distribution.
//!
//! From histograms, D is taken at the bucket edges the two histograms share
//! (both use the same fixed grid). There both empirical CDFs are exact, so
//! the histogram's D is a lower bound of the samples' D and the test stays
//! valid without any widening; what the bucket error costs is resolution:
//! a shift smaller than a bucket (±1.09 %) can go unseen. Where values are
//! read back (the quantile bands), the bucket's edges are taken, which adds
//! the bucket error to the band.

use canary_core::LatencyHistogram;

use crate::special::brent;

/// ε_t(α), the half-width of the time-uniform band after t samples (∞ for
/// t < 1).
pub fn epsilon(t: f64, alpha: f64) -> f64 {
    if t.is_nan() || t < 1.0 || alpha.is_nan() || alpha <= 0.0 {
        return f64::INFINITY;
    }
    0.85 * (((std::f64::consts::E * t).ln().ln() + 0.8 * (1612.0 / alpha).ln()) / t).sqrt()
}

/// The two-arm threshold ε_{n_b}(α/2) + ε_{n_c}(α/2).
pub fn threshold(n_base: f64, n_canary: f64, alpha: f64) -> f64 {
    epsilon(n_base, alpha / 2.0) + epsilon(n_canary, alpha / 2.0)
}

/// The smallest α at which `d` crosses the two-arm threshold: the test's
/// p-value (1 when it does not cross even at α = 1).
pub fn p_value(d: f64, n_base: f64, n_canary: f64) -> f64 {
    if d.is_nan() || d <= threshold(n_base, n_canary, 1.0) {
        return 1.0;
    }
    // The threshold decreases in α: solve in ln α.
    let g = |la: f64| d - threshold(n_base, n_canary, la.exp());
    let lo = -700.0;
    if g(lo) > 0.0 {
        return lo.exp();
    }
    brent(g, lo, 0.0, 1e-12).map_or(1.0, f64::exp)
}

/// `sup (F̂_base − F̂_canary)` over the bucket edges of two histograms
/// (0 when either is empty). Positive: the canary is slower somewhere.
pub fn sup_diff_histograms(base: &LatencyHistogram, canary: &LatencyHistogram) -> f64 {
    let (nb, nc) = (base.count() as f64, canary.count() as f64);
    if nb == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let mut b = base.bucket_ranges().peekable();
    let mut c = canary.bucket_ranges().peekable();
    let (mut cb, mut cc) = (0u64, 0u64);
    let mut d: f64 = 0.0;
    loop {
        // The next edge: the smaller upper edge of the two heads. Both
        // histograms share one grid, so equal edges compare equal.
        let edge = match (b.peek(), c.peek()) {
            (None, None) => break,
            (Some(x), None) => x.1,
            (None, Some(y)) => y.1,
            (Some(x), Some(y)) => x.1.min(y.1),
        };
        while let Some(&(_, u, n)) = b.peek() {
            if u > edge {
                break;
            }
            cb += n;
            b.next();
        }
        while let Some(&(_, u, n)) = c.peek() {
            if u > edge {
                break;
            }
            cc += n;
            c.next();
        }
        d = d.max(cb as f64 / nb - cc as f64 / nc);
    }
    d
}

/// `sup_x (F̂_base(x) − F̂_canary(x))` of two sorted samples (0 when either
/// is empty).
pub fn sup_diff_sorted(base: &[f64], canary: &[f64]) -> f64 {
    let (nb, nc) = (base.len() as f64, canary.len() as f64);
    if base.is_empty() || canary.is_empty() {
        return 0.0;
    }
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < base.len() || j < canary.len() {
        let x = match (base.get(i), canary.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < base.len() && base[i] <= x {
            i += 1;
        }
        while j < canary.len() && canary[j] <= x {
            j += 1;
        }
        d = d.max(i as f64 / nb - j as f64 / nc);
    }
    d
}

/// The ranks [⌈t(p−ε)⌉, ⌊t(p+ε)⌋ + 1] of the quantile band, as 1-based
/// ranks; `None` for an end beyond the sample (0 or ∞).
fn band_ranks(t: u64, p: f64, eps: f64) -> (Option<u64>, Option<u64>) {
    let tf = t as f64;
    let lo = (tf * (p - eps)).ceil();
    let hi = (tf * (p + eps)).floor() + 1.0;
    let lo = (lo >= 1.0 && lo <= tf).then_some(lo as u64);
    let hi = (hi >= 1.0 && hi <= tf).then_some(hi as u64);
    (lo, hi)
}

/// Time-uniform band for the `p` quantile of a histogram:
/// `[X_(⌈t(p−ε)⌉), X_(⌊t(p+ε)⌋+1)]` with each order statistic widened to
/// its bucket's edge (lower edge below, upper edge above).
pub fn quantile_band_histogram(h: &LatencyHistogram, p: f64, eps: f64) -> [f64; 2] {
    let (lo, hi) = band_ranks(h.count(), p, eps);
    let find = |rank: u64, upper: bool| {
        let mut seen = 0;
        for (l, u, n) in h.bucket_ranges() {
            seen += n;
            if seen >= rank {
                return if upper { u } else { l };
            }
        }
        f64::INFINITY
    };
    [
        lo.map_or(0.0, |r| find(r, false)),
        hi.map_or(f64::INFINITY, |r| find(r, true)),
    ]
}

/// Time-uniform band for the `p` quantile of a sorted sample.
pub fn quantile_band_sorted(x: &[f64], p: f64, eps: f64) -> [f64; 2] {
    let (lo, hi) = band_ranks(x.len() as u64, p, eps);
    [
        lo.map_or(f64::NEG_INFINITY, |r| x[r as usize - 1]),
        hi.map_or(f64::INFINITY, |r| x[r as usize - 1]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_d_is_a_lower_bound_of_the_sample_d() {
        let (mut hb, mut hc) = (LatencyHistogram::new(), LatencyHistogram::new());
        let mut b: Vec<f64> = (0..500).map(|i| 50.0 + i as f64 * 0.2).collect();
        let mut c: Vec<f64> = (0..400).map(|i| 60.0 + i as f64 * 0.25).collect();
        b.iter().for_each(|&x| hb.record(x));
        c.iter().for_each(|&x| hc.record(x));
        b.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        let exact = sup_diff_sorted(&b, &c);
        let hist = sup_diff_histograms(&hb, &hc);
        assert!(hist <= exact + 1e-12, "{hist} > {exact}");
        assert!(hist > exact - 0.05, "{hist} far below {exact}");
        assert_eq!(sup_diff_histograms(&hb, &LatencyHistogram::new()), 0.0);
        assert_eq!(sup_diff_sorted(&b, &b), 0.0);
    }

    #[test]
    fn p_value_inverts_the_threshold() {
        let t = threshold(1000.0, 200.0, 0.01);
        let p = p_value(t, 1000.0, 200.0);
        assert!((p - 0.01).abs() < 1e-9, "{p}");
        assert_eq!(p_value(0.0, 1000.0, 200.0), 1.0);
        assert_eq!(epsilon(0.0, 0.05), f64::INFINITY);
    }

    #[test]
    fn quantile_band_contains_the_quantile() {
        let x: Vec<f64> = (1..=1000).map(f64::from).collect();
        let eps = epsilon(1000.0, 0.05);
        let [lo, hi] = quantile_band_sorted(&x, 0.5, eps);
        assert!(lo < 500.0 && 500.0 < hi);
        let mut h = LatencyHistogram::new();
        x.iter().for_each(|&v| h.record(v));
        let [hl, hh] = quantile_band_histogram(&h, 0.5, eps);
        assert!(hl <= lo && hh >= hi, "[{hl}, {hh}] vs [{lo}, {hi}]");
        assert_eq!(
            quantile_band_sorted(&x[..3], 0.5, 0.9),
            [f64::NEG_INFINITY, f64::INFINITY]
        );
    }
}
