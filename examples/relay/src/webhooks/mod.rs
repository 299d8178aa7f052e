//! Webhooks on joins and leaves (issue 39; README "Webhooks"): `presence.joined` and
//! `presence.left` posted to each configured URL, signed as Standard Webhooks 1.0 says.
//!
//! The events are recorded by a trigger on `awareness_entries` (the relay's migration
//! 2026-12-07-000000_relay_webhooks) in the transaction that makes the change — a join, a
//! leave, a disconnect, pruning, a lapsed lease's take-over — so each is recorded once across
//! every instance on the database, and a crash loses none. Every instance configured with a URL
//! delivers its events ([`deliver`]): each room's oldest first, one at a time per room (so a
//! room's events arrive in order), rooms in parallel, retried with doubling waits until
//! delivered, too old (`--webhook-max-age`) or crowded out (`--webhook-max-pending`); what is
//! dropped is counted. A claim outlives one attempt (timeout + 5 s): a sender killed mid-attempt
//! leaves the event to be sent again, with the same `webhook-id`.

mod outbox;
mod send;
mod sql;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use synckit_awareness::{PgPool, UnnamedPool};
use tokio::sync::watch;

use crate::config::WebhookArgs;
use crate::Failure;
use outbox::Outbox;
use send::Sender;

/// Trimming (and the pending gauge) this often.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Renewing the endpoint (and forgetting stale ones) this often.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// An endpoint no instance renewed for this long is forgotten, with its events.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// A claim outlives an attempt by this much.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

const DELIVERED: &str = "synckit_relay_webhook_delivered_total";
const FAILED: &str = "synckit_relay_webhook_attempts_failed_total";
const DROPPED: &str = "synckit_relay_webhook_dropped_total";
const PENDING: &str = "synckit_relay_webhook_pending";

/// The settings of every URL's delivery.
#[derive(Debug, Clone)]
struct Policy {
    retry_min: Duration,
    retry_max: Duration,
    max_age: Duration,
    max_pending: u32,
    poll: Duration,
    concurrency: u32,
    claim: Duration,
    entry_timeout: Duration,
}

impl Policy {
    /// The wait after the `attempts`-th failed attempt: `retry_min`, doubling, at most
    /// `retry_max`.
    fn retry_in(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        self.retry_min
            .saturating_mul(1 << doublings)
            .min(self.retry_max)
    }
}

