//! `canary serve`: the long-running controller with its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use canary_core::spec::TlsSpec;
use canary_server::etcd::{parse_endpoints, Client};
use canary_server::ha::{HaOptions, Leadership};
use canary_server::store::{EtcdStore, SqliteStore};
use canary_server::{ServeConfig, Server, Token, TokenOrigin, WallClock};

use crate::live::{announce, runtime, shutdown_signal};

/// Serve the canary API: drive any number of rollouts, survive restarts.
///
/// Each rollout is a spec of the shape `canary run` reads, posted to
/// `POST /api/v1/rollouts` (or `canary rollouts apply -f SPEC`). Rollouts,
/// their decision logs and the journal that rebuilds each judge's evidence
/// live in one SQLite file (`--db`): after any stop, kill -9 included, the
/// next `canary serve` on the same file resumes every unfinished rollout
/// where it was and sets its weight again. SIGINT/SIGTERM stop the server
/// without touching the rollouts.
///
/// Mutating calls need `Authorization: Bearer <token>`. The token is read
/// from `--token-file`, else `CANARY_TOKEN`, else `<db>.token`; when none
/// exists one is generated, written to `<db>.token` (mode 0600) and
/// printed once.
///
/// With `--store etcd`, rollouts live on an etcd cluster instead and
/// several replicas share them: one leader (elected with an etcd lease of
/// `--lease-ttl`) drives every rollout; the others serve reads and
/// answer writes with 503 and who leads, and one of them takes over
/// within the TTL when the leader is gone. Every replica needs the same
/// token (`--token-file` or CANARY_TOKEN). See docs/ha.md.
///
/// The first line on stdout is `canary serve listening on http://ADDR`.
/// Exit 0 after a signal, 2 for a bad flag, an unusable store or address.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary serve                                   # 127.0.0.1:7070, ./canary.db
  canary serve --listen 0.0.0.0:7070 --db /var/lib/canary/canary.db --token-file /etc/canary/token
  CANARY_TOKEN=$(cat token) canary serve --auth-reads
  canary serve --store etcd --etcd-endpoints http://e1:2379,http://e2:2379,http://e3:2379
  canary serve --store etcd --etcd-endpoints ... --advertise-url http://10.0.0.4:7070  # docs/ha.md
  canary serve --store etcd --etcd-endpoints https://e1:2379,... --etcd-ca-file ca.pem --etcd-cert-file client.pem --etcd-key-file client-key.pem

Then:
  export CANARY_SERVER=http://127.0.0.1:7070 CANARY_TOKEN=$(cat canary.db.token)
  canary rollouts apply -f rollout.yaml
  canary rollouts watch checkout

See docs/serve.md for the API.")]
pub struct Args {
    /// Address of the API (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// The store: a SQLite file, created if missing.
    #[arg(long, value_name = "FILE", default_value = "canary.db")]
    db: PathBuf,
    /// File holding the API token (otherwise CANARY_TOKEN, else <db>.token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Require the token on the read endpoints too (GET, watch, /metrics).
    #[arg(long)]
    auth_reads: bool,
    /// Where rollouts are stored: `sqlite` (one file, `--db`; one server)
    /// or `etcd` (a cluster, `--etcd-endpoints`; several replicas, one
    /// leader).
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// etcd's client URLs, comma-separated (with `--store etcd`).
    #[arg(long, value_name = "URL,URL,...")]
    etcd_endpoints: Option<String>,
    /// CA certificate(s) (PEM) to trust for `https://` etcd endpoints
    /// (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to show etcd (its `--client-cert-auth`);
    /// with `--etcd-key-file`.
    #[arg(long, value_name = "FILE")]
    etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    etcd_key_file: Option<PathBuf>,
    /// Prefix of every key canary writes on etcd (several installations
    /// can share a cluster).
    #[arg(long, value_name = "PREFIX", default_value = "/canary/")]
    etcd_prefix: String,
    /// Time to live of the leader's lease, whole seconds, at least 2: a
    /// dead leader is replaced within it (plus half `--campaign-interval`
    /// and a few round trips to etcd).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// How often a follower looks whether it can lead (twice as often
    /// while another replica leads, to time its lease).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    campaign_interval: std::time::Duration,
    /// This replica's name in the election (default: host name and PID).
    #[arg(long, value_name = "NAME")]
    replica_id: Option<String>,
    /// The URL other replicas' refusals point clients to (default:
    /// http:// and the listen address).
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
}

