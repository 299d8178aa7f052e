//! Who may do what: every route (WebSocket, room list, presence, event stream) asks the
//! relay's [`Authenticate`] for the request's [`Grant`] — who it is (the principal, the `user`
//! others see) and which rooms it may open, read-only or read-write — and refuses with a
//! [`Refusal`] (401 unauthenticated, 403 a room it may not open, 429 over a limit) that says why.
//!
//! Two implementations: [`Open`] (no token; every connection anonymous and read-write, for a
//! trusted network) and [`JwtAuth`] (JWTs from the application's identity provider: HS256 with
//! a shared secret and RS256/ES256/EdDSA from a JWKS, `jwt.rs`; rooms from the `rooms` claim,
//! `scope.rs`). [`Admission`] bounds what one principal holds (`admission.rs`).

mod admission;
mod jwks;
mod jwt;
mod scope;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use admission::{Admission, AdmissionLimits, Kind};
pub use jwks::Jwks;
pub use jwt::{JwtAuth, JwtOptions};
pub use scope::{Access, Pattern, Scopes};

/// The counter of refused requests and updates, by `reason` (docs/access.md).
pub const REFUSALS: &str = "synckit_relay_refusals_total";

/// What a request may do: who it is and which rooms it may open.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The principal its presence is owned by (`None`: anonymous).
    pub principal: Option<String>,
    /// What every other client sees as its `state.user` (`None`: what the client sends).
    pub user: Option<Value>,
    /// The rooms it may open, and how.
    pub rooms: Scopes,
    /// When its token stops being valid (Unix seconds, leeway included): connections end then.
    pub expires: Option<u64>,
}

impl Grant {
    /// Open mode: anonymous, every room read-write, no expiry.
    pub fn open() -> Self {
        Self {
            principal: None,
            user: None,
            rooms: Scopes::all(Access::Write),
            expires: None,
        }
    }

    /// How it may open `room`, or a 403 saying why not.
    pub fn access(&self, room: &str) -> Result<Access, Refusal> {
        self.rooms.access(room).ok_or_else(|| {
            Refusal::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token does not give access to room {room:?}"),
            )
        })
    }

    /// How long until its token expires (`None`: never).
    pub fn remaining(&self) -> Option<Duration> {
        self.expires
            .map(|expires| Duration::from_secs(expires.saturating_sub(now_secs())))
    }
}

/// Resolves when a token with `remaining` lifetime expires (never for `None`): what ends a
/// connection or an event stream.
pub async fn expiry(remaining: Option<Duration>) {
    match remaining {
        Some(remaining) => tokio::time::sleep(remaining).await,
        None => std::future::pending().await,
    }
}

/// A refused request: the status, a short label (the refusal metric's `reason`), and a
/// sentence for the client and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 429.
    pub status: StatusCode,
    /// The label counted in `synckit_relay_refusals_total{reason}`.
    pub label: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `status`, counted under `label`.
    pub fn new(status: StatusCode, label: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            label,
            reason: reason.into(),
        }
    }

    /// 401: no token, or one that does not verify.
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", reason)
    }

    /// Logs and counts it, and answers it (the reason in the body).
    pub fn respond(self, what: &str, room: &str) -> Response {
        tracing::info!(%room, status = self.status.as_u16(), reason = %self.reason, "{what} refused");
        ::metrics::counter!(REFUSALS, "reason" => self.label).increment(1);
        (self.status, self.reason).into_response()
    }
}

/// Decides what a request may do from its token (`?token=…` or `Authorization: Bearer …`).
#[async_trait]
pub trait Authenticate: Send + Sync + 'static {
    /// The request's grant, or a refusal (401) with the reason.
    async fn authenticate(&self, token: Option<&str>) -> Result<Grant, Refusal>;
}

/// No authentication: every connection is anonymous and may open every room read-write.
#[derive(Debug, Default)]
pub struct Open;

#[async_trait]
impl Authenticate for Open {
    async fn authenticate(&self, _token: Option<&str>) -> Result<Grant, Refusal> {
        Ok(Grant::open())
    }
}

/// The request's token: `?token=…` (what y-websocket's `params` sends), else
/// `Authorization: Bearer …`.
pub fn request_token<'a>(
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    query.get("token").map(String::as_str).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
    })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
