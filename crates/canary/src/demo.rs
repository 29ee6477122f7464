//! `canary demo`: a whole live rollout on one machine in about a minute.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use canary_core::{JudgeKind, Policy};
use canary_demo::backend::{Backend, BackendConfig};
use canary_demo::loadgen::{self, LoadConfig, StopLoad};
use canary_proxy::{ProxyConfig, Upstream};

use crate::common::print_json;

/// Watch a live canary rollout end to end, with nothing to install.
///
/// Starts two demo backends on free loopback ports (a healthy stable version
/// and a canary that, by default, fails 5x as often), the built-in proxy in front of them, and a load generator; then
/// runs a live rollout through the proxy with the default judge, stages
/// compressed to seconds, and ends with the decision: a rollback for the bad
/// canary, a promotion with `--healthy`.
///
/// Exit 0 when the decision is the expected one (rollback of the bad canary,
/// promotion of the healthy one), 1 otherwise.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary demo                  # a bad canary: watch it get rolled back
  canary demo --healthy        # a good canary: watch it get promoted to 100 %
  canary demo --judge threshold --rate 800
  canary demo --json > report.json   # the full report (same shape as simulate)")]
pub struct Args {
    /// Make the canary as good as the stable version.
    #[arg(long)]
    healthy: bool,
    /// Judge to use (default: the default judge).
    #[arg(long, value_name = "NAME")]
    judge: Option<JudgeKind>,
    /// Requests per second the load generator sends.
    #[arg(long, default_value_t = 600.0)]
    rate: f64,
    /// Stable's error rate; the bad canary's is 5x this.
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// Seed of the backends' fault draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the full report as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

/// The demo's policy: the default strategy's shape, compressed to seconds.
const DEMO_SPEC: &str = "\
name: demo
stages:
  - {weight: 5, duration: 10s}
  - {weight: 25, duration: 10s}
  - {weight: 50, duration: 10s}
  - {weight: 100, duration: 10s}
analysis:
  interval: 1s
  min_requests: 100
  timeout_factor: 2
  on_inconclusive: rollback
";

fn loopback() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(0.0..=0.2).contains(&args.error_rate) {
        anyhow::bail!("--error-rate must be in [0, 0.2], not {}", args.error_rate);
    }
    if !(args.rate >= 10.0 && args.rate <= 100_000.0) {
        anyhow::bail!("--rate must be in [10, 100000], not {}", args.rate);
    }
    let mut policy = Policy::from_text(DEMO_SPEC).map_err(|e| anyhow!("demo spec: {e}"))?;
    if let Some(j) = args.judge {
        policy.analysis.judge = j;
    }
    let rt = crate::live::runtime(None)?;
    let report = rt.block_on(demo(&args, policy))?;
    let expected = if args.healthy {
        "succeeded"
    } else {
        "rolled_back"
    };
    if args.json {
        print_json(&report)?;
    } else {
        println!();
        match report.phase.as_str() {
            "succeeded" => println!(
                "PROMOTED: the canary now serves 100 % of traffic ({} of {} stages passed in {:.0} s).",
                report.stages_completed, report.total_stages, report.elapsed_seconds
            ),
            "rolled_back" => println!(
                "ROLLED BACK after {:.0} s at stage {} of {}: {}",
                report.elapsed_seconds,
                report.stages_completed + 1,
                report.total_stages,
                report.rollback_reason
            ),
            other => println!("Ended {other}: {}", report.rollback_reason),
        }
        if let Some(s) = report.stages.last() {
            println!(
                "  last stage at {} %: stable {} requests, {} errors; canary {} requests, {} errors",
                s.weight, s.baseline.requests, s.baseline.errors, s.canary.requests, s.canary.errors
            );
        }
        println!(
            "  (the {} canary {} the expected outcome)",
            if args.healthy { "healthy" } else { "bad" },
            if report.phase == expected {
                "got"
            } else {
                "did NOT get"
            }
        );
    }
    Ok(if report.phase == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn demo(args: &Args, policy: Policy) -> Result<canary_engine::RolloutReport> {
    let ms = Duration::from_millis;
    let stable_cfg = BackendConfig {
        error_rate: args.error_rate,
        latency: ms(20),
        jitter: ms(10),
        seed: args.seed,
        ..BackendConfig::new(loopback(), "stable")
    };
    let canary_cfg = if args.healthy {
        BackendConfig {
            seed: args.seed.wrapping_add(1),
            name: "canary".into(),
            ..stable_cfg.clone()
        }
    } else {
        BackendConfig {
            error_rate: (args.error_rate * 5.0).min(1.0),
            seed: args.seed.wrapping_add(1),
            name: "canary".into(),
            ..stable_cfg.clone()
        }
    };
    let describe = |c: &BackendConfig| {
        format!(
            "{:.1} % errors, {}–{} ms",
            c.error_rate * 100.0,
            c.latency.as_millis(),
            (c.latency + c.jitter).as_millis()
        )
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut started = Vec::new();
    let mut urls = Vec::new();
    for cfg in [&stable_cfg, &canary_cfg] {
        let b = Backend::bind(cfg.clone()).await?;
        let addr = b.local_addr().context("backend address")?;
        eprintln!(
            "started {} backend on http://{addr} ({})",
            cfg.name,
            describe(cfg)
        );
        urls.push(format!("http://{addr}"));
        let mut rx = stop_rx.clone();
        started.push(tokio::spawn(b.serve(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    let mut config = ProxyConfig::new(
        loopback(),
        Upstream::parse(&urls[0])?,
        Upstream::parse(&urls[1])?,
    );
    config.admin = Some(loopback());
    config.drain_timeout = Duration::from_secs(5);
    let proxy = canary_proxy::Proxy::bind(config).await?;
    let target = format!("http://{}/", proxy.local_addr().context("proxy address")?);
    let load = LoadConfig {
        rate: Some(args.rate),
        ..LoadConfig::new(target.parse()?, 64)
    };
    eprintln!(
        "load: {} requests/s through the proxy; judge: {}; stages {}; one look per {} s",
        args.rate,
        policy.analysis.judge,
        policy
            .stages
            .iter()
            .map(|s| format!("{}% for {}s", s.weight, s.bake.as_secs()))
            .collect::<Vec<_>>()
            .join(" → "),
        policy.analysis.interval.as_secs_f64()
    );
    let stop_load = StopLoad::new();
    let load_task = tokio::spawn(loadgen::run(load, stop_load.clone()));
    let mut sent = None;
    let report = crate::run::rollout_through(proxy, policy, |_| async {
        // Stop the load before the proxy stops, so no request meets a
        // closing proxy.
        stop_load.stop();
        sent = load_task.await.ok();
    })
    .await;
    let _ = stop_tx.send(true);
    for t in started {
        let _ = t.await;
    }
    if let Some(l) = sent {
        eprintln!(
            "load generator: {} requests, {} answered 5xx, {} without an answer",
            l.sent, l.classes[4], l.failed
        );
    }
    report
}
