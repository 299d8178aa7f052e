//! The store contract every provider implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::entry::{AwarenessEntry, AwarenessUpdate, SetOutcome};
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
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

    /// Applies `update` when no live entry exists, when its clock is higher, or when the clocks
    /// are equal and the update is a leave over a live state; otherwise returns
    /// [`SetOutcome::Stale`] and changes nothing. Deciding and writing are one atomic step.
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
    /// unseen between a read and a delete. The [`Pruner`](crate::Pruner) uses this.
    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>>;

    /// The options this store runs with.
    fn options(&self) -> StoreOptions;
}
