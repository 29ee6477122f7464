//! The built-in proxy as an adapter of the engine's two seams: its recorder
//! is a [`MetricsSource`], its router a [`TrafficActuator`].

use canary_core::{Pair, VersionStats};
use canary_engine::{ActuatorError, MetricsSource, SourceError, TrafficActuator};

use crate::ProxyHandle;

impl MetricsSource for ProxyHandle {
    /// The proxy's own recorder: it cannot fail to be read.
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        Ok(self.snapshot_window())
    }
}

impl TrafficActuator for ProxyHandle {
    /// Takes effect for the next request routed; refuses only a weight that
    /// is not a percentage, which no retry can mend.
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        ProxyHandle::set_weight(self, percent)
            .map_err(|e| ActuatorError::permanent("the built-in proxy refused").with_cause(e))
    }
}
