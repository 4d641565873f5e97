//! The consume → act → commit loop. A command whose call fails transiently waits in
//! `pending` with its partition paused, so the other partitions keep flowing; when it is
//! finally cut or dead-lettered, its offset is committed and the partition resumes
//! right after it.

use super::adapters::Adapter;
use super::error::{DeadLetterReason, Disposition};
use super::publish::{
    ACTION_SCHEMA, ACTION_SCHEMA_VERSION, ActionRecord, Outcome, PublishError, Publisher, now_unix_ms,
};
use super::{ActuateConfig, ActuateStats, RetryConfig, Seen, events, parse};
use crate::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vigil_core::InterruptCommand;

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("adapter: {0}")]
    Adapter(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("[actuate] dead_letter_topic and actions_topic must differ from the interrupts topic {0}")]
    SameTopic(String),
    /// Nothing is committed past a command that could not be dead-lettered.
    #[error("cannot dead-letter, stopping so the command is read again: {0}")]
    DeadLetter(#[from] PublishError),
}

/// A command waiting for its next attempt.
struct Pending {
    msg: OwnedMessage,
    cmd: InterruptCommand,
    attempts: u32,
    no_publisher: u32,
    first_failure: Option<Instant>,
    next_at: Instant,
    /// The partition has been read ahead up to here for a withdrawal (a retry looks only
    /// at what came since).
    checked_to: i64,
}

struct Actuator {
    adapter: Adapter,
    publisher: Publisher,
    consumer: BaseConsumer,
    retry: RetryConfig,
    stats: ActuateStats,
    seen: Seen,
    /// At most one per partition (the partition is paused meanwhile).
    pending: BTreeMap<i32, Pending>,
    /// Only commands a worker or the console signed are acted on.
    verifier: vigil_trust::Verifier,
    /// Commands the console withdrew (read before the command, or looked ahead for).
    withdrawn: Seen,
    lookahead: Lookahead,
}

/// Reads ahead in a command's partition for its withdrawal before the command is carried
/// out: an actuator catching up (or retrying) must not cut a stream a reviewer judged
/// benign since. Its own consumer, and a fresh verifier per look (a verifier refuses a
/// record it has seen before, and looks overlap), so the main loop still reads (and
/// checks) every record once.
struct Lookahead {
    consumer: BaseConsumer,
    trust: vigil_trust::config::Trust,
    topic: String,
}

/// How long a look-ahead may take before the command is carried out anyway.
const LOOKAHEAD_BUDGET: Duration = Duration::from_secs(5);

impl Lookahead {
    /// Whether a withdrawal of `command_id`, signed by the console, lies in `partition`
    /// from offset `from` on; and the partition's end, up to which it has now looked.
    /// Errors say why the partition could not be read ahead.
    fn withdrawn_after(&self, partition: i32, from: i64, command_id: &str) -> Result<(bool, i64), String> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        if high <= from {
            return Ok((false, from));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(from)).map_err(|e| e.to_string())?;
        self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let found = self.read_to(partition, from, high, command_id);
        // Assigned only while looking: an idle assignment would keep fetching.
        let _ = self.consumer.unassign();
        found
    }

    fn read_to(&self, partition: i32, from: i64, high: i64, command_id: &str) -> Result<(bool, i64), String> {
        let deadline = Instant::now() + LOOKAHEAD_BUDGET;
        let verifier = self.trust.verifier(vigil_trust::TopicKind::Interrupts);
        let mut last_error = None;
        while Instant::now() < deadline {
            let m = match self.consumer.poll(Duration::from_millis(100)) {
                None => continue,
                // A transient error (a broker coming back): read on until the deadline.
                Some(Err(e)) => {
                    last_error = Some(e.to_string());
                    continue;
                }
                Some(Ok(m)) => m,
            };
            if m.partition() != partition || m.offset() < from {
                continue;
            }
            let by_console = verifier.check(&m).is_ok_and(|v| v.role.is_none_or(|r| r == vigil_trust::Role::Console));
            let withdrawal = m.payload().and_then(super::read_withdrawal);
            if by_console && withdrawal.is_some_and(|w| w.command_id == command_id) {
                return Ok((true, high));
            }
            if m.offset() + 1 >= high {
                return Ok((false, high));
            }
        }
        let why = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
        Err(format!("partition {partition} not read to offset {high} within {LOOKAHEAD_BUDGET:?}{why}"))
    }
}

