//! Awareness update encoding/decoding and y-websocket message framing.

use serde_json::{Map, Number, Value};

use super::error::{CodecError, WireField};
use super::varint::{write_var_bytes, write_var_uint, Reader, MAX_SAFE_INTEGER};

/// y-websocket message type of a sync message (not handled by this codec).
pub const MESSAGE_SYNC: u64 = 0;
/// y-websocket message type of an awareness message: `varUint(1) varUint8Array(update)`.
pub const MESSAGE_AWARENESS: u64 = 1;
/// y-websocket message type of an auth message (not handled by this codec).
pub const MESSAGE_AUTH: u64 = 2;
/// y-websocket message type of a query-awareness message: just `varUint(3)`.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;

/// One client's entry in an awareness update.
#[derive(Debug, Clone, PartialEq)]
pub struct AwarenessClientUpdate {
    /// The client's id (`doc.clientID` in Yjs); at most 2^53-1.
    pub client_id: u64,
    /// The client's logical clock; at most 2^53-1.
    pub clock: u64,
    /// The client's state, or `None` when the client left (JSON `null` on the wire).
    ///
    /// `Some(Value::Null)` is encoded exactly like `None` and therefore decodes as `None`.
    pub state: Option<Value>,
}

/// Resource limits applied by [`decode_awareness_update`](super::decode_awareness_update) to untrusted input:
/// `DecodeLimits::default().with_max_state_bytes(16 * 1024)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// Maximum number of client entries in one update (default 1024).
    pub max_clients: usize,
    /// Maximum byte length of one client's JSON state string (default 64 KiB).
    pub max_state_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_clients: 1024,
            max_state_bytes: 64 * 1024,
        }
    }
}

impl DecodeLimits {
    /// No limit at all: for input this process produced itself, never for a client's.
    pub fn unlimited() -> Self {
        Self {
            max_clients: usize::MAX,
            max_state_bytes: usize::MAX,
        }
    }

    /// These limits with another maximum of client entries per update.
    pub fn with_max_clients(mut self, max_clients: usize) -> Self {
        self.max_clients = max_clients;
        self
    }

    /// These limits with another maximum state size (bytes of JSON).
    pub fn with_max_state_bytes(mut self, max_state_bytes: usize) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }
}

/// A y-websocket message handled by this codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwarenessMessage {
    /// `messageAwareness` (1): carries a raw awareness update payload, to be decoded with
    /// [`decode_awareness_update`](super::decode_awareness_update).
    Update(Vec<u8>),
    /// `messageQueryAwareness` (3): asks the peer to send its full awareness state.
    Query,
}

fn check_safe(field: WireField, value: u64) -> Result<u64, CodecError> {
    if value > MAX_SAFE_INTEGER {
        Err(CodecError::ValueOutOfRange { field, value })
    } else {
        Ok(value)
    }
}

/// Encodes an awareness update exactly like y-protocols' `encodeAwarenessUpdate`.
///
/// Each state is serialized the way `JSON.stringify` would serialize the same JS value: compact,
/// same string escaping, JS number formatting (`1.0` -> `1`, `1e21` -> `1e+21`, `-0` -> `0`) and
/// object keys in the map's iteration order (enable serde_json's `preserve_order` feature to keep
/// insertion order, as JS does).
///
/// Fails with [`CodecError::ValueOutOfRange`] if a client id or clock exceeds 2^53-1.
pub fn encode_awareness_update(clients: &[AwarenessClientUpdate]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    write_var_uint(&mut out, clients.len() as u64);
    let mut json = String::new();
    for client in clients {
        encode_client(&mut out, &mut json, client)?;
    }
    Ok(out)
}

/// One client's entry of an awareness update (its id, clock and JSON state), appended to `out`;
/// `json` is scratch space. An update is the client count followed by such entries, so entries
/// encoded once can be put together into many updates ([`awareness_message_of`]).
pub(crate) fn encode_client(
    out: &mut Vec<u8>,
    json: &mut String,
    client: &AwarenessClientUpdate,
) -> Result<(), CodecError> {
    write_var_uint(out, check_safe(WireField::ClientId, client.client_id)?);
    write_var_uint(out, check_safe(WireField::Clock, client.clock)?);
    json.clear();
    match &client.state {
        Some(state) => write_js_json(json, state),
        None => json.push_str("null"),
    }
    write_var_bytes(out, json.as_bytes());
    Ok(())
}

