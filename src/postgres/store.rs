//! [`PostgresAwarenessStore`]: the contract on one table, one statement per operation.

use std::fmt;

use async_trait::async_trait;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::PoolError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::EmbeddedMigrations;

use super::connect::ConnectErrors;
use super::feed::ChangeKind;
use super::options::PostgresOptions;
use super::sql;
use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, SetOutcome};
use crate::error::{Error, Field, Result};
use crate::migrations::{run_migrations, MigrationReport};
use crate::schema::awareness_entries::dsl::*;
use crate::schema_check::{validate_schema, SchemaReport};
use crate::secret::redact;
use crate::store::{AwarenessStore, StoreOptions};
use crate::trace::Op;
use crate::validate::{check_id, check_update};

/// A bb8 pool of diesel-async PostgreSQL connections, as diesel-async builds it.
pub type PgPool = Pool<AsyncPgConnection>;

/// An [`AwarenessStore`] on PostgreSQL: entries survive restarts, can be inspected with SQL and
/// are shared by every server using the same database.
///
/// Each operation is one statement; `set` is one conditional upsert, so ordering holds under
/// any concurrency without an explicit transaction. Expiry uses the database's clock.
#[derive(Clone)]
pub struct PostgresAwarenessStore {
    pool: PgPool,
    options: StoreOptions,
    pub(super) timeout: PgInterval,
    pub(super) feed: super::feed::Feed,
    connect_errors: ConnectErrors,
}

impl fmt::Debug for PostgresAwarenessStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's manager holds the connection URL (and its password): never print it.
        let pool_state = self.pool.state();
        f.debug_struct("PostgresAwarenessStore")
            .field("options", &self.options)
            .field("connections", &pool_state.connections)
            .field("idle_connections", &pool_state.idle_connections)
            .finish()
    }
}

impl PostgresAwarenessStore {
    /// A store on an existing pool (the host application's own, for example). Does not check
    /// the schema; call [`ensure_schema`](Self::ensure_schema) for that.
    pub fn from_pool(pool: PgPool, options: StoreOptions) -> Self {
        let timeout = interval(options.timeout);
        Self {
            pool,
            options,
            timeout,
            feed: Default::default(),
            connect_errors: ConnectErrors::default(),
        }
    }

    /// Builds a pool for `database_url` and a store on it. With
    /// [`validate_on_start`](PostgresOptions::validate_on_start), fails fast when the database
    /// cannot be reached or its schema differs from the expected one.
    pub async fn connect(database_url: &str, options: PostgresOptions) -> Result<Self> {
        let (pool, connect_errors) =
            super::connect::build_pool_reporting(database_url, &options).await?;
        let store = Self {
            connect_errors,
            ..Self::from_pool(pool, options.store)
        };
        if options.validate_on_start {
            store.ensure_schema().await?;
        }
        Ok(store)
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies this crate's pending migrations, then `extra` (the host application's), under
    /// a PostgreSQL advisory lock; see [`run_migrations`].
    pub async fn migrate(
        &self,
        extra: &'static [&'static EmbeddedMigrations],
    ) -> Result<MigrationReport> {
        let conn = self
            .pool
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

    pub(super) async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>> {
        let started = std::time::Instant::now();
        self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => pool_error_to_error(e),
            RunError::TimedOut => self.timed_out(started),
        })
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
impl AwarenessStore for PostgresAwarenessStore {
    #[tracing::instrument(name = "awareness.get", level = "debug", skip_all, fields(store = "postgres", document_id = doc, client_id = client, outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn get(&self, doc: &str, client: &str) -> Result<Option<AwarenessEntry>> {
        let mut op = Op::start();
        check_id(Field::DocumentId, doc)?;
        check_id(Field::ClientId, client)?;
        let mut conn = self.conn().await?;
        let found = awareness_entries
            .find((doc, client))
            .filter(last_seen.gt(sql::cutoff(self.timeout)))
            .select(AwarenessEntry::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        op.done(if found.is_some() { "found" } else { "absent" });
        Ok(found)
    }

