//! The documents' test fixture: a migrated database (library and relay migrations) and two
//! document stores on pools of their own (two instances). Needs `mod common` beside it.

use synckit_relay::documents::{DocumentStore, MIGRATIONS};

pub async fn fixture() -> (crate::common::TestDb, [DocumentStore; 2]) {
    let db = crate::common::TestDb::migrated().await;
    synckit_awareness::run_migrations_at(&db.url, &[&MIGRATIONS])
        .await
        .expect("the relay's migrations");
    let a = db.store(synckit_awareness::StoreOptions::default()).await;
    let b = db.store(synckit_awareness::StoreOptions::default()).await;
    let stores = [
        DocumentStore::new(a.pool().clone()),
        DocumentStore::new(b.pool().clone()),
    ];
    (db, stores)
}
