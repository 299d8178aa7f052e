//! The measured workloads. Every comparison runs the same operation count, key spread and
//! concurrency on each side, interleaved run by run so machine noise hits all sides alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use synckit_awareness::{AwarenessStore, AwarenessUpdate, MemoryAwarenessStore};
use tokio::sync::Mutex;

use crate::pg::{pgbench, psql, script};
use crate::redis::{Redis, Reply};
use crate::stats::{median, run_tasks, Figure};
use crate::*;

/// The expiry timeout the benchmark's stores and pgbench use: a day, so no preloaded or
/// heartbeat-written entry expires during a run; the expiry section backdates its rows by two.
pub const TIMEOUT: &str = "86400 seconds";

/// pgbench's sessions get the store's default synchronous_commit, so both sides commit alike.
fn store_sync() -> Option<&'static str> {
    Some(if PostgresOptions::default().synchronous_commit {
        "-c synchronous_commit=on"
    } else {
        "-c synchronous_commit=off"
    })
}

fn defines(pairs: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut d = vec![("state", STATE.to_owned()), ("timeout", TIMEOUT.to_owned())];
    d.extend_from_slice(pairs);
    d
}

/// One Redis connection per task, on the benchmark's database.
async fn redis_conns(cfg: &Config, tasks: usize) -> Arc<Vec<Mutex<Redis>>> {
    let mut conns = Vec::new();
    for _ in 0..tasks {
        let mut c = Redis::connect(&cfg.redis_addr)
            .await
            .expect("redis connect");
        c.call(&[b"SELECT", b"15"]).await.expect("redis SELECT");
        conns.push(Mutex::new(c));
    }
    Arc::new(conns)
}

/// One Redis-store `set`: the Lua script via EVALSHA. Returns 1 when applied.
async fn redis_set(
    conn: &Mutex<Redis>,
    sha: &str,
    doc: i64,
    client: i64,
    conn_id: &str,
    clock: i64,
) -> u64 {
    let key = format!("a:{doc}:{client}");
    let clock = clock.to_string();
    let reply = conn
        .lock()
        .await
        .call(&[
            b"EVALSHA",
            sha.as_bytes(),
            b"2",
            key.as_bytes(),
            b"a:exp",
            clock.as_bytes(),
            STATE.as_bytes(),
            conn_id.as_bytes(),
            b"86400000", // the same day-long timeout as TIMEOUT
        ])
        .await
        .expect("EVALSHA");
    match reply {
        Reply::Int(n) => n as u64,
        other => panic!("EVALSHA: {other:?}"),
    }
}

fn update(doc: i64, client: i64, conn: String, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        doc.to_string(),
        client.to_string(),
        conn,
        clock,
        Some(state()),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum SetKind {
    Heartbeat,
    Stale,
    Insert,
}

/// One side of a comparison: runs `per_task` operations from each of `tasks` tasks.
type Side<'a> = (
    &'static str,
    Box<dyn Fn(usize, usize) -> futures_util::future::BoxFuture<'a, Figure> + 'a>,
);

