//! `canary backtest`: a past period, recorded in Prometheus, replayed
//! through the same engine, judge and state machine as a live rollout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use canary_core::spec::{MetricsProvider, MetricsSpec, PrometheusSpec};
use canary_core::{Event, JudgeKind, Pair, PauseReason, Phase, Policy, VersionStats};
use canary_engine::{Engine, RolloutReport, SourceError};
use canary_prometheus::PrometheusSource;
use canary_sim::{Exposure, Simulation, TickRecord};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::common::{load_policy, print_json};

/// Replay a past period from Prometheus through the rollout engine.
///
/// From `--from`, every `analysis.interval` the window just past is queried
/// (the spec's `metrics.prometheus` queries, or the `http` preset at
/// `--prometheus`), judged, and the state machine steps exactly as it would
/// live: stages advance after their bake time, a failing verdict rolls back,
/// missing data is "no data" (`analysis.on_metrics_unavailable`). The replay
/// ends when the rollout does or when the history (`--to`) runs out.
///
/// The numbers judged are the ones recorded: the canary's share of traffic
/// is whatever it had then, not the weight the spec would have set (that
/// weight is shown beside it).
///
/// Prints when it would have advanced, paused or rolled back, with the
/// evidence; `--json` prints the report instead (the shape `canary
/// simulate` prints). Exit 0 whatever the verdict; 2 for a bad flag or spec,
/// an unreachable server or a query it rejects.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary backtest --spec rollout.yaml --from 2026-11-24T09:00:00Z --to 2026-11-24T12:00:00Z
  canary backtest --spec rollout.yaml --prometheus http://prometheus:9090 --from now-3h --to now
  canary backtest --spec rollout.yaml --from 1764000000 --to 1764010800 --json > report.json
  canary backtest --spec rollout.yaml --from now-6h --to now-3h --plot incident.png

Times: RFC 3339 (2026-11-24T09:00:00Z), Unix seconds, `now`, or `now-DURATION`
(now-90m, now-2h, now-1day).")]
pub struct Args {
    /// Rollout spec (YAML or JSON). Its `metrics.prometheus` section gives
    /// the queries; without one, `--prometheus` with the `http` preset.
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
    /// Prometheus base URL (overrides the spec's `metrics.prometheus.address`).
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Start of the replayed period (the rollout starts here).
    #[arg(long, value_name = "TIME")]
    from: String,
    /// End of the recorded history: the replay stops here at the latest.
    #[arg(long, value_name = "TIME")]
    to: String,
    /// Judge to use (overrides the spec's `analysis.judge`).
    #[arg(long, value_name = "NAME")]
    judge: Option<JudgeKind>,
    /// Stop at `pause: true` gates instead of approving them.
    #[arg(long)]
    no_auto_promote: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Include the per-look timeline in the JSON.
    #[arg(long)]
    timeline: bool,
    /// Also draw the replay (weight, error rates, latencies, decisions) to
    /// FILE (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

/// The JSON a backtest prints.
#[derive(Serialize)]
struct Backtest<'a> {
    prometheus: &'a str,
    from: String,
    to: String,
    /// Why the replay ended before the rollout did, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_early: Option<String>,
    #[serde(flatten)]
    report: &'a RolloutReport,
    exposure: &'a Exposure,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    timeline: &'a [TickRecord],
}

/// The wall clock, Unix seconds (for `now` in `--from`/`--to`).
#[allow(clippy::disallowed_methods)] // the binary's edge
fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A time flag: RFC 3339, Unix seconds, `now` or `now-DURATION`.
fn parse_time(flag: &str, text: &str, now: f64) -> Result<f64> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(ago) = t.strip_prefix("now-") {
        let d = humantime::parse_duration(ago.trim())
            .with_context(|| format!("{flag} `{text}`: not a duration after `now-`"))?;
        return Ok(now - d.as_secs_f64());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(secs);
        }
    }
    let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
        anyhow!(
            "{flag} `{text}`: {e}; give RFC 3339 (2026-11-24T09:00:00Z), Unix seconds, `now` or `now-2h`"
        )
    })?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow!("{flag} `{text}`: before 1970"))?
        .as_secs_f64())
}

