//! Hash banks: files of known-content hashes (formats in [`crate::format`]), each with
//! an action, a distance threshold and the frame variants it is queried with, indexed
//! for exact radius search ([`crate::index`]).

use crate::Hash256;
use crate::config::{BankAction, BankConfig};
use crate::format;
use crate::index::{HashIndex, Hit};
use crate::variants::{FrameHashes, VariantHash};
use std::path::PathBuf;
use vigil_core::BankMatch;

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("bank {bank}: cannot read {path}: {source}")]
    Read { bank: String, path: PathBuf, source: std::io::Error },
    /// The last line has no newline: the file is being written, or was cut short.
    /// Whatever it held is not trusted; replace bank files whole (write a temp file,
    /// then rename it over the bank) and end every line with a newline.
    #[error(
        "bank {bank}: {path} ends mid-line (line {line} has no newline): a partial write? Replace bank files whole (temp file, then rename) and end every line with a newline"
    )]
    Partial { bank: String, path: PathBuf, line: usize },
}

/// A line that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// Strings packed end to end: 4 bytes of overhead per string instead of 24 + heap.
#[derive(Default)]
struct Arena {
    text: String,
    ends: Vec<u32>,
}

impl Arena {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
    }
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
    fn bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 4
    }
}

pub struct Bank {
    pub config: BankConfig,
    index: HashIndex,
    ids: Arena,
    labels: Arena,
    /// Rows of other signal types that were skipped.
    pub other_types: usize,
}

/// Summary of one loaded bank.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BankStats {
    pub name: String,
    pub action: &'static str,
    pub path: PathBuf,
    pub rows: usize,
    pub other_types: usize,
    pub max_distance: u32,
    pub memory_bytes: usize,
}

