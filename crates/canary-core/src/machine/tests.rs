use super::*;
use crate::spec::{OnInconclusive, RolloutSpec, WebhookType};
use crate::verdict::Verdict;
use proptest::prelude::*;

fn policy() -> Policy {
    // 10 % (1m) → 50 % (1m, gate) → 100 % (1m; 95 % while judged, a
    // holdback of 5 % on stable); timeout 3m.
    Policy::from_text(
        "name: t
stages:
  - {weight: 10, duration: 1m}
  - {weight: 50, duration: 1m, pause: true}
  - {weight: 100, duration: 1m}
analysis: {holdback: 5}
",
    )
    .unwrap()
}

fn verdict(o: Outcome) -> Verdict {
    Verdict {
        outcome: o,
        judge: "test".into(),
        metrics: vec![],
        reason: format!("judged {o}"),
        guardrail: None,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(phase: Phase, weight: f64) -> RolloutState {
    RolloutState {
        phase,
        weight,
        stage_started_at: secs(0),
        paused_at: secs(0),
        weight_held: false,
    }
}

fn all_events() -> Vec<Event> {
    vec![
        Event::Start,
        Event::Tick,
        Event::Verdict(verdict(Outcome::Pass)),
        Event::Verdict(verdict(Outcome::Fail)),
        Event::Verdict(verdict(Outcome::Inconclusive)),
        Event::Pause { note: "n".into() },
        Event::Resume,
        Event::Promote,
        Event::PromoteFull,
        Event::Abort { reason: "r".into() },
        Event::GateOpened {
            gate: WebhookType::ConfirmPromotion,
        },
        Event::Rollback {
            reason: "kill switch".into(),
        },
        Event::WeightHeld {
            note: "not ready".into(),
        },
        Event::WeightApplied,
    ]
}

fn all_phases() -> Vec<(Phase, f64)> {
    vec![
        (Phase::Pending, 0.0),
        (Phase::Progressing { stage: 0 }, 10.0),
        (
            Phase::Paused {
                stage: 0,
                reason: PauseReason::Manual { note: "n".into() },
            },
            10.0,
        ),
        (
            Phase::Paused {
                stage: 1,
                reason: PauseReason::Gate,
            },
            50.0,
        ),
        (
            Phase::Paused {
                stage: 0,
                reason: PauseReason::Inconclusive { note: "n".into() },
            },
            10.0,
        ),
        (
            Phase::Paused {
                stage: 0,
                reason: PauseReason::Guardrail { note: "g".into() },
            },
            10.0,
        ),
        (
            Phase::Paused {
                stage: 1,
                reason: PauseReason::Webhook {
                    gate: WebhookType::ConfirmPromotion,
                },
            },
            50.0,
        ),
        (Phase::Succeeded, 100.0),
        (Phase::RolledBack { reason: "r".into() }, 0.0),
        (Phase::Aborted { reason: "r".into() }, 0.0),
    ]
}

/// The expected result of each (phase, event) pair at t = 120 s (bake met,
/// timeout not reached): `Err(true)` terminal refusal, `Err(false)` not
/// allowed, `Ok((phase name, stage, weight))`.
type Expect = Result<(&'static str, Option<usize>, f64), bool>;

fn expected(phase: &Phase, event: &Event) -> Expect {
    use Outcome::*;
    if phase.is_terminal() {
        return Err(true);
    }
    let same = Ok((phase.name(), phase.stage(), weight_of(phase)));
    match (phase, event) {
        (Phase::Pending, Event::Start) => Ok(("progressing", Some(0), 10.0)),
        (Phase::Pending, Event::Abort { .. }) => Ok(("aborted", None, 0.0)),
        (Phase::Pending, Event::Tick) => same,
        (Phase::Pending, _) => Err(false),
        (_, Event::WeightHeld { .. } | Event::WeightApplied) => same,
        (_, Event::Verdict(v)) if v.outcome == Fail => Ok(("rolled_back", None, 0.0)),
        (_, Event::Abort { .. }) => Ok(("aborted", None, 0.0)),
        (_, Event::Rollback { .. }) => Ok(("rolled_back", None, 0.0)),
        (
            Phase::Paused {
                reason: PauseReason::Webhook { .. },
                ..
            },
            Event::GateOpened { .. } | Event::Promote,
        ) => Ok(("progressing", Some(2), 95.0)),
        (
            Phase::Paused {
                reason: PauseReason::Webhook { .. },
                ..
            },
            Event::Resume,
        ) => Err(false),
        (_, Event::GateOpened { .. }) => Err(false),
        (_, Event::PromoteFull) => Ok(("succeeded", None, 100.0)),
        (Phase::Progressing { .. }, Event::Verdict(v)) if v.outcome == Pass => {
            Ok(("progressing", Some(1), 50.0))
        }
        (Phase::Progressing { .. }, Event::Verdict(_) | Event::Tick) => same,
        (Phase::Progressing { .. }, Event::Pause { .. }) => Ok(("paused", Some(0), 10.0)),
        (Phase::Progressing { .. }, Event::Promote) => Ok(("progressing", Some(1), 50.0)),
        (Phase::Progressing { .. }, Event::Start | Event::Resume) => Err(false),
        (Phase::Paused { .. }, Event::Verdict(_) | Event::Tick) => same,
        (Phase::Paused { .. }, Event::Start | Event::Pause { .. }) => Err(false),
        (
            Phase::Paused {
                reason: PauseReason::Gate,
                ..
            },
            Event::Resume | Event::Promote,
        ) => Ok(("progressing", Some(2), 95.0)),
        (Phase::Paused { .. }, Event::Resume) => Ok(("progressing", Some(0), 10.0)),
        (Phase::Paused { .. }, Event::Promote) => Ok(("progressing", Some(1), 50.0)),
        _ => unreachable!("{phase:?} {event:?}"),
    }
}

fn weight_of(p: &Phase) -> f64 {
    match p.stage() {
        Some(0) => 10.0,
        Some(1) => 50.0,
        Some(_) => 95.0,
        None => 0.0,
    }
}

#[test]
fn every_phase_event_pair() {
    let p = policy();
    let mut checked = 0;
    for (phase, weight) in all_phases() {
        for event in all_events() {
            let want = expected(&phase, &event);
            let got = step(&p, &at(phase.clone(), weight), event.clone(), secs(120));
            match (&want, &got) {
                (Err(terminal), Err(e)) => {
                    assert_eq!(
                        *terminal,
                        matches!(e, TransitionError::Terminal { .. }),
                        "{phase:?} {event:?}: {e}"
                    );
                }
                (Ok((name, stage, w)), Ok(t)) => {
                    assert_eq!(t.state.phase.name(), *name, "{phase:?} {event:?}");
                    assert_eq!(t.state.phase.stage(), *stage, "{phase:?} {event:?}");
                    assert_eq!(t.state.weight, *w, "{phase:?} {event:?}");
                    let moved = t.state.phase != phase;
                    let recorded = t
                        .commands
                        .iter()
                        .any(|c| matches!(c, Command::RecordDecision(_)));
                    assert_eq!(
                        moved, recorded,
                        "a change of phase is recorded: {phase:?} {event:?}"
                    );
                }
                _ => panic!("{phase:?} {event:?}: want {want:?}, got {got:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, all_phases().len() * all_events().len());
    assert_eq!(checked, 10 * 14);
}

/// Seed "break it": advancing after the rollout completed.
#[test]
fn finished_rollout_refuses_everything() {
    let p = policy();
    let mut st = RolloutState::new();
    st = step(&p, &st, Event::Start, secs(0)).unwrap().state;
    st = step(&p, &st, Event::PromoteFull, secs(1)).unwrap().state;
    assert_eq!(st.phase, Phase::Succeeded);
    for e in all_events() {
        let err = step(&p, &st, e, secs(2)).unwrap_err();
        assert!(matches!(
            err,
            TransitionError::Terminal {
                phase: "succeeded",
                ..
            }
        ));
    }
    // a rollout cannot be re-run
    assert!(step(&p, &st, Event::Start, secs(3)).is_err());
}

#[test]
fn pass_before_bake_time_does_not_advance() {
    let p = policy();
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let t = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(59)).unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 0 });
    assert!(t.commands.is_empty());
    let t = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(60)).unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 1 });
    assert!(t.commands.contains(&Command::SetWeight(50.0)));
    assert!(t.commands.contains(&Command::StageStarted {
        stage: 1,
        weight: 50.0
    }));
}

/// A passing verdict that carries a guardrail breach pauses the stage (with
/// the breach as the reason) instead of advancing; a resume restarts the
/// stage's clock, and a later clean pass advances.
#[test]
fn a_guardrail_breach_holds_a_passing_stage() {
    let p = policy();
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let mut v = verdict(Outcome::Pass);
    v.guardrail = Some("canary error rate 100 %".into());
    let t = step(&p, &st, Event::Verdict(v.clone()), secs(59)).unwrap();
    assert_eq!(
        t.state.phase,
        Phase::Progressing { stage: 0 },
        "bake not met"
    );
    let t = step(&p, &st, Event::Verdict(v.clone()), secs(60)).unwrap();
    let Phase::Paused {
        stage: 0,
        reason: PauseReason::Guardrail { note },
    } = &t.state.phase
    else {
        panic!("{:?}", t.state.phase)
    };
    assert!(note.contains("canary error rate 100 %"), "{note}");
    assert!(!t
        .commands
        .iter()
        .any(|c| matches!(c, Command::SetWeight(_))));
    // Still breached while paused: nothing moves.
    let held = step(&p, &t.state, Event::Verdict(v), secs(70)).unwrap();
    assert_eq!(held.state, t.state);
    let resumed = step(&p, &t.state, Event::Resume, secs(80)).unwrap().state;
    assert_eq!(resumed.phase, Phase::Progressing { stage: 0 });
    let t = step(
        &p,
        &resumed,
        Event::Verdict(verdict(Outcome::Pass)),
        secs(140),
    )
    .unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 1 });
}

