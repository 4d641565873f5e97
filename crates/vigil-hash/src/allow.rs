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
//!
//! The entries come off a topic that is read as hostile input, so what they may cost is
//! bounded twice:
//! - [`LiveEntries`] holds at most [`MAX_ENTRIES`] entries, [`MAX_ENTRIES_PER_SCOPE`] per
//!   scope and [`MAX_LIVE_HASHES`] hashes in all, and refuses an entry over a cap;
//! - [`Allowlist`] indexes the entries' hashes like a bank's ([`HashIndex`]), so a frame
//!   costs a bank lookup rather than a comparison with every hash of every entry (10,000
//!   entries of 256 hashes, 10 variants: 25 million distances), and computes at most
//!   [`MAX_DISTANCES_PER_FRAME`] distances per frame whatever the entries hold. A frame
//!   that would need more (entries packed around it) is not allowed at all: its matches
//!   stand, it is counted (`vigil_hash_allowlist_over_budget_total`), and the cost is that
//!   a reviewed false positive alerts again, never that a match is lost.

use crate::Hash256;
use crate::index::HashIndex;
use crate::variants::FrameHashes;
use std::collections::{BTreeMap, HashMap};
use vigil_core::{BankMatch, BankUpdate, ScopeKind};

/// The bank name an allowlist match reports.
pub const ALLOWLIST_BANK: &str = "allowlist";
/// Live entries at most, in all.
pub const MAX_ENTRIES: usize = 10_000;
/// Live entries at most for one bank or one rule: one scope's flood cannot crowd out
/// every other scope's entries.
pub const MAX_ENTRIES_PER_SCOPE: usize = 1_000;
/// Hashes at most over all live entries (an entry carries up to
/// [`vigil_core::bank_update::MAX_HASHES`]): bounds the index's memory (about 140 bytes
/// per hash and 4 MiB of bucket offsets: about 40 MB at the cap) and what a frame's
/// lookup can scan.
pub const MAX_LIVE_HASHES: usize = 262_144;
/// Full-hash distance computations at most per frame (all its variants). Random hashes
/// at the widest distance an entry may carry need a few dozen at the caps (41 at most
/// over 60 frames, `a_full_allowlist_costs_a_frame_a_bounded_number_of_distances`); the
/// budget leaves room for genuine clusters (an incident's frames are near-duplicates).
pub const MAX_DISTANCES_PER_FRAME: usize = 8_192;
/// Allow matches reported at most per frame (nearest first): every entry that reaches
/// a frame applies, but a frame record does not grow with the entries.
pub const MAX_REPORTED_PER_FRAME: usize = 16;

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
}

fn scope_kind_name(kind: ScopeKind) -> &'static str {
    match kind {
        ScopeKind::Bank => "bank",
        ScopeKind::Rule => "rule",
    }
}

/// Why [`LiveEntries::insert`] refused an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverCap {
    #[error("{MAX_ENTRIES} entries are live already")]
    Entries,
    #[error("{MAX_ENTRIES_PER_SCOPE} entries are live already for {} {scope}", scope_kind_name(*.kind))]
    Scope { kind: ScopeKind, scope: String },
    #[error("the live entries hold {held} hashes; {adding} more would pass {MAX_LIVE_HASHES}")]
    Hashes { held: usize, adding: usize },
}

/// The live entries, by id, within the caps: what a reader of the bank-updates topic
/// keeps and turns into an [`Allowlist`].
#[derive(Debug, Default)]
pub struct LiveEntries {
    entries: BTreeMap<String, AllowEntry>,
    per_scope: HashMap<(ScopeKind, String), usize>,
    hashes: usize,
}

impl LiveEntries {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Adds the entry, or replaces the one with its id, unless that passes a cap; the
    /// live entries are unchanged when it is refused.
    pub fn insert(&mut self, entry: AllowEntry) -> Result<(), OverCap> {
        let key = (entry.scope_kind, entry.scope.clone());
        let old = self.entries.get(&entry.id);
        let same_scope = old.is_some_and(|o| o.scope_kind == entry.scope_kind && o.scope == entry.scope);
        let held = self.hashes - old.map_or(0, |o| o.hashes.len());
        if old.is_none() && self.entries.len() >= MAX_ENTRIES {
            return Err(OverCap::Entries);
        }
        if !same_scope && self.per_scope.get(&key).copied().unwrap_or(0) >= MAX_ENTRIES_PER_SCOPE {
            return Err(OverCap::Scope { kind: entry.scope_kind, scope: entry.scope });
        }
        if held + entry.hashes.len() > MAX_LIVE_HASHES {
            return Err(OverCap::Hashes { held, adding: entry.hashes.len() });
        }
        self.remove(&entry.id);
        *self.per_scope.entry(key).or_default() += 1;
        self.hashes += entry.hashes.len();
        self.entries.insert(entry.id.clone(), entry);
        Ok(())
    }

