//! Zero-loss delivery against a real Kafka-compatible broker (tansu, from setup) on
//! 127.0.0.1: every accepted message arrives (at least once; exactly once per id after
//! dedup), in order per stream, through a frozen broker and across a restart.

use rdkafka::message::{Headers, Message};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, Tmpfs, read_from_beginning};
use vigil_sink::{KafkaConfig, KafkaSink, Record, Spool};

fn config(broker: &Broker, spool: PathBuf) -> KafkaConfig {
    let mut c: KafkaConfig = toml::from_str(&format!("brokers = \"{}\"", broker.addr)).unwrap();
    c.spool_path = spool;
    c
}

/// Reads everything on `topic` (all partitions, from the start) until `want` distinct
/// message ids have arrived or `timeout` passes. Returns, per stream key, the payloads
/// in arrival order, and how many copies of each id came.
fn consume(
    broker: &Broker,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> (BTreeMap<String, Vec<String>>, HashMap<String, usize>) {
    let consumer = read_from_beginning(&broker.addr, topic);
    let (mut per_stream, mut copies): (BTreeMap<String, Vec<String>>, HashMap<String, usize>) = Default::default();
    let deadline = Instant::now() + timeout;
    while copies.len() < want && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        let headers = msg.headers().expect("headers");
        let id = headers.iter().find(|h| h.key == "vigil-message-id").and_then(|h| h.value).expect("message id header");
        let id = String::from_utf8_lossy(id).into_owned();
        assert!(headers.iter().any(|h| h.key == "vigil-schema"));
        let n = copies.entry(id).or_default();
        *n += 1;
        if *n == 1 {
            let key = String::from_utf8_lossy(msg.key().unwrap()).into_owned();
            per_stream.entry(key).or_default().push(String::from_utf8_lossy(msg.payload().unwrap()).into_owned());
        }
    }
    (per_stream, copies)
}

fn alert(stream: usize, seq: usize) -> serde_json::Value {
    serde_json::json!({"alert_id": format!("s{stream}@{seq}"), "stream_id": format!("s{stream}"), "seq": seq})
}

fn assert_in_order(per_stream: &BTreeMap<String, Vec<String>>) {
    for (stream, payloads) in per_stream {
        let seqs: Vec<u64> = payloads
            .iter()
            .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap()["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{stream} out of order: {seqs:?}");
    }
}

fn send_all(sink: &KafkaSink, streams: usize, per_stream: usize) -> usize {
    for seq in 0..per_stream {
        for s in 0..streams {
            let a = alert(s, seq);
            sink.send_alert(a["alert_id"].as_str().unwrap(), a["stream_id"].as_str().unwrap(), &a).unwrap();
        }
    }
    streams * per_stream
}

#[test]
fn every_alert_arrives_once_per_id_in_order_per_stream() {
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let dir = tempfile::tempdir().unwrap();
    let sink = KafkaSink::open(config(&broker, dir.path().join("spool")), None).unwrap();
    let n = send_all(&sink, 4, 50);
    sink.send_interrupt("s0@0/interrupt", "s0", &serde_json::json!({"command_id": "s0@0/interrupt"})).unwrap();
    assert_eq!(sink.flush(Duration::from_secs(30)), 0, "everything confirmed");
    let (per_stream, copies) = consume(&broker, "vigil.alerts", n, Duration::from_secs(30));
    assert_eq!(copies.len(), n);
    assert_eq!(per_stream.len(), 4);
    assert_in_order(&per_stream);
    let (_, cmds) = consume(&broker, "vigil.interrupts", 1, Duration::from_secs(10));
    assert_eq!(cmds.len(), 1);
}

