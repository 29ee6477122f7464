//! A simulated service on a clock: both seams of a live rollout
//! ([`MetricsSource`] and [`TrafficActuator`]) drawn from a scenario, for
//! `traffic.provider: simulated` — demos, load tests of `canary serve`, and
//! trying the API without any backend.
//!
//! Each read draws the requests that the scenario's rate gives for the time
//! since the previous read, split by the weight last set, the canary
//! behaving as the scenario has it at that point of the rollout. The clock
//! is passed in.

use std::sync::Arc;
use std::time::Duration;

use canary_core::{Pair, VersionStats};
use canary_engine::{ActuatorError, MetricsSource, SourceError, TrafficActuator};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::run::draw_window;
use crate::scenario::Scenario;

/// The time since a fixed origin (the rollout's start).
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// A simulated service: a scenario drawn on a clock.
pub struct SimulatedService {
    scenario: Scenario,
    rng: ChaCha8Rng,
    clock: Clock,
    weight: f64,
    last_read: Duration,
}

impl SimulatedService {
    /// A service drawing `scenario` (its `request_rate` requests per
    /// second) from `seed`, on `clock`, at weight 0.
    pub fn new(scenario: Scenario, seed: u64, clock: Clock) -> Self {
        let last_read = clock();
        Self {
            scenario,
            rng: ChaCha8Rng::seed_from_u64(seed),
            clock,
            weight: 0.0,
            last_read,
        }
    }

    /// The weight last set, percent.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

impl MetricsSource for SimulatedService {
    /// Never fails.
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let now = (self.clock)();
        let dt = now.saturating_sub(self.last_read);
        self.last_read = now;
        let expected = self.scenario.rate_at(now) * dt.as_secs_f64();
        Ok(draw_window(
            &mut self.rng,
            &self.scenario,
            expected,
            self.weight,
            now,
        ))
    }
}

impl TrafficActuator for SimulatedService {
    /// Refuses only a weight that is not a percentage.
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(ActuatorError::permanent(format!(
                "weight {percent} is not a percentage"
            )));
        }
        self.weight = percent;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The service never awaits anything: one poll finishes it.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("the simulated service never waits"),
        }
    }

    #[test]
    fn windows_follow_the_clock_the_rate_and_the_weight() {
        let ms = Arc::new(AtomicU64::new(0));
        let t = ms.clone();
        let clock: Clock = Arc::new(move || Duration::from_millis(t.load(Ordering::SeqCst)));
        let mut s = SimulatedService::new(Scenario::built_in("healthy").unwrap(), 1, clock);
        let rate = s.scenario.request_rate;
        ms.store(100_000, Ordering::SeqCst);
        let w = block_on(s.read_window()).unwrap();
        assert_eq!(w.canary.requests, 0, "weight 0: nothing to the canary");
        let n = w.baseline.requests as f64;
        let sd = (rate * 100.0).sqrt();
        assert!((n - rate * 100.0).abs() < 5.0 * sd, "{n}");
        block_on(s.set_weight(25.0)).unwrap();
        ms.store(200_000, Ordering::SeqCst);
        let w = block_on(s.read_window()).unwrap();
        let c = w.canary.requests as f64;
        let sd = (rate * 25.0).sqrt();
        assert!((c - rate * 25.0).abs() < 5.0 * sd, "{c}");
        assert_eq!(
            block_on(s.read_window()).unwrap().baseline.requests,
            0,
            "no time passed, no requests"
        );
        assert!(block_on(s.set_weight(101.0)).unwrap_err().is_permanent());
    }
}
