//! The worker's front door for pushed streams.
//!
//! - [`rtmp`]: the RTMP publish server (`rtmp://HOST:PORT/APP/STREAM_KEY`).
//! - [`keys`]: who may publish (static keys or HMAC-signed ones with an expiry).
//! - [`guard`]: a strict chunk-stream check in front of the protocol library.
//! - [`whip`]: the WHIP endpoint (WebRTC publishes; `webrtcbin` runs in the child).
//!
//! Pulled sources (rtmp://, rtsp://, srt://, HLS, file://) need no server: their decode
//! child opens the URL itself (see [`crate::isolate`]).

pub mod fuzz;
pub mod guard;
pub mod keys;
pub mod revoked;
pub mod rtmp;
pub mod whip;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[ingest]`: how streams reach this worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default)]
    pub rtmp: Option<RtmpConfig>,
    #[serde(default)]
    pub whip: Option<WhipConfig>,
    /// Sources this worker pulls from the start.
    #[serde(default)]
    pub pull: Vec<PullSource>,
    /// When the worker issues an interrupt for a stream published straight to it (RTMP
    /// push or WHIP), it closes the publisher's connection itself at once, besides the
    /// command it sends the platform. Off only where the platform must make every cut.
    #[serde(default = "default_cut_direct_publishers")]
    pub cut_direct_publishers: bool,
    /// Stream keys revoked since they were handed out (RTMP and WHIP alike; format in
    /// [`revoked`]). Reloaded when it changes: a revoked key is refused and its live
    /// publishes are closed.
    #[serde(default)]
    pub revoked_keys_file: Option<std::path::PathBuf>,
    /// How often the revocation file is checked for changes.
    #[serde(default = "default_revoked_keys_poll_secs")]
    pub revoked_keys_poll_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            rtmp: None,
            whip: None,
            pull: Vec::new(),
            cut_direct_publishers: default_cut_direct_publishers(),
            revoked_keys_file: None,
            revoked_keys_poll_secs: default_revoked_keys_poll_secs(),
        }
    }
}

fn default_revoked_keys_poll_secs() -> u64 {
    5
}

fn default_cut_direct_publishers() -> bool {
    true
}

/// `[ingest.rtmp]`: the RTMP publish server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpConfig {
    /// Address to listen on, e.g. "0.0.0.0:1935".
    pub listen: String,
    /// The application name publishers use (`rtmp://host/APP/KEY`).
    #[serde(default = "default_app")]
    pub app: String,
    /// Static keys: stream name → key.
    #[serde(default)]
    pub stream_keys: BTreeMap<String, String>,
    /// Or: the environment variable holding the secret for HMAC-signed keys.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// Signed keys expiring further ahead than this are refused (a leaked key must not
    /// be good for years).
    #[serde(default = "default_hmac_max_lifetime_secs")]
    pub hmac_max_lifetime_secs: u64,
    /// A connection silent this long is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// A connection that has not started publishing this long after it connected is
    /// closed: a socket dribbling handshake bytes must not hold a slot.
    #[serde(default = "default_publish_deadline_secs")]
    pub publish_deadline_secs: u64,
    /// Connections one address may hold at once (publishing or not). Behind a proxy,
    /// raise it to cover the proxy's pool.
    #[serde(default = "default_rtmp_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Connections not yet publishing, from all addresses together. Publishing ones
    /// count only against `media.limits.max_streams`.
    #[serde(default = "default_max_pending_connections")]
    pub max_pending_connections: usize,
}

fn default_publish_deadline_secs() -> u64 {
    10
}
fn default_rtmp_connections_per_ip() -> usize {
    4
}
fn default_max_pending_connections() -> usize {
    64
}

