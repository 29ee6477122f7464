//! The traffic layers users already run, driven through canary's two
//! seams: [`Nginx`] (a [`TrafficActuator`](canary_engine::TrafficActuator)
//! that rewrites an include file, checks it with `nginx -t` and reloads)
//! and [`Haproxy`] (server weights over the runtime API, read back before
//! they count as applied), with [`HaproxyStats`], a
//! [`MetricsSource`](canary_engine::MetricsSource) reading HAProxy's own
//! per-server counters.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod haproxy;
mod nginx;
pub mod testing;

pub use haproxy::{parse_stat, Haproxy, HaproxyStats, ServerCounters};
pub use nginx::Nginx;
