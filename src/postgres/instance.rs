//! Server instances: a store that runs as a named instance keeps a lease row alive in
//! `awareness_instances` and stamps its writes with its id, so that when it dies (crash,
//! SIGKILL, lost database) any other instance's pruner removes all its entries within the
//! lease, instead of after the awareness timeout.
//!
//! The instance's own clock fences its writes: a renewal that succeeded at local time `t` makes
//! the lease valid in the database until at least `t + lease` (the database computed
//! `now() + lease` after `t`), so writes are allowed until then and refused
//! ([`Error::LeaseLost`]) after, until a renewal succeeds again. A process paused or cut off
//! for longer than its lease therefore never writes under a lease others may have taken over;
//! its renewal re-registers it (reporting the take-over) and writes resume.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{Interval, Text};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::pool::{interval, with_conn, Connections};
use crate::error::{Error, Field, Result};

/// Default [`InstanceOptions::lease`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How a store runs as an instance
/// ([`PostgresAwarenessStore::start_instance`](crate::PostgresAwarenessStore::start_instance)):
///
/// ```
/// use std::time::Duration;
/// use synckit_awareness::InstanceOptions;
///
/// let options = InstanceOptions::default()
///     .with_instance_id("relay-eu-1")
///     .with_lease(Duration::from_secs(6));
/// assert_eq!(options.renew_every, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceOptions {
    /// The instance's name, unique among the servers sharing the database. Default: a random
    /// id per process (`<pid>-<random>`). Two live processes with one name would share one
    /// lease: each keeps the other's entries alive, and a crash of either goes unnoticed.
    pub instance_id: String,
    /// How long the lease lasts without a renewal: the most time a crashed instance's clients
    /// stay visible is this plus the other instances' prune period. Default 10 s.
    pub lease: Duration,
    /// How often the lease is renewed. Default a third of the lease, so two renewals in a row
    /// may fail without the lease lapsing.
    pub renew_every: Duration,
}

impl Default for InstanceOptions {
    fn default() -> Self {
        Self {
            instance_id: random_instance_id(),
            lease: DEFAULT_LEASE,
            renew_every: DEFAULT_LEASE / 3,
        }
    }
}

impl InstanceOptions {
    /// These options with another instance name.
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = instance_id.into();
        self
    }

    /// These options with another lease; renewals every third of it.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self.renew_every = lease / 3;
        self
    }

    /// These options with another renewal period (shorter than the lease).
    pub fn with_renew_every(mut self, renew_every: Duration) -> Self {
        self.renew_every = renew_every;
        self
    }

    fn check(&self) -> Result<()> {
        crate::validate::check_id(Field::InstanceId, &self.instance_id)?;
        if self.renew_every.is_zero() || self.renew_every >= self.lease {
            return Err(Error::Config(format!(
                "the lease renewal period ({:?}) must be positive and shorter than the lease \
                 ({:?})",
                self.renew_every, self.lease
            )));
        }
        Ok(())
    }
}

/// `<pid>-<16 hex digits>`: unique per process without a random-number crate (std's hasher
/// keys are random per process).
fn random_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{:016x}", std::process::id(), hasher.finish())
}

/// Sends [`RENEW`](super::sql::lease::RENEW): whether the lease row was (re-)inserted.
async fn renew_statement(connections: &Connections, id: &str, lease: Duration) -> Result<bool> {
    use diesel_async::RunQueryDsl;
    // `load` reads to the end of the response, past the commit (see `set_on` in storage.rs).
    let renewed: Vec<super::sql::lease::Renewed> = with_conn!(*connections, |conn| Ok(
        diesel::sql_query(super::sql::lease::RENEW)
            .bind::<Text, _>(id)
            .bind::<Interval, _>(interval(lease))
            .load(conn)
            .await?
    ))?;
    renewed
        .into_iter()
        .next()
        .map(|r| r.registered)
        .ok_or_else(|| Error::Database(diesel::result::Error::NotFound))
}

/// A running instance, shared by every clone of its store.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) id: String,
    options: InstanceOptions,
    /// Writes are allowed before this instant (`None`: never, or shut down).
    valid_until: Mutex<Option<Instant>>,
    shut_down: AtomicBool,
    takeovers: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Lease {
    /// Registers `options.instance_id` and starts renewing its lease on the current runtime.
    pub(crate) async fn start(
        connections: Connections,
        options: InstanceOptions,
    ) -> Result<Arc<Self>> {
        options.check()?;
        let lease = Arc::new(Self {
            id: options.instance_id.clone(),
            options,
            valid_until: Mutex::new(None),
            shut_down: AtomicBool::new(false),
            takeovers: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        lease.renew(&connections).await?;
        // The task holds the lease weakly: when the last store handle goes, it stops.
        let weak = Arc::downgrade(&lease);
        let period = lease.options.renew_every;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(lease) = weak.upgrade() else { break };
                if lease.shut_down.load(Ordering::Acquire) {
                    break;
                }
                if let Err(error) = lease.renew(&connections).await {
                    ::metrics::counter!(crate::metrics::LEASE_RENEWALS, "result" => "error")
                        .increment(1);
                    tracing::warn!(
                        instance_id = %lease.id,
                        %error,
                        "awareness lease renewal failed; retrying next period"
                    );
                }
            }
        });
        *lease.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(lease)
    }

    /// One renewal: on success, writes are allowed for one more lease from when it was sent.
    async fn renew(&self, connections: &Connections) -> Result<()> {
        let sent = Instant::now();
        let registered = renew_statement(connections, &self.id, self.options.lease).await?;
        if self.shut_down.load(Ordering::Acquire) {
            return Ok(());
        }
        let first = self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(sent + self.options.lease)
            .is_none()
            && self.takeovers.load(Ordering::Relaxed) == 0;
        if registered && !first {
            self.takeovers.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(crate::metrics::LEASE_TAKEOVERS, "side" => "lost").increment(1);
            tracing::warn!(
                instance_id = %self.id,
                "this instance's lease had lapsed and was taken over (its entries were removed \
                 by another instance); registered again"
            );
        }
        ::metrics::counter!(crate::metrics::LEASE_RENEWALS, "result" => "ok").increment(1);
        Ok(())
    }

    /// The instance id for a write, or why the instance may not write now.
    pub(crate) fn check(&self) -> Result<&str> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(self.lost(crate::error::LEASE_SHUT_DOWN));
        }
        let valid_until = *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match valid_until {
            Some(until) if Instant::now() < until => Ok(&self.id),
            _ => Err(self.lost("renewals failed for longer than the lease")),
        }
    }

    fn lost(&self, reason: &'static str) -> Error {
        Error::LeaseLost {
            instance_id: self.id.clone(),
            reason,
        }
    }

    /// Stops renewing and refuses every later write (the caller deletes the lease row).
    pub(crate) fn stop(&self) {
        self.shut_down.store(true, Ordering::Release);
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// How many times this instance found its lease taken over and registered again.
    pub(crate) fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    /// Whether writes are allowed now.
    pub(crate) fn is_valid(&self) -> bool {
        self.check().is_ok()
    }
}
