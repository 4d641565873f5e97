//! `vigil bench streams`: how many live streams one worker holds, and how fast a banked
//! frame on a pushed stream becomes an interrupt.
//!
//! For each sampling mode and stream count, a fresh `vigil run` (this executable, the
//! embedded default config plus an RTMP listener and a bank) takes N pushed 720p30
//! H.264 streams (GOP 2 s, 2.5 Mbit/s) over loopback, replayed in real time by
//! `ffmpeg -re -c copy` from pre-encoded clips so the publishers cost little. The content
//! mix is fixed and stated: even-numbered streams are high-motion (a test pattern under
//! temporal noise, no faces), odd ones a slow zoom over a benign photo with a face.
//! Measured over a window after warm-up: coverage (samples analysed / due), CPU-s per
//! second of video (the worker and its decode children, from /proc), PSS per stream,
//! sample age at decision, near-duplicate skips. A count is held when coverage is at
//! least 99%, no sample was dropped and no queue grows (sample age p95 within 2 s).
//!
//! Latency: a stream shows a calm clip, then a banked image from a known second (a
//! keyframe there); the time from that second on air to the interrupt line is measured
//! once per injection, alongside the load of the smallest count.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct StreamsBenchArgs {
    /// Stream counts to try, ascending; the largest held in real time is reported.
    #[arg(long, value_delimiter = ',', default_values_t = [8usize, 16, 32, 48, 64])]
    streams: Vec<usize>,
    /// Sampling modes to run (keyframes, adaptive, fixed).
    #[arg(long, value_delimiter = ',', default_values_t = ["keyframes".to_string(), "adaptive".to_string(), "fixed".to_string()])]
    modes: Vec<String>,
    /// Seconds each count is measured (after a warm-up of a third of it, at least 5 s).
    #[arg(long, default_value_t = 15)]
    secs: u64,
    /// Banked-frame injections per mode, for the latency to the interrupt.
    #[arg(long, default_value_t = 20)]
    injections: usize,
    /// Streams each Python baseline reads (at a count it holds; its cost per stream is flat).
    #[arg(long, default_value_t = 4)]
    baseline_streams: usize,
    /// Skip the Python baselines (OpenCV + NudeNet, and equal work).
    #[arg(long)]
    no_baselines: bool,
    /// Also rewrite the section between `<!-- bench-streams:begin -->` and `:end -->`
    /// of the given file (docs/performance.md) with the report's tables.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Where the JSON report goes (with .md and .png beside it).
    #[arg(long, default_value = "bench-streams.json")]
    out: PathBuf,
    /// A smoke run: 2 streams, keyframes only, 8 s, 2 injections (checks the run, not speed).
    #[arg(long)]
    quick: bool,
}

/// The sample age (p95) above which a count is not held: a queue is growing once a
/// sample waits longer than the 2 s between keyframes.
const MAX_HELD_AGE_MS: f64 = 2000.0;
/// Seconds into the injection clip at which the banked image goes on air.
const INJECT_AT_SECS: f64 = 3.0;
/// A publisher's key: the stream is `rtmp/live/NAME`.
fn key(name: &str) -> String {
    format!("{name}-bench-key")
}

