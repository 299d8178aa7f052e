//! The change feed: every change a [`PostgresAwarenessStore`] applies can be published through
//! PostgreSQL `LISTEN/NOTIFY`, and any instance on the same database can subscribe to it.
//!
//! Why it publishes from a task and not inside each write: a transaction that notifies takes a
//! database-wide lock at commit, so one `pg_notify` per `set` serialises every writer's commit
//! (measured: −55 % `set` throughput at 4 clients). Instead the write methods hand the keys they
//! changed to a publisher task (a channel send, no I/O), which coalesces the keys that arrive
//! within [`ChangeFeedOptions::coalesce`] plus whatever queues up while its previous `NOTIFY`
//! is in flight, and sends them as one statement. The price: an event leaves a few
//! milliseconds after its write commits, and if the process dies in between, or the database is
//! unreachable when it publishes, the event is lost (subscribers' state then catches up on
//! their next re-read or [`FeedEvent::Resync`]).

mod listener;
mod payload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::store::{PgPool, PostgresAwarenessStore};
use crate::entry::{AwarenessEntry, AwarenessUpdate};
use crate::error::{Error, Result};

/// What happened to the listed clients of a document. Events carry the keys, and for applied
/// sets and leaves the clock and state they were set to where those fit in the notification
/// ([`AwarenessChange::states`]); otherwise subscribers re-read the entries they need
/// ([`get`](crate::AwarenessStore::get), [`get_all`](crate::AwarenessStore::get_all)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A `set` with a state was applied.
    Set,
    /// A `set` without state (the client left; a tombstone remains) was applied.
    Leave,
    /// Entries were deleted by `remove` or `remove_all_for_connection`.
    Remove,
    /// Expired entries were deleted by `prune_expired` or `take_expired`.
    Expire,
}

impl ChangeKind {
    /// The kind's name in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Set => "set",
            ChangeKind::Leave => "leave",
            ChangeKind::Remove => "remove",
            ChangeKind::Expire => "expire",
        }
    }
}

/// Changes of one kind to some clients of one document, published by the store instance
/// `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessChange {
    /// The document.
    pub document_id: String,
    /// The clients changed, in the order their changes were applied.
    pub client_ids: Vec<String>,
    /// What happened to them.
    pub kind: ChangeKind,
    /// [`ChangeFeedOptions::origin`] of the publishing store.
    pub origin: String,
    /// For [`ChangeKind::Set`] and [`ChangeKind::Leave`]: the clock and state each client was
    /// set to, parallel to [`client_ids`](Self::client_ids), or `None` for a client whose
    /// state did not fit in the notification (PostgreSQL's payloads stop at 8,000 bytes) —
    /// re-read that one. Empty when the change carries no states at all (every other kind).
    pub states: Vec<Option<ChangedState>>,
}

impl AwarenessChange {
    /// The clock and state the `index`-th client was set to, when the change carried it.
    pub fn state_of(&self, index: usize) -> Option<&ChangedState> {
        self.states.get(index).and_then(Option::as_ref)
    }
}

/// The clock and state a [`ChangeKind::Set`] or [`ChangeKind::Leave`] wrote, as carried in the
/// change feed's notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedState {
    /// The entry's new clock.
    pub clock: i64,
    /// The entry's new state; `None` for a leave.
    pub state: Option<serde_json::Value>,
}

/// An item of a [`ChangeStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A change applied by some instance (this one included unless filtered out).
    Change(AwarenessChange),
    /// Events may have been missed (the listener's connection was lost and is back, or this
    /// subscriber fell more than [`ChangeFeedOptions::capacity`] events behind): re-read the
    /// full state of the documents you follow.
    Resync,
}

/// Which events a [`ChangeStream`] yields. [`FeedEvent::Resync`] always passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    document_id: Option<String>,
    ignore_own: bool,
}

