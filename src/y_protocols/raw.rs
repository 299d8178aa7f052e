//! Awareness updates as they arrive, their states left as JSON text: framing and limits
//! checked, nothing built until it is needed (the presence engine routes echoes on id and clock
//! alone).

use serde_json::Value;

use super::codec::{ensure_consumed, AwarenessClientUpdate, DecodeLimits};
use super::error::{CodecError, WireField};
use super::varint::Reader;

/// Decodes an awareness update produced by y-protocols' `encodeAwarenessUpdate`.
///
/// The input is untrusted: every length is bounds-checked, the client count is checked against
/// `limits` before anything is allocated, and trailing bytes are rejected. This never panics.
pub fn decode_awareness_update(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<AwarenessClientUpdate>, CodecError> {
    decode_awareness_raw(bytes, limits)?
        .into_iter()
        .map(RawClient::parse)
        .collect()
}

/// One client of an awareness update as it arrived: its state still JSON text (valid UTF-8,
/// within the limits). [`RawClient::check`] tells whether it is a leave and that the text is
/// JSON without building it; [`RawClient::parse`] builds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawClient<'a> {
    pub(crate) client_id: u64,
    pub(crate) clock: u64,
    pub(crate) state: &'a str,
}

impl RawClient<'_> {
    /// Whether the state is one (not JSON `null`, a leave), having checked it is JSON.
    pub(crate) fn check(&self) -> Result<bool, CodecError> {
        serde_json::from_str::<serde::de::IgnoredAny>(self.state).map_err(|e| {
            CodecError::InvalidJson {
                client_id: self.client_id,
                message: e.to_string(),
            }
        })?;
        Ok(self.state.trim_matches([' ', '\t', '\n', '\r']) != "null")
    }

    /// The client with its state built.
    pub(crate) fn parse(self) -> Result<AwarenessClientUpdate, CodecError> {
        let value: Value =
            serde_json::from_str(self.state).map_err(|e| CodecError::InvalidJson {
                client_id: self.client_id,
                message: e.to_string(),
            })?;
        let state = match value {
            Value::Null => None,
            other => Some(other),
        };
        Ok(AwarenessClientUpdate {
            client_id: self.client_id,
            clock: self.clock,
            state,
        })
    }
}

/// The clients of an awareness update, their states left as JSON text: every length and limit
/// checked as [`decode_awareness_update`] does, nothing parsed.
pub(crate) fn decode_awareness_raw<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Vec<RawClient<'a>>, CodecError> {
    let mut reader = Reader::new(bytes);
    let count = reader.read_var_uint(WireField::ClientCount)?;
    let count = match usize::try_from(count) {
        Ok(n) if n <= limits.max_clients => n,
        _ => {
            return Err(CodecError::TooManyClients {
                count,
                max: limits.max_clients,
            })
        }
    };
    // Each entry takes at least 4 bytes (id, clock, length, one JSON byte), so never reserve
    // more than the input could possibly hold.
    let mut clients = Vec::with_capacity(count.min(reader.remaining() / 4));
    for _ in 0..count {
        let client_id = reader.read_var_uint(WireField::ClientId)?;
        let clock = reader.read_var_uint(WireField::Clock)?;
        let length = reader.read_var_uint(WireField::StateLength)?;
        if usize::try_from(length).map_or(true, |len| len > limits.max_state_bytes) {
            return Err(CodecError::StateTooLarge {
                client_id,
                length,
                max: limits.max_state_bytes,
            });
        }
        let raw = reader.read_exact(length, WireField::State)?;
        let state = std::str::from_utf8(raw).map_err(|e| CodecError::InvalidUtf8 {
            client_id,
            valid_up_to: e.valid_up_to(),
        })?;
        clients.push(RawClient {
            client_id,
            clock,
            state,
        });
    }
    ensure_consumed(&reader)?;
    Ok(clients)
}
