//! The presence engine: y-protocols awareness for a server's connections, on a store.
//!
//! A server (a y-websocket relay, a SyncKit server, any transport) tells the engine that "a
//! connection joined room R as principal P" ([`Presence::join`]), "these bytes arrived"
//! ([`Session::receive`]) and "this connection closed" ([`Session::close`]); the engine hands
//! back, through each connection's bounded [`Outbox`], the messages to send it. It owns:
//!
//! - **the y-protocols rules**: the clock rule (one function, shared with the stores), what each
//!   room's local clients were told (so only what they accept is sent), the echoes clients send
//!   back of every change they accept (dropped without a database round trip, leaves too), and
//!   the rejoin-after-leave remedy (a client that reconnects with a clock its peers saw leave is
//!   sent that leave, so it re-announces itself one clock higher);
//! - **ownership**: a connection writes as its principal ([`AwarenessUpdate::owner`]), so
//!   another principal's client id is refused by the store; a client id is held by the local
//!   connection that wrote it, and handed over when the same principal writes it on a new
//!   connection (a reconnect), so failover needs no waiting;
//! - **refusals with a reason**: a client refused by ownership or a participant limit
//!   ([`SetOutcome::Forbidden`], [`SetOutcome::DocumentFull`], [`SetOutcome::ConnectionFull`])
//!   is reported in [`Received::refused`] and told once, with y-websocket's permission-denied
//!   message, which its client logs;
//! - **cross-instance fan-out** (PostgreSQL): one change-feed subscription per process, routed to
//!   the rooms that have local connections, applying the states the notifications carry (a
//!   re-read only for one that did not fit);
//! - **departures**: the instance's lease (started with the engine; [`Presence::shutdown`]
//!   removes this instance's entries at once so their leaves go out), and the pruner's
//!   departed entries (expired, or left by a crashed instance) turned into leaves for the rooms
//!   that show them, each announced once;
//! - **bounded queues**: a connection whose outbox is full is disconnected
//!   ([`Outgoing::Close`], reason "too slow"), the others are unaffected.
//!
//! It works on both stores: [`Presence::on_postgres`] (any number of instances on one database)
//! and [`Presence::in_memory`] (one process).

mod options;
mod outbox;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::entry::{AwarenessEntry, AwarenessUpdate, SetOutcome};
use crate::error::{Error, Result};
use crate::memory::MemoryAwarenessStore;
use crate::postgres::{ChangeFilter, ChangeKind, FeedEvent, PostgresAwarenessStore};
use crate::pruner::Pruner;
use crate::store::AwarenessStore;
use crate::y_protocols::apply::{
    apply_clients, as_client, awareness_clients, y_client_id, y_clock,
};
use crate::y_protocols::{
    decode_awareness_update, decode_message, encode_awareness_update, encode_message,
    encode_permission_denied, AwarenessClientUpdate, AwarenessMessage,
};
pub use options::{close_code, Disconnect, PresenceOptions, DEFAULT_QUEUE_BYTES};
use outbox::Sender;
pub use outbox::{Outbox, Outgoing};
use view::{Verdict, View};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A presence engine: share it (it is a cheap clone) between the server's connections.
#[derive(Clone, Debug)]
pub struct Presence {
    engine: Arc<Engine>,
}

struct Engine {
    store: Arc<dyn AwarenessStore>,
    postgres: Option<PostgresAwarenessStore>,
    options: PresenceOptions,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Store connection ids are `<prefix>-<n>`: unique across instances.
    prefix: String,
    next_connection: AtomicU64,
    stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pruner: Mutex<Option<Pruner>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One document with local connections.
struct Room {
    name: String,
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    view: View,
    members: HashMap<u64, Member>,
    /// clientID -> the local connection that holds it, and the clock it last wrote.
    claims: HashMap<u64, Claim>,
}

struct Member {
    sender: Sender,
    principal: Option<String>,
}

#[derive(Clone, Copy)]
struct Claim {
    connection: u64,
    clock: u64,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        lock(&self.state)
    }
}

