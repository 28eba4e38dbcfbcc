//! Turns bursts of `publish` calls into one live snapshot.
//!
//! Like istiod's debounce: after a publish, wait until no new publish arrived for
//! `debounce`, but never longer than `debounce_max` after the first one of the burst, so a
//! steady trickle of changes still reaches proxies. Only the last snapshot of a burst is
//! prepared (indexed and diffed), off the async threads.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error};

use super::prepared::Prepared;
use super::snapshot::{Snapshot, SnapshotUpdate};

/// The hand-off slot between `publish`/`update` and the debouncer.
pub(crate) type Pending = Arc<Mutex<Work>>;

/// What arrived since the last snapshot went live: the newest full snapshot, if any, and
/// the updates published after it, in order.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub full: Option<Snapshot>,
    pub updates: Vec<SnapshotUpdate>,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.full.is_none() && self.updates.is_empty()
    }
}

pub(crate) struct Debouncer {
    pub pending: Pending,
    /// Bumped by every publish; closed when the last `XdsServer` handle is dropped.
    pub signal: watch::Receiver<()>,
    pub live: watch::Sender<Option<Arc<Prepared>>>,
    pub debounce: Duration,
    pub debounce_max: Duration,
}

impl Debouncer {
    pub async fn run(mut self) {
        let mut generation = 0u64;
        let mut open = true;
        while open {
            if self.signal.changed().await.is_err() {
                break;
            }
            let burst_started = std::time::Instant::now();
            let deadline = Instant::now() + self.debounce_max;
            loop {
                let quiet = (Instant::now() + self.debounce).min(deadline);
                if self.debounce.is_zero() || quiet <= Instant::now() {
                    break;
                }
                tokio::select! {
                    _ = sleep_until(quiet) => break,
                    changed = self.signal.changed() => if changed.is_err() {
                        // Publish what we have, then stop.
                        open = false;
                        break;
                    },
                }
            }
            let work = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
            if work.is_empty() {
                continue;
            }
            generation += 1;
            let previous = self.live.borrow().clone();
            // Indexing and diffing a full snapshot is O(resources): keep it off the async
            // worker threads. Updates are O(changes) and cheap, but go the same way.
            let prepared = tokio::task::spawn_blocking(move || match work.full {
                Some(mut full) => {
                    full.apply(work.updates);
                    Prepared::new(full, generation, previous.as_deref())
                }
                None => Prepared::update(work.updates, generation, previous.as_deref()),
            })
            .await;
            match prepared {
                Ok(mut prepared) => {
                    prepared.changed_at = burst_started;
                    debug!(
                        generation,
                        version = prepared.version,
                        changed_types = prepared.changes.len(),
                        "snapshot live"
                    );
                    self.live.send_replace(Some(Arc::new(prepared)));
                }
                Err(e) => {
                    generation -= 1;
                    error!(error = %e, "preparing a snapshot panicked; still serving the previous one");
                }
            }
        }
    }
}
