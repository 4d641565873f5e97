use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[hash]`: PDQ hashing and the banks frames are matched against.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashConfig {
    /// Frames whose PDQ quality is below this are counted, not matched
    /// (ThreatExchange's recommended floor is 50).
    #[serde(default = "default_quality_floor")]
    pub quality_floor: u8,
    #[serde(default)]
    pub banks: Vec<BankConfig>,
}

impl Default for HashConfig {
    fn default() -> Self {
        Self { quality_floor: default_quality_floor(), banks: Vec::new() }
    }
}

fn default_quality_floor() -> u8 {
    50
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    pub name: String,
    pub path: PathBuf,
    pub action: BankAction,
    /// Hamming distance at or below which a frame hash matches (ThreatExchange: 31).
    #[serde(default = "default_max_distance")]
    pub max_distance: u32,
}

fn default_max_distance() -> u32 {
    31
}

/// What a match in a bank asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankAction {
    /// Known abuse material: cut the stream now.
    Interrupt,
    /// A human looks.
    Review,
    /// Known false positives: a match here suppresses the other banks' matches.
    Allow,
}

impl BankAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BankAction::Interrupt => "interrupt",
            BankAction::Review => "review",
            BankAction::Allow => "allow",
        }
    }
}

impl HashConfig {
    /// Every mistake in this section, each prefixed with its path.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if self.quality_floor > 100 {
            errors
                .push(format!("{prefix}.quality_floor: {} is above 100, the highest PDQ quality", self.quality_floor));
        }
        let mut names = std::collections::HashSet::new();
        for (i, bank) in self.banks.iter().enumerate() {
            let at = format!("{prefix}.banks[{i}]");
            if bank.name.trim().is_empty() {
                errors.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(bank.name.as_str()) {
                errors.push(format!("{at}.name: \"{}\" is used by another bank", bank.name));
            }
            if bank.max_distance > 128 {
                errors.push(format!(
                    "{at}.max_distance: {} would match unrelated images (PDQ's recommended distance is 31)",
                    bank.max_distance
                ));
            }
            if bank.path.as_os_str().is_empty() {
                errors.push(format!("{at}.path: must not be empty"));
            }
        }
        errors
    }
}
