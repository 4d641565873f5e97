//! How a platform is told to cut a stream.
//! - `nginx_rtmp`: nginx-rtmp's control endpoint, `GET {control_url}/drop/publisher?app=APP&name=NAME`,
//!   with APP and NAME from the stream id (see [`super::target`]: `rtmp/APP/NAME`, or a
//!   pulled stream named `APP/NAME`; `whip/` streams are not on nginx). nginx answers the
//!   number of publishers it dropped: 0 is a failure, not a cut. The reference platform
//!   of the end-to-end tests;
//! - `webhook`: `POST` the command as JSON to a URL, with an optional bearer token.

use super::error::ActError;
use super::target::StreamTarget;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vigil_core::InterruptCommand;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdapterConfig {
    NginxRtmp {
        /// e.g. `http://127.0.0.1:8080/control`.
        control_url: String,
    },
    Webhook {
        url: String,
        /// Name of an environment variable holding a bearer token.
        #[serde(default)]
        token_env: Option<String>,
        /// Allow an `http://` URL. Off by default: the command names the stream and the
        /// request carries the bearer token, so it belongs on TLS (a sidecar or a
        /// loopback proxy is the exception that sets this).
        #[serde(default)]
        allow_plain_http: bool,
    },
}

impl AdapterConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let url = match self {
            AdapterConfig::NginxRtmp { control_url } => control_url,
            AdapterConfig::Webhook { url, .. } => url,
        };
        if let AdapterConfig::Webhook { url, allow_plain_http: false, .. } = self
            && url.starts_with("http://")
        {
            return vec![format!(
                "{prefix}: the webhook \"{url}\" is plain http: use https://, or set allow_plain_http = true"
            )];
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            Vec::new()
        } else {
            vec![format!("{prefix}: \"{url}\" is not an http(s) URL")]
        }
    }
}

pub struct Adapter {
    config: AdapterConfig,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Adapter {
    pub fn new(config: &AdapterConfig) -> Result<Adapter, String> {
        let token = match config {
            AdapterConfig::Webhook { token_env: Some(var), .. } => {
                Some(std::env::var(var).map_err(|_| format!("environment variable {var} (token_env) is not set"))?)
            }
            _ => None,
        };
        // No redirects: ureq would turn a redirected POST into a GET; a 3xx is a bad answer.
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).redirects(0).build();
        Ok(Adapter { config: config.clone(), agent, token })
    }

    /// Tells the platform; returns what it answered, or why it did not take the command.
    pub fn interrupt(&self, cmd: &InterruptCommand) -> Result<String, ActError> {
        let id = &cmd.stream_id.0;
        let target = StreamTarget::parse(id).map_err(|why| ActError::StreamId { id: id.clone(), why })?;
        match &self.config {
            AdapterConfig::NginxRtmp { control_url } => {
                let (app, name) = match target.nginx_app_name() {
                    None => return Err(ActError::NotOnThisOrigin(id.clone())),
                    Some(r) => r.map_err(|why| ActError::StreamId { id: id.clone(), why })?,
                };
                let resp = self
                    .agent
                    .get(&format!("{}/drop/publisher", control_url.trim_end_matches('/')))
                    .query("app", app)
                    .query("name", name)
                    .call()
                    .map_err(from_ureq)?;
                ok_status(&resp)?;
                // nginx-rtmp answers with the number of clients it dropped; 0 means
                // nobody publishes that name (yet, or any more): not a cut.
                let body = read_body(resp)?;
                match body.trim().parse::<u64>() {
                    Ok(0) => Err(ActError::NoPublisher { app: app.into(), name: name.into() }),
                    Ok(n) => Ok(format!("nginx-rtmp dropped {n} publisher(s) of app {app} name {name}")),
                    Err(_) => Err(ActError::BadAnswer(body)),
                }
            }
            AdapterConfig::Webhook { url, .. } => {
                let mut req = self.agent.post(url);
                if let Some(t) = &self.token {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
                let resp = req.send_json(cmd).map_err(from_ureq)?;
                ok_status(&resp)?;
                Ok(format!("webhook answered {}", resp.status()))
            }
        }
    }
}

/// ureq answers 4xx/5xx as errors; everything else it cannot do is a transport failure,
/// worth retrying (refused, reset, timed out, DNS).
fn from_ureq(e: ureq::Error) -> ActError {
    match e {
        ureq::Error::Status(status, resp) => ActError::Status { status, retry_after: retry_after(&resp) },
        ureq::Error::Transport(t) => ActError::Unreachable(t.to_string()),
    }
}

/// A 1xx or a 3xx that ureq did not follow is not an answer to act on.
fn ok_status(resp: &ureq::Response) -> Result<(), ActError> {
    if (200..300).contains(&resp.status()) {
        Ok(())
    } else {
        Err(ActError::Status { status: resp.status(), retry_after: None })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored).
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("retry-after")?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The body, at most `MAX_BODY` bytes: a count is short, and a hostile answer must not
/// fill memory.
fn read_body(resp: ureq::Response) -> Result<String, ActError> {
    const MAX_BODY: u64 = 4096;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(resp.into_reader(), MAX_BODY), &mut body)
        .map_err(|e| ActError::Unreachable(format!("reading the answer: {e}")))?;
    Ok(body)
}
