//! What happens when PostgreSQL breaks a deadlock or a serialization failure by failing a
//! statement (`40P01`, `40001`): the statement is sent again, a bounded number of times, and
//! counted ([`WRITE_RETRIES`](crate::metrics::WRITE_RETRIES)).
//!
//! Every write path takes its row locks in key order (docs/ARCHITECTURE.md, "Row locks in one
//! order"), so such a failure should not happen between this crate's own statements; this
//! covers what is left (a writer outside the crate, a lock order PostgreSQL takes by itself).
//! Sending a write again cannot apply an update twice: every write is conditional on the
//! clock, and the failed statement wrote nothing.
//!
//! Where: each statement on its own ([`retry_statement!`]), since the statements of one
//! operation commit one by one (a second attempt of the whole operation would find the first
//! statement's rows written and report them stale). Behind a transaction pooler too: there
//! every statement is its own transaction (`unnamed/`).

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Attempts in all, the first included.
pub(crate) const ATTEMPTS: u32 = 5;

/// Which failure `error` is, when it is one a second attempt can get past: `"deadlock"` or
/// `"serialization"`.
pub(crate) fn conflict(error: &DieselError) -> Option<&'static str> {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            Some("serialization")
        }
        // 40P01 reaches diesel-async without its SQLSTATE (kind `Unknown`); its message is
        // the one way to tell it (an English-language server; see `Error::is_connection_error`).
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
            if info.message().starts_with("deadlock detected") =>
        {
            Some("deadlock")
        }
        _ => None,
    }
}

/// Counts a retry and waits a little before it: a few milliseconds, growing with `attempt`,
/// spread so that the writers that collided do not collide again.
pub(crate) async fn before_retry(kind: &'static str, attempt: u32) {
    ::metrics::counter!(crate::metrics::WRITE_RETRIES, "kind" => kind).increment(1);
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros() % 1000);
    let wait = Duration::from_micros(u64::from(attempt) * 1000 + u64::from(spread));
    tokio::time::sleep(wait).await;
}

/// Evaluates `$statement` (an expression ending in `.await` that returns diesel's
/// `QueryResult`) again after a deadlock or serialization failure, up to [`ATTEMPTS`] times
/// in all, unless `$conn` is inside a transaction (the failure aborted it; the caller's
/// transaction is retried as a whole instead).
macro_rules! retry_statement {
    ($conn:expr, $statement:expr) => {{
        let mut attempt = 1;
        loop {
            match $statement {
                Err(error)
                    if attempt < $crate::postgres::write::retry::ATTEMPTS
                        && $crate::postgres::write::retry::outside_transaction($conn) =>
                {
                    match $crate::postgres::write::retry::conflict(&error) {
                        Some(kind) => {
                            $crate::postgres::write::retry::before_retry(kind, attempt).await;
                            attempt += 1;
                        }
                        None => break Err(error),
                    }
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retry_statement;

/// True when `conn` is not inside a transaction (a statement on it commits by itself).
pub(crate) fn outside_transaction<C: crate::postgres::pool::StoreConn>(conn: &mut C) -> bool {
    conn.outside_transaction()
}