fn rfc3339(unix: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The spec's Prometheus section, with `--prometheus` applied.
fn prometheus_spec(policy: &Policy, address: Option<&str>) -> Result<PrometheusSpec> {
    let from_spec = policy
        .metrics
        .as_ref()
        .filter(|m| m.provider == MetricsProvider::Prometheus)
        .and_then(|m| m.prometheus.clone());
    let mut spec = match (from_spec, address) {
        (Some(s), _) => s,
        (None, Some(a)) => serde_json::from_value(serde_json::json!({
            "address": a,
            "preset": "http",
        }))?,
        (None, None) => bail!(
            "a backtest reads recorded history from Prometheus: give --prometheus URL, or a \
             `metrics:` section with `provider: prometheus` in the spec"
        ),
    };
    if let Some(a) = address {
        spec.address = a.to_string();
    }
    let m = MetricsSpec {
        provider: MetricsProvider::Prometheus,
        prometheus: Some(spec.clone()),
        scrape: None,
        business: Vec::new(),
        thresholds: Vec::new(),
    };
    if let Some((path, value, rule)) = canary_prometheus::check(&m).into_iter().next() {
        bail!("{path}: `{value}`: {rule}");
    }
    Ok(spec)
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut policy = load_policy(Some(&args.spec))?;
    if let Some(j) = args.judge {
        policy.analysis.judge = j;
    }
    let spec = prometheus_spec(&policy, args.prometheus.as_deref())
        .with_context(|| format!("{}", args.spec.display()))?;
    let now = wall_now();
    let from = parse_time("--from", &args.from, now)?;
    let to = parse_time("--to", &args.to, now)?;
    let dt = policy.analysis.interval.as_secs_f64();
    if to < from + dt {
        bail!(
            "--from {} --to {}: the period must hold at least one analysis.interval ({})",
            args.from,
            args.to,
            humantime::format_duration(policy.analysis.interval)
        );
    }
    if let Some(p) = &args.plot {
        canary_sim::plot::Format::of(p)?;
    }
    // Evaluation times are given per window; the clock is never read.
    let clock: canary_prometheus::UnixClock = Arc::new(|| 0.0);
    let (business, thresholds) = policy
        .metrics
        .as_ref()
        .map(|m| (m.business.clone(), m.thresholds.clone()))
        .unwrap_or_default();
    let source = PrometheusSource::new(&spec, clock, policy.analysis.interval)
        .map_err(|(field, e)| anyhow!("{field}: {e}"))?
        .with_metrics(&business, &thresholds);
    let version = source.probe().map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "backtest of {} against Prometheus {version} at {}: {} → {}",
        policy.name,
        source.address(),
        rfc3339(from),
        rfc3339(to)
    );
    let looks = ((to - from) / dt).floor() as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(looks);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} looks (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let replay = Replay {
        source: &source,
        from,
        to,
        auto_promote_gates: !args.no_auto_promote,
        bar: &bar,
    };
    let result = rt.block_on(replay.run(Engine::new(policy)));
    bar.finish_and_clear();
    let (engine, mut timeline, ended_early) = result?;
    let report = engine.report();
    let rollout = &engine.observations().rollout;
    let exposure = Exposure {
        canary_requests: rollout.canary.requests,
        canary_errors: rollout.canary.errors,
    };
    if let Some(p) = &args.plot {
        let sim = Simulation {
            seed: 0,
            scenario: format!("backtest {} → {}", rfc3339(from), rfc3339(to)),
            report: report.clone(),
            exposure,
            timeline: timeline.clone(),
            simulated_requests: 0,
        };
        canary_sim::plot::timeline(&sim, p)
            .map_err(|e| anyhow!("cannot draw {}: {e}", p.display()))?;
        eprintln!("plot written to {}", p.display());
    }
    if args.json {
        if !args.timeline {
            timeline.clear();
        }
        print_json(&Backtest {
            prometheus: source.address(),
            from: rfc3339(from),
            to: rfc3339(to),
            ended_early,
            report: &report,
            exposure: &exposure,
            timeline: &timeline,
        })?;
    } else {
        print_summary(&report, from, ended_early.as_deref())?;
    }
    Ok(ExitCode::SUCCESS)
}

