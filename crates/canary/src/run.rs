//! `canary run`: a live rollout through the built-in proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;

use canary_controller::{run_live, Controller, LiveEnd};
use canary_core::{JudgeKind, Policy};
use canary_engine::{Engine, MetricsSource, RolloutReport};
use canary_proxy::Proxy;

use crate::common::{load_policy, print_json};
use crate::live::{runtime, shutdown_signal, unless_signalled, ProxyArgs, StatusLine};

/// Run a live rollout: judge real traffic and move the weight, through the
/// built-in proxy or the nginx or HAProxy you run.
///
/// The spec's `traffic` section names the provider: the built-in proxy
/// (listen address and the two upstreams), `nginx` (the include file canary
/// writes, checked and reloaded), `haproxy` (the runtime API whose server
/// weights canary sets), `alb`, or a Kubernetes object (`gateway-api`,
/// `istio`, `ingress-nginx`, `smi`; docs/kubernetes.md). The weight starts at 0; every
/// `analysis.interval` the controller reads the proxy's per-version numbers,
/// asks the judge, steps the same state machine as `canary simulate` and sets
/// the weight. A status line goes to stderr, the final report (the same JSON
/// as `simulate`) to stdout.
///
/// Exit 0 when the canary was promoted, 1 when it was rolled back, 130 when
/// interrupted (SIGINT/SIGTERM abort the rollout: weight back to 0, report
/// printed), 2 for a bad flag or spec.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary run --spec rollout.yaml
  canary run --spec rollout.yaml --judge threshold --admin 127.0.0.1:9090
  canary run --spec rollout.yaml --sticky-cookie session --keep-serving > report.json

The spec needs a traffic section, e.g. the built-in proxy:
  traffic:
    listen: 127.0.0.1:8080
    stable: http://127.0.0.1:9001
    canary: http://127.0.0.1:9002
or HAProxy's runtime API (see docs/traffic.md for nginx):
  traffic:
    provider: haproxy
    haproxy: {socket: /run/haproxy/admin.sock, backend: app, stable: [s1], canary: [c1]}")]
