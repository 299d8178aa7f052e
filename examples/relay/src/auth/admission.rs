//! How much one caller may hold: concurrent WebSocket connections and event streams per
//! principal, per client address for anonymous callers (off by default: behind a proxy every
//! anonymous caller has the proxy's address), and a ceiling for the whole relay.
//! A refusal is a 429 with the reason, counted in `synckit_relay_refusals_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use super::Refusal;

/// What is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A WebSocket connection.
    Connection,
    /// A presence event stream (SSE).
    Stream,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Self::Connection => "connections",
            Self::Stream => "event streams",
        }
    }
}

/// The bounds (0: none).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Connections per principal.
    pub connections_per_principal: usize,
    /// Event streams per principal.
    pub streams_per_principal: usize,
    /// Connections per client address, for anonymous callers.
    pub connections_per_address: usize,
    /// Event streams per client address, for anonymous callers.
    pub streams_per_address: usize,
    /// Connections on this relay.
    pub connections: usize,
    /// Event streams on this relay.
    pub streams: usize,
}

#[derive(Default)]
struct Counts {
    per_caller: HashMap<(Kind, String), usize>,
    total: HashMap<Kind, usize>,
}

/// Counts what each caller holds; [`admit`](Self::admit) hands out a [`Ticket`] that gives its
/// place back when dropped.
#[derive(Clone)]
pub struct Admission {
    limits: AdmissionLimits,
    counts: Arc<Mutex<Counts>>,
}

/// A place held: given back when dropped (the connection or stream ended).
pub struct Ticket {
    kind: Kind,
    caller: String,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// A place for one more `kind` for `principal` (or, anonymous, the client `address`).
    pub fn admit(
        &self,
        kind: Kind,
        principal: Option<&str>,
        address: IpAddr,
    ) -> Result<Ticket, Refusal> {
        let caller = match principal {
            Some(principal) => format!("principal:{principal}"),
            None => format!("address:{address}"),
        };
        let limits = &self.limits;
        let (per_caller, total) = match (kind, principal.is_some()) {
            (Kind::Connection, true) => (limits.connections_per_principal, limits.connections),
            (Kind::Connection, false) => (limits.connections_per_address, limits.connections),
            (Kind::Stream, true) => (limits.streams_per_principal, limits.streams),
            (Kind::Stream, false) => (limits.streams_per_address, limits.streams),
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let all = counts.total.get(&kind).copied().unwrap_or(0);
        if total > 0 && all >= total {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "relay_limit",
                format!(
                    "this relay holds the most {} allowed ({total})",
                    kind.plural()
                ),
            ));
        }
        let held = counts
            .per_caller
            .get(&(kind, caller.clone()))
            .copied()
            .unwrap_or(0);
        if per_caller > 0 && held >= per_caller {
            let who = principal.map_or("this address", |_| "this principal");
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "principal_limit",
                format!(
                    "{who} holds the most {} allowed ({per_caller})",
                    kind.plural()
                ),
            ));
        }
        *counts.total.entry(kind).or_default() += 1;
        *counts.per_caller.entry((kind, caller.clone())).or_default() += 1;
        Ok(Ticket {
            kind,
            caller,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(total) = counts.total.get_mut(&self.kind) {
            *total = total.saturating_sub(1);
        }
        let key = (self.kind, std::mem::take(&mut self.caller));
        if let Some(held) = counts.per_caller.get_mut(&key) {
            *held -= 1;
            if *held == 0 {
                counts.per_caller.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_its_limit_is_refused_while_others_get_in_and_places_come_back() {
        let admission = Admission::new(AdmissionLimits {
            connections_per_principal: 2,
            streams_per_principal: 1,
            connections_per_address: 1,
            streams_per_address: 0,
            connections: 5,
            streams: 0,
        });
        let here: IpAddr = [127, 0, 0, 1].into();
        let a1 = admission
            .admit(Kind::Connection, Some("a"), here)
            .expect("first");
        let _a2 = admission
            .admit(Kind::Connection, Some("a"), here)
            .expect("second");
        let refused = admission
            .admit(Kind::Connection, Some("a"), here)
            .err()
            .expect("third");
        assert_eq!(
            (refused.status, refused.label),
            (StatusCode::TOO_MANY_REQUESTS, "principal_limit")
        );
        let _s = admission
            .admit(Kind::Stream, Some("a"), here)
            .expect("streams count apart");
        let _b = admission
            .admit(Kind::Connection, Some("b"), here)
            .expect("another principal");
        let _anon = admission
            .admit(Kind::Connection, None, here)
            .expect("anonymous");
        let same_address = admission
            .admit(Kind::Connection, None, here)
            .err()
            .expect("address");
        assert!(
            same_address.reason.starts_with("this address"),
            "{}",
            same_address.reason
        );
        let _elsewhere = admission
            .admit(Kind::Connection, None, [10, 0, 0, 1].into())
            .expect("another address");
        let full = admission
            .admit(Kind::Connection, Some("c"), here)
            .err()
            .expect("full");
        assert_eq!(full.label, "relay_limit");
        drop(a1);
        let _again = admission
            .admit(Kind::Connection, Some("a"), here)
            .expect("a place came back");
    }
}
