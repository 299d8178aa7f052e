//! The listener: one dedicated connection per store that runs `LISTEN`, fans notifications out
//! to subscribers, and reconnects when the connection is lost.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::payload;
use super::types::{
    ChangeFeedOptions, ChangeFilter, ChangeStream, ChannelEvent, ChannelStream, FeedEvent,
};
use crate::error::{Error, Result};
use crate::postgres::pool::Connections;
use crate::postgres::secret::{redact, DatabaseUrl};
use crate::postgres::sql;

/// How long the listener waits without a notification before checking its connection with a
/// query: a connection lost without a TCP reset would otherwise go unnoticed.
const CHECK_IDLE_CONNECTION: Duration = Duration::from_secs(15);
/// A failover's new primary is found at most this long after it takes connections (one
/// connection attempt a second per instance while there is none: cheap).
const MAX_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Listener {
    events: broadcast::Sender<Arc<FeedEvent>>,
    /// Notifications of the other channels (`also_listen`), by channel; `None`: a resync, for
    /// every channel.
    others: broadcast::Sender<Arc<(Option<String>, ChannelEvent)>>,
    task: JoinHandle<()>,
}

/// What the listener's task works with.
struct Channels {
    options: ChangeFeedOptions,
    events: broadcast::Sender<Arc<FeedEvent>>,
    others: broadcast::Sender<Arc<(Option<String>, ChannelEvent)>>,
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
        let conn = listen(&source, options).await?;
        let (events, _) = broadcast::channel(options.capacity);
        let (others, _) = broadcast::channel(options.capacity);
        let channels = Channels {
            options: options.clone(),
            events: events.clone(),
            others: others.clone(),
        };
        let task = tokio::spawn(run(source, channels, conn));
        Ok(Self {
            events,
            others,
            task,
        })
    }

    /// The notifications of `channel`, one of `also_listen`.
    pub(super) fn channel_stream(&self, channel: String) -> ChannelStream {
        let receiver = self.others.subscribe();
        futures_util::stream::unfold((receiver, channel), |(mut receiver, channel)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(event) => match &*event {
                        (Some(c), event) if *c == channel => event.clone(),
                        (None, event) => event.clone(),
                        _ => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => ChannelEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((event, (receiver, channel)));
            }
        })
        .boxed()
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

/// A connection held for good (outside the pool), listening on the feed's channel and the
/// others.
async fn listen(source: &Source, options: &ChangeFeedOptions) -> Result<AsyncPgConnection> {
    let mut conn = match source {
        Source::Pool(connections) => connections.dedicated().await?,
        Source::Url(url) => crate::postgres::tls::connect(url.expose())
            .await
            .map_err(|e| Error::Connection(redact(&e.to_string())))?,
    };
    let channels: Vec<&str> = std::iter::once(options.channel.as_str())
        .chain(options.also_listen.iter().map(String::as_str))
        .collect();
    conn.batch_execute(&sql::session::listen(&options.listener_name, &channels))
        .await?;
    Ok(conn)
}

async fn run(source: Source, channels: Channels, mut conn: AsyncPgConnection) {
    let channel = &channels.options.channel;
    loop {
        forward(&mut conn, &channels).await;
        tracing::warn!(%channel, "awareness change feed: listener connection lost; reconnecting");
        let mut delay = channels.options.reconnect_delay;
        conn = loop {
            tokio::time::sleep(delay).await;
            match listen(&source, &channels.options).await {
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
        let _ = channels.events.send(Arc::new(FeedEvent::Resync));
        let _ = channels.others.send(Arc::new((None, ChannelEvent::Resync)));
    }
}

/// Forwards notifications until the connection fails.
async fn forward(conn: &mut AsyncPgConnection, channels: &Channels) {
    let (channel, events) = (&channels.options.channel, &channels.events);
    loop {
        let next = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::time::timeout(CHECK_IDLE_CONNECTION, notifications.next()).await
        };
        match next {
            Ok(Some(Ok(notification))) if notification.channel != *channel => {
                if channels.options.also_listen.contains(&notification.channel) {
                    let event = ChannelEvent::Notification(notification.payload);
                    let _ = channels
                        .others
                        .send(Arc::new((Some(notification.channel), event)));
                }
            }
            Ok(Some(Ok(notification))) => {
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
            Ok(Some(Err(_)) | None) => return,
            Err(_idle) => {
                if conn.batch_execute(sql::session::PING).await.is_err() {
                    return;
                }
            }
        }
    }
}
