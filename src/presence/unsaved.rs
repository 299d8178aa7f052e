//! Moves relayed at once and saved later (PostgreSQL, [`PresenceOptions::persist_interval`]):
//! a held client's move is published on the change feed and sent to the room's connections
//! without a write; the instance writes its rooms' latest unsaved moves once per interval, as
//! one statement, without publishing them again.
//!
//! Why: a write per move was an `UPDATE` transaction on top of the `NOTIFY` transaction that
//! carries it to the other instances, about half of what presence cost PostgreSQL. What the
//! table then shows lags the relayed state by at most the interval plus one write; joins,
//! leaves, refusals and anything the routing is not sure of are written as they happen, so who
//! is present is never behind. A crash of the instance loses at most the interval's moves, and
//! its clients are removed with its lease anyway.
//!
//! [`PresenceOptions::persist_interval`]: super::PresenceOptions::persist_interval

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::engine::{lock, Engine};
use super::room::{Room, RoomState};
use super::session::Session;
use crate::entry::AwarenessUpdate;
use crate::y_protocols::apply::as_update;
use crate::y_protocols::AwarenessClientUpdate;

/// Most updates in one saving statement.
const MAX_BATCH: usize = 512;

impl Session {
    /// `client`'s update, published and to be saved later, when it is a move the store would
    /// apply anyway: a state (not a leave) of a client this connection holds (its last write
    /// was applied as this principal), newer than anything the room was told, while the
    /// instance holds its lease. `None`: write it now (everything else, and on the memory
    /// store).
    pub(super) fn defer(
        &self,
        state: &RoomState,
        client: &AwarenessClientUpdate,
    ) -> Option<AwarenessUpdate> {
        let store = self.engine.postgres.as_ref()?;
        if self.engine.options.persist_interval.is_zero() || client.state.is_none() {
            return None;
        }
        let claim = state.claims.get(&client.client_id)?;
        let seen = state.view.seen(client.client_id);
        if claim.connection != self.number
            || client.clock <= claim.clock
            || seen.is_some_and(|s| client.clock <= s.clock)
            || !store.holds_lease()
        {
            return None;
        }
        let update = as_update(
            &self.room.name,
            &self.connection_id,
            self.identity.principal.as_deref(),
            client,
        );
        // Invalid, or too large for a notification: written now (the store refuses the one,
        // and the other instances re-read the other).
        store.publish_unsaved(&update).then_some(update)
    }
}

impl RoomState {
    /// Replaces states read from the table by the newer unsaved ones of this instance.
    pub(super) fn overlay_unsaved(&self, clients: &mut [AwarenessClientUpdate]) {
        for client in clients {
            let newer = self
                .unsaved
                .get(&client.client_id)
                .filter(|u| u.clock > i64::try_from(client.clock).unwrap_or(i64::MAX));
            if let Some(update) = newer {
                client.clock = u64::try_from(update.clock).unwrap_or(client.clock);
                client.state.clone_from(&update.state);
            }
        }
    }
}

impl Engine {
    /// Writes every room's unsaved moves (one statement per [`MAX_BATCH`]). What cannot be
    /// written now (the database away) is kept for the next tick unless a newer move came.
    pub(super) async fn save_unsaved(&self) {
        let Some(store) = &self.postgres else { return };
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        // Moved out, not copied: `keys[i]` says whose `updates[i]` is, for putting it back.
        let mut taken = Vec::new();
        let mut keys: Vec<(usize, u64)> = Vec::new();
        let mut updates: Vec<AwarenessUpdate> = Vec::new();
        for room in rooms {
            let unsaved = std::mem::take(&mut room.lock().unsaved);
            if unsaved.is_empty() {
                continue;
            }
            for (client, update) in unsaved {
                keys.push((taken.len(), client));
                updates.push(update);
            }
            taken.push(room);
        }
        let mut failed = false;
        for batch in updates.chunks(MAX_BATCH) {
            match store.save_unsaved(batch).await {
                Ok(outcomes) => {
                    let unapplied = outcomes.iter().filter(|o| !o.is_applied()).count();
                    if unapplied > 0 {
                        // Another instance wrote the client since (a failover): its newer
                        // state stands.
                        tracing::debug!(unapplied, "presence: unsaved moves superseded");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, updates = batch.len(), "presence: cannot save moves; kept for the next tick");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // Kept whole (re-writing the saved ones is harmless: the same clocks are stale).
            for ((room, client), update) in keys.into_iter().zip(updates) {
                let mut state = taken[room].lock();
                if state.claims.contains_key(&client) {
                    state.unsaved.entry(client).or_insert(update);
                }
            }
        }
    }
}

/// Saves the engine's unsaved moves every `every` until the engine is gone.
pub(super) async fn save_loop(engine: Weak<Engine>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            break;
        };
        engine.save_unsaved().await;
    }
}
