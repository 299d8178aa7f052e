//! The instance's listener: one dedicated connection `LISTEN`ing on [`CHANNEL`]; each
//! notification (`<id>:<document_id>`) makes that room catch up from the database. A lost
//! connection is reopened and then every open room catches up, so a notification missed
//! meanwhile costs a delay, never an update.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Documents, CHANNEL};

/// Where and how the listener connects.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// A direct (or session-mode pooler) URL: LISTEN needs a session.
    pub url: String,
    /// Shown in `pg_stat_activity.application_name` (tests find the backend by it).
    pub application_name: String,
    /// Wait before reconnecting after the connection was lost.
    pub reconnect_delay: Duration,
    /// A silent connection is checked this often (a dead peer otherwise goes unnoticed).
    pub ping_every: Duration,
}

/// Runs the listener until `shutdown` turns true. Returns once the first `LISTEN` is in place
/// (or failed: then the error), and keeps running in a task.
pub async fn listen(
    documents: Arc<Documents>,
    options: ListenerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, synckit_awareness::Error> {
    let first = connect(&options).await?;
    Ok(tokio::spawn(async move {
        let mut conn = Some(first);
        loop {
            if let Some(mut c) = conn.take() {
                // Anything appended while this connection was not listening, and after a
                // failover whatever the new primary lacks.
                documents.resync_all();
                tokio::select! {
                    () = run(&mut c, &documents, &options) => {}
                    _ = shutdown.changed() => return,
                }
                metrics::counter!("relay_documents_listener_reconnects_total").increment(1);
                tracing::warn!("the documents' listener lost its connection; reconnecting");
            }
            tokio::select! {
                () = tokio::time::sleep(options.reconnect_delay) => {}
                _ = shutdown.changed() => return,
            }
            match connect(&options).await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    tracing::warn!(%error, "the documents' listener cannot connect; retrying")
                }
            }
        }
    }))
}

async fn connect(
    options: &ListenerOptions,
) -> Result<diesel_async::AsyncPgConnection, synckit_awareness::Error> {
    let mut conn = synckit_awareness::establish_connection(&options.url).await?;
    // Quoted as SQL literals; the name comes from the relay's own flags.
    let name = options.application_name.replace('\'', "''");
    conn.batch_execute(&format!(
        "SET application_name = '{name}'; LISTEN {CHANNEL}"
    ))
    .await
    .map_err(|e| synckit_awareness::Error::Connection(e.to_string()))?;
    Ok(conn)
}

/// Until the connection fails.
async fn run(
    conn: &mut diesel_async::AsyncPgConnection,
    documents: &Documents,
    options: &ListenerOptions,
) {
    loop {
        {
            let notifications = conn.notifications_stream();
            tokio::pin!(notifications);
            loop {
                tokio::select! {
                    next = notifications.next() => match next {
                        Some(Ok(notification)) => appended(documents, &notification.payload),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "the documents' listener failed");
                            return;
                        }
                        None => return,
                    },
                    () = tokio::time::sleep(options.ping_every) => break,
                }
            }
        }
        // Silent for a while: is the connection alive? Notifications arriving meanwhile wait
        // in the connection's queue.
        if conn.batch_execute("SELECT 1").await.is_err() {
            return;
        }
    }
}

fn appended(documents: &Documents, payload: &str) {
    match payload
        .split_once(':')
        .and_then(|(id, document)| Some((id.parse::<i64>().ok()?, document)))
    {
        Some((id, document)) => documents.appended(document, id),
        _ => tracing::warn!(%payload, "ignoring a notification that is not <id>:<document_id>"),
    }
}
