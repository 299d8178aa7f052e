//! `set`'s two statements: the fast path (the heartbeat, one `UPDATE`) and the full statement
//! (every rule and the outcome code in one statement), each written once and cut at its binds
//! once per process (see the parent module).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Interval, Jsonb, Nullable, SmallInt, Text};

use super::upsert::{WriteContext, INSERT_COLUMNS, UPSERT};
use crate::entry::AwarenessUpdate;
use crate::postgres::sql::{fresh_sql, live_sql};

/// What a placeholder of a `set` statement binds.
#[derive(Debug, Clone, Copy)]
enum Bind {
    Document,
    Client,
    Connection,
    State,
    Clock,
    Timeout,
    Owner,
    Instance,
    MaxDocument,
    MaxConnection,
    /// [`WriteContext::synchronous_commit`] (`upsert::COMMIT_SETTING`).
    Commit,
}

/// `set`'s full statement (see the module docs): rules 1-3, the write and the outcome code in
/// one statement, for every case the fast path ([`FAST_SQL`]) leaves. Binds: `$1` document, `$2` client, `$3`
/// connection, `$4` state, `$5` clock, `$6` timeout, `$7` owner, `$8` instance, `$9` and `$10`
/// the limits per document and per connection (NULL: none), `$11` and `$12` the
/// `synchronous_commit` of its transaction (NULL: the session's).
const FULL_SQL: &str = concat!(
    "WITH p AS (SELECT $1::text COLLATE \"C\" AS document_id, $2::text COLLATE \"C\" AS client_id, \
     $3::text COLLATE \"C\" AS connection_id, $4::jsonb AS state, $5::bigint AS clock_value, \
     $6::interval AS timeout, $7::text COLLATE \"C\" AS owner, $8::text COLLATE \"C\" AS instance_id, \
     $9::bigint AS max_document, $10::bigint AS max_connection, ",
    // upsert::COMMIT_SETTING
    "($11::text IS NULL OR set_config('synchronous_commit', $12::text, true) IS NOT NULL) \
     AS commit_setting), ",
    // The key's fresh row, read once: whether the update joins, and why it was refused.
    "f AS MATERIALIZED (SELECT f.document_id, f.owner, f.clock_value, f.state \
     FROM awareness_entries f, p WHERE f.document_id = p.document_id \
     AND f.client_id = p.client_id AND ",
    fresh_sql!("f.", "p.timeout"),
    "), ",
    // Rule 5: a leave, a client already live, or room in the document and the connection.
    "joining AS MATERIALIZED (SELECT p.state IS NOT NULL \
     AND (p.max_document IS NOT NULL OR p.max_connection IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM f WHERE f.state IS NOT NULL) AS joins FROM p), \
     room AS (SELECT NOT joining.joins OR p.max_document IS NULL \
     OR (SELECT count(*) FROM awareness_entries d WHERE d.document_id = p.document_id AND ",
    live_sql!("d.", "p.timeout"),
    ") < p.max_document AS in_document, NOT joining.joins OR p.max_connection IS NULL \
     OR (SELECT count(*) FROM awareness_entries c WHERE c.connection_id = p.connection_id AND ",
    live_sql!("c.", "p.timeout"),
    ") < p.max_connection AS on_connection FROM p, joining), \
     applied AS (",
);

/// The rest of [`FULL_SQL`] after [`INSERT_COLUMNS`].
const FULL_SQL_TAIL: &str = concat!(
    "SELECT p.document_id, p.client_id, p.connection_id, p.state, p.clock_value, \
     CURRENT_TIMESTAMP, p.owner, p.instance_id FROM p, room \
     WHERE room.in_document AND room.on_connection",
    "{UPSERT}",
    " RETURNING 1) \
     SELECT (CASE WHEN EXISTS (SELECT 1 FROM applied) THEN 0 ",
    refused_by_row!("p"),
    "WHEN NOT room.in_document THEN 3 WHEN NOT room.on_connection THEN 4 ELSE 1 END)::smallint \
     FROM p CROSS JOIN room LEFT JOIN f ON true"
);

/// The whole full statement, built once.
static FULL_TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{FULL_SQL}{INSERT_COLUMNS}{}",
        FULL_SQL_TAIL.replace("{UPSERT}", UPSERT)
    )
});

