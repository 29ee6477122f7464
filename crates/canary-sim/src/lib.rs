//! canary-sim
