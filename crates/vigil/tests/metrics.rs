//! `/metrics` against `docs/metrics.md`, both ways, during a live run: every documented
//! metric is exported with its documented type and labels, and nothing undocumented is.
//! No label may carry a stream id (unbounded: per-stream detail is on `/streams`), and
//! the typed failure labels show exactly their documented values.

mod common;

use common::metrics_doc::{check_both_ways, documented, documented_label_values, exported, exported_label_values};

use common::nginx::{Nginx, publish};
use common::worker::*;
use common::*;
use vigil_sink::testing::Broker;

#[test]
fn metrics_match_their_documentation_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&astronaut()))).unwrap();
    let broker =
        Broker::start(&["vigil.streams.lifecycle", "vigil.streams.owners", "vigil.alerts", "vigil.interrupts"]);
    let nginx = Nginx::start();
    let mut publisher = publish(&format!("rtmp://127.0.0.1:{}/live/pulled", nginx.rtmp), 60, "ball");
    let port = common::nginx::free_port();
    let w = Worker::start(
        &common::nginx::fleet_worker_config(&bank, port, &broker.addr, &dir.path().join("spool")),
        &["--pull", &format!("rtmp://127.0.0.1:{}/live/pulled", nginx.rtmp)],
        &[],
    );
    let url = format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().unwrap());
    let mut banked = common::nginx::publish_astronaut(&url, 20);
    w.wait_for("the banked stream's cut", 60, |r| r.iter().any(|x| x["event"] == "cut"));
    // Series with labels appear with their first observation (the pulled stream's
    // samples among them): wait until every documented family shows.
    let docs = documented("Worker");
    let mut body = String::new();
    wait_until("every documented metric on /metrics", 60, || {
        body = w.http("GET", "/metrics").1;
        let seen = exported(&body);
        docs.keys().all(|name| seen.contains_key(name))
    });
    let seen = exported(&body);
    assert!(docs.len() > 40, "the table was read: {} rows", docs.len());
    check_both_ways(&seen, &docs);
    // The typed failure labels: exactly the documented values, every one from the start.
    let values = documented_label_values();
    assert!(values.len() >= 5, "the label values table was read");
    for ((metric, label), want) in &values {
        assert_eq!(&exported_label_values(&body, metric, label), want, "{metric}{{{label}}}");
    }
    let _ = banked.kill();
    let _ = publisher.kill();
    let _ = banked.wait();
    let _ = publisher.wait();
}
