//! The writes: `set` as one conditional upsert and `set_many` as one statement per batch.
//!
//! Each returns a concrete (unboxed) query type with a static query id, which diesel-async
//! prepares once per connection and caches, so the hot path parses nothing after warm-up (the
//! upsert needs [`Prepared`] for that; see there).

use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::upsert::excluded;

use super::{cutoff, expired, Cutoff, Prepared};
use crate::entry::AwarenessUpdate;
use crate::schema::awareness_entries::dsl::*;

/// The contract's rule 1 as one statement: insert, or replace the existing row only when it is
/// expired, older, or the same clock being left. `execute` returns 1 when applied, 0 when stale.
///
/// The statement is [`set_dsl`]; what goes out is [`SetStatement`], the same SQL text cut once
/// at its binds, so a `set` spends no time rebuilding its text (see there).
pub(crate) fn set(update: &AwarenessUpdate, timeout: PgInterval) -> SetStatement<'_> {
    SetStatement { update, timeout }
}

/// The `set` upsert in diesel's DSL: the definition of its SQL.
pub(crate) fn set_dsl<'a>(
    update: &'a AwarenessUpdate,
    timeout: PgInterval,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    use diesel::query_dsl::methods::FilterDsl;
    Prepared::<_, SetId>::new(
        diesel::insert_into(awareness_entries)
            .values((
                document_id.eq(&update.document_id),
                client_id.eq(&update.client_id),
                connection_id.eq(&update.connection_id),
                state.eq(&update.state),
                clock_value.eq(update.clock),
                last_seen.eq(diesel::dsl::now),
            ))
            .on_conflict((document_id, client_id))
            .do_update()
            .set((
                connection_id.eq(excluded(connection_id)),
                state.eq(excluded(state)),
                clock_value.eq(excluded(clock_value)),
                last_seen.eq(excluded(last_seen)),
            ))
            .filter(applies(timeout)),
    )
}

/// [`set`]'s statement identity for the prepared-statement cache.
pub(crate) struct SetId;

/// [`set_dsl`]'s statement with its SQL text built once per process.
///
/// diesel-async builds a statement's SQL text on every call, before it looks the statement up
/// in its prepared-statement cache; for the upsert that meant walking diesel's query tree and
/// quoting every identifier on every `set` — 45 % of the client's instructions per `set`
/// (callgrind, 2026-11-26). Here the text is [`set_dsl`]'s, cut at its six bind placeholders
/// the first time it is needed, and each call only pushes those pieces and its binds: the same
/// text (a test checks), a few copies instead of a tree walk.
#[derive(Debug)]
pub(crate) struct SetStatement<'a> {
    update: &'a AwarenessUpdate,
    timeout: PgInterval,
}

/// [`set_dsl`]'s text between its binds `$1`..`$6`: seven pieces (empty when it cannot be built,
/// which `walk_ast` reports as an error rather than sending wrong SQL).
static SET_TEXT: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    let sample = AwarenessUpdate::new("d", "c", "k", 0, None);
    let mut builder = diesel::pg::PgQueryBuilder::default();
    let dsl = set_dsl(&sample, PgInterval::from_microseconds(0));
    match dsl.to_sql(&mut builder, &Pg) {
        Ok(()) => cut_at_binds(&diesel::query_builder::QueryBuilder::finish(builder), 6),
        Err(_) => Vec::new(),
    }
});

/// `sql` cut at its placeholders `$1`..`$binds`, in order: `binds + 1` pieces, or none when a
/// placeholder is missing or out of order.
fn cut_at_binds(sql: &str, binds: usize) -> Vec<String> {
    let mut pieces = Vec::with_capacity(binds + 1);
    let mut rest = sql;
    for n in 1..=binds {
        let placeholder = format!("${n}");
        let Some(at) = rest.find(&placeholder) else {
            return Vec::new();
        };
        let after = &rest[at + placeholder.len()..];
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            return Vec::new();
        }
        pieces.push(rest[..at].to_owned());
        rest = after;
    }
    pieces.push(rest.to_owned());
    pieces
}

