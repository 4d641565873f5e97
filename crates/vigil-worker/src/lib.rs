//! The Vigil worker as a library (`vigil run` is a thin call into [`run`]). Streams come in (RTMP and WHIP publishes, pulled URLs), each decodes
//! in its own confined child process, frames go through hashing, the cross-stream
//! inference batcher and fusion, and alerts leave through the sinks. An admin HTTP
//! server reports health, readiness, metrics and streams. SIGTERM drains: no new
//! streams, every sampled frame analysed, Kafka flushed, then exit.
//!
//! - [`streams`]: admission, per-stream supervisor + analysis thread, adaptive sampling.
//! - [`delivery`]: the single writer to stdout and Kafka.
//! - [`admin`]: the admin HTTP server and signal handling.
//! - [`fleet`]: pulled streams shared across workers through a Kafka consumer group.
//! - [`allowlist`]: the console's reviewed false positives, applied to matching live.
//! - [`kube`]: the pod's deletion cost kept equal to its streams (emptiest goes first).
//! - [`analysis`]: the per-frame pipeline (hash, bank match, inference, fusion) shared
//!   with `vigil scan`; [`output`]: the JSON lines it writes; [`config`]: the whole
//!   `vigil.toml`, validated as one.

pub mod analysis;
pub mod config;
pub mod output;

mod admin;
mod allowlist;
mod auth;
mod capacity;
mod commands;
mod delivery;
pub mod fleet;
mod handover;
mod kube;
mod streams;

pub use allowlist::AllowlistConfig;
pub use fleet::FleetConfig;

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
    /// Address of the open routes `/healthz`, `/readyz`, `/metrics` (port 0: any free
    /// port), and of the token-protected ones too unless `control_listen` is set.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// A separate address for `/streams` and `POST /admin/*` (e.g. loopback only).
    #[serde(default)]
    pub control_listen: Option<String>,
    /// A file holding the admin bearer token (a Secret mount); else `token_env`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// The environment variable holding the admin bearer token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// A drain (SIGTERM, `POST /admin/drain`) finishes within this: hand-off, samples
    /// in flight, the sink's flush. Set the pod's termination grace period above it.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            control_listen: None,
            token_file: None,
            token_env: default_token_env(),
            drain_deadline_secs: default_drain_deadline(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9600".into()
}

fn default_token_env() -> String {
    "VIGIL_ADMIN_TOKEN".into()
}

fn default_drain_deadline() -> u64 {
    60
}

impl AdminConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let is_addr = |a: &str| a.parse::<std::net::SocketAddr>().is_ok();
        if !is_addr(&self.listen) {
            errors.push(format!("{prefix}.listen: {:?} is not an address:port", self.listen));
        }
        if let Some(c) = &self.control_listen {
            if !is_addr(c) {
                errors.push(format!("{prefix}.control_listen: {c:?} is not an address:port"));
            } else if *c == self.listen {
                errors.push(format!("{prefix}.control_listen: the same address as {prefix}.listen"));
            }
        }
        if self.token_env.is_empty() {
            errors.push(format!("{prefix}.token_env: must name an environment variable"));
        }
        if !(5..=3600).contains(&self.drain_deadline_secs) {
            errors.push(format!("{prefix}.drain_deadline_secs: {} is not within 5..=3600", self.drain_deadline_secs));
        }
        errors
    }

    /// The admin token, from `token_file` or `token_env`.
    pub fn token(&self) -> Result<auth::AdminToken, auth::TokenError> {
        auth::AdminToken::load(self.token_file.as_deref(), &self.token_env)
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

/// The worker holds decoded frames in memory: no core dump may write them to disk, and
/// no other process of the same uid (a decode child taken over by its stream) may read
/// them through `/proc/PID/mem` or ptrace.
fn protect_process() -> rustix::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
}

