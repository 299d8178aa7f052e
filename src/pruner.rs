//! The background pruner: removes expired entries on a period and reports each one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::entry::AwarenessEntry;
use crate::store::AwarenessStore;

/// A running pruner task. Stop it with [`shutdown`](Self::shutdown); dropping it stops it too.
#[must_use = "the pruner stops when this handle is dropped"]
#[derive(Debug)]
pub struct Pruner {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Pruner {
    /// Spawns a task on the current tokio runtime that, every `period`, atomically removes the
    /// store's expired entries ([`AwarenessStore::take_expired`]) and hands each removed entry to
    /// `on_expired`, so a server can broadcast the leave
    /// ([`AwarenessEntry::leave_update`]). A failed round (database down, say) is logged and
    /// retried at the next period; the task never dies of it.
    pub fn spawn<F>(store: Arc<dyn AwarenessStore>, period: Duration, mut on_expired: F) -> Self
    where
        F: FnMut(AwarenessEntry) + Send + 'static,
    {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A send or a dropped sender both mean stop.
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                match store.take_expired().await {
                    Ok(expired) => {
                        if !expired.is_empty() {
                            tracing::debug!(
                                count = expired.len(),
                                "pruned expired awareness entries"
                            );
                        }
                        expired.into_iter().for_each(&mut on_expired);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "awareness pruning failed; retrying next period");
                    }
                }
            }
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the task and waits for it; a round in progress finishes first.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may already be gone; nothing to stop then.
            let _ = stop.send(());
        }
        if let Err(error) = (&mut self.task).await {
            tracing::warn!(%error, "awareness pruner task ended abnormally");
        }
    }
}
