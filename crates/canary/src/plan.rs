//! `canary plan`: what a policy can see at a traffic rate, before a rollout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use canary_core::JudgeKind;
use canary_sim::plan::{plan, runs_needed, PlanConfig, POWER};
use canary_sim::scenario::BaselineModel;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{load_policy, print_json, write_stdout};

/// Predict, before a rollout, what a policy can see at a traffic rate: per
/// stage the canary's requests, the time its `min_requests` take, and the
/// smallest regressions it rolls back there with 90 % power.
///
/// The first part is arithmetic and warns about every stage that cannot
/// gather its `min_requests` before its timeout (such a stage ends by
/// `on_inconclusive` whatever the canary does). The second comes from
/// seeded simulation (`--runs` rollouts per regression tried, independent
/// per-request noise): for error-rate multipliers 1.1× … 20× and latency
/// multipliers 1.02× … 3×, the smallest rolled back by the end of each
/// stage in at least 90 % of runs, and how a healthy canary fares. Exit 0,
/// or 1 when a stage cannot reach its `min_requests` in time.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary plan --rate 50                          # the default policy at 50 requests/s
  canary plan --spec rollout.yaml --rate 5       # a low-traffic service: which stages cannot decide?
  canary plan --spec rollout.yaml --rate 200 --error-rate 0.001 --json")]
pub struct Args {
    /// Rollout spec (default: the built-in strategy).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Requests per second to the service, both versions together.
    #[arg(long, value_name = "REQ/S")]
    rate: f64,
    /// The stable version's error rate.
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// The stable version's median latency, ms.
    #[arg(long, default_value_t = 100.0)]
    latency_ms: f64,
    /// Spread of ln latency (σ of the log-normal).
    #[arg(long, default_value_t = 0.5)]
    latency_sigma: f64,
    /// Judge to plan for (overrides the spec's).
    #[arg(long, value_name = "NAME")]
    judge: Option<JudgeKind>,
    /// Simulated rollouts per regression tried.
    #[arg(long, default_value_t = 200)]
    runs: u64,
    /// Seed of the simulations (same seed, same plan).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1e6) {
        bail!(
            "--rate {}: must be a number of requests per second in (0, 1000000]",
            args.rate
        );
    }
    if !(0.0..1.0).contains(&args.error_rate) {
        bail!("--error-rate {}: must be in [0, 1)", args.error_rate);
    }
    if !(args.latency_ms.is_finite() && args.latency_ms > 0.0) {
        bail!("--latency-ms {}: must be positive", args.latency_ms);
    }
    if !(args.latency_sigma.is_finite() && args.latency_sigma > 0.0 && args.latency_sigma < 5.0) {
        bail!("--latency-sigma {}: must be in (0, 5)", args.latency_sigma);
    }
    if !(10..=100_000).contains(&args.runs) {
        bail!("--runs {}: must be in [10, 100000]", args.runs);
    }
    let mut policy = load_policy(args.spec.as_deref())?;
    if let Some(j) = args.judge {
        policy.analysis.judge = j;
    }
    let cfg = PlanConfig {
        rate: args.rate,
        baseline: BaselineModel {
            error_rate: args.error_rate,
            latency_median_ms: args.latency_ms,
            latency_sigma: args.latency_sigma,
        },
        runs: args.runs,
        seed: args.seed,
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(runs_needed(&cfg));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} simulated rollouts (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = plan(&policy, &cfg, &|n| bar.inc(n));
    bar.finish_and_clear();
    let p = result.context("cannot simulate this policy")?;
    let warned = p.stages.iter().any(|s| s.warning.is_some());
    if args.json {
        print_json(&p)?;
    } else {
        write_stdout(&render(&p))?;
    }
    for s in &p.stages {
        if let Some(w) = &s.warning {
            eprintln!("warning: {w}");
        }
    }
    Ok(if warned {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(p: &canary_sim::plan::Plan) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "plan for `{}` (judge {}) at {} req/s; stable: {:.3} % errors, median latency {} ms\n\n",
        p.name,
        p.judge,
        p.rate,
        100.0 * p.baseline_error_rate,
        p.baseline_latency_median_ms
    );
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>8} {:>8} {:>10} {:>12} {:>13} {:>12} {:>10}",
        "stage",
        "weight",
        "bake",
        "timeout",
        "canary r/s",
        "canary reqs",
        "min_requests",
        "reached at",
        "in time"
    );
    for s in &p.stages {
        let _ = writeln!(
            out,
            "{:>5} {:>6}% {:>7}s {:>7}s {:>10.2} {:>12.0} {:>13} {:>11.0}s {:>10}",
            s.index,
            s.weight,
            s.bake_seconds,
            s.timeout_seconds,
            s.canary_rate,
            s.canary_requests_bake,
            s.min_requests,
            s.seconds_to_min_requests,
            if s.warning.is_some() { "NO" } else { "yes" }
        );
    }
    let _ = writeln!(
        out,
        "\nsmallest regression rolled back by the end of each stage in ≥ {:.0} % of {} simulated runs:",
        100.0 * POWER,
        p.runs
    );
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>10} {:>10}",
        "stage", "weight", "errors", "latency"
    );
    let x = |v: Option<f64>| v.map_or("none".to_string(), |m| format!("{m}×"));
    for s in &p.stages {
        let _ = writeln!(
            out,
            "{:>5} {:>6}% {:>10} {:>10}",
            s.index,
            s.weight,
            x(s.detects_errors_x),
            x(s.detects_latency_x)
        );
    }
    let h = &p.healthy;
    let _ = writeln!(
        out,
        "\nhealthy canary: promoted {:.1} %, rolled back {:.1} % (false alarms), undecided {:.1} %; median time to 100 %: {}",
        100.0 * h.promoted,
        100.0 * h.rolled_back,
        100.0 * h.undecided,
        h.median_seconds_to_promotion
            .map_or("-".to_string(), |t| format!("{t:.0} s"))
    );
    out
}
