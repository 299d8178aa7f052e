//! Catching a room up from the database: after a notification, the rows after its watermark;
//! after the listener reconnected (a restart, or a failover to a promoted standby), the whole
//! document, reconciled both ways (`Room::resync`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use super::room::{lock, RoomState};
use super::{DocumentError, Relayed, Room, StoredUpdate};

impl Room {
    /// Whether the room must read the database to have row `id`. Not when it applied it
    /// already, nor when this instance appended it: every other instance's row committed
    /// before it was announced before it (notifications arrive in commit order) and woke a
    /// catch-up of its own, and a lost notification is caught up after the reconnect. Past
    /// 1,024 rows of its own above the watermark the room reads anyway, which moves the
    /// watermark and empties that set.
    pub(super) fn lacks(&self, id: i64) -> bool {
        let state = lock(&self.state);
        !(id <= state.watermark || (state.own.contains(&id) && state.own.len() < 1024))
    }

    /// Asks for a catch-up from the database; one runs at a time per room, and requests made
    /// while it runs make it run again.
    pub(super) fn wake(self: &Arc<Self>) {
        if self.store.is_none() || self.wanted.fetch_add(1, Ordering::SeqCst) > 0 {
            return;
        }
        let room = self.clone();
        tokio::spawn(async move {
            loop {
                let seen = room.wanted.load(Ordering::SeqCst);
                let result = if room.resync.swap(false, Ordering::SeqCst) {
                    let result = room.resync().await;
                    if result.is_err() {
                        room.resync.store(true, Ordering::SeqCst);
                    }
                    result
                } else {
                    room.catch_up().await
                };
                if let Err(error) = result {
                    tracing::warn!(%error, room = %room.name, "catching up failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if lock(&room.state).holders == 0 {
                        room.wanted.store(0, Ordering::SeqCst);
                        break;
                    }
                    continue;
                }
                if room
                    .wanted
                    .compare_exchange(seen, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break;
                }
            }
        });
    }

    /// Applies and relays what the database has after this room's watermark.
    pub async fn catch_up(&self) -> Result<(), DocumentError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let after = lock(&self.state).watermark;
        let stored = store.read_after(&self.name, after).await?;
        let mut state = lock(&self.state);
        // Another catch-up cannot have run meanwhile (one at a time), but the room may have
        // been loaded past `after` by then: keep only what is still new.
        let watermark = state.watermark;
        let fresh: Vec<StoredUpdate> = stored.into_iter().filter(|u| u.id > watermark).collect();
        for message in state.apply_stored(&fresh) {
            metrics::counter!("relay_document_updates_total", "origin" => "database").increment(1);
            let _ = self.updates.send(Relayed {
                origin: 0,
                message: Some(message.into()),
            });
        }
        Ok(())
    }

    /// Reads the whole document (snapshot and rows) and reconciles it with this room's copy.
    /// What the database has and the room lacks is applied and relayed. What the room has and
    /// the database lacks is appended again, as one update: updates this instance relayed
    /// whose commits a failover lost (the standby never received them). Without that, every
    /// later update of their clients would wait forever, for a dependency no one stores, in
    /// every fresh load and on every other instance. The watermark restarts from what was
    /// read, and the room's own ids are forgotten: a promoted standby may hand out again ids
    /// the room saw on the old primary.
    pub async fn resync(&self) -> Result<(), DocumentError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let stored = store.read_after(&self.name, 0).await?;
        let database = yrs::Doc::new();
        for row in &stored {
            apply_to(&database, &row.bytes);
        }
        let (relay, missing) = {
            let mut state = lock(&self.state);
            let before = state.doc.transact().snapshot();
            let stored_snapshot = database.transact().snapshot();
            state.apply(
                &database
                    .transact()
                    .encode_state_as_update_v1(&before.state_map),
            );
            let txn = state.doc.transact();
            let after = txn.snapshot();
            let relay = (after != before).then(|| txn.encode_state_as_update_v1(&before.state_map));
            let missing = (after != stored_snapshot)
                .then(|| txn.encode_state_as_update_v1(&stored_snapshot.state_map));
            drop(txn);
            state.watermark = stored.iter().map(|row| row.id).max().unwrap_or(0);
            state.own.clear();
            state.rows = stored.iter().filter(|row| !row.snapshot).count();
            state.stored_bytes = stored.iter().map(|row| row.bytes.len()).sum();
            (relay, missing)
        };
        if let Some(update) = relay {
            metrics::counter!("relay_document_updates_total", "origin" => "database").increment(1);
            let message = YMessage::Sync(SyncMessage::Update(update)).encode_v1();
            let _ = self.updates.send(Relayed {
                origin: 0,
                message: Some(message.into()),
            });
        }
        if let Some(update) = missing {
            let ids = store.append(&self.name, &[update.as_slice()]).await?;
            metrics::counter!("relay_document_repairs_total").increment(1);
            tracing::warn!(room = %self.name, bytes = update.len(), "the database lacked updates this instance had relayed (a failover lost their commits): stored them again");
            let mut state = lock(&self.state);
            let watermark = state.watermark;
            state
                .own
                .extend(ids.into_iter().filter(|id| *id > watermark));
            state.rows += 1;
            state.stored_bytes += update.len();
        }
        Ok(())
    }
}

impl RoomState {
    /// Applies rows read from the database (a snapshot first, if any); returns the update
    /// messages to relay (rows this instance appended itself are skipped).
    pub(super) fn apply_stored(&mut self, stored: &[StoredUpdate]) -> Vec<Vec<u8>> {
        let mut relay = Vec::new();
        for row in stored {
            if row.snapshot {
                // Compaction passed the watermark: the rows in between are only in the
                // snapshot. Relay what it adds to this copy.
                let before = self.doc.transact().state_vector();
                self.apply(&row.bytes);
                let diff = self.doc.transact().encode_state_as_update_v1(&before);
                relay.push(YMessage::Sync(SyncMessage::Update(diff)).encode_v1());
                self.rows = 0;
                self.stored_bytes = row.bytes.len();
            } else {
                self.rows += 1;
                if !self.own.remove(&row.id) {
                    self.apply(&row.bytes);
                    self.stored_bytes += row.bytes.len();
                    relay.push(YMessage::Sync(SyncMessage::Update(row.bytes.clone())).encode_v1());
                } else {
                    // Counted when appended.
                    self.rows -= 1;
                }
            }
            self.watermark = self.watermark.max(row.id);
        }
        let watermark = self.watermark;
        self.own.retain(|id| *id > watermark);
        relay
    }

    pub(super) fn apply(&mut self, bytes: &[u8]) {
        apply_to(&self.doc, bytes);
    }
}

/// Applies a stored update (v1) to `doc`; one that does not decode or apply is skipped, logged.
fn apply_to(doc: &yrs::Doc, bytes: &[u8]) {
    match Update::decode_v1(bytes) {
        Ok(update) => {
            if let Err(error) = doc.transact_mut().apply_update(update) {
                tracing::warn!(%error, "a stored update does not apply; skipped");
            }
        }
        Err(error) => tracing::warn!(%error, "a stored update does not decode; skipped"),
    }
}