pub fn run(mut args: StreamsBenchArgs) -> anyhow::Result<ExitCode> {
    if args.quick {
        (args.streams, args.modes, args.secs, args.injections) = (vec![2], vec!["keyframes".into()], 8, 2);
        args.baseline_streams = 1;
    }
    anyhow::ensure!(!args.streams.is_empty() && !args.modes.is_empty(), "nothing to run");
    for m in &args.modes {
        anyhow::ensure!(["keyframes", "adaptive", "fixed"].contains(&m.as_str()), "unknown mode {m:?}");
    }
    let dir = tempfile::tempdir()?;
    let cache = vigil_worker::config::VigilConfig::load(None)?.infer.cache_dir();
    let photo = cache.join("testdata/astronaut.png");
    let banked = cache.join("testdata/skimage/coffee.png");
    for p in [&photo, &banked] {
        anyhow::ensure!(p.exists(), "{} is missing: run make setup", p.display());
    }
    let clip_secs = args.secs + args.secs / 3 + 10;
    eprintln!("bench streams: encoding the clips ({clip_secs} s each)");
    let motion = encode(
        dir.path(),
        "motion",
        &["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"],
        "noise=alls=25:allf=t",
        clip_secs,
    )?;
    let calm = encode(
        dir.path(),
        "calm",
        &["-loop", "1", "-framerate", "30", "-i", photo.to_str().unwrap_or_default()],
        "scale=1920:1080,zoompan=z='1+0.0008*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=1280x720:fps=30",
        clip_secs,
    )?;
    let inject = encode_injection(dir.path(), &photo, &banked)?;
    let bank = dir.path().join("bank.txt");
    std::fs::write(&bank, format!("{}\n", pdq_of(&banked)?))?;

    let mut levels = Vec::new();
    let mut latencies = Vec::new();
    for mode in &args.modes {
        for &n in &args.streams {
            eprintln!("bench streams: {mode}, {n} streams, {} s", args.secs);
            let level = measure(mode, n, &args, &motion, &calm, &bank, dir.path())?;
            eprintln!("  {}", level_row(&level));
            let held = level["held"].as_bool().unwrap_or(false);
            levels.push(level);
            if !held {
                break;
            }
        }
        for ingest in [Ingest::Push, Ingest::Pull] {
            eprintln!("bench streams: {mode}, {} injections, {}", args.injections, ingest.label());
            let clips = Clips { motion: &motion, calm: &calm, inject: &inject, bank: &bank };
            latencies.push(latency(mode, ingest, &args, &clips, dir.path())?);
        }
    }
    let mut baselines = Vec::new();
    if !args.no_baselines {
        for work in ["nudenet", "equal"] {
            eprintln!("bench streams: Python baseline ({work}), {} streams, {} s", args.baseline_streams, args.secs);
            baselines.push(baseline(work, args.baseline_streams, args.secs, &motion, &calm, dir.path())?);
        }
    }
    let ratios = ratios(&levels, &baselines);
    let report = json!({
        "machine": machine(),
        "content": "even streams: testsrc2 under temporal noise (no faces); odd: slow zoom over the astronaut photo (a face); 1280x720 30 fps, GOP 2 s, 2.5 Mbit/s, ffmpeg -re -c copy over loopback RTMP",
        "levels": levels,
        "latency": latencies,
        "baselines": baselines,
        "ratios": ratios,
    });
    let mut tables = String::new();
    print_table(&report, &mut tables);
    print_baselines(&report, &mut tables);
    print!("{tables}");
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let markdown = markdown(&report, &tables);
    let md = args.out.with_extension("md");
    std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    let png = args.out.with_extension("png");
    plot(&args.out, &png);
    if let Some(readme) = &args.readme {
        replace_section(readme, &markdown)?;
        eprintln!("bench streams: {} updated", readme.display());
    }
    eprintln!("bench streams: report in {}, {} and {}", args.out.display(), md.display(), png.display());
    Ok(ExitCode::SUCCESS)
}

/// The report as docs/performance.md shows it: the machine, the content, every table.
fn markdown(report: &Value, tables: &str) -> String {
    let m = &report["machine"];
    format!(
        "One run of `vigil bench streams` on {} ({} cores), {}; content: {}.\n\n{tables}",
        m["cpu"].as_str().unwrap_or("an unknown CPU"),
        m["cores"],
        m["date"].as_str().unwrap_or(""),
        report["content"].as_str().unwrap_or(""),
    )
}

/// Draws the PNG (bench/plot_streams.py, OpenCV from the test virtualenv); a missing
/// virtualenv only costs the picture.
fn plot(json: &Path, png: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/plot_streams.py");
    let python = vigil_worker::config::VigilConfig::load(None).map(|c| c.infer.cache_dir().join("venv/bin/python"));
    let drawn = python.ok().filter(|p| p.exists()).map(|p| Command::new(p).arg(&script).arg(json).arg(png).status());
    if !matches!(drawn, Some(Ok(s)) if s.success()) {
        eprintln!("bench streams: no plot ({} or the test virtualenv is missing: make setup)", script.display());
    }
}

const SECTION_BEGIN: &str = "<!-- bench-streams:begin -->";
const SECTION_END: &str = "<!-- bench-streams:end -->";

/// Replaces the text between the bench's markers in `readme` with `markdown`.
fn replace_section(readme: &Path, markdown: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(a), Some(b)) = (text.find(SECTION_BEGIN), text.find(SECTION_END)) else {
        bail!("{} has no {SECTION_BEGIN} … {SECTION_END} section", readme.display());
    };
    anyhow::ensure!(a < b, "{}: the section's markers are out of order", readme.display());
    let updated = format!("{}{SECTION_BEGIN}\n{markdown}{}", &text[..a], &text[b..]);
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({ "cpu": cpu, "cores": std::thread::available_parallelism().map_or(1, |n| n.get()), "date": date })
}

fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().context("ffmpeg (make setup)")?;
    if !out.status.success() {
        bail!("ffmpeg {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

const H264: [&str; 16] = [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
    "-b:v",
    "2500k",
    "-maxrate",
    "2500k",
];

fn encode(dir: &Path, name: &str, input: &[&str], filter: &str, secs: u64) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!("{name}.flv"));
    let secs = secs.to_string();
    let mut a: Vec<&str> = input.to_vec();
    a.extend(["-vf", filter, "-r", "30", "-t", &secs, "-bufsize", "5000k"]);
    a.extend(H264);
    a.extend(["-f", "flv", out.to_str().unwrap_or_default()]);
    ffmpeg(&a)?;
    Ok(out)
}

