//! Who is here, over HTTP, for the rest of an application (issue 26):
//!
//! - `GET /rooms[?after=<room>&limit=<n>]`: the rooms with live participants and their counts,
//!   in byte order of their names, a page at a time (`next`: the `after` of the next page);
//! - `GET /rooms/<room>/presence`: the room's count and participants (client id, principal,
//!   instance, clock, state);
//! - `GET /rooms/<room>/presence/events[?updates=true]`: a Server-Sent Events stream of the
//!   room's `joined`, `left` (and with `updates`, `updated`) events, each once, and `resync`
//!   when events may have been missed (PostgreSQL store only).
//!
//! On PostgreSQL every answer covers every instance on the database. Each is under the same
//! authentication as a WebSocket connection: the token (`?token=…` or `Authorization: Bearer
//! …`) must be one that may read the room (403 otherwise); the room list holds only the rooms
//! the token may read; an event stream counts against its principal's streams (429 past the
//! limit) and ends when the token expires.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use synckit_awareness::{Error, Participant, PresenceFilter};

use crate::auth::{expiry, request_token, Grant, Kind};
use crate::rooms::readable_rooms;
use crate::App;

/// Rooms per page of `GET /rooms` unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

/// The request's grant if it may read `room` (`None`: the room list, which any valid token
/// may ask for, each answer filtered to the rooms it may read); else the refusal (401, 403).
async fn authorize(
    app: &App,
    room: Option<&str>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Grant, Response> {
    let what = "presence read";
    let label = room.unwrap_or("");
    let grant = app
        .auth
        .authenticate(request_token(query, headers))
        .await
        .map_err(|refusal| refusal.respond(what, label))?;
    if let Some(room) = room {
        grant
            .access(room)
            .map_err(|refusal| refusal.respond(what, room))?;
    }
    Ok(grant)
}

/// A store error as a response: bad input is the caller's (400), the rest the server's (503).
fn failure(error: Error) -> Response {
    match error {
        Error::InvalidInput { .. } => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        error => {
            tracing::warn!(%error, "presence read failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable").into_response()
        }
    }
}

/// `GET /rooms`: the rooms with their counts, a page at a time.
pub(crate) async fn rooms(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let grant = match authorize(&app, None, &query, &headers).await {
        Ok(grant) => grant,
        Err(refused) => return refused,
    };
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_PAGE,
        Some(Ok(limit)) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => {
            let reason = format!("limit must be a whole number from 1 to {MAX_PAGE}");
            return (StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    let after = query
        .get("after")
        .map(String::as_str)
        .filter(|a| !a.is_empty());
    match readable_rooms(app.presence.store().as_ref(), &grant.rooms, after, limit).await {
        Ok(rooms) => {
            let full = rooms.len() == usize::try_from(limit).unwrap_or(usize::MAX);
            let next = rooms.last().filter(|_| full).map(|r| r.document_id.clone());
            Json(serde_json::json!({ "rooms": rooms, "next": next })).into_response()
        }
        Err(error) => failure(error),
    }
}

/// `GET /rooms/<room>/presence`: the room's count and participants.
pub(crate) async fn presence(
    State(app): State<App>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&app, Some(&room), &query, &headers).await {
        return refused;
    }
    match app.presence.store().get_all(&room).await {
        Ok(entries) => {
            let participants: Vec<Participant> = entries
                .into_iter()
                .filter_map(Participant::from_entry)
                .collect();
            Json(serde_json::json!({
                "room": room,
                "count": participants.len(),
                "participants": participants,
            }))
            .into_response()
        }
        Err(error) => failure(error),
    }
}

/// `GET /rooms/<room>/presence/events`: the room's presence events as Server-Sent Events,
/// until the client goes away or the relay shuts down.
pub(crate) async fn events(
    State(app): State<App>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let grant = match authorize(&app, Some(&room), &query, &headers).await {
        Ok(grant) => grant,
        Err(refused) => return refused,
    };
    let ticket = match app
        .admission
        .admit(Kind::Stream, grant.principal.as_deref(), address.ip())
    {
        Ok(ticket) => ticket,
        Err(refusal) => return refusal.respond("event stream", &room),
    };
    let Some(store) = app.presence.postgres() else {
        let reason = "presence events need the PostgreSQL store (DATABASE_URL)";
        return (StatusCode::NOT_IMPLEMENTED, reason).into_response();
    };
    let mut filter = PresenceFilter::room(room.as_str());
    if query
        .get("updates")
        .is_some_and(|u| u == "true" || u == "1")
    {
        filter = filter.with_updates();
    }
    let events = match store.presence_events(filter).await {
        Ok(events) => events,
        Err(error) => return failure(error),
    };
    let mut shutdown = app.shutdown.clone();
    // Ends at shutdown, or when the token expires (the client reconnects with a fresh one).
    let expires_in = grant.remaining();
    let stopping = async move {
        tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => {}
            () = expiry(expires_in) => {}
        }
        // The stream's place is given back when it ends.
        drop(ticket);
    };
    let stream = events
        .take_until(stopping)
        .map(|event| Event::default().event(event.name()).json_data(&event));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
