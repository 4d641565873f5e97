//! Perceptual hashing and known-content matching.
//!
//! - [`pdq`]: PDQ hashes bit-exact with ThreatExchange's reference, with its integer
//!   quality metric (the `pdqhash` crate's quality is a different, unquantised value).
//! - [`bank`]: hash-bank files (hex per line, or CSV with ids), each with an action and
//!   a distance threshold, and matching of a frame hash against all banks.
#![forbid(unsafe_code)]

pub mod allow;
pub mod bank;
pub mod config;
pub mod format;
mod hash256;
mod high_water;
pub mod index;
pub mod metrics;
pub mod pdq;
mod store;
pub mod synthetic;
pub mod variants;

pub use allow::{ALLOWLIST_BANK, AllowEntry, Allowed, Allowlist, LiveEntries, OverCap};
pub use bank::{BadLine, Bank, BankError, BankSet, BankStats};
pub use config::{BankAction, BankConfig, HashConfig};
pub use hash256::{Hash256, ParseHashError};
pub use high_water::StateError;
pub use index::{HashIndex, Hit, OverBudget};
pub use pdq::{DIHEDRAL, Dihedral, PdqHasher, PdqOutput};
pub use store::{BankState, BankStatus, BankStore, UnknownBank};
pub use variants::{FrameHashes, Variant, VariantHasher};
