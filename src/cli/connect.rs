//! Where the CLI connects and with which expiry timeout, and how it opens connections.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use synckit_awareness::{
    establish_connection, AwarenessSettings, DatabaseUrl, Error, PostgresAwarenessStore,
    PostgresOptions, StoreOptions,
};

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
        let attempt = establish_connection(self.url.expose());
        match tokio::time::timeout(self.connect_timeout, attempt).await {
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
                humantime::format_duration(self.connect_timeout)
            ))),
        }
    }

    /// A store on a one-connection pool seeded with a directly opened connection (see
    /// [`connect`](Self::connect)). When that connection breaks later, the pool opens a new
    /// one, so `prune --every` survives a database restart.
    pub(crate) async fn store(&self) -> Result<PostgresAwarenessStore, Failure> {
        let conn = self.connect().await?;
        // The library's own pool set-up (TLS, session settings, health checks), one connection.
        let options = PostgresOptions {
            store: self.options,
            pool_size: 1,
            connect_timeout: self.connect_timeout,
            validate_on_start: false,
            ..PostgresOptions::default()
        };
        let store = PostgresAwarenessStore::connect(self.url.expose(), options)
            .await
            .map_err(|e| Failure::connection(format!("cannot connect to {}: {e}", self.url)))?;
        // Only fails when the pool already opened its connection; this one is then not needed.
        let _ = store.pool().add(conn);
        Ok(store)
    }
}