impl RoomState {
    fn send_all(&self, message: &Bytes, except: Option<u64>) {
        let queued = self
            .members
            .iter()
            .filter(|(number, member)| {
                Some(**number) != except && member.sender.queue(message.clone())
            })
            .count();
        // One metric call per message, not per recipient.
        ::metrics::counter!(crate::metrics::PRESENCE_SENT).increment(queued as u64);
    }

    /// Runs `updates` through the view and sends the ones the clients will accept to every
    /// local connection, in one message; returns the hidden ones (clientID, leave clock).
    fn forward(&mut self, updates: Vec<AwarenessClientUpdate>) -> Vec<(u64, u64)> {
        let mut accepted = Vec::new();
        let mut hidden = Vec::new();
        for update in updates {
            match self
                .view
                .observe(update.client_id, update.clock, update.state.is_some())
            {
                Verdict::Forward => accepted.push(update),
                Verdict::Ignore => {}
                Verdict::Hidden { leave_clock } => hidden.push((update.client_id, leave_clock)),
            }
        }
        if let Some(message) = awareness_message(&accepted) {
            self.send_all(&message, None);
        }
        hidden
    }

    /// Entries removed from the store (expired, a crashed or stopped instance's): no local
    /// connection holds them any more, and the clients that see them are told they left.
    fn remove(&mut self, clients: Vec<u64>) {
        for client in &clients {
            self.claims.remove(client);
        }
        self.forward_gone(clients);
    }

