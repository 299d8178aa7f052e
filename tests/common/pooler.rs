//! A real PgBouncer in transaction mode in front of the test server, started once per test
//! process (as `make test` starts the throwaway cluster): every database of the server is
//! reachable through it by name. It ends with the test process (a watchdog shell kills it).
//!
//! The binary: `PGBOUNCER`, else `pgbouncer` on PATH, else Debian's `/usr/sbin/pgbouncer`;
//! `make test` checks for it before compiling. PgBouncer refuses to run as root: as root it
//! runs as the `postgres` user (`-u postgres`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

pub struct PgBouncer {
    pub port: u16,
    /// The watchdog shell (it outlives nothing: it ends with this process).
    _watchdog: std::process::Child,
    /// The server's URL with the host and port replaced by the pooler's.
    base_url: String,
}

static POOLER: OnceCell<PgBouncer> = OnceCell::const_new();

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("PGBOUNCER") {
        return PathBuf::from(path);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v pgbouncer"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "these tests run through PgBouncer and found none: apt-get install -y pgbouncer \
                 (or set PGBOUNCER=/path/to/pgbouncer)"
            )
        })
}

/// `(user, password, host, port)` of a `postgres://user[:password]@host:port/db` URL.
fn parts(url: &str) -> (String, Option<String>, String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (auth, hostpart) = rest.split_once('@').unwrap_or(("postgres", rest));
    let (user, password) = match auth.split_once(':') {
        Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
        None => (auth.to_owned(), None),
    };
    let hostport = hostpart
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:5432");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (
        user,
        password,
        host.trim_matches(['[', ']']).to_owned(),
        port.parse().unwrap_or(5432),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The pooler in front of the server whose admin URL is `admin_url`.
pub async fn pgbouncer(admin_url: &str) -> &'static PgBouncer {
    POOLER
        .get_or_init(|| async { start(admin_url).await })
        .await
}

async fn start(admin_url: &str) -> PgBouncer {
    let (user, password, host, server_port) = parts(admin_url);
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("synckit-pgbouncer-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("pgbouncer directory");
    // Readable and writable by the `postgres` user PgBouncer switches to as root.
    let _ = Command::new("chmod").arg("0777").arg(&dir).status();
    let password = password
        .map(|p| format!(" password={p}"))
        .unwrap_or_default();
    let config = format!(
        "[databases]\n* = host={host} port={server_port} user={user}{password}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = any\n\
         pool_mode = transaction\nmax_client_conn = 2000\ndefault_pool_size = 20\n\
         max_db_connections = 0\nserver_reset_query =\n\
         ignore_startup_parameters = extra_float_digits,options,application_name\n\
         unix_socket_dir =\nlogfile = {log}\npidfile = {pid}\n",
        log = dir.join("pgbouncer.log").display(),
        pid = dir.join("pgbouncer.pid").display(),
    );
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, config).expect("pgbouncer.ini");
    let user_flag = if is_root() { "-u postgres" } else { "" };
    // The watchdog ends PgBouncer when this test process ends, however it ends.
    let script = format!(
        "{bin} {user_flag} {ini} & child=$!; while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done; kill $child 2>/dev/null",
        bin = binary().display(),
        ini = ini.display(),
        parent = std::process::id(),
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        // Its log file has everything (quoted below when it does not start).
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgbouncer");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "pgbouncer did not listen on {port} within 15 s; its log: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let without_query = admin_url.split('?').next().unwrap_or(admin_url);
    let base_url = without_query.replacen(
        &format!("{host}:{server_port}"),
        &format!("127.0.0.1:{port}"),
        1,
    );
    PgBouncer {
        port,
        _watchdog: watchdog,
        base_url,
    }
}

impl PgBouncer {
    /// The URL of `database` through the pooler (plaintext: the pooler has no TLS here).
    pub fn url(&self, database: &str) -> String {
        format!(
            "{}?sslmode=disable",
            super::with_database(&self.base_url, database)
        )
    }
}
