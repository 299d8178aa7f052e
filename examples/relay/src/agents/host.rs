//! One hosted agent's task: renews its state every [`REFRESH`], applies renewals and removals,
//! and closes its session when the TTL lapses, at shutdown, or once another connection wrote
//! its entry.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use synckit_awareness::presence::{Outbox, Session};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::message::{next_clock, publish};
use super::{Agents, Command};

/// How often a hosted agent's state is sent again while its TTL runs (half y-protocols'
/// 30-second timeout, as Yjs clients do).
const REFRESH: Duration = Duration::from_secs(15);

/// Discards what the room sends an agent (nobody reads it), so its queue never fills.
pub(super) async fn drain(mut outbox: Outbox) {
    while outbox.next().await.is_some() {}
}

/// One hosted agent's task.
pub(super) struct Host {
    pub(super) agents: Arc<Agents>,
    pub(super) key: (String, String),
    pub(super) generation: u64,
    pub(super) id: u64,
    pub(super) clock: u64,
    pub(super) state: Value,
    pub(super) deadline: Instant,
}

impl Host {
    pub(super) async fn run(
        mut self,
        session: Session,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
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
        match self.agents.stored(&self.key.0, self.id).await {
            Ok(Some(entry)) => {
                entry.state.is_some() && entry.connection_id == session.connection_id()
            }
            Ok(None) => false,
            // The store is unreachable: keep the agent; the next refresh asks again.
            Err(_) => true,
        }
    }
}