/// Fail safe: with no verdicts (metrics source down) ticks never promote;
/// at the timeout the policy applies.
#[test]
fn ticks_alone_never_promote() {
    let p = policy();
    let mut st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    for t in 1..180 {
        st = step(&p, &st, Event::Tick, secs(t)).unwrap().state;
        assert_eq!(st.phase, Phase::Progressing { stage: 0 });
    }
    st = step(&p, &st, Event::Tick, secs(180)).unwrap().state;
    assert!(matches!(
        st.phase,
        Phase::Paused {
            stage: 0,
            reason: PauseReason::Inconclusive { .. }
        }
    ));
    assert_eq!(st.weight, 10.0);

    let mut spec = RolloutSpec::from_text("name: t\nstages: [{weight: 10, duration: 1m}]\n")
        .unwrap()
        .0;
    spec.analysis.on_inconclusive = OnInconclusive::Rollback;
    let p = spec.validate(None).unwrap();
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let st = step(
        &p,
        &st,
        Event::Verdict(verdict(Outcome::Inconclusive)),
        secs(180),
    )
    .unwrap()
    .state;
    assert!(matches!(st.phase, Phase::RolledBack { .. }));
    assert_eq!(st.weight, 0.0);
}

/// Seed "alter it" / "fix it": the paused state holds without rolling back.
#[test]
fn pause_holds_and_resume_restarts_the_clock() {
    let p = policy();
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let st = step(
        &p,
        &st,
        Event::Pause {
            note: "lunch".into(),
        },
        secs(30),
    )
    .unwrap()
    .state;
    assert_eq!(st.phase.name(), "paused");
    let still = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(500))
        .unwrap()
        .state;
    assert_eq!(still, st, "a pass does not move a paused rollout");
    let st = step(&p, &st, Event::Resume, secs(600)).unwrap().state;
    assert_eq!(st.phase, Phase::Progressing { stage: 0 });
    assert_eq!(st.stage_started_at, secs(600));
    let st = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(630))
        .unwrap()
        .state;
    assert_eq!(
        st.phase,
        Phase::Progressing { stage: 0 },
        "bake restarts on resume"
    );
}

