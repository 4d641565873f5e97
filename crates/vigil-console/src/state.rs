//! What every part of a running console shares.

use crate::config::ConsoleConfig;
use crate::metrics::METRICS;
use crate::model::{UnixMs, now_ms};
use crate::store::Store;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// Routes each record's delivery report back to the send that waits for it: a send is
/// done only when the broker confirmed it (an authorisation, size or topic failure is
/// reported here, not by `send`).
pub struct Confirming;

impl rdkafka::ClientContext for Confirming {}

impl rdkafka::producer::ProducerContext for Confirming {
    type DeliveryOpaque = Box<std::sync::mpsc::SyncSender<Result<(), String>>>;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.try_send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// Where the console sends commands and allowlist entries.
pub struct Outbound {
    pub producer: std::sync::Arc<rdkafka::producer::BaseProducer<Confirming>>,
    pub interrupts_topic: String,
    pub bank_updates_topic: String,
    /// Signs every record the console writes (its `console` key).
    pub trust: vigil_trust::config::Trust,
}

pub struct Shared {
    pub cfg: ConsoleConfig,
    pub store: Store,
    /// `None` without `[sink.kafka]`: the console then serves what its store holds.
    pub outbound: Option<Outbound>,
    pub paging: crate::paging::ResolvedPaging,
    pub registry: prometheus::Registry,
    pub stop: AtomicBool,
    /// Password sign-in's throttle and its bounded argon2 queue.
    pub sign_in: crate::web::throttle::SignIn,
    broker_up: AtomicBool,
    /// Since when the broker has not answered (0: it answers).
    broker_down_since: AtomicI64,
    store_up: AtomicBool,
}

impl Shared {
    pub fn new(
        cfg: ConsoleConfig,
        store: Store,
        outbound: Option<Outbound>,
        paging: crate::paging::ResolvedPaging,
        registry: prometheus::Registry,
    ) -> Shared {
        let has_kafka = outbound.is_some();
        METRICS.store_up.set(1);
        METRICS.broker_up.set(has_kafka as i64);
        Shared {
            cfg,
            store,
            outbound,
            paging,
            registry,
            stop: AtomicBool::new(false),
            sign_in: Default::default(),
            broker_up: AtomicBool::new(has_kafka),
            broker_down_since: AtomicI64::new(if has_kafka { 0 } else { now_ms() }),
            store_up: AtomicBool::new(true),
        }
    }

    pub fn set_broker_up(&self, up: bool) {
        METRICS.broker_up.set(up as i64);
        if self.broker_up.swap(up, Relaxed) != up {
            if up {
                tracing::info!("the Kafka cluster answers again");
                self.broker_down_since.store(0, Relaxed);
            } else {
                tracing::error!("the Kafka cluster does not answer: the queue is stale until it does");
                self.broker_down_since.store(now_ms(), Relaxed);
            }
        }
    }

    /// When the data went stale (the broker stopped answering), if it is.
    pub fn stale_since(&self) -> Option<UnixMs> {
        let since = self.broker_down_since.load(Relaxed);
        (!self.broker_up.load(Relaxed)).then_some(since)
    }

    pub fn set_store_up(&self, up: bool) {
        METRICS.store_up.set(up as i64);
        if self.store_up.swap(up, Relaxed) != up {
            if up {
                tracing::info!("the store answers again");
            } else {
                tracing::error!("the store does not answer: not ready");
            }
        }
    }

    pub fn store_up(&self) -> bool {
        self.store_up.load(Relaxed)
    }
}