    /// Withdraws the entry `id`; true when it was live.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.entries.remove(id) else { return false };
        self.hashes -= old.hashes.len();
        let key = (old.scope_kind, old.scope);
        if let Some(n) = self.per_scope.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_scope.remove(&key);
            }
        }
        true
    }

    /// Drops the entries expired at `now_unix_ms`; how many.
    pub fn drop_expired(&mut self, now_unix_ms: u64) -> usize {
        let gone: Vec<String> =
            self.entries.values().filter(|e| e.expires_at_unix_ms <= now_unix_ms).map(|e| e.id.clone()).collect();
        gone.iter().filter(|id| self.remove(id)).count()
    }

    /// The entries, indexed for matching.
    pub fn allowlist(&self) -> Allowlist {
        Allowlist::new(self.entries.values().cloned().collect())
    }
}

/// What the allowlist decided for one frame.
#[derive(Debug, Default, PartialEq)]
pub struct Allowed {
    /// Rules whose condition this frame must not count.
    pub rules: Vec<String>,
    /// Full-hash distances computed for this frame (at most [`MAX_DISTANCES_PER_FRAME`]).
    pub distances: usize,
    /// The frame would have cost more than [`MAX_DISTANCES_PER_FRAME`]: nothing was
    /// allowed, its matches stand.
    pub over_budget: bool,
}

/// The entries and an index of their hashes: each distinct hash once, with the entries
/// that carry it.
#[derive(Default)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
    /// `None` when there are no hashes (no 4 MiB of empty tables).
    index: Option<HashIndex>,
    /// Entries carrying indexed hash `i`: `owners[owner_starts[i]..owner_starts[i + 1]]`.
    owner_starts: Vec<u32>,
    owners: Vec<u32>,
    /// The widest entry distance: what the index is searched at.
    radius: u32,
}

impl std::fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowlist")
            .field("entries", &self.entries.len())
            .field("hashes", &self.index.as_ref().map_or(0, HashIndex::len))
            .field("radius", &self.radius)
            .finish()
    }
}