    #[tracing::instrument(name = "awareness.get_all", level = "debug", skip_all, fields(store = "postgres", document_id = doc, outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn get_all(&self, doc: &str) -> Result<Vec<AwarenessEntry>> {
        let mut op = Op::start();
        check_id(Field::DocumentId, doc)?;
        let mut conn = self.conn().await?;
        // Primary-key range scan on document_id; rows arrive already in client_id order.
        let live = awareness_entries
            .filter(document_id.eq(doc))
            .filter(state.is_not_null())
            .filter(last_seen.gt(sql::cutoff(self.timeout)))
            .order(client_id.asc())
            .select(AwarenessEntry::as_select())
            .load(&mut conn)
            .await?;
        op.rows(live.len());
        Ok(live)
    }

    #[tracing::instrument(name = "awareness.set", level = "debug", skip_all, fields(store = "postgres", document_id = update.document_id, client_id = update.client_id, clock = update.clock, outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let mut op = Op::start();
        check_update(update, self.options.max_state_bytes)?;
        let mut conn = self.conn().await?;
        let rows = sql::set(update, self.timeout).execute(&mut conn).await?;
        if rows > 0 {
            self.feed.publish_update(update);
        }
        let outcome = if rows == 0 {
            SetOutcome::Stale
        } else {
            SetOutcome::Applied
        };
        op.done(if rows == 0 { "stale" } else { "applied" });
        Ok(outcome)
    }

    /// One statement for the whole batch (see `postgres/batch.rs` and `sql::SetMany`).
    #[tracing::instrument(name = "awareness.set_many", level = "debug", skip_all, fields(store = "postgres", updates = updates.len(), outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        let mut op = Op::start();
        for update in updates {
            check_update(update, self.options.max_state_bytes)?;
        }
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let plan = super::batch::BatchPlan::new(updates);
        let mut conn = self.conn().await?;
        let mut attempt = 0;
        let rows: Vec<super::batch::SentResult> = loop {
            let query = sql::set_many(plan.columns(updates), self.timeout);
            match query.load(&mut conn).await {
                // Two batches can still deadlock when one inserts a key the other's snapshot
                // did not see; PostgreSQL aborts one statement, which wrote nothing: retry it.
                Err(diesel::result::Error::DatabaseError(_, info))
                    if attempt < 3 && info.message().starts_with("deadlock detected") =>
                {
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let outcomes = plan.outcomes(updates, &rows).ok_or_else(|| {
            Error::Database(diesel::result::Error::DeserializationError(
                "set_many: the database returned rows that do not match the batch".into(),
            ))
        })?;
        for (update, outcome) in updates.iter().zip(&outcomes) {
            if outcome.is_applied() {
                self.feed.publish_update(update);
            }
        }
        op.rows(rows.len());
        Ok(outcomes)
    }

    #[tracing::instrument(name = "awareness.remove", level = "debug", skip_all, fields(store = "postgres", document_id = doc, client_id = client, outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn remove(&self, doc: &str, client: &str) -> Result<bool> {
        let mut op = Op::start();
        check_id(Field::DocumentId, doc)?;
        check_id(Field::ClientId, client)?;
        let mut conn = self.conn().await?;
        let rows = diesel::delete(awareness_entries.find((doc, client)))
            .execute(&mut conn)
            .await?;
        if rows > 0 {
            self.feed
                .publish(ChangeKind::Remove, doc, vec![client.to_owned()]);
        }
        op.done(if rows > 0 { "removed" } else { "absent" });
        Ok(rows > 0)
    }

    #[tracing::instrument(name = "awareness.remove_all_for_connection", level = "debug", skip_all, fields(store = "postgres", connection_id = conn_id, outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn remove_all_for_connection(&self, conn_id: &str) -> Result<Vec<AwarenessEntry>> {
        let mut op = Op::start();
        check_id(Field::ConnectionId, conn_id)?;
        let mut conn = self.conn().await?;
        // Uses awareness_entries_connection_id_idx. Expired rows are deleted too (they are
        // garbage) but not returned: expired entries are absent for every read.
        let removed: Vec<(AwarenessEntry, bool)> =
            diesel::delete(awareness_entries.filter(connection_id.eq(conn_id)))
                .returning((
                    AwarenessEntry::as_returning(),
                    last_seen.gt(sql::cutoff(self.timeout)),
                ))
                .get_results(&mut conn)
                .await?;
        let mut live: Vec<AwarenessEntry> = removed
            .into_iter()
            .filter_map(|(entry, live)| live.then_some(entry))
            .collect();
        sort_by_key(&mut live);
        self.feed.publish_entries(ChangeKind::Remove, &live);
        op.rows(live.len());
        Ok(live)
    }

    #[tracing::instrument(name = "awareness.get_expired", level = "debug", skip_all, fields(store = "postgres", outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut op = Op::start();
        let mut conn = self.conn().await?;
        // A deliberate sequential scan: an index on last_seen would make every heartbeat a
        // non-HOT update (see the migration's comments).
        let expired = awareness_entries
            .filter(last_seen.le(sql::cutoff(self.timeout)))
            .order((document_id.asc(), client_id.asc()))
            .select(AwarenessEntry::as_select())
            .load(&mut conn)
            .await?;
        op.rows(expired.len());
        Ok(expired)
    }

    #[tracing::instrument(name = "awareness.prune_expired", level = "debug", skip_all, fields(store = "postgres", outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn prune_expired(&self) -> Result<u64> {
        if self.feed.is_publishing() {
            return Ok(self.take_expired().await?.len() as u64); // needs the keys to publish
        }
        let mut op = Op::start();
        let mut conn = self.conn().await?;
        let rows =
            diesel::delete(awareness_entries.filter(last_seen.le(sql::cutoff(self.timeout))))
                .execute(&mut conn)
                .await?;
        op.rows(rows);
        Ok(rows as u64)
    }

    #[tracing::instrument(name = "awareness.take_expired", level = "debug", skip_all, fields(store = "postgres", outcome = tracing::field::Empty, rows = tracing::field::Empty, elapsed_us = tracing::field::Empty))]
    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut op = Op::start();
        let mut conn = self.conn().await?;
        let mut taken: Vec<AwarenessEntry> =
            diesel::delete(awareness_entries.filter(last_seen.le(sql::cutoff(self.timeout))))
                .returning(AwarenessEntry::as_returning())
                .get_results(&mut conn)
                .await?;
        sort_by_key(&mut taken);
        self.feed.publish_entries(ChangeKind::Expire, &taken);
        op.rows(taken.len());
        Ok(taken)
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
