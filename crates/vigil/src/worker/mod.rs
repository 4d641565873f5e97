//! `vigil run`: the worker. Streams come in (RTMP and WHIP publishes, pulled URLs), each decodes
//! in its own confined child process, frames go through hashing, the cross-stream
//! inference batcher and fusion, and alerts leave through the sinks. An admin HTTP
//! server reports health, readiness, metrics and streams. SIGTERM drains: no new
//! streams, every sampled frame analysed, Kafka flushed, then exit.
//!
//! - [`streams`]: admission, per-stream supervisor + analysis thread, adaptive sampling.
//! - [`delivery`]: the single writer to stdout and Kafka.
//! - [`admin`]: the admin HTTP server and signal handling.

mod admin;
mod delivery;
mod streams;

use crate::config::VigilConfig;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use vigil_core::{AlertContext, ModelRef};
use vigil_hash::{BankState, BankStore};
use vigil_media::ingest::rtmp::RtmpServer;
use vigil_media::ingest::whip::WhipServer;
use vigil_media::isolate::{ChildSource, Launcher};

/// `[admin]`: the worker's admin HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics`, `/streams` (port 0: any free port).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: default_admin_listen() }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9600".into()
}

impl AdminConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        match self.listen.parse::<std::net::SocketAddr>() {
            Ok(_) => Vec::new(),
            Err(_) => vec![format!("{prefix}.listen: {:?} is not an address:port", self.listen)],
        }
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Pull this URL (or file) as a stream, in addition to `[[ingest.pull]]`; repeatable.
    #[arg(long)]
    pull: Vec<String>,
    /// Exit once every stream has ended (for batch jobs and tests; needs no RTMP server).
    #[arg(long)]
    exit_when_idle: bool,
    /// This worker's id on alerts (default: the host name).
    #[arg(long, env = "VIGIL_WORKER_ID")]
    worker_id: Option<String>,
}