    /// Entries gone from the store: leaves for the ones the clients see.
    fn forward_gone(&mut self, clients: impl IntoIterator<Item = u64>) {
        let leaves: Vec<AwarenessClientUpdate> = clients
            .into_iter()
            .filter_map(|client_id| Some(leave(client_id, self.view.gone(client_id)?)))
            .collect();
        if let Some(message) = awareness_message(&leaves) {
            self.send_all(&message, None);
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
fn awareness_message(clients: &[AwarenessClientUpdate]) -> Option<Bytes> {
    if clients.is_empty() {
        return None;
    }
    match encode_awareness_update(clients) {
        Ok(update) => Some(encode_message(&AwarenessMessage::Update(update)).into()),
        Err(error) => {
            // Every id and clock here came through the codec or the store's range checks.
            tracing::error!(%error, "presence: cannot encode an awareness update");
            None
        }
    }
}

impl Presence {
    /// An engine on a PostgreSQL store, sharing presence with every other instance on the same
    /// database and change-feed channel: turns on the store's change feed (publishing, with
    /// [`PresenceOptions::change_feed`]), starts its instance lease unless the store already
    /// runs one, subscribes to the feed once for every room, and starts the pruner.
    pub async fn on_postgres(
        store: PostgresAwarenessStore,
        options: PresenceOptions,
    ) -> Result<Self> {
        check(&options)?;
        let store = store.with_change_feed(options.change_feed.clone().with_publish(true))?;
        if store.instance_id().is_none() {
            store.start_instance(options.instance.clone()).await?;
        }
        let events = store.subscribe(ChangeFilter::all().ignoring_own()).await?;
        let prefix = store.instance_id().unwrap_or("presence").to_owned();
        let presence = Self::build(Arc::new(store.clone()), Some(store), options, prefix);
        let router = tokio::spawn(route_feed(Arc::downgrade(&presence.engine), events));
        lock(&presence.engine.tasks).push(router);
        Ok(presence)
    }

    /// An engine on an in-memory store: one process, no instances. Must be called inside a
    /// Tokio runtime (it starts the pruner).
    pub fn in_memory(store: MemoryAwarenessStore, options: PresenceOptions) -> Result<Self> {
        check(&options)?;
        let prefix = options.instance.instance_id.clone();
        Ok(Self::build(Arc::new(store), None, options, prefix))
    }

    fn build(
        store: Arc<dyn AwarenessStore>,
        postgres: Option<PostgresAwarenessStore>,
        options: PresenceOptions,
        prefix: String,
    ) -> Self {
        let engine = Arc::new(Engine {
            store: store.clone(),
            postgres,
            prefix,
            next_connection: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            rooms: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            pruner: Mutex::new(None),
            options,
        });
        // Departed entries: taken atomically by whichever instance's pruner comes first, so
        // each is announced once; other instances hear of them through the change feed.
        let (departed_tx, mut departed_rx) = mpsc::unbounded_channel();
        let pruner = Pruner::spawn(store, engine.options.prune_interval, move |entry| {
            let _ = departed_tx.send(entry);
        });
        let weak = Arc::downgrade(&engine);
        let announcer = tokio::spawn(async move {
            while let Some(first) = departed_rx.recv().await {
                let mut entries = vec![first];
                while let Ok(next) = departed_rx.try_recv() {
                    entries.push(next);
                }
                let Some(engine) = weak.upgrade() else { break };
                engine.departed(entries);
            }
        });
        *lock(&engine.pruner) = Some(pruner);
        lock(&engine.tasks).push(announcer);
        Self { engine }
    }

    /// The store under the engine (for health checks and inspection).
    pub fn store(&self) -> &Arc<dyn AwarenessStore> {
        &self.engine.store
    }

    /// The instance id this engine's writes carry (PostgreSQL), or the connection-id prefix.
    pub fn instance_id(&self) -> &str {
        &self.engine.prefix
    }

    /// Rooms with local connections, and those connections.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = lock(&self.engine.rooms);
        let connections = rooms.values().map(|r| r.lock().members.len()).sum();
        (rooms.len(), connections)
    }

    /// A connection joins `room` (the document id) as `principal` (the user your server
    /// authenticated it as; `None` when it does not authenticate): returns its session (to
    /// hand it what arrives) and its outbox (what to send it). The room's full awareness
    /// state is already queued in the outbox.
    pub async fn join(&self, room: &str, principal: Option<String>) -> Result<(Session, Outbox)> {
        if self.engine.stopping.load(Ordering::SeqCst) {
            return Err(Error::Config("the presence engine is shutting down".into()));
        }
        crate::validate::check_id(crate::error::Field::DocumentId, room)?;
        if let Some(principal) = &principal {
            crate::validate::check_id(crate::error::Field::Owner, principal)?;
        }
        let number = self.engine.next_connection.fetch_add(1, Ordering::Relaxed);
        let options = &self.engine.options;
        let (sender, outbox) = outbox::queue(options.queue_capacity, options.queue_bytes);
        let room = {
            let mut rooms = lock(&self.engine.rooms);
            let room = rooms
                .entry(room.to_owned())
                .or_insert_with(|| {
                    Arc::new(Room {
                        name: room.to_owned(),
                        state: Mutex::new(RoomState::default()),
                    })
                })
                .clone();
            room.lock().members.insert(
                number,
                Member {
                    sender: sender.clone(),
                    principal: principal.clone(),
                },
            );
            ::metrics::gauge!(crate::metrics::PRESENCE_ROOMS).set(rooms.len() as f64);
            room
        };
        ::metrics::gauge!(crate::metrics::PRESENCE_CONNECTIONS).increment(1.0);
        let session = Session {
            engine: self.engine.clone(),
            room,
            number,
            connection_id: format!("{}-{number}", self.engine.prefix),
            principal,
            sender,
            closed: false,
            refused: Mutex::new(HashMap::new()),
        };
        session.send_state().await?;
        Ok((session, outbox))
    }

    /// Stops the engine: no new joins; every connection is told to close (1001); on
    /// PostgreSQL the instance's entries are removed in one statement and their removal
    /// published (so other instances announce the leaves at once) before this returns.
    pub async fn shutdown(&self) -> Result<()> {
        let engine = &self.engine;
        engine.stopping.store(true, Ordering::SeqCst);
        let pruner = lock(&engine.pruner).take();
        if let Some(pruner) = pruner {
            pruner.shutdown().await;
        }
        let rooms: Vec<Arc<Room>> = lock(&engine.rooms).values().cloned().collect();
        for room in rooms {
            let state = room.lock();
            for member in state.members.values() {
                member.sender.disconnect(Disconnect::new(
                    close_code::GOING_AWAY,
                    "server shutting down",
                ));
            }
        }
        let result = match &engine.postgres {
            Some(store) => {
                let removed = store.shutdown().await;
                store.flush_change_feed().await;
                removed.map(|entries| {
                    tracing::info!(
                        entries = entries.len(),
                        "presence: instance stopped; its entries are removed"
                    );
                })
            }
            None => Ok(()),
        };
        for task in lock(&engine.tasks).drain(..) {
            task.abort();
        }
        result
    }
}

fn check(options: &PresenceOptions) -> Result<()> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Config(
            "presence: the engine must be started inside a Tokio runtime".into(),
        ));
    }
    if options.queue_capacity == 0 || options.queue_bytes == 0 {
        return Err(Error::Config(
            "presence: queue_capacity and queue_bytes must be at least 1".into(),
        ));
    }
    if options.prune_interval.is_zero() {
        return Err(Error::Config(
            "presence: prune_interval must be above zero".into(),
        ));
    }
    Ok(())
}

