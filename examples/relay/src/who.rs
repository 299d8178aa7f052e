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
//! …`) must be one that may read the room (for the room list, any valid token).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use synckit_awareness::{Error, Participant, PresenceFilter};

use crate::App;

/// Rooms per page of `GET /rooms` unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

/// The request's token: `?token=…`, else `Authorization: Bearer …`.
fn token<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    query.get("token").map(String::as_str).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
    })
}

/// Refuses (401, with the reason) a request whose token may not read `room`.
fn authorize(
    app: &App,
    room: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, String)> {
    app.auth
        .authenticate(room, token(query, headers))
        .map(|_| ())
        .map_err(|reason| {
            tracing::info!(%room, %reason, "presence read refused: not authenticated");
            (StatusCode::UNAUTHORIZED, reason)
        })
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
    if let Err(refused) = authorize(&app, "", &query, &headers) {
        return refused.into_response();
    }
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
    match app.presence.store().rooms(after, limit).await {
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
    if let Err(refused) = authorize(&app, &room, &query, &headers) {
        return refused.into_response();
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
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&app, &room, &query, &headers) {
        return refused.into_response();
    }
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
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let stream = events
        .take_until(stopping)
        .map(|event| Event::default().event(event.name()).json_data(&event));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
