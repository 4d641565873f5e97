//! The serving side of banks: load, report, hot-reload.
//!
//! A reload builds the new bank aside and swaps it in atomically (readers hold an
//! `Arc` of the set they started with, so frames are never blocked or dropped). A bank
//! that cannot be read, ends mid-line (a partial write), is empty, or would keep fewer
//! than `min_keep_fraction` of its high-water mark (the most rows it has served, kept
//! across restarts by [`crate::high_water`]) keeps serving its previous contents and
//! reports the problem in its status. The mark goes down only through `allow_shrink_to`
//! or [`BankStore::accept_shrink`].

use crate::bank::{BadLine, Bank, BankError, BankSet};
use crate::config::BankConfig;
use crate::high_water::{HighWater, StateError};
use crate::metrics::METRICS;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BankState {
    Ok,
    /// Loaded, but holds no hashes: matches nothing.
    Empty,
    /// Could not be read; serving the previous contents, if any.
    Unreadable,
    /// The file ends mid-line (being written, or cut short); serving the previous
    /// contents, if any.
    Partial,
    /// The file holds too few rows against the bank's high-water mark; serving the
    /// previous contents (after a restart: the rows the file holds, better than none).
    ShrinkRefused,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BankStatus {
    pub name: String,
    pub path: PathBuf,
    pub state: BankState,
    /// Rows being served.
    pub rows: usize,
    /// The most rows this bank has served: shrinks are measured against it.
    pub high_water: usize,
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
            BankState::Partial => "partial",
            BankState::ShrinkRefused => "shrink_refused",
        }
    }
}

/// [`BankStore::accept_shrink`] named a bank that is not configured.
#[derive(Debug, thiserror::Error)]
#[error("no bank named {0:?} is configured")]
pub struct UnknownBank(pub String);

/// What one load decided.
struct Loaded {
    status: BankStatus,
    /// The bank to serve from now on (`None`: keep serving the previous one).
    serve: Option<Bank>,
    bad: Vec<BadLine>,
    /// The new high-water mark, when the load was accepted.
    mark: Option<usize>,
}

/// Reads one bank and judges it against its high-water mark `high` (the most rows it
/// has served) and what it serves now (`serving` rows, `None` before its first load).
/// `accept` is a one-shot operator acceptance of a shrink.
fn load_one(config: &BankConfig, high: usize, serving: Option<usize>, accept: bool) -> Loaded {
    let status = |state, rows, high_water, bad_lines, detail| BankStatus {
        name: config.name.clone(),
        path: config.path.clone(),
        state,
        rows,
        high_water,
        bad_lines,
        detail,
    };
    let rows_now = serving.unwrap_or(0);
    // The mark is never below what is served; kept explicit so a lost mark still
    // measures against the previous load.
    let high = high.max(rows_now);
    let kept = |state, e: BankError| Loaded {
        status: status(state, rows_now, high, 0, Some(format!("{e}; serving the previous {rows_now} rows"))),
        serve: None,
        bad: Vec::new(),
        mark: None,
    };
    let (bank, bad) = match Bank::load(config) {
        Err(e @ BankError::Partial { .. }) => return kept(BankState::Partial, e),
        Err(e) => return kept(BankState::Unreadable, e),
        Ok(loaded) => loaded,
    };
    let rows = bank.len();
    let floor = (high as f64 * config.min_keep_fraction as f64).ceil() as usize;
    let intended = accept || config.allow_shrink_to.is_some_and(|n| rows >= n);
    if rows < floor && !intended {
        // After a restart nothing else is served: the rows the file holds protect more
        // than none, while the status keeps the worker not ready.
        let (serve, serving_rows) = match serving {
            Some(n) => (None, n),
            None => (Some(bank), rows),
        };
        let detail = format!(
            "reload refused: {rows} rows in the file, high-water mark {high} (keeps less than {:.0}%); serving {serving_rows} rows. \
             If the shrink is intended: set allow_shrink_to or POST /admin/banks/{}/accept-shrink",
            config.min_keep_fraction * 100.0,
            config.name
        );
        return Loaded {
            status: status(BankState::ShrinkRefused, serving_rows, high, bad.len(), Some(detail)),
            serve,
            bad,
            mark: None,
        };
    }
    // An intended shrink restarts the mark from this file; otherwise it only rises.
    let mark = if accept || rows < floor { rows } else { high.max(rows) };
    let loaded = |state, detail| Loaded {
        status: status(state, rows, mark, bad.len(), detail),
        serve: None,
        bad: Vec::new(),
        mark: Some(mark),
    };
    let mut out = if rows == 0 {
        loaded(BankState::Empty, Some("no hashes in the file".to_string()))
    } else {
        loaded(BankState::Ok, None)
    };
    if rows < high {
        tracing::warn!(bank = %config.name, "bank shrank from its high-water mark {high} to {rows} rows (accepted)");
    }
    out.serve = Some(bank);
    out.bad = bad;
    out
}

