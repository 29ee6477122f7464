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
  canary demo --json > report.json   # the full report (same shape as simulate)
  canary demo --serve          # canary serve with the demo: try the API and `canary rollouts`")]
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
    #[arg(long, conflicts_with = "serve")]
    json: bool,
    /// Run `canary serve` (in-memory store) with the demo rollout on it
    /// and keep serving until Ctrl-C, to try the API and `canary rollouts`.
    #[arg(long)]
    serve: bool,
    /// With --serve: the API's address.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:7070",
        requires = "serve"
    )]
    listen: SocketAddr,
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
    if args.serve {
        return crate::live::runtime(None)?.block_on(serve_demo(&args));
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

/// The demo's two backends, serving until `stop` turns true.
struct DemoBackends {
    urls: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl DemoBackends {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn start_backends(args: &Args) -> Result<DemoBackends> {
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
    Ok(DemoBackends {
        urls,
        tasks: started,
        stop: stop_tx,
    })
}

/// `canary demo --serve`: the demo rollout on an in-process `canary serve`.
async fn serve_demo(args: &Args) -> Result<ExitCode> {
    use canary_server::store::SqliteStore;
    use canary_server::{ServeConfig, Server, Token};
    let backends = start_backends(args).await?;
    let token = Token::generate().map_err(|e| anyhow!(e))?;
    let config = ServeConfig {
        listen: args.listen,
        token: token.clone(),
        auth_reads: false,
        seed: crate::live::seed(),
        ha: None,
    };
    let store = SqliteStore::in_memory().map_err(|e| anyhow!("{e}"))?;
    let server = Server::start(
        config,
        std::sync::Arc::new(store),
        crate::serve::wall_clock(),
    )
    .await
    .map_err(|e| anyhow!("{e} (another server there? try --listen 127.0.0.1:0)"))?;
    let api = format!("http://{}", server.local_addr().context("API address")?);
    let spec = format!(
        "{DEMO_SPEC}traffic:\n  listen: 127.0.0.1:0\n  stable: {}\n  canary: {}\n",
        backends.urls[0], backends.urls[1]
    );
    let serving = tokio::spawn(server.serve(crate::live::shutdown_signal()));
    let (url, tok) = (api.clone(), token.expose().to_string());
    let created: serde_json::Value = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(format!("{url}/api/v1/rollouts"))
            .header("Authorization", &format!("Bearer {tok}"))
            .header("Content-Type", "application/yaml")
            .header("X-Canary-Actor", "demo")
            .send(spec.as_str())?;
        let text = r.body_mut().read_to_string()?;
        Ok::<_, ureq::Error>(serde_json::from_str(&text).unwrap_or_default())
    })
    .await
    .context("creating the demo rollout")??;
    let proxy = created["traffic"]["listen"]
        .as_str()
        .ok_or_else(|| anyhow!("the demo rollout did not start: {created}"))?
        .to_string();
    let load = LoadConfig {
        rate: Some(args.rate),
        ..LoadConfig::new(format!("http://{proxy}/").parse()?, 64)
    };
    let stop_load = StopLoad::new();
    let load_task = tokio::spawn(loadgen::run(load, stop_load.clone()));
    let t = token.expose();
    println!("canary serve (demo, in-memory store) on {api}");
    println!(
        "rollout `demo`: proxy http://{proxy} with {} requests/s of load; the canary is {}",
        args.rate,
        if args.healthy {
            "healthy"
        } else {
            "bad (5x the errors)"
        }
    );
    println!();
    println!("Dashboard: {api}/  (its Token button takes the token below, for actions)");
    println!();
    println!("In another terminal:");
    println!("  export CANARY_SERVER={api} CANARY_TOKEN={t}");
    println!("  canary rollouts watch demo          # follow it live");
    println!("  canary rollouts get demo            # verdict and evidence");
    println!("  canary rollouts events demo         # the decision log");
    println!("  canary rollouts retry demo          # start it again once it has ended");
    println!("  curl -s {api}/metrics | grep canary_judge");
    println!("  curl -s {api}/api/v1/openapi.json   # the API");
    println!();
    println!("Ctrl-C stops the demo.");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let served = serving.await;
    stop_load.stop();
    let _ = load_task.await;
    backends.stop().await;
    served
        .map_err(|e| anyhow!("{e}"))?
        .map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: &Args, policy: Policy) -> Result<canary_engine::RolloutReport> {
    let backends = start_backends(args).await?;
    let urls = backends.urls.clone();
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
    backends.stop().await;
    if let Some(l) = sent {
        eprintln!(
            "load generator: {} requests, {} answered 5xx, {} without an answer",
            l.sent, l.classes[4], l.failed
        );
    }
    report
}
