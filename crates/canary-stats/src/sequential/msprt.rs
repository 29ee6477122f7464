//! The normal-mixture mSPRT for a difference of means (Johari et al. 2017;
//! Howard et al. 2021) and its confidence sequence.
//!
//! For an estimate `d` of the mean difference whose variance is `s²`
//! (2σ²/n for n pairs; σ²(1/n_b + 1/n_c) for two samples), mixing the
//! effect over N(0, τ²):
//!
//! ```text
//! Λ = sqrt(s² / (s² + τ²)) · exp( τ² d² / (2 s² (s² + τ²)) )
//! ```
//!
//! which for n pairs is STATISTICS.md's
//! `sqrt(2σ²/(2σ²+nτ²)) · exp(n²τ²d̄²/(4σ²(2σ²+nτ²)))`. Inverting
//! `Λ(δ) < 1/α` gives the confidence sequence
//! `d ± sqrt( s²(s²+τ²)/τ² · ln((s²+τ²)/(s²α²)) )`.
//!
//! The one-sided variant mixes over the half-normal on δ > 0 only:
//! `Λ⁺ = Λ · 2Φ(dτ / (s·sqrt(s²+τ²)))`, a test martingale for δ ≤ 0.

use crate::special::norm_cdf;

/// κ = 2 ln(1/α) + ln(1 + 2 ln(1/α)): with τ² = κ · s²_opt the test is
/// tightest when the estimate's variance is s²_opt (Howard et al.).
pub fn kappa(alpha: f64) -> f64 {
    let l = 2.0 * (1.0 / alpha).ln();
    l + (1.0 + l).ln()
}

/// ln Λ, two-sided, for an estimate `d` with variance `s2` and mixing
/// variance `tau2`. `None` unless s² > 0 and τ² > 0 (and all finite).
pub fn log_lambda(d: f64, s2: f64, tau2: f64) -> Option<f64> {
    if !(s2 > 0.0 && tau2 > 0.0 && d.is_finite() && s2.is_finite() && tau2.is_finite()) {
        return None;
    }
    Some(0.5 * (s2 / (s2 + tau2)).ln() + tau2 * d * d / (2.0 * s2 * (s2 + tau2)))
}

/// ln Λ⁺, the one-sided (δ > 0) mixture.
pub fn log_lambda_one_sided(d: f64, s2: f64, tau2: f64) -> Option<f64> {
    let two = log_lambda(d, s2, tau2)?;
    let x = d * tau2.sqrt() / (s2.sqrt() * (s2 + tau2).sqrt());
    Some(two + std::f64::consts::LN_2 + norm_cdf(x).ln())
}

/// Half-width of the (1 − α) confidence sequence around the estimate.
pub fn half_width(s2: f64, tau2: f64, alpha: f64) -> f64 {
    if !(s2 > 0.0 && tau2 > 0.0) {
        return f64::INFINITY;
    }
    (s2 * (s2 + tau2) / tau2 * ((s2 + tau2) / (s2 * alpha * alpha)).ln()).sqrt()
}

/// STATISTICS.md's paired form: ln Λ_n after `n` pairs with mean difference
/// `dbar`, pair variance σ² = `sigma2`.
pub fn paired_log_lambda(n: f64, dbar: f64, sigma2: f64, tau2: f64) -> Option<f64> {
    log_lambda(dbar, 2.0 * sigma2 / n, tau2)
}

/// STATISTICS.md's paired form of the confidence-sequence half-width.
pub fn paired_half_width(n: f64, sigma2: f64, tau2: f64, alpha: f64) -> f64 {
    half_width(2.0 * sigma2 / n, tau2, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sided_is_two_sided_times_2_phi() {
        let (d, s2, t2) = (0.3, 0.02, 0.05);
        let two = log_lambda(d, s2, t2).unwrap();
        let one = log_lambda_one_sided(d, s2, t2).unwrap();
        assert!(one > two);
        // At d = 0 the two agree (2Φ(0) = 1).
        assert_eq!(
            log_lambda(0.0, s2, t2).unwrap(),
            log_lambda_one_sided(0.0, s2, t2).unwrap()
        );
        // A large negative d is no evidence for δ > 0.
        assert!(log_lambda_one_sided(-1.0, s2, t2).unwrap() < 0.0);
        assert_eq!(log_lambda(0.1, 0.0, 1.0), None);
        assert_eq!(half_width(0.0, 1.0, 0.05), f64::INFINITY);
    }

    #[test]
    fn the_interval_edge_is_where_lambda_reaches_one_over_alpha() {
        let (s2, t2, a) = (0.01, 0.03, 0.05);
        let h = half_width(s2, t2, a);
        let l = log_lambda(h, s2, t2).unwrap();
        assert!((l - (1.0 / a).ln()).abs() < 1e-12);
    }
}
