//! What an agent says on the wire: its client id, its clock, and one awareness message
//! through its session.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use synckit_awareness::presence::{Received, Session};
use synckit_awareness::y_protocols::{
    encode_awareness_update, encode_message, AwarenessClientUpdate, AwarenessMessage,
};
use synckit_awareness::SetOutcome;

use super::{AgentError, Placed};

/// The first client id of agents: Yjs picks 32-bit ids, so none is at or above it.
const FIRST_AGENT_ID: u64 = 1 << 32;
/// Client ids stay at most 2^53 - 1, the largest a JavaScript peer represents.
const AGENT_IDS: u64 = (1 << 53) - FIRST_AGENT_ID;

/// The client id of `participant` in `room`: FNV-1a (64-bit) of both, at or above 2^32. The
/// same on every instance and every version.
pub(crate) fn client_id(room: &str, participant: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes().chain([0]).chain(participant.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    FIRST_AGENT_ID + hash % AGENT_IDS
}

/// The clock of a new state: the time in milliseconds, above `last`.
pub(super) fn next_clock(last: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    now.max(last + 1)
}

/// Sends `state` (`None`: a leave) of client `id` at `clock` through `session`.
pub(super) async fn publish(
    session: &Session,
    id: u64,
    clock: u64,
    state: Option<&Value>,
) -> Result<Placed, AgentError> {
    let client = AwarenessClientUpdate {
        client_id: id,
        clock,
        state: state.cloned(),
    };
    let update = encode_awareness_update(&[client]).map_err(super::unavailable)?;
    let message = encode_message(&AwarenessMessage::Update(update));
    let received: Received = session
        .receive(&message)
        .await
        .map_err(|d| AgentError::Unavailable(d.reason))?;
    if let Some((_, outcome)) = received.refused.first() {
        return Err(match outcome {
            SetOutcome::Forbidden => AgentError::Forbidden,
            SetOutcome::DocumentFull => AgentError::Full("the room is full"),
            _ => AgentError::Full("the limit of clients per connection is reached"),
        });
    }
    if received.applied.contains(&id) {
        Ok(Placed {
            client_id: id,
            clock,
        })
    } else {
        Err(AgentError::Unavailable(
            "a newer state of this participant is held: try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_above_every_yjs_id_and_safe_in_javascript() {
        let ids: Vec<u64> = ["bot", "bot-2", "summariser", ""]
            .iter()
            .flat_map(|p| ["room", "room-2"].map(|r| client_id(r, p)))
            .collect();
        for id in &ids {
            assert!((FIRST_AGENT_ID..=(1 << 53) - 1).contains(id), "{id}");
        }
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len(), "ids collide: {ids:?}");
        assert_eq!(client_id("room", "bot"), client_id("room", "bot"));
        // The room and the name are separated: ("ab", "c") is not ("a", "bc").
        assert_ne!(client_id("ab", "c"), client_id("a", "bc"));
    }

    #[test]
    fn clocks_rise_even_when_the_time_does_not() {
        let far = 1u64 << 50;
        assert_eq!(next_clock(far), far + 1);
        assert!(next_clock(0) > 1_700_000_000_000, "milliseconds since 1970");
    }
}
