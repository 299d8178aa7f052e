//! [`PostgresAwarenessStore`], the facade: its constructors and every inherent method,
//! delegating to the parts below it (`storage.rs`, the publishing layer, `feed/`, `instance.rs`,
//! `inspect.rs`, `pool.rs`). Nothing in the crate imports this file but `mod.rs`.

use std::fmt;
use std::sync::Arc;

use diesel_migrations::EmbeddedMigrations;

use super::feed::publishing::Publishing;
use super::feed::{ChangeFeedOptions, ChangeFilter, ChangeStream, ChannelStream, Feed};
use super::inspect::{self, DocumentActivity, InspectedEntry, StoreStats};
use super::instance::{InstanceOptions, Lease};
use super::options::PostgresOptions;
use super::pool::{interval, with_conn, ConnectErrors, Connections, PgPool};
use super::storage::PgStorage;
use super::unnamed::UnnamedPool;
use super::who_events::{self, PresenceStream};
use super::write::coalesce::Coalescer;
use crate::entry::{AwarenessEntry, AwarenessUpdate, SetOutcome};
use crate::error::{Error, Result};
use crate::postgres::migrations::{run_migrations, MigrationReport};
use crate::postgres::schema_check::validate_schema;
use crate::schema_report::SchemaReport;
use crate::storage::Storage;
use crate::store::StoreOptions;
use crate::who::PresenceFilter;

/// An [`AwarenessStore`](crate::AwarenessStore) on PostgreSQL: entries survive restarts, can be
/// inspected with SQL and are shared by every server using the same database.
///
/// Each operation is one statement (a `set` that is not a heartbeat: a conditional `UPDATE`
/// that changed nothing, then one conditional upsert), so ordering holds under
/// any concurrency without an explicit transaction. Expiry uses the database's clock.
#[derive(Clone)]
pub struct PostgresAwarenessStore {
    /// The storage, wrapped by the change-feed publisher (inactive unless configured).
    pub(super) layers: Publishing<PgStorage>,
}

crate::storage::awareness_store!(PostgresAwarenessStore, "postgres", |store| &store.layers);

impl fmt::Debug for PostgresAwarenessStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's manager holds the connection URL (and its password): never print it.
        let storage = &self.layers.inner;
        let pool_state = storage.connections.pool().state();
        f.debug_struct("PostgresAwarenessStore")
            .field("options", &storage.options)
            .field("connections", &pool_state.connections)
            .field("idle_connections", &pool_state.idle_connections)
            .finish()
    }
}

impl PostgresAwarenessStore {
    /// A store on an existing pool (the host application's own, for example). Does not check
    /// the schema; call [`ensure_schema`](Self::ensure_schema) for that.
    ///
    /// Build the pool with [`build_pool`](crate::build_pool) or give it the manager from
    /// [`connection_manager`](crate::connection_manager): diesel-async's default manager
    /// connects without TLS and without the session settings.
    pub fn from_pool(pool: PgPool, options: StoreOptions) -> Self {
        let pool_size = pool.config().max_size;
        Self::with_storage(PgStorage {
            connections: Connections::new(pool, ConnectErrors::default(), None),
            options,
            timeout: interval(options.timeout),
            coalescer: PostgresOptions::default()
                .coalesce_writes
                .then(|| Arc::new(Coalescer::new(pool_size))),
            instance: Arc::default(),
            known: Arc::default(),
            expiry: Arc::default(),
        })
    }

    /// Another handle on the same connections (pool, pooler mode) with other options: a
    /// shorter timeout, other limits. Without this store's instance and change feed.
    pub fn view_with_options(&self, options: StoreOptions) -> Self {
        let storage = &self.layers.inner;
        Self::with_storage(PgStorage {
            connections: storage.connections.clone(),
            options,
            timeout: interval(options.timeout),
            coalescer: storage
                .coalescer
                .as_ref()
                .map(|_| Arc::new(Coalescer::new(self.pool().config().max_size))),
            instance: Arc::default(),
            known: Arc::default(),
            expiry: Arc::default(),
        })
    }

    /// This store with write coalescing on or off (see
    /// [`PostgresOptions::coalesce_writes`]); for stores made with
    /// [`from_pool`](Self::from_pool), which takes no [`PostgresOptions`].
    pub fn with_coalesced_writes(mut self, coalesce: bool) -> Self {
        let pool_size = self.pool().config().max_size;
        self.layers.inner.coalescer = coalesce.then(|| Arc::new(Coalescer::new(pool_size)));
        self
    }

