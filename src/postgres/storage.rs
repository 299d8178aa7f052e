//! [`PgStorage`]: the contract on one table, one statement per operation (the statements are
//! in `sql/`). The publishing layer (`feed/publishing.rs`) and the validation and tracing every
//! store shares (`crate::storage`) wrap it; the facade (`store.rs`) holds the result.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::instance::Lease;
use super::pool::{with_conn, Connections, StoreConn};
use super::sql;
use super::sql::write::WriteContext;
use super::write::coalesce::{Coalescer, Turn};
use super::write::known::KnownKeys;
use super::write::retry::retry_statement;
use super::write::run::{set_many_on, set_on};
use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, Departed, SetOutcome};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::store::StoreOptions;
use crate::who::RoomCount;

/// The storage work on the `awareness_entries` table: one statement per operation.
#[derive(Clone)]
pub(crate) struct PgStorage {
    pub(super) connections: Connections,
    pub(super) options: StoreOptions,
    pub(super) timeout: PgInterval,
    /// Queue of `set`s coalesced into one statement when connections are busy; `None`: off.
    pub(super) coalescer: Option<Arc<Coalescer>>,
    /// The instance this store runs as, once started; shared by every clone.
    pub(super) instance: Arc<OnceLock<Arc<Lease>>>,
    /// The keys this store wrote and their clocks: which statement a `set` sends first.
    pub(super) known: Arc<KnownKeys>,
    /// When the pruner next looks for expired entries (see `take_departed`).
    pub(super) expiry: Arc<ExpiryCheck>,
}

/// When `take_departed` next scans for expired entries: `None` at the next round.
#[derive(Debug, Default)]
pub(crate) struct ExpiryCheck(Mutex<Option<Instant>>);

impl ExpiryCheck {
    fn is_due(&self) -> bool {
        let at = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        at.is_none_or(|at| Instant::now() >= at)
    }

    fn check_in(&self, wait: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now().checked_add(wait);
    }

    fn check_next_round(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl PgStorage {
    /// What a write needs besides its updates, or why this store may not write now.
    fn write_context(&self) -> Result<WriteContext<'_>> {
        let instance_id = match self.instance.get() {
            Some(lease) => Some(lease.check()?),
            None => None,
        };
        Ok(WriteContext::new(
            self.timeout,
            instance_id,
            &self.options,
            self.connections.synchronous_commit(),
        ))
    }

    /// `set` alone: the one statement on a connection of its own.
    async fn set_alone(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let context = self.write_context()?;
        with_conn!(self.connections, |conn| set_on(
            conn,
            update,
            context,
            &self.known
        )
        .await)
    }

    /// `set_many` on a connection of its own.
    async fn set_many_pooled<C: StoreConn>(
        &self,
        conn: &mut C,
        updates: &[AwarenessUpdate],
    ) -> Result<Vec<SetOutcome>> {
        let context = self.write_context()?;
        set_many_on(conn, updates, context, &self.known).await
    }

    /// `set` through the coalescer (see `write/coalesce.rs`).
    async fn set_coalesced(
        &self,
        coalescer: &Coalescer,
        update: &AwarenessUpdate,
    ) -> Result<SetOutcome> {
        // A free slot and nobody waiting: nothing to batch with, go at once.
        if let Some(_slot) = coalescer.try_alone() {
            return self.set_alone(update).await;
        }
        let ticket = coalescer.enqueue(update);
        // As long as a caller would wait for a pooled connection, no longer.
        let waited = self.connections.pool().config().connection_timeout;
        let slot = match tokio::time::timeout(waited, coalescer.slot()).await {
            Ok(slot) => slot,
            Err(_) if coalescer.withdraw(&ticket) => return Err(Error::PoolTimeout(waited)),
            // A batch already carries the update.
            Err(_) => return ticket.outcome().await,
        };
        match coalescer.take(ticket) {
            Turn::Wait(ticket) => {
                drop(slot);
                ticket.outcome().await
            }
            Turn::Alone(update) => {
                let _slot = slot;
                self.set_alone(&update).await
            }
            Turn::Send(batch, ticket) => {
                let storage = self.clone();
                let write = move |updates: Vec<AwarenessUpdate>| async move {
                    with_conn!(storage.connections, |conn| storage
                        .set_many_pooled(conn, &updates)
                        .await)
                };
                tokio::spawn(batch.run(write, slot));
                ticket.outcome().await
            }
        }
    }
}

#[async_trait]
impl Storage for PgStorage {
    async fn get(&self, document: &str, client: &str) -> Result<Option<AwarenessEntry>> {
        with_conn!(self.connections, |conn| Ok(sql::read::get(
            document,
            client,
            self.timeout
        )
        .get_result(conn)
        .await
        .optional()?))
    }

