//! `ws://…/<room>`: the WebSocket route. A request is authenticated (401), its token must
//! open the room (403), its principal (or address) must have a place left (429), all before
//! the upgrade, so a refused client writes nothing; then the connection is served
//! (`connection.rs`) as the token says: its principal, its `user`, read or write, until the
//! token expires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use synckit_awareness::presence::Identity;

use crate::auth::{request_token, Kind};
use crate::connection::{self, Caller};
use crate::pages::page;
use crate::App;

/// `ws://…/<room>`: a y-websocket connection; a plain GET gets the page for that room.
pub(crate) async fn room(
    State(app): State<App>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return page(State(app)).await;
    };
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let grant = match app.auth.authenticate(request_token(&query, &headers)).await {
        Ok(grant) => grant,
        Err(refusal) => return refusal.respond("connection", &room),
    };
    let access = match grant.access(&room) {
        Ok(access) => access,
        Err(refusal) => return refusal.respond("connection", &room),
    };
    let ticket =
        match app
            .admission
            .admit(Kind::Connection, grant.principal.as_deref(), address.ip())
        {
            Ok(ticket) => ticket,
            Err(refusal) => return refusal.respond("connection", &room),
        };
    let mut identity = Identity::from_principal(grant.principal.clone());
    if let Some(user) = grant.user.clone() {
        identity = identity.with_user(user);
    }
    let caller = Caller {
        identity,
        access,
        expires_in: grant.remaining(),
    };
    let active = app.active.clone();
    active.fetch_add(1, Ordering::SeqCst);
    upgrade
        // Frames up to the limit are ours to refuse with a reason; far larger ones are cut off.
        .max_message_size(app.limits.max_message_bytes.saturating_mul(4))
        // tungstenite reserves 128 KiB per connection for reading by default: an idle
        // connection needs one KiB (the buffer grows for larger messages). Measured with `bench.mjs
        // --memory`: 22.2 KB per idle connection in all with 4 KiB, 20.3 with 1 KiB.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            connection::serve(
                app.presence.clone(),
                app.documents.clone(),
                app.limits,
                socket,
                room,
                caller,
                app.shutdown.clone(),
            )
            .await;
            drop(ticket);
            active.fetch_sub(1, Ordering::SeqCst);
        })
}
