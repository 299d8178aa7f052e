//! PostgreSQL-only behaviour: migrations (embedded and diesel's table), the schema validator,
//! start-up checks, settings-built stores and connection errors.

mod common;

use common::TestDb;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::MigrationHarness;
use serde_json::json;
use synckit_awareness::{
    run_migrations, run_migrations_at, AwarenessSettings, AwarenessStore, AwarenessUpdate, Error,
    PostgresAwarenessStore, PostgresOptions, Provider, SchemaDifference, SetOutcome, MIGRATIONS,
};

/// The versions of this crate's migrations, in order.
fn versions() -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("up.sql").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    names.sort();
    names.iter().map(|name| migration_version(name)).collect()
}

fn migration_version(name: &str) -> String {
    name.split('_').next().unwrap().replace('-', "")
}

async fn revert_all(db: &TestDb) {
    let conn = db.conn().await;
    tokio::task::spawn_blocking(move || {
        let mut harness = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        harness.revert_all_migrations(MIGRATIONS).expect("revert");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let report = run_migrations_at(&db.url, &[]).await.unwrap();
    assert!(report.already_applied.is_empty());
    assert_eq!(report.applied, versions());
    let store = db.store(common::options(common::LONG)).await;
    store
        .ensure_schema()
        .await
        .expect("migrated schema validates");
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .await,
        versions().len() as i64,
        "recorded in diesel's own table, so `diesel migration run` agrees"
    );

    // Idempotent.
    let again = run_migrations_at(&db.url, &[]).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, versions());

    revert_all(&db).await;
    let report = store.validate_schema().await.unwrap();
    assert_eq!(
        report.differences,
        [
            SchemaDifference::MissingTable,
            SchemaDifference::OtherTable {
                table: "awareness_instances",
                difference: Box::new(SchemaDifference::MissingTable)
            }
        ]
    );
    assert_eq!(
        report.to_string(),
        "table awareness_entries is missing; table awareness_instances is missing"
    );
    assert!(matches!(
        store.ensure_schema().await,
        Err(Error::SchemaMismatch(_))
    ));

    let report = store.migrate(&[]).await.unwrap();
    assert_eq!(report.applied, versions());
    store.ensure_schema().await.unwrap();
    let update = AwarenessUpdate::new("d", "c", "k", 1, Some(json!(1)));
    assert_eq!(
        synckit_awareness::AwarenessStore::set(&store, &update)
            .await
            .unwrap(),
        SetOutcome::Applied
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let runs = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { run_migrations_at(&url, &[]).await })
    });
    let mut applied = 0;
    for run in runs {
        let report = run.await.unwrap().expect("every runner succeeds");
        applied += report.applied.len();
    }
    assert_eq!(
        applied,
        versions().len(),
        "exactly one runner applied each migration"
    );
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .await,
        versions().len() as i64
    );
    db.store(common::options(common::LONG))
        .await
        .ensure_schema()
        .await
        .unwrap();
}

static HOST_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("tests/fixtures/host_migrations");

#[tokio::test(flavor = "multi_thread")]
async fn host_migrations_run_after_ours() {
    static EXTRA: [&diesel_migrations::EmbeddedMigrations; 1] = [&HOST_MIGRATIONS];
    let db = TestDb::empty().await;
    let report = run_migrations(db.conn().await, &EXTRA).await.unwrap();
    let mut expected = versions();
    expected.push("29990101000000".to_string());
    assert_eq!(report.applied, expected);
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM host_documents").await,
        0
    );
    let again = run_migrations(db.conn().await, &EXTRA).await.unwrap();
    assert!(again.applied.is_empty());
}

