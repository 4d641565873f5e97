//! `[console]`: where the console listens, its store, its topics, sessions, the
//! allowlist entries it creates, and `[console.paging]`. The Kafka cluster is the
//! worker's `[sink.kafka]` (one file configures a deployment).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Four eyes: a false positive on an interrupt-level incident (which releases a
    /// stream and allow-lists its frames) takes effect only once a second reviewer
    /// approves it.
    #[serde(default = "yes")]
    pub false_positive_approval: bool,
    /// A link to the stream on the platform, shown on the incident page:
    /// `https://platform.example/live/{stream_id}`, with `{stream_id}` and `{account_id}`
    /// filled in (URL-encoded). None: no link.
    #[serde(default)]
    pub stream_url_template: Option<String>,
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
    /// The audit chain's HMAC key (at least 32 bytes), kept outside the store so that
    /// whoever can write the store cannot re-key the chain: a file holding it, or ...
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// ... an environment variable holding it. With neither, [`DEFAULT_AUDIT_KEY_ENV`].
    #[serde(default)]
    pub audit_key_env: Option<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub paging: crate::paging::PagingConfig,
}

/// Where the audit key is read from when `[console]` names no `audit_key_file` or
/// `audit_key_env`.
pub const DEFAULT_AUDIT_KEY_ENV: &str = "VIGIL_CONSOLE_AUDIT_KEY";

