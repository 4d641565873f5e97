//! `vigil scan`: every stage on one file or URL, in order, on this thread.
//! Decode + sample (GStreamer threads) → PDQ + bank match → models → fusion policy →
//! JSON lines on stdout, a progress bar on stderr when it is a terminal.

use crate::config::VigilConfig;
use crate::source::Input;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use vigil_core::{AlertContext, FrameSignals, ModelRef, PdqSignal, Verdict};
use vigil_fusion::{Event, StreamFusion};
use vigil_hash::{
    BankAction, BankConfig, BankState, BankStore, Hash256, VariantHasher, metrics::METRICS as HASH_METRICS,
};
use vigil_infer::{Analysis, Analyzer};

#[derive(clap::Args)]
pub struct ScanArgs {
    /// Video file, image, or URL (file://, rtmp://, rtsp://, http(s)://).
    input: String,
    /// Sampled frames per second (default from config: 1).
    #[arg(long)]
    fps: Option<f64>,
    /// Hash bank to match against (hex per line or id,hash CSV); repeatable.
    #[arg(long)]
    bank: Vec<PathBuf>,
    /// Action of the --bank banks.
    #[arg(long, default_value = "interrupt", value_parser = ["interrupt", "review", "allow"])]
    bank_action: String,
    /// Platform account id to put on alerts (as ingest would pass it).
    #[arg(long)]
    account_id: Option<String>,
    /// Platform session id to put on alerts.
    #[arg(long)]
    session_id: Option<String>,
    /// This worker's id on alerts (default: the host name).
    #[arg(long, env = "VIGIL_WORKER_ID")]
    worker_id: Option<String>,
}

#[derive(Serialize)]
struct FrameRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stream: &'a str,
    #[serde(flatten)]
    signals: &'a FrameSignals,
    /// The stream's decision as of this sample, and the policy rule behind it.
    verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// The policy conditions this sample met (before any k-of-n window).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<&'static str>,
}

/// An output line carrying a message (`alert` or `interrupt`), tagged with its type.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    message: &'a T,
}