/// Where `canary serve` stores its rollouts.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// One SQLite file.
    Sqlite,
    /// An etcd cluster, with leader election.
    Etcd,
}

/// The wall clock: the binary is the edge that reads it.
pub fn wall_clock() -> WallClock {
    Arc::new(|| {
        #[allow(clippy::disallowed_methods)] // canary serve's one clock
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// `<db>.token`.
fn default_token_file(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".token");
    PathBuf::from(s)
}

/// Keeps a second server off the same store: an exclusive lock on
/// `<db>.lock`, held while the process lives.
fn lock_store(db: &Path) -> Result<std::fs::File> {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    let path = PathBuf::from(s);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.try_lock().map_err(|_| {
        anyhow!(
            "{}: another canary serve is using this store (lock {} is held)",
            db.display(),
            path.display()
        )
    })?;
    Ok(f)
}

/// A monotonic clock for the election: the binary is the edge that reads
/// it.
fn monotonic() -> canary_server::ha::Monotonic {
    #[allow(clippy::disallowed_methods)] // the election's one clock
    let origin = std::time::Instant::now();
    Arc::new(move || origin.elapsed())
}

/// The etcd store and this replica's election, from the flags.
fn etcd_store(args: &Args) -> Result<(EtcdStore, Arc<Leadership>)> {
    let raw = args
        .etcd_endpoints
        .as_deref()
        .ok_or_else(|| anyhow!("--store etcd needs --etcd-endpoints URL,URL,..."))?;
    let endpoints = parse_endpoints(raw).map_err(|e| anyhow!("--etcd-endpoints: {e}"))?;
    let tls = etcd_tls(args, &endpoints)?;
    let ttl = args.lease_ttl;
    if ttl.subsec_nanos() != 0 || ttl.as_secs() < 2 {
        return Err(anyhow!(
            "--lease-ttl {}: etcd leases are whole seconds, at least 2",
            humantime::format_duration(ttl)
        ));
    }
    if args.campaign_interval.is_zero() || args.campaign_interval > ttl {
        return Err(anyhow!(
            "--campaign-interval {}: more than 0 and at most --lease-ttl",
            humantime::format_duration(args.campaign_interval)
        ));
    }
    if !args.etcd_prefix.starts_with('/') {
        return Err(anyhow!(
            "--etcd-prefix {:?}: starts with `/` (for example /canary/)",
            args.etcd_prefix
        ));
    }
    if let Some(u) = &args.advertise_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(anyhow!("--advertise-url {u:?}: an http:// or https:// URL"));
        }
    }
    // A request to etcd waits at most half the step-down margin.
    let timeout = (ttl / 4).min(std::time::Duration::from_secs(2));
    let id = args.replica_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "canary".into());
        format!("{host}-{}", std::process::id())
    });
    let opts = HaOptions {
        id,
        url: args.advertise_url.clone(),
        ttl,
        interval: args.campaign_interval,
        clock: monotonic(),
    };
    let client =
        || Client::with_tls(endpoints.clone(), timeout, tls.as_ref()).map_err(|e| anyhow!(e));
    let leadership = Arc::new(Leadership::new(client()?, &args.etcd_prefix, opts));
    if let Some(u) = &args.advertise_url {
        leadership.set_url(u.clone());
    }
    let store = EtcdStore::connect_with(client()?, &args.etcd_prefix, Some(leadership.clone()))
        .map_err(|e| anyhow!("--etcd-endpoints {raw}: cannot reach etcd: {}", chain(&e)))?;
    Ok((store, leadership))
}

