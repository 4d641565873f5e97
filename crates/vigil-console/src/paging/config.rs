//! `[paging]`: which channels page, where, and how deliveries are retried.
//!
//! ```toml
//! [paging]
//! queue_age_page_secs = 300
//! timeout_secs = 10
//! retry = { initial_ms = 1000, max_ms = 300000 }
//!
//! [paging.pagerduty]
//! routing_key_env = "VIGIL_PAGERDUTY_ROUTING_KEY"
//!
//! [paging.webhook]
//! url = "https://oncall.example.com/hooks/vigil"
//! secret_env = "VIGIL_PAGE_WEBHOOK_SECRET"
//!
//! [paging.slack]
//! url_env = "VIGIL_SLACK_WEBHOOK_URL"
//! ```
//!
//! Secrets never sit in the file: the file names the environment variables that hold
//! them. [`PagingConfig::validate`] checks the file, [`PagingConfig::resolve_secrets`]
//! reads the variables; each names every mistake it finds in one go.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// PagerDuty's Events API v2 endpoint (the EU service is `events.eu.pagerduty.com`).
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
pub const DEFAULT_PAGERDUTY_SOURCE: &str = "vigil";
pub const DEFAULT_QUEUE_AGE_PAGE_SECS: u64 = 300;
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_RETRY_INITIAL_MS: u64 = 1_000;
pub const DEFAULT_RETRY_MAX_MS: u64 = 300_000;
/// The webhook's HMAC secret: at least the hash's output (SHA-256, 32 bytes).
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 32;
/// PagerDuty answers 400 to a routing key of any other length.
pub const PAGERDUTY_ROUTING_KEY_LEN: usize = 32;

/// Bounds outside of which a number is a typo, not a choice.
const QUEUE_AGE_RANGE_SECS: std::ops::RangeInclusive<u64> = 10..=86_400;
const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=120;
const RETRY_INITIAL_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
/// A page that waits more than an hour between tries is as good as lost.
const RETRY_MAX_LIMIT_MS: u64 = 3_600_000;

/// `[paging]`. Every channel is optional; with none, nothing pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    #[serde(default)]
    pub pagerduty: Option<PagerDutyConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// Page when the oldest incident nobody has acknowledged has waited this long.
    #[serde(default = "default_queue_age_page_secs")]
    pub queue_age_page_secs: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    /// One HTTP call, connect to last byte of the answer.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            pagerduty: None,
            webhook: None,
            slack: None,
            queue_age_page_secs: DEFAULT_QUEUE_AGE_PAGE_SECS,
            retry: RetryConfig::default(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// `[paging.pagerduty]`: an Events API v2 integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// The environment variable holding the integration (routing) key.
    pub routing_key_env: String,
    /// `payload.source` of trigger events.
    #[serde(default = "default_pagerduty_source")]
    pub source: String,
    /// Allow an `http://` URL (a loopback test receiver or a local relay). The body
    /// carries the routing key, so it belongs on TLS.
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// `[paging.webhook]`: the signed `vigil.page` v1 webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 secret (at least 32 bytes).
    pub secret_env: String,
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// `[paging.slack]`: a Slack incoming webhook (or a Slack-compatible one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The environment variable holding the incoming-webhook URL: whoever has the URL
    /// can post to the channel, so it is a secret and never logged.
    pub url_env: String,
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// `[paging.retry]`: the backoff between delivery attempts of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The wait after the first failure; it doubles per failure up to `max_ms`.
    #[serde(default = "default_retry_initial_ms")]
    pub initial_ms: u64,
    /// The longest wait; also the wait after a refusal (see [`super::deliver`]).
    #[serde(default = "default_retry_max_ms")]
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { initial_ms: DEFAULT_RETRY_INITIAL_MS, max_ms: DEFAULT_RETRY_MAX_MS }
    }
}

fn default_pagerduty_url() -> String {
    DEFAULT_PAGERDUTY_URL.into()
}
fn default_pagerduty_source() -> String {
    DEFAULT_PAGERDUTY_SOURCE.into()
}
fn default_queue_age_page_secs() -> u64 {
    DEFAULT_QUEUE_AGE_PAGE_SECS
}
fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}
fn default_retry_initial_ms() -> u64 {
    DEFAULT_RETRY_INITIAL_MS
}
fn default_retry_max_ms() -> u64 {
    DEFAULT_RETRY_MAX_MS
}

