//! [`PostgresAwarenessStore`]: the contract on one table, one statement per operation
//! (the statements are in `sql/`). [`PgStorage`] does the storage work; the publishing layer
//! (`publishing.rs`) and the validation and tracing every store shares (`storage.rs`) wrap it.

use std::fmt;

use async_trait::async_trait;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::PoolError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;

use std::sync::{Arc, OnceLock};

use super::coalesce::{Coalescer, Turn};
use super::connect::ConnectErrors;
use super::instance::{InstanceOptions, Lease};
use super::options::PostgresOptions;
use super::publishing::Publishing;
use super::sql;
use super::sql::write::WriteContext;
use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, Departed, SetOutcome};
use crate::error::{Error, Result};
use crate::postgres::migrations::{run_migrations, MigrationReport};
use crate::postgres::schema_check::validate_schema;
use crate::postgres::secret::redact;
use crate::schema_report::SchemaReport;
use crate::storage::Storage;
use crate::store::StoreOptions;

/// A bb8 pool of diesel-async PostgreSQL connections, as diesel-async builds it.
pub type PgPool = Pool<AsyncPgConnection>;

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

/// The storage work on the `awareness_entries` table: one statement per operation.
#[derive(Clone)]
pub(crate) struct PgStorage {
    pool: PgPool,
    options: StoreOptions,
    timeout: PgInterval,
    connect_errors: ConnectErrors,
    /// Queue of `set`s coalesced into one statement when connections are busy; `None`: off.
    coalescer: Option<Arc<Coalescer>>,
    /// The instance this store runs as, once started; shared by every clone.
    instance: Arc<OnceLock<Arc<Lease>>>,
}

impl fmt::Debug for PostgresAwarenessStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's manager holds the connection URL (and its password): never print it.
        let storage = &self.layers.inner;
        let pool_state = storage.pool.state();
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
            pool,
            options,
            timeout: interval(options.timeout),
            connect_errors: ConnectErrors::default(),
            coalescer: PostgresOptions::default()
                .coalesce_writes
                .then(|| Arc::new(Coalescer::new(pool_size))),
            instance: Arc::default(),
        })
    }

    /// This store with write coalescing on or off (see
    /// [`PostgresOptions::coalesce_writes`]); for stores made with
    /// [`from_pool`](Self::from_pool), which takes no [`PostgresOptions`].
    pub fn with_coalesced_writes(mut self, coalesce: bool) -> Self {
        let pool_size = self.layers.inner.pool.config().max_size;
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
        let store = Self::with_storage(PgStorage {
            pool,
            options: options.store,
            timeout: interval(options.store.timeout),
            connect_errors,
            coalescer: options
                .coalesce_writes
                .then(|| Arc::new(Coalescer::new(options.pool_size))),
            instance: Arc::default(),
        });
        if options.validate_on_start {
            store.ensure_schema().await?;
        }
        Ok(store)
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.layers.inner.pool
    }

    /// Applies this crate's pending migrations, then `extra` (the host application's), under
    /// a PostgreSQL advisory lock; see [`run_migrations`].
    pub async fn migrate(
        &self,
        extra: &'static [&'static EmbeddedMigrations],
    ) -> Result<MigrationReport> {
        let conn = self
            .pool()
            .dedicated_connection()
            .await
            .map_err(pool_error_to_error)?;
        run_migrations(conn, extra).await
    }

    /// Compares the database with the schema this crate expects.
    pub async fn validate_schema(&self) -> Result<SchemaReport> {
        let mut conn = self.conn().await?;
        validate_schema(&mut conn).await
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
        let lease = Lease::start(storage.pool.clone(), options).await?;
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

    /// A graceful stop of this store's instance: stops renewing, deletes its lease and every
    /// entry it wrote, in one statement, and returns the removed entries that were not expired
    /// (by document and client) so the server can broadcast their leaves. Later writes through
    /// this store fail with [`Error::LeaseLost`]. Without an instance, removes nothing.
    pub async fn shutdown(&self) -> Result<Vec<AwarenessEntry>> {
        let Some(lease) = self.layers.inner.instance.get() else {
            return Ok(Vec::new());
        };
        lease.stop();
        let mut conn = self.conn().await?;
        let removed: Vec<Departing> = diesel::sql_query(sql::lease::SHUTDOWN)
            .bind::<diesel::sql_types::Text, _>(&lease.id)
            .bind::<diesel::sql_types::Interval, _>(self.timeout())
            .load(&mut conn)
            .await?;
        let fresh: Vec<AwarenessEntry> = removed
            .into_iter()
            .filter(|d| !d.expired)
            .map(|d| d.entry)
            .collect();
        self.layers.publish_removed(&fresh);
        Ok(fresh)
    }

    /// A pooled connection, or why there is none.
    pub(super) async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        self.layers.inner.conn().await
    }

    /// The expiry timeout as an SQL interval.
    pub(super) fn timeout(&self) -> PgInterval {
        self.layers.inner.timeout
    }
}

