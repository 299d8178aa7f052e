//! End to end: the Node.js tests in `web/test/` run real y-websocket providers (and the page in
//! headless Chromium) against relay processes of this binary sharing one PostgreSQL database.
//!
//! This test provides what they need: migrated databases from the shared harness (one for
//! the instance pair with the default 30 s timeout, one for the pair whose instance is killed,
//! with a 3 s timeout, one for the deployable pair, one for the documents' tests in
//! `web/test/documents.test.mjs`, one for who is here in `web/test/who.test.mjs`, one for
//! access in `web/test/access.test.mjs`; coalescing on and off in `web/test/coalescing.test.mjs`), the
//! binary's path, and where to put the reports and the
//! screenshot. The documents' tests also need `psql` (they kill a listener's backend).
//! The Node side starts the relays itself because it kills one with SIGKILL and restarts it on
//! the same port while its clients are connected. Needs Node.js, `npm ci` in `web/` and the
//! built page (`make test` does both), and Chromium at /usr/bin/chromium (or `CHROMIUM`).
//! Never skipped: anything missing is a failure that says what to do.

#[path = "../../../tests/common/mod.rs"]
mod common;

#[path = "support/node.rs"]
mod node;

use std::path::Path;
use std::time::Duration;

use node::target_dir;

const DEADLINE: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_real_clients_real_browser() {
    node::assert_node_modules();
    assert!(
        node::web_dir().join("dist/page.js").is_file(),
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
    let who = common::TestDb::migrated().await;
    let access = common::TestDb::migrated().await;
    let hooks = common::TestDb::migrated().await;
    let agents = common::TestDb::migrated().await;
    let report = target_dir().join("relay-e2e/report.json");
    let screenshot = target_dir().join("relay-e2e/relay-screenshot.png");
    let _ = std::fs::remove_file(&report);

    node::run(
        &[
            "test/relay.test.mjs",
            "test/documents.test.mjs",
            "test/who.test.mjs",
            "test/access.test.mjs",
            "test/coalescing.test.mjs",
            "test/webhooks.test.mjs",
            "test/agents.test.mjs",
        ],
        &[
            ("RELAY_DB_URL", db.url.clone()),
            ("RELAY_DB_URL_SHORT", short.url.clone()),
            ("RELAY_DB_URL_DEPLOY", deploy.url.clone()),
            ("RELAY_DB_URL_DOCS", docs.url.clone()),
            ("RELAY_DB_URL_WHO", who.url.clone()),
            ("RELAY_DB_URL_ACCESS", access.url.clone()),
            ("RELAY_DB_URL_HOOKS", hooks.url.clone()),
            ("RELAY_DB_URL_AGENTS", agents.url.clone()),
            (
                "RELAY_WHO_SCREENSHOT",
                target_dir()
                    .join("relay-e2e/relay-who-screenshot.png")
                    .display()
                    .to_string(),
            ),
            (
                "RELAY_DOCS_REPORT",
                target_dir()
                    .join("relay-e2e/documents.json")
                    .display()
                    .to_string(),
            ),
            ("RELAY_REPORT", report.display().to_string()),
            ("RELAY_SCREENSHOT", screenshot.display().to_string()),
            ("CHROMIUM", chromium.clone()),
            // Coalescing engaged in every room of two or more (the default starts at 32
            // connections), so these tests run with moves waiting for the tick;
            // coalescing.test.mjs runs it off as well.
            ("SYNCKIT_RELAY_AWARENESS_TICK_FROM", "2".into()),
        ],
        DEADLINE,
    )
    .await;
    println!(
        "report {}:\n{}",
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
