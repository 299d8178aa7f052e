//! Shutdown: on SIGTERM or Ctrl-C, stop taking connections, remove this instance's presence
//! (its clients leave everywhere at once), close every connection and wait for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use synckit_awareness::presence::Presence;
use tokio::sync::watch;

/// The graceful-shutdown future of the server: resolves once the signal came and this
/// instance's presence is removed.
pub(crate) async fn stop(presence: Presence, shutdown: watch::Sender<bool>) {
    signal().await;
    tracing::info!("shutting down: removing this instance's presence and closing connections");
    let _ = shutdown.send(true);
    // Removes every entry of this instance in one statement and publishes it, so
    // the other instances announce the leaves at once.
    if let Err(error) = presence.shutdown().await {
        tracing::warn!(%error, "presence shutdown failed; the entries expire instead");
    }
}

/// Upgraded connections run outside the server: waits (at most 10 s) for each to close.
pub(crate) async fn drain(active: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
