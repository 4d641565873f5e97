use crate::variants::Variant;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[hash]`: PDQ hashing, near-duplicate skipping and the banks frames are matched against.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashConfig {
    /// Frames whose PDQ quality is below this are counted, not matched
    /// (ThreatExchange's recommended floor is 50).
    #[serde(default = "default_quality_floor")]
    pub quality_floor: u8,
    /// A sample within this PDQ distance of the stream's last analysed sample reuses
    /// that sample's model results (0 turns skipping off). Bank matching always runs.
    #[serde(default = "default_near_duplicate_max_distance")]
    pub near_duplicate_max_distance: u32,
    /// At most this many samples in a row reuse one analysis, so a slowly changing
    /// scene is still looked at again.
    #[serde(default = "default_near_duplicate_max_reuse")]
    pub near_duplicate_max_reuse: u32,
    /// How often bank files are checked for changes (hot reload).
    #[serde(default = "default_reload_poll_secs")]
    pub reload_poll_secs: u64,
    /// Where the worker keeps each bank's high-water mark (the most rows it has
    /// served), so a shrink is measured against it across reloads and restarts.
    /// Default: `$VIGIL_STATE_DIR`, else `/var/lib/vigil/state` (beside the spool).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub banks: Vec<BankConfig>,
}

impl Default for HashConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

fn default_quality_floor() -> u8 {
    50
}
fn default_near_duplicate_max_distance() -> u32 {
    6
}
fn default_near_duplicate_max_reuse() -> u32 {
    5
}
fn default_reload_poll_secs() -> u64 {
    5
}
fn default_state_dir() -> PathBuf {
    std::env::var_os("VIGIL_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/vigil/state"), PathBuf::from)
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
    /// Also query with the frame's rotations and reflections (free: same DCT).
    #[serde(default = "default_true")]
    pub dihedral: bool,
    /// Crop-reach variants: share cropped from each side (0.02 = 2%) to reach for.
    #[serde(default = "default_crops")]
    pub crops: Vec<f32>,
    /// Distance at or below which a crop-reach variant matches (default 46, never below
    /// `max_distance`). A crop loses the border for good, so a 5%-per-side crop lands
    /// 14–46 bits from its banked original even after the reach (`vigil bench
    /// robustness`, docs/performance.md): 46 reaches all of them while unrelated photos stay 100+
    /// bits away, and up to 47 the index still probes cheaply.
    ///
    /// A crop match beyond `max_distance` is a *reach* match and is never acted on
    /// alone: an `interrupt` bank's becomes `review` (a human decides; a false interrupt
    /// punishes an innocent creator), and an `allow` bank does not reach at all (a wide
    /// allow match would suppress a real one). Set it to `max_distance` to turn reach off.
    pub crop_max_distance: Option<u32>,
    /// A reload that keeps fewer than this share of the bank's high-water mark (the
    /// most rows it has served, kept across restarts) is refused and alarmed: a bank
    /// never shrinks silently (a truncated download, a wrong file), nor in steps.
    #[serde(default = "default_min_keep_fraction")]
    pub min_keep_fraction: f32,
    /// An intended shrink: a file with at least this many rows is accepted however far
    /// below the high-water mark, and the mark restarts from it. Remove it once done
    /// (the one-shot alternative is `POST /admin/banks/{name}/accept-shrink`).
    #[serde(default)]
    pub allow_shrink_to: Option<usize>,
}

fn default_max_distance() -> u32 {
    31
}
fn default_true() -> bool {
    true
}
fn default_crops() -> Vec<f32> {
    vec![0.02, 0.05]
}
/// See [`BankConfig::crop_max_distance`].
pub const DEFAULT_CROP_MAX_DISTANCE: u32 = 46;
/// The widest crop reach accepted: the index probes radius 40..=47 at one cost, and
/// from 48 at about three times that (`vigil bench robustness`).
pub const MAX_CROP_MAX_DISTANCE: u32 = 47;

fn default_min_keep_fraction() -> f32 {
    0.5
}

impl BankConfig {
    /// A bank with every default, for the command line and tests.
    pub fn for_path(path: impl Into<PathBuf>) -> BankConfig {
        BankConfig {
            name: "bank".into(),
            path: path.into(),
            action: BankAction::Interrupt,
            max_distance: default_max_distance(),
            dihedral: true,
            crops: default_crops(),
            crop_max_distance: None,
            min_keep_fraction: default_min_keep_fraction(),
            allow_shrink_to: None,
        }
    }

    /// The distance at or below which `variant` matches in this bank.
    pub fn radius_for(&self, variant: &Variant) -> u32 {
        match (variant, self.action) {
            (Variant::Crop { .. }, BankAction::Interrupt | BankAction::Review) => {
                self.crop_max_distance.unwrap_or(DEFAULT_CROP_MAX_DISTANCE).max(self.max_distance)
            }
            _ => self.max_distance,
        }
    }

