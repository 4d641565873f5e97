//! Fault injection with librdkafka's own mock cluster (`rdkafka::mocking`, brokers on
//! 127.0.0.1): produce requests that fail with retriable errors and dropped connections
//! on the way, a broker that goes down and comes back. The idempotent producer behind
//! the spool must deliver every accepted alert exactly once, in order per stream, and
//! leave nothing pending.

use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use vigil_sink::testing::{PARTITIONS, read_from_beginning};
use vigil_sink::{KafkaConfig, KafkaSink, KafkaSinkError, SpoolError};

const TOPIC: &str = "vigil.alerts";

fn consume_all(bootstrap: &str, want: usize) -> (HashMap<String, usize>, BTreeMap<String, Vec<u64>>) {
    let consumer = read_from_beginning(bootstrap, TOPIC);
    let (mut copies, mut order): (HashMap<String, usize>, BTreeMap<String, Vec<u64>>) = Default::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                *copies.entry(v["alert_id"].as_str().unwrap().to_string()).or_default() += 1;
                order.entry(v["stream_id"].as_str().unwrap().to_string()).or_default().push(v["seq"].as_u64().unwrap());
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None if copies.len() >= want => {
                // Everything is here; stay a moment longer to see any duplicate.
                let until = *quiet_until.get_or_insert(Instant::now() + Duration::from_secs(2));
                if Instant::now() > until {
                    break;
                }
            }
            None => {}
        }
    }
    (copies, order)
}

#[test]
fn injected_produce_errors_and_a_broker_outage_lose_and_duplicate_nothing() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    assert!(bootstrap.split(',').all(|b| b.starts_with("127.0.0.1:")), "loopback only: {bootstrap}");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: KafkaConfig = toml::from_str(&format!("brokers = \"{bootstrap}\"")).unwrap();
    cfg.spool_path = dir.path().join("spool");
    let sink = KafkaSink::open(cfg, None).unwrap();

    // Retriable failures of the next produce requests, and a dropped connection.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ],
    );
    let send = |from: usize, to: usize| {
        for seq in from..to {
            for s in 0..3 {
                let a =
                    serde_json::json!({"alert_id": format!("s{s}@{seq}"), "stream_id": format!("s{s}"), "seq": seq});
                sink.send_alert(a["alert_id"].as_str().unwrap(), a["stream_id"].as_str().unwrap(), &a).unwrap();
            }
        }
    };
    send(0, 20);
    // A broker goes down with messages in flight, and comes back.
    mock.broker_down(1).unwrap();
    send(20, 40);
    std::thread::sleep(Duration::from_secs(2));
    mock.broker_up(1).unwrap();
    send(40, 60);
    assert_eq!(sink.flush(Duration::from_secs(60)), 0, "every accepted alert confirmed; nothing left in the spool");
    assert_eq!(sink.pending(), 0);

    let (copies, order) = consume_all(&bootstrap, 180);
    assert_eq!(copies.len(), 180, "every alert arrived");
    let dupes: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "the idempotent producer wrote nothing twice: {dupes:?}");
    for (stream, seqs) in &order {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{stream} out of order: {seqs:?}");
    }
}

fn sink_on(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>, dir: &std::path::Path) -> KafkaSink {
    let mut cfg: KafkaConfig = toml::from_str(&format!("brokers = \"{}\"", mock.bootstrap_servers())).unwrap();
    cfg.spool_path = dir.join("spool");
    KafkaSink::open(cfg, None).unwrap()
}

fn send_alerts(sink: &KafkaSink, stream: &str, seqs: std::ops::Range<usize>) {
    for seq in seqs {
        let a = serde_json::json!({"alert_id": format!("{stream}@{seq}"), "stream_id": stream, "seq": seq});
        sink.send_alert(a["alert_id"].as_str().unwrap(), stream, &a).unwrap();
    }
}

fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Message ids on `topic` (from the `vigil-message-id` header) and their copies.
fn message_ids(bootstrap: &str, topic: &str, want: usize) -> HashMap<String, usize> {
    use rdkafka::message::Headers;
    let consumer = read_from_beginning(bootstrap, topic);
    let mut ids: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let h = m.headers().unwrap().iter().find(|h| h.key == "vigil-message-id").unwrap();
            *ids.entry(String::from_utf8_lossy(h.value.unwrap()).into_owned()).or_default() += 1;
        }
    }
    ids
}

