//! The `synckit-awareness` binary against a real PostgreSQL (one database per test, from the
//! same harness as the other suites): exit codes, output, and what it does to the table.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::Command;
use common::{options, TestDb, LONG};
use predicates::prelude::*;
use serde_json::{json, Value};
use synckit_awareness::{AwarenessStore, AwarenessUpdate};

const BIN: &str = env!("CARGO_BIN_EXE_synckit-awareness");

/// Generous bound for a process to react, only there so a hang fails instead of blocking CI.
const HANG: Duration = Duration::from_secs(60);

/// The CLI pointed at `url` through `DATABASE_URL`, with no settings leaking in from the
/// environment the tests run in.
fn cli(url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DATABASE_URL", url)
        .env("COLUMNS", "200")
        .env_remove("SYNCKIT__AWARENESS__POSTGRES__URL")
        .env_remove("SYNCKIT__AWARENESS__TIMEOUT_MS")
        .env_remove("SYNCKIT__AWARENESS__PROVIDER");
    cmd
}

fn version() -> String {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .min()
        .unwrap()
        .split('_')
        .next()
        .unwrap()
        .replace('-', "")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn update(
    doc: &str,
    client: &str,
    conn: &str,
    clock: i64,
    state: Option<Value>,
) -> AwarenessUpdate {
    AwarenessUpdate::new(doc, client, conn, clock, state)
}

/// doc-1: alice and bob live, carol a tombstone, dave expired; doc-2: erin live, frank
/// expired. Written through the library; expiry is set by moving `last_seen` back an hour.
async fn populate(db: &TestDb) {
    let store = db.store(options(LONG)).await;
    let updates = [
        update(
            "doc-1",
            "alice",
            "ws-1",
            3,
            Some(json!({"user": "alice", "cursor": 17})),
        ),
        update("doc-1", "bob", "ws-2", 1, Some(json!({"user": "bob"}))),
        update("doc-1", "carol", "ws-3", 2, Some(json!({"user": "carol"}))),
        update("doc-1", "carol", "ws-3", 3, None),
        update("doc-1", "dave", "ws-4", 1, Some(json!({"user": "dave"}))),
        update("doc-2", "erin", "ws-5", 1, Some(json!({"user": "erin"}))),
        update("doc-2", "frank", "ws-6", 1, Some(json!({"user": "frank"}))),
    ];
    for u in &updates {
        assert!(store.set(u).await.unwrap().is_applied(), "{u:?}");
    }
    db.exec(
        "UPDATE awareness_entries SET last_seen = now() - interval '1 hour' \
         WHERE client_id IN ('dave', 'frank')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_on_an_empty_database_then_check_passes() {
    let db = TestDb::empty().await;
    let v = version();

    cli(&db.url)
        .args(["migrate", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("pending  {v}")))
        .stdout(predicate::str::contains("nothing was changed"));
    cli(&db.url)
        .arg("check")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "table awareness_entries is missing",
        ));
    cli(&db.url)
        .arg("stats")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"))
        .stderr(predicate::str::contains(
            "hint: run `synckit-awareness migrate`",
        ));

    cli(&db.url)
        .arg("migrate")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "applied  {v}  (this run)"
        )));
    cli(&db.url)
        .arg("check")
        .assert()
        .success()
        .stdout("schema ok\n");
    cli(&db.url)
        .arg("migrate")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("applied  {v}\n")))
        .stdout(predicate::str::contains("up to date"));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_every_difference_and_exits_1() {
    let db = TestDb::migrated().await;
    db.exec("ALTER TABLE awareness_entries DROP COLUMN connection_id")
        .await;
    cli(&db.url)
        .arg("check")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("column connection_id is missing"))
        .stdout(predicate::str::contains(
            "index awareness_entries_connection_id_idx on (connection_id) is missing",
        ))
        .stderr(predicate::str::contains("synckit-awareness migrate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_live_entries_as_a_table_and_as_json_lines() {
    let db = TestDb::migrated().await;
    populate(&db).await;

    let out = cli(&db.url)
        .args(["list", "doc-1"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("CLIENT  CONNECTION  CLOCK  LAST SEEN  STATE"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("alice   ws-1        3      "),
        "{text}"
    );
    assert!(lines[1].contains("s ago"), "{text}");
    assert!(
        lines[1].ends_with(r#"{"user":"alice","cursor":17}"#),
        "{text}"
    );
    assert!(lines[2].starts_with("bob     ws-2        1"), "{text}");

    let out = cli(&db.url)
        .args(["list", "doc-1", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let entries: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["client_id"], "alice");
    assert_eq!(entries[0]["connection_id"], "ws-1");
    assert_eq!(entries[0]["clock"], 3);
    assert_eq!(entries[0]["state"], json!({"user": "alice", "cursor": 17}));
    assert_eq!(entries[0]["expired"], false);
    assert_eq!(entries[0]["tombstone"], false);
    assert!(entries[0]["age_ms"].as_u64().unwrap() < 3_600_000);
    assert_eq!(entries[1]["client_id"], "bob");

    cli(&db.url)
        .args(["list", ""])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: invalid document_id: must not be empty",
        ));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_all_marks_tombstones_and_expired_entries() {
    let db = TestDb::migrated().await;
    populate(&db).await;

    let out = cli(&db.url)
        .args(["list", "doc-1", "--all"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let row = |client: &str| {
        text.lines()
            .find(|l| l.starts_with(client))
            .unwrap_or_else(|| panic!("no {client} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(
        text.starts_with("CLIENT  CONNECTION  CLOCK  LAST SEEN  STATUS     STATE"),
        "{text}"
    );
    assert_eq!(row("alice")[5], "live");
    assert_eq!(row("carol")[5..], ["tombstone", "-"]);
    assert_eq!(
        row("dave")[2..7],
        ["1", "1h", "ago", "expired", r#"{"user":"dave"}"#]
    );

    let out = cli(&db.url)
        .args(["list", "doc-1", "--all", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let flags: Vec<(String, bool, bool)> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["client_id"].as_str().unwrap().to_owned(),
                v["tombstone"].as_bool().unwrap(),
                v["expired"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("alice".into(), false, false),
            ("bob".into(), false, false),
            ("carol".into(), true, false),
            ("dave".into(), false, true),
        ]
    );

    // --timeout overrides the settings: with two hours, dave's hour-old entry is live again.
    cli(&db.url)
        .args(["list", "doc-1", "--timeout", "2h"])
        .assert()
        .success()
        .stdout(predicate::str::contains("dave"));
    cli(&db.url)
        .args(["list", "doc-1"])
        .env("SYNCKIT__AWARENESS__TIMEOUT_MS", "7200000")
        .assert()
        .success()
        .stdout(predicate::str::contains("dave"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shortens_the_state_to_the_terminal_width() {
    let db = TestDb::migrated().await;
    let store = db.store(options(LONG)).await;
    let long = "x".repeat(500);
    store
        .set(&update(
            "doc-1",
            "alice",
            "ws-1",
            1,
            Some(json!({ "note": long })),
        ))
        .await
        .unwrap();
    let out = cli(&db.url)
        .args(["list", "doc-1"])
        .env("COLUMNS", "60")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let row = text.lines().nth(1).unwrap();
    assert_eq!(row.chars().count(), 60, "{text}");
    assert!(row.ends_with('…'), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_expired_entries_and_says_how_many() {
    let db = TestDb::migrated().await;
    populate(&db).await;
    cli(&db.url)
        .arg("prune")
        .assert()
        .success()
        .stdout("pruned 2 expired entries\n");
    assert_eq!(
        db.scalar(
            "SELECT count(*) AS n FROM awareness_entries WHERE client_id IN ('dave', 'frank')"
        )
        .await,
        0
    );
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        4
    );
    cli(&db.url)
        .arg("prune")
        .assert()
        .success()
        .stdout("pruned 0 expired entries\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_says_entry_for_one() {
    let db = TestDb::migrated().await;
    populate(&db).await;
    db.exec("DELETE FROM awareness_entries WHERE client_id = 'frank'")
        .await;
    cli(&db.url)
        .arg("prune")
        .assert()
        .success()
        .stdout("pruned 1 expired entry\n");
}

/// Every statement of the CLI runs with the settings' session settings: a prune blocked by a
/// lock is cancelled by `statement_timeout` instead of waiting for the lock.
#[tokio::test(flavor = "multi_thread")]
async fn commands_run_with_the_session_settings() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::migrated().await;
    populate(&db).await;
    let mut hostage = db.conn().await;
    hostage
        .batch_execute("BEGIN; LOCK TABLE awareness_entries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    cli(&db.url)
        .env("SYNCKIT__AWARENESS__POSTGRES__STATEMENT_TIMEOUT_MS", "300")
        .arg("prune")
        .timeout(HANG)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("statement timeout"));
    hostage.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        6,
        "the cancelled prune deleted nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_gets_its_own_hint() {
    let db = TestDb::empty().await;
    let url = common::with_database(&db.url, "synckit_no_such_database");
    let out = cli(&url).arg("check").assert().code(2).get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        stderr.contains("hint: the server is up but has no such database"),
        "{stderr}"
    );
}

#[test]
fn timeout_is_refused_where_it_does_nothing() {
    for command in ["migrate", "check"] {
        Command::new(BIN)
            .args([command, "--timeout", "10s"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--timeout"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_counts_match_the_table() {
    let db = TestDb::migrated().await;
    populate(&db).await;
    let out = cli(&db.url)
        .args(["stats", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(stats["total"], 6);
    assert_eq!(stats["live"], 3);
    assert_eq!(stats["tombstones"], 1);
    assert_eq!(stats["expired"], 2);
    assert_eq!(stats["documents"], 2);
    assert_eq!(stats["active_documents"], 2);
    assert_eq!(stats["timeout_ms"], 30_000);
    assert!(stats["table_bytes"].as_i64().unwrap() > 0);
    assert!(stats["index_bytes"].as_i64().unwrap() > 0);
    assert_eq!(
        stats["busiest_documents"],
        json!([
            {"document_id": "doc-1", "live": 2, "total": 4},
            {"document_id": "doc-2", "live": 1, "total": 2},
        ])
    );
    for key in [
        "updates",
        "hot_updates",
        "dead_tuples",
        "last_autovacuum",
        "hot_update_ratio",
    ] {
        assert!(stats.get(key).is_some(), "missing {key}: {stats}");
    }

    cli(&db.url)
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "entries          6 (live 3, tombstones 1, expired 2; timeout 30s; each entry counts \
             once, an expired one as expired whatever its state)",
        ))
        .stdout(predicate::str::contains(
            "documents        2 (2 with live entries)",
        ))
        .stdout(predicate::str::contains(
            "busiest          doc-1: 2 live, 4 stored",
        ))
        .stdout(predicate::str::contains("last autovacuum"));
}

#[test]
fn an_unreachable_database_exits_2_with_one_line_and_a_hint_but_no_password() {
    // Port 1 on the loopback interface: nothing listens there, so the connection is refused.
    let out = Command::new(BIN)
        .args([
            "check",
            "--database-url",
            "postgres://someone:hunter2@127.0.0.1:1/nowhere",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("error: cannot connect to postgres://someone:***@127.0.0.1:1/nowhere"),
        "{stderr}"
    );
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_database_and_bad_usage_exit_2() {
    Command::new(BIN)
        .arg("stats")
        .env_remove("DATABASE_URL")
        .env_remove("SYNCKIT__AWARENESS__POSTGRES__URL")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: no database given"))
        .stderr(predicate::str::contains("hint: pass --database-url"));
    Command::new(BIN).arg("frobnicate").assert().code(2);
    Command::new(BIN)
        .args(["prune", "--every", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--every"));
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in ["migrate", "check", "list", "prune", "stats"] {
        Command::new(BIN)
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example:"))
            .stdout(predicate::str::contains(format!("synckit-awareness {sub}")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_every_runs_until_sigterm_and_stops_cleanly() {
    let db = TestDb::migrated().await;
    populate(&db).await;
    let mut child = std::process::Command::new(BIN)
        .args(["prune", "--every", "100ms"])
        .env("DATABASE_URL", &db.url)
        .env_remove("SYNCKIT__AWARENESS__TIMEOUT_MS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Read stdout on a thread so the test can wait for a line with a hang detector.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &mut Vec<String>, wanted: &str| loop {
        let line = rx
            .recv_timeout(HANG)
            .unwrap_or_else(|e| panic!("no {wanted:?} line ({e}); saw {seen:?}"));
        seen.push(line.clone());
        if line.contains(wanted) {
            break;
        }
    };
    wait_for(&mut seen, "stop with Ctrl-C or SIGTERM");
    wait_for(&mut seen, "pruned 2 expired entries");
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        4
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(&mut seen, "received SIGTERM, stopping");
    wait_for(&mut seen, "stopped after");

    let deadline = std::time::Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("prune --every did not exit after SIGTERM; saw {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "saw {seen:?}");
}

/// The library calls behind `list`: without hidden entries they return exactly what the
/// store's reads return, so the CLI never disagrees with a server on who is present.
#[tokio::test(flavor = "multi_thread")]
async fn inspect_document_agrees_with_get_all() {
    let db = TestDb::migrated().await;
    populate(&db).await;
    let store = db.store(options(std::time::Duration::from_secs(30))).await;
    for doc in ["doc-1", "doc-2", "doc-none"] {
        let listed: Vec<_> = store
            .inspect_document(doc, false)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.entry)
            .collect();
        assert_eq!(listed, store.get_all(doc).await.unwrap(), "{doc}");
    }
    let all = store.inspect_document("doc-1", true).await.unwrap();
    let expired: Vec<&str> = all
        .iter()
        .filter(|i| i.expired)
        .map(|i| i.entry.client_id.as_str())
        .collect();
    assert_eq!(expired, ["dave"]);
    let stale: Vec<String> = store
        .get_expired()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(stale, ["dave", "frank"]);
    assert!(all
        .iter()
        .all(|i| i.age < std::time::Duration::from_secs(2 * 3600)));
}
