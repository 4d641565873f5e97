//! The worker's one writer: frame records, stream lifecycle lines, alerts and interrupt
//! commands, as JSON lines on stdout and (when configured) to Kafka through its spool.
//! Kafka first: a message is spooled before its line is written, so a broken stdout
//! never keeps it from Kafka.
//! A single thread, fed by a bounded channel, so no analysis thread ever waits on
//! Kafka or on another stream's output.

use crate::output::{FrameRecord, deliver};
use serde_json::json;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use vigil_core::{AlertContext, FrameSignals};
use vigil_fusion::Outcome;
use vigil_sink::actuate::publish::Outcome as ActionOutcome;
use vigil_sink::{JsonlSink, KafkaSink, SinkError};

pub struct FrameMsg {
    pub stream: String,
    pub signals: FrameSignals,
    pub outcome: Outcome,
    pub context: AlertContext,
    /// From the sample's data reaching its decoder to its decision.
    pub age_ms: Option<u64>,
}

pub enum SinkMsg {
    Frame(Box<FrameMsg>),
    /// Alerts with no sample of their own: those a fleet hand-off held back.
    Events {
        events: Vec<vigil_fusion::Event>,
        context: Box<AlertContext>,
    },
    Line(serde_json::Value),
    /// The worker cut a publisher connected to it: its lifecycle line, and (with Kafka)
    /// a `vigil.action` record on `actions_topic`, so the console sees the cut confirmed.
    Cut {
        stream: String,
        command_id: String,
        line: serde_json::Value,
    },
    /// A command for a stream this worker pulls: a `vigil.action` record with outcome
    /// `seen` (the origin's cut is the actuator's), so the console knows it arrived.
    Seen {
        stream: String,
        command_id: String,
    },
    /// Flush Kafka until the deadline, then write this last line with what is left in
    /// the spool (`pending_messages`, `oldest_pending_secs`), and stop (other senders may
    /// still exist). The drain's deadline covers the flush.
    Last(serde_json::Value, std::time::Instant),
}

impl SinkMsg {
    /// `{"type":"stream","stream":..,"event":..}`: a stream started, began decoding, ended.
    pub fn lifecycle(stream: &str, event: &str, detail: Option<&str>, reason: Option<&str>) -> SinkMsg {
        SinkMsg::Line(lifecycle_line(stream, event, detail, reason))
    }
}

pub fn lifecycle_line(stream: &str, event: &str, detail: Option<&str>, reason: Option<&str>) -> serde_json::Value {
    let mut v = json!({"type": "stream", "stream": stream, "event": event, "unix_ms": crate::output::unix_ms()});
    if let Some(d) = detail {
        v["detail"] = json!(d);
    }
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}

const CHANNEL: usize = 1024;

pub fn start(
    kafka: Option<KafkaSink>,
    worker_id: &str,
) -> std::io::Result<(SyncSender<SinkMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(CHANNEL);
    let mut events = StreamEvents { worker_id: worker_id.to_string(), seq: 0 };
    let thread =
        std::thread::Builder::new().name("vigil-sink".into()).spawn(move || write_all(&rx, kafka, &mut events))?;
    Ok((tx, thread))
}

/// Publishes the worker's stream lifecycle lines on the actions topic as `vigil.stream`
/// v1 records, signed like the rest, so the console knows whether a stream is live, when
/// it was cut or ended and when its source came back.
struct StreamEvents {
    worker_id: String,
    /// Makes each record's message id unique within the process.
    seq: u64,
}

impl StreamEvents {
    fn publish(&mut self, kafka: &KafkaSink, line: &serde_json::Value) {
        let (Some("stream"), Some(stream), Some(event)) =
            (line["type"].as_str(), line["stream"].as_str(), line["event"].as_str())
        else {
            return;
        };
        let at = line["unix_ms"].as_u64().unwrap_or_else(crate::output::unix_ms);
        let mut record = json!({"schema": "vigil.stream", "schema_version": 1, "stream_id": stream,
                                "event": event, "at_unix_ms": at, "worker_id": self.worker_id});
        for field in ["detail", "reason"] {
            if let Some(v) = line[field].as_str() {
                record[field] = json!(v);
            }
        }
        self.seq += 1;
        // Refusals are logged and counted by the sink.
        let _ = kafka.send_stream_event(&format!("{stream}/{event}/{at}/{}", self.seq), stream, &record);
    }
}

