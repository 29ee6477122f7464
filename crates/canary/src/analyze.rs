//! `canary analyze --input FILE.json`: judges recorded numbers and prints
//! the verdict as JSON. Exit 0 pass, 1 fail, 2 usage or input error,
//! 3 inconclusive.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use canary_core::{JudgeKind, Outcome};
use canary_stats::analyze::{analyze, parse};

use crate::common::{print_json, read_document};

/// Judge recorded counts and samples (JSON) and print the verdict as JSON.
#[derive(clap::Args)]
#[command(after_help = "Input:
  {\"judge\": \"sequential\", \"alpha\": 0.05,
   \"metrics\": [
     {\"name\": \"errors\", \"kind\": \"count\", \"baseline\": 950, \"canary\": 80, \"canary_share\": 0.05},
     {\"name\": \"latency_ms\", \"kind\": \"samples\", \"baseline\": [101, 99, 130], \"canary\": [140, 151, 160]}]}

Exit codes: 0 pass, 1 fail, 2 usage or input error, 3 inconclusive.

Examples:
  canary analyze --input recorded.json
  canary analyze --input recorded.json --judge kayenta
  canary analyze --input recorded.json --alpha 0.01")]
pub struct Args {
    /// The JSON file of recorded metrics.
    #[arg(long, short)]
    input: PathBuf,
    /// Override the file's judge: sequential, ztest, deviation or kayenta.
    #[arg(long)]
    judge: Option<JudgeKind>,
    /// Override the file's alpha, in (0, 0.5).
    #[arg(long)]
    alpha: Option<f64>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let text = read_document(&args.input, "input")?;
    let mut input = parse(&text).with_context(|| format!("{}", args.input.display()))?;
    if let Some(j) = args.judge {
        input.judge = j;
    }
    if let Some(a) = args.alpha {
        input.alpha = a;
    }
    let report = analyze(&input).with_context(|| format!("{}", args.input.display()))?;
    print_json(&report)?;
    Ok(ExitCode::from(match report.verdict {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::Inconclusive => 3,
    }))
}