impl Engine {
    fn room(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// Entries the pruner removed: leaves for the rooms here that show them.
    fn departed(&self, entries: Vec<AwarenessEntry>) {
        let mut by_room: HashMap<String, Vec<u64>> = HashMap::new();
        for entry in entries.into_iter().filter(|e| !e.is_tombstone()) {
            if let Some(client) = y_client_id(&entry.client_id) {
                by_room.entry(entry.document_id).or_default().push(client);
            }
        }
        for (name, clients) in by_room {
            if let Some(room) = self.room(&name) {
                tracing::debug!(room = %name, count = clients.len(), "presence: announcing departed clients");
                room.lock().remove(clients);
            }
        }
    }

    /// Another instance changed clients of a room here.
    async fn changed(&self, change: crate::postgres::AwarenessChange) -> Result<()> {
        let Some(room) = self.room(&change.document_id) else {
            return Ok(());
        };
        match change.kind {
            ChangeKind::Set | ChangeKind::Leave => {
                let mut updates = Vec::with_capacity(change.client_ids.len());
                let mut gone = Vec::new();
                for (index, id) in change.client_ids.iter().enumerate() {
                    let Some(client_id) = y_client_id(id) else {
                        continue;
                    };
                    match change.state_of(index) {
                        Some(carried) => {
                            if let Some(clock) = y_clock(carried.clock) {
                                updates.push(AwarenessClientUpdate {
                                    client_id,
                                    clock,
                                    state: carried.state.clone(),
                                });
                            }
                        }
                        // Too large for the notification: re-read it.
                        None => match self.store.get(&room.name, id).await? {
                            Some(entry) => updates.extend(as_client(entry)),
                            None => gone.push(client_id),
                        },
                    }
                }
                let hidden = {
                    let mut state = room.lock();
                    let hidden = state.forward(updates);
                    state.forward_gone(gone);
                    hidden
                };
                self.reassert_leaves(&room, hidden).await;
            }
            // Removed elsewhere: a closed instance's, a crashed one's, expired ones.
            _ => {
                let clients: Vec<u64> = change
                    .client_ids
                    .iter()
                    .filter_map(|id| y_client_id(id))
                    .collect();
                room.lock().remove(clients);
            }
        }
        Ok(())
    }

    /// Another instance accepted a participant at a clock this instance's clients ignore
    /// (they saw it leave at a clock at least as high): if a local connection holds it, that
    /// connection is sent the leave; otherwise the leave is written back, so the owner's
    /// instance relays it to the owner, which re-announces itself one clock higher.
    async fn reassert_leaves(&self, room: &Room, hidden: Vec<(u64, u64)>) {
        for (client_id, clock) in hidden {
            let local = {
                let state = room.lock();
                state
                    .claims
                    .get(&client_id)
                    .and_then(|claim| state.members.get(&claim.connection))
                    .map(|member| member.sender.clone())
            };
            if let Some(sender) = local {
                if let Some(message) = awareness_message(&[leave(client_id, clock)]) {
                    sender.send(message);
                }
                continue;
            }
            let id = client_id.to_string();
            let entry = match self.store.get(&room.name, &id).await {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "presence: cannot re-read a participant");
                    continue;
                }
            };
            let tombstone = AwarenessUpdate::leave(
                room.name.clone(),
                id,
                entry.connection_id,
                i64::try_from(clock).unwrap_or(i64::MAX),
            )
            .with_owner(entry.owner);
            tracing::debug!(room = %room.name, client_id, clock, "presence: rejoin after leave, re-asserting the leave");
            if let Err(error) = self.store.set(&tombstone).await {
                tracing::warn!(%error, "presence: cannot re-assert a leave");
            }
        }
    }

    /// Events may have been missed: re-read every room here.
    async fn resync(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        for room in rooms {
            let live = match self.store.get_all(&room.name).await {
                Ok(live) => live,
                Err(error) => {
                    tracing::warn!(%error, room = %room.name, "presence: cannot resync a room");
                    continue;
                }
            };
            let clients = awareness_clients(live);
            let hidden = {
                let mut state = room.lock();
                let live: std::collections::HashSet<u64> =
                    clients.iter().map(|c| c.client_id).collect();
                let missing: Vec<u64> = state
                    .view
                    .present()
                    .into_iter()
                    .filter(|id| !live.contains(id))
                    .collect();
                let hidden = state.forward(clients);
                state.forward_gone(missing);
                hidden
            };
            self.reassert_leaves(&room, hidden).await;
        }
    }
}

