//! High-water marks: the most rows each bank has served, kept across restarts in a
//! small JSON file (`banks.json` in `[hash].state_dir`).
//!
//! Measuring a reload only against the previous load lets a bank shrink in steps (100,
//! then 50, then 25, each step "only" halving) and lets a restart over a truncated file
//! pass silently. Every reload is measured against this mark instead; the mark only
//! goes down through an explicit act (`allow_shrink_to`, `BankStore::accept_shrink`).
//!
//! The file is written whole, atomically (temp file, fsync, rename, fsync of the
//! folder), mode 0600 in a 0700 folder: a crash leaves the old marks or the new, never
//! a torn file. A mark belongs to a bank name and path: a bank pointed at another file
//! (a configuration change) starts a fresh mark.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "banks.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("bank state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bank state {path} is unreadable ({reason}); moved aside to {aside}, marks start afresh")]
    Corrupt { path: PathBuf, reason: String, aside: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    path: PathBuf,
    rows: usize,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    banks: BTreeMap<String, Mark>,
}

/// The marks, and where they persist (`None`: in memory only, for one-shot commands).
pub(crate) struct HighWater {
    file: Option<PathBuf>,
    marks: BTreeMap<String, Mark>,
}

impl HighWater {
    /// Marks that live as long as the process (`vigil scan`, tests).
    pub(crate) fn in_memory() -> HighWater {
        HighWater { file: None, marks: BTreeMap::new() }
    }

    /// Reads the marks kept in `dir`, creating the folder (0700) if needed. The marks
    /// are always usable; a problem is returned for the caller to report.
    pub(crate) fn open(dir: &Path) -> (HighWater, Option<StateError>) {
        let file = dir.join(STATE_FILE);
        let mut hw = HighWater { file: Some(file.clone()), marks: BTreeMap::new() };
        if let Err(source) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            return (hw, Some(StateError::Io { path: dir.to_path_buf(), source }));
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (hw, None),
            Err(source) => return (hw, Some(StateError::Io { path: file, source })),
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(state) if state.version == VERSION => {
                hw.marks = state.banks;
                (hw, None)
            }
            parsed => {
                let reason = match parsed {
                    Ok(s) => format!("version {} (this build reads {VERSION})", s.version),
                    Err(e) => e.to_string(),
                };
                // Kept for a person to look at; a torn or foreign file must not be
                // silently overwritten.
                let aside = file.with_extension("json.corrupt");
                let err = match std::fs::rename(&file, &aside) {
                    Ok(()) => StateError::Corrupt { path: file, reason, aside },
                    Err(source) => StateError::Io { path: file, source },
                };
                (hw, Some(err))
            }
        }
    }

    /// The mark of `bank` when it reads `path` (0: none yet).
    pub(crate) fn get(&self, bank: &str, path: &Path) -> usize {
        self.marks.get(bank).filter(|m| m.path == path).map_or(0, |m| m.rows)
    }

    /// Sets the mark of `bank` and persists all marks when it changed. The mark is set
    /// in memory even when persisting fails.
    pub(crate) fn set(&mut self, bank: &str, path: &Path, rows: usize) -> Result<(), StateError> {
        let mark = Mark { path: path.to_path_buf(), rows };
        if self.marks.get(bank) == Some(&mark) {
            return Ok(());
        }
        self.marks.insert(bank.to_string(), mark);
        match &self.file {
            Some(file) => write_atomically(file, &StateFile { version: VERSION, banks: self.marks.clone() }),
            None => Ok(()),
        }
    }
}

fn write_atomically(file: &Path, state: &StateFile) -> Result<(), StateError> {
    let io = |source| StateError::Io { path: file.to_path_buf(), source };
    let dir = file.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    let written = f.write_all(&body).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, file)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename itself is durable only once the folder is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn marks_persist_privately_and_follow_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (mut hw, err) = HighWater::open(&state);
        assert!(err.is_none());
        hw.set("known", Path::new("/banks/a.csv"), 100).unwrap();
        let (hw, err) = HighWater::open(&state);
        assert!(err.is_none());
        assert_eq!(hw.get("known", Path::new("/banks/a.csv")), 100);
        assert_eq!(hw.get("known", Path::new("/banks/b.csv")), 0, "another file starts afresh");
        assert_eq!(hw.get("other", Path::new("/banks/a.csv")), 0);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(STATE_FILE)), 0o600);
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STATE_FILE], "no temp file left behind");
    }

    #[test]
    fn a_torn_state_file_is_reported_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{\"version\":1,\"banks\":{\"known\":{\"pa").unwrap();
        let (hw, err) = HighWater::open(dir.path());
        assert!(matches!(err, Some(StateError::Corrupt { .. })), "{err:?}");
        assert_eq!(hw.get("known", Path::new("x")), 0);
        assert!(dir.path().join("banks.json.corrupt").exists());
    }
}
