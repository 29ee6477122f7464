//! Reports of an [`Evaluation`]: a plain-text table and a JSON document.
//!
//! The JSON document is the [`Evaluation`] itself: `policy`, `seed`, `runs`,
//! `notes` and a `results` array with one object per scenario × judge pair
//! (`scenario`, `judge`, `runs`, `rolled_back`, `rolled_back_ci`, `promoted`,
//! `exposure_requests`, `exposure_errors`, `decision_seconds`, ...). It holds
//! no wall-clock figure, so the same seed gives the same bytes.

use std::fmt::Write as _;

use crate::evaluate::{Evaluation, PairResult, RollbackMeaning, Stat};

/// The evaluation as a pretty-printed JSON document (no trailing newline).
///
/// # Errors
/// Serialization errors (none are expected: every number is finite).
pub fn to_json(e: &Evaluation) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(e)
}

fn pct(x: f64) -> String {
    let p = 100.0 * x;
    if p != 0.0 && p < 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

fn ci_pct(ci: [f64; 2]) -> String {
    // Two decimals: at 10 000 runs an interval is a few tenths wide.
    format!("[{:.2}, {:.2}]", 100.0 * ci[0], 100.0 * ci[1])
}

fn num(x: f64) -> String {
    if x >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn median_ci(s: &Stat) -> String {
    match (s.median, s.median_ci) {
        (Some(m), Some(ci)) => format!("{} [{}, {}]", num(m), num(ci[0]), num(ci[1])),
        _ => "–".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), num)
}

fn judge_label(r: &PairResult) -> String {
    if r.note.is_some() {
        format!("{}*", r.judge)
    } else {
        r.judge.clone()
    }
}

fn stages(r: &PairResult) -> String {
    if r.rollback_stages.iter().all(|&c| c == 0) {
        return "–".into();
    }
    r.rollback_stages
        .iter()
        .zip(&r.stage_weights)
        .filter(|(&c, _)| c > 0)
        .map(|(c, w)| format!("{}%:{c}", num(*w)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The evaluation as a table for a terminal, with its notes below.
pub fn table(e: &Evaluation) -> String {
    let mut out = String::new();
    let weights: Vec<String> = e.stage_weights.iter().map(|w| num(*w)).collect();
    let _ = writeln!(
        out,
        "policy `{}` (stages {} %), {} runs per pair, seed {}, alpha {}",
        e.policy,
        weights.join("/"),
        e.runs,
        e.seed,
        e.alpha
    );
    let _ = writeln!(
        out,
        "rolled back: FALSE = false-rollback rate (healthy canary), DETECT = detection rate \
         (regressed canary); 95 % Wilson intervals"
    );
    let _ = writeln!(
        out,
        "exposure: canary requests / errors served before the rollback (median [95 % CI]); \
         times in simulated seconds\n"
    );
    let header = [
        "scenario",
        "judge",
        "rolled back",
        "95% CI",
        "promoted",
        "inconcl.",
        "exposure req",
        "exp. errors",
        "decision s med",
        "p90",
        "promotion s med",
        "rollbacks by stage",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let mut last_scenario = String::new();
    for r in &e.results {
        let kind = match r.rolled_back_means {
            RollbackMeaning::FalseRollbackRate => "FALSE",
            RollbackMeaning::DetectionRate => "DETECT",
        };
        let scenario = if r.scenario == last_scenario {
            String::new()
        } else {
            last_scenario.clone_from(&r.scenario);
            r.scenario.clone()
        };
        rows.push(vec![
            scenario,
            judge_label(r),
            format!("{kind} {}", pct(r.rolled_back)),
            ci_pct(r.rolled_back_ci),
            pct(r.promoted),
            pct(r.inconclusive),
            median_ci(&r.exposure_requests),
            median_ci(&r.exposure_errors),
            opt(r.decision_seconds.median),
            opt(r.decision_seconds.p90),
            opt(r.promotion_seconds.median),
            stages(r),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if c < 2 || c == row.len() - 1 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    let limits: Vec<&PairResult> = e
        .results
        .iter()
        .filter(|r| r.oracle_requests.is_some())
        .collect();
    if !limits.is_empty() {
        let _ = writeln!(
            out,
            "\ninformation limit: canary requests Wald's SPRT needs on average (knowing both \
             versions exactly; alpha {}, 99 % power), beside the median exposure",
            e.alpha
        );
        for r in limits {
            let o = r.oracle_requests.unwrap_or(f64::NAN);
            let vs = r
                .exposure_vs_oracle
                .map_or("no rollback to compare".to_string(), |x| {
                    format!("{x:.2}× the limit")
                });
            let _ = writeln!(
                out,
                "  {} / {}: limit {o:.0}; exposure {} ({vs})",
                r.scenario,
                judge_label(r),
                opt(r.exposure_requests.median),
            );
        }
    }
    if e.results.iter().any(|r| r.note.is_some()) {
        let _ = writeln!(out);
        let mut seen = Vec::new();
        for r in e.results.iter() {
            if let Some(n) = &r.note {
                if !seen.contains(&r.judge) {
                    let _ = writeln!(out, "* {}: {n}", r.judge);
                    seen.push(r.judge.clone());
                }
            }
        }
    }
    out
}
