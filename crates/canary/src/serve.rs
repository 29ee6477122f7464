//! `canary serve`: the long-running controller with its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use canary_server::store::SqliteStore;
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
/// The first line on stdout is `canary serve listening on http://ADDR`.
/// Exit 0 after a signal, 2 for a bad flag, an unusable store or address.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  canary serve                                   # 127.0.0.1:7070, ./canary.db
  canary serve --listen 0.0.0.0:7070 --db /var/lib/canary/canary.db --token-file /etc/canary/token
  CANARY_TOKEN=$(cat token) canary serve --auth-reads

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

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
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
    };
    let rt = runtime(None)?;
    rt.block_on(async move {
        let server = Server::start(config, Arc::new(store), wall_clock())
            .await
            .map_err(|e| anyhow!(e))?;
        let addr = server
            .local_addr()
            .ok_or_else(|| anyhow!("cannot read the API's address"))?;
        announce(&format!("canary serve listening on http://{addr}"));
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
