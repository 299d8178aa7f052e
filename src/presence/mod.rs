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
//! - **ownership**: a connection writes as its principal ([`AwarenessUpdate::owner`](crate::AwarenessUpdate::owner)), so
//!   another principal's client id is refused by the store; a client id is held by the local
//!   connection that wrote it, and handed over when the same principal writes it on a new
//!   connection (a reconnect), so failover needs no waiting;
//! - **refusals with a reason**: a client refused by ownership or a participant limit
//!   ([`SetOutcome::Forbidden`](crate::SetOutcome::Forbidden),
//!   [`DocumentFull`](crate::SetOutcome::DocumentFull),
//!   [`ConnectionFull`](crate::SetOutcome::ConnectionFull))
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

mod batch;
mod engine;
mod feed;
mod identity;
mod leaving;
mod options;
mod outbox;
mod room;
mod route;
mod session;
mod tick;
mod unsaved;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::memory::MemoryAwarenessStore;
use crate::postgres::{ChangeFilter, PostgresAwarenessStore};
use crate::pruner::Pruner;
use crate::store::AwarenessStore;
use engine::{lock, Engine};
use feed::route_feed;
pub use identity::{Identity, USER_FIELD};
pub use options::{
    close_code, Disconnect, PresenceOptions, DEFAULT_AWARENESS_TICK, DEFAULT_AWARENESS_TICK_FROM,
    DEFAULT_PERSIST_INTERVAL, DEFAULT_QUEUE_BYTES,
};
pub use outbox::{Outbox, Outgoing};
use room::{Member, Room};
pub use session::{Received, Session};

/// A presence engine: share it (it is a cheap clone) between the server's connections.
#[derive(Clone, Debug)]
pub struct Presence {
    engine: Arc<Engine>,
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
        let every = presence.engine.options.persist_interval;
        if !every.is_zero() {
            let saver = tokio::spawn(unsaved::save_loop(Arc::downgrade(&presence.engine), every));
            lock(&presence.engine.tasks).push(saver);
        }
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

    /// The PostgreSQL store under the engine, with its change feed (`None` on the memory
    /// store): for [`subscribe_channel`](PostgresAwarenessStore::subscribe_channel) on the
    /// engine's listening session, say.
    pub fn postgres(&self) -> Option<&PostgresAwarenessStore> {
        self.engine.postgres.as_ref()
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
        self.join_as(room, Identity::from_principal(principal))
            .await
    }

    /// [`join`](Self::join) with the whole [`Identity`]: with [`Identity::with_user`], every
    /// state the connection sends is stored and relayed with that `user` field, whatever the
    /// client put there.
    pub async fn join_as(&self, room: &str, identity: Identity) -> Result<(Session, Outbox)> {
        let Identity { principal, user } = identity;
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
                .or_insert_with(|| Room::new(room, options.tick()))
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
            identity: Identity { principal, user },
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

#[cfg(test)]
mod tests;
