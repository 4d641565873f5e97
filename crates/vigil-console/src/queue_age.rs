//! Queue-age paging: on-call is paged on how long the oldest unacknowledged incident
//! has waited, not on how many wait (a long queue of fresh incidents is being worked; one
//! incident nobody has looked at for ten minutes is not).
//!
//! The page is its own PagerDuty incident (`dedup_key` `queue-age/INCIDENT`, see
//! [`crate::paging`]), so it pages again even when the incident's own page was
//! acknowledged elsewhere; it is resolved when someone acknowledges or resolves that
//! incident in the console.

use crate::metrics::METRICS;
use crate::model::{PageAction, now_ms};
use crate::paging::{queue_age_exceeded, queue_age_items};
use crate::state::Shared;
use crate::store::StoreError;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One check: the age metric, and a page when the oldest waits too long.
pub async fn check(shared: &Shared) -> Result<(), StoreError> {
    let now = now_ms();
    let oldest = shared.store.oldest_unacknowledged().await?;
    let age_ms = oldest.as_ref().map_or(0, |(_, detected)| (now - detected).max(0));
    METRICS.oldest_unacknowledged.set(age_ms as f64 / 1000.0);
    METRICS.open_incidents.set(shared.store.queue(now).await?.len() as i64);
    METRICS.outbox_pending.set(shared.store.outbox_pending().await?);
    let Some((id, detected)) = oldest else { return Ok(()) };
    if !queue_age_exceeded(&shared.cfg.paging, detected, now) {
        return Ok(());
    }
    if let Some(s) = crate::actions::subject_of(shared, &id).await? {
        // Enqueueing the same page id again is a no-op: one page per incident.
        for item in queue_age_items(&shared.cfg.paging, &s, now) {
            shared.store.enqueue_page(&item, now).await?;
        }
    }
    Ok(())
}

/// Resolves the queue-age page of `id`, if one went out (ids
/// `queue-age/{id}/resolve/{channel}`).
pub async fn resolve(shared: &Shared, id: &str) -> Result<(), StoreError> {
    let now = now_ms();
    let Some(s) = crate::actions::subject_of(shared, id).await? else { return Ok(()) };
    for mut item in queue_age_items(&shared.cfg.paging, &s, now) {
        if shared.store.page_state(&item.id).await?.is_none() {
            continue;
        }
        item.id = format!("{}{}/resolve/{}", crate::paging::QUEUE_AGE_ID_PREFIX, id, item.channel.as_str());
        item.action = PageAction::Resolve;
        shared.store.enqueue_page(&item, now).await?;
    }
    Ok(())
}

/// Checks every few seconds until the console stops.
pub async fn run(shared: std::sync::Arc<Shared>) {
    while !shared.stop.load(Relaxed) {
        match check(&shared).await {
            Ok(()) => shared.set_store_up(true),
            Err(e) => {
                shared.set_store_up(false);
                tracing::error!("queue-age check: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
