//! `canary proxy`: the built-in proxy alone, at a fixed weight.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use canary_proxy::Proxy;

use crate::live::{announce, runtime, shutdown_signal, unless_signalled, ProxyArgs};

/// Run the built-in weighted proxy at a fixed canary weight (no rollout).
///
/// For benchmarks, manual A/B splits and trying the proxy's options. Clients
/// may speak HTTP/1.1 or h2c (HTTP/2 with prior knowledge) on the same port;
/// upstreams are spoken to in HTTP/1.1. Prints
/// `listening on http://ADDR` (and `admin on http://ADDR`) on stdout, then
/// serves until SIGINT or SIGTERM and drains in-flight requests.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary proxy --listen 127.0.0.1:8080 --stable http://127.0.0.1:9001 \\
               --canary http://127.0.0.1:9002 --weight 10 --admin 127.0.0.1:9090
  curl -H 'x-canary: canary' http://127.0.0.1:8080/      # force the canary
  curl --http2-prior-knowledge http://127.0.0.1:8080/    # h2c
  curl http://127.0.0.1:9090/metrics                     # Prometheus text")]
pub struct Args {
    /// Address to serve traffic on (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// URL of the stable version.
    #[arg(long, value_name = "URL")]
    stable: String,
    /// URL of the canary version.
    #[arg(long, value_name = "URL")]
    canary: String,
    /// Percentage of traffic sent to the canary.
    #[arg(long, default_value_t = 0.0)]
    weight: f64,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut config = args
        .proxy
        .config(&args.listen, &args.stable, &args.canary)?;
    config.initial_weight = args.weight;
    // Traffic is served on the proxy's own worker threads (--threads); this
    // runtime only waits for signals and serves the admin port.
    let rt = runtime(Some(1))?;
    rt.block_on(async move {
        let proxy = Proxy::bind(config).await?;
        let addr = proxy
            .local_addr()
            .ok_or_else(|| anyhow!("cannot read the bound address"))?;
        announce(&format!("listening on http://{addr}"));
        if let Some(a) = proxy.admin_addr() {
            announce(&format!("admin on http://{a}"));
        }
        if unless_signalled(2, proxy.serve(shutdown_signal())).await {
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::from(130))
        }
    })
}
