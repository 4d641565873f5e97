//! Signing and checking one record.
//!
//! The signature covers, in this order and length-prefixed so that no two records share
//! the signed bytes: a domain tag, the topic, the key, the value (each marked present or
//! absent, so a tombstone signs as one) and the timestamp. It travels in three headers:
//! [`KEY_ID_HEADER`], [`TS_HEADER`] (milliseconds since the epoch, decimal) and
//! [`SIG_HEADER`] (128 lowercase hex digits).

use crate::keys::KeyringHandle;
use crate::replay::Seen;
use crate::{Role, Signer, TopicKind};
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use std::sync::{Arc, Mutex};

pub const KEY_ID_HEADER: &str = "vigil-key-id";
pub const TS_HEADER: &str = "vigil-signed-at";
pub const SIG_HEADER: &str = "vigil-signature";

const DOMAIN: &[u8] = b"vigil.record.v1\0";

/// A record's three signature headers as read: key id, timestamp, signature.
pub type SignatureParts = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// The bytes a record's signature covers.
fn signed_bytes(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, ts_ms: u64) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(DOMAIN.len() + topic.len() + 32 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&(topic.len() as u64).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    for part in [key, value] {
        match part {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&(p.len() as u64).to_be_bytes());
                out.extend_from_slice(p);
            }
            None => out.push(0),
        }
    }
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out
}

/// The three signature headers of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub key_id: String,
    pub ts_ms: u64,
    pub signature_hex: String,
}

impl SignatureHeaders {
    /// Adds them to a record's headers.
    pub fn add_to(&self, headers: OwnedHeaders) -> OwnedHeaders {
        let ts = self.ts_ms.to_string();
        headers
            .insert(Header { key: KEY_ID_HEADER, value: Some(&self.key_id) })
            .insert(Header { key: TS_HEADER, value: Some(&ts) })
            .insert(Header { key: SIG_HEADER, value: Some(&self.signature_hex) })
    }
}

impl Signer {
    /// Signs a record about to be written to `topic`, at `ts_ms`.
    pub fn sign(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, ts_ms: u64) -> SignatureHeaders {
        let sig = self.key().sign(&signed_bytes(topic, key, value, ts_ms));
        SignatureHeaders { key_id: self.id().to_string(), ts_ms, signature_hex: hex::encode(sig.to_bytes()) }
    }

    /// Signs now and adds the headers.
    pub fn sign_into(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> OwnedHeaders {
        self.sign(topic, key, value, crate::unix_ms()).add_to(headers)
    }
}

/// Why a record was not believed: a fixed word, the `result` label of
/// `vigil_trust_records_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unsigned")]
    Unsigned,
    #[error("malformed signature headers")]
    Malformed,
    #[error("signed by a key the keyring does not hold")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("signed by a role that may not write this topic")]
    WrongRole,
    #[error("signed too long ago for a command")]
    Stale,
    #[error("signed ahead of this clock")]
    Future,
    #[error("a repeat of a record already read")]
    Replayed,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Unsigned,
        Refusal::Malformed,
        Refusal::UnknownKey,
        Refusal::BadSignature,
        Refusal::WrongRole,
        Refusal::Stale,
        Refusal::Future,
        Refusal::Replayed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::Malformed => "malformed",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongRole => "wrong_role",
            Refusal::Stale => "stale",
            Refusal::Future => "future",
            Refusal::Replayed => "replayed",
        }
    }
}

/// One record as read: what its signature covers, its signature headers, where it sits,
/// and the broker's append time when the topic keeps one.
struct Incoming<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    sig: SignatureParts,
    at: Option<Position>,
    appended_ms: Option<u64>,
}

/// Who wrote a record a reader believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `None` only for an unsigned record taken under `allow_unsigned`.
    pub key_id: Option<String>,
    pub role: Option<Role>,
    pub ts_ms: Option<u64>,
}

/// One reader's check of one topic.
pub struct Verifier {
    kind: TopicKind,
    /// `None` only under `allow_unsigned` with no keyring: every record is taken.
    keyring: Option<Arc<KeyringHandle>>,
    allow_unsigned: bool,
    max_age_ms: u64,
    max_ahead_ms: u64,
    seen: Mutex<Seen>,
    /// The second a refusal was last logged.
    last_logged_s: std::sync::atomic::AtomicU64,
}

