//! Which of `set`'s two statements to send first ([`KnownKeys`]).
//!
//! `set` has a fast path (the heartbeat `UPDATE`) and a full statement (joins, inserts,
//! refusals); sending the fast path first costs a second round trip whenever it changes
//! nothing — every join, insert and stale update. This store remembers, per key it wrote, the
//! clock it wrote last: an update that beats the clock this store last wrote for a live key is
//! almost certainly a heartbeat (fast path first); anything else (a key this store has not
//! written, a leave's key, a clock that does not beat its own) goes straight to the full
//! statement. Either choice is exact — both statements decide every rule in the database — the
//! memory only saves the round trip that would change nothing. Another instance writing the
//! key, an expiry or a removal cost at most one extra round trip, after which the memory
//! is right again.

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::entry::{AwarenessEntry, AwarenessUpdate, SetOutcome};

/// Keys remembered before the memory starts over (16 bytes each: about 16 MiB at most).
const CAPACITY: usize = 1 << 20;

/// The clock this store last wrote for each live key it wrote, by a 64-bit hash of the key
/// (foldhash, randomly seeded; the table uses the hash as it is): a collision only costs a
/// round trip.
#[derive(Debug, Default)]
pub(crate) struct KnownKeys {
    clocks: Mutex<HashTable<(u64, i64)>>,
    hasher: DefaultHashBuilder,
}

impl KnownKeys {
    fn key(&self, update: &AwarenessUpdate) -> u64 {
        self.hash(&update.document_id, &update.client_id)
    }

    fn hash(&self, document_id: &str, client_id: &str) -> u64 {
        self.hasher.hash_one((document_id, client_id))
    }

    /// Forgets keys whose rows are gone (removed, expired, taken over): their next update
    /// joins, so it goes straight to the full statement.
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        for (document_id, client_id) in keys {
            let key = self.hash(document_id, client_id);
            if let Ok(found) = clocks.find_entry(key, |e| e.0 == key) {
                found.remove();
            }
        }
    }

    /// [`forget`](Self::forget) the keys of `entries`.
    pub(crate) fn forget_entries<'a>(&self, entries: impl IntoIterator<Item = &'a AwarenessEntry>) {
        self.forget(
            entries
                .into_iter()
                .map(|e| (e.document_id.as_str(), e.client_id.as_str())),
        );
    }

    /// Whether every update of a batch is likely a heartbeat ([`fast_path_first`](Self::fast_path_first)),
    /// under one lock.
    pub(crate) fn all_fast_path_first<'a>(
        &self,
        updates: impl IntoIterator<Item = &'a AwarenessUpdate>,
    ) -> bool {
        let clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        updates
            .into_iter()
            .all(|update| self.beats(&clocks, update))
    }

    fn beats(&self, clocks: &HashTable<(u64, i64)>, update: &AwarenessUpdate) -> bool {
        let key = self.key(update);
        clocks
            .find(key, |e| e.0 == key)
            .is_some_and(|&(_, clock)| update.clock > clock)
    }

    /// Whether `update` is likely a heartbeat: it beats the clock this store last wrote for
    /// the key, which was live then.
    pub(crate) fn fast_path_first(&self, update: &AwarenessUpdate) -> bool {
        let clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        self.beats(&clocks, update)
    }

    /// Remembers what `update`'s outcome says about its key.
    pub(crate) fn record(&self, update: &AwarenessUpdate, outcome: SetOutcome) {
        self.record_all([(update, outcome)]);
    }

    /// [`record`](Self::record) for a batch's updates and outcomes, under one lock.
    pub(crate) fn record_all<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (&'a AwarenessUpdate, SetOutcome)>,
    ) {
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        for (update, outcome) in outcomes {
            if outcome == SetOutcome::Applied {
                self.remember(&mut clocks, update);
            }
        }
    }

    fn remember(&self, clocks: &mut HashTable<(u64, i64)>, update: &AwarenessUpdate) {
        let key = self.key(update);
        match clocks.find_entry(key, |e| e.0 == key) {
            // A tombstone: the next update with a state joins (the full statement).
            Ok(found) if update.state.is_none() => {
                found.remove();
            }
            Ok(mut found) => found.get_mut().1 = update.clock,
            Err(_) if update.state.is_none() => {}
            Err(_) => {
                if clocks.len() >= CAPACITY {
                    clocks.clear();
                }
                clocks.insert_unique(key, (key, update.clock), |e| e.0);
            }
        }
    }
}
