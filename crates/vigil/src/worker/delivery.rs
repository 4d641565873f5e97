//! The worker's one writer: frame records, stream lifecycle lines, alerts and interrupt
//! commands, as JSON lines on stdout and (when configured) to Kafka through its spool.
//! A single thread, fed by a bounded channel, so no analysis thread ever waits on
//! Kafka or on another stream's output.

use crate::output::{FrameRecord, deliver_events};
use serde_json::json;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use vigil_core::{AlertContext, FrameSignals};
use vigil_fusion::Outcome;
use vigil_sink::{JsonlSink, KafkaSink};

pub struct FrameMsg {
    pub stream: String,
    pub signals: FrameSignals,
    pub outcome: Outcome,
    pub context: AlertContext,
}

pub enum SinkMsg {
    Frame(Box<FrameMsg>),
    Line(serde_json::Value),
    /// Write this last line, flush Kafka and stop (other senders may still exist).
    Last(serde_json::Value),
}

impl SinkMsg {
    /// `{"type":"stream","stream":..,"event":..}`: a stream started, began decoding, ended.
    pub fn lifecycle(stream: &str, event: &str, detail: Option<&str>, reason: Option<&str>) -> SinkMsg {
        let mut v = json!({"type": "stream", "stream": stream, "event": event, "unix_ms": crate::output::unix_ms()});
        if let Some(d) = detail {
            v["detail"] = json!(d);
        }
        if let Some(r) = reason {
            v["reason"] = json!(r);
        }
        SinkMsg::Line(v)
    }
}

const CHANNEL: usize = 1024;

pub fn start(kafka: Option<KafkaSink>) -> std::io::Result<(SyncSender<SinkMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(CHANNEL);
    let thread = std::thread::Builder::new().name("vigil-sink".into()).spawn(move || write_all(&rx, kafka))?;
    Ok((tx, thread))
}

fn write_all(rx: &Receiver<SinkMsg>, kafka: Option<KafkaSink>) {
    let mut sink = JsonlSink::new(std::io::stdout());
    for msg in rx {
        let result = match msg {
            SinkMsg::Frame(m) => sink
                .write(&FrameRecord {
                    kind: "frame",
                    stream: &m.stream,
                    signals: &m.signals,
                    verdict: m.outcome.verdict,
                    rule: m.outcome.rule.clone(),
                    conditions: m.outcome.conditions.names(),
                })
                .map_err(anyhow::Error::from)
                .and_then(|()| deliver_events(&m.outcome.events, &m.context, &mut sink, kafka.as_ref()).map(|_| ())),
            SinkMsg::Line(v) => sink.write(&v).map_err(anyhow::Error::from),
            SinkMsg::Last(v) => {
                if let Err(e) = sink.write(&v) {
                    tracing::error!("sink: {e:#}");
                }
                break;
            }
        };
        if let Err(e) = result {
            // Kafka-bound messages that reached the spool are safe; this is stdout or a
            // full spool, and the metrics say which.
            tracing::error!("sink: {e:#}");
        }
    }
    if let Some(k) = &kafka {
        let left = k.flush(std::time::Duration::from_secs(30));
        if left > 0 {
            tracing::warn!("{left} message(s) not yet confirmed by Kafka stay in the spool for the next start");
        }
    }
}
