//! How the `sequential` judge divides α between its three tests (errors,
//! latency mean, latency distribution), and the reserve for the frozen
//! baseline bounds of a 100 % stage. One home for the split, used by the
//! live judge and by `canary analyze`.

use canary_core::spec::Combine;

/// The latency mean test's share of α under Bonferroni, as a fraction of an
/// even third; the band test gets the rest of the two latency thirds. The
/// rollout judge uses 4/5: tests at α·(5, 4, 6)/15 for (errors, latency
/// mean, latency distribution). See docs/tuning.md, "The weighted α split".
pub const ROLLOUT_MEAN_WEIGHT: f64 = 0.8;

/// How alpha is divided between the tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The rollout-wide level.
    pub alpha: f64,
    /// Reserved for the baseline bounds of a 100 % stage (α/4 or 0).
    pub reserve: f64,
    /// How the e-valued tests are combined.
    pub combine: Combine,
    /// Number of e-valued tests (error counts, means).
    pub n_e: usize,
    /// Number of band tests.
    pub n_band: usize,
    /// Under Bonferroni, the latency mean test's level as a fraction of an
    /// even share (1 = even); the band test takes what it gives up, so the
    /// levels still sum to the tests' α. Used with one mean and one band
    /// test (a rollout); `average` ignores it.
    pub mean_weight: f64,
}

impl Budget {
    fn tests(&self) -> f64 {
        (self.n_e + self.n_band).max(1) as f64
    }

    /// Level left for the tests.
    pub fn test_alpha(&self) -> f64 {
        self.alpha - self.reserve
    }

    /// Level of one e-valued test under Bonferroni (each test's share).
    pub fn per_test(&self) -> f64 {
        self.test_alpha() / self.tests()
    }

    /// Level of the latency mean test under Bonferroni.
    pub fn mean_alpha(&self) -> f64 {
        self.per_test() * self.mean_weight
    }

    /// Level of the band test: its Bonferroni share plus what the mean
    /// test gave up (under `average`, an even share).
    pub fn band_alpha(&self) -> f64 {
        match self.combine {
            Combine::Bonferroni => self.per_test() * (2.0 - self.mean_weight),
            Combine::Average => self.per_test(),
        }
    }

    /// Level of the averaged e-values under `average`.
    pub fn averaged(&self) -> f64 {
        self.test_alpha() * self.n_e as f64 / self.tests()
    }

    /// The combination in words, for the evidence.
    pub fn describe(&self) -> String {
        let ta = self.test_alpha();
        let mut s = match self.combine {
            Combine::Bonferroni if self.mean_weight != 1.0 => format!(
                "Bonferroni: errors at {:.4}, latency mean at {:.4}, latency distribution at {:.4}",
                self.per_test(),
                self.mean_alpha(),
                self.band_alpha()
            ),
            Combine::Bonferroni => format!(
                "Bonferroni: {} tests at α/{} = {:.4} each",
                self.n_e + self.n_band,
                self.n_e + self.n_band,
                self.per_test()
            ),
            Combine::Average => format!(
                "e-values of {} tests averaged at level {:.4}, {} band test(s) at {:.4} each",
                self.n_e,
                self.averaged(),
                self.n_band,
                self.per_test()
            ),
        };
        if self.reserve > 0.0 {
            s.push_str(&format!(
                "; α = {} of which {} reserved for the baseline bounds at 100 % (tests at {ta:.4})",
                self.alpha, self.reserve
            ));
        }
        s
    }
}
