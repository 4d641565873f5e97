//! `[trust]`: where this part finds its signing key and the keyring it believes.
//!
//! One config file serves a whole deployment, so the signing key is found by role:
//! `key_dir/ROLE.key` (`worker.key`, `console.key`, `actuator.key`). In Kubernetes each
//! part mounts only its own key's Secret into `key_dir`.

use crate::{KeyringHandle, Role, Signer, TopicKind, TrustError, Verifier};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// The public keys this part believes, with their roles (`ID ROLE PUBLIC_HEX` lines).
    #[serde(default)]
    pub keyring_file: Option<PathBuf>,
    /// Holds this part's secret key as `ROLE.key` (`vigil keys gen`).
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
    /// Believe unsigned records, and write unsigned ones when no key is found: for a
    /// throwaway test cluster only. Shown as a warning in `/readyz`, a metric and the log.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Command topics (interrupts, lifecycle, owners): records signed longer ago than
    /// this are refused as stale.
    #[serde(default = "default_command_max_age_secs")]
    pub command_max_age_secs: u64,
    /// How far ahead of this clock a command may be signed (clock skew between hosts).
    #[serde(default = "default_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
}

fn default_command_max_age_secs() -> u64 {
    // Above the actuator's default retry budget (600 s), during which the commands behind
    // a retried one wait in its paused partition.
    900
}
fn default_max_clock_skew_secs() -> u64 {
    30
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            keyring_file: None,
            key_dir: None,
            allow_unsigned: false,
            command_max_age_secs: default_command_max_age_secs(),
            max_clock_skew_secs: default_max_clock_skew_secs(),
        }
    }
}

impl TrustConfig {
    /// Every mistake, one line each; `uses_kafka`: the deployment has a Kafka cluster,
    /// so its records must be signed.
    pub fn validate(&self, prefix: &str, uses_kafka: bool) -> Vec<String> {
        let mut e = Vec::new();
        if uses_kafka && !self.allow_unsigned {
            if self.keyring_file.is_none() {
                e.push(format!(
                    "{prefix}.keyring_file: [sink.kafka] is configured, so every record read must be checked: name the keyring (or set allow_unsigned = true, for a test cluster only)"
                ));
            }
            if self.key_dir.is_none() {
                e.push(format!(
                    "{prefix}.key_dir: [sink.kafka] is configured, so every record written must be signed: name the folder holding ROLE.key (or set allow_unsigned = true, for a test cluster only)"
                ));
            }
        }
        if !(10..=86_400).contains(&self.command_max_age_secs) {
            e.push(format!("{prefix}.command_max_age_secs: {} is not within 10..=86400", self.command_max_age_secs));
        }
        if self.max_clock_skew_secs > 600 {
            e.push(format!("{prefix}.max_clock_skew_secs: {} is over 600", self.max_clock_skew_secs));
        }
        e
    }
}

/// One part's trust at run time: its own key, and the keyring it checks others against.
#[derive(Clone)]
pub struct Trust {
    cfg: TrustConfig,
    role: Role,
    signer: Option<Arc<Signer>>,
    keyring: Option<Arc<KeyringHandle>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("role", &self.role).field("signer", &self.signer).finish_non_exhaustive()
    }
}

