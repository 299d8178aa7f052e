//! Test harness: a PostgreSQL server (DATABASE_URL, else testcontainers; `make test` sets
//! DATABASE_URL to a throwaway cluster when neither exists), and an isolated,
//! migrated database per test, cloned from a template migrated once per migration set.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod pooler;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use synckit_awareness::{
    AwarenessStore, MemoryAwarenessStore, PostgresAwarenessStore, StoreOptions,
};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};
use tokio::sync::OnceCell;

/// Label on containers this harness starts, so `make test` can remove them afterwards.
pub const CONTAINER_LABEL: &str = "synckit-awareness-tests";

struct Server {
    /// URL of a database on the server the harness may connect to for admin work.
    admin_url: String,
    _container: Option<ContainerAsync<Postgres>>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return Server {
                    admin_url: url,
                    _container: None,
                };
            }
            let started = Postgres::default()
                .with_tag("17-alpine")
                .with_label(CONTAINER_LABEL, "1")
                .with_cmd(["-c", "max_connections=300", "-c", "fsync=off"])
                .start()
                .await;
            match started {
                Ok(container) => {
                    let host = container.get_host().await.expect("container host");
                    let port = container
                        .get_host_port_ipv4(5432)
                        .await
                        .expect("container port");
                    Server {
                        admin_url: format!("postgres://postgres:postgres@{host}:{port}/postgres"),
                        _container: Some(container),
                    }
                }
                Err(e) => {
                    // One short message, once, instead of a panic in every test.
                    eprintln!(
                        "\nthese tests need PostgreSQL and found none (testcontainers: {e}).\n\
                         Give them one of:\n  \
                         1. DATABASE_URL=postgres://user@host:5432/db (a role that may CREATE DATABASE)\n  \
                         2. a running Docker engine (postgres:17-alpine through testcontainers)\n  \
                         3. PostgreSQL's server programs, and run `make test`: it starts a throwaway cluster under target/\n"
                    );
                    std::process::exit(2)
                }
            }
        })
        .await
}

/// `url` with its database name replaced (the library's [`DatabaseUrl::with_database`]).
pub fn with_database(url: &str, database: &str) -> String {
    synckit_awareness::DatabaseUrl::new(url)
        .with_database(database)
        .expose()
        .to_owned()
}

pub async fn admin() -> AsyncPgConnection {
    let url = &server().await.admin_url;
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"))
}

fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Name of the template database for the current migrations: migrated once per server and
/// migration set, shared by every test process.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut hash: u64 = 0xcbf29ce484222325;
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
            let mut files: Vec<_> = walk(std::path::Path::new(dir));
            files.sort();
            for f in files {
                let bytes = std::fs::read(&f).expect("read migration");
                for b in f.to_string_lossy().bytes().chain(bytes) {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
                }
            }
            let name = format!("synckit_tmpl_{hash:016x}");
            let mut conn = admin().await;
            if database_exists(&mut conn, &name).await {
                return name;
            }
            let build = unique("synckit_tmpl_build");
            conn.batch_execute(&format!("CREATE DATABASE {build}"))
                .await
                .expect("create template");
            let build_url = with_database(&server().await.admin_url, &build);
            synckit_awareness::run_migrations_at(&build_url, &[])
                .await
                .expect("migrate template");
            // The migration connection may still be closing; retry the rename briefly.
            for attempt in 0..50 {
                match conn
                    .batch_execute(&format!("ALTER DATABASE {build} RENAME TO {name}"))
                    .await
                {
                    Ok(()) => break,
                    Err(_) if database_exists(&mut conn, &name).await => {
                        // Another test process won the race; use its template.
                        let _ = conn
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {build} WITH (FORCE)"))
                            .await;
                        break;
                    }
                    Err(e) if attempt == 49 => panic!("cannot finish the template: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            name
        })
        .await
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read migrations dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    use diesel::QueryableByName;
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Found>(conn)
        .await
        .map(|f| f.found)
        .unwrap_or(false)
}

