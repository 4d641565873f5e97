//! Signals → decisions over time. A [`Policy`] (TOML, `config/policies/`) turns each
//! sample's signals into conditions and fires rules over a stream's recent samples
//! ("k of the last n"); [`StreamFusion`] keeps one stream's window and its open
//! incident, so one ongoing episode produces one alert that is escalated or closed,
//! never a flood, and tells media when to sample densely.
#![forbid(unsafe_code)]

pub mod policy;
pub mod stream;

pub use policy::{Condition, Conditions, Decision, Policy};
pub use stream::{Event, Incident, Outcome, Sampling, StreamFusion};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[fusion]`: which policy decides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// A policy file; default: the shipped `config/policies/default.toml`, embedded.
    #[serde(default)]
    pub policy: Option<PathBuf>,
}

impl FusionConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        match &self.policy {
            Some(p) => match Policy::load(p) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.into_iter().map(|e| format!("{prefix}.policy ({}): {e}", p.display())).collect(),
            },
            None => Vec::new(),
        }
    }

    pub fn load_policy(&self) -> Result<Policy, Vec<String>> {
        match &self.policy {
            Some(p) => Policy::load(p),
            None => Ok(Policy::embedded_default()),
        }
    }
}