fn write_all(rx: &Receiver<SinkMsg>, kafka: Option<KafkaSink>, events: &mut StreamEvents) {
    let mut sink = JsonlSink::new(std::io::stdout());
    let mut output = OutputState { broken: false };
    for msg in rx {
        if let SinkMsg::Last(mut line, deadline) = msg {
            // The flush is part of the drain: it ends at the drain's deadline.
            if let Some(k) = &kafka {
                let left = k.flush(deadline.saturating_duration_since(std::time::Instant::now()));
                let oldest = k.oldest_pending().map_or(0.0, |d| d.as_secs_f64());
                if left > 0 {
                    tracing::warn!(
                        "{left} message(s) not yet confirmed by Kafka stay in the spool for the next start (the oldest waited {oldest:.0} s)"
                    );
                }
                line["pending_messages"] = json!(left);
                line["oldest_pending_secs"] = json!((oldest * 10.0).round() / 10.0);
            }
            output.note(sink.write(&line));
            break;
        }
        let started = vigil_core::cpu::thread_cpu();
        if let (Some(k), SinkMsg::Line(line) | SinkMsg::Cut { line, .. }) = (&kafka, &msg) {
            events.publish(k, line);
        }
        write_one(msg, &mut sink, &mut output, kafka.as_ref());
        vigil_sink::metrics::METRICS
            .cpu_seconds
            .inc_by(vigil_core::cpu::thread_cpu().saturating_sub(started).as_secs_f64());
    }
}

/// Writes one message: its JSON line, and for a frame its alerts and commands.
fn write_one(msg: SinkMsg, sink: &mut JsonlSink<std::io::Stdout>, output: &mut OutputState, kafka: Option<&KafkaSink>) {
    match msg {
        SinkMsg::Frame(m) => {
            let frame = FrameRecord {
                kind: "frame",
                stream: &m.stream,
                signals: &m.signals,
                verdict: m.outcome.verdict,
                rule: m.outcome.rule.clone(),
                conditions: m.outcome.conditions.names(),
                age_ms: m.age_ms,
            };
            // Spool refusals were logged and counted by the sink, one by one.
            let done = deliver(Some(&frame), &m.outcome.events, &m.context, sink, kafka);
            output.note(done.output_error.map_or(Ok(()), Err));
        }
        SinkMsg::Events { events, context } => {
            let done = deliver(None, &events, &context, sink, kafka);
            output.note(done.output_error.map_or(Ok(()), Err));
        }
        SinkMsg::Line(v) | SinkMsg::Last(v, _) => output.note(sink.write(&v)),
        SinkMsg::Seen { stream, command_id } => {
            if let Some(k) = kafka {
                let detail = "pulled by this worker, which keeps analysing it until its origin cuts it";
                let at = crate::output::unix_ms();
                send_outcome(
                    k,
                    &format!("{command_id}/seen/{at}"),
                    &command_id,
                    &stream,
                    ActionOutcome::Seen,
                    detail,
                    at,
                );
            }
        }
        SinkMsg::Cut { stream, command_id, line } => {
            if let Some(k) = kafka {
                let detail = "the publisher was connected to this worker, which cut it";
                let at = crate::output::unix_ms();
                send_outcome(k, &format!("{command_id}/cut/1"), &command_id, &stream, ActionOutcome::Cut, detail, at);
            }
            output.note(sink.write(&line))
        }
    }
}

/// A `vigil.action` v1 record of what this worker did with a command, on the actions
/// topic under `message_id` (refusals are logged and counted by the sink).
fn send_outcome(
    k: &KafkaSink,
    message_id: &str,
    command_id: &str,
    stream: &str,
    outcome: ActionOutcome,
    detail: &str,
    at: u64,
) {
    use vigil_sink::actuate::publish::{ACTION_SCHEMA, ACTION_SCHEMA_VERSION, ActionRecord};
    let record = ActionRecord {
        schema: ACTION_SCHEMA,
        schema_version: ACTION_SCHEMA_VERSION,
        command_id,
        stream_id: stream,
        outcome,
        reason: None,
        detail,
        attempts: 1,
        at_unix_ms: at,
    };
    let _ = k.send_action(message_id, stream, &record);
}

/// Whether stdout is broken: a reader gone (EPIPE) fails every line, so the error is
/// logged when it starts and when it ends, and counted per line by the sink
/// (`vigil_sink_output_failed_total`). Kafka delivery does not depend on it.
struct OutputState {
    broken: bool,
}

impl OutputState {
    fn note(&mut self, written: Result<(), SinkError>) {
        match written {
            Err(e) if !self.broken => {
                self.broken = true;
                tracing::error!("stdout: {e}; JSON lines are lost until it recovers, Kafka delivery goes on");
            }
            Ok(()) if self.broken => {
                self.broken = false;
                tracing::warn!("stdout writable again");
            }
            _ => {}
        }
    }
}
