use std::sync::{Arc, Mutex};

use canary_core::{JudgeKind, Pair, PauseReason, Policy};

use super::*;

/// A source replaying scripted windows (`None` = a failed read).
struct Script(Vec<Option<Pair<VersionStats>>>);

impl MetricsSource for Script {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        if self.0.is_empty() {
            return Ok(window(100, 0, 100, 0));
        }
        self.0
            .remove(0)
            .ok_or_else(|| SourceError::transient("scripted failure"))
    }
}

/// An actuator recording what it was asked, failing the first `fail` calls.
#[derive(Clone, Default)]
struct Recorder {
    weights: Arc<Mutex<Vec<f64>>>,
    fail: Arc<Mutex<u32>>,
}

impl TrafficActuator for Recorder {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(ActuatorError::transient("scripted failure"));
        }
        self.weights.lock().unwrap().push(percent);
        Ok(())
    }
}

fn window(nb: u64, eb: u64, nc: u64, ec: u64) -> Pair<VersionStats> {
    let v = |n, e| {
        let mut s = VersionStats {
            requests: n,
            errors: e,
            ..Default::default()
        };
        s.latency.record_n(10.0, n);
        s
    };
    Pair {
        baseline: v(nb, eb),
        canary: v(nc, ec),
    }
}

fn controller(script: Script, act: Recorder) -> Controller<Script, Recorder> {
    let policy = Policy::from_text(
        "name: t\nstages:\n  - {weight: 10, duration: 2s, min_requests: 10}\n  - {weight: 50, duration: 2s, min_requests: 10}\nanalysis: {judge: threshold, interval: 1s}\n",
    )
    .unwrap();
    assert_eq!(policy.analysis.judge, JudgeKind::Threshold);
    Controller::new(Engine::new(policy), script, act)
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test]
async fn healthy_windows_promote_through_every_stage() {
    let act = Recorder::default();
    let mut c = controller(Script(vec![]), act.clone());
    c.start(S(0)).await.unwrap();
    let mut t = 0;
    while !c.is_finished() {
        t += 1;
        c.tick(S(t)).await.unwrap();
        assert!(t < 20);
    }
    assert_eq!(c.report().phase, "succeeded");
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 50.0, 100.0]);
}

#[tokio::test]
async fn failed_reads_never_promote() {
    let act = Recorder::default();
    let mut c = controller(Script(vec![None; 50]), act.clone());
    c.start(S(0)).await.unwrap();
    // The start reads twice (before, and after setting the weight).
    for t in 1..=5 {
        let notes = c.tick(S(t)).await.unwrap();
        assert!(
            notes.iter().any(|n| n.contains("never promotes")),
            "{notes:?}"
        );
    }
    // After `metrics_unavailable_after` (3) looks without numbers the
    // rollout is held (the default `on_metrics_unavailable: pause`), never
    // promoted, and the weight stays where it was.
    match &c.engine().state().phase {
        Phase::Paused {
            stage: 0,
            reason: PauseReason::NoData { note },
        } => {
            assert!(note.contains("scripted failure"), "{note}")
        }
        other => panic!("expected a NoData pause, got {other:?}"),
    }
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0]);
    assert_eq!(c.status().source_failures, 5);
}

#[tokio::test]
async fn errors_roll_back_to_zero() {
    let act = Recorder::default();
    // Reads: before the start, right after the first weight is set, tick 1.
    let script = Script(vec![None, None, Some(window(100, 0, 100, 40))]);
    let mut c = controller(script, act.clone());
    c.start(S(0)).await.unwrap();
    c.tick(S(1)).await.unwrap();
    assert_eq!(c.report().phase, "rolled_back");
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 0.0]);
}

#[tokio::test]
async fn refused_weights_are_retried() {
    let act = Recorder::default();
    *act.fail.lock().unwrap() = 1;
    let mut c = controller(Script(vec![]), act.clone());
    let notes = c.start(S(0)).await.unwrap();
    assert!(notes.iter().any(|n| n.contains("will retry")), "{notes:?}");
    assert!(!c.weight_applied());
    c.tick(S(1)).await.unwrap();
    assert!(c.weight_applied());
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0]);
}

