//! canary-stats
