//! The console's allowlist: reviewed false positives, applied to matching live.
//!
//! Entries arrive as [`vigil_core::BankUpdate`] records (the worker's `[allowlist]`
//! reader) and are swapped in whole, like a bank reload. An entry holds the PDQ hashes
//! of the frames a reviewer judged, a distance, an expiry and a scope:
//! - `bank` scope: on a frame within the distance of one of its hashes, that bank's
//!   matches are dropped and the entry is reported as an `allow` match instead;
//! - `rule` scope: the frame is marked so that the rule's condition does not count it
//!   (fusion reads [`vigil_core::FrameSignals::allowed_rules`]).
//!
//! An expired entry stops applying at once, without waiting for a refresh.

use crate::Hash256;
use crate::variants::FrameHashes;
use vigil_core::{BankMatch, BankUpdate, ScopeKind};

/// The bank name an allowlist match reports.
pub const ALLOWLIST_BANK: &str = "allowlist";

#[derive(Debug, Clone, PartialEq)]
pub struct AllowEntry {
    pub id: String,
    pub scope_kind: ScopeKind,
    pub scope: String,
    pub hashes: Vec<Hash256>,
    pub max_distance: u32,
    pub expires_at_unix_ms: u64,
}

impl AllowEntry {
    /// From a record that passed [`BankUpdate::check`].
    pub fn from_update(u: &BankUpdate) -> Result<AllowEntry, String> {
        let hashes =
            u.hashes.iter().map(|h| h.parse::<Hash256>().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
        Ok(AllowEntry {
            id: u.update_id.clone(),
            scope_kind: u.scope_kind,
            scope: u.scope.clone(),
            hashes,
            max_distance: u.max_distance,
            expires_at_unix_ms: u.expires_at_unix_ms,
        })
    }

    /// The nearest distance from any of the frame's variants to any of this entry's
    /// hashes, when within the entry's distance.
    fn reaches(&self, frame: &FrameHashes) -> Option<(u32, String)> {
        frame
            .variants
            .iter()
            .flat_map(|v| self.hashes.iter().map(move |h| (v.hash.distance(h), v)))
            .filter(|(d, _)| *d <= self.max_distance)
            .min_by_key(|(d, _)| *d)
            .map(|(d, v)| (d, v.variant.name()))
    }
}

/// What the allowlist decided for one frame.
#[derive(Debug, Default, PartialEq)]
pub struct Allowed {
    /// Rules whose condition this frame must not count.
    pub rules: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Allowlist {
    pub entries: Vec<AllowEntry>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies the live entries to a frame's bank matches (in place) and says which
    /// rules the frame is allowed for.
    pub fn apply(&self, frame: &FrameHashes, matches: &mut Vec<BankMatch>, now_unix_ms: u64) -> Allowed {
        let mut allowed = Allowed::default();
        for e in self.entries.iter().filter(|e| e.expires_at_unix_ms > now_unix_ms) {
            let Some((distance, variant)) = e.reaches(frame) else { continue };
            match e.scope_kind {
                ScopeKind::Bank => matches.retain(|m| m.bank != e.scope),
                ScopeKind::Rule => {
                    if !allowed.rules.contains(&e.scope) {
                        allowed.rules.push(e.scope.clone());
                    }
                }
            }
            matches.push(BankMatch {
                bank: ALLOWLIST_BANK.into(),
                id: e.id.clone(),
                distance,
                action: crate::BankAction::Allow.as_str().into(),
                variant,
            });
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::{Variant, VariantHash};
    use crate::{DIHEDRAL, PdqOutput};

    fn frame(h: Hash256) -> FrameHashes {
        FrameHashes {
            pdq: PdqOutput { hash: h, quality: 100 },
            variants: vec![VariantHash { variant: Variant::Dihedral(DIHEDRAL[0]), hash: h }],
        }
    }

    fn hit(bank: &str) -> BankMatch {
        BankMatch {
            bank: bank.into(),
            id: "x".into(),
            distance: 0,
            action: "interrupt".into(),
            variant: "original".into(),
        }
    }

    fn entry(kind: ScopeKind, scope: &str, h: Hash256, expires: u64) -> AllowEntry {
        AllowEntry {
            id: "fp/1".into(),
            scope_kind: kind,
            scope: scope.into(),
            hashes: vec![h],
            max_distance: 8,
            expires_at_unix_ms: expires,
        }
    }

    #[test]
    fn a_bank_entry_silences_only_its_bank_near_its_hashes_until_it_expires() {
        let h = Hash256([0x5a; 32]);
        let mut near = h;
        near.0[0] ^= 0b111; // 3 bits away
        let list = Allowlist { entries: vec![entry(ScopeKind::Bank, "known", h, 1_000)] };
        let mut m = vec![hit("known"), hit("other")];
        assert_eq!(list.apply(&frame(near), &mut m, 999), Allowed::default());
        assert_eq!(m.iter().map(|m| m.bank.as_str()).collect::<Vec<_>>(), ["other", ALLOWLIST_BANK]);
        assert_eq!(m[1].distance, 3);
        let mut far = Hash256([0xa5; 32]).0;
        far[0] = 0;
        let mut m = vec![hit("known")];
        list.apply(&frame(Hash256(far)), &mut m, 999);
        assert_eq!(m, vec![hit("known")], "a frame beyond the distance keeps its match");
        let mut m = vec![hit("known")];
        list.apply(&frame(h), &mut m, 1_000);
        assert_eq!(m, vec![hit("known")], "an expired entry applies no more");
    }

    #[test]
    fn a_rule_entry_names_its_rule_and_leaves_bank_matches() {
        let h = Hash256([0x11; 32]);
        let list = Allowlist { entries: vec![entry(ScopeKind::Rule, "minor_exposure", h, u64::MAX)] };
        let mut m = vec![hit("known")];
        let allowed = list.apply(&frame(h), &mut m, 0);
        assert_eq!(allowed.rules, ["minor_exposure"]);
        assert_eq!(m.len(), 2);
    }
}