struct Replay<'a> {
    source: &'a PrometheusSource,
    from: f64,
    to: f64,
    auto_promote_gates: bool,
    bar: &'a ProgressBar,
}

impl Replay<'_> {
    /// Steps the engine through the period: (engine, timeline, why it
    /// stopped before the rollout ended).
    async fn run(&self, mut engine: Engine) -> Result<(Engine, Vec<TickRecord>, Option<String>)> {
        let dt = engine.policy().analysis.interval;
        let mut timeline = Vec::new();
        let mut now = Duration::ZERO;
        engine.apply(Event::Start, now)?;
        let ended_early = loop {
            match &engine.state().phase {
                Phase::Paused {
                    reason: PauseReason::Gate | PauseReason::Webhook { .. },
                    ..
                } if self.auto_promote_gates => {
                    engine.apply(Event::Promote, now)?;
                    continue;
                }
                Phase::Progressing { .. }
                | Phase::Paused {
                    reason: PauseReason::NoData { .. },
                    ..
                } => {}
                Phase::Paused { reason, .. } => {
                    break Some(format!("paused ({reason}): a person would decide here"));
                }
                _ => break None,
            }
            let start = self.from + now.as_secs_f64();
            let end = start + dt.as_secs_f64();
            if end > self.to + 1e-9 {
                break Some(format!("the history ends at {}", rfc3339(self.to)));
            }
            let weight = engine.state().weight;
            let window = self.source.window_between(start, end).await;
            now += dt;
            self.bar.inc(1);
            match window {
                Ok(w) => {
                    let summary = (w.baseline.summary(), w.canary.summary());
                    engine.observe(Some(w), now)?;
                    timeline.push(TickRecord {
                        t: now.as_secs_f64(),
                        weight,
                        baseline: summary.0,
                        canary: summary.1,
                        outcome: engine.last_verdict().map(|v| v.outcome),
                    });
                }
                Err(e) if e.is_permanent() => {
                    bail!("at {}: {}", rfc3339(end), chain(&e));
                }
                Err(e) => {
                    let empty = Pair::<VersionStats>::default();
                    engine.observe_missing(&format!("metrics source: {}", chain(&e)), now)?;
                    timeline.push(TickRecord {
                        t: now.as_secs_f64(),
                        weight,
                        baseline: empty.baseline.summary(),
                        canary: empty.canary.summary(),
                        outcome: None,
                    });
                }
            }
        };
        Ok((engine, timeline, ended_early))
    }
}

fn chain(e: &SourceError) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The decisions at their times in the past, and the outcome.
fn print_summary(report: &RolloutReport, from: f64, ended_early: Option<&str>) -> Result<()> {
    let mut out = String::new();
    for d in &report.decisions {
        let action = serde_json::to_value(d.action)?
            .as_str()
            .unwrap_or("?")
            .to_string();
        let stage = d
            .stage
            .map_or(String::new(), |s| format!(" stage {}", s + 1));
        out.push_str(&format!(
            "{}  {action:<8}{stage} weight {}% → {}%: {}\n",
            rfc3339(from + d.at_seconds),
            d.weight_before,
            d.weight_after,
            d.reason
        ));
    }
    let end = rfc3339(from + report.elapsed_seconds);
    out.push_str(&match report.phase.as_str() {
        "succeeded" => format!("would have promoted the canary to 100 % at {end}\n"),
        "rolled_back" => format!(
            "would have rolled back at {end}, in stage {} of {}: {}\n",
            report.stages_completed + 1,
            report.total_stages,
            report.rollback_reason
        ),
        "aborted" => format!("would have aborted at {end}: {}\n", report.rollback_reason),
        phase => format!(
            "still {phase} at {end}, weight {} % ({})\n",
            report.final_weight,
            ended_early.unwrap_or("the replay ended")
        ),
    });
    crate::common::write_stdout(&out)
}
