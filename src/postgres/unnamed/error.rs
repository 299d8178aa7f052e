//! tokio-postgres' errors as diesel's, the way diesel-async maps them (its mapping is
//! private), so the rest of the store sees one kind of error whichever connection ran the
//! statement: a server error keeps its message and its kind where diesel has one; anything
//! else (a closed socket, a protocol error) is `UnableToSendCommand`, a connection error.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error};
use tokio_postgres::error::{DbError, ErrorPosition, SqlState};

/// `error` as diesel's error.
pub(crate) fn from_postgres(error: tokio_postgres::Error) -> Error {
    let Some(db) = error.as_db_error() else {
        return Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new(error.to_string()),
        );
    };
    let kind = match *db.code() {
        SqlState::UNIQUE_VIOLATION => DatabaseErrorKind::UniqueViolation,
        SqlState::FOREIGN_KEY_VIOLATION => DatabaseErrorKind::ForeignKeyViolation,
        SqlState::RESTRICT_VIOLATION => DatabaseErrorKind::RestrictViolation,
        SqlState::EXCLUSION_VIOLATION => DatabaseErrorKind::ExclusionViolation,
        SqlState::T_R_SERIALIZATION_FAILURE => DatabaseErrorKind::SerializationFailure,
        SqlState::READ_ONLY_SQL_TRANSACTION => DatabaseErrorKind::ReadOnlyTransaction,
        SqlState::NOT_NULL_VIOLATION => DatabaseErrorKind::NotNullViolation,
        SqlState::CHECK_VIOLATION => DatabaseErrorKind::CheckViolation,
        _ => DatabaseErrorKind::Unknown,
    };
    Error::DatabaseError(kind, Box::new(ServerError(db.clone())))
}

/// A server's error report, as diesel's error information.
struct ServerError(DbError);

impl DatabaseErrorInformation for ServerError {
    fn message(&self) -> &str {
        self.0.message()
    }

    fn details(&self) -> Option<&str> {
        self.0.detail()
    }

    fn hint(&self) -> Option<&str> {
        self.0.hint()
    }

    fn table_name(&self) -> Option<&str> {
        self.0.table()
    }

    fn column_name(&self) -> Option<&str> {
        self.0.column()
    }

    fn constraint_name(&self) -> Option<&str> {
        self.0.constraint()
    }

    fn statement_position(&self) -> Option<i32> {
        self.0.position().and_then(|p| match *p {
            ErrorPosition::Original(position) | ErrorPosition::Internal { position, .. } => {
                position.try_into().ok()
            }
        })
    }
}

/// What an operation that had no answer within the statement timeout fails with, after the
/// connection sent a cancel request (the server's own error when the cancel took effect; this
/// when not even that came back: the connection is then discarded).
pub(crate) fn timed_out(limit: std::time::Duration, answered: Option<Error>) -> Error {
    let message = format!(
        "canceling statement due to statement timeout ({} ms; behind a transaction pooler the \
         store measures it and sends a cancel request)",
        limit.as_millis()
    );
    match answered {
        // The cancel took effect: the statement failed on the server, which says so.
        Some(Error::DatabaseError(_, info)) if is_cancel(info.message()) => {
            Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message))
        }
        // The statement ended some other way in the meantime.
        Some(other) => other,
        None => Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new(format!("{message}; no answer to it either")),
        ),
    }
}

fn is_cancel(message: &str) -> bool {
    message.starts_with("canceling statement")
}
