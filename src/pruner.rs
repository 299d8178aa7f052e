//! The background pruner: removes departed entries (expired ones, and those of instances
//! whose lease lapsed) on a period and reports each one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::entry::{AwarenessEntry, Departed};
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
    /// store's departed entries ([`AwarenessStore::take_departed`]: the expired ones and, on
    /// PostgreSQL, every entry of an instance whose lease lapsed) and hands each removed entry
    /// to `on_departed`, so a server can broadcast the leave
    /// ([`AwarenessEntry::leave_update`]). Each entry is handed to exactly one pruner, however
    /// many run on the database. A failed round (database down, say) is logged and retried at
    /// the next period; the task never dies of it.
    pub fn spawn<F>(store: Arc<dyn AwarenessStore>, period: Duration, mut on_departed: F) -> Self
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
                match store.take_departed().await {
                    Ok(departed) => {
                        report(&departed);
                        departed.into_entries().for_each(&mut on_departed);
                    }
                    Err(error) => {
                        ::metrics::counter!(crate::metrics::PRUNE_FAILURES).increment(1);
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

/// Logs and counts what a round removed.
fn report(departed: &Departed) {
    if departed.is_empty() {
        return;
    }
    ::metrics::counter!(crate::metrics::PRUNED, "reason" => "expired")
        .increment(departed.expired.len() as u64);
    ::metrics::counter!(crate::metrics::PRUNED, "reason" => "abandoned")
        .increment(departed.abandoned.len() as u64);
    let mut instances: Vec<&str> = departed
        .abandoned
        .iter()
        .filter_map(|e| e.instance_id.as_deref())
        .collect();
    instances.sort_unstable();
    instances.dedup();
    if !instances.is_empty() {
        ::metrics::counter!(crate::metrics::LEASE_TAKEOVERS, "side" => "taken")
            .increment(instances.len() as u64);
        tracing::info!(
            instances = ?instances,
            entries = departed.abandoned.len(),
            "took over the entries of instances whose lease lapsed"
        );
    }
    tracing::debug!(
        expired = departed.expired.len(),
        abandoned = departed.abandoned.len(),
        "pruned awareness entries"
    );
}
