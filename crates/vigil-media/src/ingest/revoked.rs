//! Revoked stream keys: a file the platform writes when a key leaks, reloaded while
//! the worker runs (polled like the banks), so that a revoked key neither starts a new
//! publish nor keeps one going.
//!
//! One entry per line; `#` starts a comment:
//!
//! ```text
//! key:THE-WHOLE-KEY            # a static key, or one signed key
//! sha256:HEX                   # the same, as the sha256 of the key (keeps the key out of the file)
//! name:STREAM_NAME             # every key of that stream, whatever its expiry
//! ```
//!
//! A signed key (`NAME.EXPIRY.SIGNATURE`) is compared by its parsed parts, not as
//! written: an entry revokes every spelling of the key (an upper-case signature,
//! `+EXPIRY`, `0EXPIRY`), and `sha256:` matches the digest of the key's canonical
//! spelling as well as of the spelling presented.
//!
//! The file must end with a newline: a file cut mid-line (a copy caught half-written)
//! is refused and the list in force kept. Replace it atomically (write a temporary
//! file beside it, then rename it over the old one).

use super::keys::SignedKey;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What is revoked now; cheap to clone (one shared list).
#[derive(Clone, Default)]
pub struct Revoked {
    inner: Arc<RwLock<RevokedSet>>,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct RevokedSet {
    /// Digests of `key:` entries as written and of `sha256:` entries.
    digests: HashSet<[u8; 32]>,
    /// The `key:` entries that are signed keys, by their parts.
    signed: HashSet<SignedKey>,
    names: HashSet<String>,
}

impl std::fmt::Debug for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.read();
        write!(f, "Revoked({} keys, {} names)", set.digests.len(), set.names.len())
    }
}

pub(crate) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Revoked {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevokedSet> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the list at `path`; any malformed line is an error naming it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let list = Self::default();
        list.replace_from(path)?;
        Ok(list)
    }

    /// Re-reads `path`; on an error the list in force stays.
    pub fn replace_from(&self, path: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let set = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let entries = set.digests.len() + set.names.len();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = set;
        Ok(entries)
    }

    /// Whether `key` (which publishes as `name`) is revoked. A signed key is compared
    /// by its parts as well as by its spelling, so no other spelling of a revoked key
    /// escapes the list.
    pub fn covers(&self, key: &str, name: &str) -> bool {
        let set = self.read();
        // Live publishes ask before every read: an empty list costs no hashing.
        if !set.names.is_empty() && set.names.contains(name) {
            return true;
        }
        if set.digests.is_empty() && set.signed.is_empty() {
            return false;
        }
        if set.digests.contains(&key_digest(key)) {
            return true;
        }
        SignedKey::parse(key).is_some_and(|parsed| {
            set.signed.contains(&parsed) || set.digests.contains(&key_digest(&parsed.canonical()))
        })
    }

    /// Polls `path` every `interval` and reloads it when its modification time or size
    /// changes. The thread ends when every clone of this list is gone.
    pub fn watch(&self, path: PathBuf, interval: Duration) -> std::thread::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
        let mut seen = stamp(&path);
        std::thread::Builder::new()
            .name("vigil-revoked-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(inner) = weak.upgrade() else { return };
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match (Revoked { inner }).replace_from(&path) {
                        Ok(n) => tracing::info!(entries = n, "revoked stream keys reloaded"),
                        Err(e) => {
                            crate::events::ingest_refused(crate::events::IngestRefusal::RevokedKeysReload);
                            tracing::error!("revoked stream keys not reloaded, the previous list stays: {e}");
                        }
                    }
                }
            })
            .expect("spawn revoked-keys watcher")
    }
}

fn parse(text: &str) -> Result<RevokedSet, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line has no newline: the file looks cut short (replace it by rename)".into());
    }
    let mut set = RevokedSet::default();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}", i + 1);
        match line.split_once(':') {
            Some(("key", key)) if !key.is_empty() => {
                set.digests.insert(key_digest(key));
                set.signed.extend(SignedKey::parse(key));
            }
            Some(("sha256", hex_digest)) => match hex::decode(hex_digest) {
                Ok(bytes) if bytes.len() == 32 => {
                    set.digests.insert(bytes.try_into().expect("32 bytes"));
                }
                _ => errors.push(bad("sha256: needs 64 hex digits")),
            },
            Some(("name", name)) if !name.is_empty() => {
                set.names.insert(name.to_string());
            }
            _ => errors.push(bad("expected key:KEY, sha256:HEX or name:STREAM")),
        }
    }
    if errors.is_empty() { Ok(set) } else { Err(errors.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_revoke_keys_by_value_digest_or_stream() {
        let digest = hex::encode(key_digest("k-digest"));
        let text = format!("# leaked 2026-11-27\nkey:k-plain\nsha256:{digest}   # by digest\nname:mallory\n\n");
        let set = parse(&text).unwrap();
        let list = Revoked { inner: Arc::new(RwLock::new(set)) };
        assert!(list.covers("k-plain", "alice"));
        assert!(list.covers("k-digest", "bob"));
        assert!(list.covers("anything", "mallory"));
        assert!(!list.covers("k-other", "alice"));
    }

    #[test]
    fn a_malformed_or_cut_file_is_refused_and_names_its_lines() {
        let err = parse("key:\nsha256:abc\nname:ok\nkeys:x\n").unwrap_err();
        for line in ["line 1", "line 2", "line 4"] {
            assert!(err.contains(line), "{err}");
        }
        assert!(!err.contains("line 3"), "{err}");
        assert!(parse("name:alice\nname:bo").unwrap_err().contains("cut short"));
        assert_eq!(parse("").unwrap(), RevokedSet::default());
    }

    #[test]
    fn a_bad_reload_keeps_the_list_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "name:alice\n").unwrap();
        let list = Revoked::load(&path).unwrap();
        std::fs::write(&path, "name:alice\nname:bo").unwrap();
        assert!(list.replace_from(&path).is_err());
        assert!(list.covers("k", "alice"), "the previous list stays");
        std::fs::write(&path, "name:bob\n").unwrap();
        assert_eq!(list.replace_from(&path), Ok(1));
        assert!(!list.covers("k", "alice") && list.covers("k", "bob"));
    }

    #[test]
    fn a_signed_key_is_revoked_in_every_spelling_by_key_or_digest() {
        use super::super::keys::{StreamKeys, other_spellings};
        let key = StreamKeys::sign(b"s3cret", "bob_1", 2_000);
        let canonical_digest = hex::encode(key_digest(&key));
        let upper = other_spellings(&key)[0].clone();
        for text in [format!("key:{key}\n"), format!("sha256:{canonical_digest}\n"), format!("key:{upper}\n")] {
            let list = Revoked { inner: Arc::new(RwLock::new(parse(&text).unwrap())) };
            assert!(list.covers(&key, "bob_1"), "{text}");
            for other in other_spellings(&key) {
                assert!(list.covers(&other, "bob_1"), "{text}: {other:?}");
            }
            let next = StreamKeys::sign(b"s3cret", "bob_1", 2_001);
            assert!(!list.covers(&next, "bob_1"), "{text}: another key of the stream");
            assert!(!list.covers(&other_spellings(&next)[0], "bob_1"), "{text}: another key of the stream");
        }
    }
}
