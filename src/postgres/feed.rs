//! The change feed: every change a [`PostgresAwarenessStore`](crate::PostgresAwarenessStore) applies can be published through
//! PostgreSQL `LISTEN/NOTIFY`, and any instance on the same database can subscribe to it.
//!
//! Why it publishes from a task and not inside each write: a transaction that notifies takes a
//! database-wide lock at commit, so one `pg_notify` per `set` serialises every writer's commit
//! (measured: −55 % `set` throughput at 4 clients). Instead the write methods hand the keys they
//! changed to a publisher task (a channel send, no I/O), which gathers the keys that arrive
//! within [`ChangeFeedOptions::publish_delay`] plus whatever queues up while its previous `NOTIFY`
//! is in flight, and sends them as one statement. The price: an event leaves a few
//! milliseconds after its write commits, and if the process dies in between, or the database is
//! unreachable when it publishes, the event is lost (subscribers' state then catches up on
//! their next re-read or [`FeedEvent::Resync`]).

mod company;
mod listener;
mod payload;
pub(crate) mod publishing;
mod types;

pub use types::{
    AwarenessChange, ChangeFeedOptions, ChangeFilter, ChangeKind, ChangeStream, ChangedState,
    ChannelEvent, ChannelStream, FeedEvent, DEFAULT_CHANNEL,
};

use std::sync::Arc;

use diesel_async::RunQueryDsl;
use tokio::sync::mpsc;

use super::pool::{with_conn, Connections};
use crate::entry::{AwarenessEntry, AwarenessUpdate};
use crate::error::{Error, Result};

/// A store's feed: the publisher's inbox (when publishing) and the shared listener.
#[derive(Clone, Default)]
pub(crate) struct Feed {
    inner: Arc<FeedInner>,
}

#[derive(Default)]
struct FeedInner {
    options: ChangeFeedOptions,
    publisher: Option<mpsc::UnboundedSender<Queued>>,
    listener: tokio::sync::OnceCell<listener::Listener>,
    /// The publisher sends through the listener's session once there is one.
    slot: Arc<listener::PublishSlot>,
}

/// What the publisher task receives: changes, or a request to say when everything queued
/// before it was sent.
enum Queued {
    Change(Pending),
    Flush(tokio::sync::oneshot::Sender<()>),
}

struct Pending {
    kind: ChangeKind,
    document_id: String,
    client_ids: Vec<String>,
    /// Empty, or one per client id.
    states: Vec<Option<ChangedState>>,
    /// When the change was applied (for the publish-lag metric).
    queued: std::time::Instant,
}

pub(crate) use payload::carries_alone;

impl Feed {
    /// True when changes are published.
    pub(crate) fn is_publishing(&self) -> bool {
        self.inner.publisher.is_some()
    }

    /// Publishes an applied `set`.
    pub(crate) fn publish_update(&self, update: &AwarenessUpdate) {
        if self.is_publishing() {
            let kind = match update.state {
                Some(_) => ChangeKind::Set,
                None => ChangeKind::Leave,
            };
            let state = ChangedState {
                clock: update.clock,
                state: update.state.clone(),
            };
            self.send(
                kind,
                &update.document_id,
                vec![update.client_id.clone()],
                vec![Some(state)],
            );
        }
    }

    /// Publishes the deletion of `entries`, which are sorted by document.
    pub(crate) fn publish_entries(&self, kind: ChangeKind, entries: &[AwarenessEntry]) {
        if self.is_publishing() {
            for same_document in entries.chunk_by(|a, b| a.document_id == b.document_id) {
                let clients = same_document.iter().map(|e| e.client_id.clone()).collect();
                self.publish(kind, &same_document[0].document_id, clients);
            }
        }
    }

    /// Publishes a change to `client_ids` of `document_id`.
    pub(crate) fn publish(&self, kind: ChangeKind, document_id: &str, client_ids: Vec<String>) {
        self.send(kind, document_id, client_ids, Vec::new());
    }

    fn send(
        &self,
        kind: ChangeKind,
        document_id: &str,
        client_ids: Vec<String>,
        states: Vec<Option<ChangedState>>,
    ) {
        if let Some(inbox) = &self.inner.publisher {
            // Fails only when the publisher task is gone (runtime shutting down).
            ::metrics::counter!(crate::metrics::FEED_PUBLISHED, "kind" => kind.as_str())
                .increment(client_ids.len() as u64);
            let _ = inbox.send(Queued::Change(Pending {
                kind,
                document_id: document_id.to_owned(),
                client_ids,
                states,
                queued: std::time::Instant::now(),
            }));
        }
    }
}

