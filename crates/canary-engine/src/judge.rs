//! The [`Judge`] trait the engine asks once per tick, its implementations for
//! the judges of `canary-stats`, and the one place a judge is built from a
//! policy.
//!
//! The judges themselves (their mathematics and running state) live in
//! `canary-stats`; this module only gives them one face, so the engine holds
//! any of them behind a `Box<dyn Judge>`.

use canary_core::{JudgeKind, Observations, Policy, Stage, Verdict};
use canary_stats::deviation::DeviationJudge;
use canary_stats::kayenta::KayentaJudge;
use canary_stats::sequential::SequentialJudge;
use canary_stats::threshold::ThresholdJudge;
use canary_stats::ztest::ZTestJudge;

/// A canary judge, as the engine sees it.
///
/// Protocol: the engine calls [`Judge::start_stage`] when a stage begins
/// (before any look at it) and [`Judge::judge`] once per tick with the
/// observations accumulated so far. A judge's `Pass` means "the evidence so
/// far allows this stage to pass"; the state machine still waits for the
/// stage's bake time.
pub trait Judge: Send {
    /// Which judge this is.
    fn kind(&self) -> JudgeKind;

    /// Stage `index` begins with `stage`'s settings: reset per-stage state.
    fn start_stage(&mut self, index: usize, stage: &Stage);

    /// One look at the observations of the current stage.
    fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict;
}

macro_rules! judge_impl {
    ($($ty:ty),* $(,)?) => {$(
        impl Judge for $ty {
            fn kind(&self) -> JudgeKind {
                <$ty>::kind(self)
            }

            fn start_stage(&mut self, index: usize, stage: &Stage) {
                <$ty>::start_stage(self, index, stage)
            }

            fn judge(&mut self, stage: &Stage, obs: &Observations) -> Verdict {
                <$ty>::judge(self, stage, obs)
            }
        }
    )*};
}

judge_impl!(
    ThresholdJudge,
    DeviationJudge,
    ZTestJudge,
    KayentaJudge,
    SequentialJudge,
);

/// The judge `policy.analysis.judge` names, with `policy`'s analysis
/// settings. Every judge of [`JudgeKind`] is built into the engine, so this
/// cannot fail.
pub(crate) fn for_policy(policy: &Policy) -> Box<dyn Judge> {
    let a = &policy.analysis;
    match a.judge {
        JudgeKind::Threshold => Box::new(ThresholdJudge::new()),
        JudgeKind::Deviation => Box::new(DeviationJudge::new(a.judges.deviation.clone())),
        JudgeKind::Ztest => Box::new(ZTestJudge::new(a.alpha)),
        JudgeKind::Kayenta => Box::new(KayentaJudge::new(a.judges.kayenta.clone())),
        JudgeKind::Sequential => Box::new(SequentialJudge::new(policy)),
    }
}