/// Consumes `kafka.interrupts_topic` until `stop` says so (checked between messages),
/// or for `max_runtime` when given.
pub fn run(
    kafka: &KafkaConfig,
    cfg: &ActuateConfig,
    max_runtime: Option<Duration>,
    stop: &dyn Fn(&ActuateStats) -> bool,
    trust: &vigil_trust::config::Trust,
) -> Result<ActuateStats, ActuateError> {
    if [&cfg.dead_letter_topic, &cfg.actions_topic].contains(&&kafka.interrupts_topic) {
        return Err(ActuateError::SameTopic(kafka.interrupts_topic.clone()));
    }
    let adapter = Adapter::new(&cfg.adapter).map_err(ActuateError::Adapter)?;
    let actions = cfg.publish_actions.then_some(cfg.actions_topic.as_str());
    let publisher = Publisher::new(kafka, &cfg.dead_letter_topic, actions, trust.clone())?;
    let consumer: BaseConsumer = kafka
        .consumer_config(&cfg.group_id)
        .map_err(ActuateError::Kafka)?
        .create()
        .map_err(|e| ActuateError::Kafka(format!("consumer: {e}")))?;
    consumer.subscribe(&[&kafka.interrupts_topic]).map_err(|e| ActuateError::Kafka(format!("subscribe: {e}")))?;
    let lookahead = Lookahead {
        consumer: kafka
            .consumer_config(&format!("{}-lookahead", cfg.group_id))
            .map_err(ActuateError::Kafka)?
            // A look-ahead holds up the loop: fetch what is there, do not wait for more.
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| ActuateError::Kafka(format!("look-ahead consumer: {e}")))?,
        trust: trust.clone(),
        topic: kafka.interrupts_topic.clone(),
    };
    let mut a = Actuator {
        adapter,
        publisher,
        consumer,
        retry: cfg.retry.clone(),
        stats: ActuateStats::default(),
        seen: Seen::new(),
        pending: BTreeMap::new(),
        verifier: trust.verifier(vigil_trust::TopicKind::Interrupts),
        withdrawn: Seen::new(),
        lookahead,
    };
    let started = Instant::now();
    while !stop(&a.stats) && max_runtime.is_none_or(|m| started.elapsed() < m) {
        a.retry_due()?;
        let msg = match a.consumer.poll(a.poll_wait()) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!("kafka: {e}");
                continue;
            }
            Some(Ok(m)) => m.detach(),
        };
        // Fetched before its partition was paused: read again after the pending one.
        if a.pending.contains_key(&msg.partition()) {
            continue;
        }
        a.handle(msg)?;
    }
    a.publisher.flush();
    Ok(a.stats)
}

impl Actuator {
    fn poll_wait(&self) -> Duration {
        let idle = Duration::from_millis(200);
        let next = self.pending.values().map(|p| p.next_at).min();
        next.map_or(idle, |at| at.saturating_duration_since(Instant::now()).min(idle))
    }

