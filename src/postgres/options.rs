//! Options of the PostgreSQL store.

use std::time::Duration;

use crate::store::StoreOptions;

/// Options of [`PostgresAwarenessStore::connect`](crate::PostgresAwarenessStore::connect) and
/// [`build_pool`](crate::build_pool). Start from `default()` and change what you need:
///
/// ```
/// use std::time::Duration;
/// use synckit_awareness::PostgresOptions;
///
/// let options = PostgresOptions::default()
///     .with_timeout(Duration::from_secs(15))
///     .with_pool_size(20)
///     .with_acquire_timeout(Duration::from_secs(2));
/// assert_eq!(options.store.timeout, Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Expiry timeout and input limits.
    pub store: StoreOptions,
    /// Most connections the pool opens.
    pub pool_size: u32,
    /// How long a call waits for a free pooled connection. When every connection stays busy
    /// that long the call fails with [`Error::PoolTimeout`](crate::Error::PoolTimeout); when
    /// connections cannot be opened, with [`Error::Connection`](crate::Error::Connection) and
    /// the reason.
    pub acquire_timeout: Duration,
    /// Check the table against the expected schema when connecting, and fail fast when it
    /// differs ([`Error::SchemaMismatch`](crate::Error::SchemaMismatch)).
    pub validate_on_start: bool,
    /// PostgreSQL `statement_timeout` for the store's connections; `None` keeps the server's.
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL `synchronous_commit` for the store's connections. `false` (`off`) lets a
    /// commit return before its WAL reaches disk: a crash can lose the last fraction of a
    /// second of awareness writes, never consistency.
    ///
    /// Default `false`: awareness is ephemeral (clients resend it every few seconds), and
    /// waiting for the WAL flush made every `set` 5-8x slower on the benchmark machine
    /// (docs/performance.md). Set `true` when awareness rows must survive a server crash.
    pub synchronous_commit: bool,
    /// Coalesce concurrent `set` calls: while a quarter of the pool (at least one connection)
    /// carries coalesced statements, further `set`s queue and go out together as one `set_many`
    /// statement, each caller still getting its own outcome. A `set` that finds a free slot and
    /// nobody waiting runs at once, alone: no timer, no added latency for a lone writer.
    ///
    /// Default `false`: on the 2-core benchmark machine the batch statement costs about three
    /// single upserts on the server, so batches of a few rows did not beat one statement per
    /// `set` (docs/performance.md has the figures). Turn it on where the database, not the
    /// connection count, is the limit, and measure.
    pub coalesce_writes: bool,
    /// The URL leads to a transaction-mode connection pooler (PgBouncer `pool_mode =
    /// transaction`, Supavisor's transaction port, RDS Proxy, Neon's pooler), where each
    /// transaction may run on another server connection. Then every statement is sent unnamed
    /// in one round trip (Parse/Bind/Describe/Execute/Sync) and is its own transaction, on
    /// connections of a pool of the store's own; nothing outlives it on the server connection
    /// (no prepared statement, no session setting); `synchronous_commit` travels in the write
    /// statements and `statement_timeout` is enforced by the store with a cancel request; the
    /// change feed's listener needs its own direct URL
    /// ([`ChangeFeedOptions::listen_url`](crate::ChangeFeedOptions::listen_url)), and
    /// [`migrate`](crate::PostgresAwarenessStore::migrate) refuses (run migrations on a
    /// direct URL). Default `false`.
    pub transaction_pooler: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            pool_size: 10,
            acquire_timeout: Duration::from_secs(5),
            validate_on_start: true,
            statement_timeout: Some(Duration::from_secs(10)),
            synchronous_commit: false,
            coalesce_writes: false,
            transaction_pooler: false,
        }
    }
}

impl PostgresOptions {
    /// These options with other [`StoreOptions`].
    pub fn with_store(mut self, store: StoreOptions) -> Self {
        self.store = store;
        self
    }

    /// These options with another expiry timeout ([`StoreOptions::timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.store = self.store.with_timeout(timeout);
        self
    }

    /// These options with another pool size ([`pool_size`](Self::pool_size)).
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// These options with another wait for a free pooled connection
    /// ([`acquire_timeout`](Self::acquire_timeout)).
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// These options with the schema check on connecting turned on or off
    /// ([`validate_on_start`](Self::validate_on_start)).
    pub fn with_validate_on_start(mut self, validate_on_start: bool) -> Self {
        self.validate_on_start = validate_on_start;
        self
    }

    /// These options with another `statement_timeout`; `None` keeps the server's
    /// ([`statement_timeout`](Self::statement_timeout)).
    pub fn with_statement_timeout(mut self, statement_timeout: Option<Duration>) -> Self {
        self.statement_timeout = statement_timeout;
        self
    }

    /// These options with write coalescing on or off
    /// ([`coalesce_writes`](Self::coalesce_writes)).
    pub fn with_coalesce_writes(mut self, coalesce_writes: bool) -> Self {
        self.coalesce_writes = coalesce_writes;
        self
    }

    /// These options with `synchronous_commit` on or off
    /// ([`synchronous_commit`](Self::synchronous_commit)).
    pub fn with_synchronous_commit(mut self, synchronous_commit: bool) -> Self {
        self.synchronous_commit = synchronous_commit;
        self
    }

    /// These options for a URL that leads to a transaction-mode pooler (see
    /// [`transaction_pooler`](Self::transaction_pooler)).
    pub fn with_transaction_pooler(mut self, transaction_pooler: bool) -> Self {
        self.transaction_pooler = transaction_pooler;
        self
    }
}
