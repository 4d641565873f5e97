//! The worker's writer puts Kafka before stdout: with its stdout broken (the reader
//! gone, so every line fails with EPIPE), a worker's alerts and interrupt commands
//! still reach Kafka (tansu on 127.0.0.1).

mod common;

use common::*;
use rdkafka::message::{Headers, Message};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_sink::testing::{Broker, read_from_beginning};

/// Message ids on `topic`, waiting up to `timeout` for at least `want`.
fn message_ids(broker: &Broker, topic: &str, want: usize, timeout: Duration) -> HashSet<String> {
    let consumer = read_from_beginning(&broker.addr, topic);
    let mut ids = HashSet::new();
    let deadline = Instant::now() + timeout;
    while ids.len() < want && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.unwrap();
        let id = msg.headers().unwrap().iter().find(|h| h.key == "vigil-message-id").and_then(|h| h.value).unwrap();
        ids.insert(String::from_utf8_lossy(id).into_owned());
    }
    ids
}

#[test]
fn with_stdout_broken_alerts_and_interrupt_commands_still_reach_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let clip = still_clip(dir.path(), &astronaut(), "astronaut.mp4", 6, 2000, 480, "mp4mux");
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[media]\nsampling = \"fixed\"\nsample_fps = 2.0\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [[ingest.pull]]\nname = \"cam\"\nuri = \"file://{}\"\n\
             [sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n",
            bank.display(),
            clip.display(),
            broker.addr,
            dir.path().join("spool/messages.spool").display()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .envs(common::trust::env())
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--exit-when-idle"])
        .env("VIGIL_CACHE_DIR", cache_dir())
        .env("VIGIL__INFER__MODELS_DIR", root().join("models"))
        .env("VIGIL_LOG", "info")
        .env_remove("VIGIL_CONFIG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("vigil runs");
    // Nobody reads: every JSON line the worker writes fails with EPIPE.
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not finish\n{}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stdout: ") && log.contains("Kafka delivery goes on"), "the broken stdout is logged:\n{log}");
    let alerts = message_ids(&broker, "vigil.alerts", 1, Duration::from_secs(30));
    let commands = message_ids(&broker, "vigil.interrupts", 1, Duration::from_secs(30));
    assert!(!alerts.is_empty(), "no alert reached Kafka\n{log}");
    assert!(commands.iter().any(|c| c.ends_with("/interrupt")), "no interrupt command reached Kafka: {commands:?}");
}

/// The drain's deadline covers the Kafka flush: with the broker frozen, a worker told to
/// stop exits within its `drain_deadline_secs` (not a fixed flush after it), and its last
/// record says how many messages stay in the spool and how old the oldest is.
#[test]
fn a_drain_during_an_outage_ends_at_its_deadline_and_says_what_is_left() {
    use common::worker::Worker;
    let dir = tempfile::tempdir().unwrap();
    let clip = still_clip(dir.path(), &astronaut(), "astronaut.mp4", 30, 1500, 360, "mp4mux");
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"fixed\"\nsample_fps = 2.0\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [sink.kafka]\nbrokers = \"{}\"\nspool_path = \"{}\"\n",
            bank.display(),
            broker.addr,
            dir.path().join("spool/messages.spool").display()
        ),
        &["--pull", &format!("file://{}", clip.display())],
        &[("VIGIL__ADMIN__DRAIN_DEADLINE_SECS", "5")],
    );
    w.wait_for("the first frames", 60, |r| r.iter().any(|x| x["type"] == "frame"));
    broker.signal("-STOP");
    // Messages accepted while the broker is frozen: the alert and its command at least.
    w.wait_for("an interrupt while the broker is frozen", 60, |r| r.iter().any(|x| x["type"] == "interrupt"));
    let asked = Instant::now();
    let (status, records) = w.stop();
    let took = asked.elapsed();
    broker.signal("-CONT");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5 + 5), "the drain took {took:?}, past its 5 s deadline");
    let stopped = records.iter().find(|r| r["event"] == "stopped").expect("the stopped record");
    assert!(stopped["pending_messages"].as_u64().unwrap() >= 1, "{stopped}");
    assert!(stopped["oldest_pending_secs"].as_f64().is_some(), "{stopped}");
}