impl QueryId for SetStatement<'_> {
    type QueryId = SetId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for SetStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Interval, Jsonb, Nullable, Text};
        let [p0, p1, p2, p3, p4, p5, p6] = SET_TEXT.as_slice() else {
            return Err(diesel::result::Error::QueryBuilderError(
                "the set statement's SQL text could not be built".into(),
            ));
        };
        let u = self.update;
        out.push_sql(p0);
        out.push_bind_param::<Text, _>(&u.document_id)?;
        out.push_sql(p1);
        out.push_bind_param::<Text, _>(&u.client_id)?;
        out.push_sql(p2);
        out.push_bind_param::<Text, _>(&u.connection_id)?;
        out.push_sql(p3);
        out.push_bind_param::<Nullable<Jsonb>, _>(&u.state)?;
        out.push_sql(p4);
        out.push_bind_param::<BigInt, _>(&u.clock)?;
        out.push_sql(p5);
        out.push_bind_param::<Interval, _>(&self.timeout)?;
        out.push_sql(p6);
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// The contract's rule 1 as the upsert's `DO UPDATE ... WHERE`: the existing row is expired,
/// older, or the same clock being left. Shared by [`set`] and [`SetMany`].
fn applies(
    timeout: PgInterval,
) -> impl AppearsOnTable<awareness_entries, SqlType = diesel::sql_types::Bool>
       + QueryFragment<Pg>
       + QueryId
       + Send {
    expired(timeout)
        .or(clock_value.lt(excluded(clock_value)))
        .or(clock_value
            .eq(excluded(clock_value))
            .and(excluded(state).is_null())
            .and(state.is_not_null()))
}

/// Column arrays of a batch for [`SetMany`]: one element per distinct key, sorted by key.
#[derive(Debug, Default)]
pub(crate) struct BatchColumns<'a> {
    pub(crate) document_ids: Vec<&'a str>,
    pub(crate) client_ids: Vec<&'a str>,
    pub(crate) connection_ids: Vec<&'a str>,
    pub(crate) states: Vec<&'a Option<serde_json::Value>>,
    pub(crate) clocks: Vec<i64>,
}

/// `set_many` as one statement: the conditional upsert of [`set`] over `unnest` of column
/// arrays (at most one row per key, see `batch.rs`), plus what the caller needs to resolve
/// duplicates of a key inside the batch.
///
/// * `locked` locks the existing rows of the batch's keys (`FOR UPDATE`, in key order, so two
///   batches lock in the same order) and reads their (clock, is-leave, expired). Under READ
///   COMMITTED a locked row is re-read at its newest version, and the lock keeps it until
///   commit, so these are exactly the rows the upsert then decides against.
/// * The `(SELECT count(*) FROM locked) >= 0` filter is an uncorrelated sub-select, run once before
///   the first row is inserted: it forces every lock to be taken before any write (data-changing
///   CTEs otherwise run in an unspecified order).
/// * `xmax = 0` in `RETURNING` is true for a freshly inserted row and false for an updated one
///   (PostgreSQL's well-known upsert idiom): it tells "no row" from "a row inserted concurrently
///   after `locked` read", the one case where the old clock cannot be known.
///
/// One row per input element, in input order: `(applied, inserted, old_clock, old_is_leave,
/// old_expired)`; the old columns are NULL when `locked` found no row.
#[derive(Debug)]
pub(crate) struct SetMany<'a, R> {
    columns: BatchColumns<'a>,
    cutoff: Cutoff,
    applies: R,
}

/// The batch statement for `columns` (see [`SetMany`]).
pub(crate) fn set_many(
    columns: BatchColumns<'_>,
    timeout: PgInterval,
) -> SetMany<'_, impl QueryFragment<Pg> + Send> {
    SetMany {
        columns,
        cutoff: cutoff(timeout),
        applies: applies(timeout),
    }
}

/// Marker type: [`SetMany`]'s SQL text never changes (six array binds whatever the batch
/// size), so one prepared statement per connection serves every batch.
pub(crate) struct SetManyId;

impl<R> QueryId for SetMany<'_, R> {
    type QueryId = SetManyId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R> diesel::query_builder::Query for SetMany<'_, R> {
    type SqlType = (
        diesel::sql_types::Bool,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
    );
}

impl<R: QueryFragment<Pg>> QueryFragment<Pg> for SetMany<'_, R> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_input(&self.columns, out.reborrow())?;
        out.push_sql(
            ", locked AS MATERIALIZED (SELECT e.document_id, e.client_id, e.clock_value, \
             e.state IS NULL AS is_leave, e.last_seen <= ",
        );
        self.cutoff.walk_ast(out.reborrow())?;
        out.push_sql(
            " AS expired \
             FROM \"awareness_entries\" e JOIN input USING (document_id, client_id) \
             ORDER BY e.document_id, e.client_id FOR UPDATE OF e), \
             applied AS (",
        );
        push_upsert_from_input(
            "WHERE (SELECT count(*) FROM locked) >= 0 ",
            &self.applies,
            out.reborrow(),
        )?;
        out.push_sql(
            " \
             RETURNING document_id, client_id, xmax = 0 AS inserted) \
             SELECT applied.document_id IS NOT NULL, applied.inserted, \
             locked.clock_value, locked.is_leave, locked.expired \
             FROM input LEFT JOIN applied USING (document_id, client_id) \
             LEFT JOIN locked USING (document_id, client_id) ORDER BY input.ord",
        );
        Ok(())
    }
}