#[test]
fn gate_waits_for_promote_then_last_stage_succeeds() {
    let p = policy();
    let mut st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    st = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(60))
        .unwrap()
        .state;
    st = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(120))
        .unwrap()
        .state;
    assert_eq!(
        st.phase,
        Phase::Paused {
            stage: 1,
            reason: PauseReason::Gate
        }
    );
    st = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(1000))
        .unwrap()
        .state;
    assert_eq!(st.phase.name(), "paused");
    st = step(&p, &st, Event::Promote, secs(1001)).unwrap().state;
    assert_eq!((st.phase.stage(), st.weight), (Some(2), 95.0));
    let t = step(&p, &st, Event::Verdict(verdict(Outcome::Pass)), secs(1061)).unwrap();
    assert_eq!(t.state.phase, Phase::Succeeded);
    assert_eq!(t.state.weight, 100.0);
    let decision = t.commands.iter().find_map(|c| match c {
        Command::RecordDecision(d) => Some(d),
        _ => None,
    });
    let d = decision.unwrap();
    assert_eq!(d.action, Action::Succeed);
    assert_eq!(d.verdict.as_ref().unwrap().outcome, Outcome::Pass);
    assert!(d.reason.contains("stage 2"), "{}", d.reason);
}

#[test]
fn a_failure_while_paused_rolls_back() {
    let p = policy();
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let st = step(&p, &st, Event::Pause { note: "x".into() }, secs(1))
        .unwrap()
        .state;
    let t = step(&p, &st, Event::Verdict(verdict(Outcome::Fail)), secs(2)).unwrap();
    assert_eq!(
        t.state.phase,
        Phase::RolledBack {
            reason: "judged fail".into()
        }
    );
    assert_eq!(t.commands[0], Command::SetWeight(0.0));
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Start),
        Just(Event::Tick),
        Just(Event::Verdict(verdict(Outcome::Pass))),
        Just(Event::Verdict(verdict(Outcome::Pass))),
        Just(Event::Verdict(verdict(Outcome::Inconclusive))),
        Just(Event::Verdict(verdict(Outcome::Fail))),
        Just(Event::Verdict(Verdict {
            guardrail: Some("canary error rate 50 %".into()),
            ..verdict(Outcome::Pass)
        })),
        Just(Event::Pause { note: "p".into() }),
        Just(Event::Resume),
        Just(Event::Promote),
        Just(Event::PromoteFull),
        Just(Event::Abort { reason: "a".into() }),
        Just(Event::WeightHeld { note: "h".into() }),
        Just(Event::WeightApplied),
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        1usize..6,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0.0), Just(2.5), Just(5.0), Just(20.0)],
    )
        .prop_flat_map(|(n, rollback, gate, gradual, holdback)| {
            prop::collection::btree_set(1u32..=100, n).prop_filter_map(
                "the holdback leaves the last stage above the one before it",
                move |ws| {
                let stages: Vec<String> = ws
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        format!(
                            "{{weight: {w}, duration: 30s, pause: {}}}",
                            gate && i % 2 == 1
                        )
                    })
                    .collect();
                let text = format!(
                    "name: p\nstages: [{}]\nanalysis: {{on_inconclusive: {}, holdback: {holdback}}}\n{}",
                    stages.join(", "),
                    if rollback { "rollback" } else { "pause" },
                    if gradual {
                        "rollback: {mode: gradual, steps: [60, 20, 5, 0], step_interval: 30s}\n"
                    } else {
                        ""
                    }
                );
                Policy::from_text(&text).ok()
            })
        })
}

