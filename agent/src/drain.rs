//! Graceful shutdown: count live connections and wait for them to finish.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::Notify;

/// Tracks in-flight connections. Each connection holds a [`DrainGuard`].
#[derive(Default)]
pub struct Drain {
    active: AtomicUsize,
    idle: Notify,
    stopping: AtomicBool,
    stop: Notify,
}

pub struct DrainGuard(Arc<Drain>);

impl Drain {
    pub fn guard(self: &Arc<Self>) -> DrainGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.clone())
    }

    /// Draining starts: long-lived connections that can be told to go away (HBONE
    /// connections get a GOAWAY) are told now.
    pub fn begin(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// Resolves once draining has begun.
    pub async fn stopping(&self) {
        loop {
            let notified = self.stop.notified();
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until no connection is left or `timeout` passes; returns how many remain.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            let n = self.active();
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active();
            }
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_last_connection_or_the_deadline() {
        let drain = Arc::new(Drain::default());
        let g1 = drain.guard();
        let g2 = drain.guard();
        let d = drain.clone();
        let waiter = tokio::spawn(async move { d.wait_idle(Duration::from_secs(10)).await });
        drop(g1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        drop(g2);
        assert_eq!(waiter.await.unwrap(), 0);

        let _g3 = drain.guard();
        assert_eq!(drain.wait_idle(Duration::from_secs(5)).await, 1, "deadline passes with one left");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_resolves_for_waiters_before_and_after_it_begins() {
        let drain = Arc::new(Drain::default());
        let d = drain.clone();
        let early = tokio::spawn(async move { d.stopping().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!early.is_finished());
        drain.begin();
        early.await.unwrap();
        drain.stopping().await;
    }
}
