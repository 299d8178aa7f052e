//! The `synckit-awareness` operator CLI (reserved; subcommands arrive in a later release).

use std::process::ExitCode;

const HELP: &str = "\
synckit-awareness — operator CLI for the synckit-awareness PostgreSQL store

USAGE:
    synckit-awareness --help

The subcommands (migrate, check, list, prune, stats) are not implemented yet.
Until then, apply migrations with `diesel migration run` or
`PostgresAwarenessStore::migrate`, and inspect the table with psql:
    SELECT * FROM awareness_entries ORDER BY document_id, client_id;
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "synckit-awareness: unknown command {other:?} (not implemented yet); see --help"
            );
            ExitCode::from(2)
        }
    }
}
