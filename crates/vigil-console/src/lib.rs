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

/// Opens the store the config names (creating the SQLite file's folder, 0700), retrying
/// for up to `patience` while it does not answer (a database still starting). The audit
/// key must be there ([`ConsoleConfig::audit_key`]): without it nothing starts.
pub async fn open_store(cfg: &ConsoleConfig, patience: Duration) -> anyhow::Result<store::Store> {
    let url = cfg.store_url().map_err(anyhow::Error::msg)?;
    let key = cfg.audit_key().map_err(anyhow::Error::msg)?;
    if cfg.store_url_env.is_none() {
        store::private_dir(&cfg.state_dir)
            .with_context(|| format!("creating the console's state folder {}", cfg.state_dir.display()))?;
    }
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match store::Store::open(&url, key.clone()).await {
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

/// Opens the store the config names only if it exists (for commands that read it, such
/// as `audit verify`): creates no file, folder or schema.
pub async fn open_existing_store(cfg: &ConsoleConfig) -> anyhow::Result<store::Store> {
    let url = cfg.store_url().map_err(anyhow::Error::msg)?;
    let missing = |what: String| {
        anyhow::anyhow!("{what}: name the console's config with --config (its [console] state_dir or store_url_env)")
    };
    let db = cfg.state_dir.join("console.db");
    if cfg.store_url_env.is_none() && !db.is_file() {
        return Err(missing(format!("there is no console store at {}", db.display())));
    }
    match store::Store::open_existing(&url, cfg.audit_key().map_err(anyhow::Error::msg)?).await {
        Ok(s) => Ok(s),
        Err(store::StoreError::Missing(what)) => Err(missing(what)),
        Err(e) => Err(e).context("opening the console's store"),
    }
}

/// `vigil console`: serves until SIGTERM or Ctrl-C, then stops intake (committing what
/// the store took) and the delivery loops.
pub fn run(
    cfg: ConsoleConfig,
    kafka: Option<vigil_sink::KafkaConfig>,
    trust: vigil_trust::config::Trust,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(serve(cfg, kafka, trust))
}

async fn serve(
    cfg: ConsoleConfig,
    kafka: Option<vigil_sink::KafkaConfig>,
    trust: vigil_trust::config::Trust,
) -> anyhow::Result<()> {
    let paging = cfg.paging.resolve_secrets().map_err(|e| anyhow::anyhow!("console.paging: {}", e.join("; ")))?;
    let store = open_store(&cfg, Duration::from_secs(60)).await?;
    tracing::info!(backend = store.backend(), version = store.schema_version().await?, "store open");
    let registry = prometheus::Registry::new();
    metrics::register(&registry)?;
    paging::register(&registry)?;
    use vigil_trust::TopicKind;
    vigil_trust::metrics::register(&registry, &[TopicKind::Alerts, TopicKind::Interrupts, TopicKind::Actions])?;
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
                trust: trust.clone(),
            };
            let topics = intake::Topics {
                alerts: k.alerts_topic.clone(),
                interrupts: k.interrupts_topic.clone(),
                actions: cfg.actions_topic.clone(),
                trust: trust.clone(),
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
    // The hardened accept loop every Vigil listener runs (header-read deadline,
    // connection caps); handlers read the peer through `ConnectInfo<SocketAddr>`.
    vigil_http::serve(listener, web::router(shared.clone()), vigil_http::HttpLimits::default(), shutdown_signal())
        .await;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_opens_without_the_audit_key_and_reading_commands_never_create_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ConsoleConfig {
            state_dir: dir.path().join("state/console"),
            audit_key_env: Some("VIGIL_TEST_UNSET_AUDIT_KEY".into()),
            ..Default::default()
        };
        let err = format!("{:#}", open_store(&cfg, Duration::ZERO).await.unwrap_err());
        assert!(err.contains("VIGIL_TEST_UNSET_AUDIT_KEY is not set"), "{err}");
        assert!(!cfg.state_dir.exists(), "no store without the key");

        let key = dir.path().join("audit.key");
        std::fs::write(&key, [b'k'; 32]).unwrap();
        cfg.audit_key_env = None;
        cfg.audit_key_file = Some(key);
        let err = format!("{:#}", open_existing_store(&cfg).await.unwrap_err());
        assert!(err.contains("there is no console store at") && err.contains("--config"), "{err}");
        assert!(!cfg.state_dir.exists(), "`audit verify` and the like create nothing");

        open_store(&cfg, Duration::ZERO).await.unwrap().close().await;
        let store = open_existing_store(&cfg).await.unwrap();
        assert_eq!(store.audit_verify().await.unwrap().entries, 0);
    }
}
