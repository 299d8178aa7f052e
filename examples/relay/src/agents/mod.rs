//! Participants that are not a browser (issue 39; README "Agents and bots"): an agent, a bot or
//! a server-side job sets its presence in a room over HTTP (`routes.rs`) and every client sees it
//! like any other — in y-protocols awareness on every instance, in `GET …/presence`, in the
//! event stream and in webhooks — until it is deleted or its TTL lapses without a renewal.
//!
//! An agent is hosted by the instance that last received its `PUT`: a task holding an engine
//! [`Session`] of its own, so every rule of the engine applies as to a WebSocket connection
//! (the identity's `user`, ownership, the room's limits, leaves once). The task renews the
//! state every 15 s (y-protocols clients drop a peer silent for 30 s) and closes the
//! session when the TTL lapses. Its client id is derived from the room and the participant's
//! name, at or above 2^32 — Yjs client ids are 32-bit, so it never collides with a browser's —
//! and its clock is the time in milliseconds (above the last one used), so a renewal through
//! another instance is newer than what the previous host sent. A host that finds its agent's
//! entry gone or written by another connection (deleted, or taken over by another instance)
//! stops without a leave.

mod host;
mod message;
mod routes;

pub(crate) use routes::{delete, put};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use synckit_awareness::presence::{Identity, Presence};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use host::{drain, Host};
use message::{client_id, next_clock, publish};

/// Why a set or a removal did not happen (the route's answer).
#[derive(Debug)]
pub(crate) enum AgentError {
    /// Another principal's participant (403).
    Forbidden,
    /// A room limit (409).
    Full(&'static str),
    /// No such live participant (404).
    NotFound,
    /// The engine or the store failed (503).
    Unavailable(String),
}

/// The engine or the store failed.
fn unavailable(error: impl std::fmt::Display) -> AgentError {
    AgentError::Unavailable(error.to_string())
}

/// What a set did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub(crate) client_id: u64,
    pub(crate) clock: u64,
}

enum Command {
    Set {
        state: Value,
        ttl: Duration,
        reply: oneshot::Sender<Result<Placed, AgentError>>,
    },
    Remove {
        reply: oneshot::Sender<()>,
    },
}

struct Hosted {
    principal: Option<String>,
    /// The connection id its session writes under.
    connection: String,
    generation: u64,
    commands: mpsc::UnboundedSender<Command>,
}

/// The agents this instance hosts, by (room, participant).
pub(crate) struct Agents {
    presence: Presence,
    hosted: Mutex<HashMap<(String, String), Hosted>>,
    generations: std::sync::atomic::AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// The largest state a `PUT` may set (the relay's `--max-state-bytes`).
    pub(crate) max_state_bytes: usize,
}

impl Agents {
    pub(crate) fn new(
        presence: Presence,
        shutdown: watch::Receiver<bool>,
        max_state_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            presence,
            max_state_bytes,
            hosted: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
            shutdown,
        })
    }

    /// The stored entry of agent `id` in `room` (the truth across instances).
    async fn stored(
        &self,
        room: &str,
        id: u64,
    ) -> synckit_awareness::Result<Option<synckit_awareness::AwarenessEntry>> {
        self.presence.store().get(room, &id.to_string()).await
    }

    fn hosted(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Hosted>> {
        self.hosted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets `participant`'s state in `room` for `ttl`, as `identity`.
    pub(crate) async fn set(
        self: &Arc<Self>,
        room: &str,
        participant: &str,
        identity: Identity,
        state: Value,
        ttl: Duration,
    ) -> Result<Placed, AgentError> {
        let key = (room.to_owned(), participant.to_owned());
        let local = self
            .hosted()
            .get(&key)
            .map(|h| (h.principal == identity.principal, h.commands.clone()));
        if let Some((same, commands)) = local {
            if !same {
                return Err(AgentError::Forbidden);
            }
            let (reply, answer) = oneshot::channel();
            if commands
                .send(Command::Set {
                    state: state.clone(),
                    ttl,
                    reply,
                })
                .is_ok()
            {
                if let Ok(result) = answer.await {
                    return result;
                }
            }
            // The host ended meanwhile: host it afresh.
        }
        self.host(key, identity, state, ttl).await
    }

    /// A new host for `key`: its session, its first state, its task.
    async fn host(
        self: &Arc<Self>,
        key: (String, String),
        identity: Identity,
        state: Value,
        ttl: Duration,
    ) -> Result<Placed, AgentError> {
        let id = client_id(&key.0, &key.1);
        let principal = identity.principal.clone();
        let (session, outbox) = self
            .presence
            .join_as(&key.0, identity)
            .await
            .map_err(unavailable)?;
        // After a host elsewhere, the stored clock may be ahead of this instance's time.
        let stored = self
            .stored(&key.0, id)
            .await
            .map_err(unavailable)?
            .map_or(0, |entry| u64::try_from(entry.clock).unwrap_or(0));
        let clock = next_clock(stored);
        if let Err(error) = publish(&session, id, clock, Some(&state)).await {
            session.close().await;
            return Err(error);
        }
        let (commands, receiver) = mpsc::unbounded_channel();
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let previous = self.hosted().insert(
            key.clone(),
            Hosted {
                principal,
                connection: session.connection_id().to_owned(),
                generation,
                commands,
            },
        );
        if let Some(previous) = previous {
            // Two first PUTs at once: the older host stops.
            let (reply, _) = oneshot::channel();
            let _ = previous.commands.send(Command::Remove { reply });
        }
        let task = Host {
            agents: self.clone(),
            key,
            generation,
            id,
            clock,
            state,
            deadline: Instant::now() + ttl,
        };
        tokio::spawn(drain(outbox));
        tokio::spawn(task.run(session, receiver));
        Ok(Placed {
            client_id: id,
            clock,
        })
    }

    /// Removes `participant` from `room` when it is `principal`'s.
    pub(crate) async fn remove(
        &self,
        room: &str,
        participant: &str,
        identity: Identity,
    ) -> Result<(), AgentError> {
        let id = client_id(room, participant);
        let entry = self
            .stored(room, id)
            .await
            .map_err(unavailable)?
            .filter(|e| e.state.is_some());
        if entry
            .as_ref()
            .is_some_and(|e| e.owner != identity.principal)
        {
            return Err(AgentError::Forbidden);
        }
        let key = (room.to_owned(), participant.to_owned());
        let local = self.hosted().get(&key).map(|h| {
            (
                h.principal == identity.principal,
                h.connection.clone(),
                h.commands.clone(),
            )
        });
        let mut closed_here = None;
        if let Some((same, connection, commands)) = local {
            if !same {
                return Err(AgentError::Forbidden);
            }
            let (reply, done) = oneshot::channel();
            if commands.send(Command::Remove { reply }).is_ok() && done.await.is_ok() {
                closed_here = Some(connection);
            }
        }
        let Some(entry) = entry else {
            return Err(AgentError::NotFound);
        };
        if closed_here.as_deref() == Some(entry.connection_id.as_str()) {
            // Its host here wrote it and closing the host's session removed it.
            return Ok(());
        }
        // Hosted elsewhere (a renewal went to another instance): a leave written through a
        // session of this instance, one clock above the stored entry.
        let (session, outbox) = self
            .presence
            .join_as(room, identity)
            .await
            .map_err(unavailable)?;
        drop(outbox);
        let clock = next_clock(u64::try_from(entry.clock).unwrap_or(0));
        let result = publish(&session, id, clock, None).await;
        session.close().await;
        result.map(drop)
    }
}