pub fn run(config: Option<&Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    protect_process().context("protecting the worker's memory (no core dumps, not dumpable)")?;
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
    let allow_rules = allowlist::RuleScopes::of(&policy);

    let registry = prometheus::Registry::new();
    vigil_media::metrics::register(&registry)?;
    vigil_hash::metrics::register(&registry)?;
    vigil_infer::metrics::register(&registry)?;
    vigil_sink::metrics::register(&registry)?;
    vigil_trust::metrics::register(
        &registry,
        &[
            vigil_trust::TopicKind::Owners,
            vigil_trust::TopicKind::Lifecycle,
            vigil_trust::TopicKind::BankUpdates,
            vigil_trust::TopicKind::Interrupts,
        ],
    )?;
    registry.register(Box::new(commands::COMMANDS.clone()))?;
    registry.register(Box::new(streams::SAMPLE_AGE.clone()))?;
    registry.register(Box::new(streams::SESSIONS_RENEWED.clone()))?;
    registry.register(Box::new(streams::ANALYSIS_PANICS.clone()))?;
    registry.register(Box::new(crate::output::REISSUED.clone()))?;
    registry.register(Box::new(streams::SAMPLES_DUE.clone()))?;
    registry.register(Box::new(streams::SAMPLES_ANALYSED.clone()))?;
    registry.register(Box::new(capacity::CAPACITY_STREAMS.clone()))?;
    registry.register(Box::new(capacity::INFERENCE_UTILIZATION.clone()))?;
    registry.register(Box::new(capacity::CAPACITY_HELD.clone()))?;
    registry.register(Box::new(streams::DECISIONS.clone()))?;
    registry.register(Box::new(crate::analysis::FUSION_CPU.clone()))?;
    registry.register(Box::new(streams::STREAMS_BY_MODE.clone()))?;
    registry.register(Box::new(streams::COVERAGE.clone()))?;
    registry.register(Box::new(capacity::CAPACITY_USED.clone()))?;
    fleet::register(&registry)?;
    handover::register(&registry)?;
    allowlist::register(&registry)?;
    kube::register(&registry)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let token = cfg.admin.token().context("admin token")?;

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
                token,
                sink_health: None,
                warnings: Vec::new(),
            };
            let addr = admin::start(&cfg.admin.listen, cfg.admin.control_listen.as_deref(), Arc::new(state))
                .context("admin server")?
                .open;
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
    // Every record written is signed; every record read is checked (see vigil-trust).
    // With Kafka a worker reads at least the interrupt commands (it cuts its own
    // publishers), and the fleet's and allowlist's topics when configured.
    let reads_kafka = cfg.sink.kafka.is_some();
    let trust = cfg.open_trust(vigil_trust::Role::Worker, cfg.sink.kafka.is_some(), reads_kafka).context("[trust]")?;
    let kafka = cfg
        .sink
        .kafka
        .clone()
        .map(|k| vigil_sink::KafkaSink::open(k, trust.signer().cloned()))
        .transpose()
        .context("kafka sink")?;
    let sink_health = kafka.as_ref().map(vigil_sink::KafkaSink::health);
    let worker_id = args.worker_id.clone().unwrap_or_else(crate::output::host_name);
    let (sink_tx, sink_thread) = delivery::start(kafka, &worker_id)?;

    let context = AlertContext {
        worker_id: worker_id.clone(),
        account_id: None,
        session_id: None,
        models: models.iter().map(|m| ModelRef { name: m.name.clone(), version: m.version.clone() }).collect(),
        origin: None,
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
        cut_direct_publishers: cfg.ingest.cut_direct_publishers,
        capacity: Arc::new(capacity::Capacity::new(batcher.load(), &cfg.infer, cfg.media.sample_fps)),
    });

    let admin_state = Arc::new(admin::AdminState {
        streams: Some(streams.clone()),
        not_ready: None,
        banks: store.clone(),
        registry,
        shutdown: shutdown.clone(),
        token,
        sink_health,
        warnings: trust.warning().into_iter().collect(),
    });
    let held = streams.clone();
    kube::start(move || held.len(), shutdown.clone()).context("pod-deletion-cost")?;
    let admin_addrs =
        admin::start(&cfg.admin.listen, cfg.admin.control_listen.as_deref(), admin_state).context("admin server")?;

    let revoked = cfg.ingest.revoked_keys().map_err(anyhow::Error::msg)?;
    let mut rtmp = match &cfg.ingest.rtmp {
        Some(r) => {
            let keys = r.keys().map_err(anyhow::Error::msg)?.revoking(revoked.clone());
            let admission = Arc::new(streams::RtmpAdmission(streams.clone()));
            Some(RtmpServer::start(r, keys, &cfg.media, admission).with_context(|| format!("rtmp on {}", r.listen))?)
        }
        None => None,
    };
    let mut whip = match &cfg.ingest.whip {
        Some(w) => {
            let keys = w.keys().map_err(anyhow::Error::msg)?.revoking(revoked.clone());
            let admission = Arc::new(streams::WhipAdmission {
                streams: streams.clone(),
                stun_server: w.stun_server.clone(),
                private_candidates: w.private_candidates,
            });
            Some(WhipServer::start(w, keys, admission).with_context(|| format!("whip on {}", w.listen))?)
        }
        None => None,
    };
    let _ = sink_tx.send(delivery::SinkMsg::Line(serde_json::json!({
        "type": "worker",
        "event": "listening",
        "admin": admin_addrs.open.to_string(),
        "admin_control": admin_addrs.control.map(|a| a.to_string()),
        "rtmp": rtmp.as_ref().map(|r| r.local_addr.to_string()),
        "whip": whip.as_ref().map(|w| format!("http://{}/whip", w.local_addr)),
        "ready": true,
    })));

    let mut pulls: Vec<(String, String, Option<String>)> =
        cfg.ingest.pull.iter().map(|p| (p.name.clone(), p.uri.clone(), p.account_id.clone())).collect();
    for input in &args.pull {
        let uri = vigil_media::to_uri(input).with_context(|| format!("--pull {}", vigil_core::redact::uri(input)))?;
        // The stream id goes on alerts and logs: never with the URL's credentials.
        pulls.push((vigil_core::redact::uri(input), uri, None));
    }
    // Pulls the worker cannot take now (at capacity) wait and are tried again; the
    // lifecycle record says so, so nothing is silently not watched.
    let mut deferred: Vec<(String, String, Option<String>)> = Vec::new();
    let mut announced = std::collections::HashSet::new();
    let mut start_pulls = |pulls: Vec<(String, String, Option<String>)>, deferred: &mut Vec<_>| {
        for (name, uri, account) in pulls {
            let shown = vigil_core::redact::uri(&uri);
            match streams.start(&name, ChildSource::Uri(uri.clone()), shown, account.clone()) {
                Ok(_) => {}
                Err(streams::StartError::AtCapacity(why)) => {
                    if announced.insert(name.clone()) {
                        tracing::warn!(stream = %name, "pull deferred: {why}");
                        let _ = sink_tx.send(delivery::SinkMsg::lifecycle(&name, "deferred", None, Some(&why)));
                    }
                    deferred.push((name, uri, account));
                }
                Err(e) => tracing::error!(stream = %name, "not started: {e}"),
            }
        }
    };
    start_pulls(pulls, &mut deferred);
    let _allowlist = match (&cfg.allowlist, &cfg.sink.kafka) {
        (Some(a), Some(k)) => Some(
            allowlist::AllowlistReader::start(a, k, &worker_id, store.clone(), &trust, allow_rules)
                .context("reading the console's allowlist")?,
        ),
        _ => None,
    };
    // Every interrupt command (the console's "Cut now" included) reaches the publishers
    // connected to this worker's own listeners.
    // Not with `cut_direct_publishers = false`: the platform makes every cut then.
    let commands = match cfg.sink.kafka.as_ref().filter(|_| cfg.ingest.cut_direct_publishers) {
        Some(k) => Some(
            commands::CommandReader::start(k, &worker_id, streams.clone(), sink_tx.clone(), &trust)
                .context("reading interrupt commands")?,
        ),
        None => None,
    };
    let fleet = match (&cfg.fleet, &cfg.sink.kafka) {
        (Some(f), Some(k)) => Some(
            fleet::Fleet::start(f, k, &worker_id, streams.clone(), &trust)
                .context("joining the fleet's consumer group")?,
        ),
        _ => None,
    };

    let mut ticks = 0u64;
    while !shutdown.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        ticks += 1;
        if ticks.is_multiple_of(5) {
            streams.measure_capacity();
        }
        if ticks.is_multiple_of(25) && !deferred.is_empty() {
            let waiting = std::mem::take(&mut deferred);
            let mut still = Vec::new();
            start_pulls(waiting, &mut still);
            deferred = still;
        }
        let idle = streams.len() == 0 && streams.started_total.load(Relaxed) > 0;
        if args.exit_when_idle && rtmp.is_none() && whip.is_none() && idle && deferred.is_empty() {
            break;
        }
    }
    drain(
        Drain { streams: &streams, fleet, commands, rtmp: rtmp.as_mut(), whip: whip.as_mut(), sink: &sink_tx },
        &cfg.admin,
    );
    drop(streams);
    drop(sink_tx);
    let flushing = std::time::Instant::now();
    let _ = sink_thread.join();
    tracing::info!("drain: sink flushed in {:?}", flushing.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// What a drain takes down, in order.
struct Drain<'a> {
    streams: &'a Arc<streams::Streams>,
    fleet: Option<fleet::Fleet>,
    /// Read until the publishers are closed (a Cut now still reaches them meanwhile).
    commands: Option<commands::CommandReader>,
    rtmp: Option<&'a mut RtmpServer>,
    whip: Option<&'a mut WhipServer>,
    sink: &'a std::sync::mpsc::SyncSender<delivery::SinkMsg>,
}

