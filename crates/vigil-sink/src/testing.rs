//! Test support: a real Kafka-compatible broker (tansu, installed by `make setup` into
//! the cache) on a free 127.0.0.1 port, with topics created, stopped when dropped. Used
//! by this crate's tests, the end-to-end tests and the benchmarks; behind the
//! `test-support` feature, so never built into the worker.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Partitions of every topic the test broker creates.
pub const PARTITIONS: i32 = 3;

/// A consumer that reads all `PARTITIONS` partitions of `topic` from the beginning,
/// committing nothing: what a test needs to see everything a broker holds.
/// Reads `consumer` until `done` holds for what it read, or `timeout` passes: what it
/// read either way (the caller asserts on it, with the messages in its failure).
pub fn consume_until(
    consumer: &BaseConsumer,
    timeout: std::time::Duration,
    mut done: impl FnMut(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(100)) {
            got.push(m.detach());
        }
    }
    got
}

pub fn read_from_beginning(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vigil-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("a partition offset");
    }
    consumer.assign(&tpl).expect("partitions assigned");
    consumer
}

fn tansu() -> PathBuf {
    let cache = std::env::var_os("VIGIL_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/vigil"));
    let bin = cache.join("bin/tansu");
    assert!(bin.exists(), "{} is missing: run make setup", bin.display());
    bin
}

/// tansu on `127.0.0.1:port`, listening when this returns.
fn spawn(port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Broker {
    /// Starts tansu (in-memory storage) and creates `topics` (and `vigil.actions`). Panics with the reason if
    /// it cannot: this is for tests.
    pub fn start(topics: &[&str]) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port();
        let broker = Broker { child: spawn(port), addr: format!("127.0.0.1:{port}") };
        // Every worker with Kafka reports the cuts it makes itself on vigil.actions (the
        // default `actions_topic`), so a deployment has it, and so does every test broker.
        let standard = (!topics.contains(&"vigil.actions")).then_some("vigil.actions");
        broker.create_topics(&topics.iter().copied().chain(standard).collect::<Vec<_>>());
        broker
    }

    /// Creates topics (`PARTITIONS` partitions each).
    pub fn create_topics(&self, topics: &[&str]) {
        let url = format!("tcp://{}", self.addr);
        for t in topics {
            let out = Command::new(tansu())
                .args(["topic", "create", t, "--broker", &url, "--partitions", &PARTITIONS.to_string()])
                .output()
                .expect("tansu topic create runs");
            assert!(out.status.success(), "topic create {t}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// Kills the broker and starts a new one on the same address with nothing in it (the
    /// in-memory store is gone: no topics, no producer ids), as a broker restarted on
    /// empty storage comes back.
    pub fn restart_empty(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
        self.child = spawn(port);
    }

    /// Sends a signal (`-STOP` freezes the broker with its state, `-CONT` resumes it).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `bytes` mounted on `dir` (the tests run as root, as CI does), unmounted
/// when dropped: a spool disk that fills.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &std::path::Path, bytes: u64) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "mount a tmpfs (root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Writes `name` until the disk refuses more: the disk is full.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path).expect("filler file");
        let block = [0u8; 4096];
        while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
