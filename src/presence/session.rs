//! A session: one connection in one room — what arrives is decoded, routed (written, an echo
//! dropped, a spoof dropped, the rejoin remedy), written as the connection's principal, and its
//! leaves are written when it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::engine::{lock, Engine};
use super::identity::Identity;
use super::leaving::{release, write_leaves};
use super::options::{close_code, Disconnect};
use super::outbox::Sender;
use super::room::{awareness_message, leave, Claim, Room};
use super::route::{route, Route};
use crate::entry::{AwarenessEntry, SetOutcome};
use crate::error::Result;
use crate::y_protocols::apply::{apply_clients, awareness_clients, y_clock};
use crate::y_protocols::raw::decode_awareness_raw;
use crate::y_protocols::{
    decode_message, encode_awareness_update, encode_message, encode_permission_denied,
    AwarenessClientUpdate, AwarenessMessage, CodecError,
};

/// What [`Session::receive`] did with an awareness message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Clients whose update was applied (and relayed).
    pub applied: Vec<u64>,
    /// Clients dropped as echoes of what the connection was sent, or held by another local
    /// connection.
    pub dropped: Vec<u64>,
    /// Clients the store refused, with why: [`SetOutcome::Forbidden`] (another principal's
    /// client id), [`SetOutcome::DocumentFull`], [`SetOutcome::ConnectionFull`]. The client
    /// was told once per reason (y-websocket's permission-denied message).
    pub refused: Vec<(u64, SetOutcome)>,
}

/// One connection in one room. Hand it what arrives ([`receive`](Self::receive)); call
/// [`close`](Self::close) when the connection ends (dropping it releases the connection too,
/// writing its leaves from a spawned task).
#[derive(Debug)]
pub struct Session {
    pub(super) engine: Arc<Engine>,
    pub(super) room: Arc<Room>,
    pub(super) number: u64,
    pub(super) connection_id: String,
    pub(super) identity: Identity,
    pub(super) sender: Sender,
    pub(super) closed: bool,
    /// Refusals the client was told of: (clientID, outcome).
    pub(super) refused: Mutex<HashMap<u64, SetOutcome>>,
}

impl Session {
    /// The connection id its entries are written under.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The room (document id).
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// The principal it writes as.
    pub fn principal(&self) -> Option<&str> {
        self.identity.principal.as_deref()
    }

    /// The identity it was joined as (what others see as its `state.user`).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Queues a message of the server's own (a document sync message, say) for this
    /// connection, in order with the engine's.
    pub fn send(&self, message: impl Into<Bytes>) {
        self.sender.send(message.into());
    }

    /// Ends the connection: its outbox yields [`Outgoing::Close`](super::Outgoing::Close) with
    /// `reason` next (the
    /// first reason given wins).
    pub fn disconnect(&self, reason: Disconnect) {
        self.sender.disconnect(reason);
    }

    /// Queues `message` for every other local connection of the room.
    pub fn broadcast(&self, message: impl Into<Bytes>) {
        let message = message.into();
        self.room.lock().send_all(&message, Some(self.number));
    }

    /// Handles a y-websocket awareness (1) or query-awareness (3) message. `Err`: close the
    /// connection with that code and reason (malformed input, another message type, or the
    /// store failing).
    pub async fn receive(&self, message: &[u8]) -> std::result::Result<Received, Disconnect> {
        match decode_message(message) {
            Ok(AwarenessMessage::Update(update)) => self.awareness(&update).await,
            Ok(AwarenessMessage::Query) => {
                self.send_state().await.map_err(Disconnect::from_store)?;
                Ok(Received::default())
            }
            Err(crate::y_protocols::CodecError::UnsupportedMessageType(kind)) => {
                Err(Disconnect::new(
                    close_code::UNSUPPORTED_DATA,
                    format!("message type {kind} is not an awareness message"),
                ))
            }
            Err(e) => Err(Disconnect::new(
                close_code::INVALID_DATA,
                format!("malformed message: {e}"),
            )),
        }
    }