impl Feed {
    /// A feed configured by `options`; with [`publish`](ChangeFeedOptions::publish) it starts
    /// the publisher task, so it must be called inside a Tokio runtime.
    pub(crate) fn start(connections: &Connections, options: ChangeFeedOptions) -> Result<Self> {
        options.check()?;
        let slot = Arc::new(listener::PublishSlot::default());
        let publisher = if options.publish {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Config("with_change_feed must be called inside a Tokio runtime".into())
            })?;
            let (inbox, outbox) = mpsc::unbounded_channel();
            let sink = Sink {
                connections: connections.clone(),
                slot: slot.clone(),
            };
            runtime.spawn(publish_loop(sink, options.clone(), outbox));
            Some(inbox)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(FeedInner {
                options,
                publisher,
                listener: tokio::sync::OnceCell::new(),
                slot,
            }),
        })
    }

    /// This feed's origin ([`ChangeFeedOptions::origin`]).
    pub(crate) fn origin(&self) -> &str {
        &self.inner.options.origin
    }

    /// Waits until every change queued so far was published (see
    /// [`PostgresAwarenessStore::flush_change_feed`](crate::PostgresAwarenessStore::flush_change_feed)).
    pub(crate) async fn flush(&self) {
        if let Some(inbox) = &self.inner.publisher {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if inbox.send(Queued::Flush(done)).is_ok() {
                // An error: the publisher task is gone; nothing is left to wait for.
                let _ = flushed.await;
            }
        }
    }

    /// A stream of the feed's events (see
    /// [`PostgresAwarenessStore::subscribe`](crate::PostgresAwarenessStore::subscribe)); the first
    /// opens the listener on a connection of its own.
    pub(crate) async fn subscribe(
        &self,
        connections: &Connections,
        filter: ChangeFilter,
    ) -> Result<ChangeStream> {
        let options = &self.inner.options;
        let listener = self.listener(connections).await?;
        Ok(listener.stream(filter, options.origin.clone()))
    }

    /// The notifications of `channel`, one of [`ChangeFeedOptions::also_listen`], received on
    /// the listener's session (see
    /// [`PostgresAwarenessStore::subscribe_channel`](crate::PostgresAwarenessStore::subscribe_channel)).
    pub(crate) async fn subscribe_channel(
        &self,
        connections: &Connections,
        channel: &str,
    ) -> Result<ChannelStream> {
        if !self.inner.options.also_listen.iter().any(|c| c == channel) {
            return Err(Error::Config(format!(
                "change feed: {channel:?} is not one of also_listen's channels \
                 (ChangeFeedOptions::with_also_listen)"
            )));
        }
        let listener = self.listener(connections).await?;
        Ok(listener.channel_stream(channel.to_owned()))
    }

    /// The listener, started by the first subscriber.
    async fn listener(&self, connections: &Connections) -> Result<&listener::Listener> {
        let options = &self.inner.options;
        if options.listen_url.is_none() && connections.behind_pooler() {
            return Err(Error::Config(
                "the change feed's listener needs a session of its own, which a \
                 transaction-mode pooler does not give: set ChangeFeedOptions::with_listen_url \
                 to a direct (or session-mode) URL of the same database"
                    .into(),
            ));
        }
        let source = match &options.listen_url {
            Some(url) => listener::Source::Url(url.clone()),
            None => listener::Source::Pool(connections.clone()),
        };
        self.inner
            .listener
            .get_or_try_init(|| listener::Listener::start(source, options, self.inner.slot.clone()))
            .await
    }
}

/// Below this many keys in one batch the publisher keeps collecting; above it, it sends.
const MAX_BATCH_KEYS: usize = 10_000;

/// Where the publisher sends: the listener's session when it has one, else the pool.
struct Sink {
    connections: Connections,
    slot: Arc<listener::PublishSlot>,
}

async fn publish_loop(
    sink: Sink,
    options: ChangeFeedOptions,
    mut inbox: mpsc::UnboundedReceiver<Queued>,
) {
    let mut sequence = 0;
    let mut last_sent: Option<tokio::time::Instant> = None;
    while let Some(first) = inbox.recv().await {
        let mut batch = payload::Notifications::default();
        let mut flushes = Vec::new();
        let mut oldest = None;
        let mut add = |queued: Queued, batch: &mut payload::Notifications| match queued {
            Queued::Change(next) => {
                oldest.get_or_insert(next.queued);
                batch.add(next.kind, next.document_id, next.client_ids, next.states);
            }
            Queued::Flush(done) => flushes.push(done),
        };
        add(first, &mut batch);
        if batch.len() > 0 {
            if !options.publish_delay.is_zero() {
                tokio::time::sleep(options.publish_delay).await;
            }
            if let Some(last) = last_sent.filter(|_| !options.publish_pace.is_zero()) {
                tokio::time::sleep_until(last + options.publish_pace).await;
            }
        }
        while batch.len() < MAX_BATCH_KEYS {
            match inbox.try_recv() {
                Ok(next) => add(next, &mut batch),
                Err(_) => break,
            }
        }
        // Alone (no other listener heard for a while): to this process's subscribers only,
        // the batch as it is (no payload written, sent or parsed back).
        let local = !options.notify_when_alone
            && batch.len() > 0
            && sink.slot.has_listener()
            && sink.slot.alone(options.quiet());
        let payloads = if local {
            sink.slot
                .deliver_locally(batch.into_changes(&options.origin));
            ::metrics::counter!(crate::metrics::FEED_LOCAL).increment(1);
            Vec::new()
        } else {
            batch.into_payloads(&options.origin, &mut sequence)
        };
        // One retry covers a pooled connection that died since its last use.
        for attempt in 1..=2 {
            if payloads.is_empty() {
                break;
            }
            last_sent = Some(tokio::time::Instant::now());
            let sent = match sink.slot.notify(&payloads).await {
                Ok(()) => Ok(()),
                Err(_) => notify(&sink.connections, &options.channel, &payloads).await,
            };
            match sent {
                Ok(()) => {
                    ::metrics::counter!(crate::metrics::FEED_NOTIFICATIONS)
                        .increment(payloads.len() as u64);
                    if let Some(oldest) = oldest {
                        ::metrics::histogram!(crate::metrics::FEED_PUBLISH_LAG)
                            .record(oldest.elapsed().as_secs_f64());
                    }
                    break;
                }
                Err(e) if attempt == 2 => tracing::warn!(
                    error = %e,
                    payloads = payloads.len(),
                    "awareness change feed: NOTIFY failed twice; these changes are not published"
                ),
                Err(_) => {}
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends every payload in one statement (one transaction, one commit).
async fn notify(connections: &Connections, channel: &str, payloads: &[String]) -> Result<()> {
    with_conn!(*connections, |conn| {
        super::sql::session::Notify { channel, payloads }
            .execute(conn)
            .await?;
        Ok(())
    })
}
