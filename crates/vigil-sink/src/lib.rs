//! Where results go. The embedded default writes newline-delimited JSON: one record per
//! line, flushed per record so a reader (or a crash) never sees half a line.
#![forbid(unsafe_code)]

pub mod actuate;
pub mod kafka;
pub mod metrics;
pub mod spool;
#[cfg(feature = "test-support")]
pub mod testing;

pub use kafka::{KafkaConfig, KafkaHealth, KafkaSink, KafkaSinkError, MessageKind};
pub use spool::{Record, Spool, SpoolError};

use serde::Serialize;
use std::io::Write;

/// `[sink]`: where alerts and interrupt commands go besides the JSON lines on stdout.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Kafka with the zero-loss spool; absent: JSON lines only (the embedded default).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
}

impl SinkConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        self.kafka.as_ref().map(|k| k.validate(&format!("{prefix}.kafka"))).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot serialise record: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("cannot write record: {0}")]
    Write(#[from] std::io::Error),
}

pub struct JsonlSink<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let written = self.out.write_all(&line).and_then(|()| self.out.flush());
        if written.is_err() {
            // Counted here, logged by the caller (which knows whether it is news).
            metrics::METRICS.output_failed.inc();
        }
        written?;
        self.written += 1;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_record() {
        let mut s = JsonlSink::new(Vec::new());
        s.write(&serde_json::json!({"a": 1})).unwrap();
        s.write(&serde_json::json!({"b": "x\ny"})).unwrap();
        let out = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(out, "{\"a\":1}\n{\"b\":\"x\\ny\"}\n");
    }
}
