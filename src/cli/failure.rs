//! A failed command: one line saying what went wrong, a hint saying what to do, an exit code.

use std::process::ExitCode;

use synckit_awareness::{DatabaseUrl, Error};

/// Exit code when a problem was found (schema differences, a database error).
pub(crate) const PROBLEM: u8 = 1;
/// Exit code when the database cannot be reached or the invocation is wrong.
pub(crate) const UNUSABLE: u8 = 2;

const CONNECTION_HINT: &str =
    "check --database-url (or DATABASE_URL / SYNCKIT__AWARENESS__POSTGRES__URL) \
     and that PostgreSQL accepts connections from here";

const MISSING_DATABASE_HINT: &str =
    "the server is up but has no such database: create it (`createdb <name>` or \
     `CREATE DATABASE <name>`), or fix the database name at the end of the URL";

const PASSWORD_HINT: &str =
    "the server refused the user or password in the URL: check both, and the server's pg_hba.conf";

#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// Bad usage or an unreachable database: exit code 2.
    pub(crate) fn usage(message: impl Into<String>, hint: Option<&str>) -> Self {
        Self::new(UNUSABLE, message.into(), hint)
    }

    /// Something went wrong after connecting: exit code 1.
    pub(crate) fn problem(message: impl Into<String>) -> Self {
        Self::new(PROBLEM, message.into(), None)
    }

    /// The database cannot be reached: exit code 2, with the hint that fits the reason.
    pub(crate) fn connection(message: impl Into<String>) -> Self {
        let message = message.into();
        let hint = if message.contains("database \"") && message.contains("does not exist") {
            MISSING_DATABASE_HINT
        } else if message.contains("password authentication failed") {
            PASSWORD_HINT
        } else {
            CONNECTION_HINT
        };
        Self::new(UNUSABLE, message, Some(hint))
    }

    fn new(code: u8, message: String, hint: Option<&str>) -> Self {
        Self {
            code,
            message,
            hint: hint.map(str::to_owned),
        }
    }

    /// Prints the failure to stderr and returns its exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("error: {}", one_line(&self.message));
        if let Some(hint) = self.hint {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(self.code)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Connection(_) | Error::PoolTimeout(_) | Error::ReadOnly(_) => {
                Self::connection(message)
            }
            Error::Database(_) if error.is_connection_error() => Self::connection(message),
            Error::InvalidInput { .. } => Self::usage(message, Some("see --help")),
            Error::Config(_) => Self::usage(
                message,
                Some("fix the SYNCKIT__AWARENESS__* environment variables (see docs/configuration.md)"),
            ),
            Error::Database(_) if message.contains("does not exist") => Self::new(
                PROBLEM,
                message,
                Some("run `synckit-awareness migrate`, then `synckit-awareness check`"),
            ),
            _ => Self::problem(message),
        }
    }
}

/// Folds a (possibly multi-line) driver message into one line and hides any password in it.
fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    DatabaseUrl::new(folded).redacted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_without_passwords() {
        assert_eq!(
            one_line("cannot connect to\n  postgres://u:hunter2@h/db:\trefused"),
            "cannot connect to postgres://u:***@h/db: refused"
        );
    }
}
