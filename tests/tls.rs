//! TLS: `sslmode` in the URL, against throwaway clusters this test starts (one with a
//! certificate signed by a CA made here, one without TLS).

#[path = "support/cluster.rs"]
mod cluster;

use std::path::PathBuf;

use cluster::{write_certificates, Cluster};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, Error, PostgresAwarenessStore, PostgresOptions, SetOutcome,
};
use tokio::sync::OnceCell;

struct TlsServer {
    cluster: Cluster,
    ca: PathBuf,
}

static TLS_SERVER: OnceCell<TlsServer> = OnceCell::const_new();

/// One TLS cluster for the whole file, listening on 127.0.0.1 and 127.0.0.2 (the second
/// address is not in the certificate, for the host-name checks), migrated once.
async fn tls_server() -> &'static TlsServer {
    TLS_SERVER
        .get_or_init(|| async {
            let mut ca = PathBuf::new();
            let cluster = Cluster::start(
                "ssl = on\nlisten_addresses = '127.0.0.1,127.0.0.2'\n",
                |data| {
                    let ca_dir = data.parent().expect("cluster dir").to_path_buf();
                    ca = write_certificates(data, &ca_dir);
                },
            );
            let url = cluster.url("localhost", "sslmode=disable");
            synckit_awareness::run_migrations_at(&url, &[])
                .await
                .expect("migrate the TLS cluster");
            TlsServer { cluster, ca }
        })
        .await
}

fn options() -> PostgresOptions {
    // Failing connects (the refusals below) wait this long.
    PostgresOptions::default()
        .with_pool_size(2)
        .with_acquire_timeout(std::time::Duration::from_secs(1))
}

/// Whether the store's own connections are encrypted, as the server sees them.
async fn encrypted(store: &PostgresAwarenessStore) -> bool {
    #[derive(QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn = store.pool().get().await.expect("pooled connection");
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(&mut *conn)
        .await
        .expect("pg_stat_ssl")
        .ssl
}

async fn round_trip(store: &PostgresAwarenessStore, client: &str) {
    let update = AwarenessUpdate::new("tls", client, "k", 1, Some(json!({ "over": "tls" })));
    assert_eq!(store.set(&update).await.unwrap(), SetOutcome::Applied);
    let entry = store.get("tls", client).await.unwrap().expect("stored");
    assert_eq!(entry.state, Some(json!({ "over": "tls" })));
}

fn encode(path: &std::path::Path) -> String {
    path.to_string_lossy().replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_without_checking_the_certificate() {
    let server = tls_server().await;
    let url = server.cluster.url("127.0.0.1", "sslmode=require");
    let store = PostgresAwarenessStore::connect(&url, options())
        .await
        .unwrap();
    assert!(encrypted(&store).await, "sslmode=require must encrypt");
    round_trip(&store, "require").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_checks_chain_and_host_name() {
    let server = tls_server().await;
    let ca = encode(&server.ca);
    for host in ["localhost", "127.0.0.1"] {
        let url = server
            .cluster
            .url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let store = PostgresAwarenessStore::connect(&url, options())
            .await
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e}"));
        assert!(encrypted(&store).await);
        round_trip(&store, &format!("verify-full-{host}")).await;
    }

    // 127.0.0.2 reaches the same server but is not in its certificate.
    let url = server.cluster.url(
        "127.0.0.2",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let err = PostgresAwarenessStore::connect(&url, options())
        .await
        .expect_err("a host name outside the certificate is refused");
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // verify-ca checks the chain only, so the same address is accepted.
    let url = server
        .cluster
        .url("127.0.0.2", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let store = PostgresAwarenessStore::connect(&url, options())
        .await
        .unwrap();
    assert!(encrypted(&store).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_refuses_an_untrusted_certificate() {
    let server = tls_server().await;
    // The system roots do not include the test CA.
    for query in [
        "sslmode=verify-full",
        "sslmode=verify-full&sslrootcert=system",
    ] {
        let url = server.cluster.url("localhost", query);
        let err = PostgresAwarenessStore::connect(&url, options())
            .await
            .expect_err("an unknown CA is refused");
        assert!(matches!(err, Error::Connection(_)), "{query}: {err:?}");
    }
    let url = server.cluster.url(
        "localhost",
        "sslmode=verify-full&sslrootcert=%2Fnonexistent%2Fca.pem",
    );
    let err = PostgresAwarenessStore::connect(&url, options())
        .await
        .expect_err("a missing root file is an error");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_and_prefer_against_a_tls_server() {
    let server = tls_server().await;
    let url = server.cluster.url("127.0.0.1", "sslmode=disable");
    let store = PostgresAwarenessStore::connect(&url, options())
        .await
        .unwrap();
    assert!(!encrypted(&store).await, "sslmode=disable stays plaintext");
    for query in ["sslmode=prefer", ""] {
        let url = server.cluster.url("127.0.0.1", query);
        let store = PostgresAwarenessStore::connect(&url, options())
            .await
            .unwrap();
        assert!(encrypted(&store).await, "{query:?} encrypts when offered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_falls_back_to_plaintext_and_require_fails_without_tls() {
    let plain = Cluster::start("ssl = off\n", |_| {});
    let url = plain.url("127.0.0.1", "sslmode=disable");
    synckit_awareness::run_migrations_at(&url, &[])
        .await
        .unwrap();
    let url = plain.url("127.0.0.1", "sslmode=prefer");
    let store = PostgresAwarenessStore::connect(&url, options())
        .await
        .unwrap();
    assert!(!encrypted(&store).await);
    round_trip(&store, "prefer").await;

    let url = plain.url("127.0.0.1", "sslmode=require");
    let err = PostgresAwarenessStore::connect(&url, options())
        .await
        .expect_err("require against a server without TLS fails");
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
}
