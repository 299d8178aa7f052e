//! The instance's document notifications (`<id>:<document_id>` on [`CHANNEL`]), received on
//! the presence engine's listening session (`ChangeFeedOptions::also_listen`): each makes that
//! room catch up from the database. When that session was lost and listens again
//! (`ChannelEvent::Resync`), every open room resyncs, so a notification missed meanwhile costs
//! a delay, never an update.
//!
//! Why not a session of its own, as before issue 27: PostgreSQL wakes every listening session
//! of a database for each `NOTIFY`, whatever its channel, so a second session per instance
//! was woken by every presence move of every instance (measured: each listening session costs
//! PostgreSQL 20-25 µs per `NOTIFY`).

use std::sync::Arc;

use futures_util::StreamExt;
use synckit_awareness::{ChannelEvent, ChannelStream};
use tokio::sync::watch;

use super::{Documents, CHANNEL};

/// Follows `notifications` (the [`CHANNEL`] subscription) until `shutdown` turns true or the
/// stream ends; every open room resyncs first.
pub fn listen(
    documents: Arc<Documents>,
    mut notifications: ChannelStream,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Anything appended before the subscription started.
        documents.resync_all();
        loop {
            tokio::select! {
                next = notifications.next() => match next {
                    Some(ChannelEvent::Notification(payload)) => appended(&documents, &payload),
                    Some(ChannelEvent::Resync) => {
                        metrics::counter!("relay_documents_listener_reconnects_total").increment(1);
                        tracing::warn!(channel = CHANNEL, "the listener reconnected; every open room resyncs");
                        // Anything appended while no session listened, and after a failover
                        // whatever the new primary lacks.
                        documents.resync_all();
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    })
}

fn appended(documents: &Documents, payload: &str) {
    match payload
        .split_once(':')
        .and_then(|(id, document)| Some((id.parse::<i64>().ok()?, document)))
    {
        Some((id, document)) => documents.appended(document, id),
        _ => tracing::warn!(%payload, "ignoring a notification that is not <id>:<document_id>"),
    }
}
