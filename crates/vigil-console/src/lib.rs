//! The on-call side of Vigil (`vigil console`): what turns an alert into a decision.
//!
//! - [`intake`]: consumes the alerts, interrupt-command and action-outcome topics as a
//!   consumer group, at least once, deduplicated by message id, into the store.
//! - [`store`]: one data layer over SQLite (the embedded default, one instance) and
//!   PostgreSQL (several replicas), with versioned migrations and a hash-chained audit log.
//! - [`paging`]: PagerDuty Events API v2, a signed generic webhook and Slack, through a
//!   durable outbox ([`outbox`]) with retries; [`queue_age`] pages on the age of the
//!   oldest unacknowledged incident.
//! - [`web`]: the queue, the incident page and its [`actions`], accounts and sessions.
//!
//! The console stores no pixels and never asks for any: hashes, scores, times.

pub mod actions;
pub mod config;
pub mod intake;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod paging;
pub mod queue_age;
pub mod state;
pub mod store;
pub mod web;

pub use config::ConsoleConfig;

use anyhow::Context;
use state::{Outbound, Shared};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Opens the store the config names (creating the SQLite file's folder), retrying for
/// up to `patience` while it does not answer (a database still starting).
pub async fn open_store(cfg: &ConsoleConfig, patience: Duration) -> anyhow::Result<store::Store> {
    let url = cfg.store_url().map_err(anyhow::Error::msg)?;
    if cfg.store_url_env.is_none() {
        std::fs::create_dir_all(&cfg.state_dir)
            .with_context(|| format!("creating the console's state folder {}", cfg.state_dir.display()))?;
    }
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match store::Store::open(&url).await {
            Ok(s) => return Ok(s),
            Err(e @ (store::StoreError::Migrate(_) | store::StoreError::SchemaTooNew { .. })) => return Err(e.into()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e).context("opening the console's store"),
            Err(e) => {
                tracing::warn!("the store does not answer yet, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The HTTP accept loop: `(listener, app, shutdown)`. The caller brings it, so the
/// console runs behind the same hardened loop as the worker's listeners (header-read
/// deadline, connection caps; `vigil_media::ingest::http::serve`) without this stage
/// depending on the media stage. Handlers need axum's `ConnectInfo<SocketAddr>`.
pub type Server = Box<dyn FnOnce(tokio::net::TcpListener, axum::Router, BoxFuture) -> BoxFuture + Send>;

/// `vigil console`: serves until SIGTERM or Ctrl-C, then stops intake (committing what
/// the store took) and the delivery loops.
pub fn run(cfg: ConsoleConfig, kafka: Option<vigil_sink::KafkaConfig>, server: Server) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(serve(cfg, kafka, server))
}

async fn serve(cfg: ConsoleConfig, kafka: Option<vigil_sink::KafkaConfig>, server: Server) -> anyhow::Result<()> {
    let paging = cfg.paging.resolve_secrets().map_err(|e| anyhow::anyhow!("console.paging: {}", e.join("; ")))?;
    let store = open_store(&cfg, Duration::from_secs(60)).await?;
    tracing::info!(backend = store.backend(), version = store.schema_version().await?, "store open");
    let registry = prometheus::Registry::new();
    metrics::register(&registry)?;
    paging::register(&registry)?;
    let (outbound, consumer) = match &kafka {
        Some(k) => {
            let mut pc = k.consumer_config("unused").map_err(anyhow::Error::msg)?;
            for key in ["group.id", "enable.auto.commit", "auto.offset.reset", "session.timeout.ms"] {
                pc.remove(key);
            }
            let producer: rdkafka::producer::BaseProducer<state::Confirming> =
                pc.set("linger.ms", "0").create_with_context(state::Confirming)?;
            let mut cc = k.consumer_config(&cfg.group_id).map_err(anyhow::Error::msg)?;
            cc.set("enable.auto.offset.store", "false").set("partition.assignment.strategy", "cooperative-sticky");
            let consumer: rdkafka::consumer::BaseConsumer = cc.create()?;
            use rdkafka::consumer::Consumer;
            consumer.subscribe(&[&k.alerts_topic, &k.interrupts_topic, &cfg.actions_topic])?;
            let out = Outbound {
                producer: Arc::new(producer),
                interrupts_topic: k.interrupts_topic.clone(),
                bank_updates_topic: cfg.bank_updates_topic.clone(),
            };
            let topics = intake::Topics {
                alerts: k.alerts_topic.clone(),
                interrupts: k.interrupts_topic.clone(),
                actions: cfg.actions_topic.clone(),
            };
            (Some(out), Some((consumer, topics)))
        }
        None => {
            tracing::warn!("no [sink.kafka]: the console serves what its store holds; nothing new arrives");
            (None, None)
        }
    };
    let listen = cfg.listen.clone();
    let shared = Arc::new(Shared::new(cfg, store, outbound, paging, registry));
    let intake = match consumer {
        Some((consumer, topics)) => {
            let (s, handle) = (shared.clone(), tokio::runtime::Handle::current());
            let thread = std::thread::Builder::new()
                .name("vigil-console-intake".into())
                .spawn(move || intake::run(s, consumer, topics, handle))
                .context("starting the intake thread")?;
            Some(thread)
        }
        None => None,
    };
    let outbox = tokio::spawn(outbox::run(shared.clone()));
    let queue_age = tokio::spawn(queue_age::run(shared.clone()));

    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("console.listen {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, public_url = shared.cfg.public_url, "console listening");
    server(listener, web::router(shared.clone()), Box::pin(shutdown_signal())).await;

    tracing::info!("stopping: intake commits what the store took");
    shared.stop.store(true, Relaxed);
    if let Some(t) = intake {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = outbox.await;
        let _ = queue_age.await;
    })
    .await;
    tracing::info!("console stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
