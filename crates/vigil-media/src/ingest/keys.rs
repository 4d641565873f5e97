//! Stream keys: who may publish. Either a static table (stream name → key) or keys
//! signed by the platform with HMAC-SHA256 and an expiry, so that a platform can hand
//! out keys without telling every worker:
//!
//! `NAME.EXPIRY_UNIX_SECS.SIGNATURE`, SIGNATURE = hex(HMAC-SHA256(secret, "NAME.EXPIRY")).
//!
//! A signed key has one spelling only: SIGNATURE in lower-case hex, 64 digits; EXPIRY in
//! decimal digits, no sign, no leading zero. Other spellings of a valid key (`+EXPIRY`,
//! `0EXPIRY`, an upper-case signature) would pass the signature check while escaping a
//! revocation list that names the key as written, so they are refused as malformed,
//! and the revocation list compares keys by their parsed parts too ([`SignedKey`]).
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
                let SignedKey { name, expiry, signature } = SignedKey::parse(key).ok_or(KeyError::Malformed)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::Malformed)?;
                mac.update(format!("{name}.{expiry}").as_bytes());
                mac.verify_slice(&signature).map_err(|_| KeyError::Unknown)?;
                // A revoked key is revoked however it is spelled (and then not counted
                // as a guess); any other key must be spelled canonically.
                if self.revoked.covers(key, &name) {
                    return Err(KeyError::Revoked);
                }
                if !SignedKey::is_canonical(key) {
                    return Err(KeyError::Malformed);
                }
                if expiry < now_unix_secs {
                    return Err(KeyError::Expired);
                }
                // Five minutes for the clocks of the platform and the worker to differ.
                if expiry > now_unix_secs.saturating_add(*max_lifetime_secs).saturating_add(CLOCK_SKEW_SECS) {
                    return Err(KeyError::TooLong);
                }
                Ok(name)
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

/// A signed key's parts. [`SignedKey::parse`] reads every spelling that decodes to the
/// same parts (upper-case hex, `+EXPIRY`, `0EXPIRY`, whitespace around a part), so that
/// two spellings of one key compare equal; [`SignedKey::canonical`] is the one spelling
/// a worker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedKey {
    pub name: String,
    pub expiry: u64,
    pub signature: [u8; SIGNATURE_BYTES],
}

/// An HMAC-SHA256 signature's length.
const SIGNATURE_BYTES: usize = 32;
/// The longest stream name a signed key may carry.
const MAX_NAME_BYTES: usize = 128;

impl SignedKey {
    /// The parts of `key`, however spelled; `None` when it is no signed key at all.
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.rsplitn(3, '.').map(str::trim);
        let (Some(sig), Some(expiry), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let valid_name = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !valid_name {
            return None;
        }
        let expiry = expiry.parse().ok()?;
        let signature = hex::decode(sig).ok()?.try_into().ok()?;
        Some(Self { name: name.to_string(), expiry, signature })
    }

    /// The one accepted spelling: `NAME.EXPIRY.SIGNATURE`, the expiry in decimal without
    /// sign or leading zero, the signature in lower-case hex.
    pub fn canonical(&self) -> String {
        format!("{}.{}.{}", self.name, self.expiry, hex::encode(self.signature))
    }

    /// Whether `key` is a signed key spelled the one accepted way.
    pub fn is_canonical(key: &str) -> bool {
        Self::parse(key).is_some_and(|k| k.canonical() == key)
    }
}

/// Failed key attempts per address: after `MAX_FAILURES` in `WINDOW`, the address's
/// publishes are refused until the window ends, so keys cannot be guessed at line rate.
/// At most `MAX_ADDRESSES` addresses are counted one by one; while that table is full,
/// every address not in it shares one overflow bucket with the same limit, so a flood
/// from many addresses cannot make room for unlimited guesses.
#[derive(Default)]
pub struct KeyFailures {
    state: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    by_ip: HashMap<IpAddr, Bucket>,
    /// Shared by the addresses the table had no room for.
    overflow: Bucket,
}

/// Failed attempts in the window that started at `since`.
#[derive(Clone, Copy)]
struct Bucket {
    count: u32,
    since: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Self { count: 0, since: Instant::now() }
    }
}

impl Bucket {
    fn blocked(&self) -> bool {
        self.count >= MAX_FAILURES && self.since.elapsed() < WINDOW
    }

    fn fail(&mut self) {
        if self.since.elapsed() >= WINDOW {
            *self = Self::default();
        }
        self.count += 1;
    }
}

const CLOCK_SKEW_SECS: u64 = 300;
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses counted one by one at most; the rest share the overflow bucket.
const MAX_ADDRESSES: usize = 10_000;

