//! `migrate`: the shared runner (advisory lock, diesel's version table), or a dry run of it.

use std::process::ExitCode;

use synckit_awareness::{pending_migrations, run_migrations};

use super::connect::Target;
use super::failure::Failure;

pub(crate) async fn run(target: &Target, dry_run: bool) -> Result<ExitCode, Failure> {
    let conn = target.connect().await?;
    let report = if dry_run {
        pending_migrations(conn, &[]).await?
    } else {
        run_migrations(conn, &[]).await?
    };
    for version in &report.already_applied {
        println!("applied  {version}");
    }
    for version in &report.applied {
        if dry_run {
            println!("pending  {version}");
        } else {
            println!("applied  {version}  (this run)");
        }
    }
    match (report.applied.len(), dry_run) {
        (0, _) => println!("up to date: nothing to apply"),
        (n, true) => println!("dry run: {n} migration(s) would be applied; nothing was changed"),
        (n, false) => println!("applied {n} migration(s)"),
    }
    Ok(ExitCode::SUCCESS)
}