/// The calm photo for INJECT_AT_SECS, then the banked image (a keyframe at the switch).
fn encode_injection(dir: &Path, photo: &Path, banked: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join("inject.flv");
    let at = format!("{INJECT_AT_SECS}");
    let graph = "[0]scale=1280:720,setsar=1[a];[1]scale=1280:720,setsar=1[b];[a][b]concat=n=2:v=1[v]";
    let mut a = vec!["-loop", "1", "-framerate", "30", "-t", &at, "-i", photo.to_str().unwrap_or_default()];
    a.extend(["-loop", "1", "-framerate", "30", "-t", "6", "-i", banked.to_str().unwrap_or_default()]);
    a.extend(["-filter_complex", graph, "-map", "[v]", "-r", "30", "-force_key_frames", &at, "-bufsize", "5000k"]);
    a.extend(H264);
    a.extend(["-f", "flv", out.to_str().unwrap_or_default()]);
    ffmpeg(&a)?;
    Ok(out)
}

fn pdq_of(image: &Path) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?).arg("hash").arg(image).output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.lines().next().unwrap_or("")).context("vigil hash output")?;
    v["pdq"].as_str().map(str::to_string).context("no pdq in vigil hash output")
}

/// A running worker: its process, its stdout lines (with arrival times), its addresses.
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, Value)>>>,
    admin: String,
    rtmp: String,
}

