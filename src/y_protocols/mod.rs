//! y-protocols awareness codec.
//!
//! Binary-compatible with `encodeAwarenessUpdate` / `applyAwarenessUpdate` from the npm package
//! `y-protocols` (awareness.js, built on lib0's encoding/decoding) and with y-websocket's message
//! framing for `messageAwareness` (1) and `messageQueryAwareness` (3).
//!
//! Awareness update layout (all integers are lib0 varUints, at most 2^53-1):
//!
//! ```text
//! count
//! repeated count times: clientID, clock, varString(JSON.stringify(state))
//! ```
//!
//! where `varString` is a varUint byte length followed by UTF-8 and the JSON text `null` means
//! the client left.
//!
//! [`apply_awareness_update`] and [`encode_awareness_state`] connect the codec to an
//! [`AwarenessStore`](crate::AwarenessStore): clientIDs become decimal `client_id` text.

pub(crate) mod apply;
pub(crate) mod codec;
pub(crate) mod error;
pub(crate) mod raw;
mod varint;

pub use apply::{apply_awareness_update, apply_awareness_update_as, encode_awareness_state};

pub use codec::{
    decode_message, encode_awareness_update, encode_message, encode_permission_denied,
    AwarenessClientUpdate, AwarenessMessage, DecodeLimits, MESSAGE_AUTH, MESSAGE_AWARENESS,
    MESSAGE_QUERY_AWARENESS, MESSAGE_SYNC,
};
pub use error::{CodecError, WireField};
pub use raw::decode_awareness_update;
pub use varint::{MAX_SAFE_INTEGER, MAX_VAR_UINT_LEN};
