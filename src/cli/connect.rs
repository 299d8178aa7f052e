//! Where the CLI connects and with which expiry timeout, and how it opens connections.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use synckit_awareness::{
    establish_connection, AwarenessSettings, DatabaseUrl, Error, PostgresAwarenessStore,
    PostgresOptions,
};

use super::failure::Failure;

/// How long the CLI waits for PostgreSQL to answer a new connection (a network timeout, unlike
/// the store's `acquire_timeout`, which is the wait for a free pooled connection).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database and store options every subcommand uses.
pub(crate) struct Target {
    url: DatabaseUrl,
    options: PostgresOptions,
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
        let mut store_options = settings.store_options();
        if let Some(timeout) = timeout {
            store_options = store_options.with_timeout(timeout);
        }
        if store_options.timeout.is_zero() {
            return Err(Failure::usage(
                "the expiry timeout must be greater than zero",
                Some("pass --timeout 30s or set SYNCKIT__AWARENESS__TIMEOUT_MS"),
            ));
        }
        // The settings' session options (statement_timeout, synchronous_commit) apply to the
        // CLI's connections too; one connection is all a command needs.
        let options = settings
            .postgres
            .options(store_options)
            .with_pool_size(1)
            .with_acquire_timeout(CONNECT_TIMEOUT)
            .with_validate_on_start(false);
        Ok(Self { url, options })
    }

    /// The expiry timeout in force.
    pub(crate) fn timeout(&self) -> Duration {
        self.options.store.timeout
    }

    /// One connection, opened directly so that a refused connection, a wrong password or a
    /// missing database is reported as such (a pool would only say it timed out).
    pub(crate) async fn connect(&self) -> Result<AsyncPgConnection, Failure> {
        let attempt = establish_connection(self.url.expose());
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(Error::Connection(reason))) => Err(Failure::connection(format!(
                "cannot connect to {}: {reason}",
                self.url
            ))),
            Ok(Err(e)) => Err(Failure::connection(format!(
                "cannot connect to {}: {e}",
                self.url
            ))),
            Err(_) => Err(Failure::connection(format!(
                "cannot connect to {}: no answer within {}",
                self.url,
                humantime::format_duration(CONNECT_TIMEOUT)
            ))),
        }
    }

    /// A store on a one-connection pool with the library's own set-up (TLS, session settings
    /// such as `statement_timeout`). A direct connection is tried first only to report a
    /// refused connection, a wrong password or a missing database as such (a pool would only
    /// say it timed out); it is then closed, and the pool opens its own, so every statement runs
    /// with the session settings. When the pool's connection breaks later, it opens a new one,
    /// so `prune --every` survives a database restart.
    pub(crate) async fn store(&self) -> Result<PostgresAwarenessStore, Failure> {
        drop(self.connect().await?);
        PostgresAwarenessStore::connect(self.url.expose(), self.options)
            .await
            .map_err(|e| Failure::connection(format!("cannot connect to {}: {e}", self.url)))
    }
}