impl Worker {
    /// A worker for `names`; with `kafka` (a broker's address) its alerts and commands
    /// also go there.
    fn start(mode: &str, names: &[String], bank: &Path, dir: &Path, kafka: Option<&str>) -> anyhow::Result<Worker> {
        let keys: String = names.iter().map(|n| format!("{n} = \"{}\"\n", key(n))).collect();
        let spool = dir.join(format!("spool-{mode}-{}-{}", names.len(), vigil_worker::output::unix_ms()));
        let kafka = kafka.map_or(String::new(), |b| {
            format!("[sink.kafka]\nbrokers = \"{b}\"\nspool_path = \"{}\"\n", spool.join("messages.spool").display())
        });
        let config = format!(
            "[media]\nsampling = \"{mode}\"\nsample_fps = 1.0\n\
             [hash]\n[[hash.banks]]\nname = \"bench\"\npath = \"{}\"\naction = \"interrupt\"\n\
             [infer]\ncapacity_streams = 10000\n\
             [ingest]\ncut_direct_publishers = false\n\
             [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_ip = 1000\n\
             [ingest.rtmp.stream_keys]\n{keys}\
             [admin]\nlisten = \"127.0.0.1:0\"\n{kafka}",
            bank.display()
        );
        let path = dir.join(format!("worker-{mode}-{}.toml", names.len()));
        std::fs::write(&path, config)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env("VIGIL_ADMIN_TOKEN", BENCH_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), v));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listening = lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|(_, v)| v["event"] == "listening")
                .map(|(_, v)| v.clone());
            if let Some(v) = listening {
                let (admin, rtmp) = (v["admin"].as_str(), v["rtmp"].as_str());
                return Ok(Worker {
                    child,
                    lines,
                    admin: admin.unwrap_or_default().to_string(),
                    rtmp: rtmp.unwrap_or_default().to_string(),
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the worker exited at start ({status}); run `vigil --config {} run` to see why", path.display());
            }
            anyhow::ensure!(Instant::now() < deadline, "the worker did not start in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn publish(&self, name: &str, clip: &Path, looped: bool) -> anyhow::Result<Child> {
        ffmpeg_publish(clip, &format!("rtmp://{}/live/{}", self.rtmp, key(name)), looped)
    }

    /// A counter or gauge from `/metrics` (summed over its label sets).
    fn metric(&self, name: &str) -> f64 {
        http_get(&self.admin, "/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The worker's living decode children (each started by one of its threads, so
    /// listed under that thread).
    fn children(&self) -> Vec<u32> {
        let pid = self.child.id();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect()
    }

    /// CPU seconds of the worker and its decode children (living and reaped).
    fn cpu_secs(&self) -> f64 {
        proc_cpu(self.child.id(), true) + self.children().into_iter().map(|c| proc_cpu(c, false)).sum::<f64>()
    }

    /// CPU seconds by stage so far: the decode children (living and reaped) from /proc,
    /// and what the worker's own threads spent per stage from its `*_cpu_seconds_total`
    /// counters; `worker_other` is the rest of the worker (ingest, hand-over, scaling).
    fn stages(&self) -> Vec<(String, f64)> {
        let own = proc_cpu(self.child.id(), false);
        let decode = self.cpu_secs() - own;
        let body = http_get(&self.admin, "/metrics");
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let mut out = vec![("decode_children".to_string(), decode)];
        let mut counted = 0.0;
        for (stage, metric) in [
            ("hash_and_match", "vigil_hash_cpu_seconds_total"),
            ("fusion", "vigil_fusion_cpu_seconds_total"),
            ("sink", "vigil_sink_cpu_seconds_total"),
        ] {
            let v: f64 = body.lines().filter(|l| l.starts_with(&format!("{metric} "))).map(value).sum();
            counted += v;
            out.push((stage.to_string(), v));
        }
        for l in body.lines().filter(|l| l.starts_with("vigil_infer_cpu_seconds_total{")) {
            let model = l.split("model=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
            counted += value(l);
            out.push((format!("model_{model}"), value(l)));
        }
        out.push(("worker_other".to_string(), (own - counted).max(0.0)));
        out
    }

    /// PSS of the worker and its children, in MiB.
    fn pss_mib(&self) -> f64 {
        let mut pids = vec![self.child.id()];
        pids.extend(self.children());
        let pss = |p: u32| -> f64 {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0.0)
        };
        pids.into_iter().map(pss).sum::<f64>() / 1024.0
    }

    fn records_since(&self, since: Instant) -> Vec<(Instant, Value)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(t, _)| *t >= since).cloned().collect()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime (+ the reaped children's, for the worker), in seconds.
fn proc_cpu(pid: u32, with_reaped: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    let ticks = if with_reaped { at(11) + at(12) + at(13) + at(14) } else { at(11) + at(12) };
    ticks / rustix::param::clock_ticks_per_second() as f64
}

fn http_get(addr: &str, path: &str) -> String {
    http_request(addr, "GET", path, "").1
}

/// The bench workers' admin token (loopback only, a fresh worker each time).
const BENCH_TOKEN: &str = "vigil-bench-admin-token";

/// One HTTP/1.1 request with the bench token: (status, body).
fn http_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {BENCH_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[((p / 100.0) * (values.len() - 1) as f64).round() as usize])
}

fn ages(records: &[(Instant, Value)], streams: &[String]) -> Value {
    let mut a: Vec<f64> = records
        .iter()
        .filter(|(_, r)| r["type"] == "frame" && streams.iter().any(|s| r["stream"] == format!("rtmp/live/{s}")))
        .filter_map(|(_, r)| r["age_ms"].as_f64())
        .collect();
    let frames = a.len();
    json!({ "frames": frames, "age_ms_p50": percentile(&mut a, 50.0), "age_ms_p95": percentile(&mut a, 95.0), "age_ms_max": percentile(&mut a, 100.0) })
}

/// Adds the coverage of `streams` (since each started, from `/streams`) to a half's figures.
fn with_coverage(mut half: Value, per_stream: &Value, streams: &[String]) -> Value {
    let (mut due, mut done) = (0.0, 0.0);
    for s in per_stream.as_array().into_iter().flatten() {
        if streams.iter().any(|n| s["stream_id"] == format!("rtmp/live/{n}")) {
            due += s["samples_due"].as_f64().unwrap_or(0.0);
            done += s["samples_analysed"].as_f64().unwrap_or(0.0);
        }
    }
    half["coverage"] = if due > 0.0 { json!(done / due) } else { Value::Null };
    half
}

/// One (mode, count) level.
fn measure(
    mode: &str,
    n: usize,
    args: &StreamsBenchArgs,
    motion: &Path,
    calm: &Path,
    bank: &Path,
    dir: &Path,
) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let w = Worker::start(mode, &names, bank, dir, None)?;
    let mut publishers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        publishers.push(w.publish(name, if i % 2 == 0 { motion } else { calm }, true)?);
    }
    std::thread::sleep(Duration::from_secs((args.secs / 3).max(5)));
    let (due0, done0, skip0, cpu0, t0) = (
        w.metric("vigil_samples_due_total"),
        w.metric("vigil_samples_analysed_total"),
        w.metric("vigil_hash_near_duplicate_skips_total"),
        w.cpu_secs(),
        Instant::now(),
    );
    let dropped0 = w.metric("vigil_media_frames_dropped_total");
    let stages0 = w.stages();
    let per_stream0: Value =
        serde_json::from_str(&http_request(&w.admin, "GET", "/streams", "").1).unwrap_or(Value::Null);
    std::thread::sleep(Duration::from_secs(args.secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let (due, done, skips) = (
        w.metric("vigil_samples_due_total") - due0,
        w.metric("vigil_samples_analysed_total") - done0,
        w.metric("vigil_hash_near_duplicate_skips_total") - skip0,
    );
    let dropped = w.metric("vigil_media_frames_dropped_total") - dropped0;
    let stages = w.stages();
    let per_stream: Value =
        serde_json::from_str(&http_request(&w.admin, "GET", "/streams", "").1).unwrap_or(Value::Null);
    let cpu = w.cpu_secs() - cpu0;
    let pss = w.pss_mib();
    let records = w.records_since(t0);
    for mut p in publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    w.stop();
    let coverage = if due > 0.0 { done / due } else { 0.0 };
    let video_secs = elapsed * n as f64;
    // Each stage's CPU per second of video, and per analysed sample (ms).
    let stage_secs: Vec<(String, f64)> = stages
        .iter()
        .map(|(name, after)| {
            let before = stages0.iter().find(|(n0, _)| n0 == name).map_or(0.0, |(_, v)| *v);
            (name.clone(), (after - before).max(0.0))
        })
        .collect();
    let by_stage: serde_json::Map<String, Value> = stage_secs
        .iter()
        .map(|(name, secs)| {
            let per_sample_ms = if done > 0.0 { secs / done * 1000.0 } else { 0.0 };
            (name.clone(), json!({ "cpu_secs_per_video_sec": secs / video_secs, "cpu_ms_per_sample": per_sample_ms }))
        })
        .collect();
    let split = HalfSplit { before: &per_stream0, after: &per_stream, stage_secs: &stage_secs, all: &names, elapsed };
    let all = ages(&records, &names);
    let age_p95 = all["age_ms_p95"].as_f64();
    let even: Vec<String> = names.iter().step_by(2).cloned().collect();
    let odd: Vec<String> = names.iter().skip(1).step_by(2).cloned().collect();
    Ok(json!({
        "mode": mode,
        "streams": n,
        "window_secs": elapsed,
        "samples_due": due,
        "samples_analysed": done,
        "coverage": coverage,
        "frames_dropped": dropped,
        // Held in real time: every sample due analysed, none dropped, and no growing
        // queue (a sample decided within one GOP of its data arriving).
        "held": coverage >= 0.99 && dropped == 0.0 && due > 0.0 && age_p95.is_some_and(|a| a <= MAX_HELD_AGE_MS),
        "cpu_secs_per_video_sec": cpu / video_secs,
        "streams_per_core_at_this_load": if cpu > 0.0 { video_secs / cpu } else { 0.0 },
        "pss_mib_per_stream": pss / n as f64,
        "near_duplicate_skip_rate": if due > 0.0 { skips / due } else { 0.0 },
        "cpu_by_stage": by_stage,
        "all": all,
        "high_motion": split.add_cpu(with_coverage(ages(&records, &even), &per_stream, &even), &even),
        "calm_with_face": split.add_cpu(with_coverage(ages(&records, &odd), &per_stream, &odd), &odd),
    }))
}

/// What a level measured, for splitting its CPU between the two halves of the mix.
struct HalfSplit<'a> {
    /// `/streams` at the start and the end of the window.
    before: &'a Value,
    after: &'a Value,
    /// CPU seconds per stage over the window.
    stage_secs: &'a [(String, f64)],
    all: &'a [String],
    elapsed: f64,
}

impl HalfSplit<'_> {
    /// A `/streams` counter summed over `streams`, over the window.
    fn delta(&self, streams: &[String], field: &str) -> f64 {
        let sum = |v: &Value| -> f64 {
            v.as_array()
                .into_iter()
                .flatten()
                .filter(|s| streams.iter().any(|n| s["stream_id"] == format!("rtmp/live/{n}")))
                .filter_map(|s| s[field].as_f64())
                .sum()
        };
        (sum(self.after) - sum(self.before)).max(0.0)
    }

    /// A half's CPU per second of video: its own decode children (measured per stream),
    /// the models' CPU in proportion to its model runs, hashing, fusion and the sink in
    /// proportion to its analysed samples, and the rest of the worker by its share of
    /// the streams. Only the decode share is measured per stream; the rest is attributed.
    fn add_cpu(&self, mut half: Value, streams: &[String]) -> Value {
        let share = |field: &str| {
            let all = self.delta(self.all, field);
            if all > 0.0 { self.delta(streams, field) / all } else { 0.0 }
        };
        let (runs, samples) = (share("model_runs"), share("samples_analysed"));
        let stage = |name: &str| self.stage_secs.iter().filter(|(n, _)| n == name).map(|(_, v)| v).sum::<f64>();
        let models: f64 = self.stage_secs.iter().filter(|(n, _)| n.starts_with("model_")).map(|(_, v)| v).sum();
        let decode = self.delta(streams, "decoder_cpu_secs");
        let per_sample = (stage("hash_and_match") + stage("fusion") + stage("sink")) * samples;
        let other = stage("worker_other") * streams.len() as f64 / self.all.len().max(1) as f64;
        let video = self.elapsed * streams.len() as f64;
        let total = decode + models * runs + per_sample + other;
        half["cpu"] = json!({
            "cpu_secs_per_video_sec": if video > 0.0 { total / video } else { 0.0 },
            "streams_per_core": if total > 0.0 { video / total } else { 0.0 },
            "decode_children": decode / video.max(1e-9),
            "models": models * runs / video.max(1e-9),
            "hash_fusion_sink": per_sample / video.max(1e-9),
            "worker_other": other / video.max(1e-9),
            "model_runs": self.delta(streams, "model_runs"),
            "samples_analysed": self.delta(streams, "samples_analysed"),
        });
        half
    }
}

/// How an injected stream reaches the worker.
#[derive(Clone, Copy, PartialEq)]
enum Ingest {
    /// Pushed to the worker's RTMP server.
    Push,
    /// Published to nginx-rtmp, pulled by the worker (started through the admin API).
    Pull,
}

impl Ingest {
    fn label(self) -> &'static str {
        match self {
            Ingest::Push => "push (RTMP to the worker)",
            Ingest::Pull => "pull (from nginx-rtmp)",
        }
    }
}

