//! What pruning costs the database (issue 18): a table of live entries written by 4 instances,
//! each pruning every second (the presence engine's and the relay's default), nothing expiring
//! and every lease valid — an idle round, all day long on a real deployment. Measured as the
//! CPU time of the PostgreSQL server's processes over a window (the postmaster's reaped
//! children, such as parallel workers, included), against:
//! - *idle*: the same 4 instances renewing their leases, no pruner (the floor);
//! - *one statement per round*: the round before issue 18 (`TAKE_DEPARTED` below, which scanned
//!   the table and probed the lease table per row every round), run by 4 tasks every second.
//!
//! Sides are interleaved run by run (medians). Before each run the entries' `last_seen` are
//! spread over the last 15 s (Yjs clients heartbeat every 15 s; the timeout is 30 s), so that
//! nothing expires during a run and the pruners' first look says when the first entry can.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use synckit_awareness::{AwarenessStore, InstanceOptions, Pruner};

use crate::pg::psql;
use crate::{open_store, Config, Report, STATE};

const INSTANCES: usize = 4;
const PERIOD: Duration = Duration::from_secs(1);

/// The pruning round as one statement, before issue 18 (timeout bound as `$1`).
const TAKE_DEPARTED: &str = "WITH lapsed AS (DELETE FROM awareness_instances \
     WHERE lease_expires_at <= now() RETURNING instance_id), \
     gone AS (DELETE FROM awareness_entries e WHERE e.last_seen <= now() - $1 \
     OR (e.instance_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM awareness_instances i \
     WHERE i.instance_id = e.instance_id AND i.lease_expires_at > now())) RETURNING e.*) \
     SELECT gone.*, gone.last_seen <= now() - $1 AS expired FROM gone \
     ORDER BY gone.document_id, gone.client_id";

/// CPU seconds the server's processes have used (the postmaster, its children, and the
/// children it reaped), or `None` when the server's processes are not on this machine.
fn server_cpu(postmaster: u32) -> Option<f64> {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let mut total = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state is field 3.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
        let ppid = field(4) as u32;
        if pid == postmaster {
            found = true;
            // utime, stime, cutime, cstime.
            total += field(14) + field(15) + field(16) + field(17);
        } else if ppid == postmaster {
            total += field(14) + field(15);
        }
    }
    found.then(|| total as f64 / ticks)
}

/// The postmaster's pid: the parent of a backend of `url`.
async fn postmaster_pid(url: &str) -> Option<u32> {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut conn = AsyncPgConnection::establish(url).await.ok()?;
    let backend = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .await
        .ok()?
        .pid;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Which pruning runs beside the 4 instances.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Idle,
    Pruners,
    OneStatement,
}

/// One window: the instances (and pruners, or old-statement tasks) started, the server's CPU
/// read at the start and end of `window`. Returns cores used.
async fn run(
    url: &str,
    side: Side,
    window: Duration,
    postmaster: u32,
    removed: &Arc<AtomicUsize>,
    rounds: &Arc<AtomicUsize>,
) -> Option<f64> {
    let mut stores = Vec::new();
    for i in 0..INSTANCES {
        let store = open_store(url, 2, false).await;
        store
            .start_instance(InstanceOptions::default().with_instance_id(format!("bench-i{i}")))
            .await
            .expect("start_instance");
        stores.push(Arc::new(store));
    }
    let mut pruners = Vec::new();
    let mut tasks = Vec::new();
    let start = server_cpu(postmaster)?;
    let started = Instant::now();
    match side {
        Side::Idle => {}
        Side::Pruners => {
            for store in &stores {
                let store: Arc<dyn AwarenessStore> = store.clone();
                let removed = removed.clone();
                pruners.push(Pruner::spawn(store, PERIOD, move |_| {
                    removed.fetch_add(1, Ordering::Relaxed);
                }));
            }
        }
        Side::OneStatement => {
            for _ in 0..INSTANCES {
                let url = url.to_owned();
                let rounds = rounds.clone();
                tasks.push(tokio::spawn(async move {
                    let mut conn = match AsyncPgConnection::establish(&url).await {
                        Ok(conn) => conn,
                        Err(e) => return eprintln!("the old round cannot connect: {e}"),
                    };
                    let mut ticks = tokio::time::interval(PERIOD);
                    loop {
                        ticks.tick().await;
                        let done = diesel::sql_query(TAKE_DEPARTED)
                            .bind::<diesel::sql_types::Interval, _>(
                                diesel::pg::data_types::PgInterval::from_microseconds(30_000_000),
                            )
                            .execute(&mut conn)
                            .await;
                        match done {
                            Ok(_) => rounds.fetch_add(1, Ordering::Relaxed),
                            Err(e) => return eprintln!("the old round failed: {e}"),
                        };
                    }
                }));
            }
        }
    }
    tokio::time::sleep(window).await;
    let used = server_cpu(postmaster)? - start;
    let elapsed = started.elapsed().as_secs_f64();
    for pruner in pruners {
        pruner.shutdown().await;
    }
    for task in tasks {
        task.abort();
    }
    // Dropped, not shut down: a graceful shutdown deletes an instance's entries, and the next
    // run's instances take the same ids (and so the same entries) over.
    drop(stores);
    Some(used / elapsed)
}

