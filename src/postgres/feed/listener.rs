//! The listener: one dedicated connection per store that runs `LISTEN`, fans notifications out
//! to subscribers, and reconnects when the connection is lost.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::payload;
use super::types::{ChangeFeedOptions, ChangeFilter, ChangeStream, FeedEvent};
use crate::error::{Error, Result};
use crate::postgres::pool::Connections;
use crate::postgres::secret::{redact, DatabaseUrl};
use crate::postgres::sql;

/// How long the listener waits without a notification before checking its connection with a
/// query: a connection lost without a TCP reset would otherwise go unnoticed.
const CHECK_IDLE_CONNECTION: Duration = Duration::from_secs(15);
/// `application_name` of the listener's connection.
pub(crate) const LISTENER_APPLICATION_NAME: &str = "synckit-awareness-listener";
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// A failover's new primary is found at most this long after it takes connections (one
/// connection attempt a second per instance while there is none: cheap).
const MAX_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Listener {
    events: broadcast::Sender<Arc<FeedEvent>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The store is gone: close the connection; the subscribers' streams end.
        self.task.abort();
    }
}

impl Listener {
    /// Connects and runs `LISTEN` before returning, so no change published afterwards is
    /// missed; a first connection failure is the caller's error.
    pub(super) async fn start(source: Source, options: &ChangeFeedOptions) -> Result<Self> {
        let conn = listen(&source, &options.channel).await?;
        let (events, _) = broadcast::channel(options.capacity);
        let task = tokio::spawn(run(source, options.channel.clone(), conn, events.clone()));
        Ok(Self { events, task })
    }

    pub(super) fn stream(&self, filter: ChangeFilter, own_origin: String) -> ChangeStream {
        let receiver = self.events.subscribe();
        futures_util::stream::unfold(
            (receiver, filter, own_origin),
            |(mut receiver, filter, own_origin)| async move {
                loop {
                    let event = match receiver.recv().await {
                        Ok(event) if filter.accepts(&event, &own_origin) => (*event).clone(),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => FeedEvent::Resync,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    return Some((event, (receiver, filter, own_origin)));
                }
            },
        )
        .boxed()
    }
}

/// Where the listener's connection comes from.
pub(super) enum Source {
    /// A dedicated connection of the store's pool (set up like the pooled ones).
    Pool(Connections),
    /// A URL of its own (a direct connection when the pool goes through a pooler).
    Url(DatabaseUrl),
}

/// A connection held for good (outside the pool), listening on `channel`.
async fn listen(source: &Source, channel: &str) -> Result<AsyncPgConnection> {
    let mut conn = match source {
        Source::Pool(connections) => connections.dedicated().await?,
        Source::Url(url) => crate::postgres::tls::connect(url.expose())
            .await
            .map_err(|e| Error::Connection(redact(&e.to_string())))?,
    };
    conn.batch_execute(&sql::session::listen(LISTENER_APPLICATION_NAME, channel))
        .await?;
    Ok(conn)
}

async fn run(
    source: Source,
    channel: String,
    mut conn: AsyncPgConnection,
    events: broadcast::Sender<Arc<FeedEvent>>,
) {
    loop {
        forward(&mut conn, &channel, &events).await;
        tracing::warn!(%channel, "awareness change feed: listener connection lost; reconnecting");
        let mut delay = FIRST_RETRY;
        conn = loop {
            tokio::time::sleep(delay).await;
            match listen(&source, &channel).await {
                Ok(conn) => break conn,
                Err(e) => {
                    tracing::warn!(error = %e, ?delay, "awareness change feed: cannot reconnect");
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        };
        // Listening again: whatever subscribers re-read from now on is not older than the
        // events that follow.
        ::metrics::counter!(crate::metrics::FEED_RESYNCS).increment(1);
        let _ = events.send(Arc::new(FeedEvent::Resync));
    }
}

/// Forwards notifications until the connection fails.
async fn forward(
    conn: &mut AsyncPgConnection,
    channel: &str,
    events: &broadcast::Sender<Arc<FeedEvent>>,
) {
    loop {
        let next = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::time::timeout(CHECK_IDLE_CONNECTION, notifications.next()).await
        };
        match next {
            Ok(Some(Ok(notification))) if notification.channel == channel => {
                match payload::parse(&notification.payload) {
                    Some(changes) => {
                        ::metrics::counter!(crate::metrics::FEED_DELIVERED)
                            .increment(changes.len() as u64);
                        for change in changes {
                            // No subscriber at the moment is not an error.
                            let _ = events.send(Arc::new(FeedEvent::Change(change)));
                        }
                    }
                    None => tracing::warn!(
                        %channel,
                        "awareness change feed: ignoring a notification that is not ours"
                    ),
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return,
            Err(_idle) => {
                if conn.batch_execute(sql::session::PING).await.is_err() {
                    return;
                }
            }
        }
    }
}
