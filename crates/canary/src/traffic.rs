//! `canary traffic`: the traffic layer a spec names, outside a rollout:
//! print the configuration canary expects (`render`) or set a weight by
//! hand (`set`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use canary_core::{Policy, TrafficProvider};
use canary_engine::TrafficActuator;

use crate::common::{load_policy, write_stdout};
use crate::live::runtime;

/// Print the nginx or HAProxy configuration a spec's traffic section needs,
/// or set its weight by hand (nginx, HAProxy, ALB, Kubernetes).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary traffic render --spec rollout.yaml > /etc/nginx/conf.d/canary-app.conf
  canary traffic render --spec rollout.yaml            # HAProxy: the backend section to paste
  canary traffic set --spec rollout.yaml --weight 0    # send everything back to stable, now
  canary traffic set --spec alb.yaml --weight 10       # ALB: 10 % to the canary target group
  canary traffic set --spec istio.yaml --weight 0      # Kubernetes: the VirtualService back to stable

`render` prints, for nginx, the include file at the given weight (write it
before nginx first loads it: `proxy_pass http://$<upstream>_route;` needs
it); for HAProxy, the backend section with both versions' servers and the
A/B routes (`--stable`/`--canary` fill in the servers' addresses).
`set` writes, checks and reloads nginx, or sets HAProxy's server weights
over the runtime API and reads them back, or sets an ALB listener's (or
rule's) target group weights and reads them back (a build with
`--features alb`; AWS credentials and region from the standard chain), or
the weights of a Kubernetes object (a build with `--features kubernetes`;
the cluster from the kubeconfig or the in-cluster service account); it
prints the split applied.")]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Print the configuration for the spec's traffic layer.
    Render {
        /// Rollout spec with a `traffic` section (nginx or haproxy).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// The canary's weight, percent (nginx).
        #[arg(long, default_value_t = 0.0)]
        weight: f64,
        /// HAProxy: the stable servers' addresses, in the order of
        /// `traffic.haproxy.stable`.
        #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
        stable: Vec<String>,
        /// HAProxy: the canary servers' addresses.
        #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
        canary: Vec<String>,
    },
    /// Set the canary's weight on the spec's traffic layer now.
    Set {
        /// Rollout spec with a `traffic` section (nginx, haproxy, alb,
        /// gateway-api, istio, ingress-nginx or smi).
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// The canary's weight, percent, in [0, 100].
        #[arg(long)]
        weight: f64,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.action {
        Action::Render {
            spec,
            weight,
            stable,
            canary,
        } => {
            let policy = load_policy(Some(&spec))?;
            check_weight(weight)?;
            let text = match layer_of(&policy, &spec)? {
                Layer::Nginx(n) => canary_traffic::Nginx::new(n).render(weight),
                Layer::Haproxy(h) => {
                    canary_traffic::Haproxy::new(h).backend_snippet(&stable, &canary)
                }
                Layer::Alb(_) => bail!(
                    "{}: traffic.provider: `alb`: an ALB has no configuration to render; \
                     `canary traffic set` sets its weights",
                    spec.display()
                ),
                Layer::Kube(p, _) => bail!(
                    "{}: traffic.provider: `{}`: canary changes the object in the cluster; \
                     `canary traffic set` sets its weights (docs/kubernetes.md has the objects' \
                     YAML)",
                    spec.display(),
                    p.name()
                ),
            };
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Set { spec, weight } => {
            let policy = load_policy(Some(&spec))?;
            check_weight(weight)?;
            let rt = runtime(Some(1))?;
            let (name, result) = match layer_of(&policy, &spec)? {
                Layer::Nginx(n) => (
                    "nginx",
                    rt.block_on(canary_traffic::Nginx::new(n).set_weight(weight)),
                ),
                Layer::Haproxy(h) => (
                    "haproxy",
                    rt.block_on(canary_traffic::Haproxy::new(h).set_weight(weight)),
                ),
                #[cfg(feature = "alb")]
                Layer::Alb(a) => (
                    "alb",
                    rt.block_on(canary_alb::Alb::new(a).set_weight(weight)),
                ),
                #[cfg(not(feature = "alb"))]
                Layer::Alb(_) => bail!(
                    "{}: traffic.provider: `alb` needs a canary built with the ALB provider: \
                     cargo build --release --features alb",
                    spec.display()
                ),
                #[cfg(feature = "kubernetes")]
                Layer::Kube(p, k) => {
                    let kind = canary_kube::kind_of(p)
                        .ok_or_else(|| anyhow!("traffic.provider: `{}`", p.name()))?;
                    canary_kube::check_kubeconfig(k)
                        .map_err(|e| anyhow!("{}: traffic.kubernetes: {e}", spec.display()))?;
                    (
                        p.name(),
                        rt.block_on(canary_kube::KubeTraffic::new(kind, k).set_weight(weight)),
                    )
                }
                #[cfg(not(feature = "kubernetes"))]
                Layer::Kube(p, _) => bail!(
                    "{}: traffic.provider: `{}` needs a canary built with the Kubernetes \
                     providers: cargo build --release --features kubernetes",
                    spec.display(),
                    p.name()
                ),
            };
            result.map_err(|e| anyhow!("{}: {e}", spec.display()))?;
            write_stdout(&format!("{name}: {weight} % to the canary, applied\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

enum Layer<'a> {
    Nginx(&'a canary_core::spec::NginxTraffic),
    Haproxy(&'a canary_core::spec::HaproxyTraffic),
    #[cfg_attr(not(feature = "alb"), allow(dead_code))]
    Alb(&'a canary_core::spec::AlbTraffic),
    Kube(
        TrafficProvider,
        #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
        &'a canary_core::spec::KubernetesTraffic,
    ),
}

fn layer_of<'a>(policy: &'a Policy, spec: &std::path::Path) -> Result<Layer<'a>> {
    let t = policy
        .traffic
        .as_ref()
        .ok_or_else(|| anyhow!("{}: no traffic section", spec.display()))?;
    match (t.provider, &t.nginx, &t.haproxy, &t.alb) {
        (TrafficProvider::Nginx, Some(n), _, _) => Ok(Layer::Nginx(n)),
        (TrafficProvider::Haproxy, _, Some(h), _) => Ok(Layer::Haproxy(h)),
        (TrafficProvider::Alb, _, _, Some(a)) => Ok(Layer::Alb(a)),
        (p, _, _, _) if p.is_kubernetes() && t.kubernetes.is_some() => {
            let k = t
                .kubernetes
                .as_ref()
                .ok_or_else(|| anyhow!("{}: no traffic.kubernetes", spec.display()))?;
            Ok(Layer::Kube(p, k))
        }
        (p, _, _, _) => bail!(
            "{}: traffic.provider: `{}`: `canary traffic` works on nginx, haproxy, alb and the \
             Kubernetes providers",
            spec.display(),
            p.name()
        ),
    }
}

fn check_weight(w: f64) -> Result<()> {
    if !(0.0..=100.0).contains(&w) {
        bail!("--weight {w}: must be a percentage in [0, 100]");
    }
    Ok(())
}
