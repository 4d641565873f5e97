//! Key files.
//!
//! A part's **signing key** is a small text file, readable by that part alone (0600):
//!
//! ```text
//! # vigil signing key: secret, for this part only
//! id = worker-2026-12
//! role = worker
//! secret = <64 lowercase hex digits: the Ed25519 seed>
//! ```
//!
//! A **keyring** lists the public keys readers believe, one per line, with the role each
//! speaks for: `ID ROLE PUBLIC_HEX`. Blank lines and `#` comments are ignored. It is read
//! again when it changes, so a key is rotated by adding the new key, moving the writer
//! to it, then removing the old one. A keyring that cannot be read whole (a bad line, a
//! duplicate id, a cut-short file with no final newline) is refused: at start the part
//! stops, naming the line; while running the keyring in force stays.

use crate::{Role, TrustError};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// A key id: what a record's `vigil-key-id` header names.
pub fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Exactly `2 * N` lowercase hex digits: one spelling per key, so that a keyring line
/// and a signature compare as text.
fn canonical_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// This part's own key: it signs every record the part writes.
pub struct Signer {
    id: String,
    role: Role,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Signer").field("id", &self.id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key from the kernel's random source.
    pub fn generate(id: &str, role: Role) -> Result<Signer, TrustError> {
        if !valid_key_id(id) {
            return Err(TrustError::Config(format!("{id:?} is not a key id (1 to 64 of A-Z a-z 0-9 . _ -)")));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TrustError::Config(format!("the kernel's random source: {e}")))?;
        Ok(Signer { id: id.to_string(), role, key: SigningKey::from_bytes(&seed) })
    }

