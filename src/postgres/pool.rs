//! The pool, and the one way every part of the store gets a connection from it: the wait is
//! recorded (metrics), pool errors are mapped once (with the TLS hint), and a wait that ends
//! without a connection says why (the last failure to connect) instead of blaming the pool
//! size. Everything else in `postgres/` imports from here; this file imports none of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bb8::ErrorSink;
use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::PoolError;
use diesel_async::{
    AnsiTransactionManager, AsyncConnectionCore, AsyncPgConnection, TransactionManager,
};

use crate::error::{Error, Result};
use crate::postgres::secret::redact;
use crate::postgres::unnamed::{UnnamedConnection, UnnamedPool};

/// A bb8 pool of diesel-async PostgreSQL connections, as diesel-async builds it.
pub type PgPool = Pool<AsyncPgConnection>;

/// A pooled connection borrowed from [`Connections`].
pub(crate) type Pooled<'a> = PooledConnection<'a, AsyncPgConnection>;

/// A pool with what it reported of its failures to connect, and how an operation runs on it.
#[derive(Clone)]
pub(crate) struct Connections {
    pool: PgPool,
    connect_errors: ConnectErrors,
    /// Behind a transaction-mode pooler: the connections every operation runs on.
    unnamed: Option<UnnamedPool>,
    /// Behind a transaction-mode pooler: the `synchronous_commit` each write statement sets
    /// for its own transaction (`"on"`/`"off"`, from the options).
    synchronous_commit: Option<&'static str>,
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

/// Runs `$body` (a `Result`) with `$conn` checked out of `$connections` ([`Connections`]):
/// `&mut AsyncPgConnection` directly, `&mut UnnamedConnection` behind a transaction-mode
/// pooler (each statement one round trip and its own transaction: see `unnamed/`). `$body`
/// is compiled for both, so what it calls takes any [`StoreConn`].
macro_rules! with_conn {
    ($connections:expr, |$conn:ident| $body:expr) => {{
        let connections: &$crate::postgres::pool::Connections = &$connections;
        match connections.unnamed() {
            Some(unnamed) => {
                let mut pooled = connections.get_unnamed(unnamed).await?;
                $crate::postgres::pool::typed(async {
                    let $conn: &mut $crate::postgres::unnamed::UnnamedConnection = &mut pooled;
                    $body
                })
                .await
                .map_err($crate::error::Error::typed)
            }
            None => {
                let mut pooled = connections.get().await?;
                $crate::postgres::pool::typed(async {
                    let $conn: &mut diesel_async::AsyncPgConnection = &mut pooled;
                    $body
                })
                .await
                .map_err($crate::error::Error::typed)
            }
        }
    }};
}
pub(crate) use with_conn;

/// What the store's statements run on: a diesel-async connection, or behind a
/// transaction-mode pooler an [`UnnamedConnection`].
pub(crate) trait StoreConn: AsyncConnectionCore<Backend = Pg> + Send {
    /// True when a statement on it commits by itself (no transaction is open).
    fn outside_transaction(&mut self) -> bool;
}

impl StoreConn for AsyncPgConnection {
    fn outside_transaction(&mut self) -> bool {
        matches!(
            AnsiTransactionManager::transaction_manager_status_mut(self).transaction_depth(),
            Ok(None)
        )
    }
}

impl StoreConn for UnnamedConnection {
    fn outside_transaction(&mut self) -> bool {
        // It never opens one: every statement is its own.
        true
    }
}

/// Pins an operation's output type (so `?` inside [`with_conn!`] bodies infers).
pub(crate) fn typed<T, F: std::future::Future<Output = Result<T>>>(operation: F) -> F {
    operation
}

impl Connections {
    /// `pool` as the store's; `unnamed` set when the URL leads to a transaction-mode pooler
    /// (then every operation runs on it, and `pool` serves only what asks for it by name),
    /// with the `synchronous_commit` (on: true) its writes set for themselves.
    pub(crate) fn new(
        pool: PgPool,
        connect_errors: ConnectErrors,
        unnamed: Option<(UnnamedPool, bool)>,
    ) -> Self {
        let synchronous_commit = unnamed
            .as_ref()
            .map(|&(_, on)| if on { "on" } else { "off" });
        Self {
            pool,
            connect_errors,
            unnamed: unnamed.map(|(pool, _)| pool),
            synchronous_commit,
            gauges_due: Arc::default(),
        }
    }

    /// What each write statement sets `synchronous_commit` to for its own transaction (see
    /// `sql::write::WriteContext`): behind a transaction-mode pooler the options' value,
    /// directly nothing (the session settings say it).
    pub(crate) fn synchronous_commit(&self) -> Option<&'static str> {
        self.synchronous_commit
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True when the URL leads to a transaction-mode pooler.
    pub(crate) fn behind_pooler(&self) -> bool {
        self.unnamed.is_some()
    }

    /// The pool operations run on behind a transaction-mode pooler.
    pub(crate) fn unnamed(&self) -> Option<&UnnamedPool> {
        self.unnamed.as_ref()
    }

    /// A connection of `unnamed` (this store's [`unnamed`](Self::unnamed)), or why there is
    /// none.
    pub(crate) async fn get_unnamed<'a>(
        &self,
        unnamed: &'a UnnamedPool,
    ) -> Result<bb8::PooledConnection<'a, crate::postgres::unnamed::UnnamedManager>> {
        let started = Instant::now();
        let conn = unnamed.get().await.map_err(|e| match e {
            RunError::User(e) => pool_error(e).typed(),
            RunError::TimedOut => self.timed_out(unnamed.state().connections, started).typed(),
        });
        self.record(started, || unnamed.state());
        conn
    }

    /// A pooled connection, or why there is none.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>> {
        let started = Instant::now();
        let conn = self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => pool_error(e).typed(),
            RunError::TimedOut => self
                .timed_out(self.pool.state().connections, started)
                .typed(),
        });
        self.record(started, || self.pool.state());
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

    /// Records the wait that began at `started`, and now and then the pool's gauges (`state`).
    fn record(&self, started: Instant, state: impl FnOnce() -> bb8::State) {
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
            let state = state();
            crate::metrics::pool_gauges(state.connections, state.idle_connections);
        }
    }

    /// Why waiting for a pooled connection ended without one: the pool was busy, or it could
    /// not open connections (then never blame the pool size). `open`: the connections the
    /// pool waited on holds (both pools have the same size and timeout).
    fn timed_out(&self, open: u32, started: Instant) -> Error {
        let waited = self.pool.config().connection_timeout;
        if let Some(reason) = self.connect_errors.since(started) {
            return Error::Connection(reason);
        }
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
