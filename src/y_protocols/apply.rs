//! Bridges y-protocols awareness updates and an [`AwarenessStore`]: what a y-websocket server
//! does with an incoming awareness message, and what it sends a newly joined client.

use super::codec::{encode_awareness_update, AwarenessClientUpdate, DecodeLimits};
use super::raw::decode_awareness_update;
use super::varint::MAX_SAFE_INTEGER;
use crate::entry::{supersedes, AwarenessUpdate, SetOutcome};
use crate::error::Result;
use crate::store::AwarenessStore;

/// Decodes a y-protocols awareness update (the payload of a y-websocket awareness message) and
/// applies it to `document_id` through one [`AwarenessStore::set_many`] call, as written by
/// `connection_id`.
///
/// Each y-protocols `clientID` becomes the `client_id` text in decimal (`"3417823"`), its
/// clock the entry's `i64` clock, and the JSON `null` state a leave. Both fit: the codec refuses
/// values above 2^53-1 (JavaScript's `Number.MAX_SAFE_INTEGER`).
///
/// This path follows y-protocols' `applyAwarenessUpdate` exactly, which is stricter than the
/// store's own rule in one case: y-protocols counts a client the document does not hold as
/// being at clock 0, and an update needs a higher clock (or the same clock with a leave over a
/// live state). So an update **at clock 0** is [`SetOutcome::Stale`] and writes nothing unless
/// the document holds that client live, with a state, at clock 0 and the update is its leave.
/// (A fresh Yjs `Awareness` sends its initial `{}` at clock 0 when it connects; real peers never
/// show it, and neither does the store.) Every other update goes through
/// [`AwarenessStore::set_many`] and its rule.
///
/// Returns one `(clientID, outcome)` per client in the update, in wire order. Malformed input
/// (truncated varints, lengths past the end, invalid UTF-8 or JSON, more clients or larger
/// states than `limits` allow) fails with [`Error::Codec`](crate::Error::Codec), and an update
/// the store refuses (a NUL in a state, say) with
/// [`Error::InvalidInput`](crate::Error::InvalidInput); in both cases nothing is applied.
pub async fn apply_awareness_update(
    store: &dyn AwarenessStore,
    document_id: &str,
    connection_id: &str,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<(u64, SetOutcome)>> {
    apply_awareness_update_as(store, document_id, connection_id, None, bytes, limits).await
}

/// [`apply_awareness_update`] for a connection authenticated as `owner`: every client in the
/// update is written as `owner` ([`AwarenessUpdate::owner`]), so a client id another principal
/// holds is [`SetOutcome::Forbidden`] and untouched, and the store's limits on live
/// participants per document and per connection apply ([`SetOutcome::DocumentFull`],
/// [`SetOutcome::ConnectionFull`]); the other clients of the update are decided as usual.
pub async fn apply_awareness_update_as(
    store: &dyn AwarenessStore,
    document_id: &str,
    connection_id: &str,
    owner: Option<&str>,
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<(u64, SetOutcome)>> {
    let clients = decode_awareness_update(bytes, limits)?;
    let outcomes = apply_clients(store, document_id, connection_id, owner, &clients).await?;
    Ok(clients.iter().map(|c| c.client_id).zip(outcomes).collect())
}

/// The store's update for one y-protocols client of `document_id`, written by `connection_id`
/// as `owner`.
pub(crate) fn as_update(
    document_id: &str,
    connection_id: &str,
    owner: Option<&str>,
    client: &AwarenessClientUpdate,
) -> AwarenessUpdate {
    AwarenessUpdate {
        document_id: document_id.to_owned(),
        client_id: client.client_id.to_string(),
        connection_id: connection_id.to_owned(),
        // The codec refuses anything above 2^53-1, so this never saturates.
        clock: i64::try_from(client.clock).unwrap_or(i64::MAX),
        state: client.state.clone(),
        owner: owner.map(str::to_owned),
    }
}

/// [`apply_awareness_update_as`] for clients already decoded, written as `owner`: one outcome
/// per client, in order, through one [`AwarenessStore::set_many`] (on PostgreSQL a lone update,
/// every heartbeat, takes `set`'s one-statement fast path).
pub(crate) async fn apply_clients(
    store: &dyn AwarenessStore,
    document_id: &str,
    connection_id: &str,
    owner: Option<&str>,
    clients: &[AwarenessClientUpdate],
) -> Result<Vec<SetOutcome>> {
    let updates: Vec<AwarenessUpdate> = clients
        .iter()
        .map(|client| as_update(document_id, connection_id, owner, client))
        .collect();
    // Bad input fails whole, even when some updates would be stale: `set_many` checks every
    // update it gets before writing any; the clock-0 ones it may not get are checked here,
    // before anything is read or written (checking them all here would check most twice).
    let max_state_bytes = store.options().max_state_bytes;
    for update in updates.iter().filter(|u| u.clock == 0) {
        crate::validate::check_update(update, max_state_bytes)?;
    }
    let mut outcomes = vec![SetOutcome::Stale; updates.len()];
    let mut forwarded = Vec::with_capacity(updates.len());
    for (index, update) in updates.into_iter().enumerate() {
        if update.clock > 0 || leaves_live_state_at_clock_zero(store, &update).await? {
            forwarded.push((index, update));
        }
    }
    let (indexes, forwarded): (Vec<usize>, Vec<AwarenessUpdate>) = forwarded.into_iter().unzip();
    for (index, outcome) in indexes.into_iter().zip(store.set_many(&forwarded).await?) {
        outcomes[index] = outcome;
    }
    Ok(outcomes)
}

/// Whether y-protocols would apply `update`, which is at clock 0: only a leave for a client the
/// document holds live, with a state, at clock 0 (`currClock === clock && state === null &&
/// states.has(clientID)`); a client it does not hold counts as clock 0 and needs a higher one.
async fn leaves_live_state_at_clock_zero(
    store: &dyn AwarenessStore,
    update: &AwarenessUpdate,
) -> Result<bool> {
    if update.state.is_some() {
        return Ok(false);
    }
    let current = store.get(&update.document_id, &update.client_id).await?;
    Ok(current.is_some_and(|entry| {
        entry.clock == 0 && supersedes(Some((entry.clock, !entry.is_tombstone())), 0, false)
    }))
}

/// Encodes the live entries of `document_id` (not expired, not tombstones) as one y-protocols
/// awareness update, ordered by `client_id`: what a server sends a client that just joined.
///
/// Entries a JavaScript peer cannot represent are **skipped**, not an error: a `client_id` that
/// is not the canonical decimal form of an integer ≤ 2^53-1 (a SyncKit client's string id
/// sharing the document, for example), or a clock above 2^53-1. Failing instead would let one
/// non-Yjs participant stop every Yjs client from joining the document.
pub async fn encode_awareness_state(
    store: &dyn AwarenessStore,
    document_id: &str,
) -> Result<Vec<u8>> {
    let clients = awareness_clients(store.get_all(document_id).await?);
    // Every id and clock was range-checked, so encoding cannot fail; `?` keeps it typed.
    Ok(encode_awareness_update(&clients)?)
}

/// The entries a y-protocols peer can represent, as awareness clients (the others skipped, as
/// [`encode_awareness_state`] says).
pub(crate) fn awareness_clients(
    entries: impl IntoIterator<Item = crate::entry::AwarenessEntry>,
) -> Vec<AwarenessClientUpdate> {
    entries.into_iter().filter_map(as_client).collect()
}

/// One entry as an awareness client, when a y-protocols peer can represent it.
pub(crate) fn as_client(entry: crate::entry::AwarenessEntry) -> Option<AwarenessClientUpdate> {
    let client_id = y_client_id(&entry.client_id)?;
    let clock = y_clock(entry.clock)?;
    Some(AwarenessClientUpdate {
        client_id,
        clock,
        state: entry.state,
    })
}

/// A stored clock as a y-protocols clock (0 ..= 2^53-1).
pub(crate) fn y_clock(clock: i64) -> Option<u64> {
    u64::try_from(clock).ok().filter(|c| *c <= MAX_SAFE_INTEGER)
}

/// The y-protocols clientID a `client_id` text stands for: only the canonical decimal form
/// (no sign, no leading zeros) of an integer ≤ 2^53-1, so that the mapping is one-to-one.
pub(crate) fn y_client_id(client_id: &str) -> Option<u64> {
    let id: u64 = client_id.parse().ok()?;
    (id <= MAX_SAFE_INTEGER && id.to_string() == client_id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_safe_integers_are_y_client_ids() {
        assert_eq!(y_client_id("0"), Some(0));
        assert_eq!(y_client_id("3417823"), Some(3_417_823));
        assert_eq!(y_client_id("9007199254740991"), Some(MAX_SAFE_INTEGER));
        for not_an_id in [
            "9007199254740992",
            "007",
            "+1",
            "-1",
            "",
            "1.0",
            "abc",
            " 1",
        ] {
            assert_eq!(y_client_id(not_an_id), None, "{not_an_id:?}");
        }
    }
}