#[test]
fn a_fatal_producer_error_is_counted_reported_and_the_producer_re_created() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&mock, dir.path());
    let health = sink.health();
    // A head-of-line produce request refused as out of sequence: the idempotent producer
    // can no longer vouch for order or once-ness and raises a fatal error. Three times:
    // the first re-created producers hit it too.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 3]);
    send_alerts(&sink, "s0", 0..10);
    wait_until("the fatal error on /readyz", Duration::from_secs(20), || {
        health.warnings().iter().any(|r| r.contains("fatal error"))
    });
    assert!(health.fatal_errors() >= 1);
    assert_eq!(sink.flush(Duration::from_secs(60)), 0, "a re-created producer delivered everything pending");
    assert!(health.recreated() >= 1, "the producer was re-created");
    assert_eq!(health.fatal_errors(), health.recreated(), "each fatal error counted once, each answered");
    // Accepted after the re-creation too.
    send_alerts(&sink, "s0", 10..15);
    assert_eq!(sink.flush(Duration::from_secs(30)), 0);
    let ids = message_ids(&mock.bootstrap_servers(), TOPIC, 15);
    assert_eq!(ids.len(), 15, "{ids:?}");
    assert!(!health.warnings().iter().any(|r| r.contains("fatal error")), "over: {:?}", health.warnings());
    assert!(health.not_ready().is_empty(), "{:?}", health.not_ready());
}

#[test]
fn a_failed_delivery_report_is_offered_again_while_the_process_runs() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&mock, dir.path());
    let health = sink.health();
    // Not retriable for librdkafka: the delivery report fails.
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2]);
    send_alerts(&sink, "s1", 0..3);
    assert_eq!(sink.flush(Duration::from_secs(30)), 0, "offered again with backoff, then confirmed");
    assert!(health.retried() >= 1, "a retry happened");
    assert_eq!(message_ids(&mock.bootstrap_servers(), TOPIC, 3).len(), 3);
}

#[test]
fn a_full_spool_refuses_alerts_and_still_takes_the_interrupt_command() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    mock.create_topic("vigil.interrupts", PARTITIONS, 1).unwrap();
    // The broker is away: nothing is confirmed, the spool fills.
    mock.broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: KafkaConfig = toml::from_str(&format!("brokers = \"{}\"", mock.bootstrap_servers())).unwrap();
    cfg.spool_path = dir.path().join("spool");
    cfg.spool_max_bytes = 64 << 10;
    let sink = KafkaSink::open(cfg, None).unwrap();
    let health = sink.health();
    let pad = "x".repeat(2000);
    let mut accepted = 0;
    let refused = loop {
        let a = serde_json::json!({"alert_id": format!("s2@{accepted}"), "stream_id": "s2", "pad": pad});
        match sink.send_alert(a["alert_id"].as_str().unwrap(), "s2", &a) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "the spool never filled");
    };
    assert!(matches!(refused, KafkaSinkError::Spool(SpoolError::Full { .. })), "{refused}");
    // Refused alerts and a full spool are warnings: the worker stays ready while it
    // takes interrupt commands.
    assert!(health.warnings().iter().any(|r| r.contains("spool")), "{:?}", health.warnings());
    assert!(health.not_ready().is_empty(), "{:?}", health.not_ready());
    let cmd = serde_json::json!({"command_id": "s2@0/interrupt", "stream_id": "s2", "pad": pad});
    sink.send_interrupt("s2@0/interrupt", "s2", &cmd).expect("the interrupt command uses the reserve");
    assert!(sink.send_alert("s2@late", "s2", &serde_json::json!({"alert_id": "s2@late"})).is_err());
    assert_eq!(health.refused(), 2, "both refused alerts counted");
    // The reserve full too: interrupts are refused, and only that makes it not ready.
    let mut n = 1;
    while sink.send_interrupt(&format!("s2@{n}/interrupt"), "s2", &cmd).is_ok() {
        n += 1;
        assert!(n < 100, "the reserve never filled");
    }
    assert!(health.not_ready().iter().any(|r| r.contains("interrupt command was refused")), "{:?}", health.not_ready());
    mock.broker_up(1).unwrap();
    assert_eq!(sink.flush(Duration::from_secs(60)), 0);
    assert!(health.not_ready().is_empty(), "{:?}", health.not_ready());
    assert_eq!(message_ids(&mock.bootstrap_servers(), "vigil.interrupts", n).len(), n);
    assert_eq!(message_ids(&mock.bootstrap_servers(), TOPIC, accepted).len(), accepted);
}
