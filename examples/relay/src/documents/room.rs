//! One room's document on this instance: the yrs doc, the watermark of what it applied from
//! the database, the append queue, compaction (catching up: `catch_up.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, OnceCell};
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::{DocumentError, DocumentOptions, DocumentStore, Relayed};

/// A client's update waiting for its append.
struct Queued {
    origin: u64,
    bytes: Vec<u8>,
    update: Update,
}

/// One room's document on this instance.
pub struct Room {
    pub(super) name: String,
    pub(super) store: Option<DocumentStore>,
    options: DocumentOptions,
    pub(super) state: Mutex<RoomState>,
    pub(super) loaded: OnceCell<()>,
    pub(super) updates: broadcast::Sender<Relayed>,
    /// Catch-ups asked for since the running one started (one runs at a time).
    pub(super) wanted: AtomicUsize,
    /// The next catch-up reads the whole document and stores what the database lacks (after
    /// the listener reconnected: a restart, or a failover that may have lost commits).
    pub(super) resync: AtomicBool,
}

pub(super) struct RoomState {
    pub(super) doc: yrs::Doc,
    /// Last row (or snapshot) of the database applied here; the next catch-up reads after it.
    pub(super) watermark: i64,
    /// Rows this instance appended (and applied) above the watermark: a catch-up skips them.
    pub(super) own: BTreeSet<i64>,
    /// Rows after the snapshot, and the stored bytes (snapshot + rows): compaction and the
    /// size limit go by these.
    pub(super) rows: usize,
    pub(super) stored_bytes: usize,
    compacting: bool,
    /// Updates accepted and waiting for the append in flight (one at a time per room).
    queue: Vec<Queued>,
    queued_bytes: usize,
    appending: bool,
    /// Connections holding the room; at 0 it leaves memory (the database has everything).
    pub(super) holders: usize,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Document updates a room's channel holds for its slowest local connection; one that falls
/// further behind gets the whole document instead (`Lagged`). The channel allocates every slot
/// when the room opens: 1,024 slots were 165 KB per room, 8 KB per idle connection in the
/// memory benchmark's rooms of 20 (heaptrack); 256 are a quarter of that.
const UPDATES_CAPACITY: usize = 256;

impl Room {
    pub(super) fn new(name: &str, store: Option<DocumentStore>, options: DocumentOptions) -> Self {
        Self {
            name: name.to_owned(),
            store,
            options,
            state: Mutex::new(RoomState {
                doc: yrs::Doc::new(),
                watermark: 0,
                own: BTreeSet::new(),
                rows: 0,
                stored_bytes: 0,
                compacting: false,
                queue: Vec::new(),
                queued_bytes: 0,
                appending: false,
                holders: 0,
            }),
            loaded: OnceCell::new(),
            updates: broadcast::channel(UPDATES_CAPACITY).0,
            wanted: AtomicUsize::new(0),
            resync: AtomicBool::new(false),
        }
    }

    /// The room's name (its document id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Updates for this room's local connections.
    pub fn subscribe(&self) -> broadcast::Receiver<Relayed> {
        self.updates.subscribe()
    }

    /// Sync step 1 for a new connection: the document's state vector.
    pub fn sync_step1(&self) -> Vec<u8> {
        let state = lock(&self.state);
        let sv = state.doc.transact().state_vector();
        YMessage::Sync(SyncMessage::SyncStep1(sv)).encode_v1()
    }

    /// Sync step 2 for a client's state vector: exactly what it lacks.
    pub fn sync_step2(&self, state_vector: &StateVector) -> Vec<u8> {
        let state = lock(&self.state);
        let update = state.doc.transact().encode_state_as_update_v1(state_vector);
        YMessage::Sync(SyncMessage::SyncStep2(update)).encode_v1()
    }

    /// Whether `update` (v1) holds content the document lacks, or deletions (a read-only
    /// client's answer to sync step 1 normally holds neither).
    pub fn adds_to(&self, update: &[u8]) -> bool {
        use yrs::updates::decoder::Decode;
        let Ok(update) = yrs::Update::decode_v1(update) else {
            return true;
        };
        let state = lock(&self.state);
        let known = state.doc.transact().state_vector();
        update.extends(&known)
    }

    /// The whole document as one update message (for a connection that fell behind).
    pub fn full_update(&self) -> Vec<u8> {
        let state = lock(&self.state);
        let update = state
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        YMessage::Sync(SyncMessage::Update(update)).encode_v1()
    }

    /// The document's text content of `Y.Text` `name` (tests, tools).
    pub fn text(&self, name: &str) -> String {
        use yrs::GetString;
        let state = lock(&self.state);
        let text = state.doc.get_or_insert_text(name);
        let txn = state.doc.transact();
        text.get_string(&txn)
    }

    pub(super) async fn load(&self) -> Result<(), DocumentError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let stored = store.read_after(&self.name, 0).await?;
        let mut state = lock(&self.state);
        state.apply_stored(&stored);
        Ok(())
    }

