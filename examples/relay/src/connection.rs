//! One y-websocket connection: frames in (awareness to the presence engine, sync to the room's
//! document), the engine's outbox and the document's updates out, pings, and the pong timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use synckit_awareness::presence::{
    close_code, Disconnect, Identity, Outbox, Outgoing, Presence, Session,
};
use synckit_awareness::y_protocols::{
    encode_permission_denied, MESSAGE_AUTH, MESSAGE_AWARENESS, MESSAGE_QUERY_AWARENESS,
    MESSAGE_SYNC,
};
use synckit_relay::documents::{DocumentError, Documents, Room};
use tokio::sync::{broadcast, watch};
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;

use crate::auth::{expiry, Access, REFUSALS};

/// Close code for a message over the size limit (RFC 6455).
const TOO_BIG: u16 = 1009;

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message accepted.
    pub max_message_bytes: usize,
    /// How often an idle connection is pinged.
    pub ping_every: Duration,
    /// A connection silent (no frame, no pong) this long is closed.
    pub pong_timeout: Duration,
    /// A single write to the socket taking longer closes the connection.
    pub send_timeout: Duration,
}

/// Who is connecting, as its token says.
#[derive(Debug)]
pub struct Caller {
    /// Its principal and the `user` others see.
    pub identity: Identity,
    /// Read-only or read-write in this room.
    pub access: Access,
    /// How long until its token expires (`None`: never).
    pub expires_in: Option<Duration>,
}

/// Close code for a connection whose token expired: reconnect with a fresh one (Hocuspocus
/// uses 4401 for "unauthorized" too).
pub const TOKEN_EXPIRED: u16 = 4401;

