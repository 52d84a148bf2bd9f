//! Wire types shared by the coordinator, workers and clients.
//!
//! Architecture Invariant: these types are the compatibility surface. Field names are stable;
//! new fields are optional (`#[serde(default)]`); a breaking change to the worker protocol bumps
//! [`PROTOCOL_VERSION`].

pub mod api;
pub mod chat;
pub mod failover;
pub mod relay;
pub mod signatures;
pub mod worker;

pub use api::*;

/// Version of the worker protocol spoken over the WebSocket. Version 2: a result's signature
/// covers the digest of the assignment it ran (`worker::assign_digest`), so that a relay cannot
/// alter a task's inputs unseen. Version 3: a `failed` message is signed too
/// (`worker::failure_message`), so that a relay cannot report a worker's attempt as failed in
/// its name. A coordinator rejects a worker speaking another version at its hello.
pub const PROTOCOL_VERSION: u32 = 3;

/// Whether `s` names content the way runegrid does (programs, blobs): a SHA-256 as 64
/// lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Base64 (standard alphabet, padded) for bytes inside JSON.
pub mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(s)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(serde::de::Error::custom)
    }
}
