//! The PostgreSQL side: a benchmark database, SQL through `psql`, the statements the store
//! really sends (read back from `pg_prepared_statements`) and `pgbench` running them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use synckit_awareness::PostgresAwarenessStore;

use crate::stats::{figure, Figure};

/// Runs SQL through psql (`-At`: bare values), panicking with psql's message on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql not found: install the PostgreSQL client tools");
    assert!(
        out.status.success(),
        "psql failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `url` with its database name replaced (the library's `DatabaseUrl::with_database`).
pub fn with_database(url: &str, db: &str) -> String {
    synckit_awareness::DatabaseUrl::new(url)
        .with_database(db)
        .expose()
        .to_owned()
}

/// Drops and recreates the benchmark database and applies the migrations.
pub async fn fresh_database(admin_url: &str, db: &str) -> String {
    psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    psql(admin_url, &format!("CREATE DATABASE {db}"));
    let url = with_database(admin_url, db);
    synckit_awareness::run_migrations_at(&url, &[])
        .await
        .expect("migrations");
    url
}

/// The statement the store prepared most recently on its (single) pooled connection: the
/// exact text it sends, so pgbench cannot drift from it.
pub async fn last_prepared(store: &PostgresAwarenessStore) -> String {
    prepared_starting(store, "").await
}

/// A pgbench script: `\set` lines, then the store's SQL with `$n` replaced by `:vars[n-1]`.
/// diesel sends typed binds; pgbench's are untyped, so a variable whose type PostgreSQL cannot
/// infer carries the type diesel sends (`"timeout::interval"`). A var `"=NULL"` puts that
/// literal in place of its parameter.
pub fn script(dir: &Path, name: &str, sets: &[&str], sql: &str, vars: &[&str]) -> PathBuf {
    script_of(dir, name, sets, &[(sql, vars)])
}

/// A pgbench script running several statements in turn (each its own transaction), each with
/// its variables as in [`script`].
pub fn script_of(dir: &Path, name: &str, sets: &[&str], statements: &[(&str, &[&str])]) -> PathBuf {
    let mut body = String::new();
    for s in sets {
        body.push_str(s);
        body.push('\n');
    }
    for (sql, vars) in statements {
        let mut text = (*sql).to_owned();
        assert!(
            !text.contains(&format!("${}", vars.len() + 1)),
            "{name}: the statement has more parameters than the script provides: {text}"
        );
        // Highest first, so `$1` does not eat the start of `$10`.
        for (i, var) in vars.iter().enumerate().rev() {
            // `=SQL` stands for a literal (pgbench variables cannot be NULL).
            let value = match var.strip_prefix('=') {
                Some(literal) => literal.to_owned(),
                None => format!(":{var}"),
            };
            text = text.replace(&format!("${}", i + 1), &value);
        }
        assert!(
            !text.contains('$'),
            "{name}: the statement has more parameters than the script provides: {text}"
        );
        // pgbench reads one statement per line unless it ends with ';'.
        body.push_str(&text.replace('\n', " "));
        body.push_str(";\n");
    }
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, body).expect("write pgbench script");
    path
}

/// The statement the store prepared most recently whose text starts with `prefix`.
pub async fn prepared_starting(store: &PostgresAwarenessStore, prefix: &str) -> String {
    #[derive(QueryableByName)]
    struct Stmt {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement: String,
    }
    let mut conn = store.pool().get().await.expect("pooled connection");
    diesel::sql_query(
        // Not this query itself: tokio-postgres prepares every statement under a name.
        "SELECT statement FROM pg_prepared_statements WHERE starts_with(statement, $1) \
         AND statement NOT LIKE '%pg_prepared_statements%' ORDER BY prepare_time DESC LIMIT 1",
    )
    .bind::<diesel::sql_types::Text, _>(prefix)
    .get_result::<Stmt>(&mut *conn)
    .await
    .unwrap_or_else(|e| panic!("no prepared statement starts with {prefix}: {e}"))
    .statement
}

/// Runs pgbench with `clients` clients, `per_client` transactions each, prepared statements,
/// and `-D` variables; returns throughput and latency (from pgbench's per-transaction log).
pub fn pgbench(
    url: &str,
    script: &Path,
    clients: usize,
    per_client: usize,
    defines: &[(&str, String)],
    rows_per_op: f64,
    pgoptions: Option<&str>,
) -> Figure {
    let dir = script.parent().expect("script dir");
    let prefix = dir.join("pgbench_log");
    for entry in std::fs::read_dir(dir).expect("bench dir").flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("pgbench_log")
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut cmd = Command::new(pgbench_path());
    cmd.args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(format!("-c{clients}"))
        .arg(format!("-j{}", clients.min(2)))
        .arg(format!("-t{per_client}"))
        .arg("-f")
        .arg(script);
    for (k, v) in defines {
        cmd.arg("-D").arg(format!("{k}={v}"));
    }
    if let Some(o) = pgoptions {
        cmd.env("PGOPTIONS", o);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("number of failed transactions: 0"),
        "pgbench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps: f64 = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("tps line in pgbench output");
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir).expect("bench dir").flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("pgbench_log")
        {
            let text = std::fs::read_to_string(entry.path()).expect("pgbench log");
            for line in text.lines() {
                if let Some(us) = line.split(' ').nth(2).and_then(|v| v.parse::<u64>().ok()) {
                    latencies.push(Duration::from_micros(us));
                }
            }
        }
    }
    assert_eq!(latencies.len(), clients * per_client, "pgbench log lines");
    let mut f = figure(latencies, 0, Duration::from_secs(1));
    f.ops_per_s = tps;
    f.rows_per_s = tps * rows_per_op;
    f
}

/// pgbench from the PostgreSQL client tools: `PGBENCH`, else in the directory the test harness
/// finds PostgreSQL's programs in (`tests/support/with-postgres.sh --bindir`), else on PATH.
pub fn pgbench_path() -> PathBuf {
    if let Ok(p) = std::env::var("PGBENCH") {
        return p.into();
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/with-postgres.sh"
    );
    if let Ok(out) = Command::new(script).arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("pgbench");
        if out.status.success() && bin.exists() {
            return bin;
        }
    }
    "pgbench".into()
}
