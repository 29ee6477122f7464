//! `canary-server`: what `canary serve` is built on.
//!
//! - [`store`]: the [`Store`](store::Store) trait (one record per rollout,
//!   compare-and-set on its revision, an append-only gapless event log, a
//!   journal of the engine's inputs) and its embedded SQLite
//!   implementation, [`SqliteStore`](store::SqliteStore); the distributed
//!   one on etcd, [`EtcdStore`](store::EtcdStore).
//! - [`ha`]: leader election on etcd leases, and the fencing of the
//!   leader's writes with its term (several replicas, one leader).
//! - [`etcd`]: the small blocking client of etcd's JSON gateway both use.
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
pub mod etcd;
pub mod ha;
mod history;
pub mod hooks;
mod metrics;
mod mirror;
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
    /// High availability: this replica's election (the store given to
    /// [`Server::start`] must fence its writes with the same one). `None`:
    /// the only server of its store, driving every rollout from the start.
    pub ha: Option<Arc<ha::Leadership>>,
}

/// A bound server, its stored rollouts recovered.
pub struct Server {
    app: Arc<api::App>,
    listener: tokio::net::TcpListener,
    warnings: Vec<String>,
    /// The outbox's sender (notifications, `event` and `post-rollout`
    /// webhooks); with high availability, the election's task, which
    /// runs the sender while it leads.
    sender: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Recovers every stored rollout (replaying its journal and setting its
    /// weight again), then binds the API. With high availability
    /// ([`ServeConfig::ha`]) it binds the API as a follower and campaigns;
    /// the rollouts are recovered, the same way, when it is elected.
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
            leadership: config.ha.clone(),
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
        if let Some(l) = &config.ha {
            if l.options().url.is_none() {
                if let Ok(a) = listener.local_addr() {
                    l.set_url(format!("http://{a}"));
                }
            }
            app.ready.store(true, Ordering::SeqCst);
            let sender = tokio::spawn(lead(app.clone(), l.clone()));
            return Ok(Server {
                app,
                listener,
                warnings: Vec::new(),
                sender,
            });
        }
        let warnings = recover_all(&app)
            .await?
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        app.ready.store(true, Ordering::SeqCst);
        let sender = outbox::spawn(ctx.clone());
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
        self.sender.abort();
        stop_all(&self.app).await;
        if let Some(l) = self.app.ctx.leadership.clone() {
            // Hand over at once rather than when the lease expires.
            let lease = l.step_down();
            let _ = tokio::task::spawn_blocking(move || l.revoke(lease)).await;
        }
        Ok(())
    }
}