    async fn get_all(&self, document: &str) -> Result<Vec<AwarenessEntry>> {
        with_conn!(self.connections, |conn| Ok(sql::read::get_all(
            document,
            self.timeout
        )
        .load(conn)
        .await?))
    }

    async fn get_all_states(&self, document: &str) -> Result<Vec<crate::entry::LiveState>> {
        let rows: Vec<(String, i64, crate::entry::JsonText)> = with_conn!(
            self.connections,
            |conn| Ok(sql::read::get_all_states(document, self.timeout)
                .load(conn)
                .await?)
        )?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn count(&self, document: &str) -> Result<u64> {
        let live: i64 = with_conn!(self.connections, |conn| Ok(sql::read::count(
            document,
            self.timeout
        )
        .get_result(conn)
        .await?))?;
        Ok(u64::try_from(live).unwrap_or(0))
    }

    async fn rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<RoomCount>> {
        use diesel::sql_types::{BigInt, Interval, Text};
        with_conn!(self.connections, |conn| Ok(diesel::sql_query(
            sql::raw::ROOMS
        )
        .bind::<Interval, _>(self.timeout)
        .bind::<Text, _>(after.unwrap_or(""))
        .bind::<BigInt, _>(i64::from(limit))
        .load(conn)
        .await?))
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        match self.coalescer.as_deref() {
            Some(coalescer) => self.set_coalesced(coalescer, update).await,
            None => self.set_alone(update).await,
        }
    }

    /// One statement for a batch of distinct keys, rounds of them when a key repeats (see
    /// `postgres/write/plan.rs` and `sql::write`). A lone update (a y-protocols heartbeat) is a `set`: its one-statement fast path instead
    /// of the batch statement; no update, no round trip.
    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        match updates {
            [] => Ok(Vec::new()),
            [one] => Ok(vec![self.set(one).await?]),
            many => {
                let context = self.write_context()?;
                with_conn!(self.connections, |conn| set_many_on(
                    conn,
                    many,
                    context,
                    &self.known
                )
                .await)
            }
        }
    }

    async fn remove(&self, document: &str, client: &str) -> Result<bool> {
        self.known.forget([(document, client)]);
        with_conn!(self.connections, |conn| Ok(sql::delete::remove(
            document, client
        )
        .execute(conn)
        .await?
            > 0))
    }

    async fn remove_all_for_connection(&self, connection: &str) -> Result<Vec<AwarenessEntry>> {
        let removed: Vec<sql::lease::Departing> =
            with_conn!(self.connections, |conn| Ok(retry_statement!(
                conn,
                diesel::sql_query(sql::delete::REMOVE_ALL_FOR_CONNECTION)
                    .bind::<diesel::sql_types::Text, _>(connection)
                    .bind::<diesel::sql_types::Interval, _>(self.timeout)
                    .load(conn)
                    .await
            )?))?;
        self.known
            .forget_entries(removed.iter().map(|row| &row.entry));
        let mut fresh: Vec<AwarenessEntry> = removed
            .into_iter()
            .filter_map(|row| (!row.expired).then_some(row.entry))
            .collect();
        sort_by_key(&mut fresh);
        Ok(fresh)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        with_conn!(self.connections, |conn| Ok(sql::read::get_expired(
            self.timeout
        )
        .load(conn)
        .await?))
    }

    async fn prune_expired(&self) -> Result<u64> {
        let counted: Vec<sql::delete::Count> =
            with_conn!(self.connections, |conn| Ok(retry_statement!(
                conn,
                diesel::sql_query(sql::delete::PRUNE_EXPIRED)
                    .bind::<diesel::sql_types::Interval, _>(self.timeout)
                    .load(conn)
                    .await
            )?))?;
        Ok(counted
            .into_iter()
            .next()
            .map_or(0, |row| u64::try_from(row.n).unwrap_or(0)))
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut taken: Vec<AwarenessEntry> =
            with_conn!(self.connections, |conn| Ok(retry_statement!(
                conn,
                diesel::sql_query(sql::delete::TAKE_EXPIRED)
                    .bind::<diesel::sql_types::Interval, _>(self.timeout)
                    .load(conn)
                    .await
            )?))?;
        sort_by_key(&mut taken);
        self.known.forget_entries(&taken);
        Ok(taken)
    }

