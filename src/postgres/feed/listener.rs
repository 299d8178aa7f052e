//! The listener: one dedicated connection per store that runs `LISTEN`, fans notifications out
//! to subscribers, and reconnects when the connection is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::company::Company;
use super::payload;
use super::types::{
    AwarenessChange, ChangeFeedOptions, ChangeFilter, ChangeStream, ChannelEvent, ChannelStream,
    FeedEvent,
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

/// The publisher's way into the listener's session. PostgreSQL wakes every listening session
/// of the database for each `NOTIFY` (a signal, a wake-up, a read of the queue, a send), except
/// the notifying session itself, which reads its own before it answers: a `NOTIFY` sent here
/// costs one wake-up fewer than one sent on a pooled connection.
#[derive(Default)]
pub(super) struct PublishSlot {
    sender: std::sync::OnceLock<mpsc::Sender<Publish>>,
    /// The listener is connected and listening.
    live: AtomicBool,
    /// The listener's subscribers, for changes handed over without a `NOTIFY` (alone).
    events: std::sync::OnceLock<broadcast::Sender<Arc<FeedEvent>>>,
    /// Whom the listener hears.
    company: Company,
}

/// Payloads to send through the listener's session, and where to say how it went.
struct Publish {
    payloads: Vec<String>,
    done: oneshot::Sender<Result<()>>,
}

impl PublishSlot {
    /// True when the listener listens and has heard no other listener or publisher for `quiet`.
    pub(super) fn alone(&self, quiet: Duration) -> bool {
        self.live.load(Ordering::Acquire) && self.company.alone(quiet)
    }

    /// Hands `changes` to this process's subscribers as the listener would have received
    /// them back from PostgreSQL (nothing when no listener started).
    pub(super) fn deliver_locally(&self, changes: Vec<AwarenessChange>) {
        if let Some(events) = self.events.get() {
            fan_out(events, changes);
        }
    }

    /// True when a listener started: [`deliver_locally`](Self::deliver_locally) reaches it.
    pub(super) fn has_listener(&self) -> bool {
        self.events.get().is_some()
    }

    /// Sends `payloads` through the listener's session in one statement. `Err` when there is no
    /// listener, it is not connected, or the statement failed: the caller sends them through
    /// the pool instead.
    pub(super) async fn notify(&self, payloads: &[String]) -> Result<()> {
        let unavailable =
            || Error::Connection("the change feed's listener is not listening".into());
        let sender = self
            .sender
            .get()
            .filter(|_| self.live.load(Ordering::Acquire))
            .ok_or_else(unavailable)?;
        let (done, result) = oneshot::channel();
        let request = Publish {
            payloads: payloads.to_vec(),
            done,
        };
        sender.send(request).await.map_err(|_| unavailable())?;
        result.await.map_err(|_| unavailable())?
    }
}

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
    slot: Arc<PublishSlot>,
    requests: mpsc::Receiver<Publish>,
}

impl Channels {
    /// Waits `delay`, refusing the publisher's requests meanwhile (it uses the pool).
    async fn wait_refusing(&mut self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                Some(request) = self.requests.recv() => {
                    let _ = request.done.send(Err(Error::Connection("the change feed's listener is reconnecting".into())));
                }
            }
        }
    }
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
    pub(super) async fn start(
        source: Source,
        options: &ChangeFeedOptions,
        slot: Arc<PublishSlot>,
    ) -> Result<Self> {
        let conn = listen(&source, options).await?;
        let (events, _) = broadcast::channel(options.capacity);
        let (others, _) = broadcast::channel(options.capacity);
        let (requests_tx, requests) = mpsc::channel(1);
        // One listener per feed: the slot is set once.
        let _ = slot.sender.set(requests_tx);
        let _ = slot.events.set(events.clone());
        slot.company.listening();
        slot.live.store(true, Ordering::Release);
        let channels = Channels {
            options: options.clone(),
            events: events.clone(),
            others: others.clone(),
            slot,
            requests,
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

async fn run(source: Source, mut channels: Channels, mut conn: AsyncPgConnection) {
    loop {
        forward(&mut conn, &mut channels).await;
        channels.slot.live.store(false, Ordering::Release);
        channels.slot.company.deaf();
        let channel = &channels.options.channel;
        tracing::warn!(%channel, "awareness change feed: listener connection lost; reconnecting");
        let mut delay = channels.options.reconnect_delay;
        conn = loop {
            channels.wait_refusing(delay).await;
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
        channels.slot.company.listening();
        channels.slot.live.store(true, Ordering::Release);
        ::metrics::counter!(crate::metrics::FEED_RESYNCS).increment(1);
        let _ = channels.events.send(Arc::new(FeedEvent::Resync));
        let _ = channels.others.send(Arc::new((None, ChannelEvent::Resync)));
    }
}

/// `changes` to every subscriber (counted as delivered).
fn fan_out(events: &broadcast::Sender<Arc<FeedEvent>>, changes: Vec<AwarenessChange>) {
    ::metrics::counter!(crate::metrics::FEED_DELIVERED).increment(changes.len() as u64);
    for change in changes {
        // No subscriber at the moment is not an error.
        let _ = events.send(Arc::new(FeedEvent::Change(change)));
    }
}

/// What woke the listener.
enum Heard<N> {
    Notification(N),
    Request(Publish),
    HelloDue,
}

/// Forwards notifications, sends the publisher's and says hello every `hello_every`, until
/// the connection fails.
async fn forward(conn: &mut AsyncPgConnection, channels: &mut Channels) {
    // Here only: its `load` would shadow `AtomicBool::load` elsewhere in the file.
    use diesel_async::RunQueryDsl;
    let hello = [payload::hello(
        &channels.options.origin,
        channels.options.hello_every,
    )];
    // Said at once: a publisher that thought itself alone notifies from now on.
    let mut next_hello = tokio::time::Instant::now();
    loop {
        let next = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                next = tokio::time::timeout(CHECK_IDLE_CONNECTION, notifications.next()) => Heard::Notification(next),
                Some(request) = channels.requests.recv() => Heard::Request(request),
                () = tokio::time::sleep_until(next_hello) => Heard::HelloDue,
            }
        };
        let next = match next {
            Heard::Notification(next) => next,
            Heard::HelloDue => {
                next_hello = tokio::time::Instant::now() + channels.options.hello_every;
                let said = crate::postgres::sql::session::Notify {
                    channel: &channels.options.channel,
                    payloads: &hello,
                }
                .execute(conn)
                .await;
                if said.is_err() {
                    return;
                }
                continue;
            }
            Heard::Request(request) => {
                let result = crate::postgres::sql::session::Notify {
                    channel: &channels.options.channel,
                    payloads: &request.payloads,
                }
                .execute(conn)
                .await
                .map(drop)
                .map_err(Error::from);
                let failed = result.is_err();
                let _ = request.done.send(result);
                if failed {
                    // Most likely the connection: reconnect (and resync) rather than guess.
                    return;
                }
                continue;
            }
        };
        let (channel, events) = (&channels.options.channel, &channels.events);
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
                match payload::parse_with_origin(&notification.payload) {
                    Some(payload::Parsed {
                        origin,
                        changes,
                        hello_every,
                    }) => {
                        if origin != channels.options.origin {
                            // A hello says for how long; a change, for our own quiet time.
                            let quiet = hello_every
                                .map_or(channels.options.quiet(), super::company::quiet_after);
                            channels.slot.company.heard_other(quiet);
                        }
                        fan_out(events, changes);
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