    /// Everyone's awareness state in the room, to this connection. What it holds that the
    /// room's other local connections were not told yet (a change whose feed event has not
    /// arrived) goes to them too: the view mirrors what *every* local client was told.
    pub async fn send_state(&self) -> Result<()> {
        let mut clients = awareness_clients(self.engine.store.get_all(&self.room.name).await?);
        self.room.lock().overlay_unsaved(&mut clients);
        let update = encode_awareness_update(&clients)?;
        let hidden = self.room.lock().forward(clients);
        self.sender
            .send(encode_message(&AwarenessMessage::Update(update)).into());
        self.engine.reassert_leaves(&self.room, hidden).await;
        Ok(())
    }

    pub(super) async fn awareness(
        &self,
        payload: &[u8],
    ) -> std::result::Result<Received, Disconnect> {
        let malformed = |e: CodecError| {
            Disconnect::new(
                close_code::INVALID_DATA,
                format!("malformed awareness update: {e}"),
            )
        };
        // Framing, limits and JSON syntax are checked for every client; a state is built only
        // for the clients that are written: most of what arrives is echoes (every y-websocket
        // client sends back each change it accepts), dropped on their id and clock.
        let raw =
            decode_awareness_raw(payload, &self.engine.options.decode_limits).map_err(malformed)?;
        let mut incoming = Vec::with_capacity(raw.len());
        for client in raw {
            incoming.push((client, client.check().map_err(malformed)?));
        }
        let mut received = Received::default();
        let mut writes = Vec::with_capacity(incoming.len());
        let mut remedies = Vec::new();
        {
            let mut state = self.room.lock();
            let mut moves = Vec::new();
            for (raw, present) in incoming {
                let id = raw.client_id;
                match route(
                    &state,
                    (self.number, self.principal()),
                    id,
                    raw.clock,
                    present,
                ) {
                    Route::Write => {
                        let mut client = raw.parse().map_err(malformed)?;
                        // Before it is stored or relayed: others see the server's identity.
                        self.identity.stamp(std::slice::from_mut(&mut client));
                        match self.defer(&state, &client) {
                            Some(update) => {
                                state.claims.insert(
                                    client.client_id,
                                    Claim {
                                        connection: self.number,
                                        clock: client.clock,
                                    },
                                );
                                state.unsaved.insert(client.client_id, update);
                                received.applied.push(client.client_id);
                                moves.push(client);
                            }
                            None => writes.push(client),
                        }
                    }
                    Route::Remedy(leave_clock) => {
                        received.dropped.push(id);
                        remedies.push(leave(id, leave_clock));
                    }
                    Route::Drop => {
                        let reason = if state.claims.contains_key(&id) {
                            "foreign"
                        } else {
                            "echo"
                        };
                        ::metrics::counter!(crate::metrics::PRESENCE_DROPPED, "reason" => reason)
                            .increment(1);
                        received.dropped.push(id);
                    }
                }
            }
            for (client_id, leave_clock) in state.forward(moves) {
                remedies.push(leave(client_id, leave_clock));
            }
        }
        if writes.is_empty() {
            self.remedy(&remedies);
            return Ok(received);
        }
        let outcomes = match apply_clients(
            &*self.engine.store,
            &self.room.name,
            &self.connection_id,
            self.identity.principal.as_deref(),
            &writes,
        )
        .await
        {
            Ok(outcomes) => outcomes,
            // The database is away (a restart, a failover; or longer than the lease, until a
            // renewal succeeds). Presence is ephemeral: the update is dropped, not relayed,
            // and the connection stays; the client's next move or heartbeat is written once
            // the database is back. Closing would make every client reconnect, again and
            // again, for as long as it is away.
            Err(error) if error.passes_by_itself() => {
                tracing::warn!(%error, room = %self.room.name, "presence: the store is unreachable; update dropped, connection kept");
                ::metrics::counter!(crate::metrics::PRESENCE_DROPPED, "reason" => "unavailable")
                    .increment(writes.len() as u64);
                received
                    .dropped
                    .extend(writes.iter().map(|client| client.client_id));
                self.remedy(&remedies);
                return Ok(received);
            }
            Err(error) => return Err(Disconnect::from_store(error)),
        };
        let mut unknown_stale = Vec::new();
        let mut refusals = Vec::new();
        {
            let mut state = self.room.lock();
            let mut applied = Vec::new();
            for (client, outcome) in writes.into_iter().zip(outcomes) {
                match outcome {
                    SetOutcome::Applied => {
                        let written = i64::try_from(client.clock).unwrap_or(i64::MAX);
                        if state
                            .unsaved
                            .get(&client.client_id)
                            .is_some_and(|u| u.clock <= written)
                        {
                            state.unsaved.remove(&client.client_id);
                        }
                        state.claims.insert(
                            client.client_id,
                            Claim {
                                connection: self.number,
                                clock: client.clock,
                            },
                        );
                        received.applied.push(client.client_id);
                        applied.push(client);
                    }
                    SetOutcome::Stale => {
                        if client.state.is_none() {
                            continue;
                        }
                        // The rejoin-after-leave race: the peers saw this client leave at a
                        // clock at least as high; the client must hear that leave.
                        match state.view.seen(client.client_id) {
                            Some(seen) if !seen.present && seen.clock >= client.clock => {
                                remedies.push(leave(client.client_id, seen.clock));
                            }
                            Some(_) => {}
                            None => unknown_stale.push(client),
                        }
                    }
                    refused => {
                        received.refused.push((client.client_id, refused));
                        refusals.push((client.client_id, refused));
                    }
                }
            }
            for (client_id, leave_clock) in state.forward(applied) {
                remedies.push(leave(client_id, leave_clock));
            }
        }
        // A stale state the room never showed: the store holds something newer; a tombstone
        // at or above its clock means the client must re-announce itself.
        for client in unknown_stale {
            let stored = self
                .engine
                .store
                .get(&self.room.name, &client.client_id.to_string())
                .await
                .map_err(Disconnect::from_store)?;
            if let Some(tombstone) = stored.filter(AwarenessEntry::is_tombstone) {
                if let Some(clock) = y_clock(tombstone.clock).filter(|c| *c >= client.clock) {
                    remedies.push(leave(client.client_id, clock));
                }
            }
        }
        self.remedy(&remedies);
        self.report(refusals);
        Ok(received)
    }

