//! `canary-server`: what `canary serve` is built on.
//!
//! - [`store`]: the [`Store`](store::Store) trait (one record per rollout,
//!   compare-and-set on its revision, an append-only gapless event log, a
//!   journal of the engine's inputs) and its embedded SQLite
//!   implementation, [`SqliteStore`](store::SqliteStore).
//! - [`Server`]: the HTTP API over any number of rollouts, each driven by a
//!   task of its own (`rollout`), recovered from the store at start.
//! - [`Token`]: the bearer token of the mutating endpoints.
//! - [`hooks`]: webhooks and notifications on the wire (the signature and
//!   [`hooks::verify`] for receivers, one bounded call, the bodies); the
//!   outbox's sender delivers what the store queued, at least once.
//! - `dashboard`: the web dashboard's files, embedded and served at `/`
//!   with a strict Content-Security-Policy ([`DASHBOARD_CSP`]); `history`:
//!   each rollout's evidence look by look, which its charts draw.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod auth;
mod commit;
mod dashboard;
mod driver;
mod history;
pub mod hooks;
mod metrics;
pub mod model;
mod outbox;
mod rollout;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use api::{openapi_json, MAX_BODY};
pub use auth::{Token, TokenOrigin};
pub use dashboard::CSP as DASHBOARD_CSP;
pub use driver::Driver;
pub use rollout::{Action, ApiError, WallClock};

use rollout::{Cmd, Ctx, Runner};
use store::Store;

/// How `canary serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The token of the mutating endpoints.
    pub token: Token,
    /// Require the token on the read endpoints too.
    pub auth_reads: bool,
    /// Seeds the built-in proxies' routing draws.
    pub seed: u64,
}

/// A bound server, its stored rollouts recovered.
pub struct Server {
    app: Arc<api::App>,
    listener: tokio::net::TcpListener,
    warnings: Vec<String>,
    /// The outbox's sender (notifications, `event` and `post-rollout`
    /// webhooks).
    sender: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Recovers every stored rollout (replaying its journal and setting its
    /// weight again), then binds the API.
    ///
    /// # Errors
    /// The store cannot be read, or the address cannot be bound. A stored
    /// rollout that cannot be recovered is a warning, not an error: it
    /// stays in the store as it was.
    pub async fn start(
        config: ServeConfig,
        store: Arc<dyn Store>,
        clock: WallClock,
    ) -> Result<Server, String> {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            committer: commit::Committer::start(store.clone()),
            clock,
            changes,
            counters: Mutex::new(Default::default()),
            seed: config.seed,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("--listen {}: {e}", config.listen))?;
        let app = Arc::new(api::App {
            ctx: ctx.clone(),
            rollouts: tokio::sync::Mutex::new(Default::default()),
            token: config.token,
            auth_reads: config.auth_reads,
            ready: AtomicBool::new(false),
        });
        let records = {
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.list())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        let mut warnings = Vec::new();
        {
            let mut map = app.rollouts.lock().await;
            for rec in records {
                let name = rec.name.clone();
                match Runner::recover(ctx.clone(), rec).await {
                    Ok(r) => {
                        map.insert(name, r.spawn());
                    }
                    Err(e) => warnings.push(format!("{e}; left in the store as it was")),
                }
            }
        }
        app.ready.store(true, Ordering::SeqCst);
        let sender = outbox::spawn(store, ctx.clock.clone(), ctx.outbox_wake.clone());
        Ok(Server {
            app,
            listener,
            warnings,
            sender,
        })
    }

    /// Where the API listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Stored rollouts that could not be recovered, in words.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many rollouts it drives.
    pub async fn rollouts(&self) -> usize {
        self.app.rollouts.lock().await.len()
    }

    /// Serves until `shutdown` completes, then stops every runner (their
    /// rollouts stay in the store, to be resumed by the next start).
    ///
    /// # Errors
    /// The listener failed.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let router = api::router(self.app.clone());
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| e.to_string())?;
        let entries: Vec<_> = self.app.rollouts.lock().await.values().cloned().collect();
        for e in entries {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if e.tx.send(Cmd::Stop { reply: tx }).await.is_ok() {
                let _ = rx.await;
            }
        }
        self.sender.abort();
        Ok(())
    }
}
