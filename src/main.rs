//! `synckit-awareness`: the operator CLI of the synckit-awareness PostgreSQL store — migrate,
//! check the schema, list a document's entries, prune expired ones, show table statistics.
//!
//! Exit codes: 0 ok, 1 a problem was found (schema differences, a database error),
//! 2 cannot connect or bad usage.

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