/// Serves one connection to `room` until it closes, the engine ends it, its token expires, or
/// the server stops.
pub async fn serve(
    presence: Presence,
    documents: Arc<Documents>,
    limits: Limits,
    socket: WebSocket,
    room: String,
    caller: Caller,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let Caller {
        identity,
        access,
        expires_in,
    } = caller;
    // The one-off and per-message steps are boxed: a task's future is as large as its largest
    // state, held for the connection's whole life, so an idle connection then holds only the
    // loop's state (`-Zprint-type-sizes`: 5,080 → 3,240 bytes per connection task).
    let (session, outbox) = match Box::pin(presence.join_as(&room, identity)).await {
        Ok(joined) => joined,
        Err(error) => {
            tracing::warn!(%error, %room, "cannot join the room");
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::INTERNAL_ERROR,
                    reason: Utf8Bytes::from_static("presence store unavailable"),
                })))
                .await;
            return;
        }
    };
    let doc = match Box::pin(documents.open(&room)).await {
        Ok(doc) => doc,
        Err(error) => {
            tracing::warn!(%error, %room, "cannot open the document");
            session.disconnect(Disconnect::new(
                close_code::INTERNAL_ERROR,
                "document store unavailable",
            ));
            Box::pin(write(sink, outbox, limits)).await;
            Box::pin(session.close()).await;
            return;
        }
    };
    let origin = documents.origin();
    // Subscribed before step 1 is computed: no update falls in between.
    let mut updates = doc.subscribe();
    tracing::debug!(connection = session.connection_id(), %room, "connected");
    // What y-websocket's server sends first: sync step 1 (the engine queued the awareness).
    session.send(doc.sync_step1());

    let mut writer = tokio::spawn(write(sink, outbox, limits));
    // A token's lifetime is all a connection gets: revoking access takes at most that long.
    let expiry = expiry(expires_in);
    tokio::pin!(expiry);
    let mut deadline = tokio::time::Instant::now() + limits.pong_timeout;
    let mut stopping = false;
    let mut writer_done = false;
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                session.disconnect(Disconnect::new(close_code::GOING_AWAY, "server shutting down"));
                continue;
            }
            () = &mut expiry => {
                session.disconnect(Disconnect::new(TOKEN_EXPIRED, "token expired: reconnect with a fresh token"));
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                session.disconnect(Disconnect::new(close_code::GOING_AWAY, "no pong within the timeout"));
                break;
            }
            relayed = updates.recv() => {
                match relayed {
                    Ok(relayed) => match relayed.message {
                        Some(message) if relayed.origin != origin => session.send(message),
                        Some(_) => {}
                        None if relayed.origin == origin => {
                            session.disconnect(Disconnect::new(close_code::INTERNAL_ERROR, "document store unavailable"));
                            break;
                        }
                        None => {}
                    },
                    // Fell behind the room's channel: the whole document brings it up to date.
                    Err(broadcast::error::RecvError::Lagged(_)) => session.send(doc.full_update()),
                    Err(broadcast::error::RecvError::Closed) => {}
                }
                continue;
            }
        };
        deadline = tokio::time::Instant::now() + limits.pong_timeout;
        let frame = match message {
            Some(Ok(Message::Binary(frame))) => frame,
            Some(Ok(Message::Text(_))) => {
                session.disconnect(Disconnect::new(
                    close_code::UNSUPPORTED_DATA,
                    "text frames are not y-websocket messages",
                ));
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                tracing::debug!(%error, connection = session.connection_id(), "websocket error");
                session.disconnect(Disconnect::new(
                    TOO_BIG,
                    format!("unreadable frame: {error}"),
                ));
                break;
            }
        };
        if let Err(reason) = Box::pin(handle(&session, &doc, origin, access, &frame, &limits)).await
        {
            tracing::info!(connection = session.connection_id(), code = reason.code, reason = %reason.reason, "closing the connection");
            session.disconnect(reason);
            break;
        }
    }
    Box::pin(session.close()).await;
    documents.release(&doc);
    // The writer sends the close frame (if any) and ends.
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// Sends the outbox to the socket, with pings; ends at a close, a failed or stuck write.
async fn write(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbox: Outbox,
    limits: Limits,
) {
    let mut ping = tokio::time::interval(limits.ping_every);
    ping.tick().await;
    // A socket that stopped reading blocks a write; the engine then ends the connection (its
    // queue filled up) and the writer gives that write up at once.
    // Fused: once it has fired, the outbox's next item is the close frame (sent below, within
    // the send timeout), so a write cut short by it never loses the close code and reason.
    let closing = futures_util::FutureExt::fuse(outbox.closing());
    tokio::pin!(closing);
    loop {
        let message = tokio::select! {
            next = outbox.next() => match next {
                Some(Outgoing::Message(bytes)) => Message::Binary(bytes),
                Some(Outgoing::Close(reason)) => {
                    let frame = CloseFrame { code: reason.code, reason: Utf8Bytes::from(reason.reason) };
                    let _ = tokio::time::timeout(limits.send_timeout, sink.send(Message::Close(Some(frame)))).await;
                    break;
                }
                None => break,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        // What else is waiting goes with it, and the socket is flushed once.
        let put = async {
            sink.feed(message).await?;
            while let Some(Outgoing::Message(bytes)) = outbox.try_next() {
                sink.feed(Message::Binary(bytes)).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            sent = tokio::time::timeout(limits.send_timeout, put) => {
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            () = &mut closing => continue,
        }
    }
    let _ = tokio::time::timeout(limits.send_timeout, sink.close()).await;
}

async fn handle(
    session: &Session,
    doc: &Arc<Room>,
    origin: u64,
    access: Access,
    frame: &[u8],
    limits: &Limits,
) -> Result<(), Disconnect> {
    if frame.len() > limits.max_message_bytes {
        return Err(Disconnect::new(
            TOO_BIG,
            format!(
                "message of {} bytes exceeds the limit of {} bytes",
                frame.len(),
                limits.max_message_bytes
            ),
        ));
    }
    // Message types are varUints; every known one fits in the first byte.
    match frame.first().map(|b| u64::from(*b)) {
        None => Err(Disconnect::new(close_code::INVALID_DATA, "empty message")),
        Some(MESSAGE_SYNC) => sync(session, doc, origin, access, frame).await,
        Some(MESSAGE_AWARENESS | MESSAGE_QUERY_AWARENESS) => {
            let received = session.receive(frame).await?;
            if !received.refused.is_empty() {
                tracing::debug!(connection = session.connection_id(), refused = ?received.refused, "awareness refused");
            }
            Ok(())
        }
        Some(MESSAGE_AUTH) => Err(Disconnect::new(
            close_code::UNSUPPORTED_DATA,
            "message type 2 (auth) is not accepted from clients",
        )),
        Some(other) => Err(Disconnect::new(
            close_code::UNSUPPORTED_DATA,
            format!("unknown y-websocket message type {other}"),
        )),
    }
}

/// Type 0: answered from the room's document; updates are stored (with a database) before
/// they are relayed. A refused update (a limit) is answered with a permission-denied message
/// carrying the reason, and the connection stays open; so is every update of a read-only
/// connection (its answer to sync step 1 is dropped quietly when it brings nothing new: that
/// is every read-only client's first message).
async fn sync(
    session: &Session,
    doc: &Arc<Room>,
    origin: u64,
    access: Access,
    frame: &[u8],
) -> Result<(), Disconnect> {
    let malformed = |e: &dyn std::fmt::Display| {
        Disconnect::new(
            close_code::INVALID_DATA,
            format!("malformed sync message: {e}"),
        )
    };
    let message = match YMessage::decode_v1(frame) {
        Ok(YMessage::Sync(message)) => message,
        Ok(_) => {
            return Err(Disconnect::new(
                close_code::INVALID_DATA,
                "malformed sync message",
            ))
        }
        Err(e) => return Err(malformed(&e)),
    };
    match message {
        SyncMessage::SyncStep1(state_vector) => session.send(doc.sync_step2(&state_vector)),
        SyncMessage::SyncStep2(bytes) if access == Access::Read && !doc.adds_to(&bytes) => {}
        SyncMessage::SyncStep2(_) | SyncMessage::Update(_) if access == Access::Read => {
            let reason = format!(
                "read-only access to room {:?}: document updates are refused",
                doc.name()
            );
            tracing::debug!(
                connection = session.connection_id(),
                room = doc.name(),
                "read-only: update refused"
            );
            ::metrics::counter!(REFUSALS, "reason" => "read_only").increment(1);
            session.send(encode_permission_denied(&reason));
        }
        SyncMessage::SyncStep2(bytes) | SyncMessage::Update(bytes) => {
            match doc.apply_local(origin, bytes) {
                Ok(()) => {}
                Err(DocumentError::Refused(reason)) => {
                    tracing::info!(connection = session.connection_id(), room = doc.name(), %reason, "update refused");
                    session.send(encode_permission_denied(&reason));
                }
                Err(error @ DocumentError::Malformed(_)) => return Err(malformed(&error)),
                Err(error @ DocumentError::Store(_)) => {
                    tracing::warn!(%error, room = doc.name(), "cannot store an update");
                    return Err(Disconnect::new(
                        close_code::INTERNAL_ERROR,
                        "document store unavailable",
                    ));
                }
            }
        }
    }
    Ok(())
}
