//! Where the CLI connects and with which expiry timeout, and how it opens connections.

use std::time::Duration;

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use synckit_awareness::{AwarenessSettings, DatabaseUrl, PostgresAwarenessStore, StoreOptions};

use super::Failure;

/// The database and store options every subcommand uses.
pub(crate) struct Target {
    url: DatabaseUrl,
    options: StoreOptions,
    connect_timeout: Duration,
}

impl Target {
    /// The URL from `--database-url`, else `DATABASE_URL`, else the settings' own
    /// (`SYNCKIT__AWARENESS__POSTGRES__URL`); the timeout from `--timeout`, else the settings.
    pub(crate) fn resolve(
        database_url: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Self, Failure> {
        let settings = AwarenessSettings::from_env()?;
        let url = database_url
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .map(DatabaseUrl::new)
            .or_else(|| settings.postgres.url.clone())
            .ok_or_else(|| {
                Failure::usage(
                    "no database given",
                    Some("pass --database-url or set DATABASE_URL (or SYNCKIT__AWARENESS__POSTGRES__URL)"),
                )
            })?;
        let mut options = settings.store_options();
        if let Some(timeout) = timeout {
            options.timeout = timeout;
        }
        if options.timeout.is_zero() {
            return Err(Failure::usage(
                "the expiry timeout must be greater than zero",
                Some("pass --timeout 30s or set SYNCKIT__AWARENESS__TIMEOUT_MS"),
            ));
        }
        Ok(Self {
            url,
            options,
            connect_timeout: Duration::from_millis(settings.postgres.connect_timeout_ms),
        })
    }

    /// The expiry timeout in force.
    pub(crate) fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// One connection, opened directly so that a refused connection, a wrong password or a
    /// missing database is reported as such (a pool would only say it timed out).
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, Failure> {
        let attempt = AsyncPgConnection::establish(self.url.expose());
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Failure::connection(format!(
                "cannot connect to {}: {e}",
                self.url
            ))),
            Err(_) => Err(Failure::connection(format!(
                "cannot connect to {}: no answer within {}",
                self.url,
                humantime::format_duration(self.connect_timeout)
            ))),
        }
    }

    /// A store on a one-connection pool seeded with a directly opened connection (see
    /// [`connect`](Self::connect)). When that connection breaks later, the pool opens a new
    /// one, so `prune --every` survives a database restart.
    pub(crate) async fn store(&self) -> Result<PostgresAwarenessStore, Failure> {
        let conn = self.connect().await?;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(self.url.expose());
        let pool = Pool::builder()
            .max_size(1)
            .connection_timeout(self.connect_timeout)
            .build_unchecked(manager);
        // Only fails when the pool is full, which a new one-connection pool is not; the pool
        // would then open its own connection anyway.
        let _ = pool.add(conn);
        Ok(PostgresAwarenessStore::from_pool(pool, self.options))
    }
}