struct Clips<'a> {
    motion: &'a Path,
    calm: &'a Path,
    inject: &'a Path,
    bank: &'a Path,
}

/// Streams of load beside the injections (few: the fixed mode holds 8 per worker).
const LATENCY_LOAD: usize = 4;
/// Seconds between two injections: a few run at once, each stopped at its interrupt.
const INJECT_EVERY: Duration = Duration::from_millis(1000);

/// `args.injections` staggered injections beside `LATENCY_LOAD` streams: banked image on
/// air → interrupt line.
fn latency(mode: &str, ingest: Ingest, args: &StreamsBenchArgs, clips: &Clips, dir: &Path) -> anyhow::Result<Value> {
    let load = LATENCY_LOAD.min(args.streams[0]);
    let mut names: Vec<String> = (0..load).map(|i| format!("s{i}")).collect();
    names.extend((0..args.injections).map(|i| format!("inj{i}")));
    // Interrupt commands are timed where a platform sees them: on the broker.
    let broker = vigil_sink::testing::Broker::start(&["vigil.alerts", "vigil.interrupts"]);
    let on_broker = watch_interrupts(&broker.addr);
    let w = Worker::start(mode, &names, clips.bank, dir, Some(&broker.addr))?;
    let nginx = if ingest == Ingest::Pull { Some(Nginx::start(dir)?) } else { None };
    let mut publishers = Vec::new();
    for (i, name) in names.iter().take(load).enumerate() {
        publishers.push(w.publish(name, if i % 2 == 0 { clips.motion } else { clips.calm }, true)?);
    }
    // (stream id, banked image on air, its publisher while it runs)
    let mut pending: Vec<(String, Instant, Option<Child>)> = Vec::new();
    let (mut waits, mut line_waits) = (Vec::new(), Vec::new());
    let collect =
        |pending: &mut Vec<(String, Instant, Option<Child>)>, waits: &mut Vec<f64>, line_waits: &mut Vec<f64>| {
            for (stream, on_air, publisher) in pending.iter_mut() {
                let Some(p) = publisher.as_mut() else { continue };
                let arrived = on_broker
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(_, s)| s == stream)
                    .map(|(t, _)| *t);
                let Some(arrived) = arrived else { continue };
                waits.push(arrived.saturating_duration_since(*on_air).as_secs_f64() * 1000.0);
                let line = w
                    .records_since(*on_air - Duration::from_secs(10))
                    .into_iter()
                    .find(|(_, r)| r["type"] == "interrupt" && r["stream_id"] == stream.as_str());
                if let Some((t, _)) = line {
                    line_waits.push(t.saturating_duration_since(*on_air).as_secs_f64() * 1000.0);
                }
                let _ = p.kill();
                let _ = p.wait();
                *publisher = None;
            }
        };
    for i in 0..args.injections {
        let name = format!("inj{i}");
        let started = Instant::now();
        let (stream, p) = match &nginx {
            None => (format!("rtmp/live/{name}"), w.publish(&name, clips.inject, false)?),
            Some(n) => {
                let url = format!("rtmp://127.0.0.1:{}/live/{name}", n.rtmp);
                let p = ffmpeg_publish(clips.inject, &url, false)?;
                let body = json!({"stream_id": format!("live/{name}"), "source_url": url}).to_string();
                let (status, answer) = http_request(&w.admin, "POST", "/admin/streams", &body);
                anyhow::ensure!(status == 201, "starting the pull of {name}: {status} {answer}");
                (format!("live/{name}"), p)
            }
        };
        pending.push((stream, started + Duration::from_secs_f64(INJECT_AT_SECS), Some(p)));
        while started.elapsed() < INJECT_EVERY {
            collect(&mut pending, &mut waits, &mut line_waits);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending.iter().any(|(_, _, p)| p.is_some()) && Instant::now() < deadline {
        collect(&mut pending, &mut waits, &mut line_waits);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut missed = 0;
    for (stream, _, p) in pending.iter_mut() {
        if let Some(mut p) = p.take() {
            missed += 1;
            eprintln!("bench streams: no interrupt for {stream} on the broker within 20 s");
            let _ = p.kill();
            let _ = p.wait();
        }
    }
    for mut p in publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    w.stop();
    on_broker.1.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = waits.len();
    Ok(json!({
        "mode": mode,
        "ingest": ingest.label(),
        "measured_to": "the interrupt command read from the broker (tansu on loopback)",
        "to_worker_line_ms_p50": percentile(&mut line_waits, 50.0),
        "load_streams": load,
        "injections": args.injections,
        "interrupted": n,
        "missed": missed,
        "ms_p50": percentile(&mut waits, 50.0),
        "ms_p95": percentile(&mut waits, 95.0),
        "ms_max": percentile(&mut waits, 100.0),
    }))
}

/// Interrupt commands as they arrive on `broker` (arrival, stream id), read by a
/// thread until the flag is set.
type Arrivals = (Arc<Mutex<Vec<(Instant, String)>>>, Arc<std::sync::atomic::AtomicBool>);

fn watch_interrupts(broker: &str) -> Arrivals {
    let (seen, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let consumer = vigil_sink::testing::read_from_beginning(broker, "vigil.interrupts");
    let (s, st) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                use rdkafka::Message;
                let v: Value = m.payload().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or(Value::Null);
                if let Some(stream) = v["stream_id"].as_str() {
                    s.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), stream.to_string()));
                }
            }
        }
    });
    (seen, stop)
}

