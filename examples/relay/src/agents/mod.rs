//! Participants that are not a browser (issue 39; README "Agents and bots"): an agent, a bot or
//! a server-side job sets its presence in a room over HTTP (`routes.rs`) and every client sees it
//! like any other — in y-protocols awareness on every instance, in `GET …/presence`, in the
//! event stream and in webhooks — until it is deleted or its TTL lapses without a renewal.
//!
//! An agent is hosted by the instance that last received its `PUT`: a task holding an engine
//! [`Session`] of its own, so every rule of the engine applies as to a WebSocket connection
//! (the identity's `user`, ownership, the room's limits, leaves once). The task renews the
//! state every [`REFRESH`] (y-protocols clients drop a peer silent for 30 s) and closes the
//! session when the TTL lapses. Its client id is derived from the room and the participant's
//! name, at or above 2^32 — Yjs client ids are 32-bit, so it never collides with a browser's —
//! and its clock is the time in milliseconds (above the last one used), so a renewal through
//! another instance is newer than what the previous host sent. A host that finds its agent's
//! entry gone or written by another connection (deleted, or taken over by another instance)
//! stops without a leave.

mod routes;

pub(crate) use routes::{delete, put};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use synckit_awareness::presence::{Identity, Outbox, Presence, Received, Session};
use synckit_awareness::y_protocols::{
    encode_awareness_update, encode_message, AwarenessClientUpdate, AwarenessMessage,
};
use synckit_awareness::SetOutcome;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How often a hosted agent's state is sent again while its TTL runs (half y-protocols'
/// 30-second timeout, as Yjs clients do).
const REFRESH: Duration = Duration::from_secs(15);

/// The first client id of agents: Yjs picks 32-bit ids, so none is at or above it.
const FIRST_AGENT_ID: u64 = 1 << 32;
/// Client ids stay at most 2^53 - 1, the largest a JavaScript peer represents.
const AGENT_IDS: u64 = (1 << 53) - FIRST_AGENT_ID;

/// The client id of `participant` in `room`: FNV-1a (64-bit) of both, at or above 2^32. The
/// same on every instance and every version.
pub(crate) fn client_id(room: &str, participant: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes().chain([0]).chain(participant.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    FIRST_AGENT_ID + hash % AGENT_IDS
}

/// The clock of a new state: the time in milliseconds, above `last`.
fn next_clock(last: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    now.max(last + 1)
}

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
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        // After a host elsewhere, the stored clock may be ahead of this instance's time.
        let stored = self
            .presence
            .store()
            .get(&key.0, &id.to_string())
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?
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
        let key = (room.to_owned(), participant.to_owned());
        let local = self
            .hosted()
            .get(&key)
            .map(|h| (h.principal == identity.principal, h.commands.clone()));
        let mut removed_here = false;
        if let Some((same, commands)) = local {
            if !same {
                return Err(AgentError::Forbidden);
            }
            let (reply, done) = oneshot::channel();
            removed_here = commands.send(Command::Remove { reply }).is_ok() && done.await.is_ok();
        }
        // Hosted elsewhere as well (a renewal went to another instance), or only there: a
        // leave written through a session of this instance, one clock above the stored entry.
        let id = client_id(room, participant);
        let entry = self
            .presence
            .store()
            .get(room, &id.to_string())
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.state.is_some()) else {
            return if removed_here {
                Ok(())
            } else {
                Err(AgentError::NotFound)
            };
        };
        if entry.owner != identity.principal {
            return Err(AgentError::Forbidden);
        }
        let (session, outbox) = self
            .presence
            .join_as(room, identity)
            .await
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        drop(outbox);
        let clock = next_clock(u64::try_from(entry.clock).unwrap_or(0));
        let result = publish(&session, id, clock, None).await;
        session.close().await;
        result.map(drop)
    }
}

/// Discards what the room sends an agent (nobody reads it), so its queue never fills.
async fn drain(mut outbox: Outbox) {
    while outbox.next().await.is_some() {}
}

/// Sends `state` (`None`: a leave) of client `id` at `clock` through `session`.
async fn publish(
    session: &Session,
    id: u64,
    clock: u64,
    state: Option<&Value>,
) -> Result<Placed, AgentError> {
    let client = AwarenessClientUpdate {
        client_id: id,
        clock,
        state: state.cloned(),
    };
    let update =
        encode_awareness_update(&[client]).map_err(|e| AgentError::Unavailable(e.to_string()))?;
    let message = encode_message(&AwarenessMessage::Update(update));
    let received: Received = session
        .receive(&message)
        .await
        .map_err(|d| AgentError::Unavailable(d.reason))?;
    if let Some((_, outcome)) = received.refused.first() {
        return Err(match outcome {
            SetOutcome::Forbidden => AgentError::Forbidden,
            SetOutcome::DocumentFull => AgentError::Full("the room is full"),
            _ => AgentError::Full("the limit of clients per connection is reached"),
        });
    }
    if received.applied.contains(&id) {
        Ok(Placed {
            client_id: id,
            clock,
        })
    } else {
        Err(AgentError::Unavailable(
            "a newer state of this participant is held: try again".into(),
        ))
    }
}

/// One hosted agent's task.
struct Host {
    agents: Arc<Agents>,
    key: (String, String),
    generation: u64,
    id: u64,
    clock: u64,
    state: Value,
    deadline: Instant,
}

impl Host {
    async fn run(mut self, session: Session, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut shutdown = self.agents.shutdown.clone();
        let stopping = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopping);
        let mut refresh = Instant::now() + REFRESH;
        let removed = loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Set { state, ttl, reply }) => {
                        let clock = next_clock(self.clock);
                        let result = publish(&session, self.id, clock, Some(&state)).await;
                        if result.is_ok() {
                            (self.clock, self.state) = (clock, state);
                            self.deadline = Instant::now() + ttl;
                            refresh = Instant::now() + REFRESH;
                        }
                        let _ = reply.send(result);
                    }
                    Some(Command::Remove { reply }) => break Some(reply),
                    None => break None,
                },
                () = tokio::time::sleep_until(refresh) => {
                    refresh = Instant::now() + REFRESH;
                    if !self.still_hosted(&session).await {
                        break None;
                    }
                    let clock = next_clock(self.clock);
                    if publish(&session, self.id, clock, Some(&self.state)).await.is_ok() {
                        self.clock = clock;
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => break None,
                () = &mut stopping => break None,
            }
        };
        {
            let mut hosted = self.agents.hosted();
            if hosted
                .get(&self.key)
                .is_some_and(|h| h.generation == self.generation)
            {
                hosted.remove(&self.key);
            }
        }
        // The engine removes what the session wrote and tells everyone it left; an entry
        // another connection wrote since (deleted, or hosted elsewhere now) is left alone.
        session.close().await;
        if let Some(reply) = removed {
            let _ = reply.send(());
        }
    }

    /// Whether the stored entry is still this session's (not deleted or taken over elsewhere).
    async fn still_hosted(&self, session: &Session) -> bool {
        match self
            .agents
            .presence
            .store()
            .get(&self.key.0, &self.id.to_string())
            .await
        {
            Ok(Some(entry)) => {
                entry.state.is_some() && entry.connection_id == session.connection_id()
            }
            Ok(None) => false,
            // The store is unreachable: keep the agent; the next refresh asks again.
            Err(_) => true,
        }
    }
}
