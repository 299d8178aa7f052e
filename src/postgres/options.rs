//! Options of the PostgreSQL store.

use std::time::Duration;

use crate::store::StoreOptions;

/// Options of [`PostgresAwarenessStore::connect`](crate::PostgresAwarenessStore::connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Expiry timeout and input limits.
    pub store: StoreOptions,
    /// Most connections the pool opens.
    pub pool_size: u32,
    /// How long a call waits for a free pooled connection before failing with
    /// [`Error::PoolTimeout`](crate::Error::PoolTimeout).
    pub connect_timeout: Duration,
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
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            validate_on_start: true,
            statement_timeout: Some(Duration::from_secs(10)),
            synchronous_commit: false,
        }
    }
}
