//! The reads: one entry, a document's live entries, the expired entries, and an operator's
//! view of a document.

use diesel::dsl::{self, AsSelect, IntoSql};
use diesel::expression::SqlLiteral;
use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Timestamptz};

use super::{expired, fresh, live, Expired, Fresh, Live};
use crate::entry::AwarenessEntry;
use crate::schema::awareness_entries::dsl::*;

/// `get`: the entry of one key unless expired (tombstones included); a primary-key lookup.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn get<'a>(document: &'a str, client: &'a str, timeout: PgInterval) -> _ {
    let fresh: Fresh = fresh(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_select();
    awareness_entries
        .find((document, client))
        .filter(fresh)
        .select(entry)
        .limit(1_i64)
}

/// `get_all`: a document's live entries by `client_id`; a primary-key range scan, so rows
/// arrive already in order.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn get_all<'a>(document: &'a str, timeout: PgInterval) -> _ {
    let live: Live = live(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_select();
    awareness_entries
        .filter(document_id.eq(document))
        .filter(live)
        .order(client_id.asc())
        .select(entry)
}

/// `count`: how many live entries a document has; a primary-key range scan.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn count<'a>(document: &'a str, timeout: PgInterval) -> _ {
    let live: Live = live(timeout);
    awareness_entries
        .filter(document_id.eq(document))
        .filter(live)
        .count()
}

/// `get_all_states`: `get_all`'s rows as (client, clock, state) with the state's `jsonb` read
/// as text (see [`LiveState`](crate::LiveState)); the same range scan.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn get_all_states<'a>(document: &'a str, timeout: PgInterval) -> _ {
    let live: Live = live(timeout);
    awareness_entries
        .filter(document_id.eq(document))
        .filter(live)
        .order(client_id.asc())
        .select((client_id, clock_value, state.assume_not_null()))
}

/// Every live entry, by (document, client): what a presence subscription of every room starts
/// from. A sequential scan, as [`get_expired`] is.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn live_everywhere(timeout: PgInterval) -> _ {
    let live: Live = live(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_select();
    awareness_entries
        .filter(live)
        .order((document_id.asc(), client_id.asc()))
        .select(entry)
}

/// `get_expired`: every expired entry by (document, client). A deliberate sequential scan: an
/// index on `last_seen` would make every heartbeat a non-HOT update (see the migration).
#[dsl::auto_type(no_type_alias)]
pub(crate) fn get_expired(timeout: PgInterval) -> _ {
    let expired: Expired = expired(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_select();
    awareness_entries
        .filter(expired)
        .order((document_id.asc(), client_id.asc()))
        .select(entry)
}

/// `inspect_document`: a document's entries by `client_id` — only the live ones, or with
/// `include_hidden` tombstones and expired ones too — each with whether it is expired and the
/// statement's `now()`, so every age is measured from the same instant.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn inspect_document<'a>(
    document: &'a str,
    include_hidden: bool,
    timeout: PgInterval,
) -> _ {
    let live: Live = live(timeout);
    let expired: Expired = expired(timeout);
    let hidden_too: IntoSql<bool, Bool> = include_hidden.into_sql::<Bool>();
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_select();
    let now: SqlLiteral<Timestamptz> = dsl::sql::<Timestamptz>("now()");
    awareness_entries
        .filter(document_id.eq(document))
        .filter(hidden_too.or(live))
        .order(client_id.asc())
        .select((entry, expired, now))
}

#[cfg(test)]
mod tests {
    use super::super::{text, thirty_seconds};
    use super::*;

    const COLUMNS: &str =
        "\"awareness_entries\".\"document_id\", \"awareness_entries\".\"client_id\", \
        \"awareness_entries\".\"connection_id\", \"awareness_entries\".\"state\", \
        \"awareness_entries\".\"clock_value\", \"awareness_entries\".\"last_seen\", \
        \"awareness_entries\".\"owner\", \"awareness_entries\".\"instance_id\"";

    #[test]
    fn get_is_a_primary_key_lookup_of_a_fresh_entry() {
        assert_eq!(
            text(&get("d", "c", thirty_seconds())),
            format!(
                "SELECT {COLUMNS} FROM \"awareness_entries\" WHERE (((\"awareness_entries\".\"document_id\" = $1) \
                 AND (\"awareness_entries\".\"client_id\" = $2)) AND (\"awareness_entries\".\"last_seen\" > \
                 (now() - $3))) LIMIT $4"
            )
        );
    }

    #[test]
    fn get_all_reads_live_entries_in_client_order() {
        assert_eq!(
            text(&get_all("d", thirty_seconds())),
            format!(
                "SELECT {COLUMNS} FROM \"awareness_entries\" WHERE ((\"awareness_entries\".\"document_id\" = $1) \
                 AND ((\"awareness_entries\".\"state\" IS NOT NULL) AND (\"awareness_entries\".\"last_seen\" > \
                 (now() - $2)))) ORDER BY \"awareness_entries\".\"client_id\" ASC"
            )
        );
    }

    #[test]
    fn count_counts_a_documents_live_entries() {
        assert_eq!(
            text(&count("d", thirty_seconds())),
            "SELECT COUNT(*) FROM \"awareness_entries\" WHERE ((\"awareness_entries\".\"document_id\" = $1) \
             AND ((\"awareness_entries\".\"state\" IS NOT NULL) AND (\"awareness_entries\".\"last_seen\" > \
             (now() - $2))))"
        );
    }

    #[test]
    fn get_expired_scans_for_expired_entries_in_key_order() {
        assert_eq!(
            text(&get_expired(thirty_seconds())),
            format!(
                "SELECT {COLUMNS} FROM \"awareness_entries\" WHERE (\"awareness_entries\".\"last_seen\" <= \
                 (now() - $1)) ORDER BY \"awareness_entries\".\"document_id\" ASC, \
                 \"awareness_entries\".\"client_id\" ASC"
            )
        );
    }

    #[test]
    fn inspect_document_adds_expiry_and_the_statements_clock() {
        assert_eq!(
            text(&inspect_document("d", true, thirty_seconds())),
            format!(
                "SELECT {COLUMNS}, (\"awareness_entries\".\"last_seen\" <= (now() - $1)), now() FROM \
                 \"awareness_entries\" WHERE ((\"awareness_entries\".\"document_id\" = $2) AND ($3 OR \
                 ((\"awareness_entries\".\"state\" IS NOT NULL) AND (\"awareness_entries\".\"last_seen\" > \
                 (now() - $4))))) ORDER BY \"awareness_entries\".\"client_id\" ASC"
            )
        );
    }
}
