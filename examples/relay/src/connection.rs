//! One y-websocket connection: its frames in, its messages out, and its leaves when it closes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use synckit_awareness::y_protocols::{
    apply_awareness_update, decode_awareness_update, decode_message, encode_awareness_update,
    AwarenessMessage, MESSAGE_AUTH, MESSAGE_AWARENESS, MESSAGE_QUERY_AWARENESS, MESSAGE_SYNC,
};
use synckit_awareness::Error;
use tokio::sync::{mpsc, watch};
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use crate::hub::{Hub, Outbox, Outgoing, Ownership, Room};

/// WebSocket close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const UNSUPPORTED_DATA: u16 = 1003;
const INVALID_DATA: u16 = 1007;
const POLICY_VIOLATION: u16 = 1008;
const TOO_BIG: u16 = 1009;
const INTERNAL_ERROR: u16 = 1011;

/// How often the server pings an idle connection.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Why a connection is closed: a close code and a reason the client can read.
#[derive(Debug)]
struct Refusal {
    code: u16,
    reason: String,
}

impl Refusal {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    fn from_store(error: Error) -> Self {
        match error {
            Error::Codec(e) => Self::new(INVALID_DATA, format!("malformed awareness update: {e}")),
            e @ Error::InvalidInput { .. } => Self::new(INVALID_DATA, e.to_string()),
            e => {
                tracing::warn!(error = %e, "store error; closing the connection");
                Self::new(INTERNAL_ERROR, "presence store unavailable")
            }
        }
    }
}

struct Connection {
    hub: Arc<Hub>,
    room: Arc<Room>,
    number: u64,
    id: String,
    outbox: Outbox,
}

