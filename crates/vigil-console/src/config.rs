//! `[console]`: where the console listens, its store, its topics, sessions, the
//! allowlist entries it creates, and `[console.paging]`. The Kafka cluster is the
//! worker's `[sink.kafka]` (one file configures a deployment).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Loopback by default: put a TLS-terminating proxy in front for people.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL people open (links in pages point here; `Origin` is checked against it).
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// The SQLite store `console.db` lives here (the embedded default).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// A PostgreSQL URL, read from this environment variable (it holds a password):
    /// several console replicas then share one store.
    #[serde(default)]
    pub store_url_env: Option<String>,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where `vigil actuate` (and the worker's own cuts) report what became of commands.
    #[serde(default = "default_actions_topic")]
    pub actions_topic: String,
    /// Where false positives go as allowlist entries (workers' `[allowlist] topic`).
    #[serde(default = "default_bank_updates_topic")]
    pub bank_updates_topic: String,
    /// How long a reviewer's hold on an incident lasts without activity.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// `Secure` cookies (and the `__Host-` prefix). Only a loopback test turns it off.
    #[serde(default = "yes")]
    pub cookie_secure: bool,
    /// Allowlist entries: their default life, and the PDQ distance they cover.
    #[serde(default = "default_allow_days")]
    pub allow_expiry_days: u64,
    #[serde(default = "default_allow_distance")]
    pub allow_max_distance: u32,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub paging: crate::paging::PagingConfig,
}

/// A trusted auth proxy (oauth2-proxy) in front: it sets the user (and optionally the
/// role) in headers, which are believed only from `trusted_proxies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub proxy_user_header: Option<String>,
    #[serde(default)]
    pub proxy_role_header: Option<String>,
    /// The role of a proxy user whose role header is missing.
    #[serde(default = "default_proxy_role")]
    pub proxy_default_role: String,
    #[serde(default = "default_trusted")]
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            proxy_user_header: None,
            proxy_role_header: None,
            proxy_default_role: default_proxy_role(),
            trusted_proxies: default_trusted(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_public_url() -> String {
    "http://127.0.0.1:8090".into()
}
fn default_state_dir() -> PathBuf {
    std::env::var_os("VIGIL_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/vigil"), PathBuf::from).join("console")
}
fn default_group() -> String {
    "vigil-console".into()
}
fn default_actions_topic() -> String {
    "vigil.actions".into()
}
fn default_bank_updates_topic() -> String {
    "vigil.banks.updates".into()
}
fn default_hold_secs() -> u64 {
    900
}
fn default_session_hours() -> u64 {
    12
}
fn yes() -> bool {
    true
}
fn default_allow_days() -> u64 {
    30
}
fn default_allow_distance() -> u32 {
    16
}
fn default_proxy_role() -> String {
    "viewer".into()
}
fn default_trusted() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]
}

/// `http://127.0.0.1[:PORT][/...]`, `http://localhost...` or `http://[::1]...`: the
/// host itself, not a name that starts like one (`127.0.0.1.example.org`).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

fn is_valid_topic(t: &str) -> bool {
    (1..=249).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ConsoleConfig {
    /// Every mistake, one line each.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!("{prefix}.listen: {:?} is not an address:port", self.listen));
        }
        let loopback = is_loopback_http(&self.public_url);
        if !(self.public_url.starts_with("https://") || loopback) {
            e.push(format!(
                "{prefix}.public_url: {:?} must be https:// (plain http only on loopback)",
                self.public_url
            ));
        }
        if !self.cookie_secure && !loopback {
            e.push(format!("{prefix}.cookie_secure: false is for a loopback public_url only"));
        }
        if let Some(v) = &self.store_url_env
            && v.trim().is_empty()
        {
            e.push(format!("{prefix}.store_url_env: must name an environment variable"));
        }
        if self.group_id.trim().is_empty() {
            e.push(format!("{prefix}.group_id: must not be empty"));
        }
        for (k, t) in [("actions_topic", &self.actions_topic), ("bank_updates_topic", &self.bank_updates_topic)] {
            if !is_valid_topic(t) {
                e.push(format!("{prefix}.{k}: {t:?} is not a valid topic name"));
            }
        }
        if !(60..=86_400).contains(&self.hold_secs) {
            e.push(format!("{prefix}.hold_secs: {} is not within 60..=86400", self.hold_secs));
        }
        if !(1..=168).contains(&self.session_hours) {
            e.push(format!("{prefix}.session_hours: {} is not within 1..=168", self.session_hours));
        }
        if !(1..=366).contains(&self.allow_expiry_days) {
            e.push(format!("{prefix}.allow_expiry_days: {} is not within 1..=366", self.allow_expiry_days));
        }
        if self.allow_max_distance > vigil_core::bank_update::MAX_DISTANCE {
            e.push(format!(
                "{prefix}.allow_max_distance: {} is over {}",
                self.allow_max_distance,
                vigil_core::bank_update::MAX_DISTANCE
            ));
        }
        if crate::model::Role::parse(&self.auth.proxy_default_role).is_none() {
            e.push(format!(
                "{prefix}.auth.proxy_default_role: {:?} is not viewer, reviewer or admin",
                self.auth.proxy_default_role
            ));
        }
        for (k, h) in
            [("proxy_user_header", &self.auth.proxy_user_header), ("proxy_role_header", &self.auth.proxy_role_header)]
        {
            if let Some(h) = h
                && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                e.push(format!("{prefix}.auth.{k}: {h:?} is not a header name"));
            }
        }
        if self.auth.proxy_role_header.is_some() && self.auth.proxy_user_header.is_none() {
            e.push(format!("{prefix}.auth.proxy_role_header: needs proxy_user_header"));
        }
        e.extend(self.paging.validate(&format!("{prefix}.paging")));
        e
    }

    /// The store's URL: PostgreSQL from `store_url_env`, else SQLite in `state_dir`.
    pub fn store_url(&self) -> Result<String, String> {
        match &self.store_url_env {
            Some(var) => std::env::var(var).map_err(|_| format!("console.store_url_env: {var} is not set")),
            None => Ok(format!("sqlite://{}", self.state_dir.join("console.db").display())),
        }
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_loopback_host_itself_may_use_plain_http() {
        for ok in ["http://127.0.0.1:8090", "http://localhost/", "http://[::1]:80/x"] {
            assert!(is_loopback_http(ok), "{ok}");
        }
        for bad in
            ["http://127.0.0.1.evil.example", "http://localhost.example:80", "https://127.0.0.1", "http://10.0.0.1"]
        {
            assert!(!is_loopback_http(bad), "{bad}");
        }
        let cfg = ConsoleConfig {
            public_url: "http://127.0.0.1.evil.example".into(),
            cookie_secure: false,
            ..Default::default()
        };
        assert_eq!(cfg.validate("console").len(), 2, "{:?}", cfg.validate("console"));
    }
}
