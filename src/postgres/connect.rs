//! How the store opens connections: pool settings and per-session settings.

use diesel::ConnectionResult;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use super::options::PostgresOptions;
use crate::error::{Error, Result};
use crate::secret::redact;

/// The `SET` statements run once on each new connection, from the options.
pub(crate) fn session_sql(options: &PostgresOptions) -> String {
    let mut sql = String::new();
    if let Some(timeout) = options.statement_timeout {
        sql.push_str(&format!(
            "SET statement_timeout = {};",
            timeout.as_millis().max(1)
        ));
    }
    if !options.synchronous_commit {
        sql.push_str("SET synchronous_commit = off;");
    }
    sql
}

/// Builds the bb8 pool the store uses.
///
/// Connection health is error-based: no test query on checkout (it would add a round trip to
/// every `set`); a connection whose socket closed or whose transaction state broke is discarded
/// when it returns to the pool (diesel-async's `is_broken`), and the next checkout opens a
/// fresh one. The cost: the first call on a connection the server dropped fails once with a
/// connection error.
pub(crate) async fn build_pool(
    url: &str,
    options: &PostgresOptions,
) -> Result<Pool<AsyncPgConnection>> {
    if options.pool_size == 0 {
        return Err(Error::Config("pool_size must be at least 1".into()));
    }
    let session = session_sql(options);
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| establish(url.to_owned(), session.clone()).boxed());
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder()
        .max_size(options.pool_size)
        .connection_timeout(options.connect_timeout)
        .test_on_check_out(false)
        .build(manager)
        .await
        .map_err(|e| Error::Connection(redact(&e.to_string())))
}

async fn establish(url: String, session: String) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = super::tls::connect(&url).await?;
    if !session.is_empty() {
        conn.batch_execute(&session)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    }
    Ok(conn)
}
