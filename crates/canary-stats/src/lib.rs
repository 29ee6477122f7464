//! The judges: each compares the canary with the baseline and returns a
//! [`Verdict`] (pass, fail or inconclusive) with its evidence.
//!
//! Judges are pure functions of the [`Observations`] they are shown plus
//! their own running state (e.g. a sequential test's e-value so far). They do
//! no I/O, read no clock and draw no random numbers, so the simulator and the
//! live controller get the same verdict from the same numbers.
//!
//! Each judge type (`threshold::ThresholdJudge`, `deviation::DeviationJudge`,
//! `ztest::ZTestJudge`, `kayenta::KayentaJudge`,
//! `sequential::SequentialJudge`) has the same three methods: `kind`,
//! `start_stage` (called when a stage begins, before any look at it) and
//! `judge` (one look at the observations accumulated so far). A judge's
//! `Pass` means "the evidence so far allows this stage to pass"; the state
//! machine still waits for the stage's bake time. The engine that asks them
//! (`canary-engine`) gives them one trait; this crate holds only the
//! mathematics and the judges' running state.
//!
//! [`Verdict`]: canary_core::Verdict
//! [`Observations`]: canary_core::Observations
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analyze;
pub mod deviation;
pub mod kayenta;
pub mod sequential;
pub mod special;
pub mod threshold;
pub mod ztest;