/// The value of each placeholder of [`FULL_TEXT`], `$1` first.
const FULL_BINDS: [Bind; 12] = {
    use Bind::*;
    [
        Document,
        Client,
        Connection,
        State,
        Clock,
        Timeout,
        Owner,
        Instance,
        MaxDocument,
        MaxConnection,
        Commit,
        Commit,
    ]
};

/// [`FULL_TEXT`] cut at its binds, once.
static FULL_PIECES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| cut_at_binds(&FULL_TEXT, FULL_BINDS.len()));

/// `set`'s fast path, the heartbeat: one `UPDATE` of the key's live row (a leave may also
/// update a fresh tombstone), applied when its owner is the writer's (or nobody) and it loses
/// on clocks — rules 1 and 2. Limits never refuse such an update (it adds no participant), so
/// none is counted. Returns the row count: 1 applied; 0 means the full statement decides
/// ([`FULL_SQL`]: an insert, a join, an expired row, or a refusal and its reason). `$14` and
/// `$15`: the `synchronous_commit` of its transaction (NULL: the session's; see
/// `upsert::COMMIT_SETTING`), set as the row is updated.
const FAST_SQL: &str = concat!(
    "UPDATE awareness_entries SET connection_id = $1, state = $2, \
     clock_value = $3, last_seen = CURRENT_TIMESTAMP, owner = $4, instance_id = $5 \
     WHERE document_id = $6 AND client_id = $7 AND ",
    fresh_sql!("", "$8::interval"),
    " AND (state IS NOT NULL OR $9::jsonb IS NULL) AND (owner IS NULL OR owner = $10) \
     AND (clock_value < $11 OR (clock_value = $12 AND $13::jsonb IS NULL AND state IS NOT NULL)) \
     AND ($14::text IS NULL OR set_config('synchronous_commit', $15::text, true) IS NOT NULL)"
);

/// The value of each placeholder of [`FAST_SQL`], `$1` first.
const FAST_BINDS: [Bind; 15] = {
    use Bind::*;
    [
        Connection, State, Clock, Owner, Instance, Document, Client, Timeout, State, Owner, Clock,
        Clock, State, Commit, Commit,
    ]
};

/// [`FAST_SQL`] cut at its binds, once.
static FAST_PIECES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| cut_at_binds(FAST_SQL, FAST_BINDS.len()));

/// `set`'s fast path (see [`FAST_SQL`]); `execute` returns 1 when applied.
pub(crate) fn set_fast<'a>(update: &'a AwarenessUpdate, context: WriteContext<'a>) -> SetFast<'a> {
    SetFast(Statement { update, context })
}

/// `set`'s full statement (see [`FULL_SQL`]); loads the outcome code.
pub(crate) fn set_full<'a>(update: &'a AwarenessUpdate, context: WriteContext<'a>) -> SetFull<'a> {
    SetFull(Statement { update, context })
}

/// One update and its context, written into a statement cut at its binds.
#[derive(Debug)]
struct Statement<'a> {
    update: &'a AwarenessUpdate,
    context: WriteContext<'a>,
}

impl Statement<'_> {
    fn walk<'b>(
        &'b self,
        pieces: &'b [String],
        binds: &[Bind],
        mut out: AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        let Some((last, pieces)) = pieces.split_last() else {
            return Err(diesel::result::Error::QueryBuilderError(
                "a set statement's SQL text could not be built".into(),
            ));
        };
        let (u, c) = (self.update, &self.context);
        for (piece, bind) in pieces.iter().zip(binds) {
            out.push_sql(piece);
            match bind {
                Bind::Document => out.push_bind_param::<Text, _>(&u.document_id)?,
                Bind::Client => out.push_bind_param::<Text, _>(&u.client_id)?,
                Bind::Connection => out.push_bind_param::<Text, _>(&u.connection_id)?,
                Bind::State => out.push_bind_param::<Nullable<Jsonb>, _>(&u.state)?,
                Bind::Clock => out.push_bind_param::<BigInt, _>(&u.clock)?,
                Bind::Timeout => out.push_bind_param::<Interval, _>(&c.timeout)?,
                Bind::Owner => out.push_bind_param::<Nullable<Text>, _>(&u.owner)?,
                Bind::Instance => out.push_bind_param::<Nullable<Text>, _>(&c.instance_id)?,
                Bind::MaxDocument => out.push_bind_param::<Nullable<BigInt>, _>(&c.max_document)?,
                Bind::MaxConnection => {
                    out.push_bind_param::<Nullable<BigInt>, _>(&c.max_connection)?
                }
                Bind::Commit => out.push_bind_param::<Nullable<Text>, _>(&c.synchronous_commit)?,
            }
        }
        out.push_sql(last);
        Ok(())
    }
}