#[tokio::test(start_paused = true)]
async fn run_live_aborts_on_shutdown_and_sets_weight_zero() {
    let act = Recorder::default();
    let mut c = controller(Script(vec![]), act.clone());
    let mut statuses = Vec::new();
    let end = run_live(
        &mut c,
        S(1),
        tokio::time::sleep(Duration::from_millis(1500)),
        |_, s| statuses.push(s.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(end, LiveEnd::Interrupted);
    assert_eq!(c.report().phase, "aborted");
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 0.0]);
    // Start, one tick, the abort.
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert!(
        statuses[1].contains("stage 1/2 weight 10% | stable 100 req 0 err"),
        "{}",
        statuses[1]
    );
}

#[tokio::test(start_paused = true)]
async fn run_live_finishes_by_itself() {
    let act = Recorder::default();
    let mut c = controller(Script(vec![]), act.clone());
    let end = run_live(&mut c, S(1), std::future::pending(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(end, LiveEnd::Finished);
    let r = c.report();
    assert_eq!(r.phase, "succeeded");
    assert_eq!(r.elapsed_seconds, 4.0);
}

/// A source whose every read fails permanently (say, a query the metrics
/// server rejects).
struct Rejected;

impl MetricsSource for Rejected {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let cause = std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad query");
        Err(SourceError::permanent("query rejected").with_cause(cause))
    }
}

#[tokio::test]
async fn a_permanent_source_failure_aborts_the_rollout_and_says_why() {
    let act = Recorder::default();
    let policy = Policy::from_text(
        "name: t\nstages:\n  - {weight: 10, duration: 2s, min_requests: 10}\nanalysis: {judge: threshold, interval: 1s}\n",
    )
    .unwrap();
    let mut c = Controller::new(Engine::new(policy), Rejected, act.clone());
    let notes = c.start(S(0)).await.unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("metrics source: query rejected: bad query")),
        "{notes:?}"
    );
    assert!(c.is_finished());
    let r = c.report();
    assert_eq!(r.phase, "aborted");
    assert!(
        r.rollback_reason.contains("query rejected: bad query"),
        "{}",
        r.rollback_reason
    );
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 0.0]);
    assert!(
        c.tick(S(1)).await.is_err(),
        "an ended rollout refuses ticks"
    );
}

#[tokio::test(start_paused = true)]
async fn run_live_ends_when_the_start_already_aborted() {
    let act = Recorder::default();
    let policy = Policy::from_text(
        "name: t\nstages:\n  - {weight: 10, duration: 2s, min_requests: 10}\nanalysis: {judge: threshold, interval: 1s}\n",
    )
    .unwrap();
    let mut c = Controller::new(Engine::new(policy), Rejected, act.clone());
    let end = run_live(&mut c, S(1), std::future::pending(), |_, _| {})
        .await
        .expect("a rollout aborted at its start ends the loop, not an error");
    assert_eq!(end, LiveEnd::Finished);
    assert_eq!(c.report().phase, "aborted");
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 0.0]);
}

/// An actuator that refuses every weight but 0 permanently.
#[derive(Clone, Default)]
struct OnlyZero(Arc<Mutex<Vec<f64>>>);

impl TrafficActuator for OnlyZero {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        if percent != 0.0 {
            return Err(ActuatorError::permanent("no such backend"));
        }
        self.0.lock().unwrap().push(percent);
        Ok(())
    }
}