async fn differences_after(sql: &str) -> Vec<String> {
    let db = TestDb::migrated().await;
    let store = db.store(common::options(common::LONG)).await;
    db.exec(sql).await;
    store
        .validate_schema()
        .await
        .unwrap()
        .differences
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn validator_names_each_difference() {
    assert_eq!(
        differences_after("ALTER TABLE awareness_entries DROP COLUMN connection_id").await,
        [
            "column connection_id is missing",
            "index awareness_entries_connection_id_idx on (connection_id) is missing (remove_all_for_connection)"
        ]
    );
    assert_eq!(
        differences_after("ALTER TABLE awareness_entries ALTER COLUMN state TYPE json").await,
        ["column state has type json, expected jsonb"]
    );
    assert_eq!(
        differences_after("ALTER TABLE awareness_entries ALTER COLUMN clock_value TYPE integer")
            .await,
        ["column clock_value has type int4, expected int8"]
    );
    assert_eq!(
        differences_after("DROP INDEX awareness_entries_connection_id_idx").await,
        ["index awareness_entries_connection_id_idx on (connection_id) is missing (remove_all_for_connection)"]
    );
    assert_eq!(
        differences_after(
            "ALTER TABLE awareness_entries ALTER COLUMN last_seen DROP NOT NULL, \
             ALTER COLUMN state SET NOT NULL, ADD COLUMN extra int"
        )
        .await,
        [
            "column state is NOT NULL, expected nullable",
            "column last_seen is nullable, expected NOT NULL",
            "unexpected column extra"
        ]
    );
    assert_eq!(
        differences_after(
            "ALTER TABLE awareness_entries DROP CONSTRAINT awareness_entries_pkey, \
             ALTER COLUMN client_id TYPE text COLLATE \"default\""
        )
        .await,
        [
            "column client_id has collation default, expected \"C\"",
            "primary key is (), expected (document_id, client_id)"
        ]
    );
    assert_eq!(
        differences_after("DROP TABLE awareness_entries").await,
        ["table awareness_entries is missing"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_fails_fast_on_an_unmigrated_database() {
    let db = TestDb::empty().await;
    let err = PostgresAwarenessStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("table awareness_entries is missing"),
        "{message}"
    );
    assert!(message.contains("run the migrations"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_database_is_a_connection_error() {
    let options =
        PostgresOptions::default().with_acquire_timeout(std::time::Duration::from_millis(500));
    // Port 1 on loopback refuses connections.
    let err = PostgresAwarenessStore::connect("postgres://u:hunter2@127.0.0.1:1/db", options)
        .await
        .unwrap_err();
    assert!(err.is_connection_error(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_build_either_provider() {
    let db = TestDb::empty().await;
    let settings = AwarenessSettings::from_lookup(|key| match key {
        "SYNCKIT__AWARENESS__PROVIDER" => Some("postgres".into()),
        "SYNCKIT__AWARENESS__POSTGRES__URL" => Some(db.url.clone()),
        "SYNCKIT__AWARENESS__POSTGRES__MIGRATE_ON_START" => Some("true".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(settings.provider, Provider::Postgresql);
    let store = settings.build().await.unwrap();
    assert!(format!("{store:?}").starts_with("PostgresAwarenessStore"));
    let update = AwarenessUpdate::new("d", "c", "k", 1, Some(json!({"x": 1})));
    assert_eq!(store.set(&update).await.unwrap(), SetOutcome::Applied);
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        1
    );

    let memory = AwarenessSettings::default().build().await.unwrap();
    assert!(format!("{memory:?}").starts_with("MemoryAwarenessStore"));
}

#[tokio::test(flavor = "multi_thread")]
async fn database_rejects_rows_that_break_the_input_rules() {
    // The CHECK constraints hold even for rows written by other tools.
    let db = TestDb::migrated().await;
    let mut conn = db.conn().await;
    for sql in [
        "INSERT INTO awareness_entries VALUES ('', 'c', 'k', NULL, 1, now())",
        "INSERT INTO awareness_entries VALUES ('d', 'c', 'k', NULL, -1, now())",
    ] {
        let result = diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, sql).await;
        assert!(result.is_err(), "{sql} should be refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_read_as_sentences_in_debug_too() {
    let db = TestDb::empty().await;
    let err = PostgresAwarenessStore::connect(&db.url, PostgresOptions::default())
        .await
        .unwrap_err();
    // What `fn main() -> Result<(), Error>` prints on an unmigrated database.
    let debug = format!("{err:?}");
    assert_eq!(debug, err.to_string());
    assert!(debug.contains("synckit-awareness migrate"), "{debug}");
    assert!(!debug.contains("SchemaReport"), "{debug}");
    // The developer's view keeps the structure.
    assert!(
        format!("{err:#?}").starts_with("SchemaMismatch("),
        "{err:#?}"
    );
}

/// A pool built with diesel-async's default manager, as a user might.
async fn plain_pool(
    url: &str,
) -> synckit_awareness::diesel_async::pooled_connection::bb8::Pool<
    synckit_awareness::diesel_async::AsyncPgConnection,
> {
    use synckit_awareness::diesel_async::pooled_connection::{
        bb8::Pool, AsyncDieselConnectionManager,
    };
    Pool::builder()
        .max_size(4)
        .connection_timeout(std::time::Duration::from_millis(400))
        .build(AsyncDieselConnectionManager::new(url))
        .await
        .expect("pool")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_that_cannot_connect_is_never_blamed_on_its_size() {
    // Port 1 on loopback refuses connections.
    let store = PostgresAwarenessStore::from_pool(
        plain_pool("postgres://u@127.0.0.1:1/db").await,
        Default::default(),
    );
    for attempt in 0..3 {
        let err = store.get("d", "c").await.unwrap_err();
        assert!(
            matches!(err, synckit_awareness::Error::Connection(_)),
            "attempt {attempt}: {err:#?}"
        );
        assert!(!err.to_string().contains("pool size"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_without_tls_says_how_to_get_it() {
    let db = TestDb::migrated().await;
    let url = format!(
        "{}?sslmode=require",
        db.url.split('?').next().unwrap_or(&db.url)
    );
    let store = PostgresAwarenessStore::from_pool(plain_pool(&url).await, Default::default());
    let err = store.get("d", "c").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("TLS"), "{message}");
    assert!(
        message.contains("synckit_awareness::build_pool"),
        "{message}"
    );

    // The crate's own pool on the same URL speaks TLS when the server offers it, and fails
    // with the reason when it does not — never with a bare timeout.
    match synckit_awareness::build_pool(&url, &PostgresOptions::default()).await {
        Ok(pool) => {
            let store = PostgresAwarenessStore::from_pool(pool, Default::default());
            match store.get("d", "c").await {
                Ok(found) => assert_eq!(found, None),
                Err(e) => assert!(e.to_string().contains("TLS"), "{e}"),
            }
        }
        Err(e) => assert!(e.is_connection_error(), "{e}"),
    }
}