/// The change feed's events (other instances' writes), routed to the rooms here.
async fn route_feed(engine: std::sync::Weak<Engine>, mut events: crate::postgres::ChangeStream) {
    while let Some(event) = events.next().await {
        let Some(engine) = engine.upgrade() else {
            break;
        };
        match event {
            FeedEvent::Change(change) => {
                if let Err(error) = engine.changed(change).await {
                    tracing::warn!(%error, "presence: cannot follow a change; the next resync catches up");
                }
            }
            FeedEvent::Resync => {
                tracing::info!("presence: change feed resync, re-reading the rooms");
                engine.resync().await;
            }
        }
    }
}

/// What [`Session::receive`] did with an awareness message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Clients whose update was applied (and relayed).
    pub applied: Vec<u64>,
    /// Clients dropped as echoes of what the connection was sent, or held by another local
    /// connection.
    pub dropped: Vec<u64>,
    /// Clients the store refused, with why: [`SetOutcome::Forbidden`] (another principal's
    /// client id), [`SetOutcome::DocumentFull`], [`SetOutcome::ConnectionFull`]. The client
    /// was told once per reason (y-websocket's permission-denied message).
    pub refused: Vec<(u64, SetOutcome)>,
}

/// One connection in one room. Hand it what arrives ([`receive`](Self::receive)); call
/// [`close`](Self::close) when the connection ends (dropping it releases the connection too,
/// writing its leaves from a spawned task).
#[derive(Debug)]
pub struct Session {
    engine: Arc<Engine>,
    room: Arc<Room>,
    number: u64,
    connection_id: String,
    principal: Option<String>,
    sender: Sender,
    closed: bool,
    /// Refusals the client was told of: (clientID, outcome).
    refused: Mutex<HashMap<u64, SetOutcome>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish()
    }
}

