//! The queue, searched: open incidents or the history, filtered, one page at a time.
//!
//! Keyset paging on (detection time, id), so a page holds still while incidents arrive
//! and every page costs the same however deep. Both backends take the same SQL: `$n`
//! placeholders, `LIKE … ESCAPE`, lower-cased on both sides (SQLite's LIKE ignores case
//! and PostgreSQL's does not).

use super::error::{StoreError, query};
use super::{QueueRow, Store};
use crate::model::{IncidentState, UnixMs};

/// What the queue shows. The default is the open queue, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// A stream id, account or incident id (any part of one), or a frame's PDQ hash (64
    /// hex digits: incidents whose samples carry it).
    pub text: Option<String>,
    /// `review` or `interrupt`.
    pub decision: Option<String>,
    /// One state (resolved: the history); `None` for every unresolved one.
    pub state: Option<IncidentState>,
    /// Every state at once (`state` is then ignored).
    pub any_state: bool,
    pub rule: Option<String>,
    /// A bank named in the incident's reasons.
    pub bank: Option<String>,
    pub worker: Option<String>,
    /// Detected in `[from_ms, to_ms)`.
    pub from_ms: Option<UnixMs>,
    pub to_ms: Option<UnixMs>,
    /// Newest first (the history) instead of oldest first (the queue).
    pub newest_first: bool,
    /// The page after this row: its detection time and id.
    pub after: Option<(UnixMs, String)>,
}

/// One page of the queue, and the key of the next one when there is more.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePage {
    pub rows: Vec<QueueRow>,
    pub next: Option<(UnixMs, String)>,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// `%text%` for LIKE, with LIKE's own characters escaped.
pub(super) fn contains(text: &str) -> String {
    let mut s = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('%');
    s
}

pub fn is_pdq_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Store {
    /// A page of at most `limit` incidents matching `f`.
    pub async fn search(&self, f: &QueueFilter, limit: i64, now_ms: UnixMs) -> Result<QueuePage, StoreError> {
        let mut conds: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let mut bind = |conds: &mut Vec<String>, sql: &str, value: Bind| {
            binds.push(value);
            conds.push(sql.replace("$?", &format!("${}", binds.len())));
        };
        match (f.any_state, f.state) {
            (true, _) => {}
            (false, Some(s)) => bind(&mut conds, "state = $?", Bind::Text(s.as_str().into())),
            (false, None) => conds.push("state <> 'resolved'".into()),
        }
        if let Some(t) = f.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            if is_pdq_hash(t) {
                bind(
                    &mut conds,
                    "EXISTS (SELECT 1 FROM alert_events a WHERE a.incident_id = incidents.id AND LOWER(a.body) LIKE $? ESCAPE '\\')",
                    Bind::Text(contains(t)),
                );
            } else {
                let like = contains(t);
                bind(
                    &mut conds,
                    "(LOWER(stream_id) LIKE $? ESCAPE '\\' OR LOWER(COALESCE(account_id, '')) LIKE $? ESCAPE '\\' OR LOWER(id) LIKE $? ESCAPE '\\')",
                    Bind::Text(like),
                );
            }
        }
        for (col, v) in [("decision", &f.decision), ("rule", &f.rule), ("worker_id", &f.worker)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                bind(&mut conds, &format!("{col} = $?"), Bind::Text(v.into()));
            }
        }
        if let Some(b) = f.bank.as_deref().filter(|b| !b.is_empty()) {
            bind(
                &mut conds,
                "EXISTS (SELECT 1 FROM alert_events a WHERE a.incident_id = incidents.id AND LOWER(a.body) LIKE $? ESCAPE '\\')",
                Bind::Text(contains(&format!("bank {b} id "))),
            );
        }
        if let Some(t) = f.from_ms {
            bind(&mut conds, "detected_ms >= $?", Bind::Int(t));
        }
        if let Some(t) = f.to_ms {
            bind(&mut conds, "detected_ms < $?", Bind::Int(t));
        }
        let (cmp, order) = if f.newest_first { ("<", "DESC") } else { (">", "ASC") };
        if let Some((at, id)) = &f.after {
            binds.push(Bind::Int(*at));
            let n = binds.len();
            binds.push(Bind::Text(id.clone()));
            conds.push(format!("(detected_ms {cmp} ${n} OR (detected_ms = ${n} AND id {cmp} ${}))", n + 1));
        }
        // The same placeholder may appear several times (the text search): bind each
        // occurrence's number once, as written.
        let sql = format!(
            "SELECT {} FROM incidents{} ORDER BY detected_ms {order}, id {order} LIMIT {}",
            super::incidents::QUEUE_COLUMNS,
            if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) },
            limit.clamp(1, 500) + 1
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await.map_err(query("incidents: search"))?;
        let mut rows: Vec<QueueRow> =
            rows.iter().map(|r| super::incidents::queue_row(r, now_ms)).collect::<Result<_, _>>()?;
        let limit = limit.clamp(1, 500) as usize;
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            rows.last().map(|r| (r.detected_ms, r.id.clone()))
        });
        Ok(QueuePage { rows, next: next.flatten() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_what_like_means() {
        assert_eq!(contains("Live/A"), "%live/a%");
        assert_eq!(contains("50%_off\\"), "%50\\%\\_off\\\\%");
        assert!(is_pdq_hash(&"ab".repeat(32)) && !is_pdq_hash("ab") && !is_pdq_hash(&"zz".repeat(32)));
    }
}