pub fn run(config: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = VigilConfig::load(config)?;
    let launcher = Launcher::current_exe().context("locating the vigil executable for decode children")?;

    let (store, bad_lines) = BankStore::open_with_state(&cfg.hash.banks, &cfg.hash.state_dir);
    for bad in &bad_lines {
        tracing::warn!("bank line skipped: {bad}");
    }
    for st in store.status() {
        if st.state != BankState::Ok {
            tracing::warn!(bank = %st.name, "bank not ready: {:?} {}", st.state, st.detail.unwrap_or_default());
        }
    }
    let store = Arc::new(store);
    let _watch = store.watch(Duration::from_secs(cfg.hash.reload_poll_secs.max(1)));
    let policy = cfg.fusion.load_policy().map_err(|e| anyhow::anyhow!("fusion policy: {}", e.join("; ")))?;

    let registry = prometheus::Registry::new();
    vigil_media::metrics::register(&registry)?;
    vigil_hash::metrics::register(&registry)?;
    vigil_infer::metrics::register(&registry)?;
    vigil_sink::metrics::register(&registry)?;
    let shutdown = Arc::new(AtomicBool::new(false));

    // Models load and run once (warm-up) before anything is accepted. A model that
    // cannot load leaves the worker up but not ready, the reason on /readyz, so the
    // platform sees why instead of a crash loop.
    let loaded = vigil_infer::Analyzer::load(&cfg.infer)
        .map(|a| a.models())
        .and_then(|models| vigil_infer::Batcher::start(&cfg.infer).map(|b| (models, Arc::new(b))));
    let (models, batcher) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let reason = format!("models: {e}");
            tracing::error!("not ready: {reason}");
            let state = admin::AdminState {
                streams: None,
                not_ready: Some(reason),
                banks: store,
                registry,
                shutdown: shutdown.clone(),
            };
            let addr = admin::start(&cfg.admin.listen, Arc::new(state)).context("admin server")?;
            let mut out = vigil_sink::JsonlSink::new(std::io::stdout());
            out.write(
                &serde_json::json!({"type": "worker", "event": "listening", "admin": addr.to_string(), "ready": false}),
            )?;
            while !shutdown.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
            }
            out.write(&serde_json::json!({"type": "worker", "event": "stopped"}))?;
            return Ok(ExitCode::from(2));
        }
    };
    let kafka = cfg.sink.kafka.clone().map(vigil_sink::KafkaSink::open).transpose().context("kafka sink")?;
    let (sink_tx, sink_thread) = delivery::start(kafka)?;

    let context = AlertContext {
        worker_id: args.worker_id.clone().unwrap_or_else(crate::output::host_name),
        account_id: None,
        session_id: None,
        models: models.iter().map(|m| ModelRef { name: m.name.clone(), version: m.version.clone() }).collect(),
    };
    let streams = streams::Streams::new(streams::Deps {
        media: cfg.media.clone(),
        hash: cfg.hash.clone(),
        banks: store.clone(),
        policy: Arc::new(policy),
        batcher: batcher.clone(),
        sink: sink_tx.clone(),
        context,
        launcher,
    });

    let admin_state = Arc::new(admin::AdminState {
        streams: Some(streams.clone()),
        not_ready: None,
        banks: store.clone(),
        registry,
        shutdown: shutdown.clone(),
    });
    let admin_addr = admin::start(&cfg.admin.listen, admin_state).context("admin server")?;

    let mut rtmp = match &cfg.ingest.rtmp {
        Some(r) => {
            let keys = r.keys().map_err(anyhow::Error::msg)?;
            let admission = Arc::new(streams::RtmpAdmission(streams.clone()));
            Some(RtmpServer::start(r, keys, &cfg.media, admission).with_context(|| format!("rtmp on {}", r.listen))?)
        }
        None => None,
    };
    let mut whip = match &cfg.ingest.whip {
        Some(w) => {
            let keys = w.keys().map_err(anyhow::Error::msg)?;
            let admission =
                Arc::new(streams::WhipAdmission { streams: streams.clone(), stun_server: w.stun_server.clone() });
            Some(WhipServer::start(w, keys, admission).with_context(|| format!("whip on {}", w.listen))?)
        }
        None => None,
    };
    let _ = sink_tx.send(delivery::SinkMsg::Line(serde_json::json!({
        "type": "worker",
        "event": "listening",
        "admin": admin_addr.to_string(),
        "rtmp": rtmp.as_ref().map(|r| r.local_addr.to_string()),
        "whip": whip.as_ref().map(|w| format!("http://{}/whip", w.local_addr)),
        "ready": true,
    })));

    let mut pulls: Vec<(String, String, Option<String>)> =
        cfg.ingest.pull.iter().map(|p| (p.name.clone(), p.uri.clone(), p.account_id.clone())).collect();
    for input in &args.pull {
        let uri = vigil_media::to_uri(input).with_context(|| format!("--pull {input}"))?;
        pulls.push((input.clone(), uri, None));
    }
    for (name, uri, account) in pulls {
        if let Err(e) = streams.start(&name, ChildSource::Uri(uri.clone()), uri, account) {
            tracing::error!(stream = %name, "not started: {e}");
        }
    }

    while !shutdown.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let idle = streams.len() == 0 && streams.started_total.load(Relaxed) > 0;
        if args.exit_when_idle && rtmp.is_none() && whip.is_none() && idle {
            break;
        }
    }
    if let Some(r) = rtmp.as_mut() {
        r.stop();
    }
    if let Some(w) = whip.as_mut() {
        w.stop();
    }
    streams.drain();
    let _ = sink_tx.send(delivery::SinkMsg::Last(serde_json::json!({"type": "worker", "event": "stopped"})));
    drop(streams);
    drop(sink_tx);
    let _ = sink_thread.join();
    Ok(ExitCode::SUCCESS)
}
