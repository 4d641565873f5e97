//! The owners topic (`vigil.streams.owners`, keyed by stream id): what workers tell each
//! other about the streams they run, read by every worker from the end at its start.
//!
//! - `claim`: a worker runs the stream now (make-before-break: the old owner lets go once
//!   it reads the new owner's claim). A claim made for an offer names the offer's maker.
//! - `handing_off`: a worker was revoked the stream and still alerts on it.
//! - `released`: a worker let the stream go, with the incident it had open.
//! - `offered`: a worker whose partition holds a stream it cannot take (at capacity)
//!   offers it; the first offer claim read after it wins, everywhere alike, since all
//!   records of one stream share a partition and so an order.
//! - `withdrawn`: the offer's maker took the stream back (its lifecycle says stop).

use super::machine::{Heard, Say};
use super::{Wanted, pull_uri, valid_stream_id};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest owners-topic record read.
pub const MAX_OWNERS_RECORD_BYTES: usize = 64 << 10;

/// The owners topic: what this worker says, and what the others said.
pub struct Claims {
    me: String,
    topic: String,
    producer: rdkafka::producer::BaseProducer,
    /// Reads every partition from the last hand-off period at start (no group): only
    /// recent records matter.
    reader: Option<BaseConsumer>,
    /// Signs what this worker says; believes only what workers signed, recently.
    trust: vigil_trust::config::Trust,
    verifier: vigil_trust::Verifier,
    /// Offers are pulled only from the fleet's `pull_hosts`.
    hosts: super::FleetConfig,
}

/// The owners topic's records, keyed by stream id. Each kind has its own field names,
/// so a worker that knows only claims ignores the others.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum OwnersRecord {
    /// `owner` runs the stream now; for the offer `for_offer` made, if one did.
    Claim {
        stream_id: String,
        owner: String,
        unix_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_offer: Option<String>,
    },
    /// `handing_off_by` was revoked the stream and keeps it until another worker claims it.
    HandingOff { stream_id: String, handing_off_by: String, unix_ms: u64 },
    /// `released_by` let the stream go to `to`, with the incident it had open then.
    Released {
        stream_id: String,
        released_by: String,
        to: String,
        unix_ms: u64,
        incident: Option<Box<vigil_fusion::Incident>>,
    },
    /// `offered_by` owns the stream's partition and cannot take it: whoever can, may.
    Offered { stream_id: String, offered_by: String, source_url: String, account_id: Option<String>, unix_ms: u64 },
    /// `withdrawn_by` took back the stream it had offered (stopped by its lifecycle).
    Withdrawn { stream_id: String, withdrawn_by: String, unix_ms: u64 },
}

impl Claims {
    pub fn open(
        cfg: &super::FleetConfig,
        kafka: &vigil_sink::KafkaConfig,
        instance: &str,
        trust: &vigil_trust::config::Trust,
    ) -> anyhow::Result<Claims> {
        let mut pc = kafka.consumer_config("unused").map_err(anyhow::Error::msg)?;
        for k in ["group.id", "enable.auto.commit", "auto.offset.reset", "session.timeout.ms"] {
            pc.remove(k);
        }
        let producer: rdkafka::producer::BaseProducer = pc.set("linger.ms", "0").create()?;
        let mut reader_cfg = kafka.consumer_config(&format!("vigil-claims-{instance}")).map_err(anyhow::Error::msg)?;
        // Hand-offs and offers wait on these records: fetch them promptly.
        reader_cfg.set("fetch.wait.max.ms", "100");
        let reader: BaseConsumer = reader_cfg.create()?;
        let partitions = reader
            .fetch_metadata(Some(&cfg.owners_topic), Duration::from_secs(10))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        let reader = if partitions == 0 {
            tracing::warn!(
                topic = cfg.owners_topic,
                "fleet: the owners topic is missing: hand-offs wait handoff_secs instead of a claim"
            );
            None
        } else {
            reader.assign(&replay_from(&reader, &cfg.owners_topic, partitions as i32, cfg.handoff_secs)?)?;
            Some(reader)
        };
        Ok(Claims {
            me: instance.to_string(),
            topic: cfg.owners_topic.clone(),
            producer,
            reader,
            trust: trust.clone(),
            verifier: trust.verifier(vigil_trust::TopicKind::Owners),
            hosts: cfg.clone(),
        })
    }

