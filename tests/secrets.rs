//! Secrets: a password in the connection URL never reaches Debug/Display/Serialize of settings,
//! error messages or tracing output; traces carry ids, outcome and duration, never state.
//! Alone in its test binary, so the thread-local subscriber sees every span of this test and
//! no other test's.

mod common;
#[path = "support/roles.rs"]
mod roles;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestDb;
use roles::AppRole;
use serde_json::json;
use synckit_awareness::{
    AwarenessSettings, AwarenessStore, AwarenessUpdate, DatabaseUrl, Error, PostgresAwarenessStore,
    PostgresOptions, SetOutcome,
};

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn passwords_never_reach_debug_display_errors_or_traces() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // current_thread runtime: every task of this test, the pool's included, logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::migrated().await;
    let role = AppRole::create(&db).await;
    let password = role.password.clone();
    let mut texts = Vec::new();

    // Settings: Debug, Display, serialization.
    let settings: AwarenessSettings = serde_json::from_value(json!({
        "provider": "postgres",
        "postgres": { "url": role.url },
    }))
    .unwrap();
    texts.push(format!("{settings:?}"));
    texts.push(serde_json::to_string(&settings).unwrap());
    let url = DatabaseUrl::new(role.url.clone());
    texts.push(format!("{url} {url:?}"));

    // Errors: an unreachable server, a bad URL, a bad sslrootcert, all with the password in it.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let quick = PostgresOptions::default().with_acquire_timeout(Duration::from_millis(500));
    for bad in [
        format!("postgres://app:{password}@127.0.0.1:{closed_port}/x"),
        format!("postgres://app:{password}@127.0.0.1:notaport/x"),
        format!("postgres://app:{password}@localhost/x?sslmode=verify-full&sslrootcert=/no/ca.pem"),
        format!("host=127.0.0.1 port={closed_port} user=app password={password}"),
    ] {
        let err = PostgresAwarenessStore::connect(&bad, quick)
            .await
            .expect_err("cannot connect");
        assert!(
            err.is_connection_error() || matches!(err, Error::Connection(_)),
            "{err:?}"
        );
        texts.push(format!("{err} {err:?}"));
    }
    let err = synckit_awareness::run_migrations_at(
        &format!("postgres://app:{password}@127.0.0.1:{closed_port}/x"),
        &[],
    )
    .await
    .expect_err("cannot migrate");
    texts.push(format!("{err} {err:?}"));

    // Store operations through the role, traced; the state carries a marker that must not be
    // traced either.
    let store = PostgresAwarenessStore::connect(&role.url, PostgresOptions::default())
        .await
        .expect("store");
    texts.push(format!("{store:?}"));
    let marker = "STATE-CONTENTS-MUST-NOT-BE-TRACED";
    let update = AwarenessUpdate::new("traced-doc", "traced-client", "k", 3, Some(json!(marker)));
    assert_eq!(store.set(&update).await.unwrap(), SetOutcome::Applied);
    assert_eq!(store.set(&update).await.unwrap(), SetOutcome::Stale);
    store.get("traced-doc", "traced-client").await.unwrap();
    store.get_all("traced-doc").await.unwrap();

    let traced = captured.text();
    for text in texts.iter().chain([&traced]) {
        assert!(!text.contains(&password), "password leaked into: {text}");
    }
    assert!(
        !traced.contains(marker),
        "state contents leaked into traces: {traced}"
    );
    // One span per operation, with ids, outcome and duration.
    let set_spans: Vec<&str> = traced
        .lines()
        .filter(|l| l.contains("awareness.set") && l.contains("close"))
        .collect();
    assert_eq!(set_spans.len(), 2, "{traced}");
    for (line, outcome) in set_spans.iter().zip(["applied", "stale"]) {
        for want in [
            "document_id=\"traced-doc\"".to_string(),
            "client_id=\"traced-client\"".to_string(),
            "clock=3".to_string(),
            format!("outcome=\"{outcome}\""),
            "elapsed_us=".to_string(),
        ] {
            assert!(line.contains(&want), "{want} missing in {line}");
        }
    }
    assert!(traced.contains("awareness.get"), "{traced}");
    assert!(traced.contains("outcome=\"found\""), "{traced}");
}