/// Where a record sits, so a redelivery of the same record (a consumer reading its
/// partition again) is told apart from a copy written again (a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl Verifier {
    pub fn new(kind: TopicKind, keyring: Option<Arc<KeyringHandle>>, cfg: &crate::TrustConfig) -> Verifier {
        Verifier {
            kind,
            keyring,
            allow_unsigned: cfg.allow_unsigned,
            max_age_ms: cfg.command_max_age_secs.saturating_mul(1000),
            max_ahead_ms: cfg.max_clock_skew_secs.saturating_mul(1000),
            seen: Mutex::new(Seen::new(crate::replay::CAPACITY)),
            last_logged_s: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    pub fn kind(&self) -> TopicKind {
        self.kind
    }

    /// Checks a Kafka record (its topic, key, value, headers and position), counts the
    /// result, and says who wrote it or why it is refused.
    pub fn check<M: rdkafka::Message>(&self, m: &M) -> Result<Verified, Refusal> {
        self.check_with(m, true)
    }

    /// [`Verifier::check`], with the freshness window applied only when `live`: a
    /// reader rebuilding state from a command topic's history (the lifecycle partitions
    /// a worker is assigned) reads old records too, and orders them per key itself.
    pub fn check_with<M: rdkafka::Message>(&self, m: &M, live: bool) -> Result<Verified, Refusal> {
        let header = |name: &str| -> Option<Vec<u8>> {
            let h = m.headers()?;
            h.iter().filter(|h| h.key == name).last().and_then(|h| h.value.map(<[u8]>::to_vec))
        };
        let sig = (header(KEY_ID_HEADER), header(TS_HEADER), header(SIG_HEADER));
        let at = Position { partition: m.partition(), offset: m.offset() };
        // The broker's own append time, when the topic keeps one (`LogAppendTime`): the
        // producer cannot set it, so it dates a copy written again, even one read back
        // from a compacted history.
        let appended = match m.timestamp() {
            rdkafka::Timestamp::LogAppendTime(t) => u64::try_from(t).ok(),
            _ => None,
        };
        let record =
            Incoming { topic: m.topic(), key: m.key(), value: m.payload(), sig, at: Some(at), appended_ms: appended };
        self.judge_and_count(record, crate::unix_ms(), live)
    }

    /// [`Verifier::check`] on a record's parts (`now_ms`: this clock).
    pub fn check_parts(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        (key_id, ts, sig): SignatureParts,
        at: Option<Position>,
        now_ms: u64,
    ) -> Result<Verified, Refusal> {
        self.judge_and_count(
            Incoming { topic, key, value, sig: (key_id, ts, sig), at, appended_ms: None },
            now_ms,
            true,
        )
    }

    /// Judges a record, counts the result, and logs a refusal (at most once a second).
    fn judge_and_count(&self, record: Incoming<'_>, now_ms: u64, live: bool) -> Result<Verified, Refusal> {
        let topic = record.topic;
        let result = self.judge(record, now_ms, live);
        let label = match &result {
            Ok(v) if v.key_id.is_none() => "unsigned_allowed",
            Ok(_) => "accepted",
            Err(r) => r.label(),
        };
        crate::metrics::RECORDS.with_label_values(&[self.kind.label(), label]).inc();
        if let Err(r) = result {
            // At most one line a second per reader: a flood of forgeries is counted in
            // full but cannot flood the log.
            let now_s = now_ms / 1000;
            if self.last_logged_s.swap(now_s, std::sync::atomic::Ordering::Relaxed) != now_s {
                tracing::warn!(topic, kind = self.kind.label(), why = %r, "trust: record refused (counted in vigil_trust_records_total)");
            }
        }
        result
    }

    fn judge(&self, record: Incoming<'_>, now_ms: u64, live: bool) -> Result<Verified, Refusal> {
        let Incoming { topic, key, value, sig: (key_id, ts, sig), at, appended_ms } = record;
        let Some(keyring) = self.keyring.as_ref() else {
            return if self.allow_unsigned {
                Ok(Verified { key_id: None, role: None, ts_ms: None })
            } else {
                Err(Refusal::UnknownKey)
            };
        };
        let (key_id, ts, sig) = match (key_id, ts, sig) {
            (None, None, None) if self.allow_unsigned => {
                return Ok(Verified { key_id: None, role: None, ts_ms: None });
            }
            (None, None, None) => return Err(Refusal::Unsigned),
            (Some(k), Some(t), Some(s)) => (k, t, s),
            _ => return Err(Refusal::Malformed),
        };
        let key_id =
            String::from_utf8(key_id).ok().filter(|k| crate::keys::valid_key_id(k)).ok_or(Refusal::Malformed)?;
        let ts_ms = std::str::from_utf8(&ts)
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or(Refusal::Malformed)?;
        let sig_bytes: [u8; 64] = std::str::from_utf8(&sig)
            .ok()
            .filter(|s| s.len() == 128 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .and_then(|s| {
                let mut out = [0u8; 64];
                hex::decode_to_slice(s, &mut out).ok().map(|()| out)
            })
            .ok_or(Refusal::Malformed)?;
        let ring = keyring.current();
        let known = ring.get(&key_id).ok_or(Refusal::UnknownKey)?;
        known
            .key
            .verify(&signed_bytes(topic, key, value, ts_ms), &Signature::from_bytes(&sig_bytes))
            .map_err(|_| Refusal::BadSignature)?;
        if !self.kind.writers().contains(&known.role) {
            return Err(Refusal::WrongRole);
        }
        if self.kind.is_command() && live {
            if ts_ms > now_ms.saturating_add(self.max_ahead_ms) {
                return Err(Refusal::Future);
            }
            if now_ms.saturating_sub(ts_ms) > self.max_age_ms {
                return Err(Refusal::Stale);
            }
        }
        // Commands and allowlist entries are written as soon as they are signed: one the
        // broker appended long after its signing is a copy written again (a replay that
        // compaction may have left as a stream's only record). Alerts and outcomes are
        // exempt: a spool may hold them for hours.
        let appended_late = appended_ms.is_some_and(|a| a.saturating_sub(ts_ms) > self.max_age_ms);
        if appended_late && (self.kind.is_command() || self.kind == TopicKind::BankUpdates) {
            return Err(Refusal::Stale);
        }
        let fresh = self.seen.lock().unwrap_or_else(|p| p.into_inner()).first_time(&key_id, &sig_bytes, at);
        if !fresh {
            return Err(Refusal::Replayed);
        }
        Ok(Verified { key_id: Some(key_id), role: Some(known.role), ts_ms: Some(ts_ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keyring, TrustConfig};

    fn cfg() -> TrustConfig {
        TrustConfig::default()
    }

    fn parts(h: &SignatureHeaders) -> SignatureParts {
        (Some(h.key_id.clone().into()), Some(h.ts_ms.to_string().into()), Some(h.signature_hex.clone().into()))
    }

    fn at(offset: i64) -> Option<Position> {
        Some(Position { partition: 0, offset })
    }

    #[test]
    fn every_topic_believes_its_writers_only_and_refuses_unsigned_and_forged_records() {
        let signers: Vec<Signer> = Role::ALL.iter().map(|r| Signer::generate(&format!("{r}-1"), *r).unwrap()).collect();
        let outsider = Signer::generate("worker-1", Role::Worker).unwrap(); // same id, other key
        let ring = KeyringHandle::fixed(Keyring::of(&signers.iter().collect::<Vec<_>>()));
        let now = 1_800_000_000_000;
        for kind in TopicKind::ALL {
            let v = Verifier::new(kind, Some(ring.clone()), &cfg());
            let mut offset = 0;
            for s in &signers {
                offset += 1;
                let h = s.sign("t", Some(b"k"), Some(b"v"), now);
                let got = v.check_parts("t", Some(b"k"), Some(b"v"), parts(&h), at(offset), now);
                if kind.writers().contains(&s.role()) {
                    assert_eq!(got.unwrap().role, Some(s.role()), "{kind:?} {s:?}");
                } else {
                    assert_eq!(got, Err(Refusal::WrongRole), "{kind:?} {s:?}");
                }
            }
            assert_eq!(
                v.check_parts("t", Some(b"k"), Some(b"v"), (None, None, None), at(90), now),
                Err(Refusal::Unsigned)
            );
            let forged = outsider.sign("t", Some(b"k"), Some(b"v"), now);
            assert_eq!(
                v.check_parts("t", Some(b"k"), Some(b"v"), parts(&forged), at(91), now),
                Err(Refusal::BadSignature)
            );
            // Moved to another topic, another key or another value: no longer verifies.
            let writer = signers.iter().find(|s| kind.writers().contains(&s.role())).unwrap();
            let h = writer.sign("t", Some(b"k"), Some(b"v"), now + 1);
            for (topic, key, value) in [("u", &b"k"[..], &b"v"[..]), ("t", b"j", b"v"), ("t", b"k", b"w")] {
                assert_eq!(
                    v.check_parts(topic, Some(key), Some(value), parts(&h), at(92), now),
                    Err(Refusal::BadSignature)
                );
            }
            assert_eq!(v.check_parts("t", Some(b"k"), None, parts(&h), at(93), now), Err(Refusal::BadSignature));
            let mut upper = parts(&h);
            upper.2 = Some(h.signature_hex.to_uppercase().into());
            assert_eq!(v.check_parts("t", Some(b"k"), Some(b"v"), upper, at(94), now), Err(Refusal::Malformed));
        }
    }

    #[test]
    fn a_replayed_record_is_refused_but_a_redelivery_of_the_same_offset_is_not() {
        let s = Signer::generate("c", Role::Console).unwrap();
        let v = Verifier::new(TopicKind::BankUpdates, Some(KeyringHandle::fixed(Keyring::of(&[&s]))), &cfg());
        let h = s.sign("b", Some(b"k"), Some(b"v"), 1);
        assert!(v.check_parts("b", Some(b"k"), Some(b"v"), parts(&h), at(5), 10_000_000).is_ok());
        assert!(v.check_parts("b", Some(b"k"), Some(b"v"), parts(&h), at(5), 10_000_000).is_ok(), "redelivery");
        assert_eq!(v.check_parts("b", Some(b"k"), Some(b"v"), parts(&h), at(6), 10_000_000), Err(Refusal::Replayed));
        // State topics have no freshness window: a record signed long ago is still read.
        assert!(
            v.check_parts(
                "b",
                Some(b"k"),
                Some(b"w"),
                parts(&s.sign("b", Some(b"k"), Some(b"w"), 1)),
                at(7),
                u64::MAX / 2
            )
            .is_ok()
        );
    }

    #[test]
    fn commands_must_be_fresh_and_not_ahead_of_the_clock() {
        let s = Signer::generate("w", Role::Worker).unwrap();
        let v = Verifier::new(TopicKind::Interrupts, Some(KeyringHandle::fixed(Keyring::of(&[&s]))), &cfg());
        let now = 1_800_000_000_000;
        let old = s.sign("i", None, Some(b"v"), now - (cfg().command_max_age_secs + 1) * 1000);
        assert_eq!(v.check_parts("i", None, Some(b"v"), parts(&old), at(1), now), Err(Refusal::Stale));
        let ahead = s.sign("i", None, Some(b"v"), now + (cfg().max_clock_skew_secs + 1) * 1000);
        assert_eq!(v.check_parts("i", None, Some(b"v"), parts(&ahead), at(2), now), Err(Refusal::Future));
        let ok = s.sign("i", None, Some(b"v"), now - 1000);
        assert!(v.check_parts("i", None, Some(b"v"), parts(&ok), at(3), now).is_ok());
        // A tombstone signs and verifies as one.
        let tomb = s.sign("i", Some(b"k"), None, now);
        assert!(v.check_parts("i", Some(b"k"), None, parts(&tomb), at(4), now).is_ok());
    }

    #[test]
    fn a_copy_the_broker_appended_long_after_its_signing_is_refused_even_in_history() {
        let s = Signer::generate("p", Role::Lifecycle).unwrap();
        let v = Verifier::new(TopicKind::Lifecycle, Some(KeyringHandle::fixed(Keyring::of(&[&s]))), &cfg());
        let now = 1_800_000_000_000;
        let old = now - 86_400_000;
        let h = s.sign("l", Some(b"live/a"), None, old);
        let check = |appended: Option<u64>, offset| {
            let record = Incoming {
                topic: "l",
                key: Some(b"live/a"),
                value: None,
                sig: parts(&h),
                at: at(offset),
                appended_ms: appended,
            };
            v.judge_and_count(record, now, false)
        };
        // Read from history (no freshness), but appended a day after it was signed.
        assert_eq!(check(Some(now - 1000), 1), Err(Refusal::Stale));
        // Appended when it was signed: genuine history.
        assert!(check(Some(old + 50), 2).is_ok());
        // Alerts are exempt from the append-time check: a spool may hold them for hours.
        let w = Signer::generate("w", Role::Worker).unwrap();
        let alerts_w = Verifier::new(TopicKind::Alerts, Some(KeyringHandle::fixed(Keyring::of(&[&w]))), &cfg());
        let hw = w.sign("a", None, Some(b"x"), old);
        let record =
            Incoming { topic: "a", key: None, value: Some(b"x"), sig: parts(&hw), at: at(3), appended_ms: Some(now) };
        let late_alert = alerts_w.judge_and_count(record, now, true);
        assert!(late_alert.is_ok(), "alerts may sit in a spool for hours");
    }

    #[test]
    fn allow_unsigned_takes_unsigned_records_but_still_refuses_bad_signatures() {
        let s = Signer::generate("w", Role::Worker).unwrap();
        let c = TrustConfig { allow_unsigned: true, ..cfg() };
        let v = Verifier::new(TopicKind::Alerts, Some(KeyringHandle::fixed(Keyring::of(&[&s]))), &c);
        assert_eq!(v.check_parts("a", None, Some(b"v"), (None, None, None), at(1), 1).unwrap().key_id, None);
        let mut h = parts(&s.sign("a", None, Some(b"v"), 1));
        h.1 = Some(b"2".to_vec());
        assert_eq!(v.check_parts("a", None, Some(b"v"), h, at(2), 1), Err(Refusal::BadSignature));
    }
}