pub struct Args {
    /// Rollout spec (YAML or JSON) with a `traffic` section.
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
    /// Judge to use (overrides the spec's `analysis.judge`).
    #[arg(long, value_name = "NAME")]
    judge: Option<JudgeKind>,
    /// After the rollout ends, keep proxying at the final weight until
    /// SIGINT/SIGTERM (otherwise the proxy drains and the command exits).
    #[arg(long)]
    keep_serving: bool,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// The exit code for a finished rollout's report.
pub fn exit_code(report: &RolloutReport) -> ExitCode {
    match report.phase.as_str() {
        "succeeded" => ExitCode::SUCCESS,
        "aborted" => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut policy = load_policy(Some(&args.spec))?;
    if let Some(j) = args.judge {
        policy.analysis.judge = j;
    }
    let traffic = policy.traffic.clone().ok_or_else(|| {
        anyhow!(
            "{}: `canary run` needs a `traffic` section (listen, stable, canary)",
            args.spec.display()
        )
    })?;
    if traffic.provider == canary_core::TrafficProvider::Simulated {
        bail!(
            "{}: traffic.provider: `simulated`: `canary run` drives real traffic (proxy, nginx, haproxy); run this spec under `canary serve` (canary rollouts apply -f ...) or `canary simulate`",
            args.spec.display(),
        );
    }
    if policy.mode == canary_core::Mode::Advisory {
        bail!(
            "{}: mode: advisory: `canary run` always moves the weight; advisory rollouts run under `canary serve`",
            args.spec.display()
        );
    }
    if !policy.hooks.webhooks.is_empty() || !policy.hooks.notifications.is_empty() {
        bail!(
            "{}: webhooks and notifications are called by `canary serve` only (a gate would \
             wait in vain under `canary run`): run this spec with `canary rollouts apply -f ...`",
            args.spec.display()
        );
    }
    if traffic.provider != canary_core::TrafficProvider::Proxy {
        let rt = runtime(args.proxy.threads)?;
        let keep_serving = args.keep_serving;
        let report = rt.block_on(rollout_via_layer(policy, keep_serving))?;
        return Ok(exit_code(&report));
    }
    let config = args
        .proxy
        .config(&traffic.listen, &traffic.stable, &traffic.canary)?;
    let rt = runtime(args.proxy.threads)?;
    let keep_serving = args.keep_serving;
    let report = rt.block_on(async move {
        let proxy = Proxy::bind(config).await?;
        let mut printed = Ok(());
        let report = rollout_through(proxy, policy, |r| {
            printed = print_json(r);
            let final_weight = r.final_weight;
            let phase = r.phase.clone();
            async move {
                if keep_serving && phase != "aborted" {
                    eprintln!("rollout {phase}; serving at {final_weight} % until SIGINT/SIGTERM");
                    shutdown_signal().await;
                }
            }
        })
        .await?;
        printed.map(|()| report)
    })?;
    Ok(exit_code(&report))
}

/// The wall clock in Unix seconds, for the metrics sources' queries.
#[allow(clippy::disallowed_methods)] // the binary's edge: Prometheus queries are at wall-clock times
pub fn unix_now() -> canary_prometheus::UnixClock {
    std::sync::Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Where `canary run` reads its numbers: the proxy's recorder, or the
/// spec's `metrics` source (the recorder is still drained each tick).
struct RunSource {
    proxy: canary_proxy::ProxyHandle,
    external: Option<canary_prometheus::Source>,
}

impl MetricsSource for RunSource {
    async fn read_window(
        &mut self,
    ) -> Result<canary_core::Pair<canary_core::VersionStats>, canary_engine::SourceError> {
        let own = self.proxy.read_window().await;
        match &mut self.external {
            Some(s) => s.read_window().await,
            None => own,
        }
    }
}

/// Runs the rollout through a bound proxy: serves, ticks the controller on
/// the wall clock with a status line on stderr, aborts on SIGINT/SIGTERM.
/// When the rollout has ended, `then` gets the report and returns what to
/// wait for before the proxy stops (it drains in-flight requests).
pub async fn rollout_through<F: Future<Output = ()>>(
    proxy: Proxy,
    policy: Policy,
    then: impl FnOnce(&RolloutReport) -> F,
) -> Result<RolloutReport> {
    // The metrics source first: a file it cannot read (a TLS certificate)
    // stops the run before any request is taken.
    let interval = policy.analysis.interval;
    let source = match &policy.metrics {
        Some(m) => canary_prometheus::Source::for_spec(m, unix_now(), interval)
            .map_err(|e| anyhow!("{e}"))?,
        None => None,
    };
    let addr = proxy
        .local_addr()
        .ok_or_else(|| anyhow!("cannot read the proxy's address"))?;
    eprintln!("proxy listening on http://{addr}");
    if let Some(a) = proxy.admin_addr() {
        eprintln!("admin (healthz, metrics) on http://{a}");
    }
    let handle = proxy.handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async move {
        let _ = stop_rx.await;
    }));
    if let Some(s) = &source {
        eprintln!("metrics from {} (metrics.provider)", s.name());
    }
    let source = RunSource {
        proxy: handle.clone(),
        external: source,
    };
    let mut controller = Controller::new(Engine::new(policy), source, handle);
    let mut line = StatusLine::new();
    let end = run_live(&mut controller, interval, shutdown_signal(), |notes, s| {
        line.update(notes, &s.to_string())
    })
    .await;
    line.finish();
    let end = end.context("the rollout stopped unexpectedly")?;
    if !controller.weight_applied() {
        bail!("the proxy did not accept the final weight");
    }
    let report = controller.report();
    if end == LiveEnd::Interrupted {
        eprintln!("interrupted: rollout aborted, canary weight back to 0 %");
    }
    then(&report).await;
    let _ = stop_tx.send(());
    // The proxy drains in-flight requests (up to --drain-timeout-ms); a
    // signal meanwhile stops it at once (the weight is already final).
    unless_signalled(1, async {
        let _ = serving.await;
    })
    .await;
    Ok(report)
}

/// Runs the rollout through a traffic layer the user runs (nginx, HAProxy):
/// ticks the controller on the wall clock with a status line on stderr,
/// aborts on SIGINT/SIGTERM, prints the report.
async fn rollout_via_layer(policy: Policy, keep_serving: bool) -> Result<RolloutReport> {
    let provider = policy
        .traffic
        .as_ref()
        .map_or("proxy", |t| t.provider.name());
    let interval = policy.analysis.interval;
    // Only a simulated service reads this clock, and `run` refuses those.
    let clock: canary_sim::live::Clock = std::sync::Arc::new(|| std::time::Duration::ZERO);
    let driver = canary_server::Driver::start(&policy, 1, clock, unix_now())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    eprintln!("traffic through {provider} (traffic.provider)");
    if let Some(m) = &policy.metrics {
        eprintln!("metrics from {} (metrics.provider)", m.provider.name());
    }
    let shared = SharedDriver(std::sync::Arc::new(tokio::sync::Mutex::new(driver)));
    let mut controller = Controller::new(Engine::new(policy), shared.clone(), shared);
    let mut line = StatusLine::new();
    let end = run_live(&mut controller, interval, shutdown_signal(), |notes, s| {
        line.update(notes, &s.to_string())
    })
    .await;
    line.finish();
    let end = end.context("the rollout stopped unexpectedly")?;
    if !controller.weight_applied() {
        bail!("{provider} did not accept the final weight");
    }
    let report = controller.report();
    if end == LiveEnd::Interrupted {
        eprintln!("interrupted: rollout aborted, canary weight back to 0 %");
    }
    print_json(&report)?;
    if keep_serving && report.phase != "aborted" {
        eprintln!(
            "rollout {}; {provider} routes {} % to the canary (canary no longer moves it)",
            report.phase, report.final_weight
        );
    }
    Ok(report)
}

/// One traffic layer as both seams of the controller.
#[derive(Clone)]
struct SharedDriver(std::sync::Arc<tokio::sync::Mutex<canary_server::Driver>>);

impl MetricsSource for SharedDriver {
    async fn read_window(
        &mut self,
    ) -> Result<canary_core::Pair<canary_core::VersionStats>, canary_engine::SourceError> {
        self.0.lock().await.read_window().await
    }
}

impl canary_engine::TrafficActuator for SharedDriver {
    async fn set_weight(&mut self, percent: f64) -> Result<(), canary_engine::ActuatorError> {
        self.0.lock().await.set_weight(percent).await
    }
}