/// Recovers every stored rollout that `app` does not drive yet into its
/// runners; the ones that cannot be recovered, each name with why.
async fn recover_all(app: &Arc<api::App>) -> Result<Vec<(String, String)>, String> {
    let ctx = app.ctx.clone();
    let records = {
        let s = ctx.store.clone();
        tokio::task::spawn_blocking(move || s.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let mut warnings = Vec::new();
    let mut map = app.rollouts.lock().await;
    for rec in records {
        let name = rec.name.clone();
        if map.contains_key(&name) {
            continue;
        }
        match Runner::recover(ctx.clone(), rec).await {
            Ok(r) => {
                map.insert(name, r.spawn());
            }
            Err(e) => warnings.push((name, format!("{e}; left in the store as it was"))),
        }
    }
    Ok(warnings)
}

/// Stops every runner (their rollouts stay in the store).
async fn stop_all(app: &api::App) {
    let entries: Vec<_> = std::mem::take(&mut *app.rollouts.lock().await)
        .into_values()
        .collect();
    for e in entries {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if e.tx.send(Cmd::Stop { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The election of one replica, for as long as the server runs: campaign
/// every interval (every half interval while another replica's lease is
/// timed, see [`ha::Leadership::next_look`]); once elected, keep the lease renewed while the
/// rollouts are recovered and driven (and the outbox sent); when the lease
/// cannot be renewed in time, or is gone, stop every rollout and campaign
/// again. See [`ha`] for the rules and why they are safe.
async fn lead(app: Arc<api::App>, l: Arc<ha::Leadership>) {
    let opts = l.options().clone();
    // The last failure said, so that an outage is said once, not every
    // interval.
    let mut said = String::new();
    // A follower's watchers see the store's changes through a task of its
    // own (its looks at the store must not delay the election's).
    let _mirror = AbortOnDrop(tokio::spawn(mirror::follow(app.clone(), l.clone())));
    loop {
        let c = l.clone();
        let won = match tokio::task::spawn_blocking(move || c.campaign()).await {
            Ok(Ok(ha::Campaign::Won(term))) => term,
            Ok(Ok(ha::Campaign::Held(..))) => {
                said.clear();
                tokio::time::sleep(l.next_look()).await;
                continue;
            }
            Ok(Err(e)) => {
                let e = format!("election: cannot campaign: {e}");
                if e != said {
                    eprintln!("{e}");
                    said = e;
                }
                tokio::time::sleep(opts.interval).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(opts.interval).await;
                continue;
            }
        };
        match l.take_revoked() {
            Some(was) => eprintln!(
                "elected leader (term {won}) after revoking the expired lease of `{was}`: resuming the stored rollouts"
            ),
            None => eprintln!("elected leader (term {won}): resuming the stored rollouts"),
        }
        let mut renewer = tokio::spawn(renew(l.clone()));
        let ctx = &app.ctx;
        let sender = outbox::spawn(ctx.clone());
        // Rollouts that could not be recovered (etcd failing a read, say)
        // are tried again every interval while this replica leads; each
        // failure is said once.
        let mut said = std::collections::BTreeSet::new();
        let mut pending = true;
        let why = loop {
            if pending {
                match recover_all(&app).await {
                    Ok(failed) => {
                        pending = !failed.is_empty();
                        for (name, w) in failed {
                            if said.insert(name) {
                                eprintln!("warning: {w}");
                            }
                        }
                    }
                    Err(e) => {
                        if said.insert(String::new()) {
                            eprintln!("cannot read the stored rollouts (trying again): {e}");
                        }
                    }
                }
            }
            tokio::select! {
                r = &mut renewer => {
                    break r.unwrap_or_else(|_| "the renewal task stopped".into());
                }
                _ = tokio::time::sleep(opts.interval), if pending => {}
            }
        };
        sender.abort();
        stop_all(&app).await;
        let lease = l.step_down();
        eprintln!("stepped down (term {won}): {why}");
        let r = l.clone();
        // Frees the key at once if etcd can still be reached; otherwise it
        // expires with its TTL.
        let _ = tokio::time::timeout(
            opts.interval,
            tokio::task::spawn_blocking(move || r.revoke(lease)),
        )
        .await;
    }
}

/// A task stopped with the one that holds this.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the leader's lease every [`ha::HaOptions::renew_every`] until it
/// cannot be renewed in time or is gone; says why.
async fn renew(l: Arc<ha::Leadership>) -> String {
    let opts = l.options().clone();
    loop {
        tokio::time::sleep(opts.renew_every()).await;
        if !l.acting() {
            return format!("no renewal of the lease for {:?}", opts.step_down_after());
        }
        let c = l.clone();
        let r = tokio::time::timeout(
            opts.step_down_after(),
            tokio::task::spawn_blocking(move || c.renew()),
        )
        .await;
        match r {
            Ok(Ok(Ok(true))) => {}
            Ok(Ok(Ok(false))) => return "the lease is gone (expired or revoked)".into(),
            Ok(Ok(Err(e))) => eprintln!("lease renewal: {e}"),
            Ok(Err(_)) | Err(_) => eprintln!("lease renewal: no answer in time"),
        }
    }
}
