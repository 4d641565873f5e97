//! Over capacity, streams are refused before coverage degrades: a worker given more
//! streams than its inference can analyse takes what it can hold, defers the rest (said
//! in a lifecycle record, and on `/readyz`), and every stream it took keeps its coverage.
//! Alone in its file: it measures CPU, so no other worker may share the machine.

mod common;

use common::worker::*;
use common::*;
use serde_json::Value;

#[test]
fn streams_beyond_capacity_are_deferred_and_the_admitted_ones_keep_their_coverage() {
    let dir = tempfile::tempdir().unwrap();
    // fp32 models: the int8 ones are cheap enough that six streams would all fit.
    let mut config = String::from(
        "[media]\nsampling = \"fixed\"\nsample_fps = 4.0\n[infer]\nprecision = \"fp32\"\ninference_threads = 1\nmax_utilization = 0.6\n",
    );
    for i in 0..6 {
        let clip = test_pattern_clip(dir.path(), &format!("c{i}.mp4"), 30, "mp4mux");
        config.push_str(&format!("[[ingest.pull]]\nname = \"cam{i}\"\nuri = \"file://{}\"\n", clip.display()));
    }
    let w = Worker::start(&config, &[], &[]);
    let records = w.wait_for("a deferred pull", 20, |r| r.iter().any(|x| x["event"] == "deferred"));
    let deferred: Vec<&Value> = records.iter().filter(|x| x["event"] == "deferred").collect();
    assert!(deferred[0]["reason"].as_str().unwrap().contains("capacity"), "{deferred:?}");
    let (status, body) = w.http("GET", "/readyz");
    assert_eq!(status, 503, "a worker at capacity is not ready: {body}");
    assert!(body.contains("capacity") || body.contains("fell behind"), "{body}");
    assert!(w.metric("vigil_capacity_streams", "") >= 1.0);

    // Let the admitted streams run a while, then check their coverage.
    std::thread::sleep(std::time::Duration::from_secs(15));
    let (_, body) = w.http("GET", "/streams");
    let streams: Value = serde_json::from_str(&body).unwrap();
    eprintln!("streams: {body}");
    let held = streams.as_array().unwrap();
    assert!(!held.is_empty() && held.len() < 6, "some streams admitted, not all: {body}");
    for s in held {
        let due = s["samples_due"].as_u64().unwrap();
        if due >= 20 {
            let coverage = s["coverage"].as_f64().unwrap();
            assert!(coverage >= 0.95, "an admitted stream lost coverage: {s}");
        }
    }
    let due = w.metric("vigil_samples_due_total", "");
    let analysed = w.metric("vigil_samples_analysed_total", "");
    assert!(due >= 40.0 && analysed / due >= 0.95, "worker coverage {analysed}/{due}");
}