    /// What a match of `variant` at `distance` asks for: the bank's action, except
    /// that a crop-reach match beyond `max_distance` is only ever reviewed.
    pub fn action_for(&self, variant: &Variant, distance: u32) -> BankAction {
        match variant {
            Variant::Crop { .. } if distance > self.max_distance => BankAction::Review,
            _ => self.action,
        }
    }

    /// Whether this bank is queried with `variant`.
    pub fn uses(&self, variant: &Variant) -> bool {
        match variant {
            Variant::Dihedral(_) if variant.is_original() => true,
            Variant::Dihedral(_) => self.dihedral,
            Variant::Crop { per_mille } => self.crops.iter().any(|c| (c * 1000.0).round() as u16 == *per_mille),
        }
    }
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
        if self.near_duplicate_max_distance > 31 {
            errors.push(format!(
                "{prefix}.near_duplicate_max_distance: {} would treat different images as the same (keep it well under 31)",
                self.near_duplicate_max_distance
            ));
        }
        if self.reload_poll_secs == 0 {
            errors.push(format!("{prefix}.reload_poll_secs: must be at least 1"));
        }
        if self.state_dir.as_os_str().is_empty() {
            errors.push(format!("{prefix}.state_dir: must not be empty (banks' high-water marks live there)"));
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
            if let Some(d) = bank.crop_max_distance {
                if !(bank.max_distance..=MAX_CROP_MAX_DISTANCE.max(bank.max_distance)).contains(&d) {
                    errors.push(format!(
                        "{at}.crop_max_distance: {d} is outside {}..={} (past {MAX_CROP_MAX_DISTANCE} every crop query of every frame costs several times more index work)",
                        bank.max_distance,
                        MAX_CROP_MAX_DISTANCE.max(bank.max_distance)
                    ));
                } else if bank.action == BankAction::Allow && d > bank.max_distance {
                    errors.push(format!(
                        "{at}.crop_max_distance: an allow bank does not reach past max_distance ({}): a wide allow match would suppress a real one",
                        bank.max_distance
                    ));
                }
            }
            for (j, c) in bank.crops.iter().enumerate() {
                if !(*c > 0.0 && *c <= 0.2) {
                    errors.push(format!("{at}.crops[{j}]: {c} is outside (0, 0.2]"));
                }
            }
            if !(0.0..=1.0).contains(&bank.min_keep_fraction) {
                errors.push(format!("{at}.min_keep_fraction: {} is outside 0..=1", bank.min_keep_fraction));
            }
            if bank.allow_shrink_to == Some(0) {
                errors.push(format!(
                    "{at}.allow_shrink_to: 0 would accept an empty or truncated file (give the rows the bank is meant to keep)"
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_max_distance_is_checked_against_the_bank_distance() {
        let bank = |crop: Option<u32>| HashConfig {
            banks: vec![BankConfig { crop_max_distance: crop, ..BankConfig::for_path("b.csv") }],
            ..HashConfig::default()
        };
        assert!(bank(None).validate("hash").is_empty());
        assert!(bank(Some(46)).validate("hash").is_empty());
        for bad in [20, 48] {
            let errors = bank(Some(bad)).validate("hash");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].starts_with("hash.banks[0].crop_max_distance:"), "{errors:?}");
        }
        let mut allow = bank(Some(40));
        allow.banks[0].action = BankAction::Allow;
        let errors = allow.validate("hash");
        assert!(errors.len() == 1 && errors[0].contains("allow bank does not reach"), "{errors:?}");
        allow.banks[0].crop_max_distance = Some(31);
        assert!(allow.validate("hash").is_empty());
    }

    #[test]
    fn crop_reach_is_reviewed_and_allow_banks_do_not_reach() {
        let crop = Variant::Crop { per_mille: 50 };
        let plain = Variant::Dihedral(crate::pdq::Dihedral::Original);
        let interrupt = BankConfig::for_path("b.csv");
        assert_eq!((interrupt.radius_for(&crop), interrupt.radius_for(&plain)), (DEFAULT_CROP_MAX_DISTANCE, 31));
        assert_eq!(interrupt.action_for(&crop, 31), BankAction::Interrupt);
        assert_eq!(interrupt.action_for(&crop, 32), BankAction::Review);
        assert_eq!(interrupt.action_for(&plain, 31), BankAction::Interrupt);
        let allow = BankConfig { action: BankAction::Allow, ..BankConfig::for_path("a.csv") };
        assert_eq!(allow.radius_for(&crop), 31);
        let off = BankConfig { crop_max_distance: Some(31), ..BankConfig::for_path("b.csv") };
        assert_eq!(off.radius_for(&crop), 31);
        let wide = BankConfig { max_distance: 50, ..BankConfig::for_path("b.csv") };
        assert_eq!(wide.radius_for(&crop), 50, "never below max_distance");
    }
}
