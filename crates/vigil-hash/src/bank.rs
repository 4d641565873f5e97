//! Hash banks: files of known-content hashes, each with an action and a threshold.
//!
//! Accepted line formats (one hash per line; `#` starts a comment):
//! - `HEX` — 64 hex digits; the id is the line number.
//! - `ID,HEX[,LABEL...]` — CSV with an id first; a header row is skipped.
//!
//! A malformed line is reported with file and line number and the rest still loads.

use crate::Hash256;
use crate::config::{BankAction, BankConfig};
use std::path::{Path, PathBuf};
use vigil_core::BankMatch;

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("bank {bank}: cannot read {path}: {source}")]
    Read { bank: String, path: PathBuf, source: std::io::Error },
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

pub struct Bank {
    pub name: String,
    pub action: BankAction,
    pub max_distance: u32,
    ids: Vec<String>,
    hashes: Vec<Hash256>,
}

impl Bank {
    pub fn load(config: &BankConfig) -> Result<(Bank, Vec<BadLine>), BankError> {
        let text = std::fs::read(&config.path).map_err(|source| BankError::Read {
            bank: config.name.clone(),
            path: config.path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&text);
        let (ids, hashes, bad) = parse(&text, &config.path);
        Ok((
            Bank { name: config.name.clone(), action: config.action, max_distance: config.max_distance, ids, hashes },
            bad,
        ))
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Every banked hash within this bank's distance, nearest first.
    pub fn lookup(&self, hash: &Hash256) -> Vec<BankMatch> {
        let mut found: Vec<BankMatch> = self
            .hashes
            .iter()
            .zip(&self.ids)
            .filter_map(|(h, id)| {
                let distance = h.distance(hash);
                (distance <= self.max_distance).then(|| BankMatch {
                    bank: self.name.clone(),
                    id: id.clone(),
                    distance,
                    action: self.action.as_str().to_string(),
                })
            })
            .collect();
        found.sort_by_key(|m| m.distance);
        found
    }
}

fn parse(text: &str, path: &Path) -> (Vec<String>, Vec<Hash256>, Vec<BadLine>) {
    let (mut ids, mut hashes, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen_data = false;
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let (id, hex) = match (fields.next(), fields.next()) {
            (Some(hex), None) => (line_no.to_string(), hex),
            (Some(id), Some(hex)) => (id.to_string(), hex),
            _ => unreachable!("split yields at least one field"),
        };
        match hex.parse::<Hash256>() {
            Ok(h) => {
                seen_data = true;
                ids.push(id);
                hashes.push(h);
            }
            // A CSV header is a first row whose hash column is not a hash.
            Err(_) if !seen_data && line.contains(',') && bad.is_empty() && !is_hexish(hex) => {}
            Err(e) => bad.push(BadLine {
                path: path.to_path_buf(),
                line: line_no,
                reason: format!("\"{}\": {e}", truncate(hex)),
            }),
        }
    }
    (ids, hashes, bad)
}

fn is_hexish(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// All configured banks, matched together.
#[derive(Default)]
pub struct BankSet {
    pub banks: Vec<Bank>,
}

impl BankSet {
    /// Loads every bank. Unreadable banks are errors; bad lines are returned so the
    /// caller reports them while the good rows serve.
    pub fn load(configs: &[BankConfig]) -> Result<(BankSet, Vec<BadLine>), BankError> {
        let mut banks = Vec::new();
        let mut bad = Vec::new();
        for c in configs {
            let (bank, lines) = Bank::load(c)?;
            bad.extend(lines);
            banks.push(bank);
        }
        Ok((BankSet { banks }, bad))
    }

    /// Matches in every bank. A match in an `allow` bank (a known false positive)
    /// suppresses the other banks' matches for this hash and is itself reported.
    pub fn lookup(&self, hash: &Hash256) -> Vec<BankMatch> {
        let mut all: Vec<BankMatch> = self.banks.iter().flat_map(|b| b.lookup(hash)).collect();
        if all.iter().any(|m| m.action == BankAction::Allow.as_str()) {
            all.retain(|m| m.action == BankAction::Allow.as_str());
        }
        all
    }

    pub fn total_hashes(&self) -> usize {
        self.banks.iter().map(Bank::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(text: &str, action: BankAction) -> (Bank, Vec<BadLine>) {
        let (ids, hashes, bad) = parse(text, Path::new("t.csv"));
        (Bank { name: "t".into(), action, max_distance: 31, ids, hashes }, bad)
    }

    const A: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    #[test]
    fn plain_and_csv_rows_load_and_bad_lines_are_reported_with_line_numbers() {
        let text = format!("id,hash,label\nx1,{A},bridge\n# comment\nnot-a-hash\nx2,{A}\n{A}\n");
        let (b, bad) = bank(&text, BankAction::Interrupt);
        assert_eq!(b.len(), 3);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 4);
        assert_eq!(bad[0].to_string(), "t.csv:4: \"not-a-hash\": a 256-bit hash has 64 hex digits, this has 10");
        assert_eq!(b.ids, vec!["x1", "x2", "6"]);
    }

    #[test]
    fn lookup_respects_distance() {
        let (b, _) = bank(A, BankAction::Interrupt);
        let mut h: Hash256 = A.parse().unwrap();
        for k in 0..31 {
            h.0[k / 8] ^= 1 << (k % 8);
        }
        assert_eq!(b.lookup(&h)[0].distance, 31);
        h.0[31] ^= 0x80;
        assert!(b.lookup(&h).is_empty());
    }

    #[test]
    fn allow_bank_suppresses_other_matches() {
        let (deny, _) = bank(A, BankAction::Interrupt);
        let (mut allow, _) = bank(A, BankAction::Allow);
        allow.name = "fp".into();
        let set = BankSet { banks: vec![deny, allow] };
        let m = set.lookup(&A.parse().unwrap());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].action, "allow");
    }
}
