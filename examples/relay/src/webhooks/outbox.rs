//! The events waiting in PostgreSQL ([`Outbox`]): each operation one statement of `sql.rs`, on
//! the store's pool, or behind a transaction pooler on its unnamed connections (one round trip,
//! nothing prepared).

use std::time::Duration;

use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnectionCore, RunQueryDsl};
use synckit_awareness::{PgPool, UnnamedPool};

use super::sql::{Claimed, Trimmed, CLAIM, DELIVERED, FAILED, FORGET, RENEW, TRIM};

/// Why an operation failed (logged; the next round tries again).
pub(crate) type OutboxError = String;

fn database(error: impl std::fmt::Display) -> OutboxError {
    format!("webhook outbox: {error}")
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Runs `$op(conn, ...)` on a connection of whichever pool the outbox uses.
macro_rules! on_connection {
    ($outbox:expr, $op:ident($($arg:expr),*)) => {
        match &$outbox.statements {
            Some(statements) => {
                let mut conn = statements.get().await.map_err(database)?;
                $op(&mut *conn, $($arg),*).await.map_err(database)
            }
            None => {
                let mut conn = $outbox.pool.get().await.map_err(database)?;
                $op(&mut *conn, $($arg),*).await.map_err(database)
            }
        }
    };
}

/// The deliveries table, through the presence store's connections.
#[derive(Clone)]
pub(crate) struct Outbox {
    pool: PgPool,
    statements: Option<UnnamedPool>,
}

impl Outbox {
    pub(crate) fn new(pool: PgPool, statements: Option<UnnamedPool>) -> Self {
        Self { pool, statements }
    }

    /// Registers or renews `url`: joins and leaves are recorded for it from now on.
    pub(crate) async fn renew(
        &self,
        url: &str,
        entry_timeout: Duration,
    ) -> Result<(), OutboxError> {
        on_connection!(self, renew(url, millis(entry_timeout)))
    }

    /// Forgets endpoints nobody renewed for `after`, with their events; how many events.
    pub(crate) async fn forget(&self, after: Duration) -> Result<usize, OutboxError> {
        on_connection!(self, forget(millis(after)))
    }

    /// Each room's next due event of `url`, at most `limit`, claimed for `claim`.
    pub(crate) async fn claim(
        &self,
        url: &str,
        limit: u32,
        hold: Duration,
    ) -> Result<Vec<Claimed>, OutboxError> {
        on_connection!(self, claim(url, i64::from(limit), millis(hold)))
    }

    pub(crate) async fn delivered(&self, id: i64) -> Result<(), OutboxError> {
        on_connection!(self, delivered(id))
    }

    /// The attempt failed with `error`; the next one in `retry_in`.
    pub(crate) async fn failed(
        &self,
        id: i64,
        retry_in: Duration,
        error: &str,
    ) -> Result<(), OutboxError> {
        on_connection!(self, failed(id, millis(retry_in), error))
    }

    /// Drops what is older than `max_age` and what is past `max_pending`.
    pub(crate) async fn trim(
        &self,
        url: &str,
        max_age: Duration,
        max_pending: u32,
    ) -> Result<Trimmed, OutboxError> {
        on_connection!(self, trim(url, millis(max_age), i64::from(max_pending)))
    }
}

async fn renew<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    url: &str,
    timeout_ms: i64,
) -> diesel::QueryResult<()> {
    diesel::sql_query(RENEW)
        .bind::<Text, _>(url)
        .bind::<BigInt, _>(timeout_ms)
        .execute(conn)
        .await
        .map(drop)
}

async fn forget<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    after_ms: i64,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(FORGET)
        .bind::<BigInt, _>(after_ms)
        .execute(conn)
        .await
}

async fn claim<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    url: &str,
    limit: i64,
    claim_ms: i64,
) -> diesel::QueryResult<Vec<Claimed>> {
    // `load`: it returns after the statement's end (its commit, outside a transaction).
    diesel::sql_query(CLAIM)
        .bind::<Text, _>(url)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(claim_ms)
        .load(conn)
        .await
}

async fn delivered<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    id: i64,
) -> diesel::QueryResult<()> {
    diesel::sql_query(DELIVERED)
        .bind::<BigInt, _>(id)
        .execute(conn)
        .await
        .map(drop)
}

async fn failed<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    id: i64,
    retry_ms: i64,
    error: &str,
) -> diesel::QueryResult<()> {
    diesel::sql_query(FAILED)
        .bind::<BigInt, _>(id)
        .bind::<BigInt, _>(retry_ms)
        .bind::<Text, _>(error)
        .execute(conn)
        .await
        .map(drop)
}

async fn trim<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    url: &str,
    max_age_ms: i64,
    max_pending: i64,
) -> diesel::QueryResult<Trimmed> {
    let mut rows: Vec<Trimmed> = diesel::sql_query(TRIM)
        .bind::<Text, _>(url)
        .bind::<BigInt, _>(max_age_ms)
        .bind::<BigInt, _>(max_pending)
        .load(conn)
        .await?;
    rows.pop().ok_or(diesel::result::Error::NotFound)
}