/// `set_many` for a batch whose keys are all distinct (the common case: coalesced heartbeats
/// of different clients): the conditional upsert of [`set`] over `unnest` of the column
/// arrays, and nothing else. With one update per key, an update applied exactly when the
/// upsert returned its row, so no old row needs reading or locking. Rows are written in key
/// order (the arrays are sorted), as [`SetMany`] locks them, so concurrent batches queue
/// rather than deadlock.
///
/// One row per input element, in input order: whether it applied.
#[derive(Debug)]
pub(crate) struct SetManyDistinct<'a, R> {
    columns: BatchColumns<'a>,
    applies: R,
}

/// The lean batch statement for `columns` whose keys are distinct (see [`SetManyDistinct`]).
pub(crate) fn set_many_distinct(
    columns: BatchColumns<'_>,
    timeout: PgInterval,
) -> SetManyDistinct<'_, impl QueryFragment<Pg> + Send> {
    SetManyDistinct {
        columns,
        applies: applies(timeout),
    }
}

/// Marker type: [`SetManyDistinct`]'s SQL text never changes.
pub(crate) struct SetManyDistinctId;

impl<R> QueryId for SetManyDistinct<'_, R> {
    type QueryId = SetManyDistinctId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R> diesel::query_builder::Query for SetManyDistinct<'_, R> {
    type SqlType = diesel::sql_types::Bool;
}

impl<R: QueryFragment<Pg>> QueryFragment<Pg> for SetManyDistinct<'_, R> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_input(&self.columns, out.reborrow())?;
        out.push_sql(", applied AS (");
        push_upsert_from_input("", &self.applies, out.reborrow())?;
        out.push_sql(
            " RETURNING document_id, client_id) \
             SELECT applied.document_id IS NOT NULL \
             FROM input LEFT JOIN applied USING (document_id, client_id) ORDER BY input.ord",
        );
        Ok(())
    }
}

/// The conditional upsert of [`set_dsl`] over the batch's `input` rows, in `ord` order, after
/// `filter` (a `WHERE` clause or nothing): the one hand-written copy of its column and `SET`
/// lists, which the pinned tests compare with [`set_dsl`]'s.
fn push_upsert_from_input<'b>(
    filter: &'static str,
    applies: &'b impl QueryFragment<Pg>,
    mut out: AstPass<'_, 'b, Pg>,
) -> QueryResult<()> {
    out.push_sql(
        "INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \
         \"state\", \"clock_value\", \"last_seen\") \
         SELECT document_id, client_id, connection_id, state, clock_value, CURRENT_TIMESTAMP \
         FROM input ",
    );
    out.push_sql(filter);
    out.push_sql(
        "ORDER BY ord ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \
         \"connection_id\" = excluded.\"connection_id\", \"state\" = excluded.\"state\", \
         \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" \
         WHERE ",
    );
    applies.walk_ast(out.reborrow())
}