/// Runs every side `cfg.runs` times, interleaved run by run so machine noise hits all sides
/// alike, and reports each side's median: the one loop every comparison shares.
async fn compare(
    cfg: &Config,
    report: &mut Report,
    name: &str,
    tasks: usize,
    per_task: usize,
    rows_differ: bool,
    sides: &[Side<'_>],
) {
    let mut figures: Vec<Vec<Figure>> = sides.iter().map(|_| Vec::new()).collect();
    for _ in 0..cfg.runs {
        for (i, (_, run)) in sides.iter().enumerate() {
            figures[i].push(run(tasks, per_task).await);
        }
    }
    for ((system, _), figs) in sides.iter().zip(figures) {
        report.push(name, system, tasks, median(figs), rows_differ);
    }
}

/// `set`s of `kind` through `store` (each checked against the outcome it must have).
fn store_sets(store: Arc<PostgresAwarenessStore>, kind: SetKind) -> Box<SideFn> {
    Box::new(move |tasks, per_task| {
        let st = store.clone();
        Box::pin(async move {
            let base = next_base();
            run_tasks(tasks, per_task, move |t, i| {
                let st = st.clone();
                async move {
                    let u = set_update(kind, tasks, t, i, base);
                    let outcome = st.set(&u).await.expect("set");
                    assert_eq!(
                        outcome.is_applied(),
                        kind != SetKind::Stale,
                        "{u:?}: {outcome:?}"
                    );
                    1
                }
            })
            .await
        })
    })
}

type SideFn = dyn Fn(usize, usize) -> futures_util::future::BoxFuture<'static, Figure>;

/// pgbench running `path` with the key spread of `set_update`.
fn pgbench_sets(url: String, path: std::path::PathBuf, rows_per_op: f64) -> Box<SideFn> {
    Box::new(move |tasks, per_task| {
        let (url, path) = (url.clone(), path.clone());
        Box::pin(async move {
            let base = next_base();
            pgbench(
                &url,
                &path,
                tasks,
                per_task,
                &defines(&[
                    ("per", (KEYS as usize / tasks).to_string()),
                    ("nc", tasks.to_string()),
                    ("clock", base.to_string()),
                    ("base", base.to_string()),
                    ("n", "0".into()),
                ]),
                rows_per_op,
                store_sync(),
            )
        })
    })
}

/// The Redis peer: the same updates through the Lua script.
fn redis_sets(cfg: Config, sha: Arc<String>, kind: SetKind) -> Box<SideFn> {
    Box::new(move |tasks, per_task| {
        let (cfg, sha) = (cfg.clone(), sha.clone());
        Box::pin(async move {
            let base = next_base();
            let conns = redis_conns(&cfg, tasks).await;
            run_tasks(tasks, per_task, move |t, i| {
                let conns = conns.clone();
                let sha = sha.clone();
                async move {
                    let u = set_update(kind, tasks, t, i, base);
                    let doc: i64 = u.document_id.parse().unwrap_or(0);
                    let client: i64 = u.client_id.parse().unwrap_or(0);
                    let applied =
                        redis_set(&conns[t], &sha, doc, client, &u.connection_id, u.clock).await;
                    assert_eq!(applied == 1, kind != SetKind::Stale);
                    1
                }
            })
            .await
        })
    })
}

/// The stores a `set` comparison runs: the default store (kept open), and — opened for each run
/// and closed after it, so pgbench at 64 clients still finds free server connections — with
/// write coalescing on, and the default over TLS (`sslmode=prefer`; every other PostgreSQL side
/// runs plaintext, as the Redis peer does).
pub struct SetStores {
    pub default: Arc<PostgresAwarenessStore>,
    pub url: String,
    pub tls_url: String,
}

/// Untimed: `store` writes every heartbeat key once, as a running server has written its
/// clients' keys, so that its heartbeats take the fast path (src/postgres/write/known.rs).
async fn warm(store: &PostgresAwarenessStore) {
    let base = next_base();
    for k in 0..KEYS {
        let u = update(k / PER_DOC, k, k.to_string(), base);
        store.set(&u).await.expect("warm-up set");
    }
}

/// `set`s of `kind` through a store opened on `url` for the run (16 connections).
fn fresh_store_sets(url: String, coalesce: bool, kind: SetKind) -> Box<SideFn> {
    Box::new(move |tasks, per_task| {
        let url = url.clone();
        Box::pin(async move {
            let store = Arc::new(
                open_store(&url, 16, PostgresOptions::default().synchronous_commit)
                    .await
                    .with_coalesced_writes(coalesce),
            );
            if kind == SetKind::Heartbeat {
                warm(&store).await;
            }
            let run = store_sets(store, kind)(tasks, per_task);
            run.await
        })
    })
}

pub async fn set_workloads(
    cfg: &Config,
    report: &mut Report,
    url: &str,
    stores: &SetStores,
    stmts: &Statements,
    sha: &Arc<String>,
) {
    report.note(
        "set workloads (store | with write coalescing | over TLS | pgbench of the store's SQL | \
         Redis Lua); pgbench of a 16-row batch upsert beside the heartbeat",
    );
    // Redis gets the same 10k heartbeat keys at clock 1.
    let preload = redis_conns(cfg, 1).await;
    for k in 0..KEYS {
        redis_set(&preload[0], sha, k / PER_DOC, k, &k.to_string(), 1).await;
    }
    warm(&stores.default).await;
    let vars = SET_VARS;
    let batch_path = script(
        &cfg.out_dir,
        "set_batch16",
        &["\\set r random(0, :per / 16 - 1)", "\\set clock :clock + 1"],
        BATCH16_SQL,
        &[],
    );
    let kinds: &[(&str, SetKind)] = if cfg.runs_part("set") {
        &[
            ("set heartbeat (existing)", SetKind::Heartbeat),
            ("set stale", SetKind::Stale),
            ("set insert (new entry)", SetKind::Insert),
        ]
    } else {
        &[]
    };
    for &(name, kind) in kinds {
        let sets: &[&str] = match kind {
            SetKind::Heartbeat => &[
                "\\set r random(0, :per - 1)",
                "\\set k :r * :nc + :client_id",
                "\\set doc :k / 10",
                "\\set conn :k",
                "\\set clock :clock + 1",
            ],
            SetKind::Stale => &[
                "\\set r random(0, :per - 1)",
                "\\set k :r * :nc + :client_id",
                "\\set doc :k / 10",
                "\\set conn :k",
                "\\set clock 0",
            ],
            SetKind::Insert => &[
                "\\set k :base + :n * :nc + :client_id",
                "\\set n :n + 1",
                "\\set doc :k / 10",
                "\\set conn :k",
                "\\set clock 1",
            ],
        };
        // What the store sends, one statement per call: the fast path for a heartbeat of a
        // key it wrote, the full statement for the rest (src/postgres/write/known.rs).
        let store_path = if kind == SetKind::Heartbeat {
            script(&cfg.out_dir, "set", sets, &stmts.set, &vars)
        } else {
            script(&cfg.out_dir, "set", sets, &stmts.set_full, &SET_FULL_VARS)
        };
        // The baseline: the contract's plain conditional upsert (issue 11's statement).
        let plain_path = script(
            &cfg.out_dir,
            "set_plain",
            sets,
            ISSUE11_SET_SQL,
            &["doc", "k", "conn", "state", "clock", "timeout::interval"],
        );
        let concurrency: &[usize] = if kind == SetKind::Heartbeat {
            &[1, 4, 16, 64]
        } else {
            &CONCURRENCY
        };
        for &tasks in concurrency {
            let per_task = cfg.count(20_000, tasks);
            let mut sides: Vec<Side<'static>> = vec![
                ("store", store_sets(stores.default.clone(), kind)),
                (
                    "store coalescing",
                    fresh_store_sets(stores.url.clone(), true, kind),
                ),
            ];
            if kind == SetKind::Heartbeat {
                sides.push((
                    "store TLS",
                    fresh_store_sets(stores.tls_url.clone(), false, kind),
                ));
            }
            sides.push((
                "pgbench",
                pgbench_sets(url.to_owned(), plain_path.clone(), 1.0),
            ));
            sides.push((
                "pgbench store SQL",
                pgbench_sets(url.to_owned(), store_path.clone(), 1.0),
            ));
            sides.push(("redis", redis_sets(cfg.clone(), sha.clone(), kind)));
            compare(cfg, report, name, tasks, per_task, false, &sides).await;
            if kind == SetKind::Heartbeat {
                let batches = vec![(
                    "pgbench",
                    pgbench_sets(url.to_owned(), batch_path.clone(), 16.0),
                )];
                let per_batch_task = (per_task / 16).max(2);
                compare(
                    cfg,
                    report,
                    "upsert batch of 16 (pgbench)",
                    tasks,
                    per_batch_task,
                    true,
                    &batches,
                )
                .await;
            }
        }
        if kind == SetKind::Insert {
            psql(
                url,
                "DELETE FROM awareness_entries WHERE connection_id = client_id AND length(client_id) > 6",
            );
            psql(url, "VACUUM ANALYZE awareness_entries");
        }
    }
    // set_many of 16 (a y-protocols message with many clients): one statement per batch.
    let concurrency: &[usize] = if cfg.runs_part("set_many") {
        &CONCURRENCY
    } else {
        &[]
    };
    for &tasks in concurrency {
        let per_task = cfg.count(2_000, tasks);
        let store = stores.default.clone();
        let batch: Side<'static> = (
            "store",
            Box::new(move |tasks, per_task| {
                let st = store.clone();
                Box::pin(async move {
                    let base = next_base();
                    run_tasks(tasks, per_task, move |t, i| {
                        let st = st.clone();
                        async move {
                            let batch: Vec<_> = (0..16)
                                .map(|j| set_update(SetKind::Heartbeat, tasks, t, i * 16 + j, base))
                                .collect();
                            let outcomes = st.set_many(&batch).await.expect("set_many");
                            assert_eq!(outcomes.len(), 16);
                            16
                        }
                    })
                    .await
                })
            }),
        );
        compare(
            cfg,
            report,
            "set_many of 16",
            tasks,
            per_task,
            true,
            &[batch],
        )
        .await;
    }
}

