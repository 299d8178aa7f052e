//! The change feed's public types: events, filters, options. Below the publisher, the listener
//! and the payload codec, which all use them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::postgres::secret::DatabaseUrl;

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

    pub(super) fn accepts(&self, event: &FeedEvent, own_origin: &str) -> bool {
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

/// An item of a [`ChannelStream`]: a notification on another channel the listener's session
/// listens on ([`ChangeFeedOptions::also_listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A notification's payload, as `pg_notify` sent it.
    Notification(String),
    /// The listener's connection was lost and is listening again: notifications may have been
    /// missed in between.
    Resync,
}

/// Notifications of one channel ([`PostgresAwarenessStore::subscribe_channel`](crate::PostgresAwarenessStore::subscribe_channel)).
pub type ChannelStream = BoxStream<'static, ChannelEvent>;

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
    /// `NOTIFY` transactions; smaller: lower latency. Under load, changes also gather while
    /// the previous `NOTIFY` is in flight.
    pub publish_delay: Duration,
    /// The least time between the starts of two of this publisher's `NOTIFY`s (default zero).
    /// A change that finds the publisher idle for longer goes at once; a change that comes
    /// sooner waits for the rest of this time, and everything that arrives meanwhile goes with
    /// it in one `NOTIFY`. Every `NOTIFY` is a transaction and wakes every listening session of
    /// the database, so under a steady stream of changes this bounds the database's work at
    /// the price of at most this much added latency.
    pub publish_pace: Duration,
    /// Events buffered per subscriber; one that falls further behind gets a
    /// [`FeedEvent::Resync`] instead of the events it missed.
    pub capacity: usize,
    /// Where the listener connects (`LISTEN` needs a session of its own): `None` for a
    /// dedicated connection of the store's pool. Behind a transaction-mode pooler
    /// ([`PostgresOptions::transaction_pooler`](crate::PostgresOptions::transaction_pooler)) it
    /// is required: a direct or session-mode URL of the same database. A store that both
    /// publishes and listens sends its `NOTIFY`s through the listener's session (PostgreSQL
    /// then wakes one session fewer per `NOTIFY`), and through the pool while that session is
    /// reconnecting or when it does not listen.
    pub listen_url: Option<DatabaseUrl>,
    /// Other channels the listener's session listens on, for the application's own
    /// notifications ([`PostgresAwarenessStore::subscribe_channel`](crate::PostgresAwarenessStore::subscribe_channel)).
    /// PostgreSQL wakes *every* listening session of a database for each `NOTIFY`, whatever its
    /// channel: one session for all of a process's channels is woken once, where a session per
    /// channel is woken once each.
    pub also_listen: Vec<String>,
    /// The listener's `application_name` (default `synckit-awareness-listener`), to find its
    /// session in `pg_stat_activity`.
    pub listener_name: String,
    /// How long the listener waits before its first attempt to reconnect (default 50 ms; then
    /// doubling up to 1 s).
    pub reconnect_delay: Duration,
    /// Send a `NOTIFY` for every change even when no one else listens (default `true`). With
    /// `false`, while this process's listener has heard no other listener's hello (nor any other
    /// publisher) for 2.5 [`hello_every`](Self::hello_every), changes go to this process's own
    /// subscribers only, with no `NOTIFY`: one instance alone costs the database nothing per
    /// move. A listener that starts says hello at once, so it misses at most what was published
    /// in the moment before its hello arrived (its subscribers re-read what they need, as after
    /// a [`FeedEvent::Resync`]). Every listener of this version says hello, subscribers without
    /// an instance included; a listener of an older version is heard only when it publishes.
    pub notify_when_alone: bool,
    /// How often the listener says hello on the channel (default 2 s): one small `NOTIFY` per
    /// period per listening process, so that publishers with
    /// [`notify_when_alone`](Self::notify_when_alone) off know they are not alone.
    pub hello_every: Duration,
}

/// The listener's default `application_name` ([`ChangeFeedOptions::listener_name`]).
pub(crate) const LISTENER_APPLICATION_NAME: &str = "synckit-awareness-listener";

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
            publish_delay: Duration::from_millis(1),
            publish_pace: Duration::ZERO,
            capacity: 4096,
            listen_url: None,
            also_listen: Vec::new(),
            listener_name: LISTENER_APPLICATION_NAME.to_owned(),
            reconnect_delay: Duration::from_millis(50),
            notify_when_alone: true,
            hello_every: Duration::from_secs(2),
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

    /// These options with another publishing delay ([`publish_delay`](Self::publish_delay)).
    pub fn with_publish_delay(mut self, delay: Duration) -> Self {
        self.publish_delay = delay;
        self
    }

    /// These options with another pace ([`publish_pace`](Self::publish_pace)).
    pub fn with_publish_pace(mut self, pace: Duration) -> Self {
        self.publish_pace = pace;
        self
    }

    /// The old name of [`with_publish_delay`](Self::with_publish_delay).
    #[deprecated(note = "renamed with_publish_delay (\"coalesce\" also names write coalescing)")]
    pub fn with_coalesce(self, delay: Duration) -> Self {
        self.with_publish_delay(delay)
    }

    /// These options with the listener on its own URL ([`listen_url`](Self::listen_url)).
    pub fn with_listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(DatabaseUrl::new(url));
        self
    }

    /// These options with another per-subscriber buffer ([`capacity`](Self::capacity)).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// These options with the listener also listening on `channel` ([`also_listen`](Self::also_listen)).
    pub fn with_also_listen(mut self, channel: impl Into<String>) -> Self {
        self.also_listen.push(channel.into());
        self
    }

    /// These options with another `application_name` for the listener ([`listener_name`](Self::listener_name)).
    pub fn with_listener_name(mut self, name: impl Into<String>) -> Self {
        self.listener_name = name.into();
        self
    }

    /// These options with another first reconnection delay ([`reconnect_delay`](Self::reconnect_delay)).
    pub fn with_reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// These options sending a `NOTIFY` even when alone, or not ([`notify_when_alone`](Self::notify_when_alone)).
    pub fn with_notify_when_alone(mut self, notify: bool) -> Self {
        self.notify_when_alone = notify;
        self
    }

    /// These options with another hello period ([`hello_every`](Self::hello_every)).
    pub fn with_hello_every(mut self, every: Duration) -> Self {
        self.hello_every = every;
        self
    }

    /// How long no other listener must be heard before this one counts as alone.
    pub(super) fn quiet(&self) -> Duration {
        super::company::quiet_after(self.hello_every)
    }

    pub(super) fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("change feed: {what}")));
        let valid_channel = |c: &str| !c.is_empty() && c.len() <= 63 && !c.contains('\0');
        if !valid_channel(&self.channel) {
            return bad("channel must be 1 to 63 bytes without NUL");
        }
        if !self.also_listen.iter().all(|c| valid_channel(c)) {
            return bad("every also_listen channel must be 1 to 63 bytes without NUL");
        }
        if self.also_listen.contains(&self.channel) {
            return bad("also_listen must not repeat the feed's own channel");
        }
        if self.listener_name.len() > 63 || self.listener_name.contains('\0') {
            return bad("listener_name must be at most 63 bytes without NUL");
        }
        if self.origin.is_empty() || self.origin.len() > 256 || self.origin.contains('\0') {
            return bad("origin must be 1 to 256 bytes without NUL");
        }
        if self.capacity == 0 {
            return bad("capacity must be at least 1");
        }
        if self.hello_every.is_zero() || self.hello_every > Duration::from_secs(3600) {
            return bad("hello_every must be above zero and at most an hour");
        }
        Ok(())
    }
}
