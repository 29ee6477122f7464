//! The report of a rollout: what `canary simulate` and `canary run` print,
//! built by the [`Engine`](crate::Engine) as the rollout goes.

use canary_core::{Decision, Verdict, VersionSummary};
use serde::Serialize;

/// What happened in one stage, for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRecord {
    /// Stage index.
    pub index: usize,
    /// Canary weight while the stage was judged, percent (a 100 % stage:
    /// less its stable holdback).
    pub weight: f64,
    /// When the stage began, seconds.
    pub started_at_seconds: f64,
    /// When it ended, seconds (absent while it runs).
    pub ended_at_seconds: Option<f64>,
    /// The stable version's numbers over the stage.
    pub baseline: VersionSummary,
    /// The canary's numbers over the stage.
    pub canary: VersionSummary,
    /// The judge's last verdict in this stage.
    pub verdict: Option<Verdict>,
    /// The decision that ended the stage, in words.
    pub decision: Option<String>,
}

/// The report of one rollout: what `simulate` and `run` print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutReport {
    /// Rollout name.
    pub name: String,
    /// Judge used.
    pub judge: String,
    /// Final (or current) phase name.
    pub phase: String,
    /// Stages that passed.
    pub stages_completed: usize,
    /// Stages in the policy.
    pub total_stages: usize,
    /// Why it was rolled back or aborted (empty otherwise).
    pub rollback_reason: String,
    /// Canary weight at the end, percent.
    pub final_weight: f64,
    /// Time from start to the end (or now), seconds.
    pub elapsed_seconds: f64,
    /// Per stage.
    pub stages: Vec<StageRecord>,
    /// The audit trail.
    pub decisions: Vec<Decision>,
}