/// `WITH input AS (…)`: the batch's column arrays as rows, ids in byte order (`COLLATE "C"`,
/// as the table's), numbered by `ord`.
fn push_input<'b>(c: &'b BatchColumns<'_>, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
    out.push_sql(
        "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, \
         i.client_id COLLATE \"C\" AS client_id, i.connection_id, i.state, i.clock_value, i.ord \
         FROM unnest(",
    );
    out.push_bind_param::<Array<Text>, _>(&c.document_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Text>, _>(&c.client_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Text>, _>(&c.connection_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&c.states)?;
    out.push_sql("::jsonb[], ");
    out.push_bind_param::<Array<BigInt>, _>(&c.clocks)?;
    out.push_sql(
        "::bigint[]) WITH ORDINALITY \
         AS i(document_id, client_id, connection_id, state, clock_value, ord))",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_sends_the_dsl_text_with_the_same_binds() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, Some(serde_json::json!(1)));
        let fast =
            diesel::debug_query::<Pg, _>(&set(&update, super::super::thirty_seconds())).to_string();
        let dsl = diesel::debug_query::<Pg, _>(&set_dsl(&update, super::super::thirty_seconds()))
            .to_string();
        assert_eq!(fast, dsl);
        assert_eq!(SET_TEXT.len(), 7);
        assert!(cut_at_binds("a $1 b $2", 3).is_empty());
        assert!(cut_at_binds("a $10", 1).is_empty());
    }

    #[test]
    fn set_is_one_conditional_upsert() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        assert_eq!(
            super::super::text(&set_dsl(&update, super::super::thirty_seconds())),
            "INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \
             \"state\", \"clock_value\", \"last_seen\") VALUES ($1, $2, $3, $4, $5, CURRENT_TIMESTAMP) \
             ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \
             \"connection_id\" = excluded.\"connection_id\", \"state\" = excluded.\"state\", \
             \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" \
             WHERE (((\"awareness_entries\".\"last_seen\" <= (now() - $6)) \
             OR (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) \
             OR (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") \
             AND (excluded.\"state\" IS NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL)))"
        );
    }

    /// The batch statements' hand-written upsert says what `set_dsl` says.
    #[test]
    fn batch_upserts_share_the_set_statements_lists() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let single = super::super::text(&set_dsl(&updates[0], super::super::thirty_seconds()));
        let conflict = |sql: &str| -> String {
            let from = sql.find("ON CONFLICT").unwrap_or_default();
            let to = sql[from..].find(" WHERE ").map_or(sql.len(), |i| from + i);
            sql[from..to].to_owned()
        };
        let columns = |sql: &str| -> String {
            let from = sql.find("INSERT INTO").unwrap_or_default();
            let to = sql[from..].find(')').map_or(sql.len(), |i| from + i);
            sql[from..to].to_owned()
        };
        for batch in [
            super::super::text(&set_many(
                plan.columns(&updates),
                super::super::thirty_seconds(),
            )),
            super::super::text(&set_many_distinct(
                plan.columns(&updates),
                super::super::thirty_seconds(),
            )),
        ] {
            assert_eq!(conflict(&batch), conflict(&single));
            assert_eq!(columns(&batch), columns(&single));
        }
    }

    #[test]
    fn distinct_batches_skip_the_old_row_read() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let query = set_many_distinct(plan.columns(&updates), super::super::thirty_seconds());
        assert_eq!(
            super::super::text(&query),
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, i.client_id COLLATE \"C\" \
             AS client_id, i.connection_id, i.state, i.clock_value, i.ord FROM unnest($1::text[], \
             $2::text[], $3::text[], $4::jsonb[], $5::bigint[]) WITH ORDINALITY AS i(document_id, \
             client_id, connection_id, state, clock_value, ord)), applied AS (INSERT INTO \
             \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \"state\", \
             \"clock_value\", \"last_seen\") SELECT document_id, client_id, connection_id, state, \
             clock_value, CURRENT_TIMESTAMP FROM input ORDER BY ord ON CONFLICT (\"document_id\", \
             \"client_id\") DO UPDATE SET \"connection_id\" = excluded.\"connection_id\", \"state\" = \
             excluded.\"state\", \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = \
             excluded.\"last_seen\" WHERE (((\"awareness_entries\".\"last_seen\" <= (now() - $6)) OR \
             (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) OR \
             (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") AND (excluded.\"state\" IS \
             NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL))) RETURNING document_id, client_id) \
             SELECT applied.document_id IS NOT NULL FROM input LEFT JOIN applied USING (document_id, \
             client_id) ORDER BY input.ord"
        );
    }

    #[test]
    fn set_many_is_one_statement_with_array_binds() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let query = set_many(plan.columns(&updates), super::super::thirty_seconds());
        assert_eq!(
            super::super::text(&query),
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, i.client_id COLLATE \"C\" \
             AS client_id, i.connection_id, i.state, i.clock_value, i.ord FROM unnest($1::text[], \
             $2::text[], $3::text[], $4::jsonb[], $5::bigint[]) WITH ORDINALITY AS i(document_id, \
             client_id, connection_id, state, clock_value, ord)), locked AS MATERIALIZED (SELECT \
             e.document_id, e.client_id, e.clock_value, e.state IS NULL AS is_leave, e.last_seen <= \
             (now() - $6) AS expired FROM \"awareness_entries\" e JOIN input USING (document_id, \
             client_id) ORDER BY e.document_id, e.client_id FOR UPDATE OF e), applied AS (INSERT INTO \
             \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \"state\", \
             \"clock_value\", \"last_seen\") SELECT document_id, client_id, connection_id, state, \
             clock_value, CURRENT_TIMESTAMP FROM input WHERE (SELECT count(*) FROM locked) >= 0 ORDER \
             BY ord ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \"connection_id\" = \
             excluded.\"connection_id\", \"state\" = excluded.\"state\", \"clock_value\" = \
             excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" WHERE \
             (((\"awareness_entries\".\"last_seen\" <= (now() - $7)) OR \
             (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) OR \
             (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") AND (excluded.\"state\" IS \
             NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL))) RETURNING document_id, client_id, \
             xmax = 0 AS inserted) SELECT applied.document_id IS NOT NULL, applied.inserted, \
             locked.clock_value, locked.is_leave, locked.expired FROM input LEFT JOIN applied USING \
             (document_id, client_id) LEFT JOIN locked USING (document_id, client_id) ORDER BY \
             input.ord"
        );
    }
}
