//! The generic webhook: `vigil.page` v1 JSON (`schema/page-webhook-v1.schema.json`),
//! signed so the receiver knows it came from this console and is fresh.
//!
//! `POST {url}` with
//! - `content-type: application/json`;
//! - `vigil-signature-timestamp: <unix seconds when sent>`;
//! - `vigil-signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, over the
//!   body's exact bytes.
//!
//! Each attempt is signed afresh (a retry carries a new timestamp, the same `page_id`).
//!
//! # For platform engineers: verifying a page
//!
//! 1. Read the raw body bytes before any JSON parsing.
//! 2. Refuse a timestamp more than a few minutes from your clock (either way): it stops
//!    a captured page from being replayed later.
//! 3. Compute `HMAC-SHA256(secret, timestamp + "." + body)` in hex and compare it with
//!    every `v1=` entry of `vigil-signature` (comma-separated; more than one while a
//!    secret is being rotated) in constant time.
//! 4. Deduplicate on `page_id`: a page can arrive twice (a retry after a lost answer).
//! 5. Answer 2xx once the page is stored. 4xx other than 408/429 tells the console you
//!    will never take it (it is kept and counted as refused); 5xx/429 make it retry.
//!
//! In Rust, [`verify_webhook`] does steps 1 to 3; `docs/paging.md` has the same in a
//! few lines of Python.

use super::config::ResolvedWebhook;
use super::{PageKind, Request};
use crate::model::{OutboxItem, UnixMs};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

pub const SCHEMA: &str = "vigil.page";
pub const SCHEMA_VERSION: u32 = 1;
pub const SIGNATURE_HEADER: &str = "vigil-signature";
pub const TIMESTAMP_HEADER: &str = "vigil-signature-timestamp";
/// A window receivers can use: five minutes either way.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

type HmacSha256 = Hmac<Sha256>;

pub fn request(cfg: &ResolvedWebhook, item: &OutboxItem, now: UnixMs) -> Request {
    let body = serde_json::to_vec(&body(item, now)).expect("a JSON value serialises");
    let timestamp = now.div_euclid(1000);
    let signature = sign(cfg.secret.expose().as_bytes(), timestamp, &body);
    Request {
        url: cfg.url.clone(),
        headers: vec![(TIMESTAMP_HEADER, timestamp.to_string()), (SIGNATURE_HEADER, format!("v1={signature}"))],
        body,
    }
}

/// The `vigil.page` v1 record of one outbox item, sent at `now`.
pub fn body(item: &OutboxItem, now: UnixMs) -> serde_json::Value {
    let s = &item.subject;
    json!({
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "page_id": item.id,
        "kind": PageKind::of(item).as_str(),
        "action": item.action.as_str(),
        "incident_id": s.incident_id,
        "stream_id": s.stream_id,
        "account_id": s.account_id,
        "decision": s.decision,
        "rule": s.rule,
        "detected_at_unix_ms": s.detected_at_ms,
        "link": s.link,
        "sent_at_unix_ms": now,
    })
}

/// Hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a received page is not taken as genuine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {TIMESTAMP_HEADER} header is not a number of seconds")]
    MalformedTimestamp,
    #[error("the {SIGNATURE_HEADER} header has no well-formed v1=<64 hex digits> entry")]
    MalformedSignature,
    /// Positive: the page is from the future (by the receiver's clock).
    #[error("the page was signed {skew_s} s from now, outside the replay window")]
    OutsideWindow { skew_s: i64 },
    #[error("no v1 signature matches the body, the timestamp and the secret")]
    Mismatch,
}

/// Checks a received `vigil.page` webhook: `timestamp_header` and `signature_header`
/// are the values of `vigil-signature-timestamp` and `vigil-signature`, `body` the raw
/// bytes received, `now_unix_s` the receiver's clock, `window_s` how far (either way) a
/// timestamp may be from it.
///
/// The comparison is constant-time. Every `v1=` entry of the signature header is tried
/// (a sender rotating secrets signs with both); entries of other schemes are ignored.
pub fn verify_webhook(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix_s: i64,
    window_s: u64,
) -> Result<(), VerifyError> {
    let ts = timestamp_header.trim();
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp);
    }
    let timestamp: i64 = ts.parse().map_err(|_| VerifyError::MalformedTimestamp)?;
    let candidates: Vec<Vec<u8>> = signature_header
        .split(',')
        .filter_map(|entry| entry.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h.trim()).ok())
        .filter(|sig| sig.len() == 32)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::MalformedSignature);
    }
    let skew_s = timestamp - now_unix_s;
    if skew_s.unsigned_abs() > window_s {
        return Err(VerifyError::OutsideWindow { skew_s });
    }
    // The same timestamp text the sender signed (`ts` has no sign and no spaces).
    let expected = mac(secret, timestamp, body);
    if candidates.iter().any(|sig| expected.clone().verify_slice(sig).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value from Python: hmac.new(SECRET, b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign(SECRET, 1_700_000_000, b"{}"),
            "417adf36b901772f658597a76d329694e335e65fc0849d7715c3ca33406309b5"
        );
    }

    #[test]
    fn a_rotated_secret_verifies_with_either_entry() {
        let sig_old = sign(b"old-secret-old-secret-old-secret", 100, b"{}");
        let sig_new = sign(SECRET, 100, b"{}");
        let header = format!("v1={sig_old}, v1={sig_new}, v2=whatever");
        assert_eq!(verify_webhook(SECRET, "100", &header, b"{}", 100, 300), Ok(()));
        assert_eq!(verify_webhook(SECRET, "100", "v0=abc", b"{}", 100, 300), Err(VerifyError::MalformedSignature));
        assert_eq!(verify_webhook(SECRET, "-100", &header, b"{}", 100, 300), Err(VerifyError::MalformedTimestamp));
        assert_eq!(verify_webhook(SECRET, "1e3", &header, b"{}", 100, 300), Err(VerifyError::MalformedTimestamp));
    }
}
