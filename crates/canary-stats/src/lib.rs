//! The judges: each compares the canary with the baseline and returns a
//! [`Verdict`] (pass, fail or inconclusive) with its evidence.
//!
//! Judges are pure functions of the [`Observations`] they are shown plus
//! their own running state (e.g. a sequential test's e-value so far). They do
//! no I/O, read no clock and draw no random numbers, so the simulator and the
//! live controller get the same verdict from the same numbers.
//!
//! Protocol: the driver calls [`Judge::start_stage`] when a stage begins
//! (before any look at it) and [`Judge::judge`] once per tick with the
//! observations accumulated so far. A judge's `Pass` means "the evidence so
//! far allows this stage to pass"; the state machine still waits for the
//! stage's bake time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use canary_core::{JudgeKind, Observations, Policy, Stage, Verdict};

pub mod analyze;
pub mod deviation;
pub mod engine;
pub mod kayenta;
pub mod sequential;
pub mod special;
pub mod threshold;
pub mod ztest;

pub use engine::{Engine, RolloutReport, StageRecord};

/// A canary judge.
pub trait Judge: Send {
    /// Which judge this is.
    fn kind(&self) -> JudgeKind;

    /// Stage `index` begins with `stage`'s settings: reset per-stage state.
    fn start_stage(&mut self, index: usize, stage: &Stage);

    /// One look at the observations of the current stage.
    fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict;
}

/// A judge was asked for that this build cannot provide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeError {
    /// The judge is named but not available.
    #[error("judge `{0}` is not available in this build")]
    Unavailable(JudgeKind),
}

/// Builds the judge `kind` with `policy`'s analysis settings.
///
/// # Errors
/// [`JudgeError::Unavailable`] for a judge this build lacks.
pub fn build(kind: JudgeKind, policy: &Policy) -> Result<Box<dyn Judge>, JudgeError> {
    let a = &policy.analysis;
    match kind {
        JudgeKind::Threshold => Ok(Box::new(threshold::ThresholdJudge::new())),
        JudgeKind::Deviation => Ok(Box::new(deviation::DeviationJudge::new(
            a.judges.deviation.clone(),
        ))),
        JudgeKind::Ztest => Ok(Box::new(ztest::ZTestJudge::new(a.alpha))),
        JudgeKind::Kayenta => Ok(Box::new(kayenta::KayentaJudge::new(
            a.judges.kayenta.clone(),
        ))),
        JudgeKind::Sequential => Ok(Box::new(sequential::SequentialJudge::new(policy))),
    }
}
