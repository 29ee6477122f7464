//! `canary demo-backend`: a small HTTP server with injectable faults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use canary_demo::backend::{Backend, BackendConfig};

/// Serve HTTP with injected errors and latency, for demos, tests and benchmarks.
///
/// Prints `listening on http://ADDR` on stdout as its first line (so that
/// `--port 0` can be used and the port read back), then serves until SIGINT
/// or SIGTERM, letting in-flight requests finish.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary demo-backend --port 9001                          # healthy
  canary demo-backend --port 9002 --error-rate 0.05 --latency-ms 40 --jitter-ms 20
  canary demo-backend --port 0 --name canary               # any free port; read it from stdout

Every request except /healthz waits latency + U(0, jitter) and answers 500 with
probability --error-rate, else 200 with the backend's name.")]
pub struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Probability of answering 500, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fixed delay before every answer, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Extra uniform random delay, up to this many milliseconds.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Seed of the fault draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name in the body and the x-backend header.
    #[arg(long, default_value = "backend")]
    name: String,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn millis(what: &str, ms: f64) -> Result<Duration> {
    if !(ms >= 0.0 && ms.is_finite() && ms < 3.6e6) {
        bail!("--{what} must be a number of milliseconds in [0, 3600000), not {ms}");
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate must be a probability in [0, 1], not {}",
            args.error_rate
        );
    }
    let config = BackendConfig {
        listen: SocketAddr::new(args.bind, args.port),
        name: args.name.clone(),
        error_rate: args.error_rate,
        latency: millis("latency-ms", args.latency_ms)?,
        jitter: millis("jitter-ms", args.jitter_ms)?,
        seed: args.seed,
    };
    let rt = crate::live::runtime(args.threads)?;
    rt.block_on(async move {
        let backend = Backend::bind(config).await?;
        let addr = backend
            .local_addr()
            .ok_or_else(|| anyhow::anyhow!("cannot read the bound address"))?;
        crate::live::announce(&format!("listening on http://{addr}"));
        backend.serve(crate::live::shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}