impl KeyFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` has used up its failed attempts for now (an address the table does
    /// not hold answers for the overflow bucket).
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let state = self.lock();
        state.by_ip.get(&source(ip)).unwrap_or(&state.overflow).blocked()
    }

    /// Records a failed attempt from `ip`: a wrong or malformed key, not an expired one
    /// (an encoder retrying with its old key is no guesser).
    pub fn failed(&self, ip: IpAddr, why: &KeyError) {
        if !matches!(why, KeyError::Unknown | KeyError::Malformed) {
            return;
        }
        let state = &mut *self.lock();
        let ip = source(ip);
        if state.by_ip.len() >= MAX_ADDRESSES && !state.by_ip.contains_key(&ip) {
            state.by_ip.retain(|_, bucket| bucket.since.elapsed() < WINDOW);
        }
        // Still full: a flood from more addresses than are counted one by one. Those
        // already counted keep their counts (clearing the table would forgive them);
        // the others share the overflow bucket.
        let bucket = if state.by_ip.len() >= MAX_ADDRESSES && !state.by_ip.contains_key(&ip) {
            &mut state.overflow
        } else {
            state.by_ip.entry(ip).or_default()
        };
        bucket.fail();
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

/// Other spellings of the signed key `key` (`NAME.EXPIRY.SIGNATURE`) that decode to the
/// same parts: what a worker must neither accept nor let past a revocation list.
#[cfg(test)]
pub(crate) fn other_spellings(key: &str) -> Vec<String> {
    let mut parts = key.rsplitn(3, '.');
    let (sig, expiry, name) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mixed: String =
        sig.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    vec![
        format!("{name}.{expiry}.{}", sig.to_ascii_uppercase()),
        format!("{name}.{expiry}.{mixed}"),
        format!("{name}.+{expiry}.{sig}"),
        format!("{name}.0{expiry}.{sig}"),
        format!("{name}.00{expiry}.{sig}"),
        format!(" {key}"),
        format!("{key} "),
        format!("{key}\n"),
        format!("{name}. {expiry}.{sig}"),
        format!("{name}.{expiry}\t.{sig}"),
    ]
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

    #[test]
    fn other_spellings_of_a_signed_key_are_malformed_and_count_as_guesses() {
        let keys = StreamKeys::signed(b"s3cret".to_vec(), 86_400);
        let key = StreamKeys::sign(b"s3cret", "bob_1", 2_000);
        assert!(SignedKey::is_canonical(&key));
        assert_eq!(keys.check(&key, 1_000), Ok("bob_1".into()));
        let failures = KeyFailures::default();
        let guesser: IpAddr = "192.0.2.9".parse().unwrap();
        for other in other_spellings(&key) {
            assert_eq!(SignedKey::parse(&other).as_ref().map(SignedKey::canonical), Some(key.clone()), "{other:?}");
            assert!(!SignedKey::is_canonical(&other), "{other:?}");
            let refused = keys.check(&other, 1_000);
            assert_eq!(refused, Err(KeyError::Malformed), "{other:?}");
            failures.failed(guesser, &refused.unwrap_err());
        }
        assert!(failures.blocked(guesser), "refused spellings count against the address");
        // The signature must be exactly 64 hex digits.
        let (short, long) = (&key[..key.len() - 2], format!("{key}00"));
        for bad in [short, long.as_str()] {
            assert_eq!(keys.check(bad, 1_000), Err(KeyError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_revoked_signed_key_is_revoked_in_every_spelling() {
        let key = StreamKeys::sign(b"s3cret", "bob_1", 2_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, format!("key:{key}\n")).unwrap();
        let keys = StreamKeys::signed(b"s3cret".to_vec(), 86_400).revoking(Revoked::load(&path).unwrap());
        assert_eq!(keys.check(&key, 1_000), Err(KeyError::Revoked));
        for other in other_spellings(&key) {
            assert_eq!(keys.check(&other, 1_000), Err(KeyError::Revoked), "{other:?}");
            assert!(keys.is_revoked(&other, "bob_1"), "{other:?}");
        }
        // Another key of the same stream is not revoked by it.
        assert_eq!(keys.check(&StreamKeys::sign(b"s3cret", "bob_1", 2_001), 1_000), Ok("bob_1".into()));
    }

    #[test]
    fn a_flood_from_many_addresses_leaves_new_addresses_a_shared_limit() {
        let f = KeyFailures::default();
        for i in 0..MAX_ADDRESSES as u32 {
            f.failed(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), &KeyError::Unknown);
        }
        let newcomer: IpAddr = "192.0.2.77".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(!f.blocked(newcomer));
            f.failed(newcomer, &KeyError::Unknown);
        }
        assert!(f.blocked(newcomer), "an address the table has no room for is limited all the same");
        let another: IpAddr = "2001:db8:9::1".parse().unwrap();
        assert!(f.blocked(another), "it shares the overflow bucket with every other untracked address");
        // Those in the table keep their own counts.
        let counted = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000));
        assert!(!f.blocked(counted));
        for _ in 1..MAX_FAILURES {
            f.failed(counted, &KeyError::Unknown);
        }
        assert!(f.blocked(counted));
    }
}