proptest! {
    #[test]
    fn invariants_hold_for_any_event_sequence(
        policy in arb_policy(),
        events in prop::collection::vec((arb_event(), 0u64..120), 0..60),
    ) {
        let mut st = RolloutState::new();
        let mut now = secs(0);
        for (event, dt) in events {
            now += secs(dt);
            let before = st.clone();
            match step(&policy, &st, event.clone(), now) {
                Err(TransitionError::Terminal { .. }) => {
                    prop_assert!(before.phase.is_terminal(), "only terminal phases refuse as terminal");
                }
                Err(TransitionError::NotAllowed { .. }) => {
                    prop_assert!(!before.phase.is_terminal());
                }
                Ok(t) => {
                    prop_assert!(!before.phase.is_terminal(), "terminal phases absorb nothing");
                    if let Event::Verdict(v) = &event {
                        if v.guardrail.is_some() {
                            // A breached guardrail never moves the rollout on.
                            prop_assert!(t.state.weight <= before.weight, "a guardrail breach raised the weight");
                            prop_assert!(t.state.phase != Phase::Succeeded, "a guardrail breach promoted");
                            prop_assert_eq!(t.state.phase.stage().or(before.phase.stage()), before.phase.stage());
                        }
                    }
                    st = t.state;
                    prop_assert!(st.weight >= 0.0 && st.weight <= 100.0);
                    match &st.phase {
                        Phase::RolledBack { .. } | Phase::Aborted { .. } | Phase::Pending => prop_assert_eq!(st.weight, 0.0),
                        Phase::Succeeded => prop_assert_eq!(st.weight, 100.0),
                        Phase::RollingBack { step, .. } => {
                            prop_assert_eq!(st.weight, policy.rollback.steps[*step]);
                            prop_assert!(st.weight < before.weight || before.phase == st.phase, "a rollback only steps down");
                        }
                        Phase::Progressing { stage } | Phase::Paused { stage, .. } => {
                            // A 100 % stage is judged with its holdback on stable.
                            let s = &policy.stages[*stage];
                            prop_assert_eq!(st.weight, s.routed_weight());
                            prop_assert_eq!(s.holdback > 0.0, s.weight == 100.0 && policy.analysis.holdback > 0.0);
                            prop_assert!(st.weight >= before.weight, "weight never decreases while progressing");
                        }
                    }
                    // the weight the driver is told matches the state
                    let last_set = t.commands.iter().rev().find_map(|c| match c {
                        Command::SetWeight(w) => Some(*w),
                        _ => None,
                    });
                    prop_assert_eq!(last_set.unwrap_or(before.weight), st.weight);
                }
            }
        }
    }
}

fn gradual() -> Policy {
    Policy::from_text(
        "name: t
stages:
  - {weight: 10, duration: 1m}
  - {weight: 50, duration: 1m}
  - {weight: 100, duration: 1m}
rollback: {mode: gradual, steps: [50, 25, 10, 0], step_interval: 30s}
",
    )
    .unwrap()
}

