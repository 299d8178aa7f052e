//! What can be wrong with y-protocols input: the codec's error and the part of the wire format
//! it is about. Below both the varint reader and the codec, so imports flow one way.

/// The part of the wire format an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireField {
    /// The leading varUint holding the number of client entries in an awareness update.
    ClientCount,
    /// A client's `clientID` varUint.
    ClientId,
    /// A client's `clock` varUint.
    Clock,
    /// The varUint byte length of a client's JSON state string.
    StateLength,
    /// The UTF-8 bytes of a client's JSON state string.
    State,
    /// The leading varUint message type of a y-websocket message.
    MessageType,
    /// The varUint byte length of the awareness update inside an awareness message.
    UpdateLength,
    /// The awareness update bytes inside an awareness message.
    Update,
}

impl std::fmt::Display for WireField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireField::ClientCount => "client count",
            WireField::ClientId => "clientID",
            WireField::Clock => "clock",
            WireField::StateLength => "state length",
            WireField::State => "state",
            WireField::MessageType => "message type",
            WireField::UpdateLength => "awareness update length",
            WireField::Update => "awareness update",
        })
    }
}

/// Everything that can go wrong while encoding or decoding awareness data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended in the middle of a varUint.
    #[error("input truncated while reading {field} varUint")]
    Truncated {
        /// The varUint being read.
        field: WireField,
    },
    /// A varUint exceeded 2^53-1 (`Number.MAX_SAFE_INTEGER`) or was longer than 8 bytes.
    #[error("{field} varUint exceeds 2^53-1 (Number.MAX_SAFE_INTEGER) or is longer than 8 bytes")]
    VarIntOverflow {
        /// The varUint being read.
        field: WireField,
    },
    /// A length prefix pointed past the end of the input.
    #[error("{field} declares {length} bytes but only {remaining} bytes remain")]
    LengthOutOfBounds {
        /// The length-prefixed data being read.
        field: WireField,
        /// The declared length.
        length: u64,
        /// Bytes actually left in the input.
        remaining: usize,
    },
    /// A client's state string is not valid UTF-8.
    #[error("state of client {client_id} is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// The client whose state failed to decode.
        client_id: u64,
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// A client's state string is not valid JSON (or not representable by serde_json).
    #[error("state of client {client_id} is not valid JSON: {message}")]
    InvalidJson {
        /// The client whose state failed to parse.
        client_id: u64,
        /// The serde_json error message.
        message: String,
    },
    /// The update declares more clients than [`DecodeLimits::max_clients`](super::DecodeLimits::max_clients).
    #[error("awareness update declares {count} clients, more than the limit of {max}")]
    TooManyClients {
        /// The declared client count.
        count: u64,
        /// The configured limit.
        max: usize,
    },
    /// A client's state string is longer than [`DecodeLimits::max_state_bytes`](super::DecodeLimits::max_state_bytes).
    #[error("state of client {client_id} is {length} bytes, more than the limit of {max} bytes")]
    StateTooLarge {
        /// The client whose state is too large.
        client_id: u64,
        /// The declared state length in bytes.
        length: u64,
        /// The configured limit.
        max: usize,
    },
    /// A value to encode does not fit in a JS safe integer (2^53-1).
    #[error("{field} {value} exceeds 2^53-1 (Number.MAX_SAFE_INTEGER) and cannot be read by JS")]
    ValueOutOfRange {
        /// The field holding the value.
        field: WireField,
        /// The offending value.
        value: u64,
    },
    /// Bytes were left after the last expected item.
    #[error("{count} trailing bytes after the end of the message at offset {offset}")]
    TrailingBytes {
        /// Offset of the first unexpected byte.
        offset: usize,
        /// Number of unexpected bytes.
        count: usize,
    },
    /// A y-websocket message type other than awareness (1) or query-awareness (3).
    #[error(
        "unsupported y-websocket message type {0} (expected 1 = awareness or 3 = query awareness)"
    )]
    UnsupportedMessageType(u64),
}
