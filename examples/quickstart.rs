//! A small, honest simulation of a collaboration server using only the public API.
//!
//! Run with `make demo` (or `cargo run --example quickstart`). With `DATABASE_URL` set it runs
//! on PostgreSQL (applying the embedded migrations first); otherwise on the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use synckit_awareness::{AwarenessSettings, AwarenessStore, AwarenessUpdate, Provider};

async fn show(store: &Arc<dyn AwarenessStore>, step: &str) -> synckit_awareness::Result<()> {
    println!("\n== {step}");
    for doc in ["doc-design", "doc-notes"] {
        let entries = store.get_all(doc).await?;
        println!("  {doc}: {} present", entries.len());
        for e in entries {
            let state = e.state.map(|s| s.to_string()).unwrap_or_default();
            println!(
                "    {:<8} conn={:<6} clock={:<3} {state}",
                e.client_id, e.connection_id, e.clock
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = AwarenessSettings::from_env()?;
    // A short timeout so the demo can show a client timing out within seconds.
    settings.timeout_ms = 1500;
    // The settings' own rule: PostgreSQL when a URL is set (unless the provider says memory).
    match (settings.effective_provider(), &settings.postgres.url) {
        (Provider::Postgresql, Some(url)) => {
            settings.postgres.migrate_on_start = true;
            println!(
                "Using PostgreSQL at {url}: applying this crate's migrations there first \
                 (creates the table awareness_entries if missing), then writing demo entries \
                 to documents doc-design and doc-notes."
            );
        }
        _ => println!("Using the in-memory store (set DATABASE_URL to run this on PostgreSQL)."),
    }
    let store = settings.build().await?;
    // Start from a clean slate in case an earlier run left entries behind.
    for (doc, client) in [
        ("doc-design", "alice"),
        ("doc-design", "bob"),
        ("doc-notes", "alice"),
        ("doc-notes", "carol"),
    ] {
        store.remove(doc, client).await?;
    }

    let join = |doc: &str, client: &str, conn: &str, clock: i64, color: &str| {
        AwarenessUpdate::new(
            doc,
            client,
            conn,
            clock,
            Some(json!({"user": client, "color": color, "cursor": null})),
        )
    };
    store
        .set(&join("doc-design", "alice", "ws-1", 1, "#e91e63"))
        .await?;
    store
        .set(&join("doc-design", "bob", "ws-2", 1, "#2196f3"))
        .await?;
    store
        .set(&join("doc-notes", "alice", "ws-1", 1, "#e91e63"))
        .await?;
    store
        .set(&join("doc-notes", "carol", "ws-3", 1, "#4caf50"))
        .await?;
    show(&store, "three clients joined two documents").await?;

    let moved = AwarenessUpdate::new(
        "doc-design",
        "alice",
        "ws-1",
        2,
        Some(json!({"user": "alice", "color": "#e91e63", "cursor": {"x": 120, "y": 48}})),
    );
    println!(
        "\nalice moves her cursor (clock 2): {:?}",
        store.set(&moved).await?
    );
    let bob_moved = AwarenessUpdate::new(
        "doc-design",
        "bob",
        "ws-2",
        2,
        Some(json!({"user": "bob", "color": "#2196f3", "cursor": {"x": 40, "y": 300}})),
    );
    println!(
        "bob moves his cursor (clock 2): {:?}",
        store.set(&bob_moved).await?
    );
    let late = AwarenessUpdate::new(
        "doc-design",
        "alice",
        "ws-1",
        1,
        Some(json!({"user": "alice", "cursor": {"x": 0, "y": 0}})),
    );
    println!(
        "a delayed older update (clock 1) arrives: {:?}",
        store.set(&late).await?
    );
    show(&store, "cursors moved, stale update rejected").await?;

    let removed = store.remove_all_for_connection("ws-1").await?;
    println!("\nconnection ws-1 dropped; leaves to broadcast:");
    for e in &removed {
        let leave = e.leave_update();
        println!(
            "  {} in {} -> clock {}, state none",
            leave.client_id, leave.document_id, leave.clock
        );
    }
    show(&store, "after ws-1 disconnected").await?;

    // bob keeps sending heartbeats (his state again, next clock); carol goes silent.
    for clock in 3..=5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let heartbeat = AwarenessUpdate {
            clock,
            ..bob_moved.clone()
        };
        store.set(&heartbeat).await?;
    }
    show(
        &store,
        "carol was silent longer than the 1.5 s timeout: absent from reads, stored until pruned",
    )
    .await?;
    let expired = store.take_expired().await?;
    println!("\npruned {} timed-out client(s):", expired.len());
    for e in &expired {
        println!(
            "  {} in {} (last clock {})",
            e.client_id, e.document_id, e.clock
        );
    }
    show(&store, "after pruning").await?;
    store.remove("doc-design", "bob").await?;
    println!("\ndone.");
    Ok(())
}
