//! The Poisson-process count test (Lindon & Malek 2022): which arm the next
//! event (error) falls on, against the arms' traffic shares, with a
//! Beta(kρ_c, kρ_b) mixture over the canary's share θ of the events.
//!
//! With N_b baseline and N_c canary events and canary share ρ_c:
//!
//! ```text
//! ln E = lnB(kρ_b + N_b, kρ_c + N_c) − lnB(kρ_b, kρ_c) − N_b ln ρ_b − N_c ln ρ_c
//! ```
//!
//! The one-sided variant truncates the mixture to θ > ρ_c ("canary worse"):
//! both Beta terms are multiplied by their upper tails at ρ_c. Under the
//! null (θ ≤ ρ_c) both are test martingales in the events, so
//! `min(1, 1/max E)` is an anytime-valid p-value.
//!
//! The same formula is a one-sample test of a Bernoulli rate: events are the
//! requests, "canary" events the errors and ρ_c the null rate p₀. The
//! sequential judge uses it so at 100 %, where the baseline gets no traffic.

use crate::special::{brent, ln_beta, ln_beta_inc_upper};

/// ln E of the count test after `n_base` baseline and `n_canary` canary
/// events, the canary's share being `rho_canary`, mixture concentration
/// `k`. `None` unless 0 < ρ < 1, k > 0 and the counts are finite and ≥ 0.
pub fn log_e(n_base: f64, n_canary: f64, rho_canary: f64, k: f64, one_sided: bool) -> Option<f64> {
    let valid = rho_canary > 0.0
        && rho_canary < 1.0
        && k > 0.0
        && k.is_finite()
        && n_base >= 0.0
        && n_canary >= 0.0
        && n_base.is_finite()
        && n_canary.is_finite();
    if !valid {
        return None;
    }
    let (rc, rb) = (rho_canary, 1.0 - rho_canary);
    let (ab, ac) = (k * rb, k * rc);
    let mut l = ln_beta(ab + n_base, ac + n_canary) - ln_beta(ab, ac);
    // xlogy: 0 · ln ρ is 0.
    if n_base > 0.0 {
        l -= n_base * rb.ln();
    }
    if n_canary > 0.0 {
        l -= n_canary * rc.ln();
    }
    if one_sided {
        // θ_c ~ Beta(ac + N_c, ab + N_b) a posteriori; keep θ_c > ρ_c.
        l += ln_beta_inc_upper(ac + n_canary, ab + n_base, rc) - ln_beta_inc_upper(ac, ab, rc);
    }
    Some(l)
}

/// The anytime p-value at one look, `min(1, e^{−ln E})`.
pub fn p_value(ln_e: f64) -> f64 {
    (-ln_e).exp().min(1.0)
}

/// Confidence sequence (level 1 − `alpha`) for θ, the canary's share of
/// the events: every θ₀ whose two-sided count test has not rejected,
/// `{θ₀ : ln E_θ₀ < ln(1/α)}`, found by Brent's method on either side of
/// the estimate N_c / (N_b + N_c). Without events it is [0, 1].
pub fn share_interval(n_base: f64, n_canary: f64, k: f64, alpha: f64) -> [f64; 2] {
    let n = n_base + n_canary;
    let usable = n > 0.0 && alpha > 0.0 && alpha < 1.0;
    if !usable {
        return [0.0, 1.0];
    }
    const EDGE: f64 = 1e-15;
    let bound = (1.0 / alpha).ln();
    let g = |t: f64| log_e(n_base, n_canary, t, k, false).map_or(f64::NAN, |l| l - bound);
    let hat = (n_canary / n).clamp(EDGE, 1.0 - EDGE);
    let side = |edge: f64, boundary: f64| {
        if g(edge) <= 0.0 {
            boundary
        } else {
            brent(g, edge, hat, 1e-15).unwrap_or(boundary)
        }
    };
    let lo = if n_canary == 0.0 {
        0.0
    } else {
        side(EDGE, 0.0)
    };
    let hi = if n_base == 0.0 {
        1.0
    } else {
        side(1.0 - EDGE, 1.0)
    };
    [lo, hi]
}

/// Converts the canary's share θ of the events into the canary/baseline
/// rate ratio given its share ρ of the traffic: r = (θ/ρ_c) / ((1−θ)/ρ_b).
pub fn share_to_rate_ratio(theta: f64, rho_canary: f64) -> f64 {
    if theta >= 1.0 {
        return f64::INFINITY;
    }
    (theta / rho_canary) / ((1.0 - theta) / (1.0 - rho_canary))
}

/// Confidence sequence for the canary/baseline rate ratio (level 1 − α).
pub fn rate_ratio_interval(
    n_base: f64,
    n_canary: f64,
    rho_canary: f64,
    k: f64,
    alpha: f64,
) -> [f64; 2] {
    let [lo, hi] = share_interval(n_base, n_canary, k, alpha);
    [
        share_to_rate_ratio(lo, rho_canary),
        share_to_rate_ratio(hi, rho_canary),
    ]
}

/// Confidence sequence (level 1 − α) for a Bernoulli rate after `events` in
/// `trials`.
pub fn rate_interval(events: f64, trials: f64, k: f64, alpha: f64) -> [f64; 2] {
    share_interval((trials - events).max(0.0), events, k, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_and_per_event_updates_agree_in_kind() {
        // ln E depends on the counts only, so any order of events gives the
        // same value; and no events give E = 1.
        assert_eq!(log_e(0.0, 0.0, 0.3, 100.0, false), Some(0.0));
        assert!(log_e(0.0, 0.0, 0.3, 100.0, true).unwrap().abs() < 1e-12);
        assert_eq!(log_e(1.0, 1.0, 0.0, 100.0, false), None);
        assert_eq!(log_e(1.0, 1.0, 0.5, 0.0, false), None);
        assert_eq!(log_e(f64::NAN, 1.0, 0.5, 1.0, false), None);
    }

    #[test]
    fn interval_contains_the_estimate_and_shrinks() {
        let [lo, hi] = share_interval(900.0, 100.0, 100.0, 0.05);
        assert!(lo < 0.1 && 0.1 < hi, "{lo} {hi}");
        let [lo2, hi2] = share_interval(9000.0, 1000.0, 100.0, 0.05);
        assert!(lo < lo2 && hi2 < hi);
        // Zero events on one side: the interval reaches that boundary.
        assert_eq!(share_interval(50.0, 0.0, 100.0, 0.05)[0], 0.0);
        assert_eq!(share_interval(0.0, 50.0, 100.0, 0.05)[1], 1.0);
        assert_eq!(share_interval(0.0, 0.0, 100.0, 0.05), [0.0, 1.0]);
        // The boundary points are where the test just rejects.
        let l = log_e(900.0, 100.0, hi, 100.0, false).unwrap();
        assert!((l - 20f64.ln()).abs() < 1e-6, "{l}");
    }

    #[test]
    fn rate_ratio_of_equal_rates_covers_one() {
        let [lo, hi] = rate_ratio_interval(950.0, 50.0, 0.05, 100.0, 0.05);
        assert!(lo < 1.0 && 1.0 < hi);
        assert_eq!(share_to_rate_ratio(0.05, 0.05), 1.0);
    }
}