    fn send(&self, stream: &str, record: &OwnersRecord) {
        let payload = serde_json::to_string(record).unwrap_or_default();
        let headers = self.trust.sign_into(
            &self.topic,
            Some(stream.as_bytes()),
            Some(payload.as_bytes()),
            rdkafka::message::OwnedHeaders::new(),
        );
        let message = rdkafka::producer::BaseRecord::to(&self.topic).key(stream).payload(&payload).headers(headers);
        if let Err((e, _)) = self.producer.send(message) {
            tracing::warn!(stream, "fleet: owners record not sent: {e}");
        }
    }

    /// Says something on the owners topic.
    pub fn say(&self, say: Say) {
        let (me, unix_ms) = (self.me.clone(), crate::output::unix_ms());
        let (stream, record) = match say {
            Say::Claim(stream) => {
                let record = OwnersRecord::Claim { stream_id: stream.clone(), owner: me, unix_ms, for_offer: None };
                (stream, record)
            }
            // Also repeated, as a sign of life, while this worker runs the stream.
            Say::ClaimOffer { stream, from } => {
                let record =
                    OwnersRecord::Claim { stream_id: stream.clone(), owner: me, unix_ms, for_offer: Some(from) };
                (stream, record)
            }
            Say::Offer { stream, wanted } => {
                let record = OwnersRecord::Offered {
                    stream_id: stream.clone(),
                    offered_by: me,
                    source_url: wanted.uri,
                    account_id: wanted.account_id,
                    unix_ms,
                };
                (stream, record)
            }
            Say::Withdraw(stream) => {
                (stream.clone(), OwnersRecord::Withdrawn { stream_id: stream, withdrawn_by: me, unix_ms })
            }
            Say::HandingOff(stream) => {
                (stream.clone(), OwnersRecord::HandingOff { stream_id: stream, handing_off_by: me, unix_ms })
            }
            Say::Release { stream, to, incident } => {
                let incident = incident.map(Box::new);
                let record =
                    OwnersRecord::Released { stream_id: stream.clone(), released_by: me, to, unix_ms, incident };
                (stream, record)
            }
        };
        self.send(&stream, &record);
    }

    /// Serves the producer and reads what the workers said (this one included).
    pub fn poll(&mut self) -> Vec<Heard> {
        self.producer.poll(Duration::ZERO);
        let mut heard = Vec::new();
        let Some(reader) = &self.reader else { return heard };
        while let Some(m) = reader.poll(Duration::ZERO) {
            let Ok(m) = m else { continue };
            // Unsigned, another role's, stale or replayed: refused and counted.
            if self.verifier.check(&m).is_err() {
                continue;
            }
            let key = m.key();
            let record = m
                .payload()
                .filter(|p| p.len() <= MAX_OWNERS_RECORD_BYTES)
                .and_then(|p| serde_json::from_slice::<OwnersRecord>(p).ok());
            let Some(record) = record.filter(|r| key == Some(r.stream_id().as_bytes())) else {
                tracing::warn!(partition = m.partition(), offset = m.offset(), "fleet: owners record refused");
                continue;
            };
            heard.push(self.read(record));
        }
        heard
    }

    /// What a record says, checked: an offer's source like a lifecycle start's, a
    /// released incident only if it is the stream's own.
    fn read(&self, record: OwnersRecord) -> Heard {
        match record {
            OwnersRecord::Claim { stream_id, owner, for_offer, .. } => {
                Heard::Claim { stream: stream_id, owner, for_offer }
            }
            OwnersRecord::HandingOff { stream_id, handing_off_by, .. } => {
                Heard::HandingOff { stream: stream_id, by: handing_off_by }
            }
            OwnersRecord::Released { stream_id, released_by, to, incident, .. } => {
                // Only an incident of this very stream is continued; anything else is
                // ignored (the held alerts then go out as they are).
                let incident = incident.map(|i| *i).filter(|i| {
                    i.stream.0 == stream_id && i.id.starts_with(&format!("{stream_id}@")) && i.id.len() <= 512
                });
                Heard::Released { stream: stream_id, by: released_by, to, incident }
            }
            OwnersRecord::Offered { stream_id, offered_by, source_url, account_id, .. } => {
                let account_ok = account_id.as_ref().is_none_or(|a| a.len() <= 256 && !a.chars().any(char::is_control));
                let host_ok = self.hosts.check_host(&source_url).is_ok();
                let wanted = pull_uri(&source_url)
                    .filter(|_| valid_stream_id(&stream_id) && account_ok && host_ok)
                    .map(|uri| Wanted { uri, account_id });
                Heard::Offered { stream: stream_id, by: offered_by, wanted }
            }
            OwnersRecord::Withdrawn { stream_id, withdrawn_by, .. } => {
                Heard::Withdrawn { stream: stream_id, by: withdrawn_by }
            }
        }
    }

