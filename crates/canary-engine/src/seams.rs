//! The two seams between the engine's drivers and the world: where a live
//! rollout reads its numbers ([`MetricsSource`]) and where it sends weight
//! changes ([`TrafficActuator`]), with typed errors that say whether a
//! failure may pass by itself.
//!
//! Every adapter (the built-in proxy, Prometheus, nginx, HAProxy, ALB,
//! Kubernetes, ...) implements one or both traits in its own crate; the
//! controller knows only these traits.

use std::error::Error;
use std::fmt;
use std::future::Future;

use canary_core::{Pair, VersionStats};

/// Whether a failure may pass by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// It may pass (a timeout, a refused connection, a reload in progress):
    /// the controller holds and tries again on the next tick.
    Transient,
    /// It will not pass without someone changing something (a query the
    /// server rejects, a missing object, bad credentials): the controller
    /// stops the rollout and says why.
    Permanent,
}

macro_rules! seam_error {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            persistence: Persistence,
            message: String,
            cause: Option<Box<dyn Error + Send + Sync + 'static>>,
        }

        impl $name {
            /// A failure that may pass by itself.
            pub fn transient(message: impl Into<String>) -> Self {
                Self { persistence: Persistence::Transient, message: message.into(), cause: None }
            }

            /// A failure that will not pass by itself.
            pub fn permanent(message: impl Into<String>) -> Self {
                Self { persistence: Persistence::Permanent, message: message.into(), cause: None }
            }

            /// Keeps `cause` as the error's source.
            #[must_use]
            pub fn with_cause(mut self, cause: impl Error + Send + Sync + 'static) -> Self {
                self.cause = Some(Box::new(cause));
                self
            }

            /// Whether the failure may pass by itself.
            pub fn persistence(&self) -> Persistence {
                self.persistence
            }

            /// True when the failure will not pass by itself.
            pub fn is_permanent(&self) -> bool {
                self.persistence == Persistence::Permanent
            }

            /// What failed, in words (without the cause).
            pub fn message(&self) -> &str {
                &self.message
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, ": {}"), self.message)
            }
        }

        impl Error for $name {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
            }
        }
    };
}

seam_error!(
    /// A metrics source could not deliver a window.
    SourceError,
    "metrics source"
);

seam_error!(
    /// A traffic actuator could not set the weight.
    ActuatorError,
    "traffic actuator"
);

/// Where a live rollout reads per-version numbers from.
pub trait MetricsSource: Send {
    /// Per version, what happened since the previous call (the first call
    /// returns what happened since the source began recording).
    ///
    /// # Errors
    /// [`SourceError`], transient (the controller holds and reads again next
    /// tick) or permanent (the controller stops the rollout).
    fn read_window(
        &mut self,
    ) -> impl Future<Output = Result<Pair<VersionStats>, SourceError>> + Send;
}

/// Where a live rollout sends weight changes.
pub trait TrafficActuator: Send {
    /// Routes `percent` % of traffic to the canary. `Ok` means the traffic
    /// layer has taken the weight; the controller records it as applied only
    /// then.
    ///
    /// # Errors
    /// [`ActuatorError`], transient (retried on every later tick) or
    /// permanent (the controller stops the rollout).
    fn set_weight(
        &mut self,
        percent: f64,
    ) -> impl Future<Output = Result<(), ActuatorError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed_keep_their_cause_and_their_persistence() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SourceError::transient("GET http://prom:9090").with_cause(io);
        assert_eq!(e.to_string(), "metrics source: GET http://prom:9090");
        assert_eq!(
            e.source().map(|c| c.to_string()).as_deref(),
            Some("refused")
        );
        assert!(!e.is_permanent());
        let a = ActuatorError::permanent("no such backend");
        assert_eq!(a.to_string(), "traffic actuator: no such backend");
        assert_eq!(a.persistence(), Persistence::Permanent);
        assert!(a.source().is_none());
    }
}