pub async fn pruning(cfg: &Config, report: &mut Report, url: &str) {
    let n: i64 = if cfg.quick { 10_000 } else { 1_000_000 };
    let window = if cfg.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    };
    report.note(&format!(
        "pruning: {n} live entries of {INSTANCES} instances, each pruning every {PERIOD:?}, \
         nothing expiring; PostgreSQL's CPU over {window:?} windows"
    ));
    let Some(postmaster) = postmaster_pid(url).await else {
        report.note("  skipped: the server's processes are not on this machine");
        return;
    };
    psql(url, "TRUNCATE awareness_entries, awareness_instances");
    psql(
        url,
        &format!(
            "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, instance_id) \
             SELECT (k / 10)::text, k::text, k::text, '{STATE}'::jsonb, 1, 'bench-i' || (k % {INSTANCES}) \
             FROM generate_series(0, {}) k",
            n - 1
        ),
    );
    let refresh = "UPDATE awareness_entries \
         SET last_seen = now() - (client_id::bigint % 15000) * interval '1 millisecond'";
    let sides = [Side::Idle, Side::Pruners, Side::OneStatement];
    let removed = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    let mut used: Vec<Vec<f64>> = sides.iter().map(|_| Vec::new()).collect();
    for _ in 0..cfg.runs {
        for (i, &side) in sides.iter().enumerate() {
            psql(url, refresh);
            psql(url, "VACUUM ANALYZE awareness_entries");
            if let Some(cores) = run(url, side, window, postmaster, &removed, &rounds).await {
                used[i].push(cores);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut medians = used.into_iter().map(median);
    let mut next = || medians.next().unwrap_or(f64::NAN);
    let (idle, pruners, old) = (next(), next(), next());
    report.note(&format!(
        "  PostgreSQL CPU, cores (median of {}): idle (leases only) {idle:.4}; pruners {pruners:.4} \
         (pruning {:.2} % of one core); one statement per round (before issue 18) {old:.4} \
         (pruning {:.2} % of one core, {} old rounds run); entries the pruners removed: {} (0 expected)",
        cfg.runs,
        (pruners - idle).max(0.0) * 100.0,
        (old - idle).max(0.0) * 100.0,
        AtomicUsize::load(&rounds, Ordering::Relaxed),
        AtomicUsize::load(&removed, Ordering::Relaxed)
    ));
    let heap = psql(
        url,
        "SELECT n_tup_hot_upd * 100 / greatest(n_tup_upd, 1) FROM pg_stat_user_tables \
         WHERE relname = 'awareness_entries'",
    );
    report.note(&format!(
        "  HOT updates on awareness_entries so far: {heap} %"
    ));
    psql(url, "TRUNCATE awareness_entries, awareness_instances");
}
