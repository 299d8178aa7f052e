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

use std::sync::Arc;

use super::coalesce::{Coalescer, Turn};
use super::connect::ConnectErrors;
use super::options::PostgresOptions;
use super::publishing::Publishing;
use super::sql;
use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, SetOutcome};
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
/// Each operation is one statement; `set` is one conditional upsert, so ordering holds under
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

    /// A pooled connection, or why there is none.
    pub(super) async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        self.layers.inner.conn().await
    }

    /// The expiry timeout as an SQL interval.
    pub(super) fn timeout(&self) -> PgInterval {
        self.layers.inner.timeout
    }
}

impl PgStorage {
    async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        let started = std::time::Instant::now();
        self.pool
            .get()
            .await
            .map_err(|e| self.run_error(e, started))
    }

    fn run_error(&self, error: RunError, started: std::time::Instant) -> Error {
        match error {
            RunError::User(e) => pool_error_to_error(e),
            RunError::TimedOut => self.timed_out(started),
        }
    }

    /// `set` alone: the plain conditional upsert on a connection of its own.
    async fn set_alone(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let mut conn = self.conn().await?;
        set_on(&mut conn, update, self.timeout).await
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
                let conn = async move {
                    let started = std::time::Instant::now();
                    storage
                        .pool
                        .get_owned()
                        .await
                        .map_err(|e| storage.run_error(e, started))
                };
                tokio::spawn(batch.run(conn, self.timeout, slot));
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

/// `set` as one conditional upsert on `conn`.
async fn set_on(
    conn: &mut AsyncPgConnection,
    update: &AwarenessUpdate,
    timeout: PgInterval,
) -> Result<SetOutcome> {
    let rows = sql::write::set(update, timeout).execute(conn).await?;
    Ok(if rows == 0 {
        SetOutcome::Stale
    } else {
        SetOutcome::Applied
    })
}

/// `set_many` as one statement on `conn`: the lean one when every key is distinct, else the
/// one that reads the old rows to resolve repeated keys (see `postgres/batch.rs`).
pub(super) async fn set_many_on(
    conn: &mut AsyncPgConnection,
    updates: &[AwarenessUpdate],
    timeout: PgInterval,
) -> Result<Vec<SetOutcome>> {
    let plan = super::batch::BatchPlan::new(updates);
    let mut attempt = 0;
    loop {
        let outcomes = if plan.is_distinct() {
            sql::write::set_many_distinct(plan.columns(updates), timeout)
                .load::<bool>(conn)
                .await
                .map(|rows| plan.outcomes_distinct(&rows))
        } else {
            sql::write::set_many(plan.columns(updates), timeout)
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

fn pool_error_to_error(e: PoolError) -> Error {
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

fn interval(timeout: std::time::Duration) -> PgInterval {
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
        let mut conn = self.conn().await?;
        set_many_on(&mut conn, updates, self.timeout).await
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

    fn options(&self) -> StoreOptions {
        self.options
    }
}