/// nginx with its RTMP module on a free loopback port, for pulled streams and the
/// baselines; stopped when dropped.
struct Nginx {
    child: Child,
    rtmp: u16,
}

impl Nginx {
    fn start(dir: &Path) -> anyhow::Result<Nginx> {
        let rtmp = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let d = dir.join(format!("nginx-{rtmp}"));
        std::fs::create_dir_all(&d)?;
        let conf = d.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\ndaemon off;\nmaster_process off;\n\
                 pid {0}/nginx.pid;\nerror_log {0}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{ live on; }} }} }}\n",
                d.display()
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&d)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nginx with its RTMP module (make setup)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", rtmp)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "nginx did not listen on {rtmp}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Nginx { child, rtmp })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ffmpeg_publish(clip: &Path, url: &str, looped: bool) -> anyhow::Result<Child> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-re"]);
    if looped {
        cmd.args(["-stream_loop", "-1"]);
    }
    Ok(cmd.arg("-i").arg(clip).args(["-c", "copy", "-f", "flv", url]).stdin(Stdio::null()).spawn()?)
}

/// The Python alternative on the same clips (`bench/baseline/python_worker.py`), reading
/// `n` streams from nginx-rtmp: its cost per second of video, coverage and whether it held.
fn baseline(work: &str, n: usize, secs: u64, motion: &Path, calm: &Path, dir: &Path) -> anyhow::Result<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("bench/baseline/python_worker.py");
    let cache = vigil_worker::config::VigilConfig::load(None)?.infer.cache_dir();
    let python = cache.join("venv/bin/python");
    anyhow::ensure!(
        script.exists() && python.exists(),
        "{} or {} is missing: run make setup",
        script.display(),
        python.display()
    );
    let nginx = Nginx::start(dir)?;
    let urls: Vec<String> = (0..n).map(|i| format!("rtmp://127.0.0.1:{}/live/b{i}", nginx.rtmp)).collect();
    let mut publishers = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        publishers.push(ffmpeg_publish(if i % 2 == 0 { motion } else { calm }, url, true)?);
    }
    let out = dir.join(format!("baseline-{work}.json"));
    let mut cmd = Command::new(&python);
    cmd.arg(&script).args(["--mode", work, "--seconds", &secs.to_string(), "--json"]).arg(&out);
    for u in &urls {
        cmd.args(["--url", u]);
    }
    let status = cmd.current_dir(&root).env("VIGIL_CACHE_DIR", &cache).stdout(Stdio::null()).status();
    for mut p in publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    anyhow::ensure!(status.as_ref().is_ok_and(|s| s.success()), "the Python baseline ({work}) failed: {status:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out)?).context("the baseline's JSON")?;
    let total = &report["total"];
    Ok(json!({
        "work": work,
        "streams": n,
        "cpu_secs_per_video_sec": total["cpu_secs_per_video_sec"],
        "coverage": total["coverage"],
        "held": total["held"],
        "streams_per_core": total["cpu_secs_per_video_sec"].as_f64().filter(|c| *c > 0.0).map(|c| 1.0 / c),
        "report": report,
    }))
}

