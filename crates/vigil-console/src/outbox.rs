//! The outbox's delivery loop: pages due now go out (each channel's own format, in
//! [`crate::paging`]); a failure is kept with its error and tried again after a
//! backoff, so a page is never lost, across restarts included. Allowlist entries that
//! could not reach the bank-updates topic are sent again from here too.

use crate::model::{PageAction, now_ms};
use crate::paging::Delivery;
use crate::state::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub async fn run(shared: Arc<Shared>) {
    let mut last_allow_retry = 0;
    let mut last_withdraw_retry = 0;
    while !shared.stop.load(Relaxed) {
        if let Err(e) = deliver_due(&shared).await {
            tracing::error!("outbox: {e}");
        }
        let now = now_ms();
        if now - last_allow_retry >= 5_000 && shared.outbound.is_some() {
            last_allow_retry = now;
            match shared.store.unpublished_allow_entries().await {
                Ok(entries) => {
                    // The action that made it publishes it at once: a retry waits a
                    // little, so two replicas rarely send it twice (twice is harmless).
                    for e in entries.into_iter().filter(|e| now - e.created_ms >= 10_000) {
                        // Only an entry whose incident was resolved as a false positive
                        // goes out (the resolution may have failed after the entry was kept).
                        let resolved_fp = match shared.store.incident(&e.incident_id).await {
                            Ok(Some(d)) => d.incident.resolution == Some(crate::model::Resolution::FalsePositive),
                            _ => false,
                        };
                        if !resolved_fp {
                            continue;
                        }
                        if let Err(err) = crate::actions::publish_allow_entry(&shared, &e).await {
                            tracing::warn!(entry = e.id, "allowlist entry not published yet: {err}");
                        }
                    }
                }
                Err(e) => tracing::error!("outbox: allowlist entries: {e}"),
            }
        }
        if now - last_withdraw_retry >= 5_000 && shared.outbound.is_some() {
            last_withdraw_retry = now;
            withdraw_after_false_positives(&shared, now).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Incidents judged false positives in the last day whose commands are not all withdrawn
/// (a withdrawal that could not be sent, a command that came in since): withdrawn now.
async fn withdraw_after_false_positives(shared: &Shared, now: i64) {
    let ids = match shared.store.false_positives_since(now - 86_400_000).await {
        Ok(ids) => ids,
        Err(e) => return tracing::error!("outbox: false positives to withdraw: {e}"),
    };
    for id in ids {
        let Ok(Some(d)) = shared.store.incident(&id).await else { continue };
        if crate::actions::pending_commands(&d).is_empty() {
            continue;
        }
        if let Err(e) = crate::actions::withdraw_pending(shared, &d, "console", "judged a false positive").await {
            tracing::warn!(incident = id, "a pending command not withdrawn yet: {e}");
        }
    }
}

async fn deliver_due(shared: &Shared) -> Result<(), crate::store::StoreError> {
    for item in shared.store.due_pages(now_ms(), 20).await? {
        // An acknowledge or resolve never overtakes its trigger (PagerDuty ignores a
        // resolve for an alert it has not seen, then opens one nobody closes).
        if item.action != PageAction::Trigger {
            let trigger = match crate::paging::PageKind::of(&item) {
                crate::paging::PageKind::QueueAge => format!(
                    "{}{}/{}",
                    crate::paging::QUEUE_AGE_ID_PREFIX,
                    item.subject.incident_id,
                    item.channel.as_str()
                ),
                crate::paging::PageKind::Incident => {
                    format!("{}/trigger/{}", item.subject.incident_id, item.channel.as_str())
                }
            };
            if shared.store.page_state(&trigger).await? == Some(false) {
                // Later, not now, so that waiting items never fill the due window and
                // starve other incidents' and channels' pages.
                let later = now_ms() + 5_000;
                shared
                    .store
                    .page_failed(&item.id, item.attempts, later, "waiting for its trigger to be delivered")
                    .await?;
                continue;
            }
        }
        // Another replica may be sending it: whoever moves its next attempt wins.
        let now = now_ms();
        if !shared.store.claim_page(&item.id, now, now + 60_000).await? {
            continue;
        }
        match crate::paging::deliver_one(&shared.paging, &item).await {
            Delivery::Delivered => shared.store.page_delivered(&item.id, now_ms()).await?,
            Delivery::Retry { next_attempt_ms, error } => {
                tracing::warn!(
                    page = item.id,
                    attempts = item.attempts + 1,
                    "page not delivered, retried later: {error}"
                );
                shared.store.page_failed(&item.id, item.attempts + 1, next_attempt_ms, &error.to_string()).await?;
            }
        }
    }
    Ok(())
}
