//! `/metrics`: the server's state in the Prometheus text format.

use std::fmt::Write as _;

use crate::model::RolloutStatus;
use crate::rollout::Counters;

/// A label value, escaped as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The outbox: attempts by outcome since the start, and what the store
/// holds now.
fn render_outbox(out: &mut String, c: &Counters, outbox: Option<(u64, u64)>) {
    family(
        out,
        "canary_outbox_attempts_total",
        "counter",
        "Notification and webhook delivery attempts by outcome (delivered, retry, gave_up), since the server started.",
    );
    for outcome in ["delivered", "retry", "gave_up"] {
        let n = c.deliveries.get(outcome).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "canary_outbox_attempts_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    if let Some((queued, given_up)) = outbox {
        family(
            out,
            "canary_outbox_queued",
            "gauge",
            "Deliveries queued in the store, not yet delivered or given up.",
        );
        let _ = writeln!(out, "canary_outbox_queued {queued}");
        family(
            out,
            "canary_outbox_given_up",
            "gauge",
            "Deliveries given up after their deadline (kept in the store).",
        );
        let _ = writeln!(out, "canary_outbox_given_up {given_up}");
    }
}

/// Renders the metrics of `rollouts` and the server's counters.
/// `outbox`: the store's queued and given-up deliveries, when it answered.
pub(crate) fn render(
    rollouts: &[RolloutStatus],
    c: &Counters,
    ha: Option<&crate::ha::HaStatus>,
    outbox: Option<(u64, u64)>,
) -> String {
    let mut out = String::new();
    if let Some(h) = ha {
        render_ha(&mut out, h);
    }
    render_outbox(&mut out, c, outbox);
    family(&mut out, "canary_rollouts", "gauge", "Rollouts by phase.");
    for phase in [
        "pending",
        "progressing",
        "paused",
        "succeeded",
        "rolling_back",
        "rolled_back",
        "aborted",
    ] {
        let n = rollouts.iter().filter(|r| r.phase == phase).count();
        let _ = writeln!(out, "canary_rollouts{{phase=\"{phase}\"}} {n}");
    }
    family(
        &mut out,
        "canary_verdicts_total",
        "counter",
        "Judge verdicts by outcome, since the server started.",
    );
    for (k, v) in &c.verdicts {
        let _ = writeln!(out, "canary_verdicts_total{{outcome=\"{}\"}} {v}", label(k));
    }
    family(
        &mut out,
        "canary_decisions_total",
        "counter",
        "Decisions (advance, rollback, pause, ...) by action, since the server started.",
    );
    for (k, v) in &c.decisions {
        let _ = writeln!(out, "canary_decisions_total{{action=\"{}\"}} {v}", label(k));
    }
    family(
        &mut out,
        "canary_ticks_total",
        "counter",
        "Analysis ticks run, all rollouts, since the server started.",
    );
    let _ = writeln!(out, "canary_ticks_total {}", c.ticks);
    family(
        &mut out,
        "canary_rollout_weight_percent",
        "gauge",
        "Canary weight the traffic layer confirmed, per rollout.",
    );
    for r in rollouts {
        let _ = writeln!(
            out,
            "canary_rollout_weight_percent{{rollout=\"{}\"}} {}",
            label(&r.name),
            r.applied_weight
        );
    }
    family(
        &mut out,
        "canary_rollout_desired_weight_percent",
        "gauge",
        "Canary weight the decisions call for (advisory: recommended), per rollout.",
    );
    for r in rollouts {
        let _ = writeln!(
            out,
            "canary_rollout_desired_weight_percent{{rollout=\"{}\"}} {}",
            label(&r.name),
            r.desired_weight
        );
    }
    family(
        &mut out,
        "canary_rollout_stage",
        "gauge",
        "Current stage, 0-based (-1 when none runs), per rollout.",
    );
    for r in rollouts {
        let s = r.stage.map_or(-1, |s| s as i64);
        let _ = writeln!(
            out,
            "canary_rollout_stage{{rollout=\"{}\"}} {s}",
            label(&r.name)
        );
    }
    family(
        &mut out,
        "canary_rollout_stage_requests",
        "gauge",
        "Requests in the current stage, per rollout and version.",
    );
    for r in rollouts {
        for (v, x) in [("stable", &r.counts.stable), ("canary", &r.counts.canary)] {
            let _ = writeln!(
                out,
                "canary_rollout_stage_requests{{rollout=\"{}\",version=\"{v}\"}} {}",
                label(&r.name),
                x.requests
            );
        }
    }
    let series = [
        ("canary_judge_statistic", "statistic", "The judge's latest test statistic (log e-value for the sequential judge), per rollout and metric."),
        ("canary_judge_threshold", "threshold", "The threshold the latest statistic is held to, per rollout and metric."),
        ("canary_judge_e_value", "e_value", "The latest e-value, where the judge has one, per rollout and metric."),
        ("canary_judge_p_value", "p_value", "The latest p-value (anytime-valid for the sequential judge), per rollout and metric."),
    ];
    for (name, field, help) in series {
        family(&mut out, name, "gauge", help);
        for r in rollouts {
            let Some(v) = &r.verdict else { continue };
            for m in &v.metrics {
                let x = match field {
                    "statistic" => m.statistic,
                    "threshold" => m.threshold,
                    "e_value" => m.e_value,
                    _ => m.p_value,
                };
                if let Some(x) = x {
                    let _ = writeln!(
                        out,
                        "{name}{{rollout=\"{}\",metric=\"{}\"}} {x}",
                        label(&r.name),
                        label(&m.name)
                    );
                }
            }
        }
    }
    out
}

/// The election's families (high availability on etcd).
fn render_ha(out: &mut String, h: &crate::ha::HaStatus) {
    family(
        out,
        "canary_ha_leader",
        "gauge",
        "1 while this replica leads, 0 while it follows.",
    );
    let _ = writeln!(out, "canary_ha_leader {}", u8::from(h.role == "leader"));
    family(
        out,
        "canary_ha_term",
        "gauge",
        "The leader's term (the election key's create revision) this replica knows of; 0 when none.",
    );
    let _ = writeln!(out, "canary_ha_term {}", h.term);
    family(
        out,
        "canary_ha_seconds_since_renewal",
        "gauge",
        "Seconds since the leader's lease was last renewed (leader only).",
    );
    if let Some(s) = h.since_renewal_seconds {
        let _ = writeln!(out, "canary_ha_seconds_since_renewal {s}");
    }
    family(
        out,
        "canary_ha_terms_won_total",
        "counter",
        "Terms this replica won, since it started.",
    );
    let _ = writeln!(out, "canary_ha_terms_won_total {}", h.terms_won);
    family(
        out,
        "canary_ha_writes_refused_total",
        "counter",
        "Store writes refused because this replica did not lead: by this replica (by=\"replica\") or by etcd's fence on the term (by=\"etcd\").",
    );
    let _ = writeln!(
        out,
        "canary_ha_writes_refused_total{{by=\"replica\"}} {}",
        h.writes_refused_local
    );
    let _ = writeln!(
        out,
        "canary_ha_writes_refused_total{{by=\"etcd\"}} {}",
        h.writes_refused_fenced
    );
}
