//! A primary and a streaming standby for failover tests (`tests/support/pg-pair.sh`: initdb,
//! `pg_basebackup -R`, TLS on), on two free ports; stopped and deleted on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pair {
    pub dir: PathBuf,
    /// The first primary's port, then the standby's.
    pub ports: [u16; 2],
}

/// The script: in this crate, or two levels up from the relay's (which includes this file).
pub fn script() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [".", "../.."]
        .iter()
        .map(|up| root.join(up).join("tests/support/pg-pair.sh"))
        .find(|path| path.is_file())
        .expect("tests/support/pg-pair.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

impl Pair {
    /// Starts both; `synchronous`: a commit returns once the standby has it.
    pub fn start(name: &str, synchronous: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("synckit-pair-{name}-{}", std::process::id()));
        let ports = [free_port(), free_port()];
        let pair = Self { dir, ports };
        let _ = pair.run(&["stop"]);
        let (a, b) = (ports[0].to_string(), ports[1].to_string());
        let mut args = vec!["init", &a, &b];
        if synchronous {
            args.push("sync");
        }
        pair.run(&args);
        pair
    }

    /// The pair `start` made (for a thread that drives it; only the first value stops it).
    pub fn existing(dir: PathBuf, ports: [u16; 2]) -> std::mem::ManuallyDrop<Self> {
        std::mem::ManuallyDrop::new(Self { dir, ports })
    }

    /// Both hosts, the primary first, `target_session_attrs=read-write`, and `query` after.
    pub fn url(&self, query: &str) -> String {
        let [a, b] = self.ports;
        let sep = if query.is_empty() { "" } else { "&" };
        format!(
            "postgres://postgres@127.0.0.1:{a},127.0.0.1:{b}/postgres?target_session_attrs=read-write{sep}{query}"
        )
    }

    /// The current standby's URL (single host: what a wrong configuration reaches).
    pub fn standby_url(&self) -> String {
        let primary: u16 = self.run(&["primary"]).trim().parse().expect("a port");
        let standby = if primary == self.ports[0] {
            self.ports[1]
        } else {
            self.ports[0]
        };
        format!("postgres://postgres@127.0.0.1:{standby}/postgres")
    }

    /// Crash-stops the primary, waits `pause` seconds, promotes the standby; returns once it
    /// takes writes, with the seconds it took.
    pub fn fail_over(&self, pause: f64) -> f64 {
        self.run(&["failover", &pause.to_string()])
            .trim()
            .parse()
            .expect("seconds")
    }

    /// A new standby of the current primary (on the old primary's port).
    pub fn rebuild(&self) {
        self.run(&["rebuild"]);
    }

    /// `pg-pair.sh <command> DIR <rest>`; its output. Panics with the script's output on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let dir = self.dir.display().to_string();
        let mut all = vec![args[0], dir.as_str()];
        all.extend_from_slice(&args[1..]);
        let out = Command::new(script())
            .args(&all)
            .output()
            .expect("tests/support/pg-pair.sh runs");
        assert!(
            out.status.success(),
            "tests/support/pg-pair.sh {all:?} failed (it needs PostgreSQL's server programs: \
             apt-get install postgresql, or PG_BIN):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", &self.dir.display().to_string()])
            .output();
    }
}