    /// Whether this worker reads the owners topic (without it, no claim is ever seen).
    pub fn sees_claims(&self) -> bool {
        self.reader.is_some()
    }

    pub fn flush(&self) {
        rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(2)).ok();
    }
}

/// Where the reader starts: at the records of the last hand-off period, so a worker
/// that starts while another is handing a stream off still hears it (and holds its
/// alerts when the stream comes to it); at the end where the broker cannot say.
fn replay_from(
    reader: &BaseConsumer,
    topic: &str,
    partitions: i32,
    handoff_secs: u64,
) -> rdkafka::error::KafkaResult<rdkafka::TopicPartitionList> {
    let since = crate::output::unix_ms().saturating_sub(handoff_secs * 1000) as i64;
    let mut times = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        times.add_partition_offset(topic, p, rdkafka::Offset::Offset(since))?;
    }
    let found = reader.offsets_for_times(times, Duration::from_secs(10)).unwrap_or_else(|e| {
        tracing::warn!(
            topic,
            "fleet: cannot find the owners records of the last hand-off period ({e}); reading from the end"
        );
        rdkafka::TopicPartitionList::new()
    });
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let offset = match found.find_partition(topic, p).map(|e| (e.offset(), e.error())) {
            Some((rdkafka::Offset::Offset(n), Ok(()))) if n >= 0 => rdkafka::Offset::Offset(n),
            _ => rdkafka::Offset::End,
        };
        tpl.add_partition_offset(topic, p, offset)?;
    }
    Ok(tpl)
}

impl OwnersRecord {
    fn stream_id(&self) -> &str {
        match self {
            OwnersRecord::Claim { stream_id, .. }
            | OwnersRecord::HandingOff { stream_id, .. }
            | OwnersRecord::Released { stream_id, .. }
            | OwnersRecord::Offered { stream_id, .. }
            | OwnersRecord::Withdrawn { stream_id, .. } => stream_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Option<OwnersRecord> {
        serde_json::from_str(json).ok()
    }

    #[test]
    fn each_record_kind_reads_back_as_itself() {
        let claim = OwnersRecord::Claim { stream_id: "live/a".into(), owner: "w1".into(), unix_ms: 1, for_offer: None };
        let text = serde_json::to_string(&claim).unwrap();
        assert!(!text.contains("for_offer"), "a plain claim reads as one to workers that know only claims: {text}");
        assert!(matches!(parse(&text), Some(OwnersRecord::Claim { for_offer: None, .. })));
        let offer_claim = r#"{"stream_id":"live/a","owner":"w2","unix_ms":2,"for_offer":"w1"}"#;
        assert!(matches!(parse(offer_claim), Some(OwnersRecord::Claim { for_offer: Some(f), .. }) if f == "w1"));
        let offered = OwnersRecord::Offered {
            stream_id: "live/a".into(),
            offered_by: "w1".into(),
            source_url: "rtmp://origin/live/a".into(),
            account_id: Some("acct".into()),
            unix_ms: 3,
        };
        let text = serde_json::to_string(&offered).unwrap();
        assert!(matches!(parse(&text), Some(OwnersRecord::Offered { .. })), "{text}");
        let handing_off = r#"{"stream_id":"live/a","handing_off_by":"w1","unix_ms":4}"#;
        assert!(matches!(parse(handing_off), Some(OwnersRecord::HandingOff { .. })));
        let withdrawn = r#"{"stream_id":"live/a","withdrawn_by":"w1","unix_ms":5}"#;
        assert!(matches!(parse(withdrawn), Some(OwnersRecord::Withdrawn { .. })));
        let released = r#"{"stream_id":"live/a","released_by":"w1","to":"w2","unix_ms":6,"incident":null}"#;
        assert!(matches!(parse(released), Some(OwnersRecord::Released { incident: None, .. })));
    }

    #[test]
    fn records_that_are_none_of_the_kinds_are_refused() {
        for bad in [
            "",
            "null",
            "[]",
            r#"{"stream_id":"live/a"}"#,
            r#"{"stream_id":"live/a","owner":7,"unix_ms":1}"#,
            r#"{"stream_id":"live/a","offered_by":"w1","unix_ms":1}"#,
            r#"{"stream_id":"live/a","released_by":"w1","unix_ms":1,"incident":null}"#,
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
