//! The durable paging outbox: a page is enqueued in the same breath as the event that
//! calls for it and survives restarts until a channel accepts it.

use super::error::{StoreError, query};
use super::{Applied, RowExt, Store};
use crate::model::{Channel, OutboxItem, PageAction, UnixMs};
use sqlx::any::AnyRow;

const OUTBOX_COLUMNS: &str = "id, channel, action, subject, attempts, next_attempt_ms, last_error";

fn item_from_row(row: &AnyRow) -> Result<OutboxItem, StoreError> {
    let id = row.text("id")?;
    let channel = row.text("channel")?;
    let action = row.text("action")?;
    let subject = row.text("subject")?;
    Ok(OutboxItem {
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("page {id}: channel {channel:?}")))?,
        action: PageAction::parse(&action)
            .ok_or_else(|| StoreError::Corrupt(format!("page {id}: action {action:?}")))?,
        subject: serde_json::from_str(&subject)
            .map_err(|e| StoreError::Corrupt(format!("page {id}: subject does not parse: {e}")))?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        next_attempt_ms: row.int("next_attempt_ms")?,
        last_error: row.opt_text("last_error")?,
        id,
    })
}

impl Store {
    /// Adds a page; an id already in the outbox (delivered or not) is left as it is.
    pub async fn enqueue_page(&self, item: &OutboxItem, now_ms: UnixMs) -> Result<Applied, StoreError> {
        if item.id.is_empty() {
            return Err(StoreError::Invalid("page: empty id".into()));
        }
        let subject =
            serde_json::to_string(&item.subject).map_err(|e| StoreError::Invalid(format!("page {}: {e}", item.id)))?;
        let fresh = sqlx::query(
            "INSERT INTO outbox (id, channel, action, subject, attempts, next_attempt_ms, last_error, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&item.id)
        .bind(item.channel.as_str())
        .bind(item.action.as_str())
        .bind(&subject)
        .bind(i64::from(item.attempts))
        .bind(item.next_attempt_ms)
        .bind(&item.last_error)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(query("outbox: enqueue"))?
        .rows_affected();
        Ok(if fresh == 0 { Applied::Duplicate } else { Applied::New })
    }

    /// Undelivered pages whose next attempt is due, oldest first, at most `limit`.
    pub async fn due_pages(&self, now_ms: UnixMs, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE delivered_ms IS NULL AND next_attempt_ms <= $1 \
             ORDER BY created_ms, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query("outbox: read due pages"))?
        .iter()
        .map(item_from_row)
        .collect()
    }

    /// Claims a due page for this replica by moving its next attempt to `lease_until_ms`:
    /// `true` when this caller won it (it is still undelivered and was due at `now`), so
    /// that two replicas do not both send it.
    pub async fn claim_page(&self, id: &str, now_ms: UnixMs, lease_until_ms: UnixMs) -> Result<bool, StoreError> {
        let won = sqlx::query(
            "UPDATE outbox SET next_attempt_ms = $1 WHERE id = $2 AND delivered_ms IS NULL AND next_attempt_ms <= $3",
        )
        .bind(lease_until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(query("outbox: claim"))?
        .rows_affected();
        Ok(won == 1)
    }

    /// The channel accepted the page.
    pub async fn page_delivered(&self, id: &str, now_ms: UnixMs) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET delivered_ms = $1, last_error = NULL WHERE id = $2 AND delivered_ms IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query("outbox: mark delivered"))?
        .rows_affected();
        if done == 0 {
            self.require_page(id).await?;
        }
        Ok(())
    }

    /// An attempt failed: record it and when to try again.
    pub async fn page_failed(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_ms: UnixMs,
        error: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3 WHERE id = $4 AND delivered_ms IS NULL",
        )
        .bind(i64::from(attempts))
        .bind(next_attempt_ms)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(query("outbox: record a failure"))?
        .rows_affected();
        if done == 0 {
            self.require_page(id).await?;
        }
        Ok(())
    }

    /// Whether page `id` is in the outbox: `None` when it never was, else whether it was
    /// delivered.
    pub async fn page_state(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query("SELECT delivered_ms FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("outbox: read a page"))?;
        row.map(|r| r.opt_int("delivered_ms").map(|d| d.is_some())).transpose()
    }

    /// Pages not yet delivered (due or waiting for a retry).
    pub async fn outbox_pending(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE delivered_ms IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(query("outbox: count pending"))?;
        row.int("n")
    }

    async fn require_page(&self, id: &str) -> Result<(), StoreError> {
        let row = sqlx::query("SELECT id FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("outbox: read"))?;
        row.map(|_| ()).ok_or_else(|| StoreError::NotFound(format!("page {id}")))
    }
}