    /// A pruning round in two halves, so that an idle round costs what it removes rather than
    /// what the table holds (`sql/lease.rs`):
    /// - leases, every round: lapsed leases deleted and the instances holding entries without
    ///   a valid lease found through the `instance_id` index; their entries are deleted only
    ///   when there are any;
    /// - expiry, only on the leading instance (the live one with the smallest id; every store
    ///   not running as an instance) and only when due: one scan reads how long until the
    ///   first entry expires, and the next scan waits that long (an entry's `last_seen` only
    ///   grows, and new entries expire later than every one seen); when one has expired,
    ///   `take_expired` deletes the expired entries and the next round checks again.
    async fn take_departed(&self) -> Result<Departed> {
        let mut departed = Departed::default();
        let orphaned: Vec<sql::lease::Orphaned> = with_conn!(self.connections, |conn| Ok(
            diesel::sql_query(sql::lease::ORPHANED_INSTANCES)
                .load(conn)
                .await?
        ))?;
        // Expiry is looked for by one instance per database, the live one with the smallest
        // id (stores not running as instances always look).
        let leads = match self.instance.get() {
            Some(lease) => orphaned
                .iter()
                .find_map(|row| row.leader.as_deref())
                .is_none_or(|leader| leader == lease.id),
            None => true,
        };
        let ids: Vec<String> = orphaned.into_iter().filter_map(|row| row.orphan).collect();
        if !ids.is_empty() {
            let rows: Vec<sql::lease::Departing> =
                with_conn!(self.connections, |conn| Ok(retry_statement!(
                    conn,
                    diesel::sql_query(sql::lease::TAKE_ABANDONED)
                        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&ids)
                        .bind::<diesel::sql_types::Interval, _>(self.timeout)
                        .load(conn)
                        .await
                )?))?;
            self.known.forget_entries(rows.iter().map(|row| &row.entry));
            for row in rows {
                if row.expired {
                    departed.expired.push(row.entry);
                } else {
                    departed.abandoned.push(row.entry);
                }
            }
        }
        if leads && self.expiry.is_due() {
            let first: Vec<sql::lease::FirstExpiry> = with_conn!(self.connections, |conn| Ok(
                diesel::sql_query(sql::lease::SECONDS_TO_FIRST_EXPIRY)
                    .bind::<diesel::sql_types::Interval, _>(self.timeout)
                    .load(conn)
                    .await?
            ))?;
            let seconds = first.into_iter().next().and_then(|row| row.seconds);
            match seconds {
                Some(seconds) if seconds <= 0.0 => {
                    departed.expired.extend(self.take_expired().await?);
                    self.expiry.check_next_round();
                }
                // Never later than a timeout from now (an empty table, or a clock change).
                _ => self.expiry.check_in(
                    seconds
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .map_or(self.options.timeout, |wait| wait.min(self.options.timeout)),
                ),
            }
        }
        sort_by_key(&mut departed.expired);
        Ok(departed)
    }

    /// Stops the instance's renewals, then removes its lease and entries in one statement
    /// (see `sql/lease.rs`); the entries that were not expired are returned.
    async fn shutdown(&self) -> Result<Vec<AwarenessEntry>> {
        let Some(lease) = self.instance.get() else {
            return Ok(Vec::new());
        };
        lease.stop();
        let removed: Vec<sql::lease::Departing> =
            with_conn!(self.connections, |conn| Ok(retry_statement!(
                conn,
                diesel::sql_query(sql::lease::SHUTDOWN)
                    .bind::<diesel::sql_types::Text, _>(&lease.id)
                    .bind::<diesel::sql_types::Interval, _>(self.timeout)
                    .load(conn)
                    .await
            )?))?;
        Ok(removed
            .into_iter()
            .filter(|d| !d.expired)
            .map(|d| d.entry)
            .collect())
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
