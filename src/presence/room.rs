//! A room: one document with local connections — its members, which connection holds each
//! client id (claims), and the view of what its clients were told; sending to every member.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, Weak};

use bytes::Bytes;

use super::batch::Batch;
use super::outbox::Sender;
use super::tick::{Admit, Held, Tick};
use super::view::{Verdict, View};
use crate::entry::AwarenessUpdate;
use crate::y_protocols::{
    encode_awareness_update, encode_message, AwarenessClientUpdate, AwarenessMessage,
};

/// One document with local connections.
pub(super) struct Room {
    pub(super) name: String,
    pub(super) state: Mutex<RoomState>,
}

#[derive(Default)]
pub(super) struct RoomState {
    pub(super) view: View,
    pub(super) members: HashMap<u64, Member>,
    /// clientID -> the local connection that holds it, and the clock it last wrote.
    pub(super) claims: HashMap<u64, Claim>,
    /// Moves relayed but not written yet (`unsaved.rs`): clientID -> its latest.
    pub(super) unsaved: HashMap<u64, AwarenessUpdate>,
    /// Coalescing (`tick.rs`): `None` sends every change as it comes, as its own message.
    pub(super) tick: Option<Tick>,
    /// Moves held for the room's next tick.
    pub(super) held: Held,
    /// The room itself, for its tick.
    pub(super) me: Weak<Room>,
}

pub(super) struct Member {
    pub(super) sender: Sender,
    pub(super) principal: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct Claim {
    pub(super) connection: u64,
    pub(super) clock: u64,
}

impl Room {
    pub(super) fn new(name: &str, tick: Option<Tick>) -> std::sync::Arc<Self> {
        std::sync::Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            state: Mutex::new(RoomState {
                tick,
                me: me.clone(),
                ..RoomState::default()
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RoomState {
    pub(super) fn send_all(&self, message: &Bytes, except: Option<u64>) {
        let queued = self
            .members
            .iter()
            .filter(|(number, member)| {
                Some(**number) != except && member.sender.queue(message.clone())
            })
            .count();
        // One metric call per message, not per recipient.
        ::metrics::counter!(crate::metrics::PRESENCE_SENT).increment(queued as u64);
    }

    /// Runs `updates` through the view and sends the ones the clients will accept to every
    /// local connection, in one message; returns the hidden ones (clientID, leave clock).
    pub(super) fn forward(&mut self, updates: Vec<AwarenessClientUpdate>) -> Vec<(u64, u64)> {
        let mut accepted = Vec::new();
        let mut hidden = Vec::new();
        // A join or a leave among them: nothing waits for a tick.
        let mut urgent = false;
        for update in updates {
            let present = update.state.is_some();
            let was = self.view.seen(update.client_id).is_some_and(|s| s.present);
            match self.view.observe(update.client_id, update.clock, present) {
                Verdict::Forward => {
                    urgent |= !(present && was);
                    accepted.push(update);
                }
                Verdict::Ignore => {}
                Verdict::Hidden { leave_clock } => hidden.push((update.client_id, leave_clock)),
            }
        }
        self.send_changes(accepted, urgent);
        hidden
    }

    /// Sends what the view accepted: coalesced when the room has a tick (`tick.rs`), else as
    /// one message.
    fn send_changes(&mut self, accepted: Vec<AwarenessClientUpdate>, urgent: bool) {
        if accepted.is_empty() {
            return;
        }
        let Some(tick) = self.tick else {
            if let Some(message) = awareness_message(&accepted) {
                self.send_all(&message, None);
            }
            return;
        };
        let runtime = tokio::runtime::Handle::try_current();
        let members = self.members.len();
        match self
            .held
            .admit(tick, members, accepted, urgent, runtime.is_ok())
        {
            Admit::Now(clients) => self.send_batch(&clients),
            Admit::Held(Some(at)) => {
                if let Ok(runtime) = runtime {
                    runtime.spawn(flush_at(self.me.clone(), at));
                }
            }
            Admit::Held(None) => {}
        }
    }

    /// Queues `clients` for every local connection, encoded once.
    fn send_batch(&self, clients: &[AwarenessClientUpdate]) {
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

    /// Entries removed from the store (expired, a crashed or stopped instance's): no local
    /// connection holds them any more, and the clients that see them are told they left.
    pub(super) fn remove(&mut self, clients: Vec<u64>) {
        for client in &clients {
            self.claims.remove(client);
        }
        self.forward_gone(clients);
    }

    /// Entries gone from the store: leaves for the ones the clients see.
    pub(super) fn forward_gone(&mut self, clients: impl IntoIterator<Item = u64>) {
        let leaves: Vec<AwarenessClientUpdate> = clients
            .into_iter()
            .filter_map(|client_id| Some(leave(client_id, self.view.gone(client_id)?)))
            .collect();
        self.send_changes(leaves, true);
    }
}

/// The room's tick: what was held goes out.
async fn flush_at(room: Weak<Room>, at: tokio::time::Instant) {
    tokio::time::sleep_until(at).await;
    let Some(room) = room.upgrade() else { return };
    let mut state = room.lock();
    let clients = state.held.due();
    if !clients.is_empty() {
        state.send_batch(&clients);
    }
}

pub(super) fn leave(client_id: u64, clock: u64) -> AwarenessClientUpdate {
    AwarenessClientUpdate {
        client_id,
        clock,
        state: None,
    }
}

/// One y-websocket awareness message holding `clients`, or `None` when there are none.
pub(super) fn awareness_message(clients: &[AwarenessClientUpdate]) -> Option<Bytes> {
    if clients.is_empty() {
        return None;
    }
    match encode_awareness_update(clients) {
        Ok(update) => Some(encode_message(&AwarenessMessage::Update(update)).into()),
        Err(error) => {
            // Every id and clock here came through the codec or the store's range checks.
            tracing::error!(%error, "presence: cannot encode an awareness update");
            None
        }
    }
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish()
    }
}
