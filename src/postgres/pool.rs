//! The pool, and the one way every part of the store gets a connection from it: the wait is
//! recorded (metrics), pool errors are mapped once (with the TLS hint), and a wait that ends
//! without a connection says why (the last failure to connect) instead of blaming the pool
//! size. Everything else in `postgres/` imports from here; this file imports none of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bb8::ErrorSink;
use diesel::pg::data_types::PgInterval;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::PoolError;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};

use crate::error::{Error, Result};
use crate::postgres::secret::redact;

/// A bb8 pool of diesel-async PostgreSQL connections, as diesel-async builds it.
pub type PgPool = Pool<AsyncPgConnection>;

/// A pooled connection borrowed from [`Connections`].
pub(crate) type Pooled<'a> = PooledConnection<'a, AsyncPgConnection>;

/// A pool with what it reported of its failures to connect, and how an operation runs on it.
#[derive(Clone)]
pub(crate) struct Connections {
    pool: PgPool,
    connect_errors: ConnectErrors,
    /// Behind a transaction-mode pooler: what starts each operation's transaction.
    pooled_begin: Option<Arc<str>>,
    /// When the pool's gauges are next sampled (ms on [`clock_ms`]): `pool.state()` takes the
    /// pool's lock, which every checkout and return also takes, so it is read at most every
    /// [`GAUGE_EVERY_MS`], not at every checkout.
    gauges_due: Arc<AtomicU64>,
}

/// How often the pool's gauges are sampled, at most.
const GAUGE_EVERY_MS: u64 = 100;

/// Milliseconds on a process-wide monotonic clock.
fn clock_ms() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs `$body` (a `Result`) with `$conn: &mut AsyncPgConnection` checked out of
/// `$connections` ([`Connections`]): behind a transaction-mode pooler inside one explicit
/// transaction (committed when `$body` is `Ok`, rolled back otherwise), directly otherwise.
macro_rules! with_conn {
    ($connections:expr, |$conn:ident| $body:expr) => {{
        let connections: &$crate::postgres::pool::Connections = &$connections;
        let mut attempt = 1;
        loop {
            let mut pooled = connections.get().await?;
            connections.begin(&mut pooled).await?;
            let result = $crate::postgres::pool::typed(async {
                let $conn: &mut diesel_async::AsyncPgConnection = &mut pooled;
                $body
            })
            .await;
            let result = connections
                .end(&mut pooled, result)
                .await
                .map_err($crate::error::Error::typed);
            // Behind a transaction pooler the operation is one transaction, which a deadlock
            // or serialization failure aborted: run it again (write/retry.rs).
            match result {
                Err(error)
                    if connections.behind_pooler()
                        && attempt < $crate::postgres::write::retry::ATTEMPTS =>
                {
                    match $crate::postgres::write::retry::store_conflict(&error) {
                        Some(kind) => {
                            drop(pooled);
                            $crate::postgres::write::retry::before_retry(kind, attempt).await;
                            attempt += 1;
                        }
                        None => break Err(error),
                    }
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use with_conn;

/// Pins an operation's output type (so `?` inside [`with_conn!`] bodies infers).
pub(crate) fn typed<T, F: std::future::Future<Output = Result<T>>>(operation: F) -> F {
    operation
}

impl Connections {
    /// `pool` as the store's; `pooled_begin` set (see `sql::session::pooled_begin`) when the URL
    /// leads to a transaction-mode pooler.
    pub(crate) fn new(
        pool: PgPool,
        connect_errors: ConnectErrors,
        pooled_begin: Option<String>,
    ) -> Self {
        Self {
            pool,
            connect_errors,
            pooled_begin: pooled_begin.map(Arc::from),
            gauges_due: Arc::default(),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True when the URL leads to a transaction-mode pooler.
    pub(crate) fn behind_pooler(&self) -> bool {
        self.pooled_begin.is_some()
    }

    /// Starts an operation's transaction behind a transaction-mode pooler (else nothing).
    /// Tracked by diesel-async: a connection dropped inside it is discarded, not reused.
    pub(crate) async fn begin(&self, conn: &mut AsyncPgConnection) -> Result<()> {
        if let Some(begin) = &self.pooled_begin {
            AnsiTransactionManager::begin_transaction_sql(conn, begin).await?;
        }
        Ok(())
    }

    /// Ends what [`begin`](Self::begin) started: commits after `Ok`, rolls back after `Err`.
    pub(crate) async fn end<T>(
        &self,
        conn: &mut AsyncPgConnection,
        result: Result<T>,
    ) -> Result<T> {
        if self.pooled_begin.is_none() {
            return result;
        }
        match result {
            Ok(value) => {
                <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::commit_transaction(conn)
                    .await?;
                Ok(value)
            }
            Err(error) => {
                // A failed rollback leaves the transaction open: the pool discards the
                // connection (diesel-async tracks it); the operation's error is what matters.
                let _ = <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::rollback_transaction(conn)
                    .await;
                Err(error)
            }
        }
    }

    /// A pooled connection, or why there is none.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>> {
        let started = Instant::now();
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| self.run_error(e, started).typed());
        self.record(started);
        conn
    }

    /// A connection outside the pool, set up like the pooled ones, held for good by its
    /// caller (the change feed's listener, the migration runner).
    pub(crate) async fn dedicated(&self) -> Result<AsyncPgConnection> {
        self.pool
            .dedicated_connection()
            .await
            .map_err(|e| pool_error(e).typed())
    }

    fn record(&self, started: Instant) {
        crate::metrics::pool_wait(started);
        let now = clock_ms();
        let due = self.gauges_due.load(Ordering::Relaxed);
        let sample = now >= due
            && self
                .gauges_due
                .compare_exchange(
                    due,
                    now + GAUGE_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if sample {
            let state = self.pool.state();
            crate::metrics::pool_gauges(state.connections, state.idle_connections);
        }
    }

    fn run_error(&self, error: RunError, started: Instant) -> Error {
        match error {
            RunError::User(e) => pool_error(e),
            RunError::TimedOut => self.timed_out(started),
        }
    }

    /// Why waiting for a pooled connection ended without one: the pool was busy, or it could
    /// not open connections (then never blame the pool size).
    fn timed_out(&self, started: Instant) -> Error {
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

/// A pool error as this crate's error, the password redacted.
pub(crate) fn pool_error(e: PoolError) -> Error {
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

/// A timeout as an SQL interval (saturating).
pub(crate) fn interval(timeout: std::time::Duration) -> PgInterval {
    PgInterval::from_microseconds(i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX))
}

/// The pool's most recent failure to open a connection (password redacted).
///
/// bb8 never hands a failed connection attempt to the caller waiting in `get` (it retries until
/// the connection timeout, then reports a timeout); this keeps the last failure so the store can
/// say *why* instead ("connection refused", "invalid certificate").
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectErrors(Arc<Mutex<Option<(Instant, String)>>>);

impl ConnectErrors {
    /// The last failure, if it happened after `since`.
    pub(crate) fn since(&self, since: Instant) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, message)| message.clone())
    }
}

impl ErrorSink<PoolError> for ConnectErrors {
    fn sink(&self, error: PoolError) {
        let message = redact(&error.to_string());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), message));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}
