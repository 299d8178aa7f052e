//! A PostgreSQL failover under two relay processes (issue 29): a primary and a streaming
//! standby (`tests/support/pg-pair.sh`: initdb, `pg_basebackup -R`), the relays on a multi-host
//! URL with `target_session_attrs=read-write`, and real y-websocket clients typing and moving
//! their cursors while the primary is crash-stopped and the standby promoted
//! (`web/test/failover.test.mjs`). `RELAY_FAILOVERS` (default 2) failovers in a row, each onto a
//! standby rebuilt from the new primary. Needs PostgreSQL's server programs (initdb, pg_ctl,
//! pg_basebackup, psql), Node.js and `npm ci` in `web/` (`make test` does it). Never skipped.

#[path = "support/node.rs"]
mod node;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(600);

fn pair_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/pg-pair.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The pair's directory; stopped and deleted on drop.
struct Pair(PathBuf);

impl Pair {
    fn start() -> (Self, u16, u16) {
        let dir = std::env::temp_dir().join(format!("synckit-pair-{}", std::process::id()));
        let (a, b) = (free_port(), free_port());
        let _ = Command::new(pair_script())
            .args(["stop", &dir.display().to_string()])
            .output();
        let out = Command::new(pair_script())
            .args([
                "init",
                &dir.display().to_string(),
                &a.to_string(),
                &b.to_string(),
            ])
            .output()
            .expect("tests/support/pg-pair.sh runs");
        assert!(
            out.status.success(),
            "could not start a primary and a standby (tests/support/pg-pair.sh init; needs \
             PostgreSQL's server programs: apt-get install postgresql, or PG_BIN):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (Self(dir), a, b)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new(pair_script())
            .args(["stop", &self.0.display().to_string()])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_under_two_relays_loses_nothing() {
    node::assert_node_modules();
    let (pair, a, b) = Pair::start();
    let url = format!(
        "postgres://postgres@127.0.0.1:{a},127.0.0.1:{b}/postgres?target_session_attrs=read-write"
    );
    node::run(
        &["test/failover.test.mjs"],
        &[
            ("RELAY_DB_URL_FAILOVER", url),
            ("RELAY_PAIR", pair_script().display().to_string()),
            ("RELAY_PAIR_DIR", pair.0.display().to_string()),
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