impl Allowlist {
    /// Indexes the entries (built aside on the reader's thread, then swapped in).
    pub fn new(entries: Vec<AllowEntry>) -> Allowlist {
        assert!(entries.len() < u32::MAX as usize, "too many allowlist entries");
        let mut pairs: Vec<(Hash256, u32)> =
            entries.iter().enumerate().flat_map(|(i, e)| e.hashes.iter().map(move |h| (*h, i as u32))).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let (mut hashes, mut owner_starts, mut owners) = (Vec::new(), Vec::new(), Vec::with_capacity(pairs.len()));
        for (h, e) in pairs {
            if hashes.last() != Some(&h) {
                hashes.push(h);
                owner_starts.push(owners.len() as u32);
            }
            owners.push(e);
        }
        owner_starts.push(owners.len() as u32);
        let radius = entries.iter().map(|e| e.max_distance).max().unwrap_or(0);
        let index = (!hashes.is_empty()).then(|| HashIndex::build(hashes));
        Allowlist { entries, index, owner_starts, owners, radius }
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies the live entries to a frame's bank matches (in place) and says which
    /// rules the frame is allowed for (sorted). Each entry that reaches the frame (one of
    /// its hashes within its distance of one of the frame's variants) applies, and is
    /// reported as an `allow` match at its nearest variant (at most
    /// [`MAX_REPORTED_PER_FRAME`] of them, nearest first).
    pub fn apply(&self, frame: &FrameHashes, matches: &mut Vec<BankMatch>, now_unix_ms: u64) -> Allowed {
        let mut allowed = Allowed::default();
        let Some(index) = &self.index else { return allowed };
        let queries: Vec<(Hash256, u32)> = frame.variants.iter().map(|v| (v.hash, self.radius)).collect();
        let answers = match index.search_batch_within(&queries, MAX_DISTANCES_PER_FRAME) {
            Ok((answers, distances)) => {
                allowed.distances = distances;
                answers
            }
            Err(over) => {
                crate::metrics::METRICS.allowlist_over_budget.inc();
                allowed.distances = over.distances;
                allowed.over_budget = true;
                return allowed;
            }
        };
        // (entry, distance, variant): sorted, the first of each entry is its nearest.
        let mut reached: Vec<(u32, u32, usize)> = Vec::new();
        for (variant, hits) in answers.iter().enumerate() {
            for hit in hits {
                let (start, stop) = (self.owner_starts[hit.id as usize], self.owner_starts[hit.id as usize + 1]);
                for &e in &self.owners[start as usize..stop as usize] {
                    let entry = &self.entries[e as usize];
                    if hit.distance <= entry.max_distance && entry.expires_at_unix_ms > now_unix_ms {
                        reached.push((e, hit.distance, variant));
                    }
                }
            }
        }
        reached.sort_unstable();
        reached.dedup_by_key(|r| r.0);
        for &(e, _, _) in &reached {
            let e = &self.entries[e as usize];
            match e.scope_kind {
                ScopeKind::Bank => matches.retain(|m| m.bank != e.scope),
                ScopeKind::Rule => allowed.rules.push(e.scope.clone()),
            }
        }
        allowed.rules.sort_unstable();
        allowed.rules.dedup();
        // Reported nearest first (ties in entry order), a bounded number of them.
        reached.sort_unstable_by_key(|&(e, distance, _)| (distance, e));
        for &(e, distance, variant) in reached.iter().take(MAX_REPORTED_PER_FRAME) {
            matches.push(BankMatch {
                bank: ALLOWLIST_BANK.into(),
                id: self.entries[e as usize].id.clone(),
                distance,
                action: crate::BankAction::Allow.as_str().into(),
                variant: frame.variants[variant].variant.name(),
            });
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{flip_between, flip_exactly, random_hash};
    use crate::variants::{Variant, VariantHash};
    use crate::{DIHEDRAL, PdqOutput};
    use vigil_core::SeededRng;
    use vigil_core::bank_update::{MAX_DISTANCE, MAX_HASHES};

    fn frame(h: Hash256) -> FrameHashes {
        FrameHashes {
            pdq: PdqOutput { hash: h, quality: 100 },
            variants: vec![VariantHash { variant: Variant::Dihedral(DIHEDRAL[0]), hash: h }],
        }
    }

    /// A frame as the worker queries it: eight dihedral hashes and two crop variants
    /// (here unrelated random hashes, as a photo's are), the original first.
    fn full_frame(rng: &mut SeededRng, original: Hash256) -> FrameHashes {
        let mut variants: Vec<VariantHash> = DIHEDRAL
            .iter()
            .enumerate()
            .map(|(i, d)| VariantHash {
                variant: Variant::Dihedral(*d),
                hash: if i == 0 { original } else { random_hash(rng) },
            })
            .collect();
        variants.extend([20u16, 50].map(|per_mille| VariantHash {
            variant: Variant::Crop { per_mille },
            hash: flip_between(rng, &original, 10, 30),
        }));
        FrameHashes { pdq: PdqOutput { hash: original, quality: 100 }, variants }
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

    /// What `apply` did before the index: every entry, every hash, every variant.
    fn apply_by_scan(entries: &[AllowEntry], frame: &FrameHashes, now: u64) -> (Vec<String>, Vec<(String, u32)>) {
        let mut rules = Vec::new();
        let mut reached = Vec::new();
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.expires_at_unix_ms > now) {
            let nearest = frame
                .variants
                .iter()
                .flat_map(|v| e.hashes.iter().map(move |h| v.hash.distance(h)))
                .filter(|d| *d <= e.max_distance)
                .min();
            if let Some(d) = nearest {
                if e.scope_kind == ScopeKind::Rule {
                    rules.push(e.scope.clone());
                }
                reached.push((d, i, e.id.clone()));
            }
        }
        rules.sort();
        rules.dedup();
        reached.sort();
        (rules, reached.into_iter().take(MAX_REPORTED_PER_FRAME).map(|(d, _, id)| (id, d)).collect())
    }

    #[test]
    fn a_bank_entry_silences_only_its_bank_near_its_hashes_until_it_expires() {
        let h = Hash256([0x5a; 32]);
        let mut near = h;
        near.0[0] ^= 0b111; // 3 bits away
        let list = Allowlist::new(vec![entry(ScopeKind::Bank, "known", h, 1_000)]);
        let mut m = vec![hit("known"), hit("other")];
        let allowed = list.apply(&frame(near), &mut m, 999);
        assert!(allowed.rules.is_empty() && !allowed.over_budget);
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
        let list = Allowlist::new(vec![entry(ScopeKind::Rule, "minor_exposure", h, u64::MAX)]);
        let mut m = vec![hit("known")];
        let allowed = list.apply(&frame(h), &mut m, 0);
        assert_eq!(allowed.rules, ["minor_exposure"]);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn each_entry_applies_at_its_own_distance_and_nearest_variant() {
        let mut rng = SeededRng::new(5);
        let original = random_hash(&mut rng);
        let f = full_frame(&mut rng, original);
        let e = |id: &str, scope: &str, h: Hash256, max_distance: u32| AllowEntry {
            id: id.into(),
            scope_kind: ScopeKind::Rule,
            scope: scope.into(),
            hashes: vec![random_hash(&mut SeededRng::new(1)), h],
            max_distance,
            expires_at_unix_ms: u64::MAX,
        };
        let entries = vec![
            e("narrow", "a", flip_exactly(&mut rng, &f.variants[3].hash, 12), 10),
            e("wide", "b", flip_exactly(&mut rng, &f.variants[3].hash, 12), 31),
            e("two", "c", flip_exactly(&mut rng, &f.variants[0].hash, 20), 31),
            e("shared", "c", flip_exactly(&mut rng, &f.variants[0].hash, 20), 31),
        ];
        // "shared" also carries the hash "two" carries: indexed once, applies to both.
        let mut entries = entries;
        let shared = entries[2].hashes[1];
        entries[3].hashes.push(shared);
        let list = Allowlist::new(entries.clone());
        let mut m = Vec::new();
        let allowed = list.apply(&f, &mut m, 0);
        assert_eq!(allowed.rules, ["b", "c"]);
        let (rules, reported) = apply_by_scan(&entries, &f, 0);
        assert_eq!(allowed.rules, rules);
        assert_eq!(m.iter().map(|m| (m.id.clone(), m.distance)).collect::<Vec<_>>(), reported);
        assert_eq!(m.iter().find(|m| m.id == "wide").unwrap().variant, f.variants[3].variant.name());
    }

    #[test]
    fn a_full_allowlist_costs_a_frame_a_bounded_number_of_distances() {
        // The worst the caps let through, all in one scope: 10,000 entries at the widest
        // distance a record may carry, with varied hashes (as many as the caps allow).
        let mut rng = SeededRng::new(0xa110);
        let per_entry = MAX_LIVE_HASHES / MAX_ENTRIES;
        let entries: Vec<AllowEntry> = (0..MAX_ENTRIES)
            .map(|i| AllowEntry {
                id: format!("fp/{i}"),
                scope_kind: ScopeKind::Rule,
                scope: "nsfw_classifier".into(),
                hashes: (0..per_entry).map(|_| random_hash(&mut rng)).collect(),
                max_distance: MAX_DISTANCE,
                expires_at_unix_ms: u64::MAX,
            })
            .collect();
        let list = Allowlist::new(entries.clone());
        // Unrelated frames, and frames whose original is 0-40 bits from an entry's hash.
        let frames: Vec<FrameHashes> = (0..60)
            .map(|i| {
                let original = if i % 2 == 0 {
                    random_hash(&mut rng)
                } else {
                    let near = entries[rng.below(entries.len())].hashes[rng.below(per_entry)];
                    flip_between(&mut rng, &near, 0, 40)
                };
                full_frame(&mut rng, original)
            })
            .collect();
        // Before the index: every hash of every entry against every variant.
        let scan_cost = entries.len() * per_entry * frames[0].variants.len();
        let bound = 500;
        let (mut worst, mut reached) = (0, 0);
        for f in &frames {
            let mut m = Vec::new();
            let allowed = list.apply(f, &mut m, 0);
            assert!(!allowed.over_budget);
            worst = worst.max(allowed.distances);
            let (rules, reported) = apply_by_scan(&entries, f, 0);
            assert_eq!(allowed.rules, rules, "the index finds what the scan finds");
            assert_eq!(m.iter().map(|m| (m.id.clone(), m.distance)).collect::<Vec<_>>(), reported);
            reached += usize::from(!reported.is_empty());
        }
        assert!(reached >= 20, "{reached} frames near an entry");
        assert!(worst <= bound, "{worst} distances for one frame, over {bound} (a scan: {scan_cost})");
        assert!(scan_cost >= 2_000_000);
        eprintln!("worst frame: {worst} distances (bound {bound}; a scan computes {scan_cost})");
    }

    #[test]
    fn entries_packed_around_a_frame_cost_no_more_than_the_budget_and_allow_nothing() {
        // A hostile topic at the caps: every hash within a few bits of one frame.
        let mut rng = SeededRng::new(0xbad);
        let centre = random_hash(&mut rng);
        let entries: Vec<AllowEntry> = (0..MAX_LIVE_HASHES / MAX_HASHES)
            .map(|i| AllowEntry {
                id: format!("fp/{i}"),
                scope_kind: ScopeKind::Bank,
                scope: "known".into(),
                hashes: (0..MAX_HASHES).map(|_| flip_between(&mut rng, &centre, 1, 12)).collect(),
                max_distance: MAX_DISTANCE,
                expires_at_unix_ms: u64::MAX,
            })
            .collect();
        let list = Allowlist::new(entries);
        let before = crate::metrics::METRICS.allowlist_over_budget.get();
        let mut m = vec![hit("known")];
        let allowed = list.apply(&full_frame(&mut rng, centre), &mut m, 0);
        assert!(allowed.over_budget && allowed.distances <= MAX_DISTANCES_PER_FRAME, "{allowed:?}");
        assert_eq!(m, vec![hit("known")], "fails closed: the bank match stands");
        assert!(crate::metrics::METRICS.allowlist_over_budget.get() > before);
        // The same hash in every entry is indexed once.
        let same: Vec<AllowEntry> = (0..MAX_ENTRIES)
            .map(|i| AllowEntry { id: format!("fp/{i}"), ..entry(ScopeKind::Bank, "known", centre, u64::MAX) })
            .collect();
        let mut m = vec![hit("known")];
        let allowed = Allowlist::new(same).apply(&full_frame(&mut rng, centre), &mut m, 0);
        assert!(!allowed.over_budget && allowed.distances <= 10, "{allowed:?}");
        assert_eq!(m.len(), MAX_REPORTED_PER_FRAME, "the bank match is gone, a bounded report stays");
        assert!(m.iter().all(|m| m.bank == ALLOWLIST_BANK));
    }

    #[test]
    fn live_entries_are_capped_per_scope_in_all_and_in_hashes() {
        let h = Hash256([0x33; 32]);
        let e = |id: String, kind: ScopeKind, scope: &str, hashes: usize| AllowEntry {
            id,
            hashes: vec![h; hashes],
            ..entry(kind, scope, h, u64::MAX)
        };
        let mut live = LiveEntries::default();
        for i in 0..MAX_ENTRIES_PER_SCOPE {
            live.insert(e(format!("a/{i}"), ScopeKind::Bank, "known", 1)).unwrap();
        }
        let over = live.insert(e("a/x".into(), ScopeKind::Bank, "known", 1)).unwrap_err();
        assert_eq!(over, OverCap::Scope { kind: ScopeKind::Bank, scope: "known".into() });
        assert!(over.to_string().contains("bank known"), "{over}");
        // The same name as a rule is another scope; replacing an entry is no new one.
        live.insert(e("a/x".into(), ScopeKind::Rule, "known", 1)).unwrap();
        live.insert(e("a/0".into(), ScopeKind::Bank, "known", 2)).unwrap();
        // Moving an entry into a full scope is refused, and changes nothing.
        assert!(live.insert(e("a/x".into(), ScopeKind::Bank, "known", 1)).is_err());
        assert_eq!(live.allowlist().entries().iter().filter(|e| e.scope_kind == ScopeKind::Rule).count(), 1);
        assert!(live.remove("a/1"));
        live.insert(e("a/x".into(), ScopeKind::Bank, "known", 1)).unwrap();
        assert_eq!(live.len(), MAX_ENTRIES_PER_SCOPE);
        let mut n = 0;
        while live.len() < MAX_ENTRIES {
            live.insert(e(format!("b/{n}"), ScopeKind::Rule, &format!("r{}", n / 999), 1)).unwrap();
            n += 1;
        }
        assert_eq!(live.insert(e("c".into(), ScopeKind::Rule, "other", 1)), Err(OverCap::Entries));
        live.insert(e("b/0".into(), ScopeKind::Rule, "other", 1)).expect("a replacement is no new entry");
        // Hashes: the total over live entries.
        let mut live = LiveEntries::default();
        for i in 0..MAX_LIVE_HASHES / MAX_HASHES {
            live.insert(e(format!("h/{i}"), ScopeKind::Bank, &format!("b{i}"), MAX_HASHES)).unwrap();
        }
        let over = live.insert(e("h/x".into(), ScopeKind::Bank, "x", 1)).unwrap_err();
        assert_eq!(over, OverCap::Hashes { held: MAX_LIVE_HASHES, adding: 1 });
        live.insert(e("h/0".into(), ScopeKind::Bank, "b0", MAX_HASHES)).expect("replacing frees its own hashes");
        assert_eq!(live.drop_expired(u64::MAX), MAX_LIVE_HASHES / MAX_HASHES);
        assert!(live.is_empty());
        live.insert(e("h/x".into(), ScopeKind::Bank, "x", MAX_HASHES)).unwrap();
    }
}
