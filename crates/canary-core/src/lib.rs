//! The core of canary: the rollout spec and its validation into a
//! [`Policy`](spec::Policy), the rollout state machine ([`machine::step`]), the
//! [`Observations`](observations::Observations) judges look at, and the
//! verdicts and decisions that make up the audit trail. Every document the
//! product reads (specs, scenarios) is parsed by [`document`], whose errors
//! name the field path and the line.
//!
//! This crate does no I/O, never reads the clock and never creates an RNG:
//! time comes in as `now`, randomness is the caller's. That is what lets the
//! simulator and the live controller run the very same engine, and makes
//! every simulated rollout reproducible from its seed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analyze_input;
pub mod document;
pub mod duration;
pub mod machine;
pub mod observations;
pub mod spec;
pub mod verdict;

/// The document parser, also reachable as [`document::source`].
pub use document::source;
pub use document::{SpecError, SpecErrors};
pub use duration::HumanDuration;
pub use machine::{
    step, Action, Command, Decision, Event, PauseReason, Phase, RolloutState, Transition,
    TransitionError,
};
pub use observations::{LatencyHistogram, Observations, Pair, Ratio, VersionStats, VersionSummary};
pub use spec::{
    JudgeKind, MetricsProvider, MetricsSpec, Mode, Policy, RolloutSpec, Stage, TrafficProvider,
    TrafficSpec,
};
pub use verdict::{Check, MetricEvidence, Outcome, Verdict};