/// The TLS flags for etcd, checked: a certificate needs its key and the
/// other way round, and they are for `https://` endpoints.
fn etcd_tls(args: &Args, endpoints: &[String]) -> Result<Option<TlsSpec>> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let (ca, cert, key) = (
        path(&args.etcd_ca_file),
        path(&args.etcd_cert_file),
        path(&args.etcd_key_file),
    );
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    match (&cert, &key) {
        (Some(_), None) => {
            return Err(anyhow!(
                "--etcd-cert-file needs --etcd-key-file (its private key)"
            ))
        }
        (None, Some(_)) => {
            return Err(anyhow!(
                "--etcd-key-file needs --etcd-cert-file (the certificate it goes with)"
            ))
        }
        _ => {}
    }
    if !endpoints.iter().any(|e| e.starts_with("https://")) {
        let flag = if ca.is_some() {
            "--etcd-ca-file"
        } else {
            "--etcd-cert-file"
        };
        return Err(anyhow!(
            "{flag}: TLS is for https:// endpoints, and --etcd-endpoints has none (write https://host:port)"
        ));
    }
    Ok(Some(TlsSpec {
        ca_file: ca,
        cert_file: cert,
        key_file: key,
        insecure_skip_verify: false,
    }))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(": ");
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.store == StoreKind::Etcd {
        return run_etcd(args);
    }
    if args.etcd_endpoints.is_some() {
        return Err(anyhow!(
            "--etcd-endpoints is for --store etcd (the store is sqlite, --db)"
        ));
    }
    let lock = lock_store(&args.db)?;
    let store = SqliteStore::open(&args.db).map_err(|e| anyhow!("--db: {e}"))?;
    let (token, origin) = Token::load(
        args.token_file.as_deref(),
        std::env::var("CANARY_TOKEN").ok(),
        &default_token_file(&args.db),
    )
    .map_err(|e| anyhow!(e))?;
    let config = ServeConfig {
        listen: args.listen,
        token: token.clone(),
        auth_reads: args.auth_reads,
        seed: crate::live::seed(),
        ha: None,
    };
    let rt = runtime(None)?;
    rt.block_on(async move {
        let (server, addr) = start(config, Arc::new(store)).await?;
        eprintln!("dashboard: http://{addr}/");
        match &origin {
            TokenOrigin::Generated(f) => eprintln!(
                "generated an API token, stored in {} (mode 0600); shown this once:\n  {}",
                f.display(),
                token.expose()
            ),
            TokenOrigin::File(f) => eprintln!("API token read from {}", f.display()),
            TokenOrigin::Env => eprintln!("API token read from CANARY_TOKEN"),
        }
        for w in server.warnings() {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "store {}: {} rollout(s) resumed; SIGINT/SIGTERM stop the server (rollouts stay stored)",
            args.db.display(),
            server.rollouts().await
        );
        server
            .serve(shutdown_signal())
            .await
            .map_err(|e| anyhow!(e))?;
        eprintln!("stopped; every rollout is in {}", args.db.display());
        Ok::<_, anyhow::Error>(())
    })?;
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Starts the server on `store` and announces its address.
async fn start(
    config: ServeConfig,
    store: Arc<dyn canary_server::store::Store>,
) -> Result<(Server, SocketAddr)> {
    let server = Server::start(config, store, wall_clock())
        .await
        .map_err(|e| anyhow!(e))?;
    let addr = server
        .local_addr()
        .ok_or_else(|| anyhow!("cannot read the API's address"))?;
    announce(&format!("canary serve listening on http://{addr}"));
    Ok((server, addr))
}

/// `canary serve --store etcd`: one replica of several.
fn run_etcd(args: Args) -> Result<ExitCode> {
    // Every replica must take the same token: none is generated here.
    let token = match (&args.token_file, std::env::var("CANARY_TOKEN").ok()) {
        (None, None) => {
            return Err(anyhow!(
                "--store etcd needs the replicas' shared token: --token-file FILE or CANARY_TOKEN"
            ))
        }
        (file, env) => {
            Token::load(file.as_deref(), env, std::path::Path::new("/nonexistent"))
                .map_err(|e| anyhow!(e))?
                .0
        }
    };
    let (store, leadership) = etcd_store(&args)?;
    let config = ServeConfig {
        listen: args.listen,
        token,
        auth_reads: args.auth_reads,
        seed: crate::live::seed(),
        ha: Some(leadership.clone()),
    };
    let rt = runtime(None)?;
    rt.block_on(async move {
        let (server, _) = start(config, Arc::new(store)).await?;
        eprintln!(
            "store etcd {} (prefix {}): replica `{}`, lease TTL {}; a follower until elected",
            args.etcd_endpoints.as_deref().unwrap_or_default(),
            args.etcd_prefix,
            leadership.options().id,
            humantime::format_duration(args.lease_ttl)
        );
        server
            .serve(shutdown_signal())
            .await
            .map_err(|e| anyhow!(e))?;
        eprintln!("stopped; the rollouts are on etcd, driven by the next leader");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
