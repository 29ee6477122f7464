//! `canary simulate`: one seeded, reproducible rollout, as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use canary_core::JudgeKind;
use canary_sim::{simulate, SimOptions};

use crate::common::{load_policy, load_scenario, print_json};

/// Simulate one rollout of a scenario and print it as JSON.
///
/// The same seed prints the same bytes. Exit 0 whatever the verdict;
/// 2 for a bad flag, spec or scenario.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary simulate                                  # default policy, healthy canary, seed 42
  canary simulate --scenario errors-2x --seed 7
  canary simulate --spec rollout.yaml --scenario my-scenario.yaml --judge threshold
  canary simulate --scenario memory-leak --timeline | jq '.timeline | length'
  canary simulate --scenario errors-2x --plot rollout.png   # weight, errors, latency, decisions

Built-in scenarios: healthy, errors-2x, errors-5x, latency-20pct, latency-50pct,
memory-leak, burst, load-dependent.")]
pub struct Args {
    /// Seed of the random draws; the same seed reproduces the run byte for byte.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rollout spec (YAML or JSON); without it the default 1/5/25/50/100 % strategy.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// A built-in scenario name or a scenario file.
    #[arg(long, default_value = "healthy", value_name = "NAME|FILE")]
    scenario: String,
    /// Judge to use (overrides the spec's `analysis.judge`).
    #[arg(long, value_name = "NAME")]
    judge: Option<JudgeKind>,
    /// Stop at `pause: true` gates instead of approving them.
    #[arg(long)]
    no_auto_promote: bool,
    /// Include the per-tick timeline in the JSON.
    #[arg(long)]
    timeline: bool,
    /// Also draw the rollout's timeline (weight, error rates, latencies,
    /// decisions) to FILE (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut policy = load_policy(args.spec.as_deref())?;
    if let Some(j) = args.judge {
        policy.analysis.judge = j;
    }
    let scenario = load_scenario(&args.scenario)?;
    let opts = SimOptions {
        auto_promote_gates: !args.no_auto_promote,
        timeline: args.timeline || args.plot.is_some(),
    };
    if let Some(p) = &args.plot {
        canary_sim::plot::Format::of(p)?;
    }
    let sim = simulate(&policy, &scenario, args.seed, &opts)?;
    if let Some(p) = &args.plot {
        canary_sim::plot::timeline(&sim, p)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", p.display()))?;
        eprintln!("plot written to {}", p.display());
    }
    let mut sim = sim;
    if !args.timeline {
        sim.timeline.clear();
    }
    print_json(&sim)?;
    Ok(ExitCode::SUCCESS)
}