#[test]
fn a_gradual_rollback_steps_down_through_its_weights_each_in_the_log() {
    let p = gradual();
    let mut st = at(Phase::Progressing { stage: 1 }, 50.0);
    let t = step(&p, &st, Event::Verdict(verdict(Outcome::Fail)), secs(100)).unwrap();
    st = t.state;
    // Steps at or above the failed weight (50) are skipped: 25 first.
    assert_eq!(st.weight, 25.0);
    assert_eq!(
        st.phase,
        Phase::RollingBack {
            reason: "judged fail".into(),
            step: 1
        }
    );
    assert!(t.commands.contains(&Command::SetWeight(25.0)));
    let mut weights = vec![st.weight];
    let mut now = 100;
    while !st.phase.is_terminal() {
        now += 10;
        // Verdicts, ticks and missing metrics only let time pass.
        let e = match now % 3 {
            0 => Event::Tick,
            1 => Event::Verdict(verdict(Outcome::Pass)),
            _ => Event::MetricsUnavailable { note: "n".into() },
        };
        let t = step(&p, &st, e, secs(now)).unwrap();
        if t.state.weight != st.weight {
            assert_eq!(now % 30, 10, "a step holds 30s: at {now}");
            let d = t.commands.iter().find_map(|c| match c {
                Command::RecordDecision(d) => Some(d.clone()),
                _ => None,
            });
            let d = d.expect("each step is in the log");
            assert_eq!(d.action, Action::RollbackStep);
            weights.push(t.state.weight);
        }
        st = t.state;
        assert!(now < 1000);
    }
    assert_eq!(weights, [25.0, 10.0, 0.0]);
    assert_eq!(
        st.phase,
        Phase::RolledBack {
            reason: "judged fail".into()
        }
    );

    // While stepping down, an abort is immediate; nothing else is taken.
    let rolling = at(
        Phase::RollingBack {
            reason: "r".into(),
            step: 1,
        },
        25.0,
    );
    let t = step(
        &p,
        &rolling,
        Event::Abort {
            reason: "stop".into(),
        },
        secs(5),
    )
    .unwrap();
    assert_eq!((t.state.phase.name(), t.state.weight), ("aborted", 0.0));
    for e in [
        Event::Start,
        Event::Pause { note: "n".into() },
        Event::Resume,
        Event::Promote,
        Event::PromoteFull,
    ] {
        assert!(
            matches!(
                step(&p, &rolling, e.clone(), secs(5)),
                Err(TransitionError::NotAllowed { .. })
            ),
            "{e:?}"
        );
    }
    // At 10 % a failure steps to the first weight below it: 0, at once.
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 0 }, 10.0),
        Event::Verdict(verdict(Outcome::Fail)),
        secs(5),
    )
    .unwrap();
    assert_eq!((t.state.phase.name(), t.state.weight), ("rolled_back", 0.0));
}

fn gated(extra: &str) -> Policy {
    Policy::from_text(&format!(
        "name: g
stages:
  - {{weight: 10, duration: 1m}}
  - {{weight: 50, duration: 1m}}
  - {{weight: 100, duration: 1m}}
analysis: {{holdback: 5}}
webhooks:
  - {{name: more, type: confirm-traffic-increase, url: 'http://127.0.0.1:1/a'}}
  - {{name: full, type: confirm-promotion, url: 'http://127.0.0.1:1/b'}}
{extra}"
    ))
    .unwrap()
}

fn pass() -> Event {
    Event::Verdict(verdict(Outcome::Pass))
}

