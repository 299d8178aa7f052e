//! Unit tests of `settings.rs`.

use super::*;
use std::collections::HashMap;

#[test]
fn env_keys_mirror_the_section() {
    let env: HashMap<&str, &str> = [
        ("SYNCKIT__AWARENESS__PROVIDER", "Postgres"),
        ("SYNCKIT__AWARENESS__TIMEOUT_MS", "15000"),
        ("SYNCKIT__AWARENESS__POSTGRES__POOL_SIZE", "3"),
        ("SYNCKIT__AWARENESS__POSTGRES__SYNCHRONOUS_COMMIT", "true"),
        ("SYNCKIT__AWARENESS__POSTGRES__STATEMENT_TIMEOUT_MS", "2500"),
        ("DATABASE_URL", "postgres://u:hunter2@h/db"),
    ]
    .into();
    let s = AwarenessSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(s.provider, Provider::Postgresql);
    assert_eq!(s.timeout_ms, 15000);
    assert_eq!(s.postgres.pool_size, 3);
    assert!(s.postgres.synchronous_commit);
    assert_eq!(s.postgres.statement_timeout_ms, 2500);
    assert_eq!(
        s.postgres.url.as_ref().unwrap().expose(),
        "postgres://u:hunter2@h/db"
    );
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    let shown = s.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres.url=postgres://u:***@h/db"),
        "{shown}"
    );
    assert_eq!(s.store_options().timeout, Duration::from_secs(15));
}

#[test]
fn defaults_and_errors() {
    let s = AwarenessSettings::from_lookup(|_| None).unwrap();
    assert_eq!(s, AwarenessSettings::default());
    assert_eq!(s.provider, Provider::Auto);
    assert_eq!(s.effective_provider(), Provider::Memory);
    assert_eq!(s.timeout_ms, 30_000);

    let err = AwarenessSettings::from_lookup(|k| {
        (k == "SYNCKIT__AWARENESS__PROVIDER").then(|| "redis".to_string())
    })
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert!(
        err.to_string().contains("auto, memory, postgresql"),
        "{err}"
    );

    let err = AwarenessSettings::from_lookup(|k| {
        (k == "SYNCKIT__AWARENESS__TIMEOUT_MS").then(|| "soon".to_string())
    })
    .unwrap_err();
    assert!(err.to_string().contains("TIMEOUT_MS"), "{err}");

    let s = AwarenessSettings {
        provider: Provider::Postgresql,
        ..Default::default()
    };
    assert!(matches!(s.validate(), Err(Error::Config(_))));
}

#[test]
fn one_rule_for_the_provider() {
    let lookup = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let url_only =
        AwarenessSettings::from_lookup(lookup(&[("DATABASE_URL", "postgres://h/db")])).unwrap();
    assert_eq!(url_only.effective_provider(), Provider::Postgresql);
    let memory_chosen = AwarenessSettings::from_lookup(lookup(&[
        ("DATABASE_URL", "postgres://h/db"),
        ("SYNCKIT__AWARENESS__PROVIDER", "memory"),
    ]))
    .unwrap();
    assert_eq!(memory_chosen.effective_provider(), Provider::Memory);
    let old_name = AwarenessSettings::from_lookup(lookup(&[(
        "SYNCKIT__AWARENESS__POSTGRES__CONNECT_TIMEOUT_MS",
        "1234",
    )]))
    .unwrap();
    assert_eq!(old_name.postgres.acquire_timeout_ms, 1234);
    let feed = AwarenessSettings::from_lookup(lookup(&[
        ("SYNCKIT__AWARENESS__POSTGRES__COALESCE_WRITES", "true"),
        ("SYNCKIT__AWARENESS__POSTGRES__CHANGE_FEED", "true"),
        (
            "SYNCKIT__AWARENESS__POSTGRES__CHANGE_FEED_CHANNEL",
            "presence",
        ),
    ]))
    .unwrap();
    assert!(feed.postgres.options(feed.store_options()).coalesce_writes);
    assert!(!AwarenessSettings::default().postgres.coalesce_writes);
    let options = feed.postgres.change_feed_options();
    assert!(options.publish);
    assert_eq!(options.channel, "presence");
}

#[test]
fn deserializes_from_toml_like_json() {
    let s: AwarenessSettings =
        serde_json::from_str(r#"{"postgres":{"connect_timeout_ms":700}}"#).unwrap();
    assert_eq!(s.postgres.acquire_timeout_ms, 700);
    let err = serde_json::from_str::<AwarenessSettings>(r#"{"provider":"mongo"}"#).unwrap_err();
    assert!(err.to_string().contains("valid providers"), "{err}");
    let s: AwarenessSettings = serde_json::from_str(r#"{"provider":"postgresql"}"#).unwrap();
    assert_eq!(s.provider, Provider::Postgresql);
}
