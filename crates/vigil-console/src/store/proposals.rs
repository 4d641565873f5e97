//! Four eyes on a false positive: a proposal waits here for a second reviewer.

use super::error::{StoreError, query};
use super::{FpProposal, RowExt, Store};

impl Store {
    /// Records the proposal; a conflict while another one waits for the incident.
    pub async fn propose_false_positive(&self, p: &FpProposal) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT incidents.id FROM incidents WHERE id = $1")
            .bind(&p.incident_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("incidents: find for a proposal"))?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("incident {}", p.incident_id)));
        }
        let added = sqlx::query(
            "INSERT INTO fp_proposals (incident_id, proposed_by, scope, note, expiry_days, proposed_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(&p.incident_id)
        .bind(&p.proposed_by)
        .bind(&p.scope)
        .bind(&p.note)
        .bind(p.expiry_days)
        .bind(p.proposed_ms)
        .execute(&mut *tx)
        .await
        .map_err(query("fp_proposals: insert"))?
        .rows_affected();
        if added == 0 {
            return Err(StoreError::Conflict(format!(
                "a false positive is already proposed for incident {}: approve or reject it",
                p.incident_id
            )));
        }
        tx.commit().await.map_err(query("fp_proposals: commit"))
    }

    /// The proposal waiting for the incident, if any.
    pub async fn false_positive_proposal(&self, incident_id: &str) -> Result<Option<FpProposal>, StoreError> {
        let row = sqlx::query(
            "SELECT incident_id, proposed_by, scope, note, expiry_days, proposed_ms FROM fp_proposals WHERE incident_id = $1",
        )
        .bind(incident_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("fp_proposals: read"))?;
        row.map(|r| {
            Ok(FpProposal {
                incident_id: r.text("incident_id")?,
                proposed_by: r.text("proposed_by")?,
                scope: r.text("scope")?,
                note: r.text("note")?,
                expiry_days: r.int("expiry_days")?,
                proposed_ms: r.int("proposed_ms")?,
            })
        })
        .transpose()
    }

    /// Assigns the incident to `to` (an enabled reviewer or admin), or hands it over
    /// from whoever had it; audited with both names. `to` empty: unassigned.
    pub async fn assign(
        &self,
        id: &str,
        to: &str,
        by: &str,
        now_ms: crate::model::UnixMs,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin().await?;
        if !to.is_empty() {
            let user = sqlx::query("SELECT role, disabled FROM users WHERE name = $1")
                .bind(to)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query("users: find the assignee"))?;
            let fit = match &user {
                Some(r) => {
                    r.int("disabled")? == 0
                        && crate::model::Role::parse(&r.text("role")?)
                            .is_some_and(|r| r >= crate::model::Role::Reviewer)
                }
                None => false,
            };
            if !fit {
                return Err(StoreError::Invalid(format!("{to} is not an enabled reviewer or admin")));
            }
        }
        let row = sqlx::query(&format!("SELECT assignee, state FROM incidents WHERE id = $1{}", self.for_update()))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("incidents: read the assignee"))?
            .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
        if row.text("state")? == "resolved" {
            return Err(StoreError::Conflict(format!("incident {id} is resolved")));
        }
        let from = row.opt_text("assignee")?;
        sqlx::query("UPDATE incidents SET assignee = $1 WHERE id = $2")
            .bind((!to.is_empty()).then_some(to))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query("incidents: assign"))?;
        let detail = serde_json::json!({ "from": from, "to": (!to.is_empty()).then_some(to) });
        super::audit::append(&mut tx, self.backend, &self.audit_key, by, "assign", id, &detail, now_ms).await?;
        tx.commit().await.map_err(query("incidents: commit the assignment"))?;
        Ok(from)
    }

    /// Incidents resolved as false positives since `since_ms`.
    pub async fn false_positives_since(&self, since_ms: crate::model::UnixMs) -> Result<Vec<String>, StoreError> {
        sqlx::query(
            "SELECT id FROM incidents WHERE resolution = 'false_positive' AND resolved_ms >= $1 ORDER BY resolved_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(query("incidents: recent false positives"))?
        .iter()
        .map(|r| r.text("id"))
        .collect()
    }

    /// Removes the incident's proposal (approved or rejected); whether there was one.
    pub async fn drop_false_positive_proposal(&self, incident_id: &str) -> Result<bool, StoreError> {
        let gone = sqlx::query("DELETE FROM fp_proposals WHERE incident_id = $1")
            .bind(incident_id)
            .execute(&self.pool)
            .await
            .map_err(query("fp_proposals: delete"))?
            .rows_affected();
        Ok(gone > 0)
    }
}
