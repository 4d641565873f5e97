//! Paging's events: each one logs and counts in one call.
//!
//! Metrics (labels from fixed sets: `channel` is `pagerduty`, `webhook` or `slack`):
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `vigil_console_pages_total` | counter | `channel`, `result` | Delivery attempts by outcome: `delivered`; `retry` (429, 408, 5xx, transport failure: tried again with backoff); `refused` (any other answer, or the channel no longer configured: kept, tried again every `retry.max_ms`). Alert on any increase of `refused`. |
//! | `vigil_console_page_delivery_seconds` | histogram | `channel` | Duration of each HTTP attempt, from the request to the answer or the failure (a timeout lands at `timeout_secs`) |
//!
//! Every series exists from [`register`] on, at zero.

use super::DeliveryError;
use crate::model::{Channel, OutboxItem};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::sync::LazyLock;
use std::time::Duration;

/// The `result` label of `vigil_console_pages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageResult {
    Delivered,
    Retry,
    Refused,
}

impl PageResult {
    pub const ALL: [PageResult; 3] = [PageResult::Delivered, PageResult::Retry, PageResult::Refused];
    pub fn as_str(self) -> &'static str {
        match self {
            PageResult::Delivered => "delivered",
            PageResult::Retry => "retry",
            PageResult::Refused => "refused",
        }
    }
}

pub struct PagingMetrics {
    pub pages: IntCounterVec,
    pub delivery_seconds: HistogramVec,
}

pub static METRICS: LazyLock<PagingMetrics> = LazyLock::new(|| {
    let pages = IntCounterVec::new(
        Opts::new("vigil_console_pages_total", "Page delivery attempts, by channel and result"),
        &["channel", "result"],
    )
    .expect("valid metric");
    let delivery_seconds = HistogramVec::new(
        HistogramOpts::new("vigil_console_page_delivery_seconds", "Duration of each page delivery attempt, by channel")
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        &["channel"],
    )
    .expect("valid metric");
    for c in Channel::ALL {
        let _ = delivery_seconds.with_label_values(&[c.as_str()]);
        for r in PageResult::ALL {
            let _ = pages.with_label_values(&[c.as_str(), r.as_str()]);
        }
    }
    PagingMetrics { pages, delivery_seconds }
});

pub fn register(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(METRICS.pages.clone()))?;
    registry.register(Box::new(METRICS.delivery_seconds.clone()))
}

fn count(item: &OutboxItem, result: PageResult, elapsed: Option<Duration>) {
    METRICS.pages.with_label_values(&[item.channel.as_str(), result.as_str()]).inc();
    if let Some(e) = elapsed {
        METRICS.delivery_seconds.with_label_values(&[item.channel.as_str()]).observe(e.as_secs_f64());
    }
}

pub fn delivered(item: &OutboxItem, status: u16, elapsed: Duration) {
    count(item, PageResult::Delivered, Some(elapsed));
    tracing::info!(
        page = item.id.as_str(),
        channel = item.channel.as_str(),
        attempt = item.attempts + 1,
        status,
        elapsed_ms = elapsed.as_millis() as u64,
        "page delivered"
    );
}

pub fn retry(item: &OutboxItem, retry_in: Duration, e: &DeliveryError, elapsed: Option<Duration>) {
    count(item, PageResult::Retry, elapsed);
    tracing::warn!(
        page = item.id.as_str(),
        channel = item.channel.as_str(),
        attempt = item.attempts + 1,
        retry_in_ms = retry_in.as_millis() as u64,
        kind = e.kind(),
        "page not delivered, will retry: {e}"
    );
}

pub fn refused(item: &OutboxItem, retry_in: Duration, e: &DeliveryError, elapsed: Option<Duration>) {
    count(item, PageResult::Refused, elapsed);
    tracing::error!(
        page = item.id.as_str(),
        channel = item.channel.as_str(),
        attempt = item.attempts + 1,
        retry_in_ms = retry_in.as_millis() as u64,
        kind = e.kind(),
        "page refused, kept in the outbox and tried again at the longest backoff: {e}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start() {
        let registry = Registry::new();
        register(&registry).unwrap();
        let families = registry.gather();
        let pages = families.iter().find(|f| f.name() == "vigil_console_pages_total").unwrap();
        assert_eq!(pages.get_metric().len(), Channel::ALL.len() * PageResult::ALL.len());
        let seconds = families.iter().find(|f| f.name() == "vigil_console_page_delivery_seconds").unwrap();
        assert_eq!(seconds.get_metric().len(), Channel::ALL.len());
    }
}
