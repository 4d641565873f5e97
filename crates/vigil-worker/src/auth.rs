//! Who may change the worker: `POST /admin/*` (drain, bank reload) and `/streams`
//! (publisher addresses, sources) need `Authorization: Bearer TOKEN`. The token comes
//! from a file (a Kubernetes Secret mount) or an environment variable, never from the
//! config file, and is compared in constant time. Without a token those routes are
//! refused (403): an admin port reachable by probes and Prometheus must not also be a
//! remote off switch. `/healthz`, `/readyz` and `/metrics` stay open and read-only.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The shortest token accepted: a guessable token is no lock.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin token, if one is configured.
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<[u8]>>);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token_file {0}: {1}")]
    File(String, std::io::Error),
    #[error("the admin token ({0}) is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort(String),
}

impl AdminToken {
    /// Reads the token from `file` if given, else from the environment variable `env`
    /// (absent or empty: no token). Surrounding whitespace (a trailing newline) is cut.
    pub fn load(file: Option<&Path>, env: &str) -> Result<AdminToken, TokenError> {
        let (raw, from) = match file {
            Some(f) => (
                std::fs::read_to_string(f).map_err(|e| TokenError::File(f.display().to_string(), e))?,
                f.display().to_string(),
            ),
            None => (std::env::var(env).unwrap_or_default(), format!("${env}")),
        };
        let token = raw.trim();
        if token.is_empty() && file.is_none() {
            return Ok(AdminToken(None));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(from));
        }
        Ok(AdminToken(Some(token.as_bytes().into())))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether an `Authorization` header value carries this token.
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let (Some(token), Some(value)) = (&self.0, authorization) else { return false };
        let Some(presented) = bearer(value) else { return false };
        // Length is not secret (and ct_eq needs equal lengths); the bytes are compared
        // without an early exit.
        presented.len() == token.len() && bool::from(presented.ct_eq(token))
    }
}

fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| value[7..].trim_ascii())
}

/// Middleware for the protected routes.
pub async fn require_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if !token.is_set() {
        crate::admin::refused("no_token");
        return (
            StatusCode::FORBIDDEN,
            "no admin token is configured on this worker (admin.token_file or the token environment variable)\n",
        )
            .into_response();
    }
    let authorization = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token.admits(authorization) {
        return next.run(request).await;
    }
    crate::admin::refused("bad_token");
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid admin bearer token is required\n")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> AdminToken {
        AdminToken(Some(t.as_bytes().into()))
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = token("0123456789abcdef-secret");
        assert!(t.admits(Some(b"Bearer 0123456789abcdef-secret")));
        assert!(t.admits(Some(b"bearer 0123456789abcdef-secret ")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdef-secreT")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdef-secret-and-more")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdef")));
        assert!(!t.admits(Some(b"Basic 0123456789abcdef-secret")));
        assert!(!t.admits(Some(b"Bearer")));
        assert!(!t.admits(None));
        assert!(!AdminToken::default().admits(Some(b"Bearer anything-at-all-123")));
    }

    #[test]
    fn tokens_load_from_a_file_or_the_environment_and_short_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "0123456789abcdef-secret\n").unwrap();
        assert!(
            AdminToken::load(Some(&f), "VIGIL_TEST_UNSET_TOKEN")
                .unwrap()
                .admits(Some(b"Bearer 0123456789abcdef-secret"))
        );
        std::fs::write(&f, "short\n").unwrap();
        assert!(matches!(AdminToken::load(Some(&f), "X"), Err(TokenError::TooShort(_))));
        assert!(matches!(AdminToken::load(Some(&dir.path().join("none")), "X"), Err(TokenError::File(..))));
        assert!(!AdminToken::load(None, "VIGIL_TEST_UNSET_TOKEN").unwrap().is_set());
    }
}
