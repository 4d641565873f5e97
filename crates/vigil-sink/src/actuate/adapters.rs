//! How a platform is told to cut a stream.
//! - `nginx_rtmp`: nginx-rtmp's control endpoint, `GET {control_url}/drop/publisher?app=APP&name=KEY`
//!   for a stream id `APP/KEY` (the reference platform in the end-to-end tests);
//! - `webhook`: `POST` the command as JSON to a URL, with an optional bearer token.

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
    },
}

impl AdapterConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let url = match self {
            AdapterConfig::NginxRtmp { control_url } => control_url,
            AdapterConfig::Webhook { url, .. } => url,
        };
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
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        Ok(Adapter { config: config.clone(), agent, token })
    }

    /// Tells the platform; returns what it answered.
    pub fn interrupt(&self, cmd: &InterruptCommand) -> Result<String, String> {
        match &self.config {
            AdapterConfig::NginxRtmp { control_url } => {
                let (app, name) = cmd
                    .stream_id
                    .0
                    .split_once('/')
                    .ok_or_else(|| format!("stream id {} is not APP/KEY", cmd.stream_id))?;
                let resp = self
                    .agent
                    .get(&format!("{}/drop/publisher", control_url.trim_end_matches('/')))
                    .query("app", app)
                    .query("name", name)
                    .call()
                    .map_err(|e| e.to_string())?;
                // nginx-rtmp answers with the number of clients it dropped.
                let body = resp.into_string().map_err(|e| e.to_string())?;
                Ok(format!("nginx-rtmp dropped {} publisher(s)", body.trim()))
            }
            AdapterConfig::Webhook { url, .. } => {
                let mut req = self.agent.post(url);
                if let Some(t) = &self.token {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
                let resp = req.send_json(cmd).map_err(|e| e.to_string())?;
                Ok(format!("webhook answered {}", resp.status()))
            }
        }
    }
}
