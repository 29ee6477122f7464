//! Seeded, request-level rollout simulation.
//!
//! A [`Scenario`] says how the stable and canary versions behave; [`simulate`]
//! runs one rollout of a policy on a simulated clock, drawing each tick's
//! requests (Poisson), errors (binomial) and latencies (log-normal) for both
//! versions at the current weight, and feeding them to the very
//! [`Engine`](canary_engine::Engine) the live controller uses. Randomness comes
//! only from the seed, so a seed reproduces a rollout bit for bit.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod evaluate;
pub mod live;
pub mod plan;
#[cfg(feature = "plot")]
pub mod plot;
pub mod report;
pub mod run;
mod sampler;
pub mod scenario;

pub use evaluate::{evaluate, EvalConfig, Evaluation, PairResult};
pub use live::SimulatedService;
pub use run::{run_seed, simulate, Exposure, SimError, SimOptions, Simulation, TickRecord};
pub use scenario::{Scenario, BUILT_IN};
