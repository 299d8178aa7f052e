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

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use crate::entry::{AwarenessUpdate, SetOutcome};

/// Keys remembered before the memory starts over (16 bytes each: about 16 MiB at most).
const CAPACITY: usize = 1 << 20;

/// The clock this store last wrote for each live key it wrote, by a 64-bit hash of the key: a
/// collision only costs a round trip.
#[derive(Debug, Default)]
pub(crate) struct KnownKeys {
    clocks: Mutex<HashMap<u64, i64>>,
    hasher: RandomState,
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
            clocks.remove(&self.hash(document_id, client_id));
        }
    }

    /// Whether `update` is likely a heartbeat: it beats the clock this store last wrote for
    /// the key, which was live then.
    pub(crate) fn fast_path_first(&self, update: &AwarenessUpdate) -> bool {
        let key = self.key(update);
        let clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        clocks.get(&key).is_some_and(|&clock| update.clock > clock)
    }

    /// Remembers what `update`'s outcome says about its key.
    pub(crate) fn record(&self, update: &AwarenessUpdate, outcome: SetOutcome) {
        if outcome != SetOutcome::Applied {
            return;
        }
        let key = self.key(update);
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        if update.state.is_none() {
            // A tombstone: the next update with a state joins (the full statement).
            clocks.remove(&key);
            return;
        }
        if clocks.len() >= CAPACITY {
            clocks.clear();
        }
        clocks.insert(key, update.clock);
    }
}