/// Vigil's streams per core (its cheapest held level per mode) over each baseline's.
fn ratios(levels: &[Value], baselines: &[Value]) -> Value {
    let mut out = Vec::new();
    let modes: Vec<&str> = levels.iter().filter_map(|l| l["mode"].as_str()).collect();
    let mut seen = Vec::new();
    for mode in modes {
        if seen.contains(&mode) {
            continue;
        }
        seen.push(mode);
        let vigil = levels
            .iter()
            .filter(|l| l["mode"] == mode && l["held"] == true)
            .filter_map(|l| l["streams_per_core_at_this_load"].as_f64())
            .fold(None, |best: Option<f64>, v| Some(best.map_or(v, |b| b.max(v))));
        for b in baselines {
            let theirs = b["streams_per_core"].as_f64();
            out.push(json!({
                "mode": mode,
                "baseline": b["work"],
                "vigil_streams_per_core": vigil,
                "baseline_streams_per_core": theirs,
                "ratio": vigil.zip(theirs).map(|(v, t)| v / t),
            }));
        }
    }
    Value::Array(out)
}

/// One level as a row of the table (also the progress line while the bench runs).
fn level_row(l: &Value) -> String {
    format!(
        "| {} | {} | {:.2}% | {:.4} | {:.1} | {:.0} | {:.0}% | {}/{} / {}/{} | {} |",
        l["mode"].as_str().unwrap_or(""),
        l["streams"],
        l["coverage"].as_f64().unwrap_or(0.0) * 100.0,
        l["cpu_secs_per_video_sec"].as_f64().unwrap_or(0.0),
        l["streams_per_core_at_this_load"].as_f64().unwrap_or(0.0),
        l["pss_mib_per_stream"].as_f64().unwrap_or(0.0),
        l["near_duplicate_skip_rate"].as_f64().unwrap_or(0.0) * 100.0,
        l["high_motion"]["age_ms_p50"],
        l["high_motion"]["age_ms_p95"],
        l["calm_with_face"]["age_ms_p50"],
        l["calm_with_face"]["age_ms_p95"],
        if l["held"].as_bool() == Some(true) { "yes" } else { "no" },
    )
}

