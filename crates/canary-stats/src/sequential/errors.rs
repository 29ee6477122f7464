//! The `sequential` judge's error-rate test: the Poisson count e-process
//! ([`count`]) on the stage's errors between the two versions, or, at
//! 100 %, the one-sample test of the canary's rate against the upper bound
//! of the rate stable had earlier in the rollout; both against the error
//! margin (`analysis.margins`), with their confidence sequences.

use canary_core::{Stage, VersionStats};

use super::{count, intersect, Look, Reference, SequentialJudge};

/// The error margin in words, for the evidence ("" without one).
fn margin_note(ratio: f64) -> String {
    if ratio > 1.0 {
        format!("; harm is a rate ratio beyond {ratio:.3} (analysis.margins)")
    } else {
        String::new()
    }
}

impl SequentialJudge {
    pub(super) fn errors_two_sample(
        &mut self,
        stage: &Stage,
        b: &VersionStats,
        c: &VersionStats,
    ) -> Look {
        // Fixed for the stage (its weight, not the observed share), so the
        // stage's e-process keeps one mixture.
        let k = self.k_at(stage.routed_weight() / 100.0);
        let n = (b.requests, c.requests);
        if b.requests == 0 || c.requests == 0 {
            return Look::nothing(n, "no requests on one side yet");
        }
        let rho = c.requests as f64 / (b.requests + c.requests) as f64;
        let (eb, ec) = (b.errors as f64, c.errors as f64);
        // Against a margin: under "canary rate ≤ r × baseline rate" an error
        // is the canary's with probability at most ρ' = ρr / (ρr + 1 − ρ).
        let ratio = self.error_margin(eb / b.requests as f64);
        let rho_null = if ratio > 1.0 {
            (rho * ratio / (rho * ratio + 1.0 - rho)).min(1.0 - 1e-12)
        } else {
            rho
        };
        let ln_e = count::log_e(eb, ec, rho_null, k, self.opts.one_sided);
        let harm = ec * (1.0 - rho_null) > eb * rho_null;
        let cs = count::rate_ratio_interval(eb, ec, rho, k, self.e_alpha());
        let iv = intersect(self.stage.rate_ratio, cs);
        self.stage.rate_ratio = Some(iv);
        Look {
            ln_e,
            harm,
            interval: Some(iv),
            n,
            detail: format!(
                "errors canary {}/{} vs baseline {}/{} (canary share of requests {:.4}){}",
                c.errors,
                c.requests,
                b.errors,
                b.requests,
                rho,
                margin_note(ratio)
            ),
        }
    }

    pub(super) fn errors_one_sample(&mut self, r: &Reference, c: &VersionStats) -> Look {
        let n = (r.requests, c.requests);
        let p0 = r.rate[1];
        // p0 is frozen at the stage's first look, so k is fixed too.
        let k = self.k_at(p0);
        if r.requests == 0 || c.requests == 0 || !(p0 > 0.0 && p0 < 1.0) {
            return Look::nothing(n, "no baseline error rate to compare with");
        }
        let (x, m) = (c.errors as f64, c.requests as f64);
        let margin = self.error_margin(p0);
        let p_null = if margin > 1.0 {
            (p0 * margin).min(1.0 - 1e-12)
        } else {
            p0
        };
        let ln_e = count::log_e(m - x, x, p_null, k, true);
        let harm = x > m * p_null;
        let pc = count::rate_interval(x, m, k, self.e_alpha());
        let ratio = [
            pc[0] / r.rate[1],
            if r.rate[0] > 0.0 {
                pc[1] / r.rate[0]
            } else {
                f64::INFINITY
            },
        ];
        let iv = intersect(self.stage.rate_ratio, ratio);
        self.stage.rate_ratio = Some(iv);
        Look {
            ln_e,
            harm,
            interval: Some(iv),
            n,
            detail: format!(
                "100 %: canary errors {}/{} against the baseline rate's upper bound {:.5} (from {} earlier baseline requests){}",
                c.errors, c.requests, p0, r.requests, margin_note(margin)
            ),
        }
    }

    /// The harmless canary/baseline error-rate ratio at a baseline rate
    /// (1: none; one-sided tests only).
    pub(super) fn error_margin(&self, baseline_rate: f64) -> f64 {
        if self.opts.one_sided {
            self.margins.error_ratio(baseline_rate)
        } else {
            1.0
        }
    }
}
