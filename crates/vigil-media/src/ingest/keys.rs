//! Stream keys: who may publish. Either a static table (stream name → key) or keys
//! signed by the platform with HMAC-SHA256 and an expiry, so that a platform can hand
//! out keys without telling every worker:
//!
//! `NAME.EXPIRY_UNIX_SECS.SIGNATURE`, SIGNATURE = hex(HMAC-SHA256(secret, "NAME.EXPIRY")).
//!
//! The stream's name (never the key) is what appears in stream ids and alerts.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use super::revoked::Revoked;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown stream key")]
    Unknown,
    #[error("the stream key expired")]
    Expired,
    #[error("the stream key is malformed")]
    Malformed,
    #[error("the stream key is valid for longer than this worker accepts")]
    TooLong,
    #[error("the stream key was revoked")]
    Revoked,
}

/// Who may publish: the key scheme, less the keys revoked since they were handed out.
#[derive(Clone)]
pub struct StreamKeys {
    scheme: KeyScheme,
    revoked: Revoked,
}

#[derive(Clone)]
enum KeyScheme {
    /// Stream name → key.
    Static(BTreeMap<String, String>),
    Signed {
        secret: Vec<u8>,
        /// A key may expire at most this far in the future: a leaked key is then
        /// useful for a bounded time, whatever expiry its holder was given.
        max_lifetime_secs: u64,
    },
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scheme {
            KeyScheme::Static(m) => write!(f, "Static({} keys, {:?})", m.len(), self.revoked),
            KeyScheme::Signed { .. } => write!(f, "Signed({:?})", self.revoked),
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal digests, compared without an early exit (no timing hint about the key).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl StreamKeys {
    /// A static table: stream name → key.
    pub fn fixed(table: BTreeMap<String, String>) -> Self {
        Self { scheme: KeyScheme::Static(table), revoked: Revoked::default() }
    }

    /// Keys signed with `secret`, good for at most `max_lifetime_secs`.
    pub fn signed(secret: Vec<u8>, max_lifetime_secs: u64) -> Self {
        Self { scheme: KeyScheme::Signed { secret, max_lifetime_secs }, revoked: Revoked::default() }
    }

    /// The same keys, less those on `revoked` (a shared list that may be reloaded).
    pub fn revoking(self, revoked: Revoked) -> Self {
        Self { revoked, ..self }
    }

    /// Whether a key accepted earlier has been revoked since (live publishes are
    /// checked again while they run).
    pub fn is_revoked(&self, key: &str, name: &str) -> bool {
        self.revoked.covers(key, name)
    }

    /// The stream name a valid, unrevoked key publishes as.
    pub fn check(&self, key: &str, now_unix_secs: u64) -> Result<String, KeyError> {
        let name = self.check_scheme(key, now_unix_secs)?;
        if self.revoked.covers(key, &name) {
            return Err(KeyError::Revoked);
        }
        Ok(name)
    }

    fn check_scheme(&self, key: &str, now_unix_secs: u64) -> Result<String, KeyError> {
        match &self.scheme {
            KeyScheme::Static(table) => {
                let wanted = digest(key);
                // Every entry is compared, so the time taken says nothing about which.
                let mut found = None;
                for (name, k) in table {
                    if same(&digest(k), &wanted) {
                        found = Some(name.clone());
                    }
                }
                found.ok_or(KeyError::Unknown)
            }
            KeyScheme::Signed { secret, max_lifetime_secs } => {
                let mut parts = key.rsplitn(3, '.');
                let (Some(sig), Some(expiry), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(KeyError::Malformed);
                };
                let valid_name = !name.is_empty()
                    && name.len() <= 128
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
                let expiry: u64 = expiry.parse().map_err(|_| KeyError::Malformed)?;
                let sig = hex::decode(sig).map_err(|_| KeyError::Malformed)?;
                if !valid_name {
                    return Err(KeyError::Malformed);
                }
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::Malformed)?;
                mac.update(format!("{name}.{expiry}").as_bytes());
                mac.verify_slice(&sig).map_err(|_| KeyError::Unknown)?;
                if expiry < now_unix_secs {
                    return Err(KeyError::Expired);
                }
                // Five minutes for the clocks of the platform and the worker to differ.
                if expiry > now_unix_secs.saturating_add(*max_lifetime_secs).saturating_add(CLOCK_SKEW_SECS) {
                    return Err(KeyError::TooLong);
                }
                Ok(name.to_string())
            }
        }
    }

    /// Makes a signed key (for platforms, tests and `vigil` tooling).
    pub fn sign(secret: &[u8], name: &str, expiry_unix_secs: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(format!("{name}.{expiry_unix_secs}").as_bytes());
        format!("{name}.{expiry_unix_secs}.{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Failed key attempts per address: after `MAX_FAILURES` in `WINDOW`, the address's
/// publishes are refused until the window ends, so keys cannot be guessed at line rate.
pub struct KeyFailures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

const CLOCK_SKEW_SECS: u64 = 300;
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (a flood from many addresses forgets the oldest).
const MAX_ADDRESSES: usize = 10_000;

impl Default for KeyFailures {
    fn default() -> Self {
        Self { by_ip: Mutex::new(HashMap::new()) }
    }
}

impl KeyFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` has used up its failed attempts for now.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.lock().get(&source(ip)).is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < WINDOW)
    }

    /// Records a failed attempt from `ip`: a wrong or malformed key, not an expired one
    /// (an encoder retrying with its old key is no guesser).
    pub fn failed(&self, ip: IpAddr, why: &KeyError) {
        if !matches!(why, KeyError::Unknown | KeyError::Malformed) {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        // Still full: a flood from more addresses than are remembered; those already
        // counted keep their counts (clearing the map would forgive them).
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&source(ip)) {
            return;
        }
        let entry = map.entry(source(ip)).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The unit an attacker controls: an IPv4 address, or an IPv6 /64 (one host can use
/// every address of its /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys_map_to_names() {
        let keys = StreamKeys::fixed([("alice".to_string(), "k-123".to_string())].into());
        assert_eq!(keys.check("k-123", 0), Ok("alice".into()));
        assert_eq!(keys.check("k-124", 0), Err(KeyError::Unknown));
        assert_eq!(keys.check("", 0), Err(KeyError::Unknown));
    }

    #[test]
    fn signed_keys_check_signature_and_expiry() {
        let keys = StreamKeys::signed(b"s3cret".to_vec(), 86_400);
        let key = StreamKeys::sign(b"s3cret", "bob_1", 2_000);
        assert_eq!(keys.check(&key, 1_000), Ok("bob_1".into()));
        assert_eq!(keys.check(&key, 3_000), Err(KeyError::Expired));
        assert_eq!(keys.check(&StreamKeys::sign(b"other", "bob_1", 2_000), 1_000), Err(KeyError::Unknown));
        let forged = key.replace("bob_1", "eve_1");
        assert_eq!(keys.check(&forged, 1_000), Err(KeyError::Unknown));
        // Valid, but good for longer than a day (and five minutes of clock skew): refused,
        // so a leaked key cannot live that long.
        let long = StreamKeys::sign(b"s3cret", "bob_1", 1_000 + 86_400 + 301);
        assert_eq!(keys.check(&long, 1_000), Err(KeyError::TooLong));
        assert!(keys.check(&StreamKeys::sign(b"s3cret", "bob_1", 1_000 + 86_400 + 299), 1_000).is_ok(), "skew");
        for bad in ["", "a.b", "x.notanumber.00", "x.5.zz", "../x.5.00"] {
            assert!(keys.check(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_that_keeps_guessing_is_refused_for_a_while() {
        let f = KeyFailures::default();
        let (guesser, other): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(!f.blocked(guesser));
            f.failed(guesser, &KeyError::Expired);
            f.failed(guesser, &KeyError::Unknown);
        }
        assert!(f.blocked(guesser));
        assert!(!f.blocked(other), "only the guessing address");
        let (a, b): (IpAddr, IpAddr) = ("2001:db8:1:2::1".parse().unwrap(), "2001:db8:1:2:ffff::9".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            f.failed(a, &KeyError::Malformed);
        }
        assert!(f.blocked(b), "one /64 is one source");
    }
}