#[derive(Serialize, Default)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    input: String,
    frames: u64,
    /// Incidents opened (one alert each, however long it lasts).
    alerts: u64,
    escalations: u64,
    /// Interrupt commands issued (at most one per incident).
    interrupts: u64,
    verdicts: BTreeMap<String, u64>,
    bank_matches: u64,
    below_quality_floor: u64,
    near_duplicate_skips: u64,
    faces: u64,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(config: Option<&Path>, args: ScanArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = VigilConfig::load(config)?;
    if let Some(fps) = args.fps {
        cfg.media.sample_fps = fps;
    }
    let action = match args.bank_action.as_str() {
        "review" => BankAction::Review,
        "allow" => BankAction::Allow,
        _ => BankAction::Interrupt,
    };
    for (i, path) in args.bank.iter().enumerate() {
        cfg.hash.banks.push(BankConfig { name: format!("cli-{i}"), action, ..BankConfig::for_path(path) });
    }
    let errors = cfg.validate();
    anyhow::ensure!(errors.is_empty(), "invalid settings: {}", errors.join("; "));

    let (store, bad_lines) = BankStore::open(&cfg.hash.banks);
    for bad in &bad_lines {
        tracing::warn!("bank line skipped: {bad}");
    }
    for st in store.status() {
        match st.state {
            BankState::Ok => {}
            BankState::Empty => tracing::warn!(bank = %st.name, "bank {} holds no hashes", st.path.display()),
            _ => anyhow::bail!("bank {}: {}", st.name, st.detail.unwrap_or_default()),
        }
    }
    let banks = store.snapshot();
    let policy = cfg.fusion.load_policy().map_err(|e| anyhow::anyhow!("fusion policy: {}", e.join("; ")))?;
    let mut fusion = StreamFusion::new(std::sync::Arc::new(policy), vigil_core::StreamId(args.input.clone()));
    let kafka = cfg.sink.kafka.clone().map(vigil_sink::KafkaSink::open).transpose().context("kafka sink")?;
    let mut analyzer = Analyzer::load(&cfg.infer).context("loading models")?;
    let context = AlertContext {
        worker_id: args.worker_id.clone().unwrap_or_else(host_name),
        account_id: args.account_id.clone(),
        session_id: args.session_id.clone(),
        models: analyzer.models().into_iter().map(|m| ModelRef { name: m.name, version: m.version }).collect(),
    };
    let mut input = Input::open(&args.input, &cfg.media)?;

    let progress = progress_bar(input.duration_ms());
    let mut sink = vigil_sink::JsonlSink::new(std::io::stdout().lock());
    let mut hasher = VariantHasher::new(&banks.crop_fractions());
    let mut last: Option<LastAnalysis> = None;
    let mut summary = Summary { kind: "summary", input: args.input.clone(), ..Default::default() };
    let started = Instant::now();
    let mut scan_error = None;

    for frame in input.by_ref() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                scan_error = Some(e.to_string());
                break;
            }
        };
        HASH_METRICS.frames_hashed.inc();
        let hashes = hasher.hash(&frame.rgb, frame.width as usize, frame.height as usize);
        let pdq = hashes.pdq;
        let mut signals = FrameSignals {
            pts_ms: frame.pts_ms,
            pdq: Some(PdqSignal { hash: pdq.hash.to_hex(), quality: pdq.quality }),
            ..Default::default()
        };
        if pdq.quality >= cfg.hash.quality_floor {
            signals.bank_matches = banks.lookup(&hashes);
        } else {
            summary.below_quality_floor += 1;
            HASH_METRICS.below_quality_floor.inc();
        }
        let analysis = match last.as_mut().filter(|l| l.reusable_for(&pdq.hash, &cfg.hash)) {
            Some(l) => {
                l.reused += 1;
                summary.near_duplicate_skips += 1;
                HASH_METRICS.near_duplicate_skips.inc();
                signals.reused_analysis_of_ms = Some(l.pts_ms);
                l.analysis.clone()
            }
            None => {
                let analysis = analyzer.analyze(&frame);
                // A failed analysis is never reused: the next sample tries again.
                last = analysis.unscanned.is_empty().then(|| LastAnalysis {
                    hash: pdq.hash,
                    pts_ms: frame.pts_ms,
                    reused: 0,
                    analysis: analysis.clone(),
                });
                analysis
            }
        };
        signals.detections = analysis.detections;
        signals.faces = analysis.faces;
        signals.nsfw_score = analysis.nsfw_score;
        signals.unscanned = analysis.unscanned;
        let outcome = fusion.observe(&signals);

        summary.frames += 1;
        summary.bank_matches += u64::from(!signals.bank_matches.is_empty());
        summary.faces += signals.faces.len() as u64;
        *summary.verdicts.entry(verdict_name(outcome.verdict)).or_default() += 1;
        sink.write(&FrameRecord {
            kind: "frame",
            stream: &args.input,
            signals: &signals,
            verdict: outcome.verdict,
            rule: outcome.rule.clone(),
            conditions: outcome.conditions.names(),
        })
        .context("writing output")?;
        for event in &outcome.events {
            match event {
                Event::Opened(_) => summary.alerts += 1,
                Event::Escalated(_) => summary.escalations += 1,
                Event::Closed(_) => {}
            }
            let alert = event.to_alert(&context, unix_ms());
            let alert_msg_id = format!("{}/{}", alert.alert_id, verdict_name_event(event));
            if let Some(k) = &kafka {
                k.send_alert(&alert_msg_id, &alert.stream_id.0, &alert).context("kafka sink")?;
            }
            sink.write(&Tagged { kind: "alert", message: &alert }).context("writing output")?;
            if let Some(cmd) = alert.interrupt_command() {
                summary.interrupts += 1;
                if let Some(k) = &kafka {
                    k.send_interrupt(&cmd.command_id, &cmd.stream_id.0, &cmd).context("kafka sink")?;
                }
                sink.write(&Tagged { kind: "interrupt", message: &cmd }).context("writing output")?;
            }
        }
        progress.set_position(frame.pts_ms);
        progress.set_message(format!("{} frames, {} alerts", summary.frames, summary.alerts));
    }
    progress.finish_and_clear();
    if let Some(k) = &kafka {
        let left = k.flush(std::time::Duration::from_secs(30));
        if left > 0 {
            eprintln!(
                "vigil: warning: {left} message(s) not yet confirmed by Kafka stay in the spool and are sent on the next start"
            );
        }
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.error = scan_error.clone();
    sink.write(&summary).context("writing output")?;

    let unscanned = summary.verdicts.get("unscanned").copied().unwrap_or(0);
    Ok(if summary.alerts > 0 {
        // An alert outranks an error: what was found must not be hidden by what failed.
        if let Some(e) = scan_error {
            eprintln!("vigil: error after {} frames: {e}", summary.frames);
        }
        ExitCode::from(1)
    } else if let Some(e) = scan_error {
        eprintln!("vigil: error: {e}");
        ExitCode::from(2)
    } else if unscanned > 0 {
        eprintln!("vigil: error: {unscanned} frame(s) could not be fully scanned");
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The last sample the models ran on, for near-duplicate skipping.
struct LastAnalysis {
    hash: Hash256,
    pts_ms: u64,
    reused: u32,
    analysis: Analysis,
}

impl LastAnalysis {
    fn reusable_for(&self, hash: &Hash256, cfg: &vigil_hash::HashConfig) -> bool {
        cfg.near_duplicate_max_distance > 0
            && self.reused < cfg.near_duplicate_max_reuse
            && self.hash.distance(hash) <= cfg.near_duplicate_max_distance
    }
}

fn verdict_name_event(e: &Event) -> &'static str {
    match e {
        Event::Opened(_) => "opened",
        Event::Escalated(_) => "escalated",
        Event::Closed(_) => "closed",
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into())
}

fn verdict_name(v: Verdict) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A bar over the media timeline when its length is known, a spinner otherwise; hidden
/// when stderr is not a terminal.
fn progress_bar(duration_ms: Option<u64>) -> ProgressBar {
    match duration_ms {
        Some(ms) if ms > 0 => {
            let bar = ProgressBar::new(ms);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg}")
                    .expect("valid template"),
            );
            bar
        }
        _ => ProgressBar::new_spinner(),
    }
}
