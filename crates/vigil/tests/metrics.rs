//! `/metrics` against `docs/metrics.md`, both ways, during a live run: every documented
//! metric is exported with its documented type and labels, and nothing undocumented is.
//! No label may carry a stream id (unbounded: per-stream detail is on `/streams`).

mod common;

use common::nginx::{Nginx, publish};
use common::worker::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vigil_sink::testing::Broker;

/// A documented metric: its type and label names.
#[derive(Debug, PartialEq)]
struct Doc {
    kind: String,
    labels: BTreeSet<String>,
}

/// The table rows of docs/metrics.md: `| name | type | labels | meaning |`.
fn documented() -> BTreeMap<String, Doc> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    let worker = text.split("\n## Worker").nth(1).expect("a Worker section");
    let worker = worker.split("\n## ").next().unwrap();
    for line in worker.lines().filter(|l| l.starts_with("| `vigil_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        assert!(out.insert(name.clone(), Doc { kind: cells[2].to_string(), labels }).is_none(), "{name} twice");
    }
    assert!(out.len() > 40, "the table was read: {} rows", out.len());
    out
}

/// The families in a scrape: name → (type, label names seen).
fn exported(body: &str) -> BTreeMap<String, Doc> {
    let mut out: BTreeMap<String, Doc> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_string(), Doc { kind: kind.to_string(), labels: BTreeSet::new() });
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.get(*f).is_some_and(|d| d.kind == "histogram")))
                .unwrap_or(name);
            let doc = out.get_mut(family).unwrap_or_else(|| panic!("a sample before its TYPE: {line}"));
            for pair in labels.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap();
                assert!(!v.contains("live/"), "a stream id in a label: {line}");
                if k != "le" {
                    doc.labels.insert(k.to_string());
                }
            }
        }
    }
    out
}

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
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = w.http("GET", "/metrics");
    let seen = exported(&body);
    let docs = documented();

    let undocumented: Vec<&String> = seen.keys().filter(|n| !docs.contains_key(*n)).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
    let missing: Vec<&String> = docs.keys().filter(|n| !seen.contains_key(*n)).collect();
    assert!(missing.is_empty(), "in docs/metrics.md but not exported: {missing:?}");
    for (name, doc) in &docs {
        let got = &seen[name];
        assert_eq!(got.kind, doc.kind, "{name}: type");
        assert!(got.labels.is_subset(&doc.labels), "{name}: labels {:?}, documented {:?}", got.labels, doc.labels);
    }
    let _ = banked.kill();
    let _ = publisher.kill();
    let _ = banked.wait();
    let _ = publisher.wait();
}
