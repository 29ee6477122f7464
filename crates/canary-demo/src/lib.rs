//! `canary-demo`: the demo kit, the things that stand in for a real service
//! and its clients.
//!
//! - [`backend`]: a small HTTP server with injectable errors and latency,
//!   the two versions behind `canary demo` and `canary demo-backend`;
//! - [`loadgen`]: a load generator that counts responses by status class and
//!   by the version the proxy says served them;
//! - [`launch`]: a backend started for a test, in this process or as a
//!   `canary demo-backend` child, on a free port, stopped when dropped;
//!
//! used by `canary demo`, the benchmarks in `bench/` (through
//! `canary demo-backend`) and every test that needs a backend.
//!
//! The kit knows nothing of the proxy or the engine: it speaks plain HTTP
//! and reads the proxy's `x-canary-version` header as text, so it sits
//! beside the data plane rather than inside it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;

pub mod backend;
pub mod launch;
pub mod loadgen;

pub use backend::{Backend, BackendConfig};
pub use loadgen::{LoadConfig, LoadReport, StopLoad};

/// What can go wrong starting a demo backend.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backend name that cannot go into the `x-backend` header.
    #[error("upstream `{name}`: a backend name must be printable ASCII")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A backend process could not be started.
    #[error("cannot start `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backend process did not print the address it listens on.
    #[error("`{program} demo-backend` printed no address: {line:?}")]
    NoAddress {
        /// The program.
        program: String,
        /// Its first line of output.
        line: String,
    },
}
