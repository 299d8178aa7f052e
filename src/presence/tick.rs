//! Coalescing for busy rooms: in a room with many local connections, a move is held for the
//! room's next tick and goes out with every other move of that tick, each client's latest
//! state once, in one message per recipient ([`PresenceOptions::awareness_tick`]). Joins and
//! leaves are never held: they go at once, with whatever moves were held before them. A move
//! after a quiet tick goes at once too, so a room that is not busy never waits.
//!
//! [`PresenceOptions::awareness_tick`]: super::PresenceOptions::awareness_tick

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::Batch;
use super::room::{Room, RoomState};
use crate::y_protocols::AwarenessClientUpdate;

/// When a room's moves are held for a tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tick {
    pub(super) every: Duration,
    /// Local connections from which a room counts as busy.
    pub(super) from_members: usize,
}

/// A room's moves held for its next tick.
#[derive(Debug, Default)]
pub(super) struct Held {
    moves: HashMap<u64, AwarenessClientUpdate>,
    last_sent: Option<Instant>,
    scheduled: bool,
}

impl RoomState {
    /// Sends `accepted` (what the view let through) to every local connection: at once, or,
    /// for moves only (`urgent` false) in a busy room, at the room's next tick.
    pub(super) fn deliver(
        &mut self,
        tick: Tick,
        accepted: Vec<AwarenessClientUpdate>,
        urgent: bool,
    ) {
        if accepted.is_empty() {
            return;
        }
        let busy = self.members.len() >= tick.from_members;
        let now = Instant::now();
        let quiet = self.held.moves.is_empty()
            && self
                .held
                .last_sent
                .is_none_or(|at| now.duration_since(at) >= tick.every);
        let runtime = tokio::runtime::Handle::try_current();
        if urgent || !busy || quiet || runtime.is_err() {
            if busy {
                self.held.last_sent = Some(now);
            }
            let mut clients: Vec<AwarenessClientUpdate> = self
                .held
                .moves
                .drain()
                .filter(|(id, _)| !accepted.iter().any(|c| c.client_id == *id))
                .map(|(_, held)| held)
                .collect();
            clients.extend(accepted);
            self.send_batch(&clients);
            return;
        }
        for client in accepted {
            self.held.moves.insert(client.client_id, client);
        }
        if let (false, Ok(runtime)) = (self.held.scheduled, runtime) {
            self.held.scheduled = true;
            let at = self.held.last_sent.unwrap_or(now) + tick.every;
            let room = self.me.clone();
            runtime.spawn(flush_at(room, at));
        }
    }

    /// Queues `clients` for every local connection, encoded once.
    pub(super) fn send_batch(&self, clients: &[AwarenessClientUpdate]) {
        let Some(batch) = Batch::encode(clients) else {
            return;
        };
        let queued = self
            .members
            .values()
            .filter(|member| member.sender.queue_batch(&batch))
            .count();
        ::metrics::counter!(crate::metrics::PRESENCE_SENT).increment(queued as u64);
    }
}

/// The room's tick: what was held goes out.
async fn flush_at(room: Weak<Room>, at: Instant) {
    tokio::time::sleep_until(at).await;
    let Some(room) = room.upgrade() else { return };
    let mut state = room.lock();
    state.held.scheduled = false;
    if state.held.moves.is_empty() {
        return;
    }
    state.held.last_sent = Some(Instant::now());
    let clients: Vec<AwarenessClientUpdate> = state.held.moves.drain().map(|(_, c)| c).collect();
    state.send_batch(&clients);
}