/// What to do with one incoming client, decided from the room's state alone.
enum Route {
    Write,
    Drop,
    /// A state at or below the clock of a leave the clients saw: the client rejoins with an
    /// old clock (the rejoin-after-leave race) and must hear that leave to re-announce itself.
    Remedy(u64),
}

impl Session {
    /// The connection id its entries are written under.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The room (document id).
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// The principal it writes as.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Queues a message of the server's own (a document sync message, say) for this
    /// connection, in order with the engine's.
    pub fn send(&self, message: impl Into<Bytes>) {
        self.sender.send(message.into());
    }

    /// Ends the connection: its outbox yields [`Outgoing::Close`] with `reason` next (the
    /// first reason given wins).
    pub fn disconnect(&self, reason: Disconnect) {
        self.sender.disconnect(reason);
    }

    /// Queues `message` for every other local connection of the room.
    pub fn broadcast(&self, message: impl Into<Bytes>) {
        let message = message.into();
        self.room.lock().send_all(&message, Some(self.number));
    }

    /// Handles a y-websocket awareness (1) or query-awareness (3) message. `Err`: close the
    /// connection with that code and reason (malformed input, another message type, or the
    /// store failing).
    pub async fn receive(&self, message: &[u8]) -> std::result::Result<Received, Disconnect> {
        match decode_message(message) {
            Ok(AwarenessMessage::Update(update)) => self.awareness(&update).await,
            Ok(AwarenessMessage::Query) => {
                self.send_state().await.map_err(Disconnect::from_store)?;
                Ok(Received::default())
            }
            Err(crate::y_protocols::CodecError::UnsupportedMessageType(kind)) => {
                Err(Disconnect::new(
                    close_code::UNSUPPORTED_DATA,
                    format!("message type {kind} is not an awareness message"),
                ))
            }
            Err(e) => Err(Disconnect::new(
                close_code::INVALID_DATA,
                format!("malformed message: {e}"),
            )),
        }
    }

    /// Everyone's awareness state in the room, to this connection. What it holds that the
    /// room's other local connections were not told yet (a change whose feed event has not
    /// arrived) goes to them too: the view mirrors what *every* local client was told.
    pub async fn send_state(&self) -> Result<()> {
        let clients = awareness_clients(self.engine.store.get_all(&self.room.name).await?);
        let update = encode_awareness_update(&clients)?;
        let hidden = self.room.lock().forward(clients);
        self.sender
            .send(encode_message(&AwarenessMessage::Update(update)).into());
        self.engine.reassert_leaves(&self.room, hidden).await;
        Ok(())
    }

    fn route(&self, state: &RoomState, client: &AwarenessClientUpdate) -> Route {
        let seen = state.view.seen(client.client_id);
        // Not newer than what the clients were told: an echo (every y-websocket client sends
        // back each change it accepts), or a timed-out peer's leave at its last clock.
        let echo = seen.is_some_and(|s| client.clock <= s.clock);
        if let Some(seen) = seen.filter(|s| echo && !s.present && client.state.is_some()) {
            return Route::Remedy(seen.clock);
        }
        match state.claims.get(&client.client_id) {
            Some(claim) if claim.connection == self.number => Route::Write,
            Some(claim) => {
                // Held by another local connection: a newer update from the same
                // (authenticated) principal is that client reconnecting before its old
                // connection was noticed dead; anything else is dropped.
                let same_principal = self.principal.is_some()
                    && state
                        .members
                        .get(&claim.connection)
                        .is_none_or(|m| m.principal == self.principal);
                if !echo && same_principal {
                    Route::Write
                } else {
                    Route::Drop
                }
            }
            None if echo => Route::Drop,
            // A leave for a client never shown here: nothing to remove.
            None if seen.is_none() && client.state.is_none() => Route::Drop,
            // Held by no local connection and newer than what the room was told: written. A
            // client shown present is live on another instance, or on a dead one it is
            // failing over from. Open mode (no principal) cannot tell that client from a
            // spoof, and does as y-protocols does, whose servers relay any newer clock from
            // any connection: the store's clock rule decides, so a client that reconnects to
            // another instance is relayed at once, not after its old instance's lease lapses.
            // With a principal, the store's ownership decides as well.
            None => Route::Write,
        }
    }