/// The variables of the parameters of `set`'s fast path in pgbench scripts, `$1` first: the
/// order of `FAST_BINDS` in `src/postgres/sql/write.rs` (the statement binds a value at each
/// place it uses it). The bench's updates carry no owner and the store runs no instance
/// (NULL), and a direct connection sets no `synchronous_commit` per statement (the last two,
/// NULL). `script` fails when the statement has more parameters.
const SET_VARS: [&str; 15] = [
    "conn",
    "state",
    "clock",
    "=NULL",
    "=NULL",
    "doc",
    "k",
    "timeout::interval",
    "state",
    "=NULL",
    "clock",
    "clock",
    "state",
    "=NULL",
    "=NULL",
];

/// The variables of `set`'s full statement (`FULL_BINDS`), with the default limits and no
/// `synchronous_commit` of its own (direct).
const SET_FULL_VARS: [&str; 12] = [
    "doc",
    "k",
    "conn",
    "state",
    "clock",
    "timeout::interval",
    "=NULL",
    "=NULL",
    "=1000",
    "=64",
    "=NULL",
    "=NULL",
];

/// The `set` statement before ownership, instances and limits (issue 11's, as the store sent
/// it), for pgbench: what the new checks cost the server.
const ISSUE11_SET_SQL: &str = "INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \
     \"connection_id\", \"state\", \"clock_value\", \"last_seen\") VALUES ($1, $2, $3, $4, $5, \
     CURRENT_TIMESTAMP) ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \"connection_id\" = \
     excluded.\"connection_id\", \"state\" = excluded.\"state\", \"clock_value\" = \
     excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" WHERE \
     (((\"awareness_entries\".\"last_seen\" <= (now() - $6)) OR \
     (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) OR \
     (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") AND \
     (excluded.\"state\" IS NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL)))";

/// What issue 12's checks cost a heartbeat `set`: the store as it runs by default (limits on,
/// no owner), with an owner on every update, without limits; pgbench of the store's statement
/// and of issue 11's plain upsert, in the same interleaved runs.
pub async fn trust_cost(
    cfg: &Config,
    report: &mut Report,
    url: &str,
    stores: &SetStores,
    stmts: &Statements,
) {
    report.note(
        "what ownership, instances and limits cost a heartbeat set (store | with an owner | \
         without limits | pgbench of the store's SQL | pgbench of issue 11's upsert)",
    );
    let heartbeat = [
        "\\set r random(0, :per - 1)",
        "\\set k :r * :nc + :client_id",
        "\\set doc :k / 10",
        "\\set conn :k",
        "\\set clock :clock + 1",
    ];
    let new_path = script(&cfg.out_dir, "set_trust", &heartbeat, &stmts.set, &SET_VARS);
    let old_path = script(
        &cfg.out_dir,
        "set_issue11",
        &heartbeat,
        ISSUE11_SET_SQL,
        &["doc", "k", "conn", "state", "clock", "timeout::interval"],
    );
    let unlimited = Arc::new(PostgresAwarenessStore::from_pool(
        stores.default.pool().clone(),
        stores
            .default
            .options()
            .with_max_clients_per_document(None)
            .with_max_clients_per_connection(None),
    ));
    warm(&unlimited).await;
    for tasks in [1, 4] {
        let per_task = cfg.count(20_000, tasks);
        let sides: Vec<Side<'static>> = vec![
            (
                "store",
                store_sets(stores.default.clone(), SetKind::Heartbeat),
            ),
            (
                "store owner",
                owned_sets(stores.default.clone(), url.to_owned()),
            ),
            (
                "store no limits",
                store_sets(unlimited.clone(), SetKind::Heartbeat),
            ),
            (
                "pgbench",
                pgbench_sets(url.to_owned(), new_path.clone(), 1.0),
            ),
            (
                "pgbench issue 11",
                pgbench_sets(url.to_owned(), old_path.clone(), 1.0),
            ),
        ];
        compare(
            cfg,
            report,
            "set heartbeat (trust cost)",
            tasks,
            per_task,
            false,
            &sides,
        )
        .await;
    }
}

/// Heartbeat `set`s each carrying its key's owner (the first claims the base entry); the
/// owners are cleared after the run (untimed) so that the other sides' owner-less heartbeats
/// still apply.
fn owned_sets(store: Arc<PostgresAwarenessStore>, url: String) -> Box<SideFn> {
    Box::new(move |tasks, per_task| {
        let (st, url) = (store.clone(), url.clone());
        Box::pin(async move {
            let base = next_base();
            let figure = run_tasks(tasks, per_task, move |t, i| {
                let st = st.clone();
                async move {
                    let mut u = set_update(SetKind::Heartbeat, tasks, t, i, base);
                    u.owner = Some(format!("user-{}", u.client_id));
                    let outcome = st.set(&u).await.expect("set");
                    assert!(outcome.is_applied(), "{u:?}: {outcome:?}");
                    1
                }
            })
            .await;
            psql(
                &url,
                "UPDATE awareness_entries SET owner = NULL WHERE owner IS NOT NULL",
            );
            figure
        })
    })
}

/// A plain 16-row conditional upsert for pgbench (keys of one client, rising clock): what one
/// statement can write, the ceiling for `set_many` and for coalesced `set`s.
const BATCH16_SQL: &str = "INSERT INTO awareness_entries \
     (document_id, client_id, connection_id, state, clock_value, last_seen) \
     SELECT (k / 10)::text, k::text, k::text, :state::jsonb, :clock, CURRENT_TIMESTAMP \
     FROM (SELECT ((:r * 16 + j) * :nc + :client_id) AS k FROM generate_series(0, 15) j) keys \
     ORDER BY k ON CONFLICT (document_id, client_id) DO UPDATE SET \
     connection_id = excluded.connection_id, state = excluded.state, \
     clock_value = excluded.clock_value, last_seen = excluded.last_seen \
     WHERE awareness_entries.last_seen <= now() - :timeout::interval \
     OR awareness_entries.clock_value < excluded.clock_value \
     OR (awareness_entries.clock_value = excluded.clock_value AND excluded.state IS NULL \
     AND awareness_entries.state IS NOT NULL)";

/// The update a task sends as its `i`-th call (heartbeat, stale or insert), from `base`.
fn set_update(kind: SetKind, tasks: usize, t: usize, i: usize, base: i64) -> AwarenessUpdate {
    match kind {
        SetKind::Heartbeat | SetKind::Stale => {
            let k = task_key(rand(t, i), tasks, t);
            let clock = if kind == SetKind::Stale {
                0
            } else {
                base + i as i64 + 1
            };
            update(k / PER_DOC, k, k.to_string(), clock)
        }
        SetKind::Insert => {
            // A connection per new client, as y-websocket clients have: the per-connection
            // limit never refuses these joins. Rooms of 10, as the heartbeat data: new keys
            // fill new documents, so a join counts at most 10 participants however long the
            // run (random documents grew to ~190 participants over a full run).
            let k = base + (i * tasks + t) as i64;
            update(k / PER_DOC, k, k.to_string(), 1)
        }
    }
}

pub async fn read_workloads(
    cfg: &Config,
    report: &mut Report,
    url: &str,
    store: &Arc<PostgresAwarenessStore>,
    stmts: &Statements,
) {
    report.note(
        "read and disconnect workloads (store | get_all_states: the states as JSON text | \
         pgbench of the store's SQL)",
    );
    for (name, first, size) in [
        ("get_all (10 clients)", 0, DOCS),
        ("get_all (100 clients)", BIG_DOC_BASE, BIG_DOCS),
    ] {
        let set = format!("\\set doc {first} + random(0, {})", size - 1);
        let path = script(
            &cfg.out_dir,
            "get_all",
            &[&set],
            &stmts.get_all,
            &["doc", "timeout::interval"],
        );
        let rows = if first == 0 { PER_DOC } else { 100 } as usize;
        for tasks in CONCURRENCY {
            let per_task = cfg.count(20_000, tasks);
            let (mut s, mut j, mut p) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..cfg.runs {
                let st = store.clone();
                j.push(
                    run_tasks(tasks, per_task, move |t, i| {
                        let st = st.clone();
                        async move {
                            let doc = first + (rand(t, i) % size as u64) as i64;
                            let got = st
                                .get_all_states(&doc.to_string())
                                .await
                                .expect("get_all_states");
                            assert_eq!(got.len(), rows);
                            got.len() as u64
                        }
                    })
                    .await,
                );
                let st = store.clone();
                s.push(
                    run_tasks(tasks, per_task, move |t, i| {
                        let st = st.clone();
                        async move {
                            let doc = first + (rand(t, i) % size as u64) as i64;
                            let got = st.get_all(&doc.to_string()).await.expect("get_all");
                            assert_eq!(got.len(), rows);
                            got.len() as u64
                        }
                    })
                    .await,
                );
                p.push(pgbench(
                    url,
                    &path,
                    tasks,
                    per_task,
                    &defines(&[]),
                    rows as f64,
                    store_sync(),
                ));
            }
            report.push(name, "store", tasks, median(s), true);
            report.push(name, "store get_all_states", tasks, median(j), true);
            report.push(name, "pgbench", tasks, median(p), true);
        }
    }
    // remove_all_for_connection: each call removes a connection's one entry, preloaded per run.
    let path = script(
        &cfg.out_dir,
        "remove",
        &["\\set conn :base + :n * :nc + :client_id", "\\set n :n + 1"],
        &stmts.remove_all_for_connection,
        &["conn", "timeout::interval"],
    );
    let preload = |url: &str, base: i64, n: usize| {
        psql(
            url,
            &format!(
                "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
                 SELECT 'rm', ({base} + n)::text, ({base} + n)::text, '{STATE}'::jsonb, 1 \
                 FROM generate_series(0, {}) n",
                n - 1
            ),
        );
    };
    for tasks in CONCURRENCY {
        let per_task = cfg.count(10_000, tasks);
        let (mut s, mut p) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            let base = next_base();
            preload(url, base, tasks * per_task);
            let st = store.clone();
            s.push(
                run_tasks(tasks, per_task, move |t, i| {
                    let st = st.clone();
                    async move {
                        let conn = base + (i * tasks + t) as i64;
                        let removed = st
                            .remove_all_for_connection(&conn.to_string())
                            .await
                            .expect("remove_all_for_connection");
                        assert_eq!(removed.len(), 1);
                        1
                    }
                })
                .await,
            );
            let base = next_base();
            preload(url, base, tasks * per_task);
            p.push(pgbench(
                url,
                &path,
                tasks,
                per_task,
                &defines(&[
                    ("base", base.to_string()),
                    ("nc", tasks.to_string()),
                    ("n", "0".into()),
                ]),
                1.0,
                store_sync(),
            ));
        }
        report.push(
            "remove_all_for_connection",
            "store",
            tasks,
            median(s),
            false,
        );
        report.push(
            "remove_all_for_connection",
            "pgbench",
            tasks,
            median(p),
            false,
        );
    }
    psql(url, "VACUUM ANALYZE awareness_entries");
}

/// Heartbeat `set` at 4 tasks with synchronous_commit on/off and on an UNLOGGED table.
pub async fn sync_and_unlogged(cfg: &Config, report: &mut Report, url: &str, stmts: &Statements) {
    report.note("durability settings: heartbeat set, 4 tasks");
    let tasks = 4;
    let per_task = cfg.count(20_000, tasks);
    let path = script(
        &cfg.out_dir,
        "set_sync",
        &[
            "\\set r random(0, :per - 1)",
            "\\set k :r * :nc + :client_id",
            "\\set doc :k / 10",
            "\\set conn :k",
            "\\set clock :clock + 1",
        ],
        &stmts.set,
        &SET_VARS,
    );
    for (label, sync, unlogged) in [
        ("synchronous_commit on", true, false),
        ("synchronous_commit off", false, false),
        ("UNLOGGED, sync on", true, true),
    ] {
        if unlogged {
            psql(url, "ALTER TABLE awareness_entries SET UNLOGGED");
        }
        let store = Arc::new(open_store(url, 16, sync).await);
        let (mut s, mut p) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            let base = next_base();
            let st = store.clone();
            s.push(
                run_tasks(tasks, per_task, move |t, i| {
                    let st = st.clone();
                    async move {
                        let u = set_update(SetKind::Heartbeat, tasks, t, i, base);
                        assert!(st.set(&u).await.expect("set").is_applied());
                        1
                    }
                })
                .await,
            );
            let base = next_base();
            p.push(pgbench(
                url,
                &path,
                tasks,
                per_task,
                &defines(&[
                    ("per", (KEYS as usize / tasks).to_string()),
                    ("nc", tasks.to_string()),
                    ("clock", base.to_string()),
                ]),
                1.0,
                Some(if sync {
                    "-c synchronous_commit=on"
                } else {
                    "-c synchronous_commit=off"
                }),
            ));
        }
        let name = format!("set heartbeat [{label}]");
        report.push(&name, "store", tasks, median(s), false);
        report.push(&name, "pgbench", tasks, median(p), false);
        if unlogged {
            psql(url, "ALTER TABLE awareness_entries SET LOGGED");
        }
    }
}

