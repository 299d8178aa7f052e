//! How the store opens connections: pool settings and per-session settings.

use bb8::Pool;
use diesel::ConnectionResult;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;

use super::options::PostgresOptions;
use super::pool::ConnectErrors;
use super::unnamed::{UnnamedManager, UnnamedPool};
use crate::error::{Error, Result};
use crate::postgres::secret::redact;

/// A connection manager for `url` with this crate's connection set-up: TLS from `sslmode` /
/// `sslrootcert` (rustls), the session settings of `options` (`statement_timeout`,
/// `synchronous_commit`) run on every new connection, a server that takes no writes (a
/// standby) refused as it connects ([`Error::ReadOnly`](crate::Error::ReadOnly)), and a
/// checkout check without a round trip (a connection whose socket closed is replaced; bb8's
/// `test_on_check_out`, on by default, runs it).
///
/// For an application that builds its own bb8 pool and shares it with the store
/// ([`PostgresAwarenessStore::from_pool`](crate::PostgresAwarenessStore::from_pool)):
/// diesel-async's default manager connects without TLS, so a URL with `sslmode=require`
/// fails with "error performing TLS handshake" there.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use synckit_awareness::diesel_async::pooled_connection::bb8::Pool;
/// use synckit_awareness::{connection_manager, PostgresOptions};
///
/// let manager = connection_manager("postgres://app@db/app?sslmode=require", &PostgresOptions::default());
/// let pool = Pool::builder().max_size(20).build(manager).await?;
/// # let _ = pool; Ok(()) }
/// ```
pub fn connection_manager(
    url: &str,
    options: &PostgresOptions,
) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let session = super::sql::session::session_settings(options);
    let pooler = options.transaction_pooler;
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // No round trip at checkout: a connection whose socket closed (a server restart, a
    // failover) is known locally and replaced, instead of failing its first use.
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        let closed = conn.is_broken();
        async move {
            if closed {
                Err(diesel::result::Error::BrokenTransactionManager)
            } else {
                Ok(())
            }
        }
        .boxed()
    }));
    config.custom_setup =
        Box::new(move |url| establish(url.to_owned(), session.clone(), pooler).boxed());
    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config)
}

/// The pool [`PostgresAwarenessStore::connect`](crate::PostgresAwarenessStore::connect) builds,
/// for an application's own use as well: TLS and session settings as
/// [`connection_manager`], at most `options.pool_size` connections, and
/// `options.acquire_timeout` as the wait for a free connection.
///
/// Connection health costs no round trip: no test query on checkout (it would add one to every
/// `set`), but a connection whose socket closed (a server restart, a failover) or whose
/// transaction state broke is replaced at checkout and discarded when it returns to the pool
/// (diesel-async's `is_broken`). What is left: a connection the server dropped an instant
/// before its use, or one whose peer vanished without closing it (a host gone from the
/// network: TCP notices later), fails its first call with a connection error.
pub async fn build_pool(url: &str, options: &PostgresOptions) -> Result<super::pool::PgPool> {
    Ok(build_pool_reporting(url, options).await?.0)
}

/// [`build_pool`], also returning where the pool reports its failures to connect
/// ([`ConnectErrors`]).
pub(crate) async fn build_pool_reporting(
    url: &str,
    options: &PostgresOptions,
) -> Result<(super::pool::PgPool, ConnectErrors)> {
    if options.pool_size == 0 {
        return Err(Error::Config("pool_size must be at least 1".into()));
    }
    let errors = ConnectErrors::default();
    let pool = Pool::builder()
        .max_size(options.pool_size)
        .connection_timeout(options.acquire_timeout)
        .test_on_check_out(true)
        // The most recently used connection first: a steady load keeps a few backends busy
        // (and their caches warm) instead of waking every idle one in turn, and the rest can
        // reach the idle timeout.
        .queue_strategy(bb8::QueueStrategy::Lifo)
        .error_sink(Box::new(errors.clone()))
        .build(connection_manager(url, options))
        .await
        .map_err(|e| Error::Connection(redact(&e.to_string())))?;
    Ok((pool, errors))
}

/// Behind a transaction-mode pooler: the pool every operation runs on (see `unnamed/`), sized
/// and timed as [`build_pool`]'s, its failures to connect reported to `errors`.
pub(crate) async fn build_unnamed_pool(
    url: &str,
    options: &PostgresOptions,
    errors: &ConnectErrors,
) -> Result<UnnamedPool> {
    Pool::builder()
        .max_size(options.pool_size)
        .connection_timeout(options.acquire_timeout)
        .test_on_check_out(true)
        .queue_strategy(bb8::QueueStrategy::Lifo)
        .error_sink(Box::new(errors.clone()))
        .build(UnnamedManager::new(url, options.statement_timeout))
        .await
        .map_err(|e| Error::Connection(redact(&e.to_string())))
}

async fn establish(
    url: String,
    session: String,
    pooler: bool,
) -> ConnectionResult<AsyncPgConnection> {
    let mut conn = super::tls::connect(&url).await?;
    if pooler {
        // A prepared statement lives on one server connection; behind a transaction-mode
        // pooler the next transaction may run on another. Prepared per use, closed inside the
        // operation's transaction.
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    }
    conn.batch_execute(&format!(
        "{session}{}",
        super::sql::session::REFUSE_READ_ONLY
    ))
    .await
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}