/// `[ingest.whip]`: the WHIP endpoint for WebRTC publishers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipConfig {
    /// Address of the HTTP endpoint, e.g. "0.0.0.0:8080" (put TLS in front of it).
    pub listen: String,
    /// Static keys (stream name → key), sent as `Authorization: Bearer KEY`.
    #[serde(default)]
    pub stream_keys: BTreeMap<String, String>,
    /// Or: the environment variable holding the secret for HMAC-signed keys.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// Signed keys expiring further ahead than this are refused (a leaked key must not
    /// be good for years).
    #[serde(default = "default_hmac_max_lifetime_secs")]
    pub hmac_max_lifetime_secs: u64,
    /// A STUN server for the decode child's ICE (`stun://host:port`), when the worker
    /// sits behind NAT. Without one, the answer offers the host's own addresses.
    #[serde(default)]
    pub stun_server: Option<String>,
    /// Contact publishers' candidates on private addresses (RFC 1918, CGNAT, IPv6 ULA).
    /// Off by default: a publisher on the internet must not make the worker probe its
    /// own network. On for a LAN deployment (and the tests' network namespace).
    #[serde(default)]
    pub private_candidates: bool,
    /// Connections one address may hold open at once (a few hosts opening silent
    /// sockets must not lock every publisher out). Behind a TLS proxy every connection
    /// comes from the proxy: raise this to cover its connection pool.
    #[serde(default = "default_whip_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Web origins whose pages may publish from a browser (`https://studio.example`),
    /// or `["*"]` for any. Empty (the default): no CORS headers, so only pages served
    /// from the endpoint's own origin can publish.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

fn default_whip_connections_per_ip() -> usize {
    vigil_http::HttpLimits::default().max_connections_per_ip
}

/// Current time for key expiry checks.
pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The checks every key table gets, whichever protocol it admits.
fn validate_keys(
    e: &mut Vec<String>,
    prefix: &str,
    stream_keys: &BTreeMap<String, String>,
    hmac_secret_env: &Option<String>,
) {
    match (hmac_secret_env, stream_keys.is_empty()) {
        (Some(_), false) => e.push(format!("{prefix}: set stream_keys or hmac_secret_env, not both")),
        (None, true) => e.push(format!("{prefix}: no stream_keys and no hmac_secret_env: nobody could publish")),
        (Some(var), true) if std::env::var(var).map_or(true, |v| v.len() < 16) => {
            e.push(format!("{prefix}.hmac_secret_env: ${var} is unset or shorter than 16 bytes"))
        }
        _ => {}
    }
    for (name, key) in stream_keys {
        if key.len() < 8 {
            e.push(format!("{prefix}.stream_keys.{name}: a key needs at least 8 characters"));
        }
    }
}

fn validate_lifetime(e: &mut Vec<String>, prefix: &str, secs: u64) {
    if !(60..=31 * 24 * 3600).contains(&secs) {
        e.push(format!("{prefix}.hmac_max_lifetime_secs: {secs} is outside 60..=2678400 (one minute to 31 days)"));
    }
}

/// The key checker a key table describes (reads the HMAC secret from the environment).
fn key_checker(
    section: &str,
    stream_keys: &BTreeMap<String, String>,
    hmac_secret_env: &Option<String>,
    max_lifetime_secs: u64,
) -> Result<keys::StreamKeys, String> {
    match hmac_secret_env {
        Some(var) => std::env::var(var)
            .map(|s| keys::StreamKeys::signed(s.into_bytes(), max_lifetime_secs))
            .map_err(|_| format!("${var} ({section}.hmac_secret_env) is not set")),
        None => Ok(keys::StreamKeys::fixed(stream_keys.clone())),
    }
}

fn default_hmac_max_lifetime_secs() -> u64 {
    24 * 3600
}

fn default_app() -> String {
    "live".into()
}
fn default_idle_timeout_secs() -> u64 {
    30
}

/// `[[ingest.pull]]`: a source this worker pulls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullSource {
    /// Stable name of the stream (its stream id).
    pub name: String,
    pub uri: String,
    #[serde(default)]
    pub account_id: Option<String>,
}

const PULL_SCHEMES: [&str; 7] = ["file", "rtmp", "rtmps", "rtsp", "srt", "http", "https"];

