//! What the worker and `vigil scan` print: one JSON object per line.

use serde::Serialize;
use std::io::Write;
use vigil_core::{Alert, AlertContext, FrameSignals, InterruptCommand, Verdict};
use vigil_fusion::Event;
use vigil_sink::{JsonlSink, KafkaSink, SinkError};

#[derive(Serialize)]
pub struct FrameRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub stream: &'a str,
    #[serde(flatten)]
    pub signals: &'a FrameSignals,
    /// The stream's decision as of this sample, and the policy rule behind it.
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The policy conditions this sample met (before any k-of-n window).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<&'static str>,
    /// Live streams: milliseconds from the sample's data reaching its decoder to this
    /// decision (the same figure as `vigil_sample_age_seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

/// An output line carrying a message (`alert` or `interrupt`), tagged with its type.
#[derive(Serialize)]
pub struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub message: &'a T,
}

/// A message the Kafka sink refused (its spool full or its disk failing): printed with
/// type `alert_refused` or `interrupt_refused` and the reason, never as sent.
#[derive(Serialize)]
pub struct Refused<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reason: &'static str,
    #[serde(flatten)]
    pub message: &'a T,
}

pub fn verdict_name_event(e: &Event) -> &'static str {
    match e {
        Event::Opened(_) => "opened",
        Event::Escalated(_) => "escalated",
        Event::Reissued(_) => "reissued",
        Event::Closed(_) => "closed",
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into())
}

pub fn verdict_name(v: Verdict) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// How many of each kind of event a batch of fusion events held.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventCounts {
    pub opened: u64,
    pub escalated: u64,
    pub interrupts: u64,
    /// Interrupts issued again (the stream kept meeting the rule after its command).
    pub reissued: u64,
}

/// Interrupt commands issued again under a new id (see `[incident] reissue_secs`).
pub static REISSUED: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    prometheus::IntCounter::new(
        "vigil_interrupts_reissued_total",
        "Interrupt commands issued again under a new id: the stream kept meeting an interrupt rule after its command",
    )
    .expect("valid metric")
});

/// One message a fusion event makes: its alert, or the interrupt command it carries.
pub enum Outgoing {
    Alert { message_id: String, alert: Alert },
    Interrupt(InterruptCommand),
}

/// The alerts (and interrupt commands) of a batch of fusion events, in order.
pub fn outgoing(events: &[Event], context: &AlertContext) -> (Vec<Outgoing>, EventCounts) {
    let mut counts = EventCounts::default();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        match event {
            Event::Opened(_) => counts.opened += 1,
            Event::Escalated(_) => counts.escalated += 1,
            Event::Reissued(_) => {
                counts.reissued += 1;
                REISSUED.inc();
            }
            Event::Closed(_) => {}
        }
        let alert = event.to_alert(context, unix_ms());
        let message_id = match alert.reissue {
            // One message per reissue: each is a new command consumers must not drop.
            Some(n) => format!("{}/{}/{n}", alert.alert_id, verdict_name_event(event)),
            None => format!("{}/{}", alert.alert_id, verdict_name_event(event)),
        };
        let cmd = alert.interrupt_command();
        out.push(Outgoing::Alert { message_id, alert });
        if let Some(cmd) = cmd {
            counts.interrupts += 1;
            out.push(Outgoing::Interrupt(cmd));
        }
    }
    (out, counts)
}

/// What delivering one sample's output did.
#[derive(Debug, Default)]
pub struct Delivered {
    pub counts: EventCounts,
    /// Messages the Kafka spool refused (each logged and counted by the sink).
    pub spool_refused: usize,
    /// The first JSON line that could not be written, if any.
    pub output_error: Option<SinkError>,
}

/// Delivers one sample: its alerts and interrupt commands go to Kafka first (through
/// its spool: once accepted, a message is on disk and will be delivered), then the
/// frame line and the messages go out as JSON lines. Each message on its own: a refused
/// alert never holds back its interrupt command, and a broken stdout (EPIPE, ENOSPC)
/// never keeps anything from Kafka.
pub fn deliver(
    frame: Option<&FrameRecord<'_>>,
    events: &[Event],
    context: &AlertContext,
    sink: &mut JsonlSink<impl Write>,
    kafka: Option<&KafkaSink>,
) -> Delivered {
    let (messages, counts) = outgoing(events, context);
    let mut done = Delivered { counts, ..Delivered::default() };
    // Per message: why Kafka refused it, if it did (the line then says so).
    let mut refused: Vec<Option<&'static str>> = vec![None; messages.len()];
    if let Some(k) = kafka {
        for (m, why) in messages.iter().zip(refused.iter_mut()) {
            let sent = match m {
                Outgoing::Alert { message_id, alert } => k.send_alert(message_id, &alert.stream_id.0, alert),
                // A file scan's command cuts nothing: it never reaches the interrupts topic.
                Outgoing::Interrupt(_) if context.origin.is_some() => continue,
                Outgoing::Interrupt(cmd) => k.send_interrupt(&cmd.command_id, &cmd.stream_id.0, cmd),
            };
            *why = sent.err().map(|e| e.reason());
            done.spool_refused += usize::from(why.is_some());
        }
    }
    let mut line = |written: Result<(), SinkError>| {
        if let Err(e) = written {
            done.output_error.get_or_insert(e);
        }
    };
    if let Some(frame) = frame {
        line(sink.write(frame));
    }
    for (m, why) in messages.iter().zip(refused) {
        // A message Kafka refused is never printed as sent: its line's type says so.
        line(match (m, why) {
            (Outgoing::Alert { alert, .. }, None) => sink.write(&Tagged { kind: "alert", message: alert }),
            (Outgoing::Interrupt(cmd), None) => sink.write(&Tagged { kind: "interrupt", message: cmd }),
            (Outgoing::Alert { alert, .. }, Some(reason)) => {
                sink.write(&Refused { kind: "alert_refused", reason, message: alert })
            }
            (Outgoing::Interrupt(cmd), Some(reason)) => {
                sink.write(&Refused { kind: "interrupt_refused", reason, message: cmd })
            }
        });
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message the Kafka sink refuses is printed with type `alert_refused` or
    /// `interrupt_refused` and the reason, never as an `alert` or `interrupt` line.
    #[test]
    fn a_message_kafka_refused_is_never_printed_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: vigil_sink::KafkaConfig = toml::from_str("brokers = \"127.0.0.1:1\"").unwrap();
        cfg.spool_path = dir.path().join("spool");
        cfg.spool_max_bytes = 64; // room for nothing: every message is refused
        let kafka = KafkaSink::open(cfg, None).unwrap();
        let incident = vigil_fusion::Incident {
            id: "s@x#1".into(),
            stream: vigil_core::StreamId("s".into()),
            decision: vigil_fusion::Decision::Interrupt,
            rule: "known_abuse_material".into(),
            started_ms: 0,
            last_seen_ms: 0,
            reasons: vec![],
            frames: vec![],
            policy: "default".into(),
            policy_version: "1".into(),
            interrupt_issued_ms: Some(0),
            reissues: 0,
        };
        let mut sink = JsonlSink::new(Vec::new());
        let done = deliver(None, &[Event::Opened(incident)], &AlertContext::default(), &mut sink, Some(&kafka));
        assert_eq!(done.spool_refused, 2);
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let types: Vec<(String, String)> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["type"].as_str().unwrap().to_string(), v["reason"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            types,
            [("alert_refused".to_string(), "full".to_string()), ("interrupt_refused".to_string(), "full".to_string())]
        );
    }
}