/// [`set_fast`]'s statement.
#[derive(Debug)]
pub(crate) struct SetFast<'a>(Statement<'a>);

/// [`set_full`]'s statement.
#[derive(Debug)]
pub(crate) struct SetFull<'a>(Statement<'a>);

static_query_id!(SetFast => SetFastId, SetFull => SetFullId);

impl diesel::query_builder::Query for SetFull<'_> {
    type SqlType = SmallInt;
}

impl QueryFragment<Pg> for SetFast<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk(&FAST_PIECES, &FAST_BINDS, out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl QueryFragment<Pg> for SetFull<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk(&FULL_PIECES, &FULL_BINDS, out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

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

#[cfg(test)]
mod tests {
    use super::super::upsert::test_context as context;
    use super::*;

    #[test]
    fn set_texts_have_their_binds_in_order() {
        assert_eq!(FAST_PIECES.len(), FAST_BINDS.len() + 1);
        assert_eq!(FULL_PIECES.len(), FULL_BINDS.len() + 1);
        // The same upsert as the batch statement's (set_many.rs).
        assert!(FULL_TEXT.contains(UPSERT));
        assert!(FULL_TEXT.contains(INSERT_COLUMNS));
        // The batch statements' commit setting, said here with numbered placeholders.
        let [open, middle, close] = super::super::upsert::COMMIT_SETTING;
        assert!(FULL_TEXT.contains(&format!("{open}$11{middle}$12{close}")));
        assert!(cut_at_binds("a $1 b $2", 3).is_empty());
        assert!(cut_at_binds("a $10", 1).is_empty());
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        assert_eq!(
            crate::postgres::sql::text(&set_fast(&update, context())),
            FAST_SQL
        );
        assert_eq!(
            crate::postgres::sql::text(&set_full(&update, context())),
            *FULL_TEXT
        );
    }

    /// Every use of a value is bound to that value.
    #[test]
    fn set_binds_match_what_each_placeholder_stands_for() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, Some(serde_json::json!(1)))
            .with_owner(Some("owner".into()));
        for (debug, binds) in [
            (
                diesel::debug_query::<Pg, _>(&set_fast(&update, context())).to_string(),
                &FAST_BINDS[..],
            ),
            (
                diesel::debug_query::<Pg, _>(&set_full(&update, context())).to_string(),
                &FULL_BINDS[..],
            ),
        ] {
            let values = debug.split(" -- binds: ").nth(1).unwrap_or_default();
            let uses = |want: fn(&Bind) -> bool| binds.iter().filter(|b| want(b)).count();
            assert_eq!(
                values.matches("\"doc\"").count(),
                uses(|b| matches!(b, Bind::Document))
            );
            assert_eq!(
                values.matches("\"owner\"").count(),
                uses(|b| matches!(b, Bind::Owner))
            );
            assert_eq!(
                values.matches("\"conn\"").count(),
                uses(|b| matches!(b, Bind::Connection))
            );
        }
    }

    /// The fast path's conditions are rules 1 and 2 for a live row (and a leave over a fresh
    /// tombstone), as the full statement's upsert says them.
    #[test]
    fn the_fast_path_says_the_upserts_rules() {
        for rule in [
            "(owner IS NULL OR owner = $10)",
            "(clock_value < $11 OR (clock_value = $12 AND $13::jsonb IS NULL AND state IS NOT NULL))",
            "last_seen > now() - $8::interval",
        ] {
            assert!(FAST_SQL.contains(rule), "{rule}");
        }
        assert!(UPSERT.contains(
            "(awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner)"
        ));
    }
}
