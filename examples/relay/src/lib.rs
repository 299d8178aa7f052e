//! The relay's documents, as a library so that its tests can drive them directly; the server
//! itself is `src/main.rs` (README "Run a presence server").
#![forbid(unsafe_code)]

pub mod documents;