/// An entry removed by a pruning round or a shutdown, with whether it was expired.
#[derive(diesel::QueryableByName)]
struct Departing {
    #[diesel(embed)]
    entry: AwarenessEntry,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    expired: bool,
}

impl PgStorage {
    async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        let started = std::time::Instant::now();
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| self.run_error(e, started));
        crate::metrics::pool_checkout(&self.pool, started);
        conn
    }

    /// What a write needs besides its updates, or why this store may not write now.
    fn write_context(&self) -> Result<WriteContext<'_>> {
        let instance_id = match self.instance.get() {
            Some(lease) => Some(lease.check()?),
            None => None,
        };
        Ok(WriteContext::new(self.timeout, instance_id, &self.options))
    }

    fn run_error(&self, error: RunError, started: std::time::Instant) -> Error {
        match error {
            RunError::User(e) => pool_error_to_error(e),
            RunError::TimedOut => self.timed_out(started),
        }
    }

    /// `set` alone: the one statement on a connection of its own.
    async fn set_alone(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let context = self.write_context()?;
        let mut conn = self.conn().await?;
        set_on(&mut conn, update, context).await
    }

    /// `set_many` on a connection of its own.
    pub(super) async fn set_many_pooled(
        &self,
        conn: &mut AsyncPgConnection,
        updates: &[AwarenessUpdate],
    ) -> Result<Vec<SetOutcome>> {
        let context = self.write_context()?;
        set_many_on(conn, updates, context).await
    }

    /// `set` through the coalescer (see `coalesce.rs`).
    async fn set_coalesced(
        &self,
        coalescer: &Coalescer,
        update: &AwarenessUpdate,
    ) -> Result<SetOutcome> {
        // A free slot and nobody waiting: nothing to batch with, go at once.
        if let Some(_slot) = coalescer.try_alone() {
            return self.set_alone(update).await;
        }
        let ticket = coalescer.enqueue(update);
        // As long as a caller would wait for a pooled connection, no longer.
        let waited = self.pool.config().connection_timeout;
        let slot = match tokio::time::timeout(waited, coalescer.slot()).await {
            Ok(slot) => slot,
            Err(_) if coalescer.withdraw(&ticket) => return Err(Error::PoolTimeout(waited)),
            // A batch already carries the update.
            Err(_) => return ticket.outcome().await,
        };
        match coalescer.take(ticket) {
            Turn::Wait(ticket) => {
                drop(slot);
                ticket.outcome().await
            }
            Turn::Alone(update) => {
                let _slot = slot;
                self.set_alone(&update).await
            }
            Turn::Batch(batch, ticket) => {
                let storage = self.clone();
                let runner = self.clone();
                let conn = async move {
                    let started = std::time::Instant::now();
                    storage
                        .pool
                        .get_owned()
                        .await
                        .map_err(|e| storage.run_error(e, started))
                };
                tokio::spawn(batch.run(conn, runner, slot));
                ticket.outcome().await
            }
        }
    }

    /// Why waiting for a pooled connection ended without one: the pool was busy, or it could
    /// not open connections (then never blame the pool size).
    fn timed_out(&self, started: std::time::Instant) -> Error {
        let waited = self.pool.config().connection_timeout;
        if let Some(reason) = self.connect_errors.since(started) {
            return Error::Connection(reason);
        }
        let open = self.pool.state().connections;
        let max = self.pool.config().max_size;
        if open < max {
            // Room for more connections, yet none was handed out: opening them fails.
            Error::Connection(format!(
                "no connection could be opened within {waited:?} ({open} of {max} open); \
                 check the URL and that the server accepts connections; if the URL asks for \
                 TLS (sslmode), build the pool with `synckit_awareness::build_pool` or \
                 `synckit_awareness::connection_manager` (diesel-async's default manager \
                 connects without TLS)"
            ))
        } else {
            Error::PoolTimeout(waited)
        }
    }
}

/// `set` on `conn`: the fast path, then, when it changed nothing, the full statement (see
/// `sql/write.rs`).
async fn set_on(
    conn: &mut AsyncPgConnection,
    update: &AwarenessUpdate,
    context: WriteContext<'_>,
) -> Result<SetOutcome> {
    if sql::write::set_fast(update, context).execute(conn).await? > 0 {
        return Ok(SetOutcome::Applied);
    }
    // `load`, not `get_result`: diesel-async's `get_result` returns at the first row, before
    // the server's ReadyForQuery, i.e. before the implicit commit; a crash in between would
    // lose an update reported applied (tests/faults.rs caught it). `load` reads to the end.
    let codes: Vec<i16> = sql::write::set_full(update, context).load(conn).await?;
    let code = codes.into_iter().next().unwrap_or(-1);
    SetOutcome::from_code(code).ok_or_else(|| unexpected("set", code))
}

fn unexpected(what: &str, code: i16) -> Error {
    Error::Database(diesel::result::Error::DeserializationError(
        format!("{what}: the database returned the unknown outcome code {code}").into(),
    ))
}