    fn handle(&mut self, msg: OwnedMessage) -> Result<(), ActuateError> {
        let verified = match self.verifier.check(&msg) {
            Ok(v) => v,
            Err(why) => {
                // Nobody Vigil trusts wrote it: set aside, never acted on.
                self.stats.untrusted += 1;
                self.dead_letter(&msg, None, DeadLetterReason::Untrusted, &why.to_string(), 0)?;
                return self.finish(&msg, false);
            }
        };
        if let Some(w) = msg.payload().and_then(super::read_withdrawal) {
            if verified.role.is_some_and(|r| r != vigil_trust::Role::Console) {
                self.stats.untrusted += 1;
                let why = "only the console withdraws a command";
                self.dead_letter(&msg, None, DeadLetterReason::Untrusted, why, 0)?;
                return self.finish(&msg, false);
            }
            tracing::info!(command = %w.command_id, by = w.withdrawn_by, "interrupt withdrawn: {}", w.reason);
            self.withdrawn.insert(&w.command_id);
            self.stats.withdrawals += 1;
            return self.finish(&msg, false);
        }
        match parse(msg.payload()) {
            Err(why) => {
                self.stats.malformed += 1;
                self.dead_letter(&msg, None, DeadLetterReason::Malformed, &why.to_string(), 0)?;
                self.finish(&msg, false)?;
            }
            Ok(cmd) if self.seen.contains(&cmd.command_id) => {
                self.stats.duplicates += 1;
                tracing::info!(command = %cmd.command_id, "already handled, skipped");
                self.finish(&msg, false)?;
            }
            Ok(cmd) => {
                let p = Pending {
                    msg,
                    cmd,
                    attempts: 0,
                    no_publisher: 0,
                    first_failure: None,
                    next_at: Instant::now(),
                    checked_to: 0,
                };
                self.attempt(p, false)?;
            }
        }
        Ok(())
    }

    fn retry_due(&mut self) -> Result<(), ActuateError> {
        let now = Instant::now();
        let due: Vec<i32> = self.pending.iter().filter(|(_, p)| p.next_at <= now).map(|(k, _)| *k).collect();
        for partition in due {
            if let Some(p) = self.pending.remove(&partition) {
                self.attempt(p, true)?;
            }
        }
        Ok(())
    }

    /// Whether the console withdrew `p`'s command: read already, or further on in its
    /// partition (an actuator behind, or retrying with its partition paused).
    fn withdrawn(&self, p: &mut Pending) -> bool {
        if self.withdrawn.contains(&p.cmd.command_id) {
            return true;
        }
        let from = p.checked_to.max(p.msg.offset() + 1);
        match self.lookahead.withdrawn_after(p.msg.partition(), from, &p.cmd.command_id) {
            Ok((w, looked_to)) => {
                p.checked_to = looked_to;
                w
            }
            Err(e) => {
                // Not knowing is no reason to leave a stream uncut.
                tracing::warn!(command = %p.cmd.command_id, "cannot look ahead for a withdrawal, acting on the command: {e}");
                false
            }
        }
    }