#[test]
fn a_webhook_gate_holds_the_weight_while_analysis_goes_on_until_it_opens() {
    let p = gated("");
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let t = step(&p, &st, pass(), secs(60)).unwrap();
    assert_eq!(
        t.state.phase,
        Phase::Paused {
            stage: 0,
            reason: PauseReason::Webhook {
                gate: WebhookType::ConfirmTrafficIncrease
            }
        }
    );
    assert_eq!(t.state.weight, 10.0);
    assert_eq!(t.state.paused_at, secs(60));
    assert!(!t
        .commands
        .iter()
        .any(|c| matches!(c, Command::SetWeight(_))));
    assert!(t
        .commands
        .iter()
        .any(|c| matches!(c, Command::RecordDecision(d) if d.action == Action::AwaitGate)));
    let held = t.state;
    // Time passes and passing verdicts change nothing; resume is not the
    // gate's answer; a failure still rolls back.
    for e in [pass(), Event::Tick] {
        let t = step(&p, &held, e, secs(600)).unwrap();
        assert_eq!(t.state, held);
    }
    assert!(step(&p, &held, Event::Resume, secs(61)).is_err());
    assert!(step(
        &p,
        &held,
        Event::GateOpened {
            gate: WebhookType::ConfirmPromotion
        },
        secs(61)
    )
    .is_err());
    let t = step(&p, &held, Event::Verdict(verdict(Outcome::Fail)), secs(62)).unwrap();
    assert_eq!(t.state.phase.name(), "rolled_back");
    assert_eq!(t.state.weight, 0.0);
    // Its hooks' 2xx opens it: the next stage, then the gate before 100 %.
    let t = step(
        &p,
        &held,
        Event::GateOpened {
            gate: WebhookType::ConfirmTrafficIncrease,
        },
        secs(70),
    )
    .unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 1 });
    assert_eq!(t.state.weight, 50.0);
    let t = step(&p, &t.state, pass(), secs(130)).unwrap();
    assert_eq!(
        t.state.phase,
        Phase::Paused {
            stage: 1,
            reason: PauseReason::Webhook {
                gate: WebhookType::ConfirmPromotion
            }
        }
    );
    assert_eq!(t.state.weight, 50.0);
    let t = step(
        &p,
        &t.state,
        Event::GateOpened {
            gate: WebhookType::ConfirmPromotion,
        },
        secs(140),
    )
    .unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 2 });
    // Judged with the holdback on stable.
    assert_eq!(t.state.weight, 95.0);
    // At 100 % there is no further gate (the promotion was confirmed
    // before the stage): the last stage succeeds, the holdback goes too.
    let t = step(&p, &t.state, pass(), secs(200)).unwrap();
    assert_eq!(t.state.phase, Phase::Succeeded);
    assert_eq!(t.state.weight, 100.0);
    assert!(t.commands.contains(&Command::SetWeight(100.0)));
}

#[test]
fn gate_and_pause_timeouts_abort_unless_told_to_keep_waiting() {
    let p = gated("gate_timeout: {after: 5m}\npause_timeout: {after: 10m}\n");
    let st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    let held = step(&p, &st, pass(), secs(60)).unwrap().state;
    let t = step(&p, &held, Event::Tick, secs(60 + 299)).unwrap();
    assert_eq!(t.state, held);
    let t = step(&p, &held, pass(), secs(60 + 300)).unwrap();
    assert_eq!(t.state.phase.name(), "aborted");
    assert_eq!(t.state.weight, 0.0);
    let Phase::Aborted { reason } = &t.state.phase else {
        unreachable!()
    };
    assert!(
        reason.contains("gate_timeout") && reason.contains("confirm-traffic-increase"),
        "{reason}"
    );
    // A manual pause: its own limit, from when it began.
    let paused = step(&p, &st, Event::Pause { note: "dba".into() }, secs(30))
        .unwrap()
        .state;
    assert_eq!(paused.paused_at, secs(30));
    assert_eq!(
        step(&p, &paused, Event::Tick, secs(30 + 599))
            .unwrap()
            .state,
        paused
    );
    let t = step(&p, &paused, Event::Tick, secs(30 + 600)).unwrap();
    assert_eq!(t.state.phase.name(), "aborted");
    // keep-waiting: no limit.
    let p = gated("gate_timeout: {after: 5m, action: keep-waiting}\n");
    let held = step(&p, &st, pass(), secs(60)).unwrap().state;
    assert_eq!(
        step(&p, &held, Event::Tick, secs(99_999)).unwrap().state,
        held
    );
    // Without pause_timeout, a pause waits.
    let p = gated("");
    let paused = step(&p, &st, Event::Pause { note: "dba".into() }, secs(30))
        .unwrap()
        .state;
    assert_eq!(
        step(&p, &paused, Event::Tick, secs(99_999)).unwrap().state,
        paused
    );
}

#[test]
fn a_pending_rollout_waits_for_confirm_rollout_until_its_gate_timeout() {
    let p = Policy::from_text(
        "name: g
stages: [{weight: 100, duration: 1m}]
webhooks: [{name: go, type: confirm-rollout, url: 'http://127.0.0.1:1/go'}]
gate_timeout: {after: 10m}
",
    )
    .unwrap();
    let st = RolloutState::new();
    assert_eq!(step(&p, &st, Event::Tick, secs(599)).unwrap().state, st);
    let t = step(&p, &st, Event::Tick, secs(600)).unwrap();
    assert_eq!(t.state.phase.name(), "aborted");
    // Without a confirm-rollout webhook a tick before the start is nothing.
    let st = RolloutState::new();
    assert_eq!(
        step(&policy(), &st, Event::Tick, secs(99_999))
            .unwrap()
            .state,
        st
    );
}

