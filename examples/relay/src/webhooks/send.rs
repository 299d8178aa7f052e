//! One attempt: the event's body posted to its URL, signed as Standard Webhooks 1.0 says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`), by the
//! specification's own Rust library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use standardwebhooks::Webhook;

/// Posts events; a 2xx answer within the timeout is a delivery, anything else a failure.
pub(crate) struct Sender {
    client: reqwest::Client,
    signer: Webhook,
}

impl Sender {
    /// `secret`: `whsec_` and base64 (as the Standard Webhooks libraries take it).
    pub(crate) fn new(secret: &str, timeout: Duration) -> Result<Self, String> {
        let signer = Webhook::new(secret)
            .map_err(|e| format!("--webhook-secret is not whsec_<base64>: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect is the receiver's mistake: not followed, retried.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("synckit-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self { client, signer })
    }

    /// The event's id on the wire: the same on every attempt, for the receiver's idempotency.
    pub(crate) fn message_id(id: i64) -> String {
        format!("msg_{id}")
    }

    /// One attempt to deliver event `id` with `body` to `url`.
    pub(crate) async fn post(&self, url: &str, id: i64, body: String) -> Result<(), String> {
        let message_id = Self::message_id(id);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let signature = self
            .signer
            .sign(&message_id, timestamp, body.as_bytes())
            .map_err(|e| format!("signing: {e}"))?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}
