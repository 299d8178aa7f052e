//! `prune`: delete expired entries once, or keep doing it until asked to stop.

use std::process::ExitCode;
use std::time::Duration;

use synckit_awareness::AwarenessStore;

use super::connect::Target;
use super::failure::Failure;

pub(crate) async fn run(target: &Target, every: Option<Duration>) -> Result<ExitCode, Failure> {
    let store = target.store().await?;
    let Some(every) = every else {
        let removed = store.prune_expired().await?;
        println!("pruned {}", expired_entries(removed));
        return Ok(ExitCode::SUCCESS);
    };

    // Listen before announcing, so a supervisor that signals right after the first line
    // is heard rather than killing the process mid-statement.
    let mut stop =
        Stop::listen().map_err(|e| Failure::problem(format!("cannot listen for signals: {e}")))?;
    println!(
        "pruning entries expired for {} every {}; stop with Ctrl-C or SIGTERM",
        humantime::format_duration(target.timeout()),
        humantime::format_duration(every)
    );
    let (mut runs, mut total) = (0u64, 0u64);
    loop {
        // Also wait on the signal here: a prune blocked on an unreachable database must not
        // hold up shutdown.
        tokio::select! {
            signal = stop.wait() => { println!("{signal}"); break; }
            result = store.prune_expired() => match result {
                Ok(removed) => {
                    runs += 1;
                    total += removed;
                    if removed > 0 {
                        println!("{} pruned {}", now(), expired_entries(removed));
                    }
                }
                // A sidecar keeps going through a database restart; the pool reconnects.
                Err(e) => eprintln!("{} prune failed (retrying in {}): {e}", now(), humantime::format_duration(every)),
            },
        }
        tokio::select! {
            signal = stop.wait() => { println!("{signal}"); break; }
            () = tokio::time::sleep(every) => {}
        }
    }
    println!(
        "stopped after {runs} run{}; pruned {} in total",
        if runs == 1 { "" } else { "s" },
        expired_entries(total)
    );
    Ok(ExitCode::SUCCESS)
}

/// "1 expired entry", "2 expired entries".
fn expired_entries(count: u64) -> String {
    match count {
        1 => "1 expired entry".to_owned(),
        n => format!("{n} expired entries"),
    }
}

fn now() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere than Unix).
struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next stop signal and names it.
    async fn wait(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "received SIGINT, stopping",
                _ = self.terminate.recv() => "received SIGTERM, stopping",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "received Ctrl-C, stopping"
        }
    }
}
