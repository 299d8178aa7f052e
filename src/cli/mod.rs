//! Argument parsing, the connection every subcommand shares, and how failures are reported.

mod check;
mod connect;
mod failure;
mod format;
mod list;
mod migrate;
mod prune;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub(crate) use connect::Target;
pub(crate) use failure::Failure;

const EXAMPLES: &str = "\
Examples:
  DATABASE_URL=postgres://app@db/app synckit-awareness migrate
  synckit-awareness check
  synckit-awareness list doc-1 --all
  synckit-awareness prune --every 10s
  synckit-awareness stats --json

Connection: --database-url, else DATABASE_URL, else SYNCKIT__AWARENESS__POSTGRES__URL.
Prefer the environment variables: a URL on the command line shows its password in `ps`.

Exit codes: 0 ok, 1 a problem was found (schema differences, database error),
2 cannot connect or bad usage.";

/// Operator CLI for the synckit-awareness PostgreSQL store.
#[derive(Debug, Parser)]
#[command(name = "synckit-awareness", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// PostgreSQL URL [default: DATABASE_URL, else SYNCKIT__AWARENESS__POSTGRES__URL]
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// The expiry timeout, for the subcommands that tell live from expired entries.
#[derive(Debug, clap::Args)]
struct Expiry {
    /// Expiry timeout: entries not written for this long are expired, e.g. `30s`
    /// [default: SYNCKIT__AWARENESS__TIMEOUT_MS, else 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations (under the shared advisory lock); list applied and pending versions.
    #[command(
        after_help = "Example:\n  synckit-awareness migrate --dry-run\n  synckit-awareness migrate"
    )]
    Migrate {
        /// Show what would be applied without applying anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the database with the schema this version expects; exit 1 on any difference.
    #[command(after_help = "Example:\n  synckit-awareness check || synckit-awareness migrate")]
    Check,
    /// Show a document's entries: client, connection, clock, last seen, state.
    #[command(
        after_help = "Example:\n  synckit-awareness list doc-1\n  synckit-awareness list doc-1 --all --json | jq .client_id"
    )]
    List {
        /// The document (room) id.
        document: String,
        /// Also show tombstones (clients that left) and expired entries, marked.
        #[arg(long)]
        all: bool,
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Delete expired entries once, or every DURATION until SIGINT/SIGTERM.
    #[command(
        after_help = "Example:\n  synckit-awareness prune\n  synckit-awareness prune --every 10s   # as a sidecar; stop with Ctrl-C or SIGTERM"
    )]
    Prune {
        /// Run continuously, pruning at this interval (`500ms`, `10s`, `1m`).
        #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
        every: Option<Duration>,
        #[command(flatten)]
        expiry: Expiry,
    },
    /// Entry counts, busiest documents, table and index size, HOT updates, dead tuples, vacuum.
    #[command(
        after_help = "Example:\n  synckit-awareness stats\n  synckit-awareness stats --json"
    )]
    Stats {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        expiry: Expiry,
    },
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if every.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(every)
}

/// Parses the arguments, runs the subcommand on a current-thread runtime, and turns the outcome
/// into an exit code.
pub(crate) fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2; --help and --version exit with 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Failure::problem(format!("cannot start the async runtime: {e}")).report(),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let target = |expiry: Option<&Expiry>| {
        Target::resolve(cli.database_url.clone(), expiry.and_then(|e| e.timeout))
    };
    match &cli.command {
        Command::Migrate { dry_run } => migrate::run(&target(None)?, *dry_run).await,
        Command::Check => check::run(&target(None)?).await,
        Command::List {
            document,
            all,
            json,
            expiry,
        } => list::run(&target(Some(expiry))?, document, *all, *json).await,
        Command::Prune { every, expiry } => prune::run(&target(Some(expiry))?, *every).await,
        Command::Stats { json, expiry } => stats::run(&target(Some(expiry))?, *json).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeout_is_offered_only_where_it_matters() {
        for sub in Cli::command().get_subcommands() {
            let has = sub.get_arguments().any(|a| a.get_id() == "timeout");
            let needs = matches!(sub.get_name(), "list" | "prune" | "stats");
            assert_eq!(has, needs, "--timeout on {}", sub.get_name());
        }
    }

    #[test]
    fn every_subcommand_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("synckit-awareness"),
                "{} has no example",
                sub.get_name()
            );
        }
    }
}
