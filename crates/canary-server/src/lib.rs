//! `canary-server`: what `canary serve` is built on.
//!
//! - [`store`]: the [`Store`](store::Store) trait (one record per rollout,
//!   compare-and-set on its revision, an append-only gapless event log) and
//!   its embedded SQLite implementation, [`SqliteStore`](store::SqliteStore).
//!
//! The HTTP API, the per-rollout drivers and the client come on top of
//! this store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod store;
