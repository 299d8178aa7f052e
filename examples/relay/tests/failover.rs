//! A PostgreSQL failover under two relay processes (issue 29): a primary and a streaming
//! standby (`tests/support/pg-pair.sh`: initdb, `pg_basebackup -R`), the relays on a multi-host
//! URL with `target_session_attrs=read-write`, and real y-websocket clients typing and moving
//! their cursors while the primary is crash-stopped and the standby promoted
//! (`web/test/failover.test.mjs`). `RELAY_FAILOVERS` (default 2) failovers in a row, each onto a
//! standby rebuilt from the new primary. Needs PostgreSQL's server programs (initdb, pg_ctl,
//! pg_basebackup, psql), Node.js and `npm ci` in `web/` (`make test` does it). Never skipped.

#[path = "support/node.rs"]
mod node;
#[path = "../../../tests/support/pair.rs"]
mod pair;

use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread")]
async fn failover_under_two_relays_loses_nothing() {
    node::assert_node_modules();
    let pair = pair::Pair::start("relay", false);
    let url = pair.url("");
    node::run(
        &["test/failover.test.mjs"],
        &[
            ("RELAY_DB_URL_FAILOVER", url),
            ("RELAY_PAIR", pair::script().display().to_string()),
            ("RELAY_PAIR_DIR", pair.dir.display().to_string()),
            (
                "RELAY_FAILOVERS",
                std::env::var("RELAY_FAILOVERS").unwrap_or_else(|_| "2".into()),
            ),
            (
                "RELAY_FAILOVER_REPORT",
                node::target_dir()
                    .join("relay-e2e/failover.json")
                    .display()
                    .to_string(),
            ),
        ],
        DEADLINE,
    )
    .await;
}
