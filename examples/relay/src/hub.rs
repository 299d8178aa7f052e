//! Rooms, their local connections, and everything that turns store changes into awareness
//! messages for this instance's clients: applied local updates, the change feed (other
//! instances' writes), closed connections and the pruner's expired entries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt;
use synckit_awareness::y_protocols::{
    decode_awareness_update, encode_awareness_state, encode_awareness_update, encode_message,
    AwarenessClientUpdate, AwarenessMessage, DecodeLimits, MAX_SAFE_INTEGER,
};
use synckit_awareness::{
    AwarenessEntry, AwarenessStore, AwarenessUpdate, ChangeFilter, FeedEvent,
    PostgresAwarenessStore, SetOutcome,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::view::{Verdict, View};

/// What a connection's writer task sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A binary y-websocket message.
    Frame(Vec<u8>),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// The sending side of a connection's writer task.
pub type Outbox = mpsc::UnboundedSender<Outgoing>;

/// The instance's shared state.
pub struct Hub {
    pub store: Arc<dyn AwarenessStore>,
    /// Set on PostgreSQL: the store that subscribes to the change feed.
    feed: Option<PostgresAwarenessStore>,
    /// This instance's name, shown on the page.
    pub instance: String,
    /// Unique per process: connection ids are `<prefix>-<n>`.
    connection_prefix: String,
    next_connection: AtomicU64,
    pub limits: DecodeLimits,
    pub max_message_bytes: usize,
    rooms: tokio::sync::Mutex<HashMap<String, Arc<Room>>>,
}

/// One document on this instance.
pub struct Room {
    pub name: String,
    /// The room's Yjs document, in memory on this instance only (not persisted, not shared).
    pub doc: yrs::Doc,
    state: Mutex<RoomState>,
    feed_task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct RoomState {
    connections: HashMap<u64, Outbox>,
    /// clientID -> the local connection that announced it first.
    claims: HashMap<u64, u64>,
    view: View,
}

/// Whether a connection may write a clientID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This connection announced it first (an update of its was applied).
    Own,
    /// Nobody holds it live: the update may apply, and the connection claims it if it does.
    Unclaimed,
    /// Another connection holds it, at this clock. y-websocket clients echo every change they
    /// accept back to the server, so updates at or below it are echoes (dropped); a higher one
    /// is a spoof.
    Foreign { clock: u64 },
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `frame` to every local connection but `except`.
    pub fn broadcast_except(&self, frame: &[u8], except: u64) {
        let state = self.lock();
        send_all(&state, frame, Some(except));
    }

    pub fn connection_count(&self) -> usize {
        self.lock().connections.len()
    }

    /// Runs `updates` through the view and sends the ones the clients will accept to every
    /// local connection, in one awareness message; returns the hidden ones (clientID, leave
    /// clock). The view and the sending happen under one lock, so clients get them in order.
    fn forward(&self, updates: Vec<AwarenessClientUpdate>) -> Vec<(u64, u64)> {
        let mut state = self.lock();
        let mut accepted = Vec::new();
        let mut hidden = Vec::new();
        for update in updates {
            match state
                .view
                .observe(update.client_id, update.clock, update.state.is_some())
            {
                Verdict::Forward => accepted.push(update),
                Verdict::Ignore => {}
                Verdict::Hidden { leave_clock } => hidden.push((update.client_id, leave_clock)),
            }
        }
        if let Some(frame) = awareness_frame(&accepted) {
            send_all(&state, &frame, None);
        }
        hidden
    }

    /// Entries that are gone from the store: leaves for the ones the clients see.
    fn forward_gone(&self, clients: &[u64]) {
        let mut state = self.lock();
        let leaves: Vec<AwarenessClientUpdate> = clients
            .iter()
            .filter_map(|&client_id| {
                let clock = state.view.gone(client_id)?;
                Some(leave(client_id, clock))
            })
            .collect();
        if let Some(frame) = awareness_frame(&leaves) {
            send_all(&state, &frame, None);
        }
    }
}

fn send_all(state: &RoomState, frame: &[u8], except: Option<u64>) {
    for (id, outbox) in &state.connections {
        if Some(*id) != except {
            // A closed connection's outbox fails; its own task cleans up.
            let _ = outbox.send(Outgoing::Frame(frame.to_vec()));
        }
    }
}

fn leave(client_id: u64, clock: u64) -> AwarenessClientUpdate {
    AwarenessClientUpdate {
        client_id,
        clock,
        state: None,
    }
}

/// One y-websocket awareness message holding `clients`, or `None` when there are none.
pub fn awareness_frame(clients: &[AwarenessClientUpdate]) -> Option<Vec<u8>> {
    if clients.is_empty() {
        return None;
    }
    match encode_awareness_update(clients) {
        Ok(update) => Some(encode_message(&AwarenessMessage::Update(update))),
        Err(error) => {
            // Every id and clock here came through the codec or the store's range checks.
            tracing::error!(%error, "cannot encode an awareness update");
            None
        }
    }
}

/// The y-protocols clientID a stored `client_id` stands for (canonical decimal, <= 2^53-1).
pub fn y_client_id(client_id: &str) -> Option<u64> {
    let id: u64 = client_id.parse().ok()?;
    (id <= MAX_SAFE_INTEGER && id.to_string() == client_id).then_some(id)
}

fn as_update(entry: &AwarenessEntry) -> Option<AwarenessClientUpdate> {
    Some(AwarenessClientUpdate {
        client_id: y_client_id(&entry.client_id)?,
        clock: u64::try_from(entry.clock)
            .ok()
            .filter(|c| *c <= MAX_SAFE_INTEGER)?,
        state: entry.state.clone(),
    })
}

impl Hub {
    pub fn new(
        store: Arc<dyn AwarenessStore>,
        feed: Option<PostgresAwarenessStore>,
        instance: String,
        limits: DecodeLimits,
        max_message_bytes: usize,
    ) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            store,
            feed,
            connection_prefix: format!("{instance}-{}-{nanos:x}", std::process::id()),
            instance,
            next_connection: AtomicU64::new(1),
            limits,
            max_message_bytes,
            rooms: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A new connection number and its store-wide connection id.
    pub fn new_connection(&self) -> (u64, String) {
        let n = self.next_connection.fetch_add(1, Ordering::Relaxed);
        (n, format!("{}-{n}", self.connection_prefix))
    }

    /// How many rooms are open here, and their connections.
    pub async fn room_count(&self) -> (usize, usize) {
        let rooms = self.rooms.lock().await;
        let connections = rooms.values().map(|r| r.connection_count()).sum();
        (rooms.len(), connections)
    }

    /// Adds a connection to a room, creating the room (and its feed subscription, which is
    /// listening before this returns) when it is the first.
    pub async fn join(
        self: &Arc<Self>,
        name: &str,
        connection: u64,
        outbox: Outbox,
    ) -> synckit_awareness::Result<Arc<Room>> {
        let mut rooms = self.rooms.lock().await;
        let room = match rooms.get(name) {
            Some(room) => room.clone(),
            None => {
                let room = Arc::new(Room {
                    name: name.to_owned(),
                    doc: yrs::Doc::new(),
                    state: Mutex::new(RoomState::default()),
                    feed_task: Mutex::new(None),
                });
                if let Some(feed) = &self.feed {
                    let stream = feed
                        .subscribe(ChangeFilter::document(name).ignoring_own())
                        .await?;
                    let task = tokio::spawn(follow_feed(self.clone(), room.clone(), stream));
                    *room.feed_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                }
                tracing::info!(room = name, "room opened");
                rooms.insert(name.to_owned(), room.clone());
                room
            }
        };
        room.lock().connections.insert(connection, outbox);
        Ok(room)
    }

    /// Removes a connection from its room (and its claims); the room closes with its last one.
    pub async fn release(&self, room: &Arc<Room>, connection: u64) {
        let mut rooms = self.rooms.lock().await;
        let empty = {
            let mut state = room.lock();
            state.connections.remove(&connection);
            state.claims.retain(|_, owner| *owner != connection);
            state.connections.is_empty()
        };
        if empty {
            rooms.remove(&room.name);
            if let Some(task) = room
                .feed_task
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                task.abort();
            }
            tracing::info!(room = %room.name, "room closed");
        }
    }

    /// The full awareness state of the room, as sent to a joining client or a query. What it
    /// holds that this instance's other clients were not told yet (a change whose feed event
    /// has not arrived) goes to all of them first: the view tracks what *every* local client
    /// was told, so it must not learn something only the joiner heard.
    pub async fn full_state(&self, room: &Room) -> synckit_awareness::Result<Vec<u8>> {
        let update = encode_awareness_state(&*self.store, &room.name).await?;
        let everything = DecodeLimits {
            max_clients: usize::MAX,
            max_state_bytes: usize::MAX,
        };
        if let Ok(clients) = decode_awareness_update(&update, &everything) {
            room.forward(clients);
        }
        Ok(encode_message(&AwarenessMessage::Update(update)))
    }

    /// Whether `connection` may write `client_id` (whose update is at `clock`) in `room`: the
    /// connection whose update of a clientID is applied first owns it, until it closes; a
    /// clientID the store holds live for another connection (on any instance) is foreign.
    pub async fn ownership(
        &self,
        room: &Room,
        connection: u64,
        connection_id: &str,
        client_id: u64,
        clock: u64,
    ) -> synckit_awareness::Result<Ownership> {
        {
            let state = room.lock();
            if state.claims.get(&client_id) == Some(&connection) {
                return Ok(Ownership::Own);
            }
            // The clients were sent this participant at this clock or a newer one: an echo
            // (no store read for the echoes every client sends of every change it accepts).
            if let Some(known) = state.view.present_clock(client_id).filter(|k| *k >= clock) {
                return Ok(Ownership::Foreign { clock: known });
            }
        }
        let stored = self.store.get(&room.name, &client_id.to_string()).await?;
        let stored_clock = stored
            .as_ref()
            .map_or(0, |e| u64::try_from(e.clock).unwrap_or(0));
        let claimed_elsewhere = room
            .lock()
            .claims
            .get(&client_id)
            .is_some_and(|owner| *owner != connection);
        let live_elsewhere =
            stored.is_some_and(|e| !e.is_tombstone() && e.connection_id != connection_id);
        Ok(if claimed_elsewhere || live_elsewhere {
            Ownership::Foreign {
                clock: stored_clock,
            }
        } else {
            Ownership::Unclaimed
        })
    }

    /// `connection` owns `client_id` from now on, unless another connection got there first.
    pub fn claim(&self, room: &Room, connection: u64, client_id: u64) {
        room.lock().claims.entry(client_id).or_insert(connection);
    }

    /// After a connection's update was applied: relay the applied clients to every local
    /// connection (the sender too, as y-websocket's server does), and for the stale ones that
    /// lost to a leave the peers saw, send the sender that leave so it re-announces itself
    /// (y-protocols: a client that receives a leave for itself bumps its clock).
    pub async fn after_apply(
        &self,
        room: &Room,
        sender: &Outbox,
        applied: Vec<AwarenessClientUpdate>,
        stale: Vec<AwarenessClientUpdate>,
    ) -> synckit_awareness::Result<()> {
        let mut remedies: Vec<AwarenessClientUpdate> = room
            .forward(applied)
            .into_iter()
            .map(|(client_id, clock)| leave(client_id, clock))
            .collect();
        for update in stale.into_iter().filter(|u| u.state.is_some()) {
            let stored = self
                .store
                .get(&room.name, &update.client_id.to_string())
                .await?;
            if let Some(tombstone) = stored.filter(|e| e.is_tombstone()) {
                let clock = u64::try_from(tombstone.clock).unwrap_or(0);
                if clock >= update.clock {
                    remedies.push(leave(update.client_id, clock));
                }
            }
        }
        if let Some(frame) = awareness_frame(&remedies) {
            tracing::debug!(room = %room.name, count = remedies.len(), "rejoin after leave: asking owners to re-announce");
            let _ = sender.send(Outgoing::Frame(frame));
        }
        Ok(())
    }

    /// Entries removed from the store by this instance (a closed connection's, or expired
    /// ones taken by the pruner): for each that still had a state, a tombstone one clock
    /// higher is written (so that every instance, and a client rejoining at its old clock,
    /// knows it left) and the leave goes to this instance's clients; other instances get
    /// it through the change feed.
    pub async fn announce_gone(&self, entries: Vec<AwarenessEntry>) {
        let mut by_room: HashMap<String, Vec<AwarenessClientUpdate>> = HashMap::new();
        for entry in entries.into_iter().filter(|e| !e.is_tombstone()) {
            let tombstone = entry.leave_update();
            match self.store.set(&tombstone).await {
                Ok(SetOutcome::Applied) => {
                    if let Some(update) = as_update(&AwarenessEntry {
                        state: None,
                        clock: tombstone.clock,
                        ..entry
                    }) {
                        by_room
                            .entry(tombstone.document_id.clone())
                            .or_default()
                            .push(update);
                    }
                }
                // The client came back with a newer clock meanwhile (or another principal
                // took the id): nothing to announce.
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, document = %tombstone.document_id, client = %tombstone.client_id, "cannot write the leave of a gone client")
                }
            }
        }
        let rooms = self.rooms.lock().await;
        for (name, leaves) in by_room {
            tracing::debug!(room = %name, count = leaves.len(), "announcing leaves");
            if let Some(room) = rooms.get(&name) {
                room.forward(leaves);
            }
        }
    }

    /// Re-reads `client_ids` of the room after another instance changed them, and tells this
    /// instance's clients what they will accept.
    async fn refresh(&self, room: &Room, client_ids: &[String]) -> synckit_awareness::Result<()> {
        let mut updates = Vec::new();
        let mut gone = Vec::new();
        let mut owners = HashMap::new();
        for id in client_ids {
            let Some(client_id) = y_client_id(id) else {
                continue;
            };
            match self.store.get(&room.name, id).await? {
                Some(entry) => {
                    if let Some(update) = as_update(&entry) {
                        owners.insert(client_id, entry.connection_id.clone());
                        updates.push(update);
                    }
                }
                None => gone.push(client_id),
            }
        }
        let hidden = room.forward(updates);
        room.forward_gone(&gone);
        self.reassert_leaves(room, hidden, &owners).await;
        Ok(())
    }

    /// Another instance accepted a participant at a clock this instance's clients ignore
    /// (they saw it leave at a clock at least as high): write that leave to the store, so the
    /// owner's instance sends it to the owner, which re-announces itself one clock higher.
    async fn reassert_leaves(
        &self,
        room: &Room,
        hidden: Vec<(u64, u64)>,
        owners: &HashMap<u64, String>,
    ) {
        for (client_id, clock) in hidden {
            // Owned here: tell the owner directly (this instance ignores its own feed events).
            let local_owner = {
                let state = room.lock();
                state
                    .claims
                    .get(&client_id)
                    .and_then(|connection| state.connections.get(connection).cloned())
            };
            if let Some(outbox) = local_owner {
                if let Some(frame) = awareness_frame(&[leave(client_id, clock)]) {
                    let _ = outbox.send(Outgoing::Frame(frame));
                }
                continue;
            }
            let connection = owners.get(&client_id).cloned().unwrap_or_default();
            let tombstone = AwarenessUpdate::leave(
                room.name.clone(),
                client_id.to_string(),
                connection,
                i64::try_from(clock).unwrap_or(i64::MAX),
            );
            tracing::debug!(room = %room.name, client_id, clock, "rejoin after leave: re-asserting the leave");
            if let Err(error) = self.store.set(&tombstone).await {
                tracing::warn!(%error, "cannot re-assert a leave");
            }
        }
    }

    /// Events may have been missed: re-read the whole room.
    async fn resync(&self, room: &Room) -> synckit_awareness::Result<()> {
        let live = self.store.get_all(&room.name).await?;
        let live_ids: HashSet<u64> = live
            .iter()
            .filter_map(|e| y_client_id(&e.client_id))
            .collect();
        let missing: Vec<String> = room
            .lock()
            .view
            .present()
            .into_iter()
            .filter(|id| !live_ids.contains(id))
            .map(|id| id.to_string())
            .collect();
        let owners: HashMap<u64, String> = live
            .iter()
            .filter_map(|e| Some((y_client_id(&e.client_id)?, e.connection_id.clone())))
            .collect();
        let hidden = room.forward(live.iter().filter_map(as_update).collect());
        self.reassert_leaves(room, hidden, &owners).await;
        self.refresh(room, &missing).await
    }
}

/// Turns the room's change-feed events (other instances' writes) into awareness messages.
async fn follow_feed(hub: Arc<Hub>, room: Arc<Room>, mut events: synckit_awareness::ChangeStream) {
    while let Some(event) = events.next().await {
        let result = match event {
            FeedEvent::Change(change) => hub.refresh(&room, &change.client_ids).await,
            FeedEvent::Resync => {
                tracing::info!(room = %room.name, "change feed resync: re-reading the room");
                hub.resync(&room).await
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, room = %room.name, "cannot follow a change; the next resync catches up");
        }
    }
}