/// The graceful stop, in the order that loses no coverage: not ready and admitting
/// nothing; out of the fleet's group so that pulled streams move, run out their
/// hand-off; direct publishers closed with a reason (the platform re-publishes
/// elsewhere); samples in flight analysed; then the sink flushes (after this returns).
/// Each phase and its duration goes into the worker's `drained` lifecycle record.
fn drain(d: Drain<'_>, admin: &AdminConfig) {
    let deadline = std::time::Instant::now() + Duration::from_secs(admin.drain_deadline_secs);
    let mut phases = Vec::new();
    let mut since = std::time::Instant::now();
    let mut done = |phase: &str, since: &mut std::time::Instant| {
        phases.push(serde_json::json!({"phase": phase, "ms": since.elapsed().as_millis() as u64}));
        tracing::info!("drain: {phase} in {:?}", since.elapsed());
        *since = std::time::Instant::now();
    };
    d.streams.draining.store(true, Relaxed);
    admin::DRAINING.set(1);
    done("not_ready", &mut since);
    if let Some(f) = &d.fleet {
        f.leave_and_hand_off(deadline);
    }
    drop(d.fleet);
    done("left_group", &mut since);
    if let Some(r) = d.rtmp {
        r.stop();
    }
    if let Some(w) = d.whip {
        w.stop();
    }
    done("publishers_closed", &mut since);
    // Nobody left to cut (its clone of the sink goes with it).
    drop(d.commands);
    let unfinished = d.streams.drain_until(deadline);
    done("samples_analysed", &mut since);
    let _ = d.sink.send(delivery::SinkMsg::Last(
        serde_json::json!({
            "type": "worker",
            "event": "stopped",
            "drain": phases,
            "unfinished_streams": unfinished,
        }),
        deadline,
    ));
}