impl IngestConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if let Some(r) = &self.rtmp {
            if r.listen.parse::<std::net::SocketAddr>().is_err() {
                e.push(format!("{prefix}.rtmp.listen: {:?} is not an address:port", r.listen));
            }
            if r.app.is_empty() || r.app.contains('/') {
                e.push(format!("{prefix}.rtmp.app: {:?} must be one non-empty path segment", r.app));
            }
            validate_keys(&mut e, &format!("{prefix}.rtmp"), &r.stream_keys, &r.hmac_secret_env);
            validate_lifetime(&mut e, &format!("{prefix}.rtmp"), r.hmac_max_lifetime_secs);
            if r.idle_timeout_secs == 0 {
                e.push(format!("{prefix}.rtmp.idle_timeout_secs: must be at least 1"));
            }
            if !(1..=120).contains(&r.publish_deadline_secs) {
                e.push(format!("{prefix}.rtmp.publish_deadline_secs: {} is outside 1..=120", r.publish_deadline_secs));
            }
            if r.max_connections_per_ip == 0 {
                e.push(format!("{prefix}.rtmp.max_connections_per_ip: must be at least 1"));
            }
            if r.max_pending_connections == 0 {
                e.push(format!("{prefix}.rtmp.max_pending_connections: must be at least 1"));
            }
        }
        if let Some(w) = &self.whip {
            if w.listen.parse::<std::net::SocketAddr>().is_err() {
                e.push(format!("{prefix}.whip.listen: {:?} is not an address:port", w.listen));
            }
            if let Some(r) = &self.rtmp
                && r.listen == w.listen
            {
                e.push(format!("{prefix}.whip.listen: {:?} is also the RTMP address", w.listen));
            }
            validate_keys(&mut e, &format!("{prefix}.whip"), &w.stream_keys, &w.hmac_secret_env);
            validate_lifetime(&mut e, &format!("{prefix}.whip"), w.hmac_max_lifetime_secs);
            if let Some(stun) = &w.stun_server
                && !stun.strip_prefix("stun://").is_some_and(|h| h.contains(':') && !h.contains('/'))
            {
                e.push(format!("{prefix}.whip.stun_server: {stun:?} is not stun://host:port"));
            }
            for (i, origin) in w.cors_allowed_origins.iter().enumerate() {
                if let Err(why) = whip::check_origin(origin, w.cors_allowed_origins.len()) {
                    e.push(format!("{prefix}.whip.cors_allowed_origins[{i}]: {origin:?} {why}"));
                }
            }
            let most = vigil_http::HttpLimits::default().max_connections;
            if !(1..=most).contains(&w.max_connections_per_ip) {
                e.push(format!(
                    "{prefix}.whip.max_connections_per_ip: {} is outside 1..={most} (the listener's whole cap)",
                    w.max_connections_per_ip
                ));
            }
        }
        if let Some(path) = &self.revoked_keys_file
            && let Err(why) = revoked::Revoked::load(path)
        {
            e.push(format!("{prefix}.revoked_keys_file: {why}"));
        }
        if !(1..=3600).contains(&self.revoked_keys_poll_secs) {
            e.push(format!("{prefix}.revoked_keys_poll_secs: {} is outside 1..=3600", self.revoked_keys_poll_secs));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.pull.iter().enumerate() {
            let scheme = p.uri.split_once("://").map(|(s, _)| s);
            if !scheme.is_some_and(|s| PULL_SCHEMES.contains(&s)) {
                e.push(format!(
                    "{prefix}.pull[{i}].uri: {:?} is not one of {}:// URLs",
                    vigil_core::redact::uri(&p.uri),
                    PULL_SCHEMES.join("://, ")
                ));
            }
            if p.name.is_empty() || !names.insert(&p.name) {
                e.push(format!("{prefix}.pull[{i}].name: {:?} is empty or used twice", p.name));
            }
        }
        e
    }
}

impl IngestConfig {
    /// The revocation list in force, watched for changes (empty when none is configured).
    pub fn revoked_keys(&self) -> Result<revoked::Revoked, String> {
        let Some(path) = &self.revoked_keys_file else { return Ok(revoked::Revoked::default()) };
        let list = revoked::Revoked::load(path).map_err(|e| format!("ingest.revoked_keys_file: {e}"))?;
        list.watch(path.clone(), std::time::Duration::from_secs(self.revoked_keys_poll_secs.max(1)));
        Ok(list)
    }
}

impl RtmpConfig {
    /// The key checker this config describes (reads the HMAC secret from the environment).
    pub fn keys(&self) -> Result<keys::StreamKeys, String> {
        key_checker("ingest.rtmp", &self.stream_keys, &self.hmac_secret_env, self.hmac_max_lifetime_secs)
    }
}

impl WhipConfig {
    /// The key checker this config describes (reads the HMAC secret from the environment).
    pub fn keys(&self) -> Result<keys::StreamKeys, String> {
        key_checker("ingest.whip", &self.stream_keys, &self.hmac_secret_env, self.hmac_max_lifetime_secs)
    }
}