impl PagingConfig {
    /// Every mistake in the file, each prefixed with its key (`{prefix}.webhook.url`).
    /// Does not read the environment: see [`PagingConfig::resolve_secrets`].
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if let Some(pd) = &self.pagerduty {
            let p = format!("{prefix}.pagerduty");
            if let Err(why) = check_url(&pd.url, pd.allow_plain_http) {
                e.push(format!("{p}.url: \"{}\" {why}", pd.url));
            }
            check_env_name(&mut e, &format!("{p}.routing_key_env"), &pd.routing_key_env);
            if pd.source.trim().is_empty() {
                e.push(format!("{p}.source: must not be empty (PagerDuty requires payload.source)"));
            } else if pd.source.len() > 255 {
                e.push(format!("{p}.source: {} bytes, more than 255", pd.source.len()));
            }
        }
        if let Some(w) = &self.webhook {
            let p = format!("{prefix}.webhook");
            if let Err(why) = check_url(&w.url, w.allow_plain_http) {
                e.push(format!("{p}.url: \"{}\" {why}", w.url));
            }
            check_env_name(&mut e, &format!("{p}.secret_env"), &w.secret_env);
        }
        if let Some(s) = &self.slack {
            check_env_name(&mut e, &format!("{prefix}.slack.url_env"), &s.url_env);
        }
        if !QUEUE_AGE_RANGE_SECS.contains(&self.queue_age_page_secs) {
            e.push(format!(
                "{prefix}.queue_age_page_secs: {} is outside {}..={}",
                self.queue_age_page_secs,
                QUEUE_AGE_RANGE_SECS.start(),
                QUEUE_AGE_RANGE_SECS.end()
            ));
        }
        if !TIMEOUT_RANGE_SECS.contains(&self.timeout_secs) {
            e.push(format!(
                "{prefix}.timeout_secs: {} is outside {}..={}",
                self.timeout_secs,
                TIMEOUT_RANGE_SECS.start(),
                TIMEOUT_RANGE_SECS.end()
            ));
        }
        e.extend(self.retry.validate(&format!("{prefix}.retry")));
        e
    }

    /// The channels configured, in [`crate::model::Channel::ALL`] order.
    pub fn channels(&self) -> Vec<crate::model::Channel> {
        use crate::model::Channel;
        Channel::ALL
            .into_iter()
            .filter(|c| match c {
                Channel::Pagerduty => self.pagerduty.is_some(),
                Channel::Webhook => self.webhook.is_some(),
                Channel::Slack => self.slack.is_some(),
            })
            .collect()
    }

    /// Reads the secrets from the environment. Errors name every variable that is
    /// missing or unusable, never a secret's value.
    pub fn resolve_secrets(&self) -> Result<ResolvedPaging, Vec<String>> {
        self.resolve_secrets_from(|name| std::env::var(name).ok())
    }

    /// [`PagingConfig::resolve_secrets`] with another source of variables (tests, or
    /// secrets read from files).
    pub fn resolve_secrets_from(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<ResolvedPaging, Vec<String>> {
        let mut e = Vec::new();
        let mut read = |var: &str, key: &str| -> Option<String> {
            match lookup(var) {
                Some(v) if !v.is_empty() => Some(v),
                Some(_) => {
                    e.push(format!("environment variable {var} ({key}) is empty"));
                    None
                }
                None => {
                    e.push(format!("environment variable {var} ({key}) is not set"));
                    None
                }
            }
        };
        let pagerduty = self.pagerduty.as_ref().and_then(|pd| {
            let key = read(&pd.routing_key_env, "paging.pagerduty.routing_key_env")?;
            Some((pd, key))
        });
        let webhook = self.webhook.as_ref().and_then(|w| Some((w, read(&w.secret_env, "paging.webhook.secret_env")?)));
        let slack = self.slack.as_ref().and_then(|s| Some((s, read(&s.url_env, "paging.slack.url_env")?)));

        let pagerduty = pagerduty.and_then(|(pd, key)| {
            if key.trim().chars().count() != PAGERDUTY_ROUTING_KEY_LEN {
                e.push(format!(
                    "environment variable {} (paging.pagerduty.routing_key_env): a PagerDuty routing key has \
                     {PAGERDUTY_ROUTING_KEY_LEN} characters, this one {}",
                    pd.routing_key_env,
                    key.trim().chars().count()
                ));
                return None;
            }
            Some(ResolvedPagerDuty {
                url: pd.url.clone(),
                routing_key: Secret(key.trim().to_string()),
                source: pd.source.clone(),
            })
        });
        let webhook = webhook.and_then(|(w, secret)| {
            if secret.len() < MIN_WEBHOOK_SECRET_BYTES {
                e.push(format!(
                    "environment variable {} (paging.webhook.secret_env): the secret has {} bytes, \
                     it needs at least {MIN_WEBHOOK_SECRET_BYTES}",
                    w.secret_env,
                    secret.len()
                ));
                return None;
            }
            Some(ResolvedWebhook { url: w.url.clone(), secret: Secret(secret) })
        });
        let slack = slack.and_then(|(s, url)| {
            let url = url.trim().to_string();
            // The URL is the secret: say what is wrong with it, never what it is.
            if let Err(why) = check_url(&url, s.allow_plain_http) {
                e.push(format!("environment variable {} (paging.slack.url_env): the URL {why}", s.url_env));
                return None;
            }
            Some(ResolvedSlack { url: Secret(url) })
        });
        if !e.is_empty() {
            return Err(e);
        }
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        // No redirects: ureq would turn a redirected POST into a GET; a 3xx is a bad answer.
        let agent = ureq::AgentBuilder::new().timeout(timeout).redirects(0).build();
        Ok(ResolvedPaging { config: self.clone(), pagerduty, webhook, slack, agent })
    }
}