impl ChangeFilter {
    /// Changes of every document.
    pub fn all() -> Self {
        Self::default()
    }

    /// Changes of one document.
    pub fn document(document_id: impl Into<String>) -> Self {
        Self {
            document_id: Some(document_id.into()),
            ignore_own: false,
        }
    }

    /// Leaves out changes this store instance published itself (same origin).
    pub fn ignoring_own(mut self) -> Self {
        self.ignore_own = true;
        self
    }

    fn accepts(&self, event: &FeedEvent, own_origin: &str) -> bool {
        match event {
            FeedEvent::Resync => true,
            FeedEvent::Change(change) => {
                self.document_id
                    .as_ref()
                    .is_none_or(|d| *d == change.document_id)
                    && !(self.ignore_own && change.origin == own_origin)
            }
        }
    }
}

/// The events of a subscription, as an async stream; it ends when every clone of the store
/// that created it is dropped.
pub type ChangeStream = BoxStream<'static, FeedEvent>;

/// Settings of the change feed: `ChangeFeedOptions::default().with_publish(true)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeFeedOptions {
    /// Publish this store's changes (off by default; off costs nothing on the write path).
    pub publish: bool,
    /// The `NOTIFY` channel (at most 63 bytes). Every instance of one deployment must use the
    /// same; different deployments on one database use different ones.
    pub channel: String,
    /// This instance's id in payloads, so it can recognise its own events (at most 256 bytes);
    /// by default unique per store created.
    pub origin: String,
    /// How long the publisher waits after a change for more to send with it. Larger: fewer
    /// `NOTIFY` transactions; smaller: lower latency. Under load, changes also coalesce while
    /// the previous `NOTIFY` is in flight.
    pub coalesce: Duration,
    /// Events buffered per subscriber; one that falls further behind gets a
    /// [`FeedEvent::Resync`] instead of the events it missed.
    pub capacity: usize,
}

/// Default `NOTIFY` channel.
pub const DEFAULT_CHANNEL: &str = "synckit_awareness";

impl Default for ChangeFeedOptions {
    fn default() -> Self {
        static STORES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            publish: false,
            channel: DEFAULT_CHANNEL.to_owned(),
            origin: format!(
                "{}-{:x}-{}",
                std::process::id(),
                nanos,
                STORES.fetch_add(1, Ordering::Relaxed)
            ),
            coalesce: Duration::from_millis(1),
            capacity: 4096,
        }
    }
}

impl ChangeFeedOptions {
    /// These options with publishing on or off ([`publish`](Self::publish)).
    pub fn with_publish(mut self, publish: bool) -> Self {
        self.publish = publish;
        self
    }

    /// These options with another `NOTIFY` channel ([`channel`](Self::channel)).
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// These options with another origin ([`origin`](Self::origin)).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// These options with another coalescing window ([`coalesce`](Self::coalesce)).
    pub fn with_coalesce(mut self, coalesce: Duration) -> Self {
        self.coalesce = coalesce;
        self
    }

    /// These options with another per-subscriber buffer ([`capacity`](Self::capacity)).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("change feed: {what}")));
        if self.channel.is_empty() || self.channel.len() > 63 || self.channel.contains('\0') {
            return bad("channel must be 1 to 63 bytes without NUL");
        }
        if self.origin.is_empty() || self.origin.len() > 256 || self.origin.contains('\0') {
            return bad("origin must be 1 to 256 bytes without NUL");
        }
        if self.capacity == 0 {
            return bad("capacity must be at least 1");
        }
        Ok(())
    }
}

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

