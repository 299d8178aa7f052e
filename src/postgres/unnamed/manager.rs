//! The bb8 pool of [`UnnamedConnection`]s the store uses behind a transaction-mode pooler:
//! connections opened as the store's others are (TLS from the URL, a read-only server
//! refused), with no session setting (it would stay on a server connection other clients
//! share) and no statement cache.

use std::time::Duration;

use diesel_async::pooled_connection::PoolError;
use diesel_async::SimpleAsyncConnection;

use super::cancel::Canceller;
use super::connection::UnnamedConnection;
use super::driver::Driver;
use crate::postgres::sql::session::REFUSE_READ_ONLY;

/// A bb8 pool of [`UnnamedConnection`]s
/// ([`PostgresAwarenessStore::statement_pool`](crate::PostgresAwarenessStore::statement_pool)).
pub type UnnamedPool = bb8::Pool<UnnamedManager>;

/// Opens [`UnnamedConnection`]s to one URL (TLS from the URL, a read-only server refused).
pub struct UnnamedManager {
    url: String,
    statement_timeout: Option<Duration>,
}

impl UnnamedManager {
    pub(crate) fn new(url: &str, statement_timeout: Option<Duration>) -> Self {
        Self {
            url: url.to_owned(),
            statement_timeout,
        }
    }
}

/// One tokio-postgres client to `url` (TLS as the store's other connections), its socket
/// (driven by whoever runs a statement: `driver.rs`), and how to cancel its statements.
async fn connect(
    url: &str,
) -> diesel::ConnectionResult<(tokio_postgres::Client, Driver, Canceller)> {
    use crate::postgres::tls::{client_config, with_sources};
    let (config, tls) = client_config(url)?;
    let bad = |e: tokio_postgres::Error| diesel::ConnectionError::BadConnection(with_sources(&e));
    let (client, driver) = match &tls {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(bad)?;
            (client, Driver::new(connection))
        }
        Some(maker) => {
            let (client, connection) = config.connect(maker.clone()).await.map_err(bad)?;
            (client, Driver::new(connection))
        }
    };
    Ok((client, driver, Canceller::new(&config, tls)))
}

impl bb8::ManageConnection for UnnamedManager {
    type Connection = UnnamedConnection;
    type Error = PoolError;

    async fn connect(&self) -> Result<UnnamedConnection, PoolError> {
        let (client, driver, canceller) = connect(&self.url)
            .await
            .map_err(PoolError::ConnectionError)?;
        let mut conn = UnnamedConnection::new(client, driver, canceller, self.statement_timeout);
        conn.batch_execute(REFUSE_READ_ONLY).await.map_err(|e| {
            PoolError::ConnectionError(diesel::ConnectionError::BadConnection(e.to_string()))
        })?;
        Ok(conn)
    }

    /// No round trip (it would add one to every operation): a closed socket is known locally.
    async fn is_valid(&self, conn: &mut UnnamedConnection) -> Result<(), PoolError> {
        if conn.is_broken() {
            Err(PoolError::QueryError(
                diesel::result::Error::BrokenTransactionManager,
            ))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut UnnamedConnection) -> bool {
        conn.is_broken()
    }
}