impl Trust {
    /// Loads what a part in `role` needs: its key when it `writes`, the keyring when it
    /// `reads`. Anything missing is an error naming the setting, unless `allow_unsigned`.
    pub fn open(cfg: &TrustConfig, role: Role, writes: bool, reads: bool) -> Result<Trust, TrustError> {
        crate::metrics::ALLOW_UNSIGNED.set(i64::from(cfg.allow_unsigned));
        let signer = match (&cfg.key_dir, writes) {
            (_, false) => None,
            (Some(dir), true) => {
                let path = dir.join(format!("{role}.key"));
                match Signer::load(&path) {
                    Ok(s) if s.role() != role => {
                        return Err(TrustError::File {
                            path: path.display().to_string(),
                            why: format!("this is a {} key; the {role} needs a {role} key", s.role()),
                        });
                    }
                    Ok(s) => Some(Arc::new(s)),
                    Err(TrustError::Io { source, .. })
                        if cfg.allow_unsigned && source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            (None, true) if cfg.allow_unsigned => None,
            (None, true) => {
                return Err(TrustError::Config(format!(
                    "trust.key_dir is not set: the {role} signs every record it writes (vigil keys gen --role {role})"
                )));
            }
        };
        let keyring = match (&cfg.keyring_file, reads) {
            (_, false) => None,
            (Some(path), true) => Some(KeyringHandle::open(path)?),
            (None, true) if cfg.allow_unsigned => None,
            (None, true) => {
                return Err(TrustError::Config(format!(
                    "trust.keyring_file is not set: the {role} reads Kafka records and must check who wrote them"
                )));
            }
        };
        if cfg.allow_unsigned {
            tracing::warn!(
                role = %role,
                "trust: allow_unsigned is on: unsigned Kafka records are believed{}",
                if writes && signer.is_none() { ", and this part writes unsigned ones" } else { "" }
            );
        }
        Ok(Trust { cfg: cfg.clone(), role, signer, keyring })
    }

    /// Trust for tests and tools: this signer, this keyring.
    pub fn with(cfg: &TrustConfig, signer: Option<Signer>, keyring: Option<Arc<KeyringHandle>>) -> Trust {
        let role = signer.as_ref().map_or(Role::Worker, Signer::role);
        Trust { cfg: cfg.clone(), role, signer: signer.map(Arc::new), keyring }
    }

    pub fn signer(&self) -> Option<&Arc<Signer>> {
        self.signer.as_ref()
    }

    /// The check for records read from a topic of this kind.
    pub fn verifier(&self, kind: TopicKind) -> Verifier {
        Verifier::new(kind, self.keyring.clone(), &self.cfg)
    }

    /// Signs a record about to be written (no headers added when unsigned is allowed and
    /// this part has no key).
    pub fn sign_into(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: rdkafka::message::OwnedHeaders,
    ) -> rdkafka::message::OwnedHeaders {
        match &self.signer {
            Some(s) => s.sign_into(topic, key, value, headers),
            None => headers,
        }
    }

    /// The warning `/readyz` shows (still ready) while unsigned records are believed.
    pub fn warning(&self) -> Option<String> {
        self.cfg.allow_unsigned.then(|| {
            "trust.allow_unsigned is on: unsigned Kafka records are believed (a test cluster only)".to_string()
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The clock skew allowed between hosts, in milliseconds.
    pub fn max_clock_skew_ms(&self) -> u64 {
        self.cfg.max_clock_skew_secs.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_deployment_must_name_its_keys_unless_unsigned_is_allowed() {
        let cfg = TrustConfig::default();
        assert_eq!(cfg.validate("trust", true).len(), 2);
        assert!(cfg.validate("trust", false).is_empty());
        assert!(TrustConfig { allow_unsigned: true, ..cfg.clone() }.validate("trust", true).is_empty());
        let err = Trust::open(&cfg, Role::Worker, true, true).unwrap_err().to_string();
        assert!(err.contains("key_dir"), "{err}");
        let err = Trust::open(&cfg, Role::Console, false, true).unwrap_err().to_string();
        assert!(err.contains("keyring_file"), "{err}");
    }

    #[test]
    fn a_part_refuses_another_roles_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::generate("c", Role::Console).unwrap();
        std::fs::write(dir.path().join("worker.key"), s.to_file_text()).unwrap();
        std::fs::set_permissions(dir.path().join("worker.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = TrustConfig { key_dir: Some(dir.path().into()), ..TrustConfig::default() };
        let err = Trust::open(&cfg, Role::Worker, true, false).unwrap_err().to_string();
        assert!(err.contains("console key"), "{err}");
    }
}
