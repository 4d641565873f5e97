//! The on-call side of Vigil (`vigil console`): what turns an alert into a decision.
//!
//! - [`intake`]: consumes the alerts, interrupt-command and action-outcome topics as a
//!   consumer group, at least once, deduplicated by message id, into the store.
//! - [`store`]: one data layer over SQLite (the embedded default, one instance) and
//!   PostgreSQL (several replicas), with versioned migrations and a hash-chained audit log.
//! - [`paging`]: PagerDuty Events API v2, a signed generic webhook and Slack, through a
//!   durable outbox with retries.
//! - [`web`]: the queue, the incident page and its actions, accounts and sessions.
//!
//! The console stores no pixels and never asks for any: hashes, scores, times.

pub mod model;
pub mod paging;
pub mod store;
