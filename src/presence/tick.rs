//! Coalescing for busy rooms: in a room with many local connections, a move is held for the
//! room's next tick and goes out with every other move of that tick, each client's latest
//! state once, in one message per recipient ([`PresenceOptions::awareness_tick`]). Joins and
//! leaves are never held: they go at once, with whatever moves were held before them. A move
//! after a quiet tick goes at once too, so a room that is not busy never waits. This file
//! decides; the room (`room.rs`) sends and schedules its tick.
//!
//! [`PresenceOptions::awareness_tick`]: super::PresenceOptions::awareness_tick

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

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

/// What to do with the changes the view let through.
pub(super) enum Admit {
    /// Send these now: what was held before, then the new ones.
    Now(Vec<AwarenessClientUpdate>),
    /// Held for the tick; schedule it at this instant (`None`: it is scheduled already).
    Held(Option<Instant>),
}

impl Held {
    /// `accepted` arrived in a room of `members` local connections; `urgent`: a join or a
    /// leave is among them. `can_wait`: a tick can be scheduled (inside a Tokio runtime).
    pub(super) fn admit(
        &mut self,
        tick: Tick,
        members: usize,
        accepted: Vec<AwarenessClientUpdate>,
        urgent: bool,
        can_wait: bool,
    ) -> Admit {
        let busy = members >= tick.from_members;
        let now = Instant::now();
        let quiet = self.moves.is_empty()
            && self
                .last_sent
                .is_none_or(|at| now.duration_since(at) >= tick.every);
        if urgent || !busy || quiet || !can_wait {
            if busy {
                self.last_sent = Some(now);
            }
            let mut clients: Vec<AwarenessClientUpdate> = self
                .moves
                .drain()
                .filter(|(id, _)| !accepted.iter().any(|c| c.client_id == *id))
                .map(|(_, held)| held)
                .collect();
            clients.extend(accepted);
            return Admit::Now(clients);
        }
        for client in accepted {
            self.moves.insert(client.client_id, client);
        }
        if self.scheduled {
            return Admit::Held(None);
        }
        self.scheduled = true;
        Admit::Held(Some(self.last_sent.unwrap_or(now) + tick.every))
    }

    /// The room's tick came: what was held, to send now.
    pub(super) fn due(&mut self) -> Vec<AwarenessClientUpdate> {
        self.scheduled = false;
        if self.moves.is_empty() {
            return Vec::new();
        }
        self.last_sent = Some(Instant::now());
        self.moves.drain().map(|(_, client)| client).collect()
    }
}
