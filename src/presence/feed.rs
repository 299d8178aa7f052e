//! What reaches the rooms from outside a connection: the change feed (other instances'
//! writes, resyncs), the pruner's departed entries, and the leaves the view must reassert.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::engine::{lock, Engine};
use super::room::{awareness_message, leave, Room};
use crate::entry::{AwarenessEntry, AwarenessUpdate};
use crate::error::Result;
use crate::postgres::{ChangeKind, FeedEvent};
use crate::y_protocols::apply::{as_client, awareness_clients, y_client_id, y_clock};
use crate::y_protocols::AwarenessClientUpdate;

impl Engine {
    pub(super) fn room(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// Entries the pruner removed: leaves for the rooms here that show them.
    pub(super) fn departed(&self, entries: Vec<AwarenessEntry>) {
        let mut by_room: HashMap<String, Vec<u64>> = HashMap::new();
        for entry in entries.into_iter().filter(|e| !e.is_tombstone()) {
            if let Some(client) = y_client_id(&entry.client_id) {
                by_room.entry(entry.document_id).or_default().push(client);
            }
        }
        for (name, clients) in by_room {
            if let Some(room) = self.room(&name) {
                tracing::debug!(room = %name, count = clients.len(), "presence: announcing departed clients");
                room.lock().remove(clients);
            }
        }
    }

    /// Another instance changed clients of a room here.
    pub(super) async fn changed(&self, change: crate::postgres::AwarenessChange) -> Result<()> {
        let Some(room) = self.room(&change.document_id) else {
            return Ok(());
        };
        match change.kind {
            ChangeKind::Set | ChangeKind::Leave => {
                let mut updates = Vec::with_capacity(change.client_ids.len());
                let mut gone = Vec::new();
                for (index, id) in change.client_ids.iter().enumerate() {
                    let Some(client_id) = y_client_id(id) else {
                        continue;
                    };
                    match change.state_of(index) {
                        Some(carried) => {
                            if let Some(clock) = y_clock(carried.clock) {
                                updates.push(AwarenessClientUpdate {
                                    client_id,
                                    clock,
                                    state: carried.state.clone(),
                                });
                            }
                        }
                        // Too large for the notification: re-read it.
                        None => match self.store.get(&room.name, id).await? {
                            Some(entry) => updates.extend(as_client(entry)),
                            None => gone.push(client_id),
                        },
                    }
                }
                let hidden = {
                    let mut state = room.lock();
                    let hidden = state.forward(updates);
                    state.forward_gone(gone);
                    hidden
                };
                self.reassert_leaves(&room, hidden).await;
            }
            // Removed elsewhere: a closed instance's, a crashed one's, expired ones.
            _ => {
                let clients: Vec<u64> = change
                    .client_ids
                    .iter()
                    .filter_map(|id| y_client_id(id))
                    .collect();
                room.lock().remove(clients);
            }
        }
        Ok(())
    }

    /// Another instance accepted a participant at a clock this instance's clients ignore
    /// (they saw it leave at a clock at least as high): if a local connection holds it, that
    /// connection is sent the leave; otherwise the leave is written back, so the owner's
    /// instance relays it to the owner, which re-announces itself one clock higher.
    pub(super) async fn reassert_leaves(&self, room: &Room, hidden: Vec<(u64, u64)>) {
        for (client_id, clock) in hidden {
            let local = {
                let state = room.lock();
                state
                    .claims
                    .get(&client_id)
                    .and_then(|claim| state.members.get(&claim.connection))
                    .map(|member| member.sender.clone())
            };
            if let Some(sender) = local {
                if let Some(message) = awareness_message(&[leave(client_id, clock)]) {
                    sender.send(message);
                }
                continue;
            }
            let id = client_id.to_string();
            let entry = match self.store.get(&room.name, &id).await {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "presence: cannot re-read a participant");
                    continue;
                }
            };
            let tombstone = AwarenessUpdate::leave(
                room.name.clone(),
                id,
                entry.connection_id,
                i64::try_from(clock).unwrap_or(i64::MAX),
            )
            .with_owner(entry.owner);
            tracing::debug!(room = %room.name, client_id, clock, "presence: rejoin after leave, re-asserting the leave");
            if let Err(error) = self.store.set(&tombstone).await {
                tracing::warn!(%error, "presence: cannot re-assert a leave");
            }
        }
    }

    /// Events may have been missed: re-read every room here.
    pub(super) async fn resync(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        for room in rooms {
            let live = match self.store.get_all(&room.name).await {
                Ok(live) => live,
                Err(error) => {
                    tracing::warn!(%error, room = %room.name, "presence: cannot resync a room");
                    continue;
                }
            };
            let clients = awareness_clients(live);
            let hidden = {
                let mut state = room.lock();
                let live: std::collections::HashSet<u64> =
                    clients.iter().map(|c| c.client_id).collect();
                let missing: Vec<u64> = state
                    .view
                    .present()
                    .into_iter()
                    .filter(|id| !live.contains(id))
                    .collect();
                let hidden = state.forward(clients);
                state.forward_gone(missing);
                hidden
            };
            self.reassert_leaves(&room, hidden).await;
        }
    }
}

/// The change feed's events (other instances' writes), routed to the rooms here.
pub(super) async fn route_feed(
    engine: std::sync::Weak<Engine>,
    mut events: crate::postgres::ChangeStream,
) {
    while let Some(event) = events.next().await {
        let Some(engine) = engine.upgrade() else {
            break;
        };
        match event {
            FeedEvent::Change(change) => {
                if let Err(error) = engine.changed(change).await {
                    tracing::warn!(%error, "presence: cannot follow a change; the next resync catches up");
                }
            }
            FeedEvent::Resync => {
                tracing::info!("presence: change feed resync, re-reading the rooms");
                engine.resync().await;
            }
        }
    }
}
