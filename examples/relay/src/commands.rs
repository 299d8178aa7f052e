//! The subcommands: `synckit-relay token` (mint an HS256 JWT) and `synckit-relay compact`.

use std::time::Duration;

use synckit_awareness::PostgresOptions;
use synckit_relay::documents::DocumentStore;

use crate::auth::{Access, JwtAuth};
use crate::config::Args;
use crate::startup::jwt_options;
use crate::Failure;

pub(crate) fn token(
    args: &Args,
    principal: &str,
    rooms: &[(String, Access)],
    user: Option<serde_json::Value>,
    ttl: Duration,
) -> Result<(), Failure> {
    let secret = args
        .access
        .auth_secret
        .as_deref()
        .ok_or("set SYNCKIT_RELAY_AUTH_SECRET (or --auth-secret) to mint tokens")?;
    let auth = JwtAuth::new(Some(secret.as_bytes()), None, jwt_options(&args.access))?;
    println!("{}", auth.mint(principal, rooms, user, ttl)?);
    Ok(())
}

pub(crate) async fn compact(args: &Args) -> Result<(), Failure> {
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or("set DATABASE_URL (or --database-url) to compact the documents in it")?;
    let pool = synckit_awareness::build_pool(
        url,
        &PostgresOptions::default()
            .with_pool_size(1)
            .with_transaction_pooler(args.transaction_pooler),
    )
    .await?;
    let store = DocumentStore::new(pool).with_transaction_pooler(args.transaction_pooler);
    let (mut documents, mut rows, mut row_bytes, mut snapshot_bytes) = (0, 0, 0, 0);
    for document in store.documents_with_rows().await? {
        if let Some(done) = store.compact(&document).await? {
            documents += 1;
            rows += done.rows;
            row_bytes += done.row_bytes;
            snapshot_bytes += done.snapshot_bytes;
        }
    }
    println!("compacted {documents} documents: {rows} rows ({row_bytes} bytes) into snapshots of {snapshot_bytes} bytes");
    Ok(())
}