impl Bank {
    /// Reads and indexes a bank file. Bad lines are returned for the caller to report;
    /// the good rows serve.
    pub fn load(config: &BankConfig) -> Result<(Bank, Vec<BadLine>), BankError> {
        let bytes = std::fs::read(&config.path).map_err(|source| BankError::Read {
            bank: config.name.clone(),
            path: config.path.clone(),
            source,
        })?;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            let line = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            return Err(BankError::Partial { bank: config.name.clone(), path: config.path.clone(), line });
        }
        let parsed = format::parse(&String::from_utf8_lossy(&bytes));
        drop(bytes);
        let bad =
            parsed.bad.into_iter().map(|(line, reason)| BadLine { path: config.path.clone(), line, reason }).collect();
        Ok((Self::from_rows(config.clone(), parsed.rows, parsed.other_types), bad))
    }

    pub fn from_rows(config: BankConfig, rows: Vec<format::Row>, other_types: usize) -> Bank {
        let (mut ids, mut labels) = (Arena::default(), Arena::default());
        let mut hashes = Vec::with_capacity(rows.len());
        for r in rows {
            ids.push(&r.id);
            labels.push(&r.label);
            hashes.push(r.hash);
        }
        Bank { config, index: HashIndex::build(hashes), ids, labels, other_types }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn action(&self) -> BankAction {
        self.config.action
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn stats(&self) -> BankStats {
        BankStats {
            name: self.config.name.clone(),
            action: self.config.action.as_str(),
            path: self.config.path.clone(),
            rows: self.len(),
            other_types: self.other_types,
            max_distance: self.config.max_distance,
            memory_bytes: self.index.memory_bytes() + self.ids.bytes() + self.labels.bytes(),
        }
    }

    /// Id and label of row `i`.
    pub fn row(&self, i: u32) -> (&str, &str, &Hash256) {
        (self.ids.get(i as usize), self.labels.get(i as usize), self.index.hash(i))
    }

    /// Every banked hash within this bank's distance of `hash`, nearest first.
    pub fn lookup_hash(&self, hash: &Hash256, variant: &str) -> Vec<BankMatch> {
        self.lookup_within(hash, variant, self.config.max_distance)
    }

    fn lookup_within(&self, hash: &Hash256, variant: &str, radius: u32) -> Vec<BankMatch> {
        self.index.search(hash, radius).into_iter().map(|hit| self.matched(hit, variant, self.config.action)).collect()
    }

    fn matched(&self, hit: Hit, variant: &str, action: BankAction) -> BankMatch {
        BankMatch {
            bank: self.config.name.clone(),
            id: self.ids.get(hit.id as usize).to_string(),
            distance: hit.distance,
            action: action.as_str().to_string(),
            variant: variant.to_string(),
        }
    }

    /// Matches for a frame, over the variants this bank is configured to use; one
    /// match per banked row, at its nearest variant.
    pub fn lookup_frame(&self, frame: &FrameHashes) -> Vec<BankMatch> {
        // One batch: coinciding variants (a symmetric frame) are searched once.
        let used: Vec<&VariantHash> = frame.variants.iter().filter(|v| self.config.uses(&v.variant)).collect();
        let queries: Vec<(Hash256, u32)> = used.iter().map(|v| (v.hash, self.config.radius_for(&v.variant))).collect();
        let mut all: Vec<BankMatch> = used
            .iter()
            .zip(self.index.search_batch(&queries))
            .flat_map(|(v, hits)| {
                let name = v.variant.name();
                hits.into_iter()
                    .map(|hit| self.matched(hit, &name, self.config.action_for(&v.variant, hit.distance)))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Nearest first, then prefer the plain hash on ties; keep one per row id.
        all.sort_by_key(|m| (m.distance, m.variant != "original"));
        let mut seen = std::collections::HashSet::new();
        all.retain(|m| seen.insert(m.id.clone()));
        all
    }
}

/// All configured banks, matched together.
#[derive(Default)]
pub struct BankSet {
    /// Shared with later sets when a reload leaves a bank unchanged.
    pub banks: Vec<std::sync::Arc<Bank>>,
    /// Reviewed false positives from the console, applied after the banks.
    pub allowlist: std::sync::Arc<crate::allow::Allowlist>,
}

impl BankSet {
    /// Loads every bank; unreadable banks are errors (see [`crate::BankStore`] for the
    /// serving path, which keeps going without them).
    pub fn load(configs: &[BankConfig]) -> Result<(BankSet, Vec<BadLine>), BankError> {
        let mut banks = Vec::new();
        let mut bad = Vec::new();
        for c in configs {
            let (bank, lines) = Bank::load(c)?;
            bad.extend(lines);
            banks.push(std::sync::Arc::new(bank));
        }
        Ok((BankSet { banks, allowlist: Default::default() }, bad))
    }

    /// Matches in every bank. A match in an `allow` bank (a known false positive)
    /// suppresses the other banks' matches for this frame and is itself reported.
    pub fn lookup(&self, frame: &FrameHashes) -> Vec<BankMatch> {
        self.lookup_at(frame, unix_ms_now()).0
    }

    /// [`BankSet::lookup`], then the console's allowlist as of `now_unix_ms`: the
    /// matches, and the policy rules this frame is allowed for.
    pub fn lookup_at(&self, frame: &FrameHashes, now_unix_ms: u64) -> (Vec<BankMatch>, Vec<String>) {
        let all: Vec<BankMatch> = self.banks.iter().flat_map(|b| b.lookup_frame(frame)).collect();
        // A bank-file allow silences every bank; an allowlist entry only its scope, so
        // it comes after.
        let mut matches = suppress_allowed(all);
        let allowed = self.allowlist.apply(frame, &mut matches, now_unix_ms);
        (matches, allowed.rules)
    }

    pub fn total_hashes(&self) -> usize {
        self.banks.iter().map(|b| b.len()).sum()
    }

    /// Crop fractions any bank wants, so a frame is hashed once for all of them.
    pub fn crop_fractions(&self) -> Vec<f32> {
        let mut all: Vec<f32> = self.banks.iter().flat_map(|b| b.config.crops.iter().copied()).collect();
        all.sort_by(f32::total_cmp);
        all.dedup();
        all
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn suppress_allowed(mut all: Vec<BankMatch>) -> Vec<BankMatch> {
    if all.iter().any(|m| m.action == BankAction::Allow.as_str()) {
        all.retain(|m| m.action == BankAction::Allow.as_str());
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variants::VariantHasher;

    const A: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    fn bank(text: &str, action: BankAction) -> Bank {
        let p = format::parse(text);
        let cfg = BankConfig { name: format!("{action:?}"), action, ..BankConfig::for_path("t.csv") };
        Bank::from_rows(cfg, p.rows, 0)
    }

    fn frame_of(h: Hash256) -> FrameHashes {
        let mut fh = VariantHasher::new(&[]).hash(&[0u8; 64 * 64 * 3], 64, 64);
        fh.variants[0].hash = h;
        fh.variants.truncate(1);
        fh
    }

    #[test]
    fn lookup_respects_distance() {
        let b = bank(A, BankAction::Interrupt);
        let mut h: Hash256 = A.parse().unwrap();
        for k in 0..31 {
            h.0[k / 8] ^= 1 << (k % 8);
        }
        assert_eq!(b.lookup_hash(&h, "original")[0].distance, 31);
        h.0[31] ^= 0x80;
        assert!(b.lookup_hash(&h, "original").is_empty());
    }

    #[test]
    fn crop_reach_matches_wider_but_only_for_review() {
        let banked: Hash256 = A.parse().unwrap();
        let at = |bits: usize| {
            let mut h = banked;
            for k in 0..bits {
                h.0[k / 8] ^= 1 << (k % 8);
            }
            h
        };
        // The same hash arrives as the plain frame hash and as a crop variant.
        let frame = |h: Hash256| {
            let mut fh = frame_of(h);
            fh.variants.push(crate::variants::VariantHash { variant: crate::Variant::Crop { per_mille: 50 }, hash: h });
            fh
        };
        let interrupt = bank(A, BankAction::Interrupt);
        let m = interrupt.lookup_frame(&frame(at(40)));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].variant.as_str(), m[0].distance, m[0].action.as_str()), ("crop_5%", 40, "review"));
        let m = interrupt.lookup_frame(&frame(at(20)));
        assert_eq!(
            (m[0].variant.as_str(), m[0].action.as_str()),
            ("original", "interrupt"),
            "the plain hash wins ties"
        );
        assert!(interrupt.lookup_frame(&frame(at(47))).is_empty(), "beyond the reach");
        assert!(interrupt.lookup_frame(&frame_of(at(40))).is_empty(), "the plain hash keeps max_distance");
        let off = BankConfig { crop_max_distance: Some(31), ..interrupt.config.clone() };
        assert!(Bank::from_rows(off, format::parse(A).rows, 0).lookup_frame(&frame(at(40))).is_empty());
        // An allow bank does not reach: its wide match would have suppressed a real one.
        let set = BankSet {
            banks: vec![bank(A, BankAction::Interrupt).into(), bank(A, BankAction::Allow).into()],
            ..Default::default()
        };
        let m = set.lookup(&frame(at(40)));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].bank.as_str(), m[0].action.as_str()), ("Interrupt", "review"));
    }

    #[test]
    fn allow_bank_suppresses_other_matches() {
        let banks = vec![bank(A, BankAction::Interrupt).into(), bank(A, BankAction::Allow).into()];
        let set = BankSet { banks, ..Default::default() };
        let m = set.lookup(&frame_of(A.parse().unwrap()));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].action, "allow");
    }

    #[test]
    fn rows_keep_ids_and_labels() {
        let b = bank(&format!("id,hash,label\nx1,{A},bridge\n"), BankAction::Review);
        let (id, label, h) = b.row(0);
        assert_eq!((id, label, h.to_hex().as_str()), ("x1", "bridge", A));
        assert_eq!(b.lookup_hash(&A.parse().unwrap(), "original")[0].id, "x1");
    }
}
