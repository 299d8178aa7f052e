//! `set_many`'s statements: one round of distinct keys as one upsert over `unnest`, and the
//! batch fast path for a round of likely heartbeats; both take their row locks in key order.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Interval, Jsonb, Nullable, SmallInt, Text};

use super::upsert::{walk_commit_setting, WriteContext, INSERT_COLUMNS, UPSERT};
use crate::postgres::sql::{fresh_sql, live_sql};

/// Column arrays of a batch: one element per distinct key, sorted by key.
#[derive(Debug, Default)]
pub(crate) struct BatchColumns<'a> {
    pub(crate) document_ids: Vec<&'a str>,
    pub(crate) client_ids: Vec<&'a str>,
    pub(crate) connection_ids: Vec<&'a str>,
    pub(crate) states: Vec<&'a Option<serde_json::Value>>,
    pub(crate) clocks: Vec<i64>,
    pub(crate) owners: Vec<Option<&'a str>>,
}

impl BatchColumns<'_> {
    /// `unnest(…) WITH ORDINALITY AS i(document_id, client_id, connection_id, state,
    /// clock_value, owner, ord)`: the batch as rows, numbered from 1 in column order.
    fn walk_unnest<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.document_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.client_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.connection_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&self.states)?;
        out.push_sql("::jsonb[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.clocks)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.owners)?;
        out.push_sql(
            "::text[]) WITH ORDINALITY \
             AS i(document_id, client_id, connection_id, state, clock_value, owner, ord)",
        );
        Ok(())
    }
}

/// A batch of distinct keys as one statement (`set_many`, one round of it: see
/// `write/plan.rs`): the upsert of `set` over `unnest` of column arrays, in key order (so
/// its row locks are taken in key order, as every write path's), and the outcome codes. One
/// row per key, in key order: the code.
#[derive(Debug)]
pub(crate) struct SetMany<'a> {
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
}

/// See [`SetMany`].
pub(crate) fn set_many_distinct<'a>(
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
) -> SetMany<'a> {
    SetMany { columns, context }
}

// The batch statement's SQL text never changes (the same binds whatever the batch size), so
// one prepared statement per connection serves every batch.
static_query_id!(SetMany => SetManyId);

impl diesel::query_builder::Query for SetMany<'_> {
    type SqlType = SmallInt;
}

impl QueryFragment<Pg> for SetMany<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.columns;
        let x = &self.context;
        // The batch as rows, ids in byte order (`COLLATE "C"`, as the table's), numbered.
        out.push_sql(
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, \
             i.client_id COLLATE \"C\" AS client_id, i.connection_id COLLATE \"C\" AS connection_id, \
             i.state, i.clock_value, i.owner COLLATE \"C\" AS owner, i.ord FROM ",
        );
        c.walk_unnest(&mut out)?;
        out.push_sql(
            "), \
             p AS (SELECT ",
        );
        out.push_bind_param::<Interval, _>(&x.timeout)?;
        out.push_sql("::interval AS timeout, ");
        out.push_bind_param::<Nullable<Text>, _>(&x.instance_id)?;
        out.push_sql("::text COLLATE \"C\" AS instance_id, ");
        out.push_bind_param::<Nullable<BigInt>, _>(&x.max_document)?;
        out.push_sql("::bigint AS max_document, ");
        out.push_bind_param::<Nullable<BigInt>, _>(&x.max_connection)?;
        out.push_sql("::bigint AS max_connection, ");
        walk_commit_setting(x, &mut out)?;
        out.push_sql(concat!(
            "), ",
            // Rule 3: which rows join, and how many live participants their documents and
            // connections hold (one count per document and per connection).
            "joining AS (SELECT input.*, input.state IS NOT NULL \
             AND (p.max_document IS NOT NULL OR p.max_connection IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM awareness_entries l \
             WHERE l.document_id = input.document_id AND l.client_id = input.client_id AND ",
            live_sql!("l.", "p.timeout"),
            ") AS joins FROM input, p), \
             in_document AS (SELECT j.document_id, n.live \
             FROM (SELECT DISTINCT document_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries d, p \
             WHERE d.document_id = j.document_id AND ",
            live_sql!("d.", "p.timeout"),
            ") n), \
             on_connection AS (SELECT j.connection_id, n.live \
             FROM (SELECT DISTINCT connection_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries c, p \
             WHERE c.connection_id = j.connection_id AND ",
            live_sql!("c.", "p.timeout"),
            ") n), ",
            // The n-th join of a document (or connection) in the batch needs room for n.
            "counted AS (SELECT j.*, \
             j.joins AND p.max_document IS NOT NULL AND coalesce(d.live, 0) \
             + count(*) FILTER (WHERE j.joins) OVER (PARTITION BY j.document_id ORDER BY j.ord) \
             > p.max_document AS document_full, \
             j.joins AND p.max_connection IS NOT NULL AND coalesce(c.live, 0) \
             + count(*) FILTER (WHERE j.joins) OVER (PARTITION BY j.connection_id ORDER BY j.ord) \
             > p.max_connection AS connection_full \
             FROM joining j CROSS JOIN p \
             LEFT JOIN in_document d ON d.document_id = j.document_id \
             LEFT JOIN on_connection c ON c.connection_id = j.connection_id), "
        ));
        out.push_sql("applied AS (");
        out.push_sql(INSERT_COLUMNS);
        out.push_sql(
            "SELECT u.document_id, u.client_id, u.connection_id, u.state, u.clock_value, \
             CURRENT_TIMESTAMP, u.owner, p.instance_id FROM counted u, p \
             WHERE NOT u.document_full AND NOT u.connection_full ",
        );
        out.push_sql("ORDER BY u.ord");
        out.push_sql(UPSERT);
        out.push_sql(concat!(
            " RETURNING document_id, client_id) \
             SELECT (CASE WHEN a.document_id IS NOT NULL THEN 0 ",
            refused_by_row!("u"),
            "WHEN u.document_full THEN 3 WHEN u.connection_full THEN 4 ELSE 1 END)::smallint \
             FROM counted u CROSS JOIN p",
            " LEFT JOIN applied a ON a.document_id = u.document_id AND a.client_id = u.client_id \
             LEFT JOIN awareness_entries f ON f.document_id = u.document_id \
             AND f.client_id = u.client_id AND ",
            fresh_sql!("f.", "p.timeout"),
            " ORDER BY u.ord",
        ));
        Ok(())
    }
}