    async fn awareness(&self, payload: &[u8]) -> std::result::Result<Received, Disconnect> {
        let clients = decode_awareness_update(payload, &self.engine.options.decode_limits)
            .map_err(|e| {
                Disconnect::new(
                    close_code::INVALID_DATA,
                    format!("malformed awareness update: {e}"),
                )
            })?;
        let mut received = Received::default();
        let mut writes = Vec::with_capacity(clients.len());
        let mut remedies = Vec::new();
        {
            let state = self.room.lock();
            for client in clients {
                match self.route(&state, &client) {
                    Route::Write => writes.push(client),
                    Route::Remedy(leave_clock) => {
                        received.dropped.push(client.client_id);
                        remedies.push(leave(client.client_id, leave_clock));
                    }
                    Route::Drop => {
                        let reason = if state.claims.contains_key(&client.client_id) {
                            "foreign"
                        } else {
                            "echo"
                        };
                        ::metrics::counter!(crate::metrics::PRESENCE_DROPPED, "reason" => reason)
                            .increment(1);
                        received.dropped.push(client.client_id);
                    }
                }
            }
        }
        if writes.is_empty() {
            self.remedy(&remedies);
            return Ok(received);
        }
        let outcomes = apply_clients(
            &*self.engine.store,
            &self.room.name,
            &self.connection_id,
            self.principal.as_deref(),
            &writes,
        )
        .await
        .map_err(Disconnect::from_store)?;
        let mut unknown_stale = Vec::new();
        let mut refusals = Vec::new();
        {
            let mut state = self.room.lock();
            let mut applied = Vec::new();
            for (client, outcome) in writes.into_iter().zip(outcomes) {
                match outcome {
                    SetOutcome::Applied => {
                        state.claims.insert(
                            client.client_id,
                            Claim {
                                connection: self.number,
                                clock: client.clock,
                            },
                        );
                        received.applied.push(client.client_id);
                        applied.push(client);
                    }
                    SetOutcome::Stale => {
                        if client.state.is_none() {
                            continue;
                        }
                        // The rejoin-after-leave race: the peers saw this client leave at a
                        // clock at least as high; the client must hear that leave.
                        match state.view.seen(client.client_id) {
                            Some(seen) if !seen.present && seen.clock >= client.clock => {
                                remedies.push(leave(client.client_id, seen.clock));
                            }
                            Some(_) => {}
                            None => unknown_stale.push(client),
                        }
                    }
                    refused => {
                        received.refused.push((client.client_id, refused));
                        refusals.push((client.client_id, refused));
                    }
                }
            }
            for (client_id, leave_clock) in state.forward(applied) {
                remedies.push(leave(client_id, leave_clock));
            }
        }
        // A stale state the room never showed: the store holds something newer; a tombstone
        // at or above its clock means the client must re-announce itself.
        for client in unknown_stale {
            let stored = self
                .engine
                .store
                .get(&self.room.name, &client.client_id.to_string())
                .await
                .map_err(Disconnect::from_store)?;
            if let Some(tombstone) = stored.filter(AwarenessEntry::is_tombstone) {
                if let Some(clock) = y_clock(tombstone.clock).filter(|c| *c >= client.clock) {
                    remedies.push(leave(client.client_id, clock));
                }
            }
        }
        self.remedy(&remedies);
        self.report(refusals);
        Ok(received)
    }

    /// Sends this connection the leaves its clients must hear to re-announce themselves.
    fn remedy(&self, leaves: &[AwarenessClientUpdate]) {
        if let Some(message) = awareness_message(leaves) {
            tracing::debug!(room = %self.room.name, count = leaves.len(), "presence: rejoin after leave, asking clients to re-announce");
            self.sender.send(message);
        }
    }

