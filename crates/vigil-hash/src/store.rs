//! The serving side of banks: load, report, hot-reload.
//!
//! A reload builds the new bank aside and swaps it in atomically (readers hold an
//! `Arc` of the set they started with, so frames are never blocked or dropped). A bank
//! that cannot be read, is empty, or would lose more than its `min_keep_fraction` of
//! rows keeps serving its previous contents and reports the problem in its status.

use crate::bank::{BadLine, Bank, BankSet};
use crate::config::BankConfig;
use crate::metrics::METRICS;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BankState {
    Ok,
    /// Loaded, but holds no hashes: matches nothing.
    Empty,
    /// Could not be read; serving the previous contents, if any.
    Unreadable,
    /// A reload would have lost too many rows; serving the previous contents.
    ShrinkRefused,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BankStatus {
    pub name: String,
    pub path: PathBuf,
    pub state: BankState,
    pub rows: usize,
    pub bad_lines: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl BankStatus {
    /// A bank that is not serving what its file says makes the worker not ready.
    pub fn is_ready(&self) -> bool {
        self.state == BankState::Ok
    }
}

impl BankState {
    fn as_str(&self) -> &'static str {
        match self {
            BankState::Ok => "ok",
            BankState::Empty => "empty",
            BankState::Unreadable => "unreadable",
            BankState::ShrinkRefused => "shrink_refused",
        }
    }
}

/// Reads one bank and judges it against what it held before (`old_rows`). Returns the
/// status, the bank to serve if it should replace the old one, and its bad lines.
fn load_one(config: &BankConfig, old_rows: usize) -> (BankStatus, Option<Bank>, Vec<BadLine>) {
    let status = |state, rows, bad_lines, detail| BankStatus {
        name: config.name.clone(),
        path: config.path.clone(),
        state,
        rows,
        bad_lines,
        detail,
    };
    match Bank::load(config) {
        Err(e) => (status(BankState::Unreadable, old_rows, 0, Some(e.to_string())), None, Vec::new()),
        Ok((bank, bad)) => {
            let floor = (old_rows as f64 * config.min_keep_fraction as f64).ceil() as usize;
            if bank.len() < floor {
                let detail = format!(
                    "reload refused: {} rows now, {old_rows} before (keeps less than {:.0}%); serving the previous rows",
                    bank.len(),
                    config.min_keep_fraction * 100.0
                );
                (status(BankState::ShrinkRefused, old_rows, bad.len(), Some(detail)), None, bad)
            } else if bank.is_empty() {
                (status(BankState::Empty, 0, bad.len(), Some("no hashes in the file".into())), Some(bank), bad)
            } else {
                (status(BankState::Ok, bank.len(), bad.len(), None), Some(bank), bad)
            }
        }
    }
}

struct Watched {
    config: BankConfig,
    stamp: Option<(SystemTime, u64)>,
}

pub struct BankStore {
    current: RwLock<Arc<BankSet>>,
    watched: Mutex<Vec<Watched>>,
    status: Mutex<Vec<BankStatus>>,
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl BankStore {
    /// Loads every bank. Problems are in [`BankStore::status`] and the returned bad
    /// lines; the store always serves whatever could be loaded.
    pub fn open(configs: &[BankConfig]) -> (BankStore, Vec<BadLine>) {
        let store = BankStore {
            current: RwLock::new(Arc::new(BankSet::default())),
            watched: Mutex::new(configs.iter().map(|c| Watched { config: c.clone(), stamp: None }).collect()),
            status: Mutex::new(Vec::new()),
        };
        let bad = store.reload(true);
        (store, bad)
    }

    /// The banks to match a frame against; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<BankSet> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn status(&self) -> Vec<BankStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads banks whose file changed (or all, with `force`), builds them aside and
    /// swaps the new set in. Returns the bad lines of the banks it read.
    pub fn reload(&self, force: bool) -> Vec<BadLine> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let old_status = self.status();
        let mut banks: Vec<Arc<Bank>> = Vec::new();
        let mut statuses = Vec::new();
        let mut bad_lines = Vec::new();
        let mut changed = force;
        for w in watched.iter_mut() {
            let previous = old.banks.iter().find(|b| b.name() == w.config.name);
            let now = stamp(&w.config.path);
            if let (false, Some(prev), Some(st)) =
                (force || now != w.stamp, previous, old_status.iter().find(|s| s.name == w.config.name))
            {
                banks.push(prev.clone());
                statuses.push(st.clone());
                continue;
            }
            changed = true;
            w.stamp = now;
            let (status, fresh, bad) = load_one(&w.config, previous.map_or(0, |b| b.len()));
            METRICS.bank_reloads.with_label_values(&[&w.config.name, status.state.as_str()]).inc();
            METRICS.bank_rows.with_label_values(&[&w.config.name]).set(status.rows as i64);
            if let Some(d) = &status.detail {
                tracing::error!(bank = %w.config.name, "{d}");
            }
            // A bank that failed to reload keeps serving what it had.
            if let Some(b) = fresh.map(Arc::new).or_else(|| previous.cloned()) {
                banks.push(b);
            }
            statuses.push(status);
            bad_lines.extend(bad);
        }
        if changed {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(BankSet { banks });
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = statuses;
        }
        bad_lines
    }

    /// Polls the bank files every `interval` and reloads the ones that changed, until
    /// the store is dropped everywhere else.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::thread::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("vigil-bank-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(store) = weak.upgrade() else { return };
                    for bad in store.reload(false) {
                        tracing::warn!("bank line skipped: {bad}");
                    }
                }
            })
            .expect("spawn bank watcher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hash256;

    fn hashes(n: usize, seed: u8) -> String {
        (0..n).map(|i| format!("{:02x}{:062x}\n", seed, i)).collect()
    }

    fn store_for(path: &std::path::Path) -> BankStore {
        let cfg = BankConfig { name: "b".into(), ..BankConfig::for_path(path) };
        BankStore::open(&[cfg]).0
    }

    fn has(store: &BankStore, hex: &str) -> bool {
        let h: Hash256 = hex.parse().unwrap();
        !store.snapshot().banks[0].lookup_hash(&h, "original").is_empty()
    }

    #[test]
    fn reload_swaps_in_changed_banks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.txt");
        std::fs::write(&path, hashes(10, 0xaa)).unwrap();
        let store = store_for(&path);
        assert_eq!(store.status()[0].state, BankState::Ok);
        let before = store.snapshot();
        std::fs::write(&path, hashes(12, 0xbb)).unwrap();
        store.reload(false);
        assert_eq!(store.status()[0].rows, 12);
        assert!(has(&store, &format!("bb{:062x}", 11)));
        // A reader that took the old snapshot keeps a consistent view.
        assert_eq!(before.banks[0].len(), 10);
    }

    #[test]
    fn a_bank_never_shrinks_silently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.txt");
        std::fs::write(&path, hashes(100, 0xaa)).unwrap();
        let store = store_for(&path);
        std::fs::write(&path, hashes(10, 0xaa)).unwrap();
        store.reload(false);
        let st = &store.status()[0];
        assert_eq!(st.state, BankState::ShrinkRefused);
        assert!(!st.is_ready());
        assert_eq!(st.rows, 100);
        assert!(has(&store, &format!("aa{:062x}", 99)), "old rows keep serving");
    }

    #[test]
    fn unreadable_and_empty_banks_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.txt");
        std::fs::write(&path, hashes(5, 0xaa)).unwrap();
        let store = store_for(&path);
        std::fs::remove_file(&path).unwrap();
        store.reload(false);
        assert_eq!(store.status()[0].state, BankState::Unreadable);
        assert!(has(&store, &format!("aa{:062x}", 4)), "old rows keep serving");

        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        let store = store_for(&empty);
        assert_eq!(store.status()[0].state, BankState::Empty);
        assert!(!store.status()[0].is_ready());
    }
}
