//! `PUT` and `DELETE /rooms/<room>/presence/<participant>`: an agent's presence over HTTP, under
//! the same authentication and room access as a WebSocket connection (a token that may write
//! the room). Bad input is answered 400 with the reason and changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use synckit_awareness::presence::Identity;

use super::AgentError;
use crate::auth::{request_token, Access};
use crate::App;

/// The longest TTL a `PUT` may ask for (renew to stay longer).
const MAX_TTL_SECONDS: f64 = 86_400.0;
/// Participant names: 1 to 64 of `A-Z a-z 0-9 . _ -`.
const MAX_PARTICIPANT: usize = 64;
/// Room for the body's other fields beside the state.
const BODY_SLACK: usize = 1024;

fn bad(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, reason.into()).into_response()
}

/// The caller's identity when its token may write `room`; else the refusal (401, 403).
async fn writer(
    app: &App,
    room: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Identity, Response> {
    let what = "agent presence";
    let grant = app
        .auth
        .authenticate(request_token(query, headers))
        .await
        .map_err(|refusal| refusal.respond(what, room))?;
    match grant.access(room) {
        Ok(Access::Write) => {}
        Ok(Access::Read) => {
            let reason = format!("this token may only read room {room:?}");
            return Err((StatusCode::FORBIDDEN, reason).into_response());
        }
        Err(refusal) => return Err(refusal.respond(what, room)),
    }
    let mut identity = Identity::from_principal(grant.principal);
    if let Some(user) = grant.user {
        identity = identity.with_user(user);
    }
    Ok(identity)
}

/// The caller's identity when its token may write `room` and `participant` is a name; else
/// the answer (401, 403, 400).
async fn caller(
    app: &App,
    room: &str,
    participant: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Identity, Response> {
    let identity = writer(app, room, query, headers).await?;
    check_participant(participant).map_err(bad)?;
    Ok(identity)
}

/// Why `participant` is not a participant's name, if it is not.
fn check_participant(participant: &str) -> Result<(), String> {
    let fine = (1..=MAX_PARTICIPANT).contains(&participant.len())
        && participant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "participant must be 1 to {MAX_PARTICIPANT} of A-Z a-z 0-9 . _ -"
        ))
    }
}

/// The body `{"state": {…}, "ttl": seconds}`: the state and the TTL, or why not.
async fn read_body(body: Body, max_state_bytes: usize) -> Result<(Value, Duration), Response> {
    let limit = max_state_bytes.saturating_add(BODY_SLACK);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| bad(format!("the body is over {limit} bytes")))?;
    let mut body: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
    let state = match body.remove("state") {
        Some(state @ Value::Object(_)) => state,
        _ => return Err(bad("state must be a JSON object")),
    };
    let state_bytes = serde_json::to_string(&state).map_or(usize::MAX, |s| s.len());
    if state_bytes > max_state_bytes {
        return Err(bad(format!(
            "state is {state_bytes} bytes, over the limit of {max_state_bytes}"
        )));
    }
    let ttl = body
        .get("ttl")
        .and_then(Value::as_f64)
        .filter(|t| *t > 0.0 && *t <= MAX_TTL_SECONDS)
        .ok_or_else(|| {
            bad(format!(
                "ttl must be a number of seconds above 0 and at most {MAX_TTL_SECONDS}"
            ))
        })?;
    Ok((state, Duration::from_secs_f64(ttl)))
}

fn failure(error: AgentError) -> Response {
    match error {
        AgentError::Forbidden => (
            StatusCode::FORBIDDEN,
            "this participant belongs to another principal",
        )
            .into_response(),
        AgentError::Full(reason) => (StatusCode::CONFLICT, reason).into_response(),
        AgentError::NotFound => {
            (StatusCode::NOT_FOUND, "no such participant in this room").into_response()
        }
        AgentError::Unavailable(reason) => {
            tracing::warn!(%reason, "agent presence failed");
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
}

/// `PUT /rooms/<room>/presence/<participant>` with `{"state": {…}, "ttl": seconds}`: sets (or
/// renews) the participant; it leaves by itself `ttl` seconds after the last `PUT`.
pub(crate) async fn put(
    State(app): State<App>,
    Path((room, participant)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let identity = match caller(&app, &room, &participant, &query, &headers).await {
        Ok(identity) => identity,
        Err(refused) => return refused,
    };
    let (state, ttl) = match read_body(body, app.agents.max_state_bytes).await {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    match app
        .agents
        .set(&room, &participant, identity, state, ttl)
        .await
    {
        Ok(placed) => Json(serde_json::json!({
            "room": room,
            "participant": participant,
            "clientId": placed.client_id,
            "clock": placed.clock,
            "expiresInMs": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }))
        .into_response(),
        Err(error) => failure(error),
    }
}

/// `DELETE /rooms/<room>/presence/<participant>`: the participant leaves now (204).
pub(crate) async fn delete(
    State(app): State<App>,
    Path((room, participant)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let identity = match caller(&app, &room, &participant, &query, &headers).await {
        Ok(identity) => identity,
        Err(refused) => return refused,
    };
    match app.agents.remove(&room, &participant, identity).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => failure(error),
    }
}
