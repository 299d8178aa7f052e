//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use crate::schema_report::SchemaReport;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The input field an [`Error::InvalidInput`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `document_id`
    DocumentId,
    /// `client_id`
    ClientId,
    /// `connection_id`
    ConnectionId,
    /// `clock`
    Clock,
    /// `state`
    State,
    /// `owner`
    Owner,
    /// `instance_id`
    InstanceId,
}

impl Field {
    /// The field's name as it appears in the API and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::DocumentId => "document_id",
            Field::ClientId => "client_id",
            Field::ConnectionId => "connection_id",
            Field::Clock => "clock",
            Field::State => "state",
            Field::Owner => "owner",
            Field::InstanceId => "instance_id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than the limit, in bytes of UTF-8.
    #[error("is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// Length found, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The text contains U+0000, which PostgreSQL's `text` and `jsonb` cannot store.
    #[error("contains a NUL character (U+0000), which PostgreSQL cannot store")]
    ContainsNul,
    /// The clock is below zero.
    #[error("must be >= 0, got {0}")]
    Negative(i64),
    /// The state's JSON text is larger than the configured limit.
    #[error("is {size} bytes of JSON; the limit is {max} bytes")]
    TooLarge {
        /// Size found, in bytes of compact JSON.
        size: usize,
        /// The configured limit, in bytes.
        max: usize,
    },
    /// The state nests arrays/objects deeper than the limit.
    #[error("nests deeper than {max} levels")]
    TooDeep {
        /// The limit, in levels.
        max: usize,
    },
}