/// The shortest audit key accepted, in bytes.
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// A trusted auth proxy (oauth2-proxy) in front: it sets the user (and optionally the
/// user's groups) in headers, which are believed only from `trusted_proxies` (none by
/// default). The role comes from the groups the proxy asserts, mapped by `group_roles`:
/// never from a header the proxy neither sets nor strips.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub proxy_user_header: Option<String>,
    /// The header in which the proxy lists the user's groups, comma-separated
    /// (oauth2-proxy: `X-Forwarded-Groups`, which it overwrites on every request).
    #[serde(default)]
    pub proxy_groups_header: Option<String>,
    /// Group name → role; the highest role of the user's mapped groups wins.
    #[serde(default)]
    pub group_roles: BTreeMap<String, String>,
    /// The role of a proxy user none of whose groups is mapped.
    #[serde(default = "default_proxy_role")]
    pub proxy_default_role: String,
    /// The addresses whose proxy headers are believed (and whose `X-Forwarded-For` names
    /// the client for sign-in throttling). Empty by default: no proxy is trusted.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
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
impl ConsoleConfig {
    /// The stream's page on the platform, from `stream_url_template`.
    pub fn stream_url(&self, stream_id: &str, account_id: Option<&str>) -> Option<String> {
        let t = self.stream_url_template.as_ref()?;
        if t.contains("{account_id}") && account_id.is_none() {
            return None;
        }
        let arg = crate::web::pages::url_arg;
        Some(t.replace("{stream_id}", &arg(stream_id)).replace("{account_id}", &arg(account_id.unwrap_or(""))))
    }
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

impl AuthConfig {
    /// Every mistake, one line each.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if crate::model::Role::parse(&self.proxy_default_role).is_none() {
            e.push(format!(
                "{prefix}.proxy_default_role: {:?} is not viewer, reviewer or admin",
                self.proxy_default_role
            ));
        }
        for (k, h) in
            [("proxy_user_header", &self.proxy_user_header), ("proxy_groups_header", &self.proxy_groups_header)]
        {
            if let Some(h) = h
                && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                e.push(format!("{prefix}.{k}: {h:?} is not a header name"));
            }
        }
        if self.proxy_user_header.is_some() && self.trusted_proxies.is_empty() {
            e.push(format!(
                "{prefix}.proxy_user_header: needs at least one address in trusted_proxies (the proxy's own)"
            ));
        }
        if self.proxy_groups_header.is_some() && self.proxy_user_header.is_none() {
            e.push(format!("{prefix}.proxy_groups_header: needs proxy_user_header"));
        }
        if !self.group_roles.is_empty() && self.proxy_groups_header.is_none() {
            e.push(format!("{prefix}.group_roles: needs proxy_groups_header"));
        }
        for (group, role) in &self.group_roles {
            if group.trim().is_empty() || group.contains(',') {
                e.push(format!("{prefix}.group_roles: {group:?} is not a group name"));
            }
            if crate::model::Role::parse(role).is_none() {
                e.push(format!("{prefix}.group_roles.{group}: {role:?} is not viewer, reviewer or admin"));
            }
        }
        for ip in &self.trusted_proxies {
            if ip.is_unspecified() {
                e.push(format!("{prefix}.trusted_proxies: {ip} would trust every address"));
            }
        }
        e
    }

    /// The role of a proxy user in these groups: the highest mapped role, else
    /// `proxy_default_role`.
    pub fn role_of_groups<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> crate::model::Role {
        groups
            .into_iter()
            .filter_map(|g| self.group_roles.get(g.trim()))
            .filter_map(|r| crate::model::Role::parse(r))
            .max()
            .unwrap_or_else(|| {
                crate::model::Role::parse(&self.proxy_default_role).unwrap_or(crate::model::Role::Viewer)
            })
    }
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
        if let Some(t) = &self.stream_url_template
            && (!t.starts_with("https://")
                || !(t.contains("{stream_id}") || t.contains("{account_id}"))
                || t.len() > 500)
        {
            e.push(format!(
                "{prefix}.stream_url_template: {t:?} must be an https:// URL naming {{stream_id}} or {{account_id}}"
            ));
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
        e.extend(self.auth.validate(&format!("{prefix}.auth")));
        match (&self.audit_key_file, &self.audit_key_env) {
            (Some(_), Some(_)) => {
                e.push(format!("{prefix}.audit_key_file and audit_key_env: name one place for the audit key"))
            }
            (Some(f), None) if f.as_os_str().is_empty() => e.push(format!("{prefix}.audit_key_file: must name a file")),
            (None, Some(v)) if v.trim().is_empty() => {
                e.push(format!("{prefix}.audit_key_env: must name an environment variable"))
            }
            _ => {}
        }
        e.extend(self.paging.validate(&format!("{prefix}.paging")));
        e
    }

    /// The audit chain's key, from `audit_key_file`, `audit_key_env` or
    /// [`DEFAULT_AUDIT_KEY_ENV`]: at least [`MIN_AUDIT_KEY_BYTES`] bytes (surrounding
    /// whitespace, such as a file's final newline, is not part of it).
    pub fn audit_key(&self) -> Result<crate::store::AuditKey, String> {
        let (from, bytes) = match (&self.audit_key_file, &self.audit_key_env) {
            (Some(f), _) => (
                format!("console.audit_key_file {}", f.display()),
                std::fs::read(f).map_err(|e| format!("console.audit_key_file {}: {e}", f.display()))?,
            ),
            (None, var) => {
                let var = var.as_deref().unwrap_or(DEFAULT_AUDIT_KEY_ENV);
                let value = std::env::var_os(var).ok_or_else(|| {
                    format!(
                        "the audit key: {var} is not set (set it to at least {MIN_AUDIT_KEY_BYTES} random bytes, \
                         e.g. `openssl rand -hex 32`, or name a file in [console] audit_key_file)"
                    )
                })?;
                (format!("the audit key in {var}"), value.into_encoded_bytes())
            }
        };
        crate::store::AuditKey::new(bytes.trim_ascii()).map_err(|e| format!("{from}: {e}"))
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

    #[test]
    fn the_platform_link_is_filled_in_encoded_and_its_template_checked() {
        let cfg = ConsoleConfig {
            stream_url_template: Some("https://platform.example/{account_id}/live/{stream_id}".into()),
            ..Default::default()
        };
        assert!(cfg.validate("console").is_empty(), "{:?}", cfg.validate("console"));
        assert_eq!(
            cfg.stream_url("rtmp/live/a b", Some("acct/7")).as_deref(),
            Some("https://platform.example/acct%2F7/live/rtmp%2Flive%2Fa%20b")
        );
        assert_eq!(cfg.stream_url("rtmp/live/a", None), None, "no account, no link");
        for bad in ["http://platform.example/{stream_id}", "https://platform.example/", "javascript:{stream_id}"] {
            let cfg = ConsoleConfig { stream_url_template: Some(bad.into()), ..Default::default() };
            assert!(cfg.validate("console").iter().any(|e| e.contains("stream_url_template")), "{bad}");
        }
    }

    #[test]
    fn no_proxy_is_trusted_by_default_and_every_auth_mistake_is_reported() {
        assert!(ConsoleConfig::default().auth.trusted_proxies.is_empty());
        assert_eq!(ConsoleConfig::default().validate("console"), Vec::<String>::new());
        let cfg: ConsoleConfig = toml::from_str(
            "[auth]\nproxy_user_header = \"X-Forwarded-Email\"\n\
             [auth.group_roles]\noncall = \"boss\"\n\"a,b\" = \"admin\"\n",
        )
        .unwrap();
        let errors = cfg.validate("console");
        for expected in [
            "console.auth.proxy_user_header: needs at least one address in trusted_proxies",
            "console.auth.group_roles: needs proxy_groups_header",
            "console.auth.group_roles.oncall: \"boss\" is not viewer, reviewer or admin",
            "console.auth.group_roles: \"a,b\" is not a group name",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(expected)), "{expected} in {errors:?}");
        }
        assert_eq!(errors.len(), 4, "{errors:?}");
        let cfg: ConsoleConfig =
            toml::from_str("[auth]\nproxy_groups_header = \"X-Forwarded-Groups\"\ntrusted_proxies = [\"0.0.0.0\"]\n")
                .unwrap();
        let errors = cfg.validate("console");
        assert!(errors.iter().any(|e| e.contains("proxy_groups_header: needs proxy_user_header")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("would trust every address")), "{errors:?}");
    }

    #[test]
    fn the_highest_mapped_group_role_wins() {
        let auth: AuthConfig = toml::from_str(
            "proxy_default_role = \"viewer\"\n[group_roles]\noncall = \"reviewer\"\nleads = \"admin\"\n",
        )
        .unwrap();
        use crate::model::Role;
        assert_eq!(auth.role_of_groups([]), Role::Viewer);
        assert_eq!(auth.role_of_groups(["staff", " oncall "]), Role::Reviewer);
        assert_eq!(auth.role_of_groups(["leads", "oncall"]), Role::Admin);
        assert_eq!(auth.role_of_groups(["LEADS"]), Role::Viewer, "group names are exact");
    }

    #[test]
    fn the_audit_key_comes_from_outside_the_store_and_is_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.key");
        std::fs::write(&file, format!("{}\n", "ab".repeat(32))).unwrap();
        let cfg = ConsoleConfig { audit_key_file: Some(file.clone()), ..Default::default() };
        assert!(cfg.audit_key().is_ok());
        std::fs::write(&file, "too short\n").unwrap();
        assert!(cfg.audit_key().unwrap_err().contains("at least 32"));
        let cfg = ConsoleConfig { audit_key_env: Some("VIGIL_TEST_NO_SUCH_AUDIT_KEY".into()), ..Default::default() };
        let err = cfg.audit_key().unwrap_err();
        assert!(err.contains("VIGIL_TEST_NO_SUCH_AUDIT_KEY is not set"), "{err}");
        let cfg = ConsoleConfig { audit_key_file: Some(file), audit_key_env: Some("X".into()), ..Default::default() };
        assert!(cfg.validate("console").iter().any(|e| e.contains("name one place for the audit key")));
    }
}