/// `set_many` as one statement on `conn`: the lean one when every key is distinct, else the
/// one that reads the old rows to resolve repeated keys (see `postgres/batch.rs`). A batch
/// where one key comes from several owners is applied one update after another.
async fn set_many_on(
    conn: &mut AsyncPgConnection,
    updates: &[AwarenessUpdate],
    context: WriteContext<'_>,
) -> Result<Vec<SetOutcome>> {
    let plan = super::batch::BatchPlan::new(updates);
    if plan.has_mixed_owners(updates) {
        let mut outcomes = Vec::with_capacity(updates.len());
        for update in updates {
            outcomes.push(set_on(conn, update, context).await?);
        }
        return Ok(outcomes);
    }
    let mut attempt = 0;
    loop {
        let outcomes = if plan.is_distinct() {
            sql::write::set_many_distinct(plan.columns(updates), context)
                .distinct()
                .load::<i16>(conn)
                .await
                .map(|rows| plan.outcomes_distinct(&rows))
        } else {
            sql::write::set_many(plan.columns(updates), context)
                .exact()
                .load::<super::batch::SentResult>(conn)
                .await
                .map(|rows| plan.outcomes(updates, &rows))
        };
        match outcomes {
            // Two batches can still deadlock when one inserts a key the other's snapshot did
            // not see; PostgreSQL aborts one statement, which wrote nothing: retry it.
            Err(diesel::result::Error::DatabaseError(_, info))
                if attempt < 3 && info.message().starts_with("deadlock detected") =>
            {
                attempt += 1;
            }
            other => {
                return other?.ok_or_else(|| {
                    Error::Database(diesel::result::Error::DeserializationError(
                        "set_many: the database returned rows that do not match the batch".into(),
                    ))
                })
            }
        }
    }
}

pub(super) fn pool_error_to_error(e: PoolError) -> Error {
    match e {
        PoolError::ConnectionError(e) => {
            let reason = redact(&e.to_string());
            if reason.contains("TLS handshake") {
                Error::Connection(format!(
                    "{reason}: this pool cannot do TLS (diesel-async's default manager connects \
                     without it); build it with `synckit_awareness::build_pool` or \
                     `synckit_awareness::connection_manager`"
                ))
            } else {
                Error::Connection(reason)
            }
        }
        PoolError::QueryError(e) => Error::Database(e),
    }
}

pub(super) fn interval(timeout: std::time::Duration) -> PgInterval {
    PgInterval::from_microseconds(i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Storage for PgStorage {
    async fn get(&self, document: &str, client: &str) -> Result<Option<AwarenessEntry>> {
        let mut conn = self.conn().await?;
        Ok(sql::read::get(document, client, self.timeout)
            .get_result(&mut conn)
            .await
            .optional()?)
    }

    async fn get_all(&self, document: &str) -> Result<Vec<AwarenessEntry>> {
        let mut conn = self.conn().await?;
        Ok(sql::read::get_all(document, self.timeout)
            .load(&mut conn)
            .await?)
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        match self.coalescer.as_deref() {
            Some(coalescer) => self.set_coalesced(coalescer, update).await,
            None => self.set_alone(update).await,
        }
    }

    /// One statement for the whole batch (see `postgres/batch.rs` and `sql::write`).
    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        let context = self.write_context()?;
        let mut conn = self.conn().await?;
        set_many_on(&mut conn, updates, context).await
    }

    async fn remove(&self, document: &str, client: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let rows = sql::delete::remove(document, client)
            .execute(&mut conn)
            .await?;
        Ok(rows > 0)
    }

    async fn remove_all_for_connection(&self, connection: &str) -> Result<Vec<AwarenessEntry>> {
        let mut conn = self.conn().await?;
        let removed: Vec<(AwarenessEntry, bool)> =
            sql::delete::remove_all_for_connection(connection, self.timeout)
                .get_results(&mut conn)
                .await?;
        let mut fresh: Vec<AwarenessEntry> = removed
            .into_iter()
            .filter_map(|(entry, fresh)| fresh.then_some(entry))
            .collect();
        sort_by_key(&mut fresh);
        Ok(fresh)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut conn = self.conn().await?;
        Ok(sql::read::get_expired(self.timeout).load(&mut conn).await?)
    }

    async fn prune_expired(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let rows = sql::delete::prune_expired(self.timeout)
            .execute(&mut conn)
            .await?;
        Ok(rows as u64)
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut conn = self.conn().await?;
        let mut taken: Vec<AwarenessEntry> = sql::delete::take_expired(self.timeout)
            .get_results(&mut conn)
            .await?;
        sort_by_key(&mut taken);
        Ok(taken)
    }

    /// One statement: lapsed leases, expired entries and the entries of lapsed instances (see
    /// `sql/lease.rs`).
    async fn take_departed(&self) -> Result<Departed> {
        let mut conn = self.conn().await?;
        let rows: Vec<Departing> = diesel::sql_query(sql::lease::TAKE_DEPARTED)
            .bind::<diesel::sql_types::Interval, _>(self.timeout)
            .load(&mut conn)
            .await?;
        let mut departed = Departed::default();
        for row in rows {
            if row.expired {
                departed.expired.push(row.entry);
            } else {
                departed.abandoned.push(row.entry);
            }
        }
        Ok(departed)
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