    /// Sends this connection the leaves its clients must hear to re-announce themselves.
    pub(super) fn remedy(&self, leaves: &[AwarenessClientUpdate]) {
        if let Some(message) = awareness_message(leaves) {
            tracing::debug!(room = %self.room.name, count = leaves.len(), "presence: rejoin after leave, asking clients to re-announce");
            self.sender.send(message);
        }
    }

    /// Tells the client, once per client id and reason, why its update was refused.
    pub(super) fn report(&self, refusals: Vec<(u64, SetOutcome)>) {
        if refusals.is_empty() {
            return;
        }
        let mut told = lock(&self.refused);
        for (client_id, outcome) in refusals {
            if told.insert(client_id, outcome) == Some(outcome) {
                continue;
            }
            let why = match outcome {
                SetOutcome::Forbidden => "another user holds this client id",
                SetOutcome::DocumentFull => "the document has the most participants allowed",
                SetOutcome::ConnectionFull => "this connection has the most participants allowed",
                _ => "refused",
            };
            tracing::info!(room = %self.room.name, connection = %self.connection_id, client_id, outcome = outcome.as_str(), "presence: update refused");
            let reason = format!(
                "awareness of client {client_id} refused ({}): {why}",
                outcome.as_str()
            );
            self.sender
                .send(Bytes::from(encode_permission_denied(&reason)));
        }
    }

    /// The connection ended: it leaves the room, and the clients it held are announced gone
    /// (one leave each, one clock above the last it wrote, written as its principal: here
    /// directly, on other instances through the change feed).
    pub async fn close(mut self) {
        self.closed = true;
        let leaves = release(&self.engine, &self.room, self.number);
        write_leaves(
            &self.engine,
            &self.room,
            &self.connection_id,
            self.identity.principal.as_deref(),
            leaves,
        )
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let leaves = release(&self.engine, &self.room, self.number);
        if leaves.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (engine, room) = (self.engine.clone(), self.room.clone());
            let (connection_id, principal) =
                (self.connection_id.clone(), self.identity.principal.clone());
            runtime.spawn(async move {
                write_leaves(&engine, &room, &connection_id, principal.as_deref(), leaves).await;
            });
        }
    }
}