#[test]
fn a_rollback_event_rolls_back_through_the_gradual_steps() {
    let p = gradual();
    let mut st = step(&p, &RolloutState::new(), Event::Start, secs(0))
        .unwrap()
        .state;
    st = step(&p, &st, Event::Promote, secs(1)).unwrap().state;
    let t = step(
        &p,
        &st,
        Event::Rollback {
            reason: "kill switch".into(),
        },
        secs(2),
    )
    .unwrap();
    assert!(
        matches!(&t.state.phase, Phase::RollingBack { reason, .. } if reason == "kill switch"),
        "{:?}",
        t.state.phase
    );
    assert!(t.state.weight < st.weight);
}

/// A stage whose weight the traffic layer has not taken (a health hold)
/// neither passes nor times out; its clock restarts when the weight lands.
#[test]
fn a_held_weight_stops_the_stage_clock_until_it_is_applied() {
    let p = policy();
    let go = |st: &RolloutState, e: Event, t: u64| step(&p, st, e, secs(t)).unwrap();
    let st = go(&RolloutState::new(), Event::Start, 0).state;
    let held = go(
        &st,
        Event::WeightHeld {
            note: "canary not ready".into(),
        },
        1,
    );
    assert!(held.state.weight_held);
    assert!(held
        .commands
        .iter()
        .any(|c| matches!(c, Command::Notify(n) if n.contains("canary not ready"))));
    let st = held.state;
    // Past the bake (1m) and the timeout (3m): still stage 0, not paused.
    for t in [61, 200, 400] {
        let t1 = go(&st, Event::Verdict(verdict(Outcome::Pass)), t);
        assert_eq!(t1.state, st, "a pass at {t}s moved a held stage");
        let t2 = go(&st, Event::Tick, t);
        assert_eq!(t2.state, st, "a tick at {t}s moved a held stage");
    }
    // Held again: no second note.
    assert!(go(&st, Event::WeightHeld { note: "x".into() }, 401)
        .commands
        .is_empty());
    // Applied at 400 s: the bake counts from there.
    let st = go(&st, Event::WeightApplied, 400).state;
    assert!(!st.weight_held);
    assert_eq!(st.stage_started_at, secs(400));
    assert_eq!(
        go(&st, Event::Verdict(verdict(Outcome::Pass)), 430)
            .state
            .phase,
        Phase::Progressing { stage: 0 }
    );
    assert_eq!(
        go(&st, Event::Verdict(verdict(Outcome::Pass)), 461)
            .state
            .phase,
        Phase::Progressing { stage: 1 }
    );
    // Applied again: nothing happens.
    assert_eq!(go(&st, Event::WeightApplied, 470).state, st);
}

#[test]
fn a_failure_rolls_back_a_held_stage_and_a_promote_by_hand_stays_held() {
    let p = policy();
    let go = |st: &RolloutState, e: Event, t: u64| step(&p, st, e, secs(t)).unwrap();
    let st = go(&RolloutState::new(), Event::Start, 0).state;
    let st = go(&st, Event::WeightHeld { note: "n".into() }, 1).state;
    let failed = go(&st, Event::Verdict(verdict(Outcome::Fail)), 5).state;
    assert!(matches!(failed.phase, Phase::RolledBack { .. }));
    assert_eq!(failed.weight, 0.0);
    // A person promotes past the hold: the next weight is not applied yet
    // either, so the hold stays until the layer takes it.
    let promoted = go(&st, Event::Promote, 5).state;
    assert_eq!(promoted.phase, Phase::Progressing { stage: 1 });
    assert!(promoted.weight_held);
    // Paused and resumed while held: still held.
    let paused = go(&promoted, Event::Pause { note: "p".into() }, 6).state;
    let resumed = go(&paused, Event::Resume, 7).state;
    assert!(resumed.weight_held);
    assert_eq!(
        go(&resumed, Event::Verdict(verdict(Outcome::Pass)), 500).state,
        resumed
    );
    // The pending rollout has no weight to hold.
    assert!(step(
        &p,
        &RolloutState::new(),
        Event::WeightHeld { note: "n".into() },
        secs(0)
    )
    .is_err());
}

/// 1 % → 50 % → 100 % with `analysis.holdback` `holdback` (None: the
/// default, 0).
fn held(holdback: Option<&str>) -> Policy {
    let analysis = holdback.map_or(String::new(), |h| format!("analysis: {{holdback: {h}}}\n"));
    Policy::from_text(&format!(
        "name: h
stages:
  - {{weight: 1, duration: 1m}}
  - {{weight: 50, duration: 1m}}
  - {{weight: 100, duration: 1m}}
rollback: {{mode: gradual, steps: [50, 25, 0], step_interval: 30s}}
{analysis}"
    ))
    .unwrap()
}