struct Watched {
    config: BankConfig,
    stamp: Option<(SystemTime, u64)>,
    /// An operator accepted a shrink: the next complete load is taken whatever its size.
    accept_shrink: bool,
}

pub struct BankStore {
    current: RwLock<Arc<BankSet>>,
    watched: Mutex<Vec<Watched>>,
    status: Mutex<Vec<BankStatus>>,
    high_water: Mutex<HighWater>,
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// A poisoned lock still holds a consistent value here (every update is one assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeping a high-water mark failed: logged and counted (the mark still holds in memory,
/// but a restart would lose it).
fn state_error(e: &StateError) {
    METRICS.bank_state_errors.inc();
    tracing::error!("{e}");
}

impl BankStore {
    /// Loads every bank, with high-water marks kept in memory only (one-shot commands:
    /// `vigil scan`, `vigil bank`). Problems are in [`BankStore::status`] and the
    /// returned bad lines; the store always serves whatever could be loaded.
    pub fn open(configs: &[BankConfig]) -> (BankStore, Vec<BadLine>) {
        Self::open_with(configs, HighWater::in_memory())
    }

    /// Like [`BankStore::open`], with the high-water marks kept in `state_dir` across
    /// restarts (the worker).
    pub fn open_with_state(configs: &[BankConfig], state_dir: &Path) -> (BankStore, Vec<BadLine>) {
        let (hw, err) = HighWater::open(state_dir);
        if let Some(e) = err {
            state_error(&e);
        }
        Self::open_with(configs, hw)
    }

    fn open_with(configs: &[BankConfig], high_water: HighWater) -> (BankStore, Vec<BadLine>) {
        let store = BankStore {
            current: RwLock::new(Arc::new(BankSet::default())),
            watched: Mutex::new(
                configs.iter().map(|c| Watched { config: c.clone(), stamp: None, accept_shrink: false }).collect(),
            ),
            status: Mutex::new(Vec::new()),
            high_water: Mutex::new(high_water),
        };
        let bad = store.reload(true);
        (store, bad)
    }

    /// The banks to match a frame against; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<BankSet> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new console allowlist, keeping the banks.
    pub fn set_allowlist(&self, list: crate::allow::Allowlist) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(BankSet { banks: current.banks.clone(), allowlist: Arc::new(list) });
    }

    pub fn status(&self) -> Vec<BankStatus> {
        lock(&self.status).clone()
    }

    /// Accepts that bank `name` shrank on purpose: its next complete load (the next
    /// reload, forced or polled) is taken whatever its size, and its high-water mark
    /// restarts from it. A partial file is still refused.
    pub fn accept_shrink(&self, name: &str) -> Result<(), UnknownBank> {
        let mut watched = lock(&self.watched);
        let w = watched.iter_mut().find(|w| w.config.name == name).ok_or_else(|| UnknownBank(name.to_string()))?;
        w.accept_shrink = true;
        // Reloaded by the next poll even if the file did not change since.
        w.stamp = None;
        tracing::warn!(bank = %name, "an operator accepted a shrink of this bank: its next load resets its high-water mark");
        Ok(())
    }

