//! A throwaway PostgreSQL cluster started by the test itself (initdb + pg_ctl under a temp
//! directory, on a free port), for tests that restart the server or need TLS settings the shared
//! server does not have. Stopped and deleted on drop.
//!
//! Binaries: where `tests/support/with-postgres.sh --bindir` finds them. initdb
//! refuses to run as root, so as root every command runs as the `postgres` user (runuser).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where PostgreSQL's server programs are, as `make test` finds them (one lookup, in
/// `tests/support/with-postgres.sh --bindir`: `PG_BIN`, `pg_config`, Debian's directories, PATH).
fn pg_bin() -> PathBuf {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/with-postgres.sh"
    );
    match Command::new(script).arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => panic!(
            "this test starts its own PostgreSQL cluster and found no initdb/pg_ctl: install \
             PostgreSQL's server programs (e.g. apt-get install postgresql) or set PG_BIN to the \
             directory holding initdb and pg_ctl"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Runs a command, as `postgres` when we are root; panics with its output on failure.
fn run(program: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shell(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// initdb with trust authentication over TCP; `extra_conf` is appended to postgresql.conf
    /// before the first start (files it names can be placed with [`Cluster::dir`] first via
    /// `prepare`).
    pub fn start(extra_conf: &str, prepare: impl FnOnce(&Path)) -> Self {
        let bin = pg_bin();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("synckit-cluster-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if is_root() {
            shell(&format!("chown postgres {}", dir.display()));
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().into_owned();
        run(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        prepare(&data);
        if is_root() {
            shell(&format!("chown -R postgres {}", data.display()));
        }
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 100\n{extra_conf}\n",
            dir.display()
        );
        shell(&format!(
            "cat >> {}/postgresql.conf <<'EOF'\n{conf}\nEOF",
            data.display()
        ));
        let cluster = Self { dir, port, bin };
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        cluster
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let mut all = vec!["-D", data.as_str(), "-l", log.as_str()];
        all.extend_from_slice(args);
        run(&self.bin.join("pg_ctl"), &all);
    }

    /// URL of database `postgres` as superuser `postgres`, plus `query` (e.g. `sslmode=require`).
    pub fn url(&self, host: &str, query: &str) -> String {
        let sep = if query.is_empty() { "" } else { "?" };
        format!(
            "postgres://postgres@{host}:{}/postgres{sep}{query}",
            self.port
        )
    }

    /// Crash-stops the server (`pg_ctl stop -m immediate`: every backend dies at once, as on a
    /// power cut), then starts it again and waits until it accepts connections.
    pub fn restart_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }

    pub fn stop_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let program = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .args(["-D", &data, "stop", "-m", "immediate", "-w"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, written into the
/// cluster's data directory as server.crt / server.key; returns the CA certificate's path
/// (outside the data directory, readable by the test).
pub fn write_certificates(data: &Path, ca_dir: &Path) -> PathBuf {
    let d = data.display();
    let c = ca_dir.display();
    shell(&format!(
        "set -e; cd {c}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=synckit-test-ca \
           -keyout ca.key -out ca.crt 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout {d}/server.key \
           -out server.csr 2>/dev/null; \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext; \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile san.ext -out {d}/server.crt 2>/dev/null; \
         chmod 600 {d}/server.key"
    ));
    ca_dir.join("ca.crt")
}
