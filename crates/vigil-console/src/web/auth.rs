//! Accounts and sessions: local accounts (argon2id password hashes) or a trusted auth
//! proxy's headers (oauth2-proxy); a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` with the `__Host-` prefix unless a loopback test turns it off), stored as a
//! SHA-256 of its token so a leaked store holds no usable session; a CSRF token per
//! session in every form, plus an `Origin` check on every POST.

use crate::metrics::METRICS;
use crate::model::{Role, now_ms};
use crate::state::Shared;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// [`verify_password`] on a blocking thread, two at a time: argon2 costs tens of
/// milliseconds of CPU, which must never hold up the runtime's paging loops.
pub async fn verify_password_off_runtime(password: String, hash: String) -> bool {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(_slot) = SLOTS.acquire().await else { return false };
    tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
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
        return Ok(Who::Caller(Caller { user: s.user, role: s.role, csrf: s.csrf_token }));
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
    let from_header = auth
        .proxy_role_header
        .as_ref()
        .map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()).and_then(|r| Role::parse(r.trim())));
    let default = Role::parse(&auth.proxy_default_role).unwrap_or(Role::Viewer);
    let role = match from_header {
        // The proxy says (or its header is missing: the default).
        Some(said) => said.unwrap_or(default),
        // No role header configured: what an admin set, else the default.
        None => existing.as_ref().map_or(default, |u| u.role),
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
}