impl RetryConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if !RETRY_INITIAL_RANGE_MS.contains(&self.initial_ms) {
            e.push(format!(
                "{prefix}.initial_ms: {} is outside {}..={}",
                self.initial_ms,
                RETRY_INITIAL_RANGE_MS.start(),
                RETRY_INITIAL_RANGE_MS.end()
            ));
        }
        if self.max_ms < self.initial_ms {
            e.push(format!("{prefix}.max_ms: {} is under initial_ms {}", self.max_ms, self.initial_ms));
        }
        if self.max_ms > RETRY_MAX_LIMIT_MS {
            e.push(format!(
                "{prefix}.max_ms: {} is over {RETRY_MAX_LIMIT_MS} (an hour between tries loses the page)",
                self.max_ms
            ));
        }
        e
    }
}

/// `Err(why)` completes "the URL ...": an `https://` URL with a host, or `http://` where
/// allowed.
pub(crate) fn check_url(url: &str, allow_plain_http: bool) -> Result<(), &'static str> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !allow_plain_http {
            return Err("is plain http: use https://, or set allow_plain_http = true");
        }
        rest
    } else {
        return Err("is not an https:// URL");
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains white space or control characters");
    }
    Ok(())
}

fn check_env_name(e: &mut Vec<String>, key: &str, name: &str) {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() {
        e.push(format!("{key}: must name an environment variable"));
    } else if !valid {
        e.push(format!("{key}: \"{name}\" is not an environment variable name (letters, digits, _)"));
    }
}

/// A secret read from the environment: printed as `***`, read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The configuration with its secrets read and the HTTP client built: what deliveries
/// need. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct ResolvedPaging {
    pub config: PagingConfig,
    pub pagerduty: Option<ResolvedPagerDuty>,
    pub webhook: Option<ResolvedWebhook>,
    pub slack: Option<ResolvedSlack>,
    pub(crate) agent: ureq::Agent,
}

impl fmt::Debug for ResolvedPaging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedPaging")
            .field("config", &self.config)
            .field("pagerduty", &self.pagerduty)
            .field("webhook", &self.webhook)
            .field("slack", &self.slack)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedPagerDuty {
    pub url: String,
    pub routing_key: Secret,
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct ResolvedWebhook {
    pub url: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct ResolvedSlack {
    /// The incoming-webhook URL, a secret.
    pub url: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_takes_the_defaults_and_is_valid() {
        let c: PagingConfig = toml::from_str("").unwrap();
        assert_eq!(c, PagingConfig::default());
        assert_eq!(c.queue_age_page_secs, 300);
        assert_eq!(c.retry, RetryConfig { initial_ms: 1000, max_ms: 300_000 });
        assert_eq!(c.timeout_secs, 10);
        assert!(c.channels().is_empty());
        assert_eq!(c.validate("paging"), Vec::<String>::new());
    }

    #[test]
    fn pagerduty_defaults_its_url_and_source() {
        let c: PagingConfig = toml::from_str("[pagerduty]\nrouting_key_env = \"PD_KEY\"\n").unwrap();
        let pd = c.pagerduty.as_ref().unwrap();
        assert_eq!(pd.url, DEFAULT_PAGERDUTY_URL);
        assert_eq!(pd.source, "vigil");
        assert!(!pd.allow_plain_http);
        assert_eq!(c.validate("paging"), Vec::<String>::new());
    }

    #[test]
    fn typos_and_missing_required_keys_are_refused() {
        assert!(toml::from_str::<PagingConfig>("queue_age_page_sec = 300").is_err());
        assert!(toml::from_str::<PagingConfig>("[webhook]\nurl = \"https://x\"\nsecret = \"S\"\n").is_err());
        assert!(toml::from_str::<PagingConfig>("[slack]\nurl = \"https://hooks.slack.com/x\"\n").is_err());
        assert!(toml::from_str::<PagingConfig>("[pagerduty]\nsource = \"vigil\"\n").is_err());
        assert!(toml::from_str::<PagingConfig>("[retry]\ninitial = 5\n").is_err());
    }

    #[test]
    fn urls_need_https_and_a_host() {
        assert!(check_url("https://events.pagerduty.com/v2/enqueue", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", false).unwrap_err().contains("plain http"));
        assert!(check_url("ftp://x", true).is_err());
        assert!(check_url("https:///path", false).unwrap_err().contains("no host"));
        assert!(check_url("https://a b", false).is_err());
    }

    #[test]
    fn a_resolved_config_never_prints_its_secrets() {
        let c: PagingConfig = toml::from_str(
            "[pagerduty]\nrouting_key_env = \"K\"\n[webhook]\nurl = \"https://h\"\nsecret_env = \"S\"\n\
             [slack]\nurl_env = \"U\"\n",
        )
        .unwrap();
        let r = c
            .resolve_secrets_from(|v| match v {
                "K" => Some("k".repeat(32)),
                "S" => Some("s".repeat(40)),
                "U" => Some("https://hooks.slack.com/services/TSECRET/BSECRET/XSECRET".into()),
                _ => None,
            })
            .unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("kkkk") && !shown.contains("ssss") && !shown.contains("SECRET"), "{shown}");
    }
}