/// Serves one connection to `room_name` until it closes or the server shuts down.
pub async fn serve(
    hub: Arc<Hub>,
    socket: WebSocket,
    room_name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let (number, id) = hub.new_connection();
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut inbox) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let message = tokio::select! {
                next = inbox.recv() => match next {
                    Some(Outgoing::Frame(frame)) => Message::Binary(frame.into()),
                    Some(Outgoing::Close(code, reason)) => {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await;
                        break;
                    }
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Vec::new().into()),
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let room = match hub.join(&room_name, number, outbox.clone()).await {
        Ok(room) => room,
        Err(error) => {
            tracing::warn!(%error, room = %room_name, "cannot open the room");
            let _ = outbox.send(Outgoing::Close(
                INTERNAL_ERROR,
                "presence store unavailable".into(),
            ));
            drop(outbox);
            let _ = writer.await;
            return;
        }
    };
    tracing::info!(connection = %id, room = %room_name, "connected");
    let connection = Connection {
        hub: hub.clone(),
        room,
        number,
        id,
        outbox,
    };

    let refusal = match connection.greet().await {
        Err(refusal) => Some(refusal),
        Ok(()) => loop {
            let message = tokio::select! {
                message = stream.next() => message,
                _ = shutdown.changed() => break Some(Refusal::new(GOING_AWAY, "server shutting down")),
            };
            let frame = match message {
                Some(Ok(Message::Binary(frame))) => frame,
                Some(Ok(Message::Text(_))) => {
                    break Some(Refusal::new(
                        UNSUPPORTED_DATA,
                        "text frames are not y-websocket messages",
                    ))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(error)) => {
                    tracing::debug!(%error, connection = %connection.id, "websocket error");
                    break Some(Refusal::new(TOO_BIG, format!("unreadable frame: {error}")));
                }
            };
            if let Err(refusal) = connection.handle(&frame).await {
                break Some(refusal);
            }
        },
    };
    if let Some(refusal) = refusal {
        tracing::info!(connection = %connection.id, code = refusal.code, reason = %refusal.reason, "closing the connection");
        let mut reason = refusal.reason;
        // A close frame's reason holds at most 123 bytes.
        while reason.len() > 123 {
            reason.pop();
        }
        let _ = connection
            .outbox
            .send(Outgoing::Close(refusal.code, reason));
    }
    connection.close().await;
    // The writer ends once every sender of its inbox is gone (the room dropped its copy).
    drop(connection);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

impl Connection {
    /// What y-websocket's server sends first: sync step 1, then everyone's awareness.
    async fn greet(&self) -> Result<(), Refusal> {
        let step1 = {
            let txn = self.room.doc.transact();
            YMessage::Sync(SyncMessage::SyncStep1(txn.state_vector())).encode_v1()
        };
        self.send(step1);
        self.send_full_state().await
    }

    /// Everyone's awareness state in the room, to this client.
    async fn send_full_state(&self) -> Result<(), Refusal> {
        let state = self
            .hub
            .full_state(&self.room)
            .await
            .map_err(Refusal::from_store)?;
        self.send(state);
        Ok(())
    }

    fn send(&self, frame: Vec<u8>) {
        let _ = self.outbox.send(Outgoing::Frame(frame));
    }

    async fn handle(&self, frame: &[u8]) -> Result<(), Refusal> {
        if frame.len() > self.hub.max_message_bytes {
            return Err(Refusal::new(
                TOO_BIG,
                format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    frame.len(),
                    self.hub.max_message_bytes
                ),
            ));
        }
        // Message types are varUints; every known one fits in the first byte.
        match frame.first().map(|b| u64::from(*b)) {
            None => Err(Refusal::new(INVALID_DATA, "empty message")),
            Some(MESSAGE_SYNC) => self.sync(frame),
            Some(MESSAGE_AWARENESS | MESSAGE_QUERY_AWARENESS) => {
                match decode_message(frame)
                    .map_err(|e| Refusal::new(INVALID_DATA, format!("malformed message: {e}")))?
                {
                    AwarenessMessage::Update(update) => self.awareness(&update).await,
                    AwarenessMessage::Query => self.send_full_state().await,
                }
            }
            Some(MESSAGE_AUTH) => Err(Refusal::new(
                UNSUPPORTED_DATA,
                "message type 2 (auth) is not supported by this server",
            )),
            Some(other) => Err(Refusal::new(
                UNSUPPORTED_DATA,
                format!("unknown y-websocket message type {other}"),
            )),
        }
    }

    /// Type 0: answered with yrs against the room's in-memory document.
    fn sync(&self, frame: &[u8]) -> Result<(), Refusal> {
        let malformed = |e: &dyn std::fmt::Display| {
            Refusal::new(INVALID_DATA, format!("malformed sync message: {e}"))
        };
        let message = match YMessage::decode_v1(frame) {
            Ok(YMessage::Sync(message)) => message,
            Ok(_) => return Err(Refusal::new(INVALID_DATA, "malformed sync message")),
            Err(e) => return Err(malformed(&e)),
        };
        match message {
            SyncMessage::SyncStep1(state_vector) => {
                let update = self
                    .room
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&state_vector);
                self.send(YMessage::Sync(SyncMessage::SyncStep2(update)).encode_v1());
            }
            SyncMessage::SyncStep2(bytes) | SyncMessage::Update(bytes) => {
                let update = Update::decode_v1(&bytes).map_err(|e| malformed(&e))?;
                self.room
                    .doc
                    .transact_mut()
                    .apply_update(update)
                    .map_err(|e| malformed(&e))?;
                let relay = YMessage::Sync(SyncMessage::Update(bytes)).encode_v1();
                self.room.broadcast_except(&relay, self.number);
            }
        }
        Ok(())
    }

    /// Type 1: only the clientIDs this connection owns (or may claim) are written. A
    /// y-websocket client echoes every change it accepts, and removes peers it has not heard
    /// from in 30 s: such updates for another connection's clientIDs are dropped; a newer
    /// state for one is a spoof and refuses the whole frame (the connection is closed).
    async fn awareness(&self, payload: &[u8]) -> Result<(), Refusal> {
        let clients = decode_awareness_update(payload, &self.hub.limits)
            .map_err(|e| Refusal::new(INVALID_DATA, format!("malformed awareness update: {e}")))?;
        let mut own = Vec::with_capacity(clients.len());
        let mut unclaimed = Vec::new();
        for client in &clients {
            let ownership = self
                .hub
                .ownership(
                    &self.room,
                    self.number,
                    &self.id,
                    client.client_id,
                    client.clock,
                )
                .await
                .map_err(Refusal::from_store)?;
            match (ownership, &client.state) {
                (Ownership::Own, _) => own.push(client.clone()),
                (Ownership::Unclaimed, _) => {
                    unclaimed.push(client.client_id);
                    own.push(client.clone());
                }
                // Echoes of what it was sent, and leaves for peers it timed out: not its to write.
                (Ownership::Foreign { .. }, None) => {}
                (Ownership::Foreign { clock }, Some(_)) if client.clock <= clock => {}
                (Ownership::Foreign { .. }, Some(_)) => {
                    return Err(Refusal::new(
                        POLICY_VIOLATION,
                        format!(
                            "clientID {} belongs to another connection",
                            client.client_id
                        ),
                    ))
                }
            }
        }
        if own.is_empty() {
            return Ok(());
        }
        let bytes = if own.len() == clients.len() {
            payload.to_vec()
        } else {
            encode_awareness_update(&own).map_err(|e| Refusal::from_store(e.into()))?
        };
        let outcomes = apply_awareness_update(
            &*self.hub.store,
            &self.room.name,
            &self.id,
            &bytes,
            &self.hub.limits,
        )
        .await
        .map_err(Refusal::from_store)?;
        let (mut applied, mut stale) = (Vec::new(), Vec::new());
        for (client, (_, outcome)) in own.into_iter().zip(outcomes) {
            if outcome.is_applied() {
                if unclaimed.contains(&client.client_id) {
                    self.hub.claim(&self.room, self.number, client.client_id);
                }
                applied.push(client);
            } else {
                stale.push(client);
            }
        }
        self.hub
            .after_apply(&self.room, &self.outbox, applied, stale)
            .await
            .map_err(Refusal::from_store)
    }

    /// Leaves the room; the entries this connection still owns are removed and their leaves
    /// announced (here directly, elsewhere through the change feed).
    async fn close(&self) {
        self.hub.release(&self.room, self.number).await;
        match self.hub.store.remove_all_for_connection(&self.id).await {
            Ok(entries) => self.hub.announce_gone(entries).await,
            Err(error) => {
                tracing::warn!(%error, connection = %self.id, "cannot remove the connection's entries; they expire instead")
            }
        }
        tracing::info!(connection = %self.id, room = %self.room.name, "disconnected");
    }
}
