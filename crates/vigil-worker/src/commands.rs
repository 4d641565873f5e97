//! Interrupt commands from Kafka, read by every worker: a publisher connected to this
//! worker's own listeners (pushed RTMP, WHIP) can be cut by nobody else, so each worker
//! reads every command (in a consumer group of its own process) and cuts the ones it
//! holds. The cut
//! is reported like the worker's own (a `stream cut` line and a signed `vigil.action`
//! record with outcome `cut`, which the console shows). A pulled stream is cut at its
//! origin by `vigil actuate`; the worker leaves it running until the origin ends it.
//!
//! Only commands a worker or the console signed, recently, are believed (the
//! interrupts topic's writers in `vigil-trust`); the rest are counted and ignored.

use crate::delivery::{SinkMsg, lifecycle_line};
use crate::streams::{CutHere, Streams};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Largest command read; anything bigger is refused unread.
const MAX_COMMAND_BYTES: usize = 16 << 10;

/// What became of an interrupt command read from Kafka
/// (`vigil_worker_commands_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// Its publisher was connected here: cut.
    Cut,
    /// Its stream is pulled here: cut at the origin by the actuator, not here.
    Pulled,
    /// Its stream is not on this worker (or is already ending here).
    NotHere,
    /// Its stream is live here in another session than the command's (a publisher who
    /// came back): not cut.
    OtherSession,
    /// Not a command a worker or the console signed recently.
    Untrusted,
    /// Not a readable `vigil.interrupt` record.
    Malformed,
    /// A console's withdrawal of a command (a false positive): nothing to cut.
    Withdrawal,
}

impl CommandResult {
    pub const ALL: [CommandResult; 7] = [
        CommandResult::Cut,
        CommandResult::Pulled,
        CommandResult::NotHere,
        CommandResult::OtherSession,
        CommandResult::Untrusted,
        CommandResult::Malformed,
        CommandResult::Withdrawal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandResult::Cut => "cut",
            CommandResult::Pulled => "pulled",
            CommandResult::NotHere => "not_here",
            CommandResult::OtherSession => "other_session",
            CommandResult::Untrusted => "untrusted",
            CommandResult::Malformed => "malformed",
            CommandResult::Withdrawal => "withdrawal",
        }
    }
}

pub static COMMANDS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    let v = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_worker_commands_total",
            "Interrupt commands read from Kafka, by result: cut (its publisher was connected here), pulled (cut at the origin by the actuator), not_here, other_session (a publisher who came back is not cut for an earlier session), untrusted, malformed, withdrawal (the console took a command back)",
        ),
        &["result"],
    )
    .expect("valid metric");
    for r in CommandResult::ALL {
        let _ = v.with_label_values(&[r.as_str()]);
    }
    v
});

fn counted(result: CommandResult) {
    COMMANDS.with_label_values(&[result.as_str()]).inc();
}

/// The reader's thread; stopped and joined when dropped.
pub struct CommandReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommandReader {
    pub fn start(
        kafka: &vigil_sink::KafkaConfig,
        worker_id: &str,
        streams: Arc<Streams>,
        sink: SyncSender<SinkMsg>,
        trust: &vigil_trust::config::Trust,
    ) -> anyhow::Result<CommandReader> {
        // A consumer group of this process alone: every worker must see every command
        // (two on one host included). It reads the topic from its start and acts only on
        // what was written since this process started (its publishers all connected
        // after that; an older command's stream was judged long ago), so nothing issued
        // while the group formed is skipped. Nothing is committed.
        let group = format!("vigil-cut-{worker_id}-{}", std::process::id());
        let mut client = kafka.consumer_config(&group).map_err(anyhow::Error::msg)?;
        client.set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = client.create()?;
        consumer.subscribe(&[&kafka.interrupts_topic])?;
        // Less the clock skew allowed between Vigil's parts: a console a little behind
        // this worker's clock writes commands dated before the worker started.
        let since_ms = crate::output::unix_ms() as i64 - trust.max_clock_skew_ms() as i64;
        let verifier = trust.verifier(vigil_trust::TopicKind::Interrupts);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("vigil-commands".into()).spawn(move || {
            let mut assigned = false;
            while !s.load(Relaxed) {
                if !assigned && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    assigned = true;
                    tracing::info!("commands: reading interrupt commands (publishers connected here are cut)");
                }
                match consumer.poll(Duration::from_millis(200)) {
                    // Written before this process started: history, not for it.
                    Some(Ok(m)) if m.timestamp().to_millis().is_some_and(|t| t < since_ms) => {}
                    Some(Ok(m)) => {
                        let result = match verifier.check(&m) {
                            Err(_) => CommandResult::Untrusted,
                            Ok(_) => act(m.payload(), &streams, &sink),
                        };
                        counted(result);
                    }
                    Some(Err(e)) => tracing::warn!("commands: consumer error: {e}"),
                    None => {}
                }
            }
        })?;
        Ok(CommandReader { stop, thread: Some(thread) })
    }
}

impl Drop for CommandReader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Cuts the command's stream when its publisher is connected here.
fn act(payload: Option<&[u8]>, streams: &Streams, sink: &SyncSender<SinkMsg>) -> CommandResult {
    let payload = payload.filter(|p| p.len() <= MAX_COMMAND_BYTES);
    if payload.and_then(vigil_sink::actuate::read_withdrawal).is_some() {
        return CommandResult::Withdrawal;
    }
    let Some(cmd) = payload.and_then(|p| serde_json::from_slice::<vigil_core::InterruptCommand>(p).ok()) else {
        return CommandResult::Malformed;
    };
    let stream = cmd.stream_id.0.as_str();
    let reason = format!("cut by command {}", cmd.command_id);
    match streams.cut_direct(stream, cmd.session_id.as_deref(), &reason) {
        CutHere::Cut => {
            tracing::warn!(stream, command = cmd.command_id, "cutting the publisher for a command from Kafka");
            let line = lifecycle_line(stream, "cut", Some(&cmd.command_id), Some("interrupted by a command"));
            let _ = sink.send(SinkMsg::Cut { stream: stream.to_string(), command_id: cmd.command_id, line });
            CommandResult::Cut
        }
        CutHere::Pulled => {
            tracing::info!(stream, command = cmd.command_id, "a command for a stream pulled here: its origin cuts it");
            let _ = sink.send(SinkMsg::Seen { stream: stream.to_string(), command_id: cmd.command_id });
            CommandResult::Pulled
        }
        CutHere::OtherSession => {
            tracing::info!(stream, command = cmd.command_id, "a command about an earlier session: not cut");
            CommandResult::OtherSession
        }
        CutHere::NotHere => CommandResult::NotHere,
    }
}
