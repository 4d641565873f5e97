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
use vigil_sink::{KafkaConfig, KafkaSink};

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
    let sink = KafkaSink::open(cfg).unwrap();

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
