//! The shared migration runner: this crate's migrations (and the host application's) applied
//! under an advisory lock, recorded in diesel's own `__diesel_schema_migrations`.

use std::collections::HashSet;

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{Error, Result};

/// This crate's migrations, embedded at compile time. The same files `diesel migration run`
/// applies, so either way of migrating records the same versions.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the session-level advisory lock that serialises concurrent runners ("synckit" in
/// ASCII), so two instances starting together apply each migration once.
pub const MIGRATION_LOCK_KEY: i64 = 0x0073_796e_636b_6974;

type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

/// What a migration run did or would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions that were applied before this run, oldest first.
    pub already_applied: Vec<String>,
    /// Versions this run applied (or, for a dry run, would apply), in order.
    pub applied: Vec<String>,
}

/// Applies every pending migration of [`MIGRATIONS`] and then of each `extra` source, holding
/// the advisory lock [`MIGRATION_LOCK_KEY`] for the whole run.
///
/// Runs diesel's synchronous harness on a blocking thread, so it works on any tokio runtime
/// (current-thread included).
pub async fn run_migrations(
    conn: AsyncPgConnection,
    extra: &'static [&'static EmbeddedMigrations],
) -> Result<MigrationReport> {
    with_locked_harness(conn, move |harness| migrate(harness, extra, false)).await
}

/// Like [`run_migrations`], but opens its own connection to `database_url`.
pub async fn run_migrations_at(
    database_url: &str,
    extra: &'static [&'static EmbeddedMigrations],
) -> Result<MigrationReport> {
    run_migrations(establish_connection(database_url).await?, extra).await
}

/// What [`run_migrations`] would apply, without applying anything.
pub async fn pending_migrations(
    conn: AsyncPgConnection,
    extra: &'static [&'static EmbeddedMigrations],
) -> Result<MigrationReport> {
    with_locked_harness(conn, move |harness| migrate(harness, extra, true)).await
}

/// Opens one connection the way the store's pool does: `sslmode`/`sslrootcert` in the URL are
/// honoured through rustls, and an error never echoes the password. For tools that need a single
/// connection (migrations, the CLI) without a pool.
pub async fn establish_connection(database_url: &str) -> Result<AsyncPgConnection> {
    crate::postgres::tls::connect(database_url)
        .await
        .map_err(|e| Error::Connection(crate::postgres::secret::redact(&e.to_string())))
}

async fn with_locked_harness<T: Send + 'static>(
    conn: AsyncPgConnection,
    f: impl FnOnce(&mut Wrapper) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let mut harness = Wrapper::from(conn);
        advisory(&mut harness, crate::postgres::sql::session::MIGRATION_LOCK)?;
        let result = f(&mut harness);
        // Unlock even when a migration failed; the connection is dropped right after, which
        // also releases a session lock if this statement cannot run.
        let unlocked = advisory(
            &mut harness,
            crate::postgres::sql::session::MIGRATION_UNLOCK,
        );
        let value = result?;
        unlocked?;
        Ok(value)
    })
    .await
    .map_err(|e| Error::Migration(format!("the migration task stopped: {e}")))?
}

fn advisory(harness: &mut Wrapper, statement: &'static str) -> Result<()> {
    diesel::RunQueryDsl::execute(
        diesel::sql_query(statement).bind::<BigInt, _>(MIGRATION_LOCK_KEY),
        harness,
    )?;
    Ok(())
}

fn migrate(
    harness: &mut Wrapper,
    extra: &[&EmbeddedMigrations],
    dry_run: bool,
) -> Result<MigrationReport> {
    let migration_error =
        |e: Box<dyn std::error::Error + Send + Sync>| Error::Migration(e.to_string());
    let mut applied_before: Vec<String> = harness
        .applied_migrations()
        .map_err(migration_error)?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    applied_before.sort();
    let done: HashSet<String> = applied_before.iter().cloned().collect();

    let mut report = MigrationReport {
        already_applied: applied_before,
        applied: Vec::new(),
    };
    for source in std::iter::once(&MIGRATIONS).chain(extra.iter().copied()) {
        let mut pending: Vec<Box<dyn Migration<Pg>>> = MigrationSource::<Pg>::migrations(source)
            .map_err(migration_error)?
            .into_iter()
            .filter(|m| !done.contains(&m.name().version().to_string()))
            .collect();
        pending.sort_by(|a, b| a.name().version().cmp(&b.name().version()));
        for migration in pending {
            let version = migration.name().version().to_string();
            if !dry_run {
                harness
                    .run_migration(migration.as_ref())
                    .map_err(|e| Error::Migration(format!("{}: {e}", migration.name())))?;
                tracing::info!(%version, "applied awareness migration");
            }
            report.applied.push(version);
        }
    }
    Ok(report)
}
