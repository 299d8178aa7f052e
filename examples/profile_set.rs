//! A fixed amount of `set` work through the public API, for instruction-count profiles:
//! `valgrind --tool=callgrind target/release/examples/profile_set` (instruction counts do not
//! depend on machine load, so two builds compare exactly).
//!
//! DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test?sslmode=disable): a server
//! where this role may CREATE DATABASE. Seeds 1,000 documents x 10 clients one `set` at a time,
//! then sends SETS heartbeats (default 2,000) from one task, and drops its database.

use std::time::Instant;

use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, DatabaseUrl, PostgresAwarenessStore, PostgresOptions,
};

const DB: &str = "synckit_profile_set";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into());
    let sets: i64 = std::env::var("SETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut conn = synckit_awareness::establish_connection(&admin).await?;
    use synckit_awareness::diesel_async::SimpleAsyncConnection;
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    conn.batch_execute(&format!("CREATE DATABASE {DB}")).await?;
    let url = DatabaseUrl::new(admin.as_str()).with_database(DB);
    synckit_awareness::run_migrations_at(url.expose(), &[]).await?;
    let store =
        PostgresAwarenessStore::connect(url.expose(), PostgresOptions::default().with_pool_size(1))
            .await?;
    let state = synckit_awareness::serde_json::json!({
        "user": {"name": "User 4711", "color": "#30bced"},
        "cursor": {"anchor": 1234, "head": 1240}, "v": 1
    });
    let update = |k: i64, clock: i64| {
        AwarenessUpdate::new(
            (k / 10).to_string(),
            k.to_string(),
            k.to_string(),
            clock,
            Some(state.clone()),
        )
    };
    for k in 0..10_000 {
        store.set(&update(k, 1)).await?;
    }
    let started = Instant::now();
    for i in 0..sets {
        let k = (i * 7919) % 10_000;
        store.set(&update(k, 2 + i)).await?;
    }
    println!(
        "{sets} heartbeats in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(store);
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    Ok(())
}
