//! The store contract every provider implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::entry::{AwarenessEntry, AwarenessUpdate, Departed, SetOutcome};
use crate::error::Result;
use crate::validate::DEFAULT_MAX_STATE_BYTES;

/// Default time after which an entry that was not written again is expired (y-protocols'
/// `outdatedTimeout`, SyncKit's `AWARENESS_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Behaviour shared by every store: `StoreOptions::default().with_timeout(..)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// An entry is expired when `last_seen + timeout <= now`.
    pub timeout: Duration,
    /// Largest state accepted, in bytes of compact JSON.
    pub max_state_bytes: usize,
    /// Most live participants (fresh entries with a state) one document may hold; an update
    /// that would add one more is [`SetOutcome::DocumentFull`]. `None`: no limit.
    /// Default [`DEFAULT_MAX_CLIENTS_PER_DOCUMENT`].
    pub max_clients_per_document: Option<u32>,
    /// Most live participants one connection may write, across documents; an update that would
    /// add one more is [`SetOutcome::ConnectionFull`]. `None`: no limit.
    /// Default [`DEFAULT_MAX_CLIENTS_PER_CONNECTION`].
    pub max_clients_per_connection: Option<u32>,
}

/// Default [`StoreOptions::max_clients_per_document`]: far above any real room (y-websocket
/// rooms rarely hold more than a few dozen people), low enough that one hostile client cannot
/// fill a document's presence with thousands of fake participants.
pub const DEFAULT_MAX_CLIENTS_PER_DOCUMENT: u32 = 1_000;

/// Default [`StoreOptions::max_clients_per_connection`]: a y-websocket connection carries one
/// Yjs client per document; a server multiplexing documents over one connection id needs one
/// per document it serves on it.
pub const DEFAULT_MAX_CLIENTS_PER_CONNECTION: u32 = 64;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_clients_per_document: Some(DEFAULT_MAX_CLIENTS_PER_DOCUMENT),
            max_clients_per_connection: Some(DEFAULT_MAX_CLIENTS_PER_CONNECTION),
        }
    }
}

impl StoreOptions {
    /// Options with another expiry timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Options with another state size limit.
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }

    /// Options with another limit of live participants per document (`None`: unlimited).
    pub fn with_max_clients_per_document(mut self, max: Option<u32>) -> Self {
        self.max_clients_per_document = max;
        self
    }

    /// Options with another limit of live participants per connection (`None`: unlimited).
    pub fn with_max_clients_per_connection(mut self, max: Option<u32>) -> Self {
        self.max_clients_per_connection = max;
        self
    }

    /// True when an update with a state for a client without a live entry would exceed a
    /// limit, given the live participants the document and the connection already hold: the
    /// outcome it gets, else `None`.
    pub(crate) fn refuses_join(&self, in_document: u64, on_connection: u64) -> Option<SetOutcome> {
        if self
            .max_clients_per_document
            .is_some_and(|max| in_document >= u64::from(max))
        {
            Some(SetOutcome::DocumentFull)
        } else if self
            .max_clients_per_connection
            .is_some_and(|max| on_connection >= u64::from(max))
        {
            Some(SetOutcome::ConnectionFull)
        } else {
            None
        }
    }
}

