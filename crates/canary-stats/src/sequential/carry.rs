//! How the `sequential` judge carries evidence from stage to stage.
//!
//! Each stage runs its own e-process E_j (the canary's share changes with
//! the weight), started at 1 when the stage starts. Two ways to make one
//! rollout-wide e-process of them:
//!
//! - `product`: C_0 = Π_j E_j, one test supermartingale over the rollout.
//!   Healthy stages push it below 1 and a fault that starts later must pay
//!   that debt back before it can reach the threshold.
//! - `restart`: M = Σ_k w_k C_k with Σ w_k = 1, where C_k is 1 before
//!   stage k starts and Π_{j ≥ k} E_j from then on. A stage's start is a
//!   stopping time (the state machine decides it from the looks so far),
//!   and a test supermartingale started at 1 at a stopping time and held at
//!   1 before it is again a test supermartingale; so is a convex
//!   combination of them. Ville's inequality then gives
//!   P(∃t: M_t ≥ 1/α) ≤ α under the null, at every look of every stage.
//!   The component started at the latest healthy stage carries no debt;
//!   the price is ln(1/w_k) of evidence on the component that fires.
//!
//! Components of stages not started yet are 1 and count with their weight.

use canary_core::spec::AcrossStages;

/// Weights of the components started at each stage, given the stages'
/// traffic weights: `product` puts everything on the first; `restart` puts
/// `carried` on the first and shares the rest over the later starts in
/// proportion to their stages' traffic weights (a fault that appears with
/// load appears at the high weights, and the later a start, the more debt
/// it avoids); a single stage gets everything. The weights sum to 1.
pub fn weights(mode: AcrossStages, carried: f64, stage_weights: &[f64]) -> Vec<f64> {
    let n = stage_weights.len().max(1);
    let mut w = vec![0.0; n];
    let later: f64 = stage_weights.iter().skip(1).map(|x| x.max(0.0)).sum();
    match mode {
        AcrossStages::Restart if n > 1 && later > 0.0 => {
            let c = carried.clamp(0.0, 1.0);
            w[0] = c;
            for (x, sw) in w[1..].iter_mut().zip(&stage_weights[1..]) {
                *x = (1.0 - c) * sw.max(0.0) / later;
            }
        }
        _ => w[0] = 1.0,
    }
    w
}

/// ln of the rollout-wide e-value: ln Σ_k w_k C_k, with `done` the ln E of
/// each finished stage and `current` that of the stage under way (stage
/// `done.len()`). Components not started yet are 1 (ln 0).
pub fn ln_mixture(weights: &[f64], done: &[f64], current: f64) -> f64 {
    let here = done.len();
    // (w_k, ln C_k) of the started components; the stages since k summed in
    // stage order (for `product` exactly the running sum it always was).
    let parts: Vec<(f64, f64)> = (0..=here)
        .filter_map(|k| {
            let w = weights.get(k).copied().unwrap_or(0.0);
            (w > 0.0).then(|| (w, done[k..].iter().fold(0.0, |a, x| a + x) + current))
        })
        .collect();
    if let [(w, c)] = parts[..] {
        if w >= 1.0 {
            return c;
        }
    }
    let top = parts.iter().map(|p| p.1).fold(0.0, f64::max);
    if top < 30.0 {
        // ln(1 + Σ w_k (C_k − 1)): exactly 0 while every component is 1
        // (the weights sum to 1; components not started are 1).
        let s: f64 = parts.iter().map(|(w, c)| w * c.exp_m1()).sum();
        s.ln_1p()
    } else {
        let later: f64 = weights.iter().skip(here + 1).sum();
        let mut terms: Vec<f64> = parts.iter().map(|(w, c)| w.ln() + c).collect();
        if later > 0.0 {
            terms.push(later.ln());
        }
        ln_sum_exp(&terms)
    }
}

fn ln_sum_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_mode_is_the_sum_of_the_stage_logs() {
        let w = weights(AcrossStages::Product, 0.5, &[1.0, 5.0, 25.0, 100.0]);
        assert_eq!(w, [1.0, 0.0, 0.0, 0.0]);
        let l = ln_mixture(&w, &[-1.0, 0.5], 2.0);
        assert!((l - 1.5).abs() < 1e-12, "{l}");
    }

    #[test]
    fn restart_weights_sum_to_one() {
        for n in 1..8 {
            let stages: Vec<f64> = (1..=n).map(|i| (i * i) as f64).collect();
            let w = weights(AcrossStages::Restart, 0.4, &stages);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{n}: {w:?}");
        }
        assert_eq!(
            weights(AcrossStages::Restart, 0.4, &[1.0, 1.0, 1.0]),
            [0.4, 0.3, 0.3]
        );
        let w = weights(AcrossStages::Restart, 0.5, &[1.0, 5.0, 25.0, 50.0, 100.0]);
        assert!((w[4] - 0.5 * 100.0 / 180.0).abs() < 1e-12, "{w:?}");
    }

    #[test]
    fn the_mixture_starts_at_one_and_forgets_the_debt() {
        let w = weights(AcrossStages::Restart, 0.5, &[1.0, 1.0, 1.0]);
        // No evidence yet: every component is 1, and so is the mixture.
        assert_eq!(ln_mixture(&w, &[], 0.0), 0.0);
        assert_eq!(ln_mixture(&w, &[0.0], 0.0), 0.0);
        // Both branches (small and large components) agree with the sum.
        for (d, c) in [(0.3f64, 1.2f64), (-2.0, 29.0), (-2.0, 31.0), (5.0, 700.0)] {
            let direct = (0.5 * (d + c).exp() + 0.25 * c.exp() + 0.25).ln();
            let m = ln_mixture(&w, &[d], c);
            assert!(
                (m - direct).abs() < 1e-9 * direct.abs().max(1.0),
                "{d} {c}: {m} {direct}"
            );
        }
        // Deep debt from two healthy stages, then strong evidence in the
        // third: the product stays small, the restarted component does not.
        let (debt, now) = ([-5.0, -5.0], 6.0);
        let m = ln_mixture(&w, &debt, now);
        let expect = (0.5 * (-4.0f64).exp() + 0.25 * 1.0f64.exp() + 0.25 * 6.0f64.exp()).ln();
        assert!((m - expect).abs() < 1e-12, "{m} {expect}");
        assert!(m > 6.0 + 0.25f64.ln() - 1e-12);
        let product = weights(AcrossStages::Product, 0.5, &[1.0, 1.0, 1.0]);
        assert!(ln_mixture(&product, &debt, now) < -3.9);
    }
}