    /// A client's update (sync step 2 or update): checked against the limits, then queued;
    /// the room's appender stores the queue in one statement (with a database) and only then
    /// applies and relays it. Returns once queued: a connection's next update does not wait for
    /// the commit, and the updates that queue up meanwhile share the next one.
    pub fn apply_local(self: &Arc<Self>, origin: u64, bytes: Vec<u8>) -> Result<(), DocumentError> {
        if bytes.len() > self.options.max_update_bytes {
            metrics::counter!("relay_document_updates_refused_total", "reason" => "update_size")
                .increment(1);
            return Err(DocumentError::Refused(format!(
                "an update of {} bytes exceeds the limit of {} bytes (--max-update-bytes)",
                bytes.len(),
                self.options.max_update_bytes
            )));
        }
        let update =
            Update::decode_v1(&bytes).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        if update.is_empty() {
            return Ok(());
        }
        let start = {
            let mut state = lock(&self.state);
            let size = state.stored_bytes + state.queued_bytes + bytes.len();
            if size > self.options.max_document_bytes {
                metrics::counter!("relay_document_updates_refused_total", "reason" => "document_size").increment(1);
                return Err(DocumentError::Refused(format!(
                    "document {:?} has reached its size limit of {} bytes (--max-document-bytes); it can be read but not changed",
                    self.name, self.options.max_document_bytes
                )));
            }
            state.queued_bytes += bytes.len();
            state.queue.push(Queued {
                origin,
                bytes,
                update,
            });
            !std::mem::replace(&mut state.appending, true)
        };
        if start {
            let room = self.clone();
            tokio::spawn(async move { room.append_queued().await });
        }
        Ok(())
    }

    /// The room's appender: stores what is queued, applies and relays it, until the queue is
    /// empty.
    async fn append_queued(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = lock(&self.state);
                if state.queue.is_empty() {
                    state.appending = false;
                    return;
                }
                state.queued_bytes = 0;
                std::mem::take(&mut state.queue)
            };
            let ids = match &self.store {
                None => Ok(Vec::new()),
                Some(store) => {
                    let updates: Vec<&[u8]> = batch.iter().map(|q| q.bytes.as_slice()).collect();
                    store.append(&self.name, &updates).await
                }
            };
            if let Err(error) = &ids {
                tracing::warn!(%error, room = %self.name, updates = batch.len(), "cannot store updates; their connections close");
                for queued in &batch {
                    let _ = self.updates.send(Relayed {
                        origin: queued.origin,
                        message: None,
                    });
                }
                continue;
            }
            let ids = ids.unwrap_or_default();
            let compact = {
                let mut state = lock(&self.state);
                let watermark = state.watermark;
                state
                    .own
                    .extend(ids.iter().copied().filter(|id| *id > watermark));
                let mut txn = state.doc.transact_mut();
                let mut applied = Vec::with_capacity(batch.len());
                for queued in batch {
                    if let Err(error) = txn.apply_update(queued.update) {
                        tracing::warn!(%error, room = %self.name, "an update does not apply; skipped");
                    }
                    applied.push((queued.origin, queued.bytes));
                }
                drop(txn);
                for (origin, bytes) in applied {
                    state.rows += 1;
                    state.stored_bytes += bytes.len();
                    metrics::counter!("relay_document_updates_total", "origin" => "local")
                        .increment(1);
                    let message = YMessage::Sync(SyncMessage::Update(bytes)).encode_v1();
                    let _ = self.updates.send(Relayed {
                        origin,
                        message: Some(message.into()),
                    });
                }
                let due = self.options.compact_after > 0
                    && state.rows >= self.options.compact_after
                    && !state.compacting;
                if due {
                    state.compacting = true;
                }
                due
            };
            if compact {
                let room = self.clone();
                tokio::spawn(async move { room.compact().await });
            }
        }
    }

    async fn compact(&self) {
        match &self.store {
            None => {
                let mut state = lock(&self.state);
                let size = state
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default())
                    .len();
                state.stored_bytes = size;
                state.rows = 0;
                state.compacting = false;
            }
            Some(store) => {
                let result = store.compact(&self.name).await;
                let mut state = lock(&self.state);
                state.compacting = false;
                match result {
                    Ok(Some(done)) => {
                        metrics::counter!("relay_document_compactions_total").increment(1);
                        tracing::debug!(room = %self.name, through = done.through, rows = done.rows, snapshot_bytes = done.snapshot_bytes, "compacted");
                        state.rows = state.rows.saturating_sub(done.rows);
                        state.stored_bytes = state
                            .stored_bytes
                            .saturating_sub(done.row_bytes)
                            .max(done.snapshot_bytes);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, room = %self.name, "compaction failed; retried after the next updates")
                    }
                }
            }
        }
    }
}