    fn with_storage(storage: PgStorage) -> Self {
        Self {
            layers: Publishing::new(storage),
        }
    }

    /// Builds a pool for `database_url` and a store on it. With
    /// [`validate_on_start`](PostgresOptions::validate_on_start), fails fast when the database
    /// cannot be reached or its schema differs from the expected one.
    pub async fn connect(database_url: &str, options: PostgresOptions) -> Result<Self> {
        let (pool, connect_errors) =
            super::connect::build_pool_reporting(database_url, &options).await?;
        let unnamed = if options.transaction_pooler {
            Some((
                super::connect::build_unnamed_pool(database_url, &options, &connect_errors).await?,
                options.synchronous_commit,
            ))
        } else {
            None
        };
        let store = Self::with_storage(PgStorage {
            connections: Connections::new(pool, connect_errors, unnamed),
            options: options.store,
            timeout: interval(options.store.timeout),
            coalescer: options
                .coalesce_writes
                .then(|| Arc::new(Coalescer::new(options.pool_size))),
            instance: Arc::default(),
            known: Arc::default(),
            expiry: Arc::default(),
        });
        if options.validate_on_start {
            store.ensure_schema().await?;
        }
        Ok(store)
    }

    /// The pool this store uses directly (behind a transaction-mode pooler: a diesel-async
    /// pool on the same URL, opened lazily, whose statements are prepared under names — run
    /// them inside a transaction there; see [`statement_pool`](Self::statement_pool)).
    pub fn pool(&self) -> &PgPool {
        self.layers.inner.connections.pool()
    }

    /// Behind a transaction-mode pooler
    /// ([`PostgresOptions::transaction_pooler`]): the pool of connections the store runs its
    /// statements on, each statement unnamed, in one round trip, its own transaction. An
    /// application's own one-statement queries (diesel's DSL or `sql_query` with
    /// `diesel_async::RunQueryDsl`) run there at the pooler's speed. `None` directly.
    pub fn statement_pool(&self) -> Option<&UnnamedPool> {
        self.layers.inner.connections.unnamed()
    }

