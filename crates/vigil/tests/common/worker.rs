//! `vigil run` as a test peer: started with a config of the test's own (admin on a free
//! loopback port), its JSON lines collected as they come, its admin API queried over
//! plain HTTP, stopped with SIGTERM like Kubernetes would.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Lines = Arc<(Mutex<Vec<Value>>, Condvar)>;

/// The admin bearer token every test worker gets (through `VIGIL_ADMIN_TOKEN`) unless
/// the test's `env` sets its own.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Worker {
    child: Child,
    lines: Lines,
    pub admin: String,
    /// `admin.control_listen`'s address, when the config sets one.
    pub admin_control: Option<String>,
    pub rtmp: Option<String>,
    /// The WHIP endpoint's URL, when `[ingest.whip]` is configured.
    pub whip: Option<String>,
    /// The network namespace the worker runs in, if not the test's own.
    netns: Option<String>,
    dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `vigil --config CONFIG run ARGS` and waits until it listens.
    pub fn start(config: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        Self::start_in(None, config, args, env)
    }

    /// Like [`Worker::start`], inside a network namespace (its admin API is reached
    /// from a thread that enters the namespace).
    pub fn start_in(netns: Option<&super::netns::Netns>, config: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vigil.toml");
        std::fs::write(&cfg, format!("[admin]\nlisten = \"127.0.0.1:0\"\n{config}")).unwrap();
        let mut cmd = match netns {
            Some(ns) => ns.command(env!("CARGO_BIN_EXE_vigil")),
            None => Command::new(env!("CARGO_BIN_EXE_vigil")),
        };
        cmd.arg("--config")
            .arg(&cfg)
            .arg("run")
            .args(args)
            .env("VIGIL_CACHE_DIR", super::cache_dir())
            .env("VIGIL__INFER__MODELS_DIR", super::root().join("models"))
            .env("VIGIL_LOG", "info")
            .env("VIGIL_ADMIN_TOKEN", ADMIN_TOKEN)
            // Banks' high-water marks: per worker, never the machine's /var/lib.
            .env("VIGIL_STATE_DIR", dir.path().join("state"))
            .env_remove("VIGIL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        super::trust::apply(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("vigil runs");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                sink.0.lock().unwrap().push(v);
                sink.1.notify_all();
            }
        });
        let netns = netns.map(|n| n.name.clone());
        let mut w =
            Worker { child, lines, admin: String::new(), admin_control: None, rtmp: None, whip: None, netns, dir };
        let rec = w.wait_for("the worker to listen", 120, |r| r.iter().any(|l| l["event"] == "listening"));
        let listening = rec.iter().find(|l| l["event"] == "listening").unwrap();
        w.admin = listening["admin"].as_str().unwrap().to_string();
        w.admin_control = listening["admin_control"].as_str().map(str::to_string);
        w.rtmp = listening["rtmp"].as_str().map(str::to_string);
        w.whip = listening["whip"].as_str().map(str::to_string);
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_path(&self) -> std::path::PathBuf {
        let keep = std::env::temp_dir().join(format!("vigil-stderr-{}.log", self.child.id()));
        let _ = std::fs::remove_file(&keep);
        let _ = std::fs::hard_link(self.dir.path().join("stderr.log"), &keep);
        keep
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn records(&self) -> Vec<Value> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds over the lines so far; fails the test with the worker's
    /// log after `secs`.
    pub fn wait_for(&self, what: &str, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut lines = self.lines.0.lock().unwrap();
        loop {
            if done(&lines) {
                return lines.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}\nlines:\n{}\nstderr:\n{}",
                lines
                    .iter()
                    .map(|l| l.to_string().chars().take(300).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n"),
                tail(&self.stderr(), 40)
            );
            lines = self.lines.1.wait_timeout(lines, left.min(Duration::from_millis(500))).unwrap().0;
        }
    }

    /// `GET`/`POST` on the admin server, with the admin token: (status, body).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_as(Some(ADMIN_TOKEN), method, path)
    }

    /// `GET`/`POST` on the admin server with `token` (or none): (status, body).
    pub fn http_as(&self, token: Option<&str>, method: &str, path: &str) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (status, _, body) = self.request(&self.admin.clone(), method, path, &headers, b"");
        (status, body)
    }

    /// A plain HTTP/1.1 request to `addr` (in the worker's namespace): (status, head, body).
    pub fn request(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        let mut req = req.into_bytes();
        req.extend_from_slice(body);
        let addr = addr.to_string();
        let exchange = move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            // The server may answer (413) before reading a large body: a failed write is fine.
            let _ = s.write_all(&req);
            let mut resp = Vec::new();
            let _ = s.read_to_end(&mut resp);
            String::from_utf8_lossy(&resp).into_owned()
        };
        let resp = match &self.netns {
            Some(ns) => super::netns::within(ns, exchange),
            None => exchange(),
        };
        let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        (status, head.to_string(), body.to_string())
    }

    /// A metric's value from `/metrics` (summed over label sets matching `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.http("GET", "/metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The decode children of this worker: (pid, command line).
    pub fn decode_children(&self) -> Vec<(u32, String)> {
        let me = self.child.id().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string));
            if ppid.as_deref() != Some(me.as_str()) {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("media-child") {
                out.push((pid, cmdline));
            }
        }
        out
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(mut self) -> (ExitStatus, Vec<Value>) {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return (status, self.records());
            }
            assert!(Instant::now() < deadline, "the worker did not stop after SIGTERM\n{}", tail(&self.stderr(), 40));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines about one stream.
pub fn of_stream<'a>(records: &'a [Value], stream: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["stream"] == stream).collect()
}

pub fn stream_frames(records: &[Value], stream: &str) -> usize {
    records.iter().filter(|r| r["type"] == "frame" && r["stream"] == stream && r["pdq"].is_object()).count()
}

pub fn ended(records: &[Value], stream: &str) -> Option<Value> {
    records.iter().find(|r| r["type"] == "stream" && r["stream"] == stream && r["event"] == "ended").cloned()
}

/// A worker with an interrupt bank `known` holding `bank`'s hashes, an RTMP listener
/// (key `alice-key-123`), Kafka on `broker` and the console's allowlist; with the URL a
/// publisher of stream `alice` pushes to.
pub fn allowlist_worker(bank: &std::path::Path, broker: &str, dir: &std::path::Path) -> (Worker, String) {
    let w = Worker::start(
        &format!(
            "[media]\nsampling = \"keyframes\"\n\
             [[hash.banks]]\nname = \"known\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n\
             [sink.kafka]\nbrokers = \"{broker}\"\nspool_path = \"{}\"\n[allowlist]\n",
            bank.display(),
            dir.join("spool").display()
        ),
        &[],
        &[],
    );
    let url = format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().expect("the RTMP listener"));
    (w, url)
}
