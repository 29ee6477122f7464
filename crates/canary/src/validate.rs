//! `canary validate FILE`: checks a spec and lists every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::common::{read_document, write_stdout};

/// Check a rollout spec (YAML or JSON) and print "ok" or every error found.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  canary validate rollout.yaml\n  canary validate examples/checkout.json"
)]
pub struct Args {
    /// The spec file (`-`: standard input).
    file: PathBuf,
}

/// Runs the subcommand: exit 0 when valid, 1 when the spec has errors.
pub fn run(args: Args) -> Result<ExitCode> {
    let text = read_document(&args.file, "spec")?;
    match canary_prometheus::policy_from_text(&text) {
        Ok(p) if crate::common::kubeconfig_problem(&p).is_some() => {
            let e = crate::common::kubeconfig_problem(&p).unwrap_or_default();
            eprintln!("{}: {e}", args.file.display());
            eprintln!("1 error(s)");
            Ok(ExitCode::from(1))
        }
        Ok(p) => {
            write_stdout(&format!(
                "ok: {} — {} stage(s), judge {}\n",
                p.name,
                p.stages.len(),
                p.analysis.judge
            ))?;
            // At the traffic the spec expects, a stage that cannot gather
            // its min_requests in time decides nothing: a warning, not an
            // error (`canary plan` says more).
            if let Some(rate) = p.analysis.expected_rate {
                for (_, w) in canary_sim::plan::rate_warnings(&p, rate) {
                    eprintln!("{}: warning: {w}", args.file.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {e}", args.file.display());
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::from(1))
        }
    }
}
