//! The relay's documents, as a library so that its tests can drive them directly; the server
//! itself is `src/main.rs` (examples/relay/README.md).
#![forbid(unsafe_code)]

pub mod documents;
