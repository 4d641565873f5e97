//! Signed records between Vigil's parts.
//!
//! Kafka authenticates connections, not records: whoever can produce to a topic can say
//! anything on it. Every record a Vigil part writes therefore carries an Ed25519
//! signature over the topic, the key, the value and a timestamp, made with the writer's
//! own key; every reader checks it against a keyring that names each key's role, and
//! acts only on records written by a role allowed on that topic ([`TopicKind::writers`]).
//!
//! - Keys and keyrings are files ([`keys`]): a part's secret key (`vigil keys gen`), and a
//!   keyring of public keys with roles, reloaded while running so that keys rotate.
//! - The signature travels in three headers ([`record`]): the key id, the timestamp and
//!   the signature.
//! - Readers refuse and count records that are unsigned, signed by an unknown key or a
//!   role not allowed on the topic, stale (command topics only) or replayed
//!   ([`Verifier`]), and keep serving everything else.

pub mod config;
pub mod keys;
pub mod metrics;
pub mod record;
mod replay;
pub mod topic;

pub use config::TrustConfig;
pub use keys::{Keyring, KeyringHandle, Signer};
pub use record::{Refusal, Verified, Verifier};
pub use topic::{Role, TopicKind};

/// What can go wrong loading keys.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: line {line}: {why}")]
    Line { path: String, line: usize, why: String },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Config(String),
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