#[test]
fn alerts_accepted_while_the_broker_is_frozen_arrive_after_it_returns() {
    let outage =
        Duration::from_secs(std::env::var("VIGIL_TEST_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let broker = Broker::start(&["vigil.alerts"]);
    let dir = tempfile::tempdir().unwrap();
    let sink = KafkaSink::open(config(&broker, dir.path().join("spool")), None).unwrap();
    send_all(&sink, 2, 5);
    assert_eq!(sink.flush(Duration::from_secs(30)), 0);
    broker.signal("-STOP");
    let frozen_at = Instant::now();
    // Accepted during the outage: spooled, not confirmed.
    for seq in 5..45 {
        for s in 0..2 {
            let a = alert(s, seq);
            sink.send_alert(a["alert_id"].as_str().unwrap(), a["stream_id"].as_str().unwrap(), &a).unwrap();
        }
        std::thread::sleep(outage / 50);
    }
    assert!(sink.pending() > 0, "the broker is frozen: nothing can be confirmed");
    std::thread::sleep(outage.saturating_sub(frozen_at.elapsed()));
    broker.signal("-CONT");
    assert_eq!(sink.flush(Duration::from_secs(120)), 0, "the spool drains once the broker is back");
    let (per_stream, copies) = consume(&broker, "vigil.alerts", 90, Duration::from_secs(60));
    assert_eq!(copies.len(), 90, "every alert id arrived");
    assert_in_order(&per_stream);
}

#[test]
fn what_the_spool_held_at_a_crash_is_delivered_on_restart() {
    let broker = Broker::start(&["vigil.alerts"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&broker, dir.path().join("spool"));
    {
        // A worker that accepted three alerts and was killed before Kafka confirmed them:
        // exactly what its spool holds.
        let mut spool = Spool::open(&cfg.spool_path, cfg.spool_max_bytes).unwrap();
        for seq in 0..3 {
            let a = alert(7, seq);
            let payload = serde_json::json!({"topic": "vigil.alerts", "key": "s7", "schema": "vigil.alert/1", "value": a.to_string()});
            spool.append(Record { key: format!("s7@{seq}"), payload: payload.to_string().into_bytes() }).unwrap();
        }
    }
    let sink = KafkaSink::open(cfg, None).unwrap();
    assert_eq!(sink.flush(Duration::from_secs(30)), 0);
    let (per_stream, copies) = consume(&broker, "vigil.alerts", 3, Duration::from_secs(30));
    assert_eq!(copies.len(), 3);
    assert_in_order(&per_stream);
    drop(sink);
    let reopened = Spool::open(dir.path().join("spool"), 1 << 20).unwrap();
    assert!(reopened.is_empty(), "delivered messages leave the spool");
}

#[test]
fn config_validation_names_every_mistake() {
    let mut c: KafkaConfig = toml::from_str("brokers = \"\"").unwrap();
    c.alerts_topic = "bad topic".into();
    c.security_protocol = "sasl_ssl".into();
    c.librdkafka.insert("acks".into(), "1".into());
    let e = c.validate("sink.kafka");
    assert_eq!(e.len(), 4, "{e:?}");
}

/// A broker restarted on empty storage forgets the producer's id and refuses its
/// messages for good ("unknown producer"), while librdkafka retries without reporting
/// anything. Messages wait, nothing is confirmed: the sink re-creates its producer (a new
/// idempotent id) and offers the spool again, so everything is delivered without a
/// restart, within 30 s of the topics existing again; the repeats are counted, and the
/// oldest pending message's age is reported while it waits.
#[test]
fn a_broker_restarted_empty_gets_everything_pending_without_restarting_the_sink() {
    let mut broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let dir = tempfile::tempdir().unwrap();
    let sink = KafkaSink::open(config(&broker, dir.path().join("spool")), None).unwrap();
    let before = send_all(&sink, 2, 5);
    assert_eq!(sink.flush(Duration::from_secs(30)), 0, "delivered before the restart");
    assert_eq!(sink.delivered(), before as u64);

    broker.restart_empty();
    for seq in 100..110 {
        let a = alert(0, seq);
        sink.send_alert(a["alert_id"].as_str().unwrap(), a["stream_id"].as_str().unwrap(), &a).unwrap();
    }
    // The topics come back a little later, as an operator re-creates them.
    std::thread::sleep(Duration::from_secs(3));
    broker.create_topics(&["vigil.alerts", "vigil.interrupts", "vigil.actions"]);
    let topics_back = Instant::now();
    let health = sink.health();
    let (per_stream, copies) = consume(&broker, "vigil.alerts", 10, Duration::from_secs(30));
    assert_eq!(copies.len(), 10, "all ten delivered within 30 s of the topics: {copies:?}");
    assert!(topics_back.elapsed() < Duration::from_secs(30));
    assert_in_order(&per_stream);
    assert!(health.stalls() >= 1, "the producer was re-created for the stall");
    assert!(health.reoffered() >= 10, "every pending message was offered again, and counted");
    assert_eq!(sink.flush(Duration::from_secs(10)), 0, "nothing left pending");
}

/// The spool's disk fills while the broker is frozen: alerts are refused (`io`) and
/// named on readiness. Once the broker is back, everything accepted is delivered (each id
/// at most twice), the delivered records give the disk back although their
/// acknowledgements could not be written, and nothing more is refused. When the disk
/// fills again, an interrupt command still gets in: the disk space reserved ahead for
/// interrupts is given back for it.
#[test]
fn a_full_spool_disk_refuses_alerts_keeps_interrupts_and_recovers_when_the_broker_is_back() {
    full_spool_disk(1 << 20);
}

/// The same on the 16 MiB tmpfs the fault campaign used. `-- --ignored` runs it.
#[test]
#[ignore = "full length (16 MiB of messages): run with --ignored"]
fn full_length_a_full_spool_disk_refuses_alerts_keeps_interrupts_and_recovers() {
    full_spool_disk(16 << 20);
}

fn full_spool_disk(disk_bytes: u64) {
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let dir = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(dir.path(), disk_bytes);
    let mut cfg = config(&broker, dir.path().join("spool/messages.spool"));
    cfg.spool_max_bytes = 4 * disk_bytes; // the disk fills long before the spool's own limit
    let sink = KafkaSink::open(cfg, None).unwrap();
    let padding = "x".repeat(4000);
    let payload = |id: &str| serde_json::json!({"alert_id": id, "stream_id": "s0", "padding": padding});
    let mut accepted = Vec::new();
    // Fills the disk while the broker is frozen; returns how many were refused.
    let fill = |from: usize, accepted: &mut Vec<String>| {
        let mut refused = 0;
        for seq in from..from + (disk_bytes as usize / 2000) {
            let id = format!("s0@{seq}");
            match sink.send_alert(&id, "s0", &payload(&id)) {
                Ok(()) => accepted.push(id),
                Err(e) => {
                    assert_eq!(e.reason(), "io", "{e}");
                    refused += 1;
                    if refused >= 3 {
                        break;
                    }
                }
            }
        }
        refused
    };
    broker.signal("-STOP");
    assert_eq!(fill(0, &mut accepted), 3, "the disk filled");
    assert!(accepted.len() > 50, "{} accepted", accepted.len());
    let health = sink.health();
    // Named on readiness as a warning: interrupts still have their disk reserve.
    assert!(health.warnings().iter().any(|r| r.contains("alerts are refused")), "{:?}", health.warnings());
    assert!(health.not_ready().is_empty(), "{:?}", health.not_ready());
    broker.signal("-CONT");
    assert_eq!(sink.flush(Duration::from_secs(60)), 0, "everything accepted is delivered");
    for seq in 1_000_000..1_000_050 {
        let id = format!("s0@{seq}");
        sink.send_alert(&id, "s0", &payload(&id)).expect("nothing more is refused once the broker is back");
        accepted.push(id);
    }
    assert_eq!(sink.flush(Duration::from_secs(60)), 0);

    // Full again: an interrupt command still gets in.
    broker.signal("-STOP");
    assert_eq!(fill(2_000_000, &mut accepted), 3, "the disk filled again");
    let cmd = serde_json::json!({"command_id": "s0@x/interrupt", "stream_id": "s0"});
    sink.send_interrupt("s0@x/interrupt", "s0", &cmd).expect("the interrupt gets the reserved space");
    broker.signal("-CONT");
    assert_eq!(sink.flush(Duration::from_secs(60)), 0);

    let (_, copies) = consume(&broker, "vigil.alerts", accepted.len(), Duration::from_secs(30));
    for id in &accepted {
        let n = copies.get(id).copied().unwrap_or(0);
        assert!((1..=2).contains(&n), "{id} arrived {n} times");
    }
    let (_, commands) = consume(&broker, "vigil.interrupts", 1, Duration::from_secs(30));
    assert_eq!(commands.get("s0@x/interrupt"), Some(&1));
}

/// A recovering producer drains the spool before new interrupts are refused. The broker
/// confirms again, then stalls for a moment while the spool is full: an interrupt that
/// finds no room waits for the drain and is accepted, never refused; everything accepted
/// is delivered once. (Without the wait the interrupt that found the spool full was
/// refused at once.)
#[test]
fn an_interrupt_that_finds_the_spool_full_while_the_producer_recovers_waits_for_room() {
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&broker, dir.path().join("spool"));
    cfg.spool_max_bytes = 64 << 10;
    let sink = KafkaSink::open(cfg, None).unwrap();
    let padding = "x".repeat(3000);
    let interrupt = |id: &str| serde_json::json!({"command_id": id, "stream_id": "s0", "padding": padding});

    // An outage: alerts fill the spool up to the interrupts' reserve.
    broker.signal("-STOP");
    let mut alerts = 0;
    while sink.send_alert(&format!("a@{alerts}"), "s0", &alert(0, alerts)).is_ok() {
        alerts += 1;
        assert!(alerts < 10_000, "alerts must be refused once the spool is full");
    }
    // The broker is back: as soon as it confirms, it stalls again for 1.5 s, the spool
    // not yet drained.
    broker.signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.delivered() == 0 {
        assert!(Instant::now() < deadline, "the broker confirmed nothing after its return");
        std::thread::sleep(Duration::from_millis(1));
    }
    broker.signal("-STOP");
    let stalled_at = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            broker.signal("-CONT");
        });
        let mut sent = Vec::new();
        loop {
            let id = format!("i@{}", sent.len());
            let started = Instant::now();
            if let Err(e) = sink.send_interrupt(&id, "s0", &interrupt(&id)) {
                panic!("interrupt {id} refused while the producer was recovering: {e}");
            }
            sent.push(id);
            if started.elapsed() > Duration::from_millis(500) {
                break; // it found the spool full and waited for room
            }
            assert!(
                stalled_at.elapsed() < Duration::from_secs(10),
                "the spool never filled ({} interrupts)",
                sent.len()
            );
        }
        assert!(sent.len() >= 2, "the first interrupt already waited: the spool was not refilled");
        assert!(sink.health().not_ready().is_empty(), "no interrupt was refused: {:?}", sink.health().not_ready());
        assert_eq!(sink.flush(Duration::from_secs(60)), 0, "everything accepted is delivered");
        let (_, copies) = consume(&broker, "vigil.interrupts", sent.len(), Duration::from_secs(30));
        assert_eq!(copies.len(), sent.len(), "every accepted interrupt arrived");
    });
    let (_, copies) = consume(&broker, "vigil.alerts", alerts, Duration::from_secs(30));
    assert_eq!(copies.len(), alerts, "every accepted alert arrived");
}
