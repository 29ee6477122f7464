//! `canary-engine`: the engine both drivers run, and the seams every adapter
//! meets.
//!
//! - [`Engine`] — one rollout: the judge its policy names, the state
//!   machine, the stage's observations and the audit trail. The simulator
//!   (`canary-sim`) and the live controller (`canary-controller`) feed it one
//!   window per tick and carry out the commands it returns; that is the
//!   whole difference between a simulated and a live rollout.
//! - [`Judge`] — the face every judge of `canary-stats` shows the engine.
//! - [`RolloutReport`] and [`StageRecord`] — what `simulate` and `run` print.
//! - [`MetricsSource`] and [`TrafficActuator`] — the two seams of a live
//!   rollout, with typed errors ([`SourceError`], [`ActuatorError`]) that tell
//!   a transient failure from a permanent one.
//!
//! Layers: `canary-core` (spec, state machine) → `canary-stats` (judges) →
//! this crate → the drivers and adapters. Nothing here does I/O, reads a
//! clock or draws a random number: `now` and the windows are passed in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod judge;
mod report;
mod seams;

pub use engine::{Engine, Input};
pub use judge::Judge;
pub use report::{RolloutReport, StageRecord};
pub use seams::{ActuatorError, MetricsSource, Persistence, SourceError, TrafficActuator};