    /// Calls the platform once; then the command is cut, dead-lettered, or pending again.
    fn attempt(&mut self, mut p: Pending, paused: bool) -> Result<(), ActuateError> {
        let (id, stream) = (p.cmd.command_id.clone(), p.cmd.stream_id.0.clone());
        if self.withdrawn(&mut p) {
            events::withdrawn(&id, &stream);
            self.stats.withdrawn += 1;
            self.seen.insert(&id);
            self.outcome(&p, Outcome::Withdrawn, None, "withdrawn by the console: judged a false positive");
            return self.finish(&p.msg, paused);
        }
        p.attempts += 1;
        let e = match self.adapter.interrupt(&p.cmd) {
            Ok(detail) => {
                events::cut(&id, &stream, &detail);
                self.stats.acted += 1;
                self.seen.insert(&id);
                self.outcome(&p, Outcome::Cut, None, &detail);
                self.finish(&p.msg, paused)?;
                return Ok(());
            }
            Err(e) => e,
        };
        let now = Instant::now();
        let first = *p.first_failure.get_or_insert(now);
        let next = match e.disposition() {
            Disposition::DeadLetter(r) => Err(r),
            Disposition::RetryBriefly => {
                p.no_publisher += 1;
                if p.no_publisher >= self.retry.no_publisher_attempts {
                    Err(DeadLetterReason::NoPublisher)
                } else {
                    Ok(self.retry.backoff(p.no_publisher, None))
                }
            }
            Disposition::Retry { hint } => {
                let d = self.retry.backoff(p.attempts, hint);
                if now + d - first > Duration::from_secs(self.retry.budget_secs) {
                    Err(DeadLetterReason::RetriesExhausted)
                } else {
                    Ok(d)
                }
            }
        };
        match next {
            Err(reason) => {
                self.dead_letter(&p.msg, Some(&p.cmd), reason, &e.to_string(), p.attempts)?;
                self.outcome(&p, Outcome::DeadLettered, Some(reason.as_str()), &e.to_string());
                self.finish(&p.msg, paused)?;
            }
            Ok(delay) => {
                self.stats.failed += 1;
                events::attempt_failed(&id, &stream, p.attempts, delay, &e);
                self.outcome(&p, Outcome::Failed, Some(e.kind()), &e.to_string());
                p.next_at = now + delay;
                if !paused {
                    self.pause(&p.msg);
                }
                self.pending.insert(p.msg.partition(), p);
            }
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        msg: &OwnedMessage,
        cmd: Option<&InterruptCommand>,
        reason: DeadLetterReason,
        detail: &str,
        attempts: u32,
    ) -> Result<(), ActuateError> {
        self.publisher.dead_letter(msg, reason, detail, attempts)?;
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        events::dead_lettered(cmd.map(|c| c.command_id.as_str()), &source, reason, detail);
        self.stats.dead_lettered += 1;
        *self.stats.dead_letter_reasons.entry(reason.as_str()).or_default() += 1;
        if let Some(c) = cmd {
            self.seen.insert(&c.command_id);
        }
        Ok(())
    }

    fn outcome(&self, p: &Pending, outcome: Outcome, reason: Option<&str>, detail: &str) {
        self.publisher.action(&ActionRecord {
            schema: ACTION_SCHEMA,
            schema_version: ACTION_SCHEMA_VERSION,
            command_id: &p.cmd.command_id,
            stream_id: &p.cmd.stream_id.0,
            outcome,
            reason,
            detail,
            attempts: p.attempts,
            at_unix_ms: now_unix_ms(),
        });
    }

    fn partition_list(msg: &OwnedMessage, offset: Option<i64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        match offset {
            Some(o) => {
                // Only fails for an invalid offset, and o is a real one plus one.
                let _ = tpl.add_partition_offset(msg.topic(), msg.partition(), Offset::Offset(o));
            }
            None => {
                tpl.add_partition(msg.topic(), msg.partition());
            }
        }
        tpl
    }

    fn pause(&self, msg: &OwnedMessage) {
        if let Err(e) = self.consumer.pause(&Self::partition_list(msg, None)) {
            // Still correct: what arrives from this partition is skipped and read again.
            tracing::warn!(partition = msg.partition(), "cannot pause the partition: {e}");
        }
    }

    /// Commits past `msg`; if its partition was paused for it, reads on right after it.
    fn finish(&self, msg: &OwnedMessage, paused: bool) -> Result<(), ActuateError> {
        let next = msg.offset() + 1;
        if let Err(e) = self.consumer.commit(&Self::partition_list(msg, Some(next)), CommitMode::Sync) {
            tracing::warn!("commit failed (the message may be seen again): {e}");
        }
        if !paused {
            return Ok(());
        }
        // After a rebalance the partition may be someone else's: they start from the commit.
        let ours = self.consumer.assignment().is_ok_and(|a| a.find_partition(msg.topic(), msg.partition()).is_some());
        if !ours {
            return Ok(());
        }
        // Messages skipped while paused lie between here and the fetch position: without
        // the seek they would be lost, so a failed seek stops the actuator (it starts again
        // from the commit).
        self.consumer
            .seek(msg.topic(), msg.partition(), Offset::Offset(next), Duration::from_secs(5))
            .map_err(|e| ActuateError::Kafka(format!("seek past the finished command: {e}")))?;
        self.consumer
            .resume(&Self::partition_list(msg, None))
            .map_err(|e| ActuateError::Kafka(format!("resume partition {}: {e}", msg.partition())))
    }
}