/// Bytes Redis uses per awareness entry (hash + expiry-index member, written by the Lua
/// script), from `used_memory` before and after loading `n` entries into the flushed database.
async fn redis_bytes_per_entry(cfg: &Config, sha: &str, n: i64) -> f64 {
    let conns = redis_conns(cfg, 1).await;
    let used = |reply: Reply| -> f64 {
        let Reply::Text(info) = reply else {
            panic!("INFO memory: {reply:?}")
        };
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    };
    let mut c = conns[0].lock().await;
    c.call(&[b"FLUSHDB"]).await.expect("FLUSHDB");
    let before = used(c.call(&[b"INFO", b"memory"]).await.expect("INFO"));
    drop(c);
    for k in 0..n {
        redis_set(&conns[0], sha, k / PER_DOC, k, &k.to_string(), 1).await;
    }
    let mut c = conns[0].lock().await;
    let after = used(c.call(&[b"INFO", b"memory"]).await.expect("INFO"));
    c.call(&[b"FLUSHDB"]).await.expect("FLUSHDB");
    (after - before) / n as f64
}

/// This process's resident set size, from /proc/self/statm (0 where there is none).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub async fn memory_store(cfg: &Config, report: &mut Report, sha: &str) {
    let n: i64 = if cfg.quick { 10_000 } else { 1_000_000 };
    report.note(&format!("in-memory store, {n} entries"));
    let redis_n = n.min(100_000);
    let redis = redis_bytes_per_entry(cfg, sha, redis_n).await;
    let before = crate::alloc::live_bytes();
    let rss_before = rss_bytes();
    let store = Arc::new(MemoryAwarenessStore::new());
    let loading = Instant::now();
    for k in 0..n {
        store
            .set(&update(k / PER_DOC, k, k.to_string(), 1))
            .await
            .expect("memory set");
    }
    let loaded = loading.elapsed();
    let bytes = crate::alloc::live_bytes().saturating_sub(before);
    let per_entry = bytes as f64 / n as f64;
    let rss_per_entry = rss_bytes().saturating_sub(rss_before) as f64 / n as f64;
    report.note(&format!(
        "  memory store: {n} entries loaded in {:.2} s; per entry {rss_per_entry:.0} bytes of RSS \
         growth ({per_entry:.0} bytes of heap, counted by the allocator; ~{}-byte state); Redis: \
         {redis:.0} bytes per entry (used_memory, {redis_n} entries) = {:.2}x Redis (RSS)",
        loaded.as_secs_f64(),
        STATE.len(),
        rss_per_entry / redis
    ));
    for tasks in CONCURRENCY {
        let per_task = cfg.count(200_000, tasks);
        let (mut s, mut g) = (Vec::new(), Vec::new());
        for _ in 0..cfg.runs {
            let base = next_base();
            let st = store.clone();
            s.push(
                run_tasks(tasks, per_task, move |t, i| {
                    let st = st.clone();
                    async move {
                        let k = (rand(t, i) % n as u64) as i64;
                        let u = update(k / PER_DOC, k, k.to_string(), base + i as i64);
                        st.set(&u).await.expect("set");
                        1
                    }
                })
                .await,
            );
            let st = store.clone();
            g.push(
                run_tasks(tasks, per_task, move |t, i| {
                    let st = st.clone();
                    async move {
                        let doc = (rand(t, i) % (n / PER_DOC) as u64).to_string();
                        st.get_all(&doc).await.expect("get_all").len() as u64
                    }
                })
                .await,
            );
        }
        report.push("memory set", "memory", tasks, median(s), false);
        report.push(
            "memory get_all (10 clients)",
            "memory",
            tasks,
            median(g),
            true,
        );
    }
}