    /// Applies this crate's pending migrations, then `extra` (the host application's), under
    /// a PostgreSQL advisory lock; see [`run_migrations`].
    pub async fn migrate(
        &self,
        extra: &'static [&'static EmbeddedMigrations],
    ) -> Result<MigrationReport> {
        if self.layers.inner.connections.behind_pooler() {
            return Err(Error::Config(
                "migrations take a session-level advisory lock, which a transaction-mode pooler \
                 cannot hold: run them on a direct (or session-mode) URL, with \
                 `synckit-awareness migrate`, `diesel migration run` or `run_migrations_at`"
                    .into(),
            ));
        }
        let conn = self.layers.inner.connections.dedicated().await?;
        run_migrations(conn, extra).await
    }

    /// Compares the database with the schema this crate expects.
    pub async fn validate_schema(&self) -> Result<SchemaReport> {
        with_conn!(self.layers.inner.connections, |conn| validate_schema(conn)
            .await)
    }

    /// Like [`validate_schema`](Self::validate_schema), but any difference is an
    /// [`Error::SchemaMismatch`] whose message says to run the migrations.
    pub async fn ensure_schema(&self) -> Result<()> {
        let report = self.validate_schema().await?;
        if report.is_ok() {
            Ok(())
        } else {
            Err(Error::SchemaMismatch(report))
        }
    }

    /// Runs this store (and every clone of it) as the instance `options` names: registers its
    /// lease in `awareness_instances`, renews it in the background every
    /// [`renew_every`](InstanceOptions::renew_every), and stamps every later write with the
    /// instance id. When the instance stops renewing (its process crashed or lost the
    /// database) for longer than the lease, the next pruning round of any store on the
    /// database ([`Pruner`](crate::Pruner), [`AwarenessStore::take_departed`](crate::AwarenessStore::take_departed))
    /// removes all of its entries and reports them, so their leaves go out in seconds.
    ///
    /// While the instance's own clock says its lease may have lapsed (renewals failing for
    /// longer than the lease), writes fail with [`Error::LeaseLost`] and write nothing; the
    /// next successful renewal registers the instance again (reporting the take-over, see
    /// [`lease_takeovers`](Self::lease_takeovers)) and writes resume. Stop with
    /// [`shutdown`](Self::shutdown). Fails with [`Error::Config`] when the store already runs
    /// as an instance or the options are invalid.
    pub async fn start_instance(&self, options: InstanceOptions) -> Result<()> {
        let storage = &self.layers.inner;
        if storage.instance.get().is_some() {
            return Err(Error::Config(
                "this store already runs as an instance".to_owned(),
            ));
        }
        let lease = Lease::start(storage.connections.clone(), options).await?;
        storage
            .instance
            .set(lease)
            .map_err(|_| Error::Config("this store already runs as an instance".to_owned()))
    }

    /// The instance id this store writes under, once [`start_instance`](Self::start_instance)
    /// ran.
    pub fn instance_id(&self) -> Option<&str> {
        self.layers
            .inner
            .instance
            .get()
            .map(|lease| lease.id.as_str())
    }

    /// How many times this instance found its lease taken over by another instance (after a
    /// pause or an outage longer than the lease) and registered again. Each time, its entries
    /// had been removed and their leaves announced; its clients' next updates recreate them.
    pub fn lease_takeovers(&self) -> u64 {
        self.layers
            .inner
            .instance
            .get()
            .map_or(0, |lease| lease.takeovers())
    }

    /// Whether this store may write now: true without an instance; with one, while its lease is
    /// known to be valid (see [`start_instance`](Self::start_instance)).
    pub fn holds_lease(&self) -> bool {
        self.layers
            .inner
            .instance
            .get()
            .is_none_or(|lease| lease.is_valid())
    }

    /// Subscribes to `channel`, one of the change feed's
    /// [`also_listen`](ChangeFeedOptions::also_listen) channels: its notifications' payloads,
    /// received on the feed's listening session (the first subscriber opens it), and a
    /// [`ChannelEvent::Resync`](super::feed::ChannelEvent::Resync) after each reconnection.
    /// For an application's own notifications: PostgreSQL wakes every listening session of the
    /// database for every `NOTIFY`, so sharing this one costs the database less than a session
    /// of its own. `Error::Config` for a channel not in `also_listen`.
    pub async fn subscribe_channel(&self, channel: &str) -> Result<ChannelStream> {
        self.layers
            .feed
            .subscribe_channel(&self.layers.inner.connections, channel)
            .await
    }

    /// Presence's moves, relayed at once and saved later (`presence/unsaved.rs`): publishes
    /// `update` on the change feed without writing it, and says whether it did. It does not
    /// for an update a write would refuse as invalid, nor for a state too large for a
    /// notification (subscribers would re-read the table, which does not have it yet).
    pub(crate) fn publish_unsaved(&self, update: &AwarenessUpdate) -> bool {
        let feed = &self.layers.feed;
        let max_state_bytes = Storage::options(&self.layers).max_state_bytes;
        let publish = feed.is_publishing()
            && crate::validate::check_update(update, max_state_bytes).is_ok()
            && super::feed::carries_alone(feed.origin(), update);
        if publish {
            feed.publish_update(update);
        }
        publish
    }

    /// Writes updates [`publish_unsaved`](Self::publish_unsaved) already checked and
    /// published, without publishing them again: `set_many` below the change feed's layer.
    pub(crate) async fn save_unsaved(
        &self,
        updates: &[AwarenessUpdate],
    ) -> Result<Vec<SetOutcome>> {
        let span = crate::storage::span!("awareness.set_many", "postgres", updates = updates.len());
        crate::trace::traced(span, Storage::set_many(&self.layers.inner, updates)).await
    }

    /// A graceful stop of this store's instance: stops renewing, deletes its lease and every
    /// entry it wrote, in one statement, and returns the removed entries that were not expired
    /// (by document and client) so the server can broadcast their leaves. Later writes through
    /// this store fail with [`Error::LeaseLost`]. Without an instance, removes nothing.
    pub async fn shutdown(&self) -> Result<Vec<AwarenessEntry>> {
        let span = crate::storage::span!("awareness.shutdown", "postgres");
        crate::trace::traced(span, Storage::shutdown(&self.layers)).await
    }

    /// This store with the change feed configured by `options`; with
    /// [`publish`](ChangeFeedOptions::publish) it starts the publisher task, so it must be
    /// called inside a Tokio runtime. Clones made afterwards share the feed.
    pub fn with_change_feed(mut self, options: ChangeFeedOptions) -> Result<Self> {
        self.layers.feed = Feed::start(&self.layers.inner.connections, options)?;
        Ok(self)
    }

    /// This store's id in the change feed ([`ChangeFeedOptions::origin`]).
    pub fn change_feed_origin(&self) -> &str {
        self.layers.feed.origin()
    }

    /// Waits until every change this store applied so far was published (its `NOTIFY`
    /// committed, or given up after a retry): what a server calls before it exits, so that
    /// its last leaves reach the other instances. Returns at once without a publishing feed.
    pub async fn flush_change_feed(&self) {
        self.layers.feed.flush().await;
    }

    /// Subscribes to the change feed: changes published by every store on this database and
    /// channel (this one included), filtered by `filter`.
    ///
    /// The first subscription opens the listener: a dedicated connection (outside the pool)
    /// that runs `LISTEN` before this returns, so every change published afterwards arrives.
    /// When that connection is lost, the listener reconnects with backoff and every stream
    /// yields [`FeedEvent::Resync`](super::FeedEvent::Resync): changes published while it was
    /// away are lost, so re-read the documents you follow.
    pub async fn subscribe(&self, filter: ChangeFilter) -> Result<ChangeStream> {
        self.layers
            .feed
            .subscribe(&self.layers.inner.connections, filter)
            .await
    }

    /// Presence events of one room or every room, from every instance on this database
    /// ([`PresenceFilter`]): [`PresenceEvent::Joined`](crate::PresenceEvent::Joined) and
    /// [`Left`](crate::PresenceEvent::Left) with the principal, each once per subscription
    /// whatever removed the participant (a leave, a closed connection, expiry, a crashed
    /// instance's lapsed lease), and with [`PresenceFilter::with_updates`] every state change.
    /// Built on the change feed ([`subscribe`](Self::subscribe)): only the changes of stores
    /// that publish (every [`Presence`](crate::presence::Presence) engine does) are seen, a
    /// few milliseconds after they commit, and a subscriber that falls behind or whose
    /// listener reconnects gets [`PresenceEvent::Resync`](crate::PresenceEvent::Resync)
    /// followed by the joins and leaves that bring it up to date.
    pub async fn presence_events(&self, filter: PresenceFilter) -> Result<PresenceStream> {
        let changes = self.subscribe(who_events::feed_filter(&filter)?).await?;
        let storage = &self.layers.inner;
        let source = who_events::Source {
            store: Arc::new(self.clone()),
            connections: storage.connections.clone(),
            timeout: storage.timeout,
        };
        who_events::subscribe(source, changes, filter).await
    }

    /// The entries of `document_id`, ordered by `client_id`, each with whether it is expired
    /// and its age. Without `include_hidden`, only live entries (what
    /// [`get_all`](crate::AwarenessStore::get_all) returns); with it, tombstones and expired
    /// entries too.
    pub async fn inspect_document(
        &self,
        document: &str,
        include_hidden: bool,
    ) -> Result<Vec<InspectedEntry>> {
        let storage = &self.layers.inner;
        inspect::document(
            &storage.connections,
            storage.timeout,
            document,
            include_hidden,
        )
        .await
    }

    /// Entry counts (total, live, tombstones, expired, documents), table and index size, and
    /// the table's `pg_stat_user_tables` figures.
    ///
    /// Counting scans the whole table (there is deliberately no index on `last_seen`): meant
    /// for an operator's occasional look, not for a request path. PostgreSQL publishes
    /// `pg_stat_user_tables` counters with a delay of up to a second or so.
    pub async fn inspect_stats(&self) -> Result<StoreStats> {
        let storage = &self.layers.inner;
        inspect::stats(&storage.connections, storage.timeout).await
    }

    /// The `limit` documents with the most live entries (ties: more stored rows, then by id).
    pub async fn inspect_busiest_documents(&self, limit: u32) -> Result<Vec<DocumentActivity>> {
        let storage = &self.layers.inner;
        inspect::busiest_documents(&storage.connections, storage.timeout, limit).await
    }
}
