//! Accounts and sessions: local accounts (argon2id password hashes, sign-in throttled in
//! [`super::throttle`]) or a trusted auth proxy's headers (oauth2-proxy: the user, and the
//! role from the groups it asserts; believed only from `trusted_proxies`, none by
//! default); a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` with the `__Host-` prefix unless a loopback test turns it off), stored as a
//! SHA-256 of its token so a leaked store holds no usable session; a CSRF token per
//! session in every form, plus an `Origin` check on every POST.

use crate::metrics::METRICS;
use crate::model::{Role, now_ms};
use crate::state::Shared;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// Times in the browser's local time (the account's choice; UTC otherwise).
    pub local_time: bool,
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash to verify against when the user does not exist, so a wrong user name costs
/// the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("not a password of anyone").expect("argon2 hashes"));
    &DECOY
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b
}

pub fn new_token() -> String {
    hex::encode(random_bytes::<32>())
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn cookie_name(shared: &Shared) -> &'static str {
    if shared.cfg.cookie_secure { "__Host-vigil_session" } else { "vigil_session" }
}

pub fn session_cookie(shared: &Shared, token: &str, max_age_secs: u64) -> String {
    let secure = if shared.cfg.cookie_secure { "; Secure" } else { "" };
    format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}", cookie_name(shared))
}

pub fn session_token(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(shared);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, v)| v.to_string())
}

/// Creates a session; returns its cookie.
pub async fn start_session(shared: &Shared, user: &str) -> Result<String, crate::store::StoreError> {
    let token = new_token();
    let now = now_ms();
    let ttl = shared.cfg.session_hours * 3600;
    shared.store.create_session(&token_hash(&token), user, &new_token(), now, now + ttl as i64 * 1000).await?;
    Ok(session_cookie(shared, &token, ttl))
}

pub enum Who {
    Caller(Caller),
    /// A proxy user without a session yet: the cookie to set, then ask again.
    NewProxySession(String),
    Nobody,
}

/// The caller, from the session cookie or a trusted proxy's headers.
pub async fn who(shared: &Shared, headers: &HeaderMap, peer: SocketAddr) -> Result<Who, crate::store::StoreError> {
    if let Some(token) = session_token(shared, headers)
        && let Some(s) = shared.store.session(&token_hash(&token), now_ms()).await?
    {
        return Ok(Who::Caller(Caller { user: s.user, role: s.role, csrf: s.csrf_token, local_time: s.local_time }));
    }
    let auth = &shared.cfg.auth;
    let Some(user_header) = &auth.proxy_user_header else { return Ok(Who::Nobody) };
    if !auth.trusted_proxies.contains(&peer.ip()) {
        return Ok(Who::Nobody);
    }
    let Some(user) = headers.get(user_header.as_str()).and_then(|v| v.to_str().ok()).map(str::trim) else {
        return Ok(Who::Nobody);
    };
    if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
        return Ok(Who::Nobody);
    }
    let existing = shared.store.user(user).await?;
    // A local account (one with a password) is never taken over by a proxy identity of
    // the same name, and a disabled account gets no session either way.
    if existing.as_ref().is_some_and(|u| u.password_hash.is_some() || u.disabled) {
        return Ok(Who::Nobody);
    }
    let role = match &auth.proxy_groups_header {
        // The groups the proxy asserts (it overwrites this header on every request),
        // mapped by `group_roles`; all of the header's values, comma-separated.
        Some(h) => auth.role_of_groups(
            headers.get_all(h.as_str()).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')),
        ),
        // No groups header: what an admin set, else the default.
        None => existing.as_ref().map_or_else(|| auth.role_of_groups([]), |u| u.role),
    };
    shared.store.upsert_user(user, None, role).await?;
    shared
        .store
        .audit(user, "login", "console", &serde_json::json!({ "via": "proxy", "role": role.as_str() }), now_ms())
        .await?;
    Ok(Who::NewProxySession(start_session(shared, user).await?))
}

/// Same-origin POSTs only: the `Origin` (or, without one, the `Referer`) must be the
/// console's own public URL.
pub fn same_origin(shared: &Shared, headers: &HeaderMap) -> bool {
    let public = shared.cfg.public_url.trim_end_matches('/');
    let origin = |url: &str| url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let ours = origin(public);
    if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        return o == ours;
    }
    headers.get(header::REFERER).and_then(|v| v.to_str().ok()).is_some_and(|r| origin(r) == ours)
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not one (the proxy appends the address it saw;
/// what a client put before it is not believed past that).
pub fn client_addr(shared: &Shared, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let trusted = &shared.cfg.auth.trusted_proxies;
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer.ip()
}

/// A user name as typed at sign-in, safe to record: at most 200 characters, quotes,
/// backslashes and control characters escaped.
pub fn escaped_user(user: &str) -> String {
    user.chars().take(200).flat_map(char::escape_debug).collect()
}

pub fn csrf_ok(caller: &Caller, token: &str) -> bool {
    let (a, b) = (caller.csrf.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn refused(why: &str) {
    METRICS.requests_refused.with_label_values(&[why]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn typed_user_names_are_recorded_escaped() {
        assert_eq!(escaped_user("alice"), "alice");
        assert_eq!(escaped_user("a\nlogin ok\u{1b}[0m\"x"), "a\\nlogin ok\\u{1b}[0m\\\"x");
        assert_eq!(escaped_user(&"x".repeat(500)).len(), 200);
    }
}
