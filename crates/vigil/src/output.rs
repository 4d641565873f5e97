//! What the worker and `vigil scan` print: one JSON object per line.

use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use vigil_core::{AlertContext, FrameSignals, Verdict};
use vigil_fusion::Event;
use vigil_sink::{JsonlSink, KafkaSink};

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
}

/// An output line carrying a message (`alert` or `interrupt`), tagged with its type.
#[derive(Serialize)]
pub struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub message: &'a T,
}

pub fn verdict_name_event(e: &Event) -> &'static str {
    match e {
        Event::Opened(_) => "opened",
        Event::Escalated(_) => "escalated",
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
}

/// Turns fusion events into alerts (and interrupt commands), written as JSON lines and,
/// when configured, sent to Kafka (through its spool: once this returns, the message
/// is on disk and will be delivered).
pub fn deliver_events(
    events: &[Event],
    context: &AlertContext,
    sink: &mut JsonlSink<impl Write>,
    kafka: Option<&KafkaSink>,
) -> anyhow::Result<EventCounts> {
    let mut counts = EventCounts::default();
    for event in events {
        match event {
            Event::Opened(_) => counts.opened += 1,
            Event::Escalated(_) => counts.escalated += 1,
            Event::Closed(_) => {}
        }
        let alert = event.to_alert(context, unix_ms());
        let alert_msg_id = format!("{}/{}", alert.alert_id, verdict_name_event(event));
        if let Some(k) = kafka {
            k.send_alert(&alert_msg_id, &alert.stream_id.0, &alert).context("kafka sink")?;
        }
        sink.write(&Tagged { kind: "alert", message: &alert }).context("writing output")?;
        if let Some(cmd) = alert.interrupt_command() {
            counts.interrupts += 1;
            if let Some(k) = kafka {
                k.send_interrupt(&cmd.command_id, &cmd.stream_id.0, &cmd).context("kafka sink")?;
            }
            sink.write(&Tagged { kind: "interrupt", message: &cmd }).context("writing output")?;
        }
    }
    Ok(counts)
}
