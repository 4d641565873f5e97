//! Signing keys for the tests: one key per role in a folder that lives as long as the
//! test process, a keyring holding them all, and the settings that point every `vigil`
//! the harness starts at them (environment overrides, so no test config repeats them).

use rdkafka::message::OwnedHeaders;
use std::path::PathBuf;
use std::sync::LazyLock;
use vigil_trust::{Keyring, Role, Signer};

pub struct TestKeys {
    pub dir: PathBuf,
    pub keyring: PathBuf,
    signers: Vec<Signer>,
}

static KEYS: LazyLock<TestKeys> = LazyLock::new(|| {
    // Kept for the process: every vigil a test starts reads it.
    let dir = tempfile::tempdir().expect("a temp dir").keep();
    let signers: Vec<Signer> =
        Role::ALL.iter().map(|r| Signer::generate(&format!("test-{r}"), *r).expect("a key")).collect();
    let mut ring = String::new();
    for s in &signers {
        let path = dir.join(format!("{}.key", s.role()));
        std::fs::write(&path, s.to_file_text()).expect("a key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("a private key file");
        ring.push_str(&s.keyring_line());
        ring.push('\n');
    }
    let keyring = dir.join("keyring");
    std::fs::write(&keyring, ring).expect("the keyring");
    TestKeys { dir, keyring, signers }
});

pub fn keys() -> &'static TestKeys {
    &KEYS
}

/// The environment that gives a `vigil` process the test keys (`[trust]`).
pub fn env() -> Vec<(&'static str, String)> {
    let k = keys();
    vec![
        ("VIGIL__TRUST__KEYRING_FILE", k.keyring.display().to_string()),
        ("VIGIL__TRUST__KEY_DIR", k.dir.display().to_string()),
    ]
}

/// Sets [`env`] on a command about to start `vigil`.
pub fn apply(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (k, v) in env() {
        cmd.env(k, v);
    }
    cmd
}

/// The signer of `role`.
pub fn signer(role: Role) -> &'static Signer {
    keys().signers.iter().find(|s| s.role() == role).expect("a key per role")
}

/// Headers that sign a record as `role` would.
pub fn signed(role: Role, topic: &str, key: Option<&str>, value: Option<&[u8]>) -> OwnedHeaders {
    signer(role).sign_into(topic, key.map(str::as_bytes), value, OwnedHeaders::new())
}

/// A signer no reader believes (same id as the worker's, another key): a forgery.
pub fn forger() -> Signer {
    Signer::generate("test-worker", Role::Worker).expect("a key")
}

/// The keyring the test keys make (for in-process checks).
pub fn keyring() -> Keyring {
    Keyring::of(&keys().signers.iter().collect::<Vec<_>>())
}

/// A reader's check of `kind` that believes the test keys.
pub fn verifier(kind: vigil_trust::TopicKind) -> vigil_trust::Verifier {
    let ring = vigil_trust::KeyringHandle::fixed(keyring());
    vigil_trust::config::Trust::with(&vigil_trust::TrustConfig::default(), None, Some(ring)).verifier(kind)
}
