//! `canary evaluate`: many seeded rollouts per scenario × judge, summarised.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use canary_core::JudgeKind;
use canary_sim::{evaluate, report, EvalConfig, BUILT_IN};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{load_policy, load_scenario, write_stdout};

/// Evaluate a rollout policy by Monte Carlo: how often it rolls back a
/// healthy canary, how often and how fast it catches a bad one, and how many
/// requests a bad canary serves before it is stopped.
///
/// Runs N seeded simulated rollouts for every scenario × judge pair, in
/// parallel, and prints a table (or, with --json, one JSON document). The same
/// --seed gives the same numbers whatever --threads is. Exit 0 whatever the
/// numbers; 2 for a bad flag, spec or scenario.
#[derive(clap::Args)]
#[command(after_help = "\
Defaults: every built-in scenario, the spec's judge (`sequential` in the
default policy), 1000 runs per pair, seed 42, all cores.

Examples:
  canary evaluate                                   # default policy, its judge, all scenarios
  canary evaluate --judge all --runs 2000           # compare every judge
  canary evaluate --judge threshold --judge sequential --scenario healthy --scenario errors-2x
  canary evaluate --spec rollout.yaml --scenario my-scenario.yaml --runs 10000 --json > eval.json
  canary evaluate --judge all --plot eval.png       # rollback rates and exposure per judge

Built-in scenarios: healthy, errors-2x, errors-5x, latency-20pct, latency-50pct,
memory-leak, burst, load-dependent.
Judges: threshold, deviation, ztest (valid for one look only), kayenta, sequential.")]
pub struct Args {
    /// Rollout spec (YAML or JSON); without it the default strategy.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// A built-in scenario name or a scenario file; repeat for several.
    /// Default: every built-in scenario.
    #[arg(long, value_name = "NAME|FILE")]
    scenario: Vec<String>,
    /// A judge to evaluate, or `all`; repeat for several. Default: the
    /// spec's `analysis.judge`.
    #[arg(long, value_name = "NAME")]
    judge: Vec<String>,
    /// Simulated rollouts per scenario × judge pair (1 to 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    runs: u64,
    /// Seed of the whole evaluation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Worker threads (0: one per core; at most 1024). Does not change the
    /// results.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    threads: u16,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw the comparison to FILE (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

fn judges(names: &[String], spec_judge: JudgeKind) -> Result<Vec<JudgeKind>> {
    if names.is_empty() {
        return Ok(vec![spec_judge]);
    }
    let mut out = Vec::new();
    for n in names {
        let add: Vec<JudgeKind> = if n == "all" {
            JudgeKind::ALL.to_vec()
        } else {
            vec![n
                .parse()
                .map_err(|e: String| anyhow!("--judge: {e}, or all"))?]
        };
        for j in add {
            if !out.contains(&j) {
                out.push(j);
            }
        }
    }
    Ok(out)
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let policy = load_policy(args.spec.as_deref())?;
    let judges = judges(&args.judge, policy.analysis.judge)?;
    let names: Vec<String> = if args.scenario.is_empty() {
        BUILT_IN.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenario.clone()
    };
    let scenarios = names
        .iter()
        .map(|n| load_scenario(n))
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = &args.plot {
        canary_sim::plot::Format::of(p)?;
    }
    let cfg = EvalConfig {
        policy,
        scenarios,
        judges,
        runs: args.runs,
        seed: args.seed,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(usize::from(args.threads))
        .build()
        .context("cannot start the worker threads")?;
    let total = cfg.scenarios.len() as u64 * cfg.judges.len() as u64 * cfg.runs;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rollouts ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    // The binary's edge: wall-clock time for the throughput line on stderr.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let result = pool.install(|| evaluate(&cfg, &|n| bar.inc(n)));
    bar.finish_and_clear();
    let eval = result?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} rollouts, {} simulated requests in {secs:.2} s on {} threads: {:.0} rollouts/s, {:.3e} requests/s",
        eval.rollouts(),
        eval.simulated_requests(),
        pool.current_num_threads(),
        eval.rollouts() as f64 / secs,
        eval.simulated_requests() as f64 / secs,
    );
    if args.json {
        write_stdout(&format!("{}\n", report::to_json(&eval)?))?;
    } else {
        write_stdout(&report::table(&eval))?;
    }
    if let Some(p) = &args.plot {
        canary_sim::plot::evaluation(&eval, p)
            .with_context(|| format!("cannot draw {}", p.display()))?;
        eprintln!("plot written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