/// A y-websocket awareness message (type 1) holding `entries`, each made by [`encode_client`].
pub(crate) fn awareness_message_of<'a>(entries: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let (count, bytes) = entries
        .clone()
        .fold((0u64, 0usize), |(n, b), e| (n + 1, b + e.len()));
    let mut head = Vec::with_capacity(10);
    write_var_uint(&mut head, count);
    let mut out = Vec::with_capacity(bytes + head.len() + 11);
    write_var_uint(&mut out, MESSAGE_AWARENESS);
    write_var_uint(&mut out, (head.len() + bytes) as u64);
    out.extend_from_slice(&head);
    for entry in entries {
        out.extend_from_slice(entry);
    }
    out
}

/// Frames a message the way y-websocket does: `varUint(1) varUint8Array(update)` for
/// [`AwarenessMessage::Update`] and `varUint(3)` for [`AwarenessMessage::Query`].
pub fn encode_message(message: &AwarenessMessage) -> Vec<u8> {
    let mut out = Vec::new();
    match message {
        AwarenessMessage::Update(update) => {
            out.reserve(update.len() + 9);
            write_var_uint(&mut out, MESSAGE_AWARENESS);
            write_var_bytes(&mut out, update);
        }
        AwarenessMessage::Query => write_var_uint(&mut out, MESSAGE_QUERY_AWARENESS),
    }
    out
}

/// y-websocket's auth message (type 2) refusing permission with `reason` (y-protocols'
/// `auth.writePermissionDenied`: `varUint(2) varUint(0) varString(reason)`). A y-websocket
/// client logs the reason (`Permission denied to access …`) and stays connected: how a server
/// tells a client why an update was refused without closing its connection.
pub fn encode_permission_denied(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 4);
    write_var_uint(&mut out, MESSAGE_AUTH);
    write_var_uint(&mut out, 0);
    write_var_bytes(&mut out, reason.as_bytes());
    out
}

/// Parses a y-websocket awareness (1) or query-awareness (3) message.
///
/// The awareness payload is returned undecoded; other message types yield
/// [`CodecError::UnsupportedMessageType`] and bytes after the message yield
/// [`CodecError::TrailingBytes`].
pub fn decode_message(bytes: &[u8]) -> Result<AwarenessMessage, CodecError> {
    let mut reader = Reader::new(bytes);
    let message = match reader.read_var_uint(WireField::MessageType)? {
        MESSAGE_AWARENESS => {
            let update = reader.read_var_bytes(WireField::UpdateLength, WireField::Update)?;
            AwarenessMessage::Update(update.to_vec())
        }
        MESSAGE_QUERY_AWARENESS => AwarenessMessage::Query,
        other => return Err(CodecError::UnsupportedMessageType(other)),
    };
    ensure_consumed(&reader)?;
    Ok(message)
}

pub(super) fn ensure_consumed(reader: &Reader<'_>) -> Result<(), CodecError> {
    match reader.remaining() {
        0 => Ok(()),
        count => Err(CodecError::TrailingBytes {
            offset: reader.position(),
            count,
        }),
    }
}

/// Serializes `value` byte-for-byte like `JSON.stringify` serializes the equivalent JS value.
fn write_js_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_js_number(out, n),
        Value::String(s) => write_js_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_js_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_js_object(out, map),
    }
}

fn write_js_object(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_js_string(out, key);
        out.push(':');
        write_js_json(out, item);
    }
    out.push('}');
}

/// `JSON.stringify` string quoting (ES2019 well-formed variant). Rust strings cannot hold lone
/// surrogates, so the `\udXXX` escape JS uses for them never arises here.
fn write_js_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_js_number(out: &mut String, n: &Number) {
    use std::fmt::Write;
    // Integers are written exactly. JS would round integers beyond 2^53 to the nearest double;
    // we keep the exact digits (JSON.parse then rounds them, as it would for its own output).
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        write_js_f64(out, f);
    } else {
        out.push_str("null");
    }
}

/// Formats a double like ECMAScript `Number::toString` (which `JSON.stringify` uses).
///
/// Rust's `{:e}` yields the shortest round-tripping digits; only the layout differs from JS.
fn write_js_f64(out: &mut String, f: f64) {
    if !f.is_finite() {
        // JSON.stringify(NaN / Infinity) === "null"; serde_json numbers cannot hold these.
        out.push_str("null");
        return;
    }
    if f == 0.0 {
        // Covers -0: JSON.stringify(-0) === "0".
        out.push('0');
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let Ok(exponent) = exponent.parse::<i64>() else {
        out.push_str(&sci);
        return;
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i64; // number of significant digits
    let n = exponent + 1; // position of the decimal point relative to the digits
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