/// Checks the flags; `None` when no URL is configured.
fn policy(args: &WebhookArgs, entry_timeout: Duration) -> Result<Option<Policy>, Failure> {
    if !configured(args) {
        return Ok(None);
    }
    for url in &args.urls {
        let parsed = reqwest::Url::parse(url.trim())
            .map_err(|e| format!("--webhook-url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("--webhook-url {url:?}: only http:// and https:// URLs").into());
        }
    }
    if args.webhook_retry_min.is_zero() || args.webhook_retry_min > args.webhook_retry_max {
        return Err(
            "--webhook-retry-min must be above zero and at most --webhook-retry-max".into(),
        );
    }
    if args.webhook_max_pending == 0 || args.webhook_concurrency == 0 || args.webhook_poll.is_zero()
    {
        return Err(
            "--webhook-max-pending, --webhook-concurrency and --webhook-poll must be above zero"
                .into(),
        );
    }
    Ok(Some(Policy {
        retry_min: args.webhook_retry_min,
        retry_max: args.webhook_retry_max,
        max_age: args.webhook_max_age,
        max_pending: args.webhook_max_pending,
        poll: args.webhook_poll,
        concurrency: args.webhook_concurrency,
        claim: args.webhook_timeout + CLAIM_MARGIN,
        entry_timeout,
    }))
}

/// Whether any URL is configured (the flags need the PostgreSQL store then).
pub(crate) fn configured(args: &WebhookArgs) -> bool {
    args.urls.iter().any(|u| !u.trim().is_empty())
}

/// Registers every configured URL (from here on joins and leaves are recorded for it) and
/// starts one delivery task per URL, until `shutdown`.
pub(crate) async fn start(
    args: &WebhookArgs,
    entry_timeout: Duration,
    pool: PgPool,
    statements: Option<UnnamedPool>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Failure> {
    let Some(policy) = policy(args, entry_timeout)? else {
        return Ok(());
    };
    let secret = args
        .webhook_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(
            "--webhook-url needs --webhook-secret (SYNCKIT_RELAY_WEBHOOK_SECRET): whsec_<base64>",
        )?;
    let sender = Arc::new(Sender::new(secret, args.webhook_timeout)?);
    let outbox = Outbox::new(pool, statements);
    for url in args.urls.iter().map(|u| u.trim().to_owned()) {
        outbox.renew(&url, entry_timeout).await?;
        tracing::info!(%url, "webhooks: posting joins and leaves");
        tokio::spawn(deliver(
            outbox.clone(),
            sender.clone(),
            url,
            policy.clone(),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Delivers `url`'s events until shutdown.
async fn deliver(
    outbox: Outbox,
    sender: Arc<Sender>,
    url: String,
    policy: Policy,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut trimmed = Instant::now();
    let mut renewed = Instant::now();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if renewed.elapsed() >= RENEW_EVERY {
            renewed = Instant::now();
            upkeep(&outbox, &url, &policy).await;
        }
        if trimmed.elapsed() >= TRIM_EVERY {
            trimmed = Instant::now();
            trim(&outbox, &url, &policy).await;
        }
        let claimed = outbox
            .claim(&url, policy.concurrency, policy.claim)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, %url, "webhooks: cannot claim events");
                Vec::new()
            });
        let full = claimed.len() == usize::try_from(policy.concurrency).unwrap_or(usize::MAX);
        let attempts = claimed.into_iter().map(|event| {
            let sender = &sender;
            let url = &url;
            async move {
                let result = sender.post(url, event.id, event.body).await;
                (event.id, event.attempts, result)
            }
        });
        for (id, attempts, result) in join_all(attempts).await {
            let recorded = match result {
                Ok(()) => {
                    metrics::counter!(DELIVERED).increment(1);
                    outbox.delivered(id).await
                }
                Err(error) => {
                    metrics::counter!(FAILED).increment(1);
                    let retry_in = policy.retry_in(attempts);
                    let message_id = Sender::message_id(id);
                    tracing::info!(%url, %message_id, attempts, %error, ?retry_in, "webhooks: attempt failed");
                    outbox.failed(id, retry_in, &error).await
                }
            };
            if let Err(error) = recorded {
                // The claim lapses and the event is sent again: at least once.
                tracing::warn!(%error, %url, id, "webhooks: cannot record an attempt");
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(policy.poll) => {}
        }
    }
}

/// Renews the endpoint and forgets the ones nobody renews.
async fn upkeep(outbox: &Outbox, url: &str, policy: &Policy) {
    if let Err(error) = outbox.renew(url, policy.entry_timeout).await {
        tracing::warn!(%error, %url, "webhooks: cannot renew the endpoint");
    }
    match outbox.forget(FORGET_AFTER).await {
        Ok(0) => {}
        Ok(events) => tracing::info!(events, "webhooks: forgot endpoints no instance renews"),
        Err(error) => tracing::warn!(%error, "webhooks: cannot forget stale endpoints"),
    }
}

/// Drops what is too old or past the bound (counted), and sets the pending gauge.
async fn trim(outbox: &Outbox, url: &str, policy: &Policy) {
    match outbox.trim(url, policy.max_age, policy.max_pending).await {
        Ok(trimmed) => {
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            if trimmed.expired > 0 || trimmed.overflow > 0 {
                tracing::warn!(%url, expired = trimmed.expired, overflow = trimmed.overflow, "webhooks: events dropped");
            }
            metrics::counter!(DROPPED, "reason" => "max_age").increment(count(trimmed.expired));
            metrics::counter!(DROPPED, "reason" => "max_pending")
                .increment(count(trimmed.overflow));
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(PENDING).set(trimmed.pending as f64);
        }
        Err(error) => tracing::warn!(%error, %url, "webhooks: cannot trim"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_minimum_up_to_the_maximum() {
        let policy = Policy {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            max_pending: 1,
            poll: Duration::from_millis(250),
            concurrency: 1,
            claim: Duration::from_secs(15),
            entry_timeout: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (1..=6).map(|n| policy.retry_in(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.retry_in(i32::MAX), Duration::from_secs(10));
    }
}