impl PostgresAwarenessStore {
    /// This store with the change feed configured by `options`; with
    /// [`publish`](ChangeFeedOptions::publish) it starts the publisher task, so it must be
    /// called inside a Tokio runtime. Clones made afterwards share the feed.
    pub fn with_change_feed(mut self, options: ChangeFeedOptions) -> Result<Self> {
        options.check()?;
        let publisher = if options.publish {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Config("with_change_feed must be called inside a Tokio runtime".into())
            })?;
            let (inbox, outbox) = mpsc::unbounded_channel();
            runtime.spawn(publish_loop(self.pool().clone(), options.clone(), outbox));
            Some(inbox)
        } else {
            None
        };
        self.layers.feed = Feed {
            inner: Arc::new(FeedInner {
                options,
                publisher,
                listener: tokio::sync::OnceCell::new(),
            }),
        };
        Ok(self)
    }

    /// This store's id in the change feed ([`ChangeFeedOptions::origin`]).
    pub fn change_feed_origin(&self) -> &str {
        &self.layers.feed.inner.options.origin
    }

    /// Waits until every change this store applied so far was published (its `NOTIFY`
    /// committed, or given up after a retry): what a server calls before it exits, so that
    /// its last leaves reach the other instances. Returns at once without a publishing feed.
    pub async fn flush_change_feed(&self) {
        if let Some(inbox) = &self.layers.feed.inner.publisher {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if inbox.send(Queued::Flush(done)).is_ok() {
                // An error: the publisher task is gone; nothing is left to wait for.
                let _ = flushed.await;
            }
        }
    }

    /// Subscribes to the change feed: changes published by every store on this database and
    /// channel (this one included), filtered by `filter`.
    ///
    /// The first subscription opens the listener: a dedicated connection (outside the pool)
    /// that runs `LISTEN` before this returns, so every change published afterwards arrives.
    /// When that connection is lost, the listener reconnects with backoff and every stream
    /// yields [`FeedEvent::Resync`]: changes published while it was away are lost, so re-read
    /// the documents you follow.
    pub async fn subscribe(&self, filter: ChangeFilter) -> Result<ChangeStream> {
        let options = &self.layers.feed.inner.options;
        let listener = self
            .layers
            .feed
            .inner
            .listener
            .get_or_try_init(|| listener::Listener::start(self.pool().clone(), options))
            .await?;
        Ok(listener.stream(filter, options.origin.clone()))
    }
}

/// Below this many keys in one batch the publisher keeps collecting; above it, it sends.
const MAX_BATCH_KEYS: usize = 10_000;

async fn publish_loop(
    pool: PgPool,
    options: ChangeFeedOptions,
    mut inbox: mpsc::UnboundedReceiver<Queued>,
) {
    let mut sequence = 0;
    while let Some(first) = inbox.recv().await {
        let mut batch = payload::Batch::default();
        let mut flushes = Vec::new();
        let mut oldest = None;
        let mut add = |queued: Queued, batch: &mut payload::Batch| match queued {
            Queued::Change(next) => {
                oldest.get_or_insert(next.queued);
                batch.add(next.kind, next.document_id, next.client_ids, next.states);
            }
            Queued::Flush(done) => flushes.push(done),
        };
        add(first, &mut batch);
        if !options.coalesce.is_zero() && batch.len() > 0 {
            tokio::time::sleep(options.coalesce).await;
        }
        while batch.len() < MAX_BATCH_KEYS {
            match inbox.try_recv() {
                Ok(next) => add(next, &mut batch),
                Err(_) => break,
            }
        }
        let payloads = batch.into_payloads(&options.origin, &mut sequence);
        // One retry covers a pooled connection that died since its last use.
        for attempt in 1..=2 {
            if payloads.is_empty() {
                break;
            }
            match notify(&pool, &options.channel, &payloads).await {
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
async fn notify(pool: &PgPool, channel: &str, payloads: &[String]) -> Result<()> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| Error::Connection(crate::postgres::secret::redact(&e.to_string())))?;
    // unnest yields the array in order, and NOTIFY keeps a transaction's order.
    diesel::sql_query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind::<Text, _>(channel)
        .bind::<Array<Text>, _>(payloads)
        .execute(&mut conn)
        .await?;
    Ok(())
}