    /// Tells the client, once per client id and reason, why its update was refused.
    fn report(&self, refusals: Vec<(u64, SetOutcome)>) {
        if refusals.is_empty() {
            return;
        }
        let mut told = lock(&self.refused);
        for (client_id, outcome) in refusals {
            if told.insert(client_id, outcome) == Some(outcome) {
                continue;
            }
            let why = match outcome {
                SetOutcome::Forbidden => "another user holds this client id",
                SetOutcome::DocumentFull => "the document has the most participants allowed",
                SetOutcome::ConnectionFull => "this connection has the most participants allowed",
                _ => "refused",
            };
            tracing::info!(room = %self.room.name, connection = %self.connection_id, client_id, outcome = outcome.as_str(), "presence: update refused");
            let reason = format!(
                "awareness of client {client_id} refused ({}): {why}",
                outcome.as_str()
            );
            self.sender
                .send(Bytes::from(encode_permission_denied(&reason)));
        }
    }

    /// The connection ended: it leaves the room, and the clients it held are announced gone
    /// (one leave each, one clock above the last it wrote, written as its principal: here
    /// directly, on other instances through the change feed).
    pub async fn close(mut self) {
        self.closed = true;
        let leaves = release(&self.engine, &self.room, self.number);
        write_leaves(
            &self.engine,
            &self.room,
            &self.connection_id,
            self.principal.as_deref(),
            leaves,
        )
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let leaves = release(&self.engine, &self.room, self.number);
        if leaves.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (engine, room) = (self.engine.clone(), self.room.clone());
            let (connection_id, principal) = (self.connection_id.clone(), self.principal.clone());
            runtime.spawn(async move {
                write_leaves(&engine, &room, &connection_id, principal.as_deref(), leaves).await;
            });
        }
    }
}

/// Removes a connection from its room (the room closes with its last one); returns the
/// clients it held, with the clock each leave is written at.
fn release(engine: &Engine, room: &Arc<Room>, number: u64) -> Vec<(u64, u64)> {
    let mut rooms = lock(&engine.rooms);
    let mut state = room.lock();
    state.members.remove(&number);
    let mut leaves = Vec::new();
    state.claims.retain(|client, claim| {
        if claim.connection == number {
            leaves.push((*client, claim.clock.saturating_add(1)));
            false
        } else {
            true
        }
    });
    if state.members.is_empty() && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
        rooms.remove(&room.name);
    }
    ::metrics::gauge!(crate::metrics::PRESENCE_ROOMS).set(rooms.len() as f64);
    ::metrics::gauge!(crate::metrics::PRESENCE_CONNECTIONS).decrement(1.0);
    leaves
}

async fn write_leaves(
    engine: &Engine,
    room: &Room,
    connection_id: &str,
    principal: Option<&str>,
    leaves: Vec<(u64, u64)>,
) {
    if leaves.is_empty() || engine.stopping.load(Ordering::SeqCst) {
        // Stopping: the instance's shutdown removes every entry in one statement.
        return;
    }
    let clients: Vec<AwarenessClientUpdate> = leaves
        .iter()
        .map(|&(client, clock)| leave(client, clock))
        .collect();
    let outcomes = apply_clients(
        &*engine.store,
        &room.name,
        connection_id,
        principal,
        &clients,
    )
    .await;
    match outcomes {
        Ok(outcomes) => {
            let applied: Vec<AwarenessClientUpdate> = clients
                .into_iter()
                .zip(outcomes)
                .filter(|(_, outcome)| outcome.is_applied())
                .map(|(client, _)| client)
                .collect();
            room.lock().forward(applied);
        }
        Err(error) => {
            tracing::warn!(%error, connection = %connection_id, "presence: cannot write the leaves of a closed connection; they expire instead");
        }
    }
}

#[cfg(test)]
mod tests;