/// CPU by stage, in ms per analysed sample, one row per level.
fn print_stages(report: &Value, out: &mut String) {
    let levels: Vec<&Value> = report["levels"].as_array().into_iter().flatten().collect();
    let Some(first) = levels.first().and_then(|l| l["cpu_by_stage"].as_object()) else { return };
    let stages: Vec<&String> = first.keys().collect();
    let _ = writeln!(out);
    let _ = writeln!(out, "CPU by stage, ms per analysed sample:");
    let _ = writeln!(
        out,
        "| mode | streams | {} | total |",
        stages.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(stages.len()));
    for l in levels {
        let ms = |s: &str| l["cpu_by_stage"][s]["cpu_ms_per_sample"].as_f64().unwrap_or(0.0);
        let cells: Vec<String> = stages.iter().map(|s| format!("{:.1}", ms(s))).collect();
        let total: f64 = stages.iter().map(|s| ms(s)).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {total:.1} |",
            l["mode"].as_str().unwrap_or(""),
            l["streams"],
            cells.join(" | ")
        );
    }
}

/// Each half of the mix on its own: CPU per second of video by where it went.
fn print_halves(report: &Value, out: &mut String) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Each half of the mix (decode measured per stream; models by model runs, hashing/fusion/sink by samples, the rest by streams), CPU-s per video-s:"
    );
    let _ = writeln!(
        out,
        "| mode | streams | half | decode | models | hash+fusion+sink | other | total | streams/core | model runs/sample |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for l in report["levels"].as_array().into_iter().flatten() {
        for (label, key) in [("high motion", "high_motion"), ("calm, face", "calm_with_face")] {
            let c = &l[key]["cpu"];
            let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
            let per_sample = if f("samples_analysed") > 0.0 { f("model_runs") / f("samples_analysed") } else { 0.0 };
            let _ = writeln!(
                out,
                "| {} | {} | {label} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} | {per_sample:.2} |",
                l["mode"].as_str().unwrap_or(""),
                l["streams"],
                f("decode_children"),
                f("models"),
                f("hash_fusion_sink"),
                f("worker_other"),
                f("cpu_secs_per_video_sec"),
                f("streams_per_core"),
            );
        }
    }
}

fn print_table(report: &Value, out: &mut String) {
    let _ = writeln!(
        out,
        "| mode | streams | coverage | CPU-s per video-s | streams/core | PSS MiB/stream | skip rate | age p50/p95 ms (motion / calm) | held |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for l in report["levels"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", level_row(l));
    }
    print_stages(report, out);
    print_halves(report, out);
    let _ = writeln!(out);
    let _ = writeln!(out, "| mode | ingest | load | injections | interrupted | p50 ms | p95 ms | max ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for l in report["latency"].as_array().into_iter().flatten().collect::<Vec<_>>() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            l["mode"].as_str().unwrap_or(""),
            l["ingest"].as_str().unwrap_or(""),
            l["load_streams"],
            l["injections"],
            l["interrupted"],
            l["ms_p50"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
            l["ms_p95"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
            l["ms_max"].as_f64().map_or("-".into(), |v| format!("{v:.0}")),
        );
    }
}

/// The baselines and Vigil's ratio over each.
fn print_baselines(report: &Value, out: &mut String) {
    let baselines = report["baselines"].as_array().cloned().unwrap_or_default();
    if baselines.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| Python baseline | streams | coverage | CPU-s per video-s | streams/core | held |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for b in &baselines {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2}% | {:.4} | {:.1} | {} |",
            b["work"].as_str().unwrap_or(""),
            b["streams"],
            b["coverage"].as_f64().unwrap_or(0.0) * 100.0,
            b["cpu_secs_per_video_sec"].as_f64().unwrap_or(0.0),
            b["streams_per_core"].as_f64().unwrap_or(0.0),
            if b["held"].as_bool() == Some(true) { "yes" } else { "no" },
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| Vigil mode | over baseline | Vigil streams/core | baseline streams/core | ratio |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for r in report["ratios"].as_array().into_iter().flatten() {
        let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r["mode"].as_str().unwrap_or(""),
            r["baseline"].as_str().unwrap_or(""),
            f(&r["vigil_streams_per_core"]),
            f(&r["baseline_streams_per_core"]),
            r["ratio"].as_f64().map_or("-".into(), |x| format!("{x:.2}x")),
        );
    }
}
