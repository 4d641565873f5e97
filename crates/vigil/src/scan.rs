//! `vigil scan`: every stage on one file or URL, in order, on this thread.
//! Decode + sample (GStreamer threads) → PDQ + bank match → models → fusion policy →
//! JSON lines on stdout, a progress bar on stderr when it is a terminal.

use crate::source::Input;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use vigil_core::{AlertContext, ModelRef};
use vigil_hash::{BankAction, BankConfig, BankState, BankStore};
use vigil_infer::Analyzer;
use vigil_worker::analysis::StreamAnalysis;
use vigil_worker::config::VigilConfig;
use vigil_worker::output::{FrameRecord, deliver, host_name, verdict_name};

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
    /// Also publish the scan's alerts to Kafka (`[sink.kafka]`), labelled as a file
    /// scan (`origin: file_scan`), never as a live stream; no interrupt command is
    /// published. Without it a scan writes to stdout only, whatever the config says.
    #[arg(long)]
    publish: bool,
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
    // A scan is one session of its input: the platform's session id when given, else a
    // fresh one, so two scans of one file never share an incident id.
    let session = args.session_id.clone().unwrap_or_else(vigil_core::ids::new_session_id);
    // The input as alerts and records show it: a URL's credentials never leave.
    let shown = vigil_core::redact::uri(&args.input);
    let mut stream = StreamAnalysis::new(
        std::sync::Arc::new(policy),
        vigil_core::StreamId(shown.clone()),
        session.clone(),
        &cfg.hash,
        &banks,
    );
    // The input first: one that cannot be scanned (no video, unreachable) fails before
    // the models load.
    let mut input = Input::open(&args.input, &cfg.media)?;
    anyhow::ensure!(
        !args.publish || cfg.sink.kafka.is_some(),
        "--publish needs a Kafka cluster: [sink.kafka] in the config (or VIGIL__SINK__KAFKA)"
    );
    let kafka = match cfg.sink.kafka.clone().filter(|_| args.publish) {
        Some(k) => {
            // A scan writes alerts like a worker does, signed with the worker's key.
            let trust = cfg.open_trust(vigil_trust::Role::Worker, true, false).context("[trust]")?;
            Some(vigil_sink::KafkaSink::open(k, trust.signer().cloned()).context("kafka sink")?)
        }
        None => {
            if cfg.sink.kafka.is_some() {
                eprintln!(
                    "vigil scan: not publishing to Kafka (a scan is not a live stream; --publish sends its alerts, labelled as a file scan)"
                );
            }
            None
        }
    };
    let mut analyzer = Analyzer::load(&cfg.infer).context("loading models")?;
    let context = AlertContext {
        worker_id: args.worker_id.clone().unwrap_or_else(host_name),
        account_id: args.account_id.clone(),
        session_id: Some(session),
        models: analyzer.models().into_iter().map(|m| ModelRef { name: m.name, version: m.version }).collect(),
        origin: Some(vigil_core::AlertOrigin::FileScan),
    };

    let progress = progress_bar(input.duration_ms());
    let mut sink = vigil_sink::JsonlSink::new(std::io::stdout().lock());
    let mut summary = Summary { kind: "summary", input: shown.clone(), ..Default::default() };
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
        let (signals, outcome) = stream.frame(&frame, &banks, |f| analyzer.analyze(f));
        summary.frames += 1;
        summary.bank_matches += u64::from(!signals.bank_matches.is_empty());
        summary.faces += signals.faces.len() as u64;
        *summary.verdicts.entry(verdict_name(outcome.verdict)).or_default() += 1;
        let frame_record = FrameRecord {
            kind: "frame",
            stream: &shown,
            signals: &signals,
            verdict: outcome.verdict,
            rule: outcome.rule.clone(),
            conditions: outcome.conditions.names(),
            age_ms: None,
        };
        let done = deliver(Some(&frame_record), &outcome.events, &context, &mut sink, kafka.as_ref());
        if let Some(e) = done.output_error {
            return Err(e).context("writing output");
        }
        anyhow::ensure!(done.spool_refused == 0, "{} message(s) refused by the Kafka sink", done.spool_refused);
        let counts = done.counts;
        summary.alerts += counts.opened;
        summary.escalations += counts.escalated;
        summary.interrupts += counts.interrupts;
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
    summary.below_quality_floor = stream.stats.below_quality_floor;
    summary.near_duplicate_skips = stream.stats.near_duplicate_skips;
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