    /// Reloads banks whose file changed (or all, with `force`), builds them aside and
    /// swaps the new set in. Returns the bad lines of the banks it read.
    pub fn reload(&self, force: bool) -> Vec<BadLine> {
        let mut watched = lock(&self.watched);
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
            let high = lock(&self.high_water).get(&w.config.name, &w.config.path);
            let loaded = load_one(&w.config, high, previous.map(|b| b.len()), w.accept_shrink);
            let name = &w.config.name;
            if let Some(mark) = loaded.mark {
                w.accept_shrink = false;
                if let Err(e) = lock(&self.high_water).set(name, &w.config.path, mark) {
                    state_error(&e);
                }
            }
            let status = loaded.status;
            METRICS.bank_reloads.with_label_values(&[name, status.state.as_str()]).inc();
            METRICS.bank_rows.with_label_values(&[name]).set(status.rows as i64);
            METRICS.bank_high_water.with_label_values(&[name]).set(status.high_water as i64);
            if let Some(d) = &status.detail {
                tracing::error!(bank = %name, state = status.state.as_str(), "{d}");
            }
            // A bank that failed to reload keeps serving what it had.
            if let Some(b) = loaded.serve.map(Arc::new).or_else(|| previous.cloned()) {
                banks.push(b);
            }
            statuses.push(status);
            bad_lines.extend(loaded.bad);
        }
        if changed {
            let allowlist = old.allowlist.clone();
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(BankSet { banks, allowlist });
            *lock(&self.status) = statuses;
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

    fn store_with_state(path: &std::path::Path, state: &std::path::Path, allow_shrink_to: Option<usize>) -> BankStore {
        let cfg = BankConfig { name: "b".into(), allow_shrink_to, ..BankConfig::for_path(path) };
        BankStore::open_with_state(&[cfg], state).0
    }

    fn state_rows(store: &BankStore) -> (BankState, usize, usize) {
        let st = &store.status()[0];
        (st.state.clone(), st.rows, st.high_water)
    }

    #[test]
    fn shrinking_in_steps_is_measured_against_the_high_water_mark() {
        // Rule: a load must keep ceil(high-water x min_keep_fraction) rows (default
        // 50%); the mark is the most rows ever served. 100 -> 50 keeps 50% of the mark
        // (accepted, warned); 50 -> 25 is measured against 100, not 50: refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.txt");
        std::fs::write(&path, hashes(100, 0xaa)).unwrap();
        let store = store_with_state(&path, &dir.path().join("state"), None);
        std::fs::write(&path, hashes(50, 0xaa)).unwrap();
        store.reload(true);
        assert_eq!(state_rows(&store), (BankState::Ok, 50, 100));
        std::fs::write(&path, hashes(25, 0xaa)).unwrap();
        store.reload(true);
        assert_eq!(state_rows(&store), (BankState::ShrinkRefused, 50, 100));
        assert!(has(&store, &format!("aa{:062x}", 49)), "the 50 rows keep serving");
        let detail = store.status()[0].detail.clone().unwrap();
        assert!(detail.contains("high-water mark 100") && detail.contains("accept-shrink"), "{detail}");
        // Growing back clears it; the mark only rises.
        std::fs::write(&path, hashes(120, 0xaa)).unwrap();
        store.reload(true);
        assert_eq!(state_rows(&store), (BankState::Ok, 120, 120));
    }

    #[test]
    fn a_restart_over_a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, state) = (dir.path().join("b.txt"), dir.path().join("state"));
        std::fs::write(&path, hashes(100, 0xaa)).unwrap();
        drop(store_with_state(&path, &state, None));
        std::fs::write(&path, hashes(10, 0xaa)).unwrap();
        // A new process: nothing served before, yet the kept mark says 100.
        let store = store_with_state(&path, &state, None);
        assert_eq!(state_rows(&store), (BankState::ShrinkRefused, 10, 100));
        assert!(!store.status()[0].is_ready());
        assert!(has(&store, &format!("aa{:062x}", 9)), "the rows the file holds serve meanwhile");
        std::fs::write(&path, hashes(100, 0xaa)).unwrap();
        store.reload(true);
        assert_eq!(state_rows(&store), (BankState::Ok, 100, 100));
        // Without kept state (a one-shot command) the same file loads: the mark is what
        // makes the difference.
        std::fs::write(&path, hashes(10, 0xaa)).unwrap();
        assert_eq!(store_for(&path).status()[0].state, BankState::Ok);
    }

    #[test]
    fn a_half_written_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, state) = (dir.path().join("b.txt"), dir.path().join("state"));
        let whole = hashes(100, 0xaa);
        std::fs::write(&path, &whole).unwrap();
        let store = store_with_state(&path, &state, None);
        // 60% of the rows (more than min_keep_fraction) and half a line: a writer
        // caught mid-way, or a cut download.
        let cut = &whole[..whole.len() * 6 / 10 + 20];
        assert!(!cut.ends_with('\n'));
        std::fs::write(&path, cut).unwrap();
        store.reload(true);
        let st = &store.status()[0];
        assert_eq!((st.state.clone(), st.rows), (BankState::Partial, 100), "{st:?}");
        assert!(st.detail.as_deref().unwrap().contains("ends mid-line"), "{st:?}");
        assert!(has(&store, &format!("aa{:062x}", 99)), "old rows keep serving");
        // A cut that keeps every hash whole but the last row's label is partial too.
        std::fs::write(&path, format!("x1,{},lab", "ab".repeat(32))).unwrap();
        store.reload(true);
        assert_eq!(store.status()[0].state, BankState::Partial);
        // And after a restart.
        std::fs::write(&path, cut).unwrap();
        assert_eq!(state_rows(&store_with_state(&path, &state, None)), (BankState::Partial, 0, 100));
    }

    #[test]
    fn an_intended_shrink_is_accepted_through_the_explicit_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (path, state) = (dir.path().join("b.txt"), dir.path().join("state"));
        std::fs::write(&path, hashes(100, 0xaa)).unwrap();
        let store = store_with_state(&path, &state, None);
        std::fs::write(&path, hashes(10, 0xbb)).unwrap();
        store.reload(false);
        assert_eq!(state_rows(&store).0, BankState::ShrinkRefused);
        assert!(store.accept_shrink("nope").is_err());
        // The operator's one-shot acceptance: the next (polled) reload takes the file.
        store.accept_shrink("b").unwrap();
        store.reload(false);
        assert_eq!(state_rows(&store), (BankState::Ok, 10, 10));
        assert!(has(&store, &format!("bb{:062x}", 9)));
        // One shot only, and the new mark is kept across a restart.
        std::fs::write(&path, hashes(4, 0xbb)).unwrap();
        store.reload(false);
        assert_eq!(state_rows(&store).0, BankState::ShrinkRefused);
        std::fs::write(&path, hashes(10, 0xbb)).unwrap();
        assert_eq!(state_rows(&store_with_state(&path, &state, None)), (BankState::Ok, 10, 10));
        // The configured path: any file with at least allow_shrink_to rows.
        std::fs::write(&path, hashes(3, 0xcc)).unwrap();
        let store = store_with_state(&path, &state, Some(3));
        assert_eq!(state_rows(&store), (BankState::Ok, 3, 3));
        std::fs::write(&path, hashes(1, 0xcc)).unwrap();
        store.reload(true);
        assert_eq!(state_rows(&store), (BankState::ShrinkRefused, 3, 3), "below both the setting and the mark");
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
