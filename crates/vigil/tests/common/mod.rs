//! Test harness: runs the real `vigil` binary against fixtures that the tests generate
//! with GStreamer (`gst-launch-1.0`, installed by `make setup`).
#![allow(dead_code)]

pub mod console;
pub mod metrics_doc;
pub mod netns;
pub mod nginx;
pub mod trust;
pub mod webdriver;
pub mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("VIGIL_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| root().join(".cache/vigil"))
}

pub fn astronaut() -> PathBuf {
    let p = cache_dir().join("testdata/astronaut.png");
    assert!(p.exists(), "{} is missing: run make setup", p.display());
    p
}

/// `vigil ARGS` with the repository's models and the setup cache.
pub fn vigil(args: &[&str]) -> Output {
    vigil_env(args, &[])
}

pub fn vigil_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args(args)
        .env("VIGIL_CACHE_DIR", cache_dir())
        .env("VIGIL__INFER__MODELS_DIR", root().join("models"))
        .env_remove("VIGIL_CONFIG");
    trust::apply(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("vigil runs")
}

/// The PDQ hash of an image, as `vigil hash` gives it (for test banks).
pub fn pdq_of(image: &Path) -> String {
    let out = vigil(&["hash", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stdout_json(&out)[0]["pdq"].as_str().unwrap().to_string()
}

pub fn stdout_json(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn frames(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    records.iter().filter(|r| r["type"] == "frame").collect()
}

pub fn summary(records: &[serde_json::Value]) -> &serde_json::Value {
    records.iter().find(|r| r["type"] == "summary").expect("a summary line")
}

/// Runs a gst-launch-1.0 pipeline description, failing the test with its output.
pub fn gst_launch(pipeline: &str) {
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    let out = Command::new("gst-launch-1.0").arg("-q").args(&args).output().expect("gst-launch-1.0 (make setup)");
    assert!(out.status.success(), "gst-launch-1.0 {pipeline}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts `vigil media-child` as the worker does: pipes on every side, the spec as the
/// first message on its stdin (held open: a child whose stdin closes stops at once).
pub fn media_child(spec: &vigil_media::isolate::ChildSpec) -> std::process::Child {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("media-child")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil media-child runs");
    let stdin = child.stdin.as_mut().expect("piped stdin");
    let spec = serde_json::to_string(spec).expect("a spec serialises");
    vigil_media::isolate::protocol::ToChild::Spec(spec).write(stdin).expect("the child reads its spec");
    stdin.flush().expect("the child reads its spec");
    child
}

/// Starts `gst-launch-1.0 -q PIPELINE` in the background (a live publisher), its
/// stderr going where `stderr` says.
pub fn gst_spawn(pipeline: &str, stderr: std::process::Stdio) -> std::process::Child {
    Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("gst-launch-1.0 (make setup)")
}

/// A test-pattern clip: `secs` seconds at 30 fps, H.264 in the container `mux` names.
pub fn test_pattern_clip(dir: &Path, name: &str, secs: u32, mux: &str) -> PathBuf {
    let path = dir.join(name);
    gst_launch(&format!(
        "videotestsrc num-buffers={} pattern=smpte ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! x264enc speed-preset=ultrafast key-int-max=30 ! h264parse ! {mux} ! filesink location={}",
        secs * 30,
        path.display()
    ));
    path
}

/// The still image shown for `secs` seconds, re-encoded at `kbps` and `height` lines.
pub fn still_clip(dir: &Path, image: &Path, name: &str, secs: u32, kbps: u32, height: u32, mux: &str) -> PathBuf {
    transformed_clip(
        dir,
        image,
        name,
        secs,
        kbps,
        &format!("videoscale ! video/x-raw,height={height},pixel-aspect-ratio=1/1"),
        mux,
    )
}

/// The still image through `transform` (GStreamer elements, e.g. a flip or a crop),
/// shown for `secs` seconds and re-encoded at `kbps`.
pub fn transformed_clip(
    dir: &Path,
    image: &Path,
    name: &str,
    secs: u32,
    kbps: u32,
    transform: &str,
    mux: &str,
) -> PathBuf {
    let path = dir.join(name);
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! {transform} ! videoconvert \
         ! imagefreeze num-buffers={} ! video/x-raw,framerate=25/1 ! videoconvert ! x264enc speed-preset=ultrafast bitrate={kbps} \
         ! h264parse ! {mux} ! filesink location={}",
        image.display(),
        secs * 25,
        path.display()
    ));
    path
}

/// Checks an `alert` or `interrupt` output line against its JSON Schema (the `type` tag
/// is the line's, not the message's). Returns every violation, for the assertion.
pub fn schema_violations(line: &serde_json::Value) -> Vec<String> {
    let schema = match line["type"].as_str() {
        Some("alert") => vigil_core::alert::ALERT_JSON_SCHEMA,
        Some("interrupt") => vigil_core::alert::INTERRUPT_JSON_SCHEMA,
        other => return vec![format!("not a message line: {other:?}")],
    };
    let schema: serde_json::Value = serde_json::from_str(schema).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut message = line.clone();
    message.as_object_mut().expect("an object").remove("type");
    validator.iter_errors(&message).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

/// Every alert and interrupt line of a scan, each checked against its schema.
pub fn messages(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let found: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["type"] == "alert" || r["type"] == "interrupt").collect();
    for m in &found {
        let v = schema_violations(m);
        assert!(v.is_empty(), "{m} violates its schema: {v:?}");
    }
    found
}

/// Polls `done` until it holds, failing the test after `secs`.
pub fn wait_until(what: &str, secs: u64, done: impl FnMut() -> bool) {
    wait_until_or(what, secs, done, String::new);
}

/// Like [`wait_until`]; a timeout's failure also shows `context()` (a log's tail, the
/// state seen last).
pub fn wait_until_or(what: &str, secs: u64, mut done: impl FnMut() -> bool, context: impl FnOnce() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for {what}\n{}", context());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
