//! The rooms' Yjs documents: one in-memory `yrs::Doc` per open room and instance, backed by
//! PostgreSQL when the relay has a database (every update appended before it is relayed, other
//! instances told through LISTEN/NOTIFY, compaction into a snapshot), in memory only otherwise.
//!
//! docs/ARCHITECTURE.md ("The path of a document update", "Decisions") has the design and why.

mod catch_up;
mod fold;
mod listener;
mod room;
mod sql;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use fold::fold;
pub use listener::listen;
use room::lock;
pub use room::Room;
pub use sql::{DocumentStats, StoredUpdate, APPEND, LOCK_CLASS};
pub use store::{Compacted, DocumentStore, CHANNEL, MIGRATIONS};

/// Why an update was not taken, or a room not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// The update is refused (a limit); the room is unchanged and keeps working. The text says
    /// which limit.
    Refused(String),
    /// Not a Yjs update (v1).
    Malformed(String),
    /// The database failed; nothing was stored or applied.
    Store(String),
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(reason) => write!(f, "update refused: {reason}"),
            Self::Malformed(reason) => write!(f, "not a Yjs update: {reason}"),
            Self::Store(reason) => write!(
                f,
                "the document store is unavailable ({reason}); the client retries on reconnect"
            ),
        }
    }
}

impl std::error::Error for DocumentError {}

/// Limits and compaction.
#[derive(Debug, Clone, Copy)]
pub struct DocumentOptions {
    /// Largest single update accepted (bytes).
    pub max_update_bytes: usize,
    /// A document whose stored bytes (snapshot plus rows) would pass this refuses further
    /// updates; reading it keeps working.
    pub max_document_bytes: usize,
    /// A room's rows are folded into its snapshot once there are this many (0: never).
    pub compact_after: usize,
}

impl Default for DocumentOptions {
    fn default() -> Self {
        Self {
            max_update_bytes: 512 * 1024,
            max_document_bytes: 64 * 1024 * 1024,
            compact_after: 500,
        }
    }
}

/// An update for the room's local connections; `origin` is the connection it came from (not
/// sent back to it), 0 for updates from the database.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The sending connection's [`Documents::origin`], or 0.
    pub origin: u64,
    /// The y-websocket message (sync, update); `None`: the origin's updates could not be
    /// stored (the database failed), so its connection should close and resync on reconnect.
    pub message: Option<Bytes>,
}

/// Every open room's document on this instance.
pub struct Documents {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    store: Option<DocumentStore>,
    options: DocumentOptions,
    origins: AtomicU64,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("rooms", &self.len())
            .field("persistent", &self.store.is_some())
            .field("options", &self.options)
            .finish()
    }
}

impl Documents {
    /// Documents in memory only (a relay without a database): lost when the room empties.
    pub fn in_memory(options: DocumentOptions) -> Self {
        Self::new(None, options)
    }

    /// Documents in PostgreSQL (`store`); run [`listen`] beside it so other instances' updates
    /// arrive.
    pub fn on_postgres(store: DocumentStore, options: DocumentOptions) -> Self {
        Self::new(Some(store), options)
    }

    fn new(store: Option<DocumentStore>, options: DocumentOptions) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            store,
            options,
            origins: AtomicU64::new(1),
        }
    }

    /// A fresh origin for a connection's updates (never 0).
    pub fn origin(&self) -> u64 {
        self.origins.fetch_add(1, Ordering::Relaxed)
    }

    /// Rooms open on this instance.
    pub fn len(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store, when the documents are in PostgreSQL.
    pub fn store(&self) -> Option<&DocumentStore> {
        self.store.as_ref()
    }

    /// Opens `name` for one connection (loading it from the database on first use here);
    /// pair with [`Documents::release`].
    pub async fn open(&self, name: &str) -> Result<Arc<Room>, DocumentError> {
        let room = {
            let mut rooms = lock(&self.rooms);
            let room = rooms
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Room::new(name, self.store.clone(), self.options)));
            lock(&room.state).holders += 1;
            room.clone()
        };
        if let Err(error) = room.loaded.get_or_try_init(|| room.load()).await {
            self.release(&room);
            return Err(error);
        }
        Ok(room)
    }

    /// One connection is done with `room`; the last one drops it from memory.
    pub fn release(&self, room: &Arc<Room>) {
        let mut rooms = lock(&self.rooms);
        let mut state = lock(&room.state);
        state.holders = state.holders.saturating_sub(1);
        if state.holders == 0 {
            if let Some(open) = rooms.get(&room.name) {
                if Arc::ptr_eq(open, room) {
                    rooms.remove(&room.name);
                }
            }
        }
    }

    /// Rows up to `id` were appended to `name` (a notification): an open room catches up,
    /// unless it has the row already.
    pub fn appended(&self, name: &str, id: i64) {
        let room = lock(&self.rooms).get(name).cloned();
        if let Some(room) = room {
            if room.lacks(id) {
                room.wake();
            }
        }
    }

    /// Every open room reads its whole document and reconciles it with the database (after
    /// the listener reconnected: notifications may be lost, and after a failover the new
    /// primary may lack commits this instance relayed; `Room::resync`).
    pub fn resync_all(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        for room in rooms {
            room.resync.store(true, Ordering::SeqCst);
            room.wake();
        }
    }
}