pub async fn expiry(
    cfg: &Config,
    report: &mut Report,
    url: &str,
    store: &Arc<PostgresAwarenessStore>,
    stmts: &Statements,
) {
    let n = cfg.expiry_rows;
    let expired = n / 10;
    report.note(&format!("expiry: {expired} expired among {n} rows"));
    psql(url, "TRUNCATE awareness_entries");
    psql(
        url,
        &format!(
            "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, last_seen) \
             SELECT (k / 10)::text, k::text, k::text, '{STATE}'::jsonb, 1, \
             CASE WHEN k < {expired} THEN now() - interval '2 days' ELSE now() END \
             FROM generate_series(0, {}) k",
            n - 1
        ),
    );
    psql(url, "VACUUM ANALYZE awareness_entries");
    let reexpire = format!(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, last_seen) \
         SELECT (k / 10)::text, k::text, k::text, '{STATE}'::jsonb, 1, now() - interval '2 days' \
         FROM generate_series(0, {}) k \
         ON CONFLICT (document_id, client_id) DO UPDATE SET last_seen = excluded.last_seen",
        expired - 1
    );
    let get_path = script(
        &cfg.out_dir,
        "get_expired",
        &[],
        &stmts.get_expired,
        &["timeout::interval"],
    );
    let prune_path = script(
        &cfg.out_dir,
        "prune",
        &[],
        &stmts.prune_expired,
        &["timeout::interval"],
    );
    let (mut gs, mut gp, mut ps, mut pp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cfg.runs {
        let st = store.clone();
        gs.push(
            run_tasks(1, 1, move |_, _| {
                let st = st.clone();
                async move {
                    let got = st.get_expired().await.expect("get_expired");
                    assert_eq!(got.len() as i64, expired);
                    got.len() as u64
                }
            })
            .await,
        );
        gp.push(pgbench(
            url,
            &get_path,
            1,
            1,
            &defines(&[]),
            expired as f64,
            store_sync(),
        ));
        let st = store.clone();
        ps.push(
            run_tasks(1, 1, move |_, _| {
                let st = st.clone();
                async move {
                    let pruned = st.prune_expired().await.expect("prune_expired");
                    assert_eq!(pruned as i64, expired);
                    pruned
                }
            })
            .await,
        );
        psql(url, &reexpire);
        pp.push(pgbench(
            url,
            &prune_path,
            1,
            1,
            &defines(&[]),
            expired as f64,
            store_sync(),
        ));
        psql(url, &reexpire);
    }
    let (gs, ps) = (median(gs), median(ps));
    report.push("get_expired", "store", 1, gs, true);
    report.push("get_expired", "pgbench", 1, median(gp), true);
    report.push("prune_expired", "store", 1, ps, true);
    report.push("prune_expired", "pgbench", 1, median(pp), true);
    report.note(&format!(
        "  prune_expired of {expired} among {n}: {:.3} s; get_expired: {:.3} s",
        ps.p50.as_secs_f64(),
        gs.p50.as_secs_f64()
    ));
}

