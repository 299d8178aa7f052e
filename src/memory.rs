//! The in-memory store: one process, no persistence.
//!
//! Laid out for constant-time joins and a small footprint (issue 18; figures in
//! docs/performance.md):
//! - every entry is one [`Slot`] in a slab, its strings (document, client, connection, owner,
//!   state as compact JSON text) back to back in one allocation;
//! - documents and connections are indexes over the slab (`hashbrown::HashTable<u32>`), and
//!   each keeps its count of *live* participants (a state, not expired), so a join reads two
//!   counters instead of scanning the document and the connection;
//! - every entry sits in one list ordered by `last_seen` (a write moves it to the tail). Expired
//!   entries are a prefix of that list: a `retired` boundary walks forward as time passes and
//!   takes them out of the counts (each entry once), and pruning walks the prefix only.

mod entries;
mod rooms;
mod slab;

use slab::{index, Entries, Slot, NIL};

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, LiveState, SetOutcome};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::store::StoreOptions;
use crate::who::RoomCount;

/// An [`AwarenessStore`](crate::AwarenessStore) in process memory. Cheap to clone: clones share
/// the same entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryAwarenessStore {
    inner: Arc<RwLock<Entries>>,
    options: StoreOptions,
}
impl MemoryAwarenessStore {
    /// An empty store with default options (30 s timeout, 64 KiB states).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given options.
    pub fn with_options(options: StoreOptions) -> Self {
        Self {
            inner: Arc::default(),
            options,
        }
    }

    /// Another handle on the same entries with other options (a second server with another
    /// timeout, or a test looking at the same data with a short timeout).
    pub fn view_with_options(&self, options: StoreOptions) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            options,
        }
    }

    /// Number of stored entries, expired and tombstones included.
    pub fn len(&self) -> usize {
        self.read(|e| e.len)
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read<T>(&self, f: impl FnOnce(&Entries) -> T) -> T {
        // Every mutation keeps the indexes consistent before it can fail or panic (allocation
        // aside), so a poisoned lock is usable.
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner))
    }

    fn expiry_cutoff(&self) -> DateTime<Utc> {
        let timeout = TimeDelta::from_std(self.options.timeout).unwrap_or(TimeDelta::MAX);
        Utc::now()
            .checked_sub_signed(timeout)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Removes every expired entry, handing each slot to `keep` first.
    fn remove_expired<T>(&self, mut keep: impl FnMut(&Slot) -> Result<T>) -> Result<Vec<T>> {
        let cutoff = self.expiry_cutoff();
        self.write(|entries| {
            let expired = entries.expired(cutoff);
            let kept = expired
                .iter()
                .map(|&s| keep(entries.slot(s)))
                .collect::<Result<Vec<T>>>()?;
            for s in expired {
                entries.remove_slot(s);
            }
            Ok(kept)
        })
    }
}

crate::storage::awareness_store!(MemoryAwarenessStore, "memory", |store| store);

#[async_trait]
impl Storage for MemoryAwarenessStore {
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        self.read(|e| {
            e.find(document_id, client_id)
                .map(|s| e.slot(s))
                .filter(|s| s.fresh(cutoff))
                .map(Slot::to_entry)
                .transpose()
        })
    }

    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        self.read(|e| {
            e.live(document_id, cutoff)
                .into_iter()
                .map(Slot::to_entry)
                .collect()
        })
    }

    async fn get_all_states(&self, document_id: &str) -> Result<Vec<LiveState>> {
        let cutoff = self.expiry_cutoff();
        Ok(self.read(|e| {
            e.live(document_id, cutoff)
                .into_iter()
                .filter_map(|s| Some(LiveState::new(s.client(), s.clock, s.state_text()?)))
                .collect()
        }))
    }

    async fn count(&self, document_id: &str) -> Result<u64> {
        let cutoff = self.expiry_cutoff();
        Ok(self.read(|e| e.live_count(document_id, cutoff)))
    }

    async fn rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<RoomCount>> {
        let cutoff = self.expiry_cutoff();
        Ok(self.read(|e| e.rooms(after, limit, cutoff)))
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let cutoff = self.expiry_cutoff();
        let options = self.options;
        self.write(|entries| {
            entries.retire_through(cutoff);
            let existing = entries.find(&update.document_id, &update.client_id);
            let fresh = existing
                .map(|s| entries.slot(s))
                .filter(|s| s.fresh(cutoff));
            if let Some(refused) = entries.refusal(&options, update, fresh) {
                return Ok(refused);
            }
            entries.write(update, existing)?;
            Ok(SetOutcome::Applied)
        })
    }

    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool> {
        Ok(self.write(|entries| {
            let found = entries.find(document_id, client_id);
            if let Some(s) = found {
                entries.remove_slot(s);
            }
            found.is_some()
        }))
    }

    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut removed = self.write(|entries| {
            let Some(c) = entries.find_conn(connection_id) else {
                return Ok(Vec::new());
            };
            let mut slots = Vec::new();
            let mut s = entries.conns[index(c)].entries.head;
            while s != NIL {
                slots.push(s);
                s = entries.slot(s).by_conn.next;
            }
            let removed = slots
                .iter()
                .map(|&s| entries.slot(s))
                .filter(|s| s.fresh(cutoff))
                .map(Slot::to_entry)
                .collect::<Result<Vec<_>>>()?;
            for s in slots {
                entries.remove_slot(s);
            }
            Ok::<_, Error>(removed)
        })?;
        sort_by_key(&mut removed);
        Ok(removed)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut expired = self.read(|e| {
            e.expired(cutoff)
                .into_iter()
                .map(|s| e.slot(s).to_entry())
                .collect::<Result<Vec<_>>>()
        })?;
        sort_by_key(&mut expired);
        Ok(expired)
    }

    async fn prune_expired(&self) -> Result<u64> {
        Ok(self.remove_expired(|_| Ok(()))?.len() as u64)
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut taken = self.remove_expired(Slot::to_entry)?;
        // The list is ordered by time; the contract orders by (document, client).
        sort_by_key(&mut taken);
        Ok(taken)
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
