//! End to end: the Node.js tests in `web/test/` run real y-websocket providers (and the page in
//! headless Chromium) against relay processes of this binary sharing one PostgreSQL database.
//!
//! This test provides what they need: migrated databases from the shared harness (one for
//! the instance pair with the default 30 s timeout, one for the pair whose instance is killed,
//! with a 3 s timeout, one for the deployable pair, one for the documents' tests in
//! `web/test/documents.test.mjs`), the binary's path, and where to put the reports and the
//! screenshot. The documents' tests also need `psql` (they kill a listener's backend).
//! The Node side starts the relays itself because it kills one with SIGKILL and restarts it on
//! the same port while its clients are connected. Needs Node.js, `npm ci` in `web/` and the
//! built page (`make test` does both), and Chromium at /usr/bin/chromium (or `CHROMIUM`).
//! Never skipped: anything missing is a failure that says what to do.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(300);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn target_dir() -> PathBuf {
    // examples/relay -> the workspace's target/
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_real_clients_real_browser() {
    let web = web_dir();
    assert!(
        web.join("node_modules/y-websocket/package.json").is_file(),
        "examples/relay/web/node_modules is missing: run `make test` (or `npm ci --prefix examples/relay/web`)"
    );
    assert!(
        web.join("dist/page.js").is_file(),
        "the page is not built: run `make relay-web` (npm run build in examples/relay/web)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM"
    );

    let db = common::TestDb::migrated().await;
    let short = common::TestDb::migrated().await;
    let deploy = common::TestDb::migrated().await;
    let docs = common::TestDb::migrated().await;
    let report = target_dir().join("relay-e2e/report.json");
    let screenshot = target_dir().join("relay-e2e/relay-screenshot.png");
    let _ = std::fs::remove_file(&report);

    let started = Instant::now();
    let mut child = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "test/relay.test.mjs",
            "test/documents.test.mjs",
        ])
        .current_dir(&web)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_synckit-relay"))
        .env("RELAY_DB_URL", &db.url)
        .env("RELAY_DB_URL_SHORT", &short.url)
        .env("RELAY_DB_URL_DEPLOY", &deploy.url)
        .env("RELAY_DB_URL_DOCS", &docs.url)
        .env(
            "RELAY_DOCS_REPORT",
            target_dir().join("relay-e2e/documents.json"),
        )
        .env("RELAY_REPORT", &report)
        .env("RELAY_SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `node` (is Node.js >= 18 on PATH?): {e}"));
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = stdout
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let output = format!("--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("the Node.js relay tests failed ({status}):\n{output}"),
        None => panic!("the Node.js relay tests did not finish within {DEADLINE:?}:\n{output}"),
    }
    println!("{output}");
    println!(
        "node tests took {:.1} s; report {}:\n{}",
        started.elapsed().as_secs_f64(),
        report.display(),
        std::fs::read_to_string(&report).unwrap_or_default()
    );

    // Every client disconnected: no live presence left in either table (tombstones may stay
    // until they expire; they are not presence).
    for (name, db) in [("default pair", &db), ("killed pair", &short)] {
        let live = db
            .scalar("SELECT count(*)::bigint AS n FROM awareness_entries WHERE state IS NOT NULL")
            .await;
        assert_eq!(
            live, 0,
            "{name}: live rows left after every client disconnected"
        );
    }
    let crowd_rooms = db
        .scalar("SELECT count(DISTINCT document_id)::bigint AS n FROM awareness_entries WHERE document_id LIKE 'crowd-%'")
        .await;
    println!("crowd rooms with tombstones left: {crowd_rooms}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