pub async fn heartbeat_workload(cfg: &Config, report: &mut Report, url: &str, stmts: &Statements) {
    let sets = cfg.heartbeat_sets;
    report.note(&format!(
        "heartbeat workload: {sets} sets over {KEYS} entries, 16 tasks, default autovacuum"
    ));
    crate::load_keys(url);
    psql(url, "VACUUM ANALYZE awareness_entries");
    psql(url, "SELECT pg_stat_reset()");
    let store = Arc::new(open_store(url, 16, PostgresOptions::default().synchronous_commit).await);
    let tasks = 16;
    let base = next_base();
    let st = store.clone();
    let fig = run_tasks(tasks, sets / tasks, move |t, i| {
        let st = st.clone();
        async move {
            let u = set_update(SetKind::Heartbeat, tasks, t, i, base);
            assert!(st.set(&u).await.expect("set").is_applied());
            1
        }
    })
    .await;
    report.note(&format!(
        "  {:.0} sets/s, p50 {:.3} ms, p99 {:.3} ms",
        fig.ops_per_s,
        ms(fig.p50),
        ms(fig.p99)
    ));
    // Closing the pool ends the backends, which flushes their table statistics.
    drop(store);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stat = psql(
        url,
        "SELECT n_tup_upd || ' ' || n_tup_hot_upd || ' ' || n_dead_tup || ' ' || autovacuum_count \
         FROM pg_stat_user_tables WHERE relname = 'awareness_entries'",
    );
    let v: Vec<f64> = stat.split(' ').filter_map(|x| x.parse().ok()).collect();
    let size = |url: &str| -> (f64, f64) {
        let s = psql(
            url,
            "SELECT pg_table_size('awareness_entries') || ' ' || pg_indexes_size('awareness_entries')",
        );
        let v: Vec<f64> = s.split(' ').filter_map(|x| x.parse().ok()).collect();
        (v[0], v[1])
    };
    let (table, index) = size(url);
    psql(url, "VACUUM FULL awareness_entries");
    let (table_full, index_full) = size(url);
    let kb = |b: f64| b / 1024.0;
    if v.len() == 4 {
        report.note(&format!(
            "  updates {:.0}, HOT {:.0} ({:.1} %), dead tuples {:.0}, autovacuum runs {:.0}",
            v[0],
            v[1],
            100.0 * v[1] / v[0].max(1.0),
            v[2],
            v[3]
        ));
    }
    report.note(&format!(
        "  size: table {:.0} kB + indexes {:.0} kB = {:.0} kB; after VACUUM FULL {:.0} + {:.0} = {:.0} kB; ratio {:.2}",
        kb(table),
        kb(index),
        kb(table + index),
        kb(table_full),
        kb(index_full),
        kb(table_full + index_full),
        (table + index) / (table_full + index_full)
    ));
    // The plans, as a long-lived pooled connection runs them (generic plans of the prepared
    // statements).
    // `set`'s parameters, typed and valued after their variables.
    let typed = |vars: &[&str]| -> (String, String) {
        let (types, args): (Vec<&str>, Vec<String>) = vars
            .iter()
            .map(|var| match *var {
                "doc" => ("text", "'1'".to_owned()),
                "k" | "conn" => ("text", "'10'".to_owned()),
                "state" => ("jsonb", format!("'{STATE}'")),
                "clock" => ("bigint", "99".to_owned()),
                "timeout::interval" => ("interval", format!("'{TIMEOUT}'")),
                "=NULL" => ("text", "NULL".to_owned()),
                literal => ("bigint", literal.trim_start_matches('=').to_owned()),
            })
            .unzip();
        (
            format!("({})", types.join(", ")),
            format!("({})", args.join(", ")),
        )
    };
    let (set_types, set_args) = typed(&SET_VARS);
    let (full_types, full_args) = typed(&SET_FULL_VARS);
    for (name, sql, types, args) in [
        ("set (fast path)", &stmts.set, set_types.as_str(), set_args),
        (
            "set (full)",
            &stmts.set_full,
            full_types.as_str(),
            full_args,
        ),
        (
            "get_all",
            &stmts.get_all,
            "(text, interval)",
            format!("('1', '{TIMEOUT}')"),
        ),
        (
            "remove_all_for_connection",
            &stmts.remove_all_for_connection,
            "(text, interval)",
            format!("('10', '{TIMEOUT}')"),
        ),
        (
            "get_expired",
            &stmts.get_expired,
            "(interval)",
            format!("('{TIMEOUT}')"),
        ),
        (
            "prune_expired",
            &stmts.prune_expired,
            "(interval)",
            format!("('{TIMEOUT}')"),
        ),
    ] {
        let plan = psql(
            url,
            &format!(
                "SET plan_cache_mode = force_generic_plan; PREPARE s{types} AS {sql}; \
                 EXPLAIN (COSTS OFF) EXECUTE s{args}"
            ),
        );
        report.note(&format!(
            "  EXPLAIN {name}:\n    {}",
            plan.replace('\n', "\n    ")
        ));
    }
}
