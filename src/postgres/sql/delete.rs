//! The deletes: one entry, a connection's entries, and the expired entries (counted, or
//! returned so nothing expires unseen between a read and a delete).

use diesel::dsl::{self, AsSelect};
use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;

use super::{expired, fresh, Expired, Fresh};
use crate::entry::AwarenessEntry;
use crate::schema::awareness_entries::dsl::*;

/// `remove`: one entry whatever its state.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn remove<'a>(document: &'a str, client: &'a str) -> _ {
    dsl::delete(awareness_entries.find((document, client)))
}

/// `remove_all_for_connection`: every entry the connection last wrote, through the
/// `connection_id` index, returned with whether it was still fresh (expired ones are deleted
/// too, as garbage, but absent for every read, so not reported).
#[dsl::auto_type(no_type_alias)]
pub(crate) fn remove_all_for_connection<'a>(connection: &'a str, timeout: PgInterval) -> _ {
    let fresh: Fresh = fresh(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_returning();
    dsl::delete(awareness_entries.filter(connection_id.eq(connection))).returning((entry, fresh))
}

/// `prune_expired`: deletes the expired entries; the count is the statement's row count.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn prune_expired(timeout: PgInterval) -> _ {
    let expired: Expired = expired(timeout);
    dsl::delete(awareness_entries.filter(expired))
}

/// `take_expired`: deletes the expired entries and returns them, in one statement.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn take_expired(timeout: PgInterval) -> _ {
    let expired: Expired = expired(timeout);
    let entry: AsSelect<AwarenessEntry, Pg> = AwarenessEntry::as_returning();
    dsl::delete(awareness_entries.filter(expired)).returning(entry)
}

#[cfg(test)]
mod tests {
    use super::super::{text, thirty_seconds};
    use super::*;

    const RETURNING: &str =
        "\"awareness_entries\".\"document_id\", \"awareness_entries\".\"client_id\", \
        \"awareness_entries\".\"connection_id\", \"awareness_entries\".\"state\", \
        \"awareness_entries\".\"clock_value\", \"awareness_entries\".\"last_seen\", \
        \"awareness_entries\".\"owner\", \"awareness_entries\".\"instance_id\"";

    #[test]
    fn remove_deletes_one_key() {
        assert_eq!(
            text(&remove("d", "c")),
            "DELETE FROM \"awareness_entries\" WHERE ((\"awareness_entries\".\"document_id\" = $1) AND \
             (\"awareness_entries\".\"client_id\" = $2))"
        );
    }

    #[test]
    fn remove_all_for_connection_returns_entries_with_freshness() {
        assert_eq!(
            text(&remove_all_for_connection("k", thirty_seconds())),
            format!(
                "DELETE FROM \"awareness_entries\" WHERE (\"awareness_entries\".\"connection_id\" = $1) \
                 RETURNING {RETURNING}, (\"awareness_entries\".\"last_seen\" > (now() - $2))"
            )
        );
    }

    #[test]
    fn prune_and_take_delete_the_expired_entries() {
        let expired =
            "DELETE FROM \"awareness_entries\" WHERE (\"awareness_entries\".\"last_seen\" <= \
                       (now() - $1))";
        assert_eq!(text(&prune_expired(thirty_seconds())), expired);
        assert_eq!(
            text(&take_expired(thirty_seconds())),
            format!("{expired} RETURNING {RETURNING}")
        );
    }
}