/// A database of its own for one test; dropped (forcibly) when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// An empty database (no migrations).
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    /// A database with this crate's migrations applied.
    pub async fn migrated() -> Self {
        let template = template().await;
        Self::create(Some(template)).await
    }

    async fn create(template: Option<&str>) -> Self {
        let server = server().await;
        let name = unique("synckit_test");
        let mut conn = admin().await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        let mut attempt = 0;
        // CREATE DATABASE ... TEMPLATE fails while another session is connected to the
        // template (another process creating its copy); retry briefly.
        while let Err(e) = conn.batch_execute(&sql).await {
            attempt += 1;
            assert!(attempt < 100, "cannot create test database: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url: with_database(&server.admin_url, &name),
            name,
            admin_url: server.admin_url.clone(),
        }
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name))
    }

    /// Runs SQL statements on this database.
    pub async fn exec(&self, sql: &str) {
        self.conn()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A single number from a query (`SELECT count(*)::bigint AS n ...`).
    pub async fn scalar(&self, sql: &str) -> i64 {
        use diesel::QueryableByName;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(sql)
            .get_result::<N>(&mut self.conn().await)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    }

    pub async fn store(&self, options: StoreOptions) -> PostgresAwarenessStore {
        PostgresAwarenessStore::connect(
            &self.url,
            synckit_awareness::PostgresOptions::default()
                .with_store(options)
                .with_pool_size(8),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot open the store: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a runtime of our own on another thread.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin_url).await.ok()?;
                conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

/// Long timeout for ordinary tests, short for expiry tests.
pub const LONG: Duration = Duration::from_secs(60);
pub const SHORT: Duration = Duration::from_millis(700);
/// Sleep that makes every entry written before it expired for a `SHORT` view.
pub const PAST_SHORT: Duration = Duration::from_millis(800);

/// Two views of the same storage: `long` (60 s timeout) and `short` (0.7 s timeout).
pub struct Stores {
    pub long: Arc<dyn AwarenessStore>,
    pub short: Arc<dyn AwarenessStore>,
    pub db: Option<TestDb>,
    /// Another view of the same storage with other options (limits, say).
    pub view: Option<View>,
}

/// Builds a view of a test's storage with the given options.
pub type View = Arc<dyn Fn(StoreOptions) -> Arc<dyn AwarenessStore> + Send + Sync>;

impl Stores {
    /// A view of the same storage with `options` (panics for hand-made `Stores`).
    pub fn with_options(&self, options: StoreOptions) -> Arc<dyn AwarenessStore> {
        (self.view.as_ref().expect("these stores have no view"))(options)
    }
}

pub fn options(timeout: Duration) -> StoreOptions {
    StoreOptions::default().with_timeout(timeout)
}

pub async fn memory_stores() -> Stores {
    let long = MemoryAwarenessStore::with_options(options(LONG));
    let short = long.view_with_options(options(SHORT));
    let base = long.clone();
    Stores {
        long: Arc::new(long),
        short: Arc::new(short),
        db: None,
        view: Some(Arc::new(move |options| {
            Arc::new(base.view_with_options(options))
        })),
    }
}

pub async fn postgres_stores() -> Stores {
    postgres_stores_coalescing(true).await
}

/// [`postgres_stores`] with every `set` sent as its own statement.
pub async fn postgres_stores_uncoalesced() -> Stores {
    postgres_stores_coalescing(false).await
}

async fn postgres_stores_coalescing(coalesce: bool) -> Stores {
    let db = TestDb::migrated().await;
    let long = db
        .store(options(LONG))
        .await
        .with_coalesced_writes(coalesce);
    let short = PostgresAwarenessStore::from_pool(long.pool().clone(), options(SHORT))
        .with_coalesced_writes(coalesce);
    let pool = long.pool().clone();
    Stores {
        long: Arc::new(long),
        short: Arc::new(short),
        db: Some(db),
        view: Some(Arc::new(move |options| {
            Arc::new(
                PostgresAwarenessStore::from_pool(pool.clone(), options)
                    .with_coalesced_writes(coalesce),
            )
        })),
    }
}

/// Runs this test binary again as a child process that runs only the ignored test `test`,
/// with `env`; returns once the child printed `READY` (for tests that SIGKILL a real process).
pub async fn ready_child(test: &str, env: &[(&str, &str)]) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--ignored", "--nocapture"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == "READY")
    })
    .await
    .expect("read the child");
    assert!(ready, "the child ({test}) did not start");
    child
}

/// A URL of `db` through the test PgBouncer (transaction mode; started on first use).
pub async fn pooled_url(db: &TestDb) -> String {
    let server = server().await;
    pooler::pgbouncer(&server.admin_url).await.url(&db.name)
}

/// Stores on a fresh database through PgBouncer in transaction mode, the store told so
/// (`transaction_pooler`).
pub async fn postgres_stores_pooled() -> Stores {
    let db = TestDb::migrated().await;
    let url = pooled_url(&db).await;
    let long = PostgresAwarenessStore::connect(
        &url,
        synckit_awareness::PostgresOptions::default()
            .with_store(options(LONG))
            .with_pool_size(8)
            .with_transaction_pooler(true),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot open the store through PgBouncer: {e}"));
    let short = long.view_with_options(options(SHORT));
    let base = long.clone();
    Stores {
        long: Arc::new(long),
        short: Arc::new(short),
        db: Some(db),
        view: Some(Arc::new(move |options| {
            Arc::new(base.view_with_options(options))
        })),
    }
}

/// Stamps each named suite function once more, through PgBouncer in transaction mode:
/// `postgres_pooler::name`. Use beside [`both_stores!`].
macro_rules! pooled_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres_pooler {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::postgres_stores_pooled().await).await;
                }
            )*
        }
    };
}
pub(crate) use pooled_stores;

/// Stamps each `async fn name(stores: Stores)` named in the calling test file as one test per
/// store: `memory::name`, `postgres::name` (write coalescing on) and
/// `postgres_uncoalesced::name` (off, the default): one suite, every store (as River runs one conformance suite per
/// driver). Use as `common::both_stores!(test_a, test_b);`.
macro_rules! both_stores {
    // `both_stores!(and_pooler; a, b)`: also through PgBouncer ([`pooled_stores!`]).
    (and_pooler; $($name:ident),* $(,)?) => {
        common::both_stores!($($name),*);
        common::pooled_stores!($($name),*);
    };
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::memory_stores().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::postgres_stores().await).await;
                }
            )*
        }
        mod postgres_uncoalesced {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::postgres_stores_uncoalesced().await).await;
                }
            )*
        }
    };
}
pub(crate) use both_stores;

#[derive(diesel::QueryableByName)]
pub struct Scans {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub seq_scan: i64,
}

/// Sequential scans of `awareness_entries` so far, as the server counts them, after the
/// store's connection has flushed its own counters (tests/pruning.rs, tests/who.rs).
pub async fn seq_scans(store: &PostgresAwarenessStore) -> i64 {
    let mut conn = store.pool().get().await.expect("a connection");
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("pg_stat_force_next_flush (PostgreSQL 15 or later)");
    diesel::sql_query("SELECT 1")
        .execute(&mut *conn)
        .await
        .expect("flush");
    diesel::sql_query(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'awareness_entries'",
    )
    .get_result::<Scans>(&mut *conn)
    .await
    .expect("pg_stat_user_tables")
    .seq_scan
}