/// The fast path of a batch whose keys are distinct and all likely heartbeats (see
/// `write/known.rs`): `set`'s fast path over `unnest` — one `UPDATE` of the keys' live rows that
/// the writer may write and whose clocks it beats (rules 1, 2 and 4; no limit can refuse an
/// update of a live participant). Returns the position (1-based, in the order of the
/// columns) of every row it updated; the caller sends the others through the full batch
/// statement.
#[derive(Debug)]
pub(crate) struct SetManyFast<'a> {
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
}

/// See [`SetManyFast`].
pub(crate) fn set_many_fast<'a>(
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
) -> SetManyFast<'a> {
    SetManyFast { columns, context }
}

static_query_id!(SetManyFast => SetManyFastId);

/// The batch fast path's rules on a row `e` and its update `i` (`set`'s fast path, over rows):
/// live (a leave may also update a fresh tombstone), owned by the writer or nobody, beaten on
/// clocks.
macro_rules! fast_batch_rules {
    () => {
        "e.last_seen > now() - p.timeout AND (e.state IS NOT NULL OR i.state IS NULL) \
         AND (e.owner IS NULL OR e.owner = i.owner COLLATE \"C\") \
         AND (e.clock_value < i.clock_value OR (e.clock_value = i.clock_value \
         AND i.state IS NULL AND e.state IS NOT NULL))"
    };
}

impl diesel::query_builder::Query for SetManyFast<'_> {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for SetManyFast<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.columns;
        let x = &self.context;
        // The rows are locked first, in key order (`l`), then updated: an `UPDATE … FROM`
        // locks in the order of its join, which the planner picks.
        out.push_sql("WITH i AS (SELECT * FROM ");
        c.walk_unnest(&mut out)?;
        out.push_sql("), p AS (SELECT ");
        out.push_bind_param::<Interval, _>(&x.timeout)?;
        out.push_sql("::interval AS timeout, ");
        walk_commit_setting(x, &mut out)?;
        out.push_sql(concat!(
            "), \
             l AS MATERIALIZED (SELECT e.document_id, e.client_id, i.ord \
             FROM awareness_entries e JOIN i ON e.document_id = i.document_id COLLATE \"C\" \
             AND e.client_id = i.client_id COLLATE \"C\" CROSS JOIN p WHERE ",
            fast_batch_rules!(),
            " ORDER BY e.document_id, e.client_id FOR UPDATE OF e) \
             UPDATE awareness_entries e SET connection_id = i.connection_id, state = i.state, \
             clock_value = i.clock_value, last_seen = CURRENT_TIMESTAMP, owner = i.owner, \
             instance_id = ",
        ));
        out.push_bind_param::<Nullable<Text>, _>(&x.instance_id)?;
        out.push_sql(concat!(
            " FROM l JOIN i ON i.ord = l.ord CROSS JOIN p \
             WHERE e.document_id = l.document_id AND e.client_id = l.client_id AND ",
            fast_batch_rules!(),
            " RETURNING i.ord"
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::upsert::test_context as context;
    use super::*;
    use crate::entry::AwarenessUpdate;

    /// The batch statement carries the same upsert as `set`; the batch fast path locks its
    /// rows in key order before it updates them.
    #[test]
    fn batch_statements_share_the_upsert_and_lock_in_key_order() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let columns = || crate::postgres::write::plan::columns(&updates, &[0]);
        let batch = crate::postgres::sql::text(&set_many_distinct(columns(), context()));
        assert!(batch.contains(UPSERT), "{batch}");
        assert!(batch.contains(INSERT_COLUMNS), "{batch}");
        assert!(batch.contains("ORDER BY u.ord"), "{batch}");
        assert!(batch.contains("$10::bigint AS max_connection"));
        let fast = crate::postgres::sql::text(&set_many_fast(columns(), context()));
        assert!(
            fast.contains("ORDER BY e.document_id, e.client_id FOR UPDATE OF e) UPDATE"),
            "{fast}"
        );
    }
}
