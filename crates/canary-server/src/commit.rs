//! Group commit: the rollouts' writes go to one thread that makes every
//! write queued meanwhile durable in one transaction
//! ([`Store::update_many`]): one sync to disk for many rollouts' ticks,
//! and no write waits longer than one commit for its turn.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError, Update, Written};

/// How long the thread waits after the first write of a batch for more,
/// and again after each wait that brought more: a batch closes after a
/// pause this long in the writes.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);
/// The most waits a batch stays open for (about 50 ms): the rollouts that
/// tick at the same instant queue their writes over tens of milliseconds
/// (one tick's work after another on the runtime's threads), and one
/// transaction for all of them writes each shared page of the file once
/// rather than once per partial batch.
const MAX_WAITS: u32 = 25;

/// The most writes one transaction carries.
const MAX_BATCH: usize = 1024;

type Job = (Update, oneshot::Sender<Result<Written, StoreError>>);

/// The sender side; the thread stops when every sender is gone.
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the committing thread over `store`.
    pub(crate) fn start(store: Arc<dyn Store>) -> Committer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("canary-store".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    // Ticks of many rollouts fall on the same instants
                    // (they are aligned): waiting while more keep coming
                    // gathers them.
                    for _ in 0..MAX_WAITS {
                        std::thread::sleep(COALESCE);
                        let before = jobs.len();
                        while jobs.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(j) => jobs.push(j),
                                Err(_) => break,
                            }
                        }
                        if jobs.len() == before || jobs.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    let (updates, replies): (Vec<Update>, Vec<_>) = jobs.into_iter().unzip();
                    let results = store.update_many(&updates);
                    for (r, reply) in results.into_iter().zip(replies) {
                        let _ = reply.send(r);
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every write fails (fail safe: no weight
            // moves); say so once.
            eprintln!("cannot start the store thread: {e}");
        }
        Committer { tx }
    }

    /// Writes `u` with whatever else is queued; durable when it returns `Ok`.
    pub(crate) async fn update(&self, u: Update) -> Result<Written, StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Backend {
            message: "the store thread has stopped".into(),
            source: "no committer".into(),
        };
        self.tx.send((u, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}