/// Where awareness entries live. Semantics: the repository's `docs/contract.md` (summarised on each method).
///
/// An entry is *expired* when `last_seen + timeout <= now`; expired entries are absent for every
/// read and for ordering, and stay in storage only until pruned. Every method validates its ids
/// first: bad input returns [`Error::InvalidInput`](crate::Error::InvalidInput) and touches nothing.
#[async_trait]
pub trait AwarenessStore: Debug + Send + Sync + 'static {
    /// The entry of `client_id` in `document_id`, tombstones included; `None` when absent or
    /// expired.
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>>;

    /// The live entries of a document (not expired, not tombstones), ordered by `client_id`
    /// (byte order).
    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>>;

    /// [`get_all`](Self::get_all)'s participants with each state as JSON text, not parsed:
    /// for servers that forward states without reading them. Same order and liveness; cheaper
    /// on both stores (PostgreSQL's `jsonb` text is read as it arrives; the memory store keeps
    /// states as text).
    async fn get_all_states(&self, document_id: &str) -> Result<Vec<crate::entry::LiveState>> {
        self.get_all(document_id)
            .await?
            .into_iter()
            .filter_map(|entry| {
                let state = entry.state?;
                Some(
                    serde_json::to_string(&state)
                        .map(|text| {
                            crate::entry::LiveState::new(entry.client_id, entry.clock, text)
                        })
                        .map_err(|e| crate::error::Error::Config(format!("state to JSON: {e}"))),
                )
            })
            .collect()
    }

    /// How many live participants a document has (what [`get_all`](Self::get_all) would
    /// return, counted): on PostgreSQL one primary-key range count, across every instance.
    async fn count(&self, document_id: &str) -> Result<u64> {
        Ok(u64::try_from(self.get_all(document_id).await?.len()).unwrap_or(u64::MAX))
    }

    /// The documents with at least one live participant and how many, in byte order of their
    /// ids, starting after `after` (`None`: from the first), at most `limit` (a page of a
    /// room list: pass the last id of one page as `after` for the next). On PostgreSQL one
    /// walk of the primary key from `after`, grouped as it goes and stopped after `limit`
    /// rooms: a page costs what its rooms hold, whatever the table holds; documents holding
    /// only tombstones and expired entries are stepped over (until pruned).
    async fn rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<crate::who::RoomCount>>;

    /// Applies `update` when no live entry exists, when its clock is higher, or when the clocks
    /// are equal and the update is a leave over a live state; otherwise returns
    /// [`SetOutcome::Stale`] and changes nothing. An update over a fresh entry owned by another
    /// principal is [`SetOutcome::Forbidden`] ([`AwarenessUpdate::owner`]); one that would add a
    /// participant beyond a limit is [`SetOutcome::DocumentFull`] or
    /// [`SetOutcome::ConnectionFull`] ([`StoreOptions`]). Deciding and writing are one atomic
    /// step.
    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome>;

    /// Applies many updates with the same rules as [`set`](Self::set), as if one after another in
    /// order; returns one outcome per update, in input order. Every update is validated before any
    /// is applied.
    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        for update in updates {
            crate::validate::check_update(update, self.options().max_state_bytes)?;
        }
        let mut outcomes = Vec::with_capacity(updates.len());
        for update in updates {
            outcomes.push(self.set(update).await?);
        }
        Ok(outcomes)
    }

    /// Deletes one entry (live, tombstone or expired); says whether one was there.
    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool>;

    /// Deletes, in every document, the entries last written by `connection_id` (a client that
    /// reconnected elsewhere is untouched). Returns the removed entries that were not expired,
    /// tombstones included, so a server can broadcast a leave for each
    /// ([`AwarenessEntry::leave_update`]).
    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>>;

    /// Every expired entry, across documents, without removing any.
    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>>;

    /// Deletes every expired entry and returns how many.
    async fn prune_expired(&self) -> Result<u64>;

    /// Deletes every expired entry and returns them, in one atomic step, so nothing expires
    /// unseen between a read and a delete.
    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>>;

    /// What the [`Pruner`](crate::Pruner) removes each round, in one atomic step: the expired
    /// entries and, on a store whose writers run as instances
    /// ([`PostgresAwarenessStore::start_instance`](crate::PostgresAwarenessStore::start_instance)),
    /// every entry of an instance whose lease lapsed (it crashed or lost the database), fresh
    /// or not. Each entry is returned by exactly one call, whichever store or process makes it.
    /// Stores without instances take the expired entries.
    ///
    /// Meant to run every round (the `Pruner`'s period): an idle round costs what it removes,
    /// not what the table holds. The PostgreSQL store finds lapsed instances through an index
    /// every round, and scans for expired entries only once the first one can have expired
    /// (its last scan says when) and, among instances, only on the live one with the smallest
    /// id; an entry backdated by hand in SQL is taken when that time comes, within one
    /// timeout. [`take_expired`](Self::take_expired) always scans.
    async fn take_departed(&self) -> Result<Departed> {
        Ok(Departed {
            expired: self.take_expired().await?,
            abandoned: Vec::new(),
        })
    }

    /// The options this store runs with.
    fn options(&self) -> StoreOptions;
}