fn set_weights(commands: &[Command]) -> Vec<f64> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SetWeight(w) => Some(*w),
            _ => None,
        })
        .collect()
}

#[test]
fn the_100_stage_is_judged_with_the_holdback_on_stable_then_succeeds_at_100() {
    let p = held(Some("5"));
    assert_eq!(p.analysis.holdback, 5.0);
    assert_eq!(p.stages[2].holdback, 5.0);
    assert_eq!(p.stages[1].holdback, 0.0, "only a 100 % stage holds back");
    let at_50 = at(Phase::Progressing { stage: 1 }, 50.0);
    let t = step(&p, &at_50, pass(), secs(60)).unwrap();
    assert_eq!(t.state.phase, Phase::Progressing { stage: 2 });
    assert_eq!(t.state.weight, 95.0);
    assert_eq!(set_weights(&t.commands), [95.0]);
    assert!(t.commands.contains(&Command::StageStarted {
        stage: 2,
        weight: 95.0
    }));
    // Passing it sends the holdback to the canary too: success is at 100.
    let t = step(&p, &t.state, pass(), secs(120)).unwrap();
    assert_eq!(
        (t.state.phase.clone(), t.state.weight),
        (Phase::Succeeded, 100.0)
    );
    assert_eq!(set_weights(&t.commands), [100.0]);
    let d = t
        .commands
        .iter()
        .find_map(|c| match c {
            Command::RecordDecision(d) => Some(d),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (d.action, d.weight_before, d.weight_after),
        (Action::Succeed, 95.0, 100.0)
    );
    assert!(
        d.reason
            .contains("stage 2 (100 %, 5 % held back on stable) passed"),
        "{}",
        d.reason
    );
}

#[test]
fn a_holdback_of_0_routes_all_traffic_during_the_100_stage() {
    // 0 is the default.
    assert_eq!(held(None), held(Some("0")));
    let p = held(None);
    assert_eq!(p.stages[2].holdback, 0.0);
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 1 }, 50.0),
        pass(),
        secs(60),
    )
    .unwrap();
    assert_eq!(t.state.weight, 100.0);
    let t = step(&p, &t.state, pass(), secs(120)).unwrap();
    assert_eq!(t.state.phase, Phase::Succeeded);
    assert!(set_weights(&t.commands).is_empty(), "already at 100");
    let d = t
        .commands
        .iter()
        .find_map(|c| match c {
            Command::RecordDecision(d) => Some(d.reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(d.contains("stage 2 (100 %) passed"), "{d}");
}

#[test]
fn promote_and_promote_full_from_the_held_back_stage_go_to_100() {
    let p = held(Some("10"));
    let judged = at(Phase::Progressing { stage: 2 }, 90.0);
    for e in [Event::Promote, Event::PromoteFull] {
        let t = step(&p, &judged, e.clone(), secs(1)).unwrap();
        assert_eq!(t.state.phase, Phase::Succeeded, "{e:?}");
        assert_eq!(set_weights(&t.commands), [100.0], "{e:?}");
    }
    // Promoted by hand into the 100 % stage: it is judged with the holdback.
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 1 }, 50.0),
        Event::Promote,
        secs(1),
    )
    .unwrap();
    assert_eq!((t.state.phase.stage(), t.state.weight), (Some(2), 90.0));
    // From earlier stages promote-full skips the holdback: straight to 100.
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 0 }, 1.0),
        Event::PromoteFull,
        secs(1),
    )
    .unwrap();
    assert_eq!(
        (t.state.phase.clone(), t.state.weight),
        (Phase::Succeeded, 100.0)
    );
}

#[test]
fn a_failure_in_the_held_back_stage_rolls_back_through_the_steps_below_it() {
    let p = held(Some("5"));
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 2 }, 95.0),
        Event::Verdict(verdict(Outcome::Fail)),
        secs(1),
    )
    .unwrap();
    assert_eq!(t.state.weight, 50.0);
    assert!(matches!(t.state.phase, Phase::RollingBack { step: 0, .. }));
    // And a timeout there names the holdback.
    let p = held(Some("5"));
    let t = step(
        &p,
        &at(Phase::Progressing { stage: 2 }, 95.0),
        Event::Tick,
        secs(180),
    )
    .unwrap();
    let Phase::Paused { reason, .. } = &t.state.phase else {
        unreachable!("{:?}", t.state.phase)
    };
    assert!(
        reason
            .to_string()
            .contains("stage 2 (100 %, 5 % held back on stable) reached its 180s timeout"),
        "{reason}"
    );
}
