//! The engine's shared state: the store, the options, the rooms with local connections, and
//! the tasks it runs (feed routing, pruning).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use super::options::PresenceOptions;
use super::room::Room;
use crate::postgres::PostgresAwarenessStore;
use crate::pruner::Pruner;
use crate::store::AwarenessStore;

/// Everything a [`Presence`](super::Presence) handle shares.
pub(super) struct Engine {
    pub(super) store: Arc<dyn AwarenessStore>,
    pub(super) postgres: Option<PostgresAwarenessStore>,
    pub(super) options: PresenceOptions,
    pub(super) rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Store connection ids are `<prefix>-<n>`: unique across instances.
    pub(super) prefix: String,
    pub(super) next_connection: AtomicU64,
    pub(super) stopping: AtomicBool,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(super) pruner: Mutex<Option<Pruner>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, through a poisoned lock.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