#[tokio::test]
async fn a_weight_refused_for_good_pauses_where_it_is_and_is_never_recorded_as_applied() {
    let act = OnlyZero::default();
    let policy = Policy::from_text(
        "name: t\nstages:\n  - {weight: 10, duration: 2s, min_requests: 10}\nanalysis: {judge: threshold, interval: 1s}\n",
    )
    .unwrap();
    let mut c = Controller::new(Engine::new(policy), Script(vec![None; 5]), act.clone());
    let notes = c.start(S(0)).await.unwrap();
    assert!(
        notes.iter().any(|n| n.contains("not applied; permanent")),
        "{notes:?}"
    );
    let paused = |c: &Controller<Script, OnlyZero>| match &c.engine().state().phase {
        Phase::Paused { reason, .. } => reason.to_string(),
        other => panic!("not paused: {other:?}"),
    };
    assert!(paused(&c).contains("no such backend"), "{}", paused(&c));
    assert!(!c.weight_applied(), "10 % was never applied");
    assert_eq!(c.status().weight, 0.0);
    // It stays paused (never promoted) while the layer keeps refusing.
    for t in 1..=4 {
        c.tick(S(t)).await.unwrap();
        paused(&c);
    }
    assert!(act.0.lock().unwrap().is_empty(), "no weight was ever taken");
}

#[tokio::test]
async fn transient_failures_are_retried_not_fatal() {
    let act = Recorder::default();
    *act.fail.lock().unwrap() = 3;
    let mut c = controller(Script(vec![None; 3]), act.clone());
    c.start(S(0)).await.unwrap();
    for t in 1..=2 {
        c.tick(S(t)).await.unwrap();
        assert!(!c.weight_applied());
        assert_eq!(c.engine().state().phase, Phase::Progressing { stage: 0 });
    }
    c.tick(S(3)).await.unwrap();
    assert!(c.weight_applied());
    assert_eq!(act.weights.lock().unwrap()[0], 10.0);
    assert!(!c.report().phase.contains("abort"));
}

/// A weight the layer holds back (a health gate) for longer than the
/// stage: the stage does not pass on traffic at the old weight, and its bake
/// counts from when the weight was taken.
#[tokio::test]
async fn a_held_weight_never_lets_its_stage_pass_at_the_old_weight() {
    let act = Recorder::default();
    let mut c = controller(Script(vec![]), act.clone());
    c.start(S(0)).await.unwrap();
    // Every try of the next weight (50 %) is refused for 10 tries; each
    // stage lasts 2 s.
    *act.fail.lock().unwrap() = 10;
    let mut t = 0;
    let mut held_notes = 0;
    while c.engine().state().phase == (Phase::Progressing { stage: 0 }) {
        t += 1;
        let notes = c.tick(S(t)).await.unwrap();
        held_notes += notes.iter().filter(|n| n.starts_with("held:")).count();
    }
    assert_eq!(c.engine().state().phase, Phase::Progressing { stage: 1 });
    while *act.fail.lock().unwrap() > 0 {
        t += 1;
        let notes = c.tick(S(t)).await.unwrap();
        held_notes += notes.iter().filter(|n| n.starts_with("held:")).count();
        assert_eq!(
            c.engine().state().phase,
            Phase::Progressing { stage: 1 },
            "at {t}s"
        );
        assert!(!c.is_finished());
    }
    assert_eq!(held_notes, 1);
    assert!(c.engine().state().weight_held);
    // Taken at the next tick: the clock restarts there.
    t += 1;
    let notes = c.tick(S(t)).await.unwrap();
    assert!(notes.iter().any(|n| n.starts_with("applied:")), "{notes:?}");
    assert!(!c.engine().state().weight_held);
    assert_eq!(c.engine().state().stage_started_at, S(t));
    assert_eq!(c.engine().state().phase, Phase::Progressing { stage: 1 });
    c.tick(S(t + 1)).await.unwrap();
    assert_eq!(c.engine().state().phase, Phase::Progressing { stage: 1 });
    c.tick(S(t + 2)).await.unwrap();
    assert!(c.is_finished());
    assert_eq!(c.report().phase, "succeeded");
    assert_eq!(*act.weights.lock().unwrap(), vec![10.0, 50.0, 100.0]);
}
