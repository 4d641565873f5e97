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

use super::{Wanted, pull_uri, valid_stream_id};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Largest owners-topic record read.
pub const MAX_OWNERS_RECORD_BYTES: usize = 64 << 10;

/// The owners topic: what this worker says, and what the others said.
pub struct Claims {
    me: String,
    topic: String,
    producer: rdkafka::producer::BaseProducer,
    /// Reads every partition from its end at start (no group): only new claims matter.
    reader: Option<BaseConsumer>,
    /// Stream → the other worker whose claim for it was last read, and when.
    seen: HashMap<String, (String, Instant)>,
    /// Stream → when another worker last announced it is handing it off.
    handing_off: HashMap<String, Instant>,
    /// Stream → when another worker first announced handing it off, until any worker
    /// claims it (a hand-off nobody completes).
    unclaimed_handoffs: HashMap<String, Instant>,
    /// Stream → the open offer for it: its maker, and who took it (once claimed).
    offers: HashMap<String, (String, Option<String>)>,
    /// Stream → the worker whose offer claim for it was last read, and when (liveness of
    /// a stream running elsewhere for this worker).
    offer_claims: HashMap<String, (String, Instant)>,
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

/// What another worker said on the owners topic that this one acts on.
pub enum Notice {
    /// `by` was revoked the stream (or let it go) and still alerts on it.
    HandingOff {
        stream: String,
        by: String,
    },
    Released {
        stream: String,
        incident: Option<vigil_fusion::Incident>,
    },
    /// Another worker offers a stream (checked like a lifecycle start).
    Offered {
        stream: String,
        from: String,
        wanted: Wanted,
    },
    /// The first offer claim after an offer: `by` runs the stream (maybe this worker).
    OfferTaken {
        stream: String,
        by: String,
    },
    Withdrawn(String),
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
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..partitions as i32 {
                tpl.add_partition_offset(&cfg.owners_topic, p, rdkafka::Offset::End)?;
            }
            reader.assign(&tpl)?;
            Some(reader)
        };
        Ok(Claims {
            me: instance.to_string(),
            topic: cfg.owners_topic.clone(),
            producer,
            reader,
            seen: HashMap::new(),
            handing_off: HashMap::new(),
            unclaimed_handoffs: HashMap::new(),
            offers: HashMap::new(),
            offer_claims: HashMap::new(),
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

    /// Says on the owners topic that this worker runs `stream` now.
    pub fn claim(&self, stream: &str) {
        let unix_ms = crate::output::unix_ms();
        let record = OwnersRecord::Claim { stream_id: stream.into(), owner: self.me.clone(), unix_ms, for_offer: None };
        self.send(stream, &record);
    }

    /// Says that this worker runs `stream` for the offer `from` made (also repeated, as
    /// a sign of life, while it runs it).
    pub fn claim_offer(&self, stream: &str, from: &str) {
        let unix_ms = crate::output::unix_ms();
        let (stream_id, owner, for_offer) = (stream.into(), self.me.clone(), Some(from.to_string()));
        self.send(stream, &OwnersRecord::Claim { stream_id, owner, unix_ms, for_offer });
    }

    /// Offers a stream due here that this worker cannot take.
    pub fn offer(&self, stream: &str, wanted: &Wanted) {
        let record = OwnersRecord::Offered {
            stream_id: stream.into(),
            offered_by: self.me.clone(),
            source_url: wanted.uri.clone(),
            account_id: wanted.account_id.clone(),
            unix_ms: crate::output::unix_ms(),
        };
        self.send(stream, &record);
    }

    /// Takes back an offered stream.
    pub fn withdraw(&self, stream: &str) {
        let unix_ms = crate::output::unix_ms();
        self.send(
            stream,
            &OwnersRecord::Withdrawn { stream_id: stream.into(), withdrawn_by: self.me.clone(), unix_ms },
        );
    }

    /// Says that this worker was revoked `stream` and still analyses (and alerts on) it.
    pub fn handing_off(&self, stream: &str) {
        let unix_ms = crate::output::unix_ms();
        self.send(
            stream,
            &OwnersRecord::HandingOff { stream_id: stream.into(), handing_off_by: self.me.clone(), unix_ms },
        );
    }

    /// Says that this worker let `stream` go to `to`, with the incident it left open.
    pub fn release(&self, stream: &str, to: &str, incident: Option<vigil_fusion::Incident>) {
        let record = OwnersRecord::Released {
            stream_id: stream.into(),
            released_by: self.me.clone(),
            to: to.into(),
            unix_ms: crate::output::unix_ms(),
            incident: incident.map(Box::new),
        };
        self.send(stream, &record);
    }

    /// Serves the producer and reads what the other workers said.
    pub fn poll(&mut self) -> Vec<Notice> {
        self.producer.poll(Duration::ZERO);
        let mut notices = Vec::new();
        let Some(reader) = &self.reader else { return notices };
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
            let stream_of = |r: &OwnersRecord| match r {
                OwnersRecord::Claim { stream_id, .. }
                | OwnersRecord::HandingOff { stream_id, .. }
                | OwnersRecord::Released { stream_id, .. }
                | OwnersRecord::Offered { stream_id, .. }
                | OwnersRecord::Withdrawn { stream_id, .. } => stream_id.clone(),
            };
            let Some(record) = record.filter(|r| key == Some(stream_of(r).as_bytes())) else {
                tracing::warn!(partition = m.partition(), offset = m.offset(), "fleet: owners record refused");
                continue;
            };
            match &record {
                OwnersRecord::HandingOff { stream_id, handing_off_by, .. } if *handing_off_by != self.me => {
                    self.unclaimed_handoffs.entry(stream_id.clone()).or_insert_with(Instant::now);
                }
                OwnersRecord::HandingOff { .. } | OwnersRecord::Offered { .. } => {}
                OwnersRecord::Claim { stream_id, .. }
                | OwnersRecord::Released { stream_id, .. }
                | OwnersRecord::Withdrawn { stream_id, .. } => {
                    self.unclaimed_handoffs.remove(stream_id);
                }
            }
            match record {
                OwnersRecord::Claim { stream_id, owner, for_offer: Some(_), .. } => {
                    if let Some((_, taken)) = self.offers.get_mut(&stream_id).filter(|(_, t)| t.is_none()) {
                        *taken = Some(owner.clone());
                        notices.push(Notice::OfferTaken { stream: stream_id.clone(), by: owner.clone() });
                    }
                    if owner != self.me {
                        self.offer_claims.insert(stream_id, (owner, Instant::now()));
                    }
                }
                OwnersRecord::Claim { stream_id, owner, .. } if owner != self.me => {
                    self.seen.insert(stream_id, (owner, Instant::now()));
                }
                OwnersRecord::Offered { stream_id, offered_by, source_url, account_id, .. } => {
                    // A new offer reopens the stream, this worker's own included.
                    self.offers.insert(stream_id.clone(), (offered_by.clone(), None));
                    let account_ok =
                        account_id.as_ref().is_none_or(|a| a.len() <= 256 && !a.chars().any(char::is_control));
                    let host_ok = self.hosts.check_host(&source_url).is_ok();
                    match pull_uri(&source_url) {
                        Some(uri) if offered_by != self.me && valid_stream_id(&stream_id) && account_ok && host_ok => {
                            let wanted = Wanted { uri, account_id };
                            notices.push(Notice::Offered { stream: stream_id, from: offered_by, wanted });
                        }
                        Some(_) if offered_by == self.me => {}
                        _ => tracing::warn!(
                            stream = stream_id,
                            "fleet: an offer refused (bad stream id, URL, host or account)"
                        ),
                    }
                }
                OwnersRecord::Withdrawn { stream_id, withdrawn_by, .. } => {
                    // From the offer's maker, or from the stream's partition owner now
                    // (the partition may have moved since the offer): the lifecycle said stop.
                    self.offers.remove(&stream_id);
                    self.offer_claims.remove(&stream_id);
                    if withdrawn_by != self.me {
                        notices.push(Notice::Withdrawn(stream_id));
                    }
                }
                OwnersRecord::HandingOff { stream_id, handing_off_by, .. } if handing_off_by != self.me => {
                    self.handing_off.insert(stream_id.clone(), Instant::now());
                    notices.push(Notice::HandingOff { stream: stream_id, by: handing_off_by });
                }
                OwnersRecord::Released { stream_id, released_by, to, incident, .. }
                    if to == self.me && released_by != self.me =>
                {
                    // Only an incident of this very stream is continued; anything else
                    // is ignored (the held alerts then go out as they are).
                    let incident = incident.map(|i| *i).filter(|i| {
                        i.stream.0 == stream_id && i.id.starts_with(&format!("{stream_id}@")) && i.id.len() <= 512
                    });
                    notices.push(Notice::Released { stream: stream_id, incident });
                }
                _ => {}
            }
        }
        notices
    }

    /// Another worker claimed `stream` after `since`: which one.
    pub fn taken_since(&self, stream: &str, since: Instant) -> Option<&str> {
        self.seen.get(stream).filter(|(_, at)| *at >= since).map(|(owner, _)| owner.as_str())
    }

    /// Another worker has been handing a stream off for at least `unclaimed_for`, still
    /// says so (within `announced_within`), and nobody has claimed it: the stream's new
    /// partition owner never started it.
    pub fn handoff_unclaimed(&self, unclaimed_for: Duration, announced_within: Duration) -> bool {
        self.unclaimed_handoffs.iter().any(|(stream, first)| {
            first.elapsed() >= unclaimed_for && self.handed_over_lately(stream, announced_within)
        })
    }

    /// Whether this worker reads the owners topic (without it, no claim is ever seen).
    pub fn sees_claims(&self) -> bool {
        self.reader.is_some()
    }

    /// Another worker announced it is handing `stream` off, within `within`.
    pub fn handed_over_lately(&self, stream: &str, within: Duration) -> bool {
        self.handing_off.get(stream).is_some_and(|at| at.elapsed() <= within)
    }
}

impl Claims {
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Another worker claimed `stream` for an offer within `within`: it runs it (and
    /// alerts on it) now.
    pub fn offer_claimed_lately(&self, stream: &str, within: Duration) -> bool {
        self.offer_claims.get(stream).is_some_and(|(_, at)| at.elapsed() <= within)
    }

    /// An offer for `stream` is known (open or taken), or another worker runs it for one.
    pub fn offer_known(&self, stream: &str) -> bool {
        self.offers.contains_key(stream) || self.offer_claims.contains_key(stream)
    }

    /// The offer for `stream` is still open (nobody claimed it yet).
    pub fn offer_open(&self, stream: &str) -> bool {
        self.offers.get(stream).is_some_and(|(_, taken)| taken.is_none())
    }

    /// When `worker` last claimed `stream` for an offer.
    pub fn offer_claim_by(&self, stream: &str, worker: &str) -> Option<Instant> {
        self.offer_claims.get(stream).filter(|(w, _)| w == worker).map(|(_, at)| *at)
    }

    pub fn flush(&self) {
        rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(2)).ok();
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