    /// Reads a key file, which must be readable by its owner alone (0600 or 0400).
    pub fn load(path: &Path) -> Result<Signer, TrustError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| TrustError::Io { path: path.display().to_string(), source };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TrustError::File {
                path: path.display().to_string(),
                why: format!("a secret key readable by others (mode {:o}): chmod 600 it", mode & 0o777),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Signer, TrustError> {
        let (mut id, mut role, mut secret) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| TrustError::Line { path: name.to_string(), line: n + 1, why: why.to_string() };
            let (k, v) = line.split_once('=').ok_or_else(|| bad("expected `name = value`"))?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "id" if valid_key_id(v) => id = Some(v.to_string()),
                "id" => return Err(bad("not a key id (1 to 64 of A-Z a-z 0-9 . _ -)")),
                "role" => {
                    role = Some(Role::parse(v).ok_or_else(|| bad("role is worker, console, actuator or lifecycle"))?)
                }
                "secret" => {
                    secret = Some(canonical_hex::<32>(v).ok_or_else(|| bad("secret is 64 lowercase hex digits"))?)
                }
                _ => return Err(bad("unknown name (id, role, secret)")),
            }
        }
        let missing = |what: &str| TrustError::File { path: name.to_string(), why: format!("no `{what}` line") };
        Ok(Signer {
            id: id.ok_or_else(|| missing("id"))?,
            role: role.ok_or_else(|| missing("role"))?,
            key: SigningKey::from_bytes(&secret.ok_or_else(|| missing("secret"))?),
        })
    }

    /// The key file's text (secret: write it 0600).
    pub fn to_file_text(&self) -> String {
        format!(
            "# vigil signing key: secret, for this part only\nid = {}\nrole = {}\nsecret = {}\n",
            self.id,
            self.role,
            hex::encode(self.key.to_bytes())
        )
    }

    /// This key's keyring line.
    pub fn keyring_line(&self) -> String {
        format!("{} {} {}", self.id, self.role, hex::encode(self.key.verifying_key().to_bytes()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// A public key a reader believes, and the role it speaks for.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub role: Role,
    pub key: VerifyingKey,
}

/// Key id → public key and role.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, KnownKey>,
}

impl Keyring {
    pub fn parse(name: &str, text: &str) -> Result<Keyring, TrustError> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(TrustError::File {
                path: name.to_string(),
                why: "the last line has no newline: the file looks cut short".into(),
            });
        }
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| TrustError::Line { path: name.to_string(), line: n + 1, why };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, role, public] = fields[..] else {
                return Err(bad("expected `ID ROLE PUBLIC_HEX`".into()));
            };
            if !valid_key_id(id) {
                return Err(bad(format!("{id:?} is not a key id")));
            }
            let role = Role::parse(role)
                .ok_or_else(|| bad(format!("{role:?} is not worker, console, actuator or lifecycle")))?;
            let key = canonical_hex::<32>(public)
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| bad("the public key is not 64 lowercase hex digits of an Ed25519 key".into()))?;
            if keys.insert(id.to_string(), KnownKey { role, key }).is_some() {
                return Err(bad(format!("key id {id} is listed twice")));
            }
        }
        Ok(Keyring { keys })
    }

    pub fn load(path: &Path) -> Result<Keyring, TrustError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TrustError::Io { path: path.display().to_string(), source })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn get(&self, id: &str) -> Option<&KnownKey> {
        self.keys.get(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A keyring holding these signers' public keys (tests, `vigil keys gen`).
    pub fn of(signers: &[&Signer]) -> Keyring {
        let keys =
            signers.iter().map(|s| (s.id.clone(), KnownKey { role: s.role, key: s.key.verifying_key() })).collect();
        Keyring { keys }
    }
}

/// How often a running part looks at its keyring file.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The keyring in force, read again from its file when the file changes.
pub struct KeyringHandle {
    path: Option<PathBuf>,
    current: RwLock<Arc<Keyring>>,
    /// When the file was last looked at, and its modification time and length then.
    watch: Mutex<(Instant, Option<(SystemTime, u64)>)>,
}

impl KeyringHandle {
    /// Loads `path` (an error names the line) and watches it.
    pub fn open(path: &Path) -> Result<Arc<KeyringHandle>, TrustError> {
        let stamp = file_stamp(path);
        let ring = Keyring::load(path)?;
        crate::metrics::KEYRING_KEYS.set(ring.len() as i64);
        Ok(Arc::new(KeyringHandle {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(ring)),
            watch: Mutex::new((Instant::now(), stamp)),
        }))
    }

    /// A fixed keyring (tests).
    pub fn fixed(ring: Keyring) -> Arc<KeyringHandle> {
        Arc::new(KeyringHandle {
            path: None,
            current: RwLock::new(Arc::new(ring)),
            watch: Mutex::new((Instant::now(), None)),
        })
    }

    /// The keyring in force, after reading the file again if it changed (at most every
    /// few seconds; never blocks on a slow disk for long, it is a small file).
    pub fn current(&self) -> Arc<Keyring> {
        self.reload_if_changed(false);
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the file again now if it changed (`force`: whatever the last look).
    pub fn reload_if_changed(&self, force: bool) {
        let Some(path) = &self.path else { return };
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        if !force && watch.0.elapsed() < RELOAD_EVERY {
            return;
        }
        watch.0 = Instant::now();
        let stamp = file_stamp(path);
        if stamp == watch.1 {
            return;
        }
        match Keyring::load(path) {
            Ok(ring) => {
                tracing::info!(path = %path.display(), keys = ring.len(), "trust: keyring reloaded");
                crate::metrics::KEYRING_KEYS.set(ring.len() as i64);
                crate::metrics::KEYRING_RELOADS.with_label_values(&["ok"]).inc();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
                watch.1 = stamp;
            }
            Err(e) => {
                // The keyring in force stays; the next change is tried again.
                crate::metrics::KEYRING_RELOADS.with_label_values(&["refused"]).inc();
                tracing::error!("trust: keyring not reloaded, the one in force stays: {e}");
                watch.1 = stamp;
            }
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_reads_back_and_its_keyring_line_parses() {
        let s = Signer::generate("worker-1", Role::Worker).unwrap();
        let back = Signer::parse("k", &s.to_file_text()).unwrap();
        assert_eq!(back.keyring_line(), s.keyring_line());
        let ring = Keyring::parse("ring", &format!("# comment\n\n{}\n", s.keyring_line())).unwrap();
        assert_eq!(ring.get("worker-1").unwrap().role, Role::Worker);
        assert!(!format!("{s:?}").contains(&hex::encode(s.key.to_bytes())), "Debug never shows the secret");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.key");
        std::fs::write(&path, Signer::generate("w", Role::Worker).unwrap().to_file_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Signer::load(&path).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Signer::load(&path).is_ok());
    }

    #[test]
    fn bad_keyrings_name_the_line_and_cut_short_files_are_refused() {
        let s = Signer::generate("a", Role::Console).unwrap();
        let line = s.keyring_line();
        let upper = line.to_uppercase().replace("A CONSOLE", "a console");
        for (text, want) in [
            (format!("{line}\n{line}\n"), "line 2"),
            ("x admin 00\n".to_string(), "line 1"),
            (line.to_string(), "cut short"),
            (format!("\n{upper}\n"), "line 2"),
            ("a console\n".to_string(), "line 1"),
        ] {
            let err = Keyring::parse("ring", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_changed_keyring_file_is_reloaded_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (a, b) = (Signer::generate("a", Role::Worker).unwrap(), Signer::generate("b", Role::Worker).unwrap());
        std::fs::write(&path, format!("{}\n", a.keyring_line())).unwrap();
        let h = KeyringHandle::open(&path).unwrap();
        assert!(h.current().get("a").is_some());
        std::fs::write(&path, format!("{}\n{}\n", a.keyring_line(), b.keyring_line())).unwrap();
        h.reload_if_changed(true);
        assert!(h.current().get("b").is_some(), "rotation: the new key is believed");
        std::fs::write(&path, "garbage line here\n").unwrap();
        h.reload_if_changed(true);
        assert!(h.current().get("a").is_some() && h.current().get("b").is_some(), "a broken file keeps the old ring");
    }
}