/// Every failure of this crate.
///
/// `Display` and `Debug` print the same sentence, saying what to do, so that
/// `fn main() -> Result<(), Error>` reports a failure readably; `{:#?}` shows the variant and
/// its fields for developers.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input was refused before reaching storage; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field.
        field: Field,
        /// Why.
        reason: InvalidReason,
    },
    /// The database schema is not what this version of the crate expects.
    #[error(
        "the awareness table does not match this version of synckit-awareness: {0}; \
         run the migrations (`synckit-awareness migrate`, `diesel migration run`, \
         or `PostgresAwarenessStore::migrate`)"
    )]
    SchemaMismatch(SchemaReport),
    /// Every pooled connection stayed busy for the pool's whole connection timeout (when
    /// connections cannot be opened, the error is [`Error::Connection`] instead).
    #[error(
        "every pooled PostgreSQL connection stayed busy for {0:?}; look for slow queries or \
         raise the pool size"
    )]
    PoolTimeout(Duration),
    /// A connection to PostgreSQL could not be opened or was lost.
    #[error("cannot reach PostgreSQL: {0}")]
    Connection(String),
    /// The server takes no writes: a standby (in recovery), or a primary set read-only (one
    /// being demoted after a failover). Nothing was written. The pool does not keep
    /// connections to such a server: each new one is checked as it opens.
    #[error(
        "PostgreSQL is read-only here ({0}); nothing was written. The store needs the primary: \
         list every host in the URL with `target_session_attrs=read-write`, or use a name that \
         follows the primary"
    )]
    ReadOnly(String),
    /// A prepared statement was missing or already there (SQLSTATE 26000, 42P05): the
    /// statements of one connection reached different server connections, which is what a
    /// transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supavisor, RDS Proxy)
    /// does to a store not told about it. Nothing was written by the failed statement. Not a
    /// connection error: retrying does not help, the setting does.
    #[error(
        "a prepared statement went missing or collided ({0}): a transaction-mode pooler is \
         probably between the store and PostgreSQL; set `PostgresOptions::transaction_pooler` \
         (SYNCKIT__AWARENESS__POSTGRES__TRANSACTION_POOLER=true, relay `--transaction-pooler`)"
    )]
    PreparedStatement(String),
    /// PostgreSQL answered with an error.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// Applying or reading migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The settings are invalid.
    #[error("invalid awareness configuration: {0}")]
    Config(String),
    /// A y-protocols awareness update or message is malformed or exceeds the decode limits;
    /// nothing was applied.
    #[error("malformed y-protocols awareness data: {0}")]
    Codec(#[from] crate::y_protocols::error::CodecError),
    /// The store runs as an instance whose lease is not known to be valid: its renewals
    /// failed for longer than the lease (the process was paused, or lost the database, and
    /// other instances may have removed its entries), or it was shut down. Nothing was
    /// written; writes resume once a renewal succeeds (not after a shutdown).
    #[error("instance {instance_id} holds no valid lease ({reason}); nothing was written")]
    LeaseLost {
        /// The instance.
        instance_id: String,
        /// Why: `renewals failed for longer than the lease` or `shut down`.
        reason: &'static str,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return write!(f, "{self}");
        }
        match self {
            Error::InvalidInput { field, reason } => f
                .debug_struct("InvalidInput")
                .field("field", field)
                .field("reason", reason)
                .finish(),
            Error::SchemaMismatch(report) => f.debug_tuple("SchemaMismatch").field(report).finish(),
            Error::PoolTimeout(waited) => f.debug_tuple("PoolTimeout").field(waited).finish(),
            Error::Connection(reason) => f.debug_tuple("Connection").field(reason).finish(),
            Error::ReadOnly(reason) => f.debug_tuple("ReadOnly").field(reason).finish(),
            Error::PreparedStatement(reason) => {
                f.debug_tuple("PreparedStatement").field(reason).finish()
            }
            Error::Database(e) => f.debug_tuple("Database").field(e).finish(),
            Error::Migration(reason) => f.debug_tuple("Migration").field(reason).finish(),
            Error::Config(reason) => f.debug_tuple("Config").field(reason).finish(),
            Error::Codec(e) => f.debug_tuple("Codec").field(e).finish(),
            Error::LeaseLost {
                instance_id,
                reason,
            } => f
                .debug_struct("LeaseLost")
                .field("instance_id", instance_id)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// The server's messages for SQLSTATE 26000 and 42P05 on prepared statements (diesel-async
/// passes them on without their code): `prepared statement "s12" does not exist`,
/// `… already exists`, `unnamed prepared statement does not exist`.
fn is_prepared_statement_error(message: &str) -> bool {
    message.contains("prepared statement")
        && (message.ends_with("does not exist") || message.ends_with("already exists"))
}

/// [`Error::LeaseLost`]'s reason after a shutdown (every other reason passes by itself:
/// [`Error::passes_by_itself`]).
pub(crate) const LEASE_SHUT_DOWN: &str = "shut down";

/// What a connection's set-up raises on a read-only server (`sql::session::REFUSE_READ_ONLY`);
/// the pool's connect error carries it, and [`Error::ReadOnly`] is made from it.
pub(crate) const READ_ONLY_SERVER: &str = "the server is read-only";

impl Error {
    pub(crate) fn invalid(field: Field, reason: InvalidReason) -> Self {
        Error::InvalidInput { field, reason }
    }

    /// A write refused because the server is read-only (SQLSTATE 25006, or the connection
    /// check's message) becomes [`Error::ReadOnly`], a lost or colliding prepared statement
    /// [`Error::PreparedStatement`]; anything else stays as it is.
    pub(crate) fn typed(self) -> Self {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        match self {
            Error::Database(DieselError::DatabaseError(
                DatabaseErrorKind::ReadOnlyTransaction,
                info,
            )) => Error::ReadOnly(info.message().to_owned()),
            Error::Connection(reason) if reason.contains(READ_ONLY_SERVER) => {
                Error::ReadOnly(reason)
            }
            Error::Database(DieselError::DatabaseError(_, info))
                if is_prepared_statement_error(info.message()) =>
            {
                Error::PreparedStatement(info.message().to_owned())
            }
            other => other,
        }
    }

    /// A failure that passes by itself: the database unreachable
    /// ([`is_connection_error`](Self::is_connection_error)), or the instance's lease not renewed
    /// yet (not after a shutdown). The presence engine keeps a connection open through these.
    pub(crate) fn passes_by_itself(&self) -> bool {
        self.is_connection_error()
            || matches!(self, Error::LeaseLost { reason, .. } if *reason != LEASE_SHUT_DOWN)
    }

    /// True when the failure is about reaching the database (pool timeout, lost or refused
    /// connection, server shutting down or restarting): retrying later can succeed without
    /// changing the input.
    /// A read-only server counts: after a failover the URL leads to the new primary.
    pub fn is_connection_error(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        match self {
            Error::PoolTimeout(_) | Error::Connection(_) | Error::ReadOnly(_) => true,
            Error::Database(DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => true,
            // SQLSTATE 57P01-57P03 (admin/crash shutdown, cannot connect now) reach diesel as
            // `Unknown` without their code; their server messages are the only sign left.
            Error::Database(DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)) => {
                let message = info.message();
                message.starts_with("terminating connection")
                    || message.starts_with("the database system is")
            }
            _ => false,
        }
    }
}
