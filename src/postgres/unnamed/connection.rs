//! [`UnnamedConnection`]: a connection that sends each statement as one unnamed
//! Parse/Bind/Describe/Execute/Sync (tokio-postgres' `query_typed`): one round trip, nothing
//! left on the server connection afterwards. Behind a transaction-mode pooler each statement
//! is then a transaction of its own that the pooler keeps on one server connection (it hands
//! the connection back at the Sync's `ReadyForQuery`), with no prepared statement to lose or
//! collide with another client's.
//!
//! It implements diesel-async's `AsyncConnectionCore`, so every statement of the store runs on
//! it unchanged (`RunQueryDsl`). What a session setting would do on a direct connection
//! travels with the operation instead: `statement_timeout` is measured here and enforced with
//! a cancel request ([`cancel`](super::cancel)); `synchronous_commit` is in the write statements
//! (`set_config(…, true)`, see `sql/write.rs`).

use std::time::Duration;

use diesel::pg::{Pg, PgMetadataLookup, PgQueryBuilder, PgTypeMetadata};
use diesel::query_builder::bind_collector::RawBytesBindCollector;
use diesel::query_builder::{AsQuery, QueryBuilder, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::QueryResult;
use diesel_async::{AsyncConnectionCore, SimpleAsyncConnection};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use tokio_postgres::types::Type;

use super::cancel::Canceller;
use super::driver::Driver;
use super::error::{from_postgres, timed_out};
use super::row::{Bytes, UnnamedRow};

/// How long a statement past its timeout may take to fail once the cancel request is sent,
/// before the connection is given up.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Behind a transaction-mode pooler: a PostgreSQL connection that sends every statement
/// unnamed, in one round trip (Parse/Bind/Describe/Execute/Sync), each statement its own
/// transaction. It runs diesel queries through diesel-async's `RunQueryDsl` (`execute`,
/// `load`, `get_result`…); it opens no transaction (no `AsyncConnection::transaction`): use it
/// for one-statement operations. Get one from
/// [`PostgresAwarenessStore::statement_pool`](crate::PostgresAwarenessStore::statement_pool).
pub struct UnnamedConnection {
    client: tokio_postgres::Client,
    driver: Driver,
    canceller: Canceller,
    statement_timeout: Option<Duration>,
    /// A statement got no answer, not even to its cancel: the connection is not reused.
    stuck: bool,
}

/// A statement ready to send: its text and its binds with their types.
struct Sendable {
    sql: String,
    params: Vec<(Bytes, Type)>,
}

impl UnnamedConnection {
    pub(crate) fn new(
        client: tokio_postgres::Client,
        driver: Driver,
        canceller: Canceller,
        statement_timeout: Option<Duration>,
    ) -> Self {
        Self {
            client,
            driver,
            canceller,
            statement_timeout,
            stuck: false,
        }
    }

    /// True when the connection can no longer be used (its socket closed, or a statement
    /// never answered).
    pub(crate) fn is_broken(&mut self) -> bool {
        self.stuck || self.driver.is_closed() || self.client.is_closed()
    }

    /// Sends `statement` and reads its whole answer: the rows and the row count.
    async fn run(&mut self, statement: QueryResult<Sendable>) -> QueryResult<Answer> {
        let Sendable { sql, params } = statement?;
        let client = &self.client;
        let query = async move {
            let stream = client.query_typed_raw(&sql, params).await?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.try_next().await? {
                rows.push(UnnamedRow(row));
            }
            Ok::<_, tokio_postgres::Error>(Answer {
                rows,
                count: stream.rows_affected(),
            })
        };
        let driver = &mut self.driver;
        let Some(limit) = self.statement_timeout else {
            return driver.drive(query).await.map_err(from_postgres);
        };
        let mut query = std::pin::pin!(query);
        if let Ok(answer) = tokio::time::timeout(limit, driver.drive(query.as_mut())).await {
            return answer.map_err(from_postgres);
        }
        let token = self.client.cancel_token();
        let canceller = self.canceller.clone();
        tokio::spawn(async move {
            if let Err(error) = canceller.cancel(&token).await {
                tracing::warn!(%error, "the cancel request of a statement past its timeout failed");
            }
        });
        match tokio::time::timeout(CANCEL_GRACE, driver.drive(query)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(timed_out(limit, Some(from_postgres(error)))),
            Err(_) => {
                self.stuck = true;
                Err(timed_out(limit, None))
            }
        }
    }
}

/// A statement's whole answer.
struct Answer {
    rows: Vec<UnnamedRow>,
    count: Option<u64>,
}

/// `query`'s text and binds. The store uses PostgreSQL's own types only: a type diesel would
/// have to look up by name (a user-defined one) is refused here.
fn sendable(query: &dyn QueryFragment<Pg>) -> QueryResult<Sendable> {
    let mut builder = PgQueryBuilder::default();
    query.to_sql(&mut builder, &Pg)?;
    let mut binds = RawBytesBindCollector::<Pg>::new();
    query.collect_binds(&mut binds, &mut NoLookups, &Pg)?;
    let params = binds
        .metadata
        .iter()
        .zip(binds.binds)
        .map(|(metadata, bytes)| Ok((Bytes(bytes), builtin(metadata)?)))
        .collect::<QueryResult<Vec<_>>>()?;
    Ok(Sendable {
        sql: builder.finish(),
        params,
    })
}

fn builtin(metadata: &PgTypeMetadata) -> QueryResult<Type> {
    let oid = metadata
        .oid()
        .map_err(|e| Error::SerializationError(Box::new(e)))?;
    Type::from_oid(oid).ok_or_else(|| {
        Error::SerializationError(
            format!("a bind of type OID {oid} is not one of PostgreSQL's own types").into(),
        )
    })
}

/// The metadata lookup of [`sendable`]: there is none.
struct NoLookups;

impl PgMetadataLookup for NoLookups {
    fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> PgTypeMetadata {
        let key = diesel::pg::PgMetadataCacheKey::new(
            schema.map(|s| s.to_owned().into()),
            type_name.to_owned().into(),
        );
        PgTypeMetadata::from_result(Err(diesel::pg::FailedToLookupTypeError::new(key)))
    }
}

impl SimpleAsyncConnection for UnnamedConnection {
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.driver
            .drive(self.client.batch_execute(query))
            .await
            .map_err(from_postgres)
    }
}

impl AsyncConnectionCore for UnnamedConnection {
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type Stream<'conn, 'query> = BoxStream<'static, QueryResult<UnnamedRow>>;
    type Row<'conn, 'query> = UnnamedRow;
    type Backend = Pg;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let statement = sendable(&source.as_query());
        async move {
            let answer = self.run(statement).await?;
            Ok(futures_util::stream::iter(answer.rows.into_iter().map(Ok)).boxed())
        }
        .boxed()
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let statement = sendable(&source);
        async move {
            let answer = self.run(statement).await?;
            usize::try_from(answer.count.unwrap_or(0))
                .map_err(|e| Error::DeserializationError(Box::new(e)))
        }
        .boxed()
    }
}
