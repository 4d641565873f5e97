//! The worker's live streams: admission (limits, one session per stream name), each
//! stream's supervisor (decode child) and analysis thread, and the adaptive-sampling
//! loop from fusion back to media.

use super::delivery::{FrameMsg, SinkMsg};
use super::handover::{HandOver, Hold};
use crate::analysis::StreamAnalysis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_core::{AlertContext, StreamId, Unscanned};
use vigil_fusion::{Policy, Sampling};
use vigil_hash::{BankStore, HashConfig};
use vigil_infer::{Analysis, Batcher};
use vigil_media::SampleConfig;
use vigil_media::ingest::rtmp::{Admission, PublishRequest, PublishedStream};
use vigil_media::ingest::whip;
use vigil_media::isolate::{ChildSource, FlvTag, Launcher, NoAnswer, StreamHandle};
use vigil_media::queue::StreamOutput;

/// What every stream's analysis needs, shared.
pub struct Deps {
    pub media: SampleConfig,
    pub hash: HashConfig,
    pub banks: Arc<BankStore>,
    pub policy: Arc<Policy>,
    pub batcher: Arc<Batcher>,
    pub sink: SyncSender<SinkMsg>,
    pub context: AlertContext,
    pub launcher: Launcher,
    /// Close an RTMP or WHIP publisher's connection as soon as the stream is interrupted.
    pub cut_direct_publishers: bool,
    pub capacity: Arc<super::capacity::Capacity>,
}

struct Entry {
    ingest: Ingest,
    handle: Arc<StreamHandle>,
    info: StreamInfo,
    coverage: Arc<Coverage>,
    handover: Arc<HandOver>,
    analysis: Option<std::thread::JoinHandle<()>>,
}

/// A stream as `/streams` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub stream_id: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub session_id: String,
    pub started_unix_ms: u64,
    pub dense: bool,
    pub decoder_restarts: u64,
    pub frames_dropped: u64,
    pub samples_due: u64,
    pub samples_analysed: u64,
    /// Samples the models ran on (the others reused a near-duplicate's analysis).
    pub model_runs: u64,
    /// CPU seconds its decode children used, restarts included.
    pub decoder_cpu_secs: f64,
    /// `samples_analysed / samples_due`; absent before the first sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
}

pub struct Streams {
    deps: Arc<Deps>,
    entries: Mutex<BTreeMap<String, Entry>>,
    pub draining: AtomicBool,
    /// Streams ever started, for `--exit-when-idle`.
    pub started_total: AtomicU64,
    /// Samples (due, analysed) at the last coverage measurement.
    coverage_mark: Mutex<(u64, u64)>,
}

/// What [`Streams::cut_direct`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutHere {
    Cut,
    /// Pulled by this worker: cut at its origin.
    Pulled,
    /// Live here, but in a session the command is not about.
    OtherSession,
    NotHere,
}

/// Why a stream was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("the worker is draining")]
    Draining,
    #[error("the worker is at its limit of {0} streams")]
    Full(usize),
    #[error("stream {0} is already live on this worker")]
    AlreadyLive(String),
    #[error("the worker cannot analyse another stream: {0}")]
    AtCapacity(String),
    #[error("cannot start the stream's analysis: {0}")]
    Thread(String),
}

impl Streams {
    pub fn new(deps: Deps) -> Arc<Streams> {
        Arc::new(Streams {
            deps: Arc::new(deps),
            entries: Mutex::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            started_total: AtomicU64::new(0),
            coverage_mark: Mutex::new((0, 0)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a stream unless the worker is draining, full, or already has it.
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        source: ChildSource,
        description: String,
        account_id: Option<String>,
    ) -> Result<Arc<StreamHandle>, StartError> {
        let ingest = if source == ChildSource::PushedFlv { Ingest::Rtmp } else { Ingest::Pull };
        self.start_with(id, description, account_id, ingest, |stream, media, launcher| {
            StreamHandle::start(stream, source, media, launcher)
        })
    }

    /// Like [`Streams::start`], with the stream's supervisor made by `make`.
    fn start_with(
        self: &Arc<Self>,
        id: &str,
        description: String,
        account_id: Option<String>,
        ingest: Ingest,
        make: impl FnOnce(StreamId, SampleConfig, Launcher) -> StreamHandle,
    ) -> Result<Arc<StreamHandle>, StartError> {
        if self.draining.load(Relaxed) {
            return Err(StartError::Draining);
        }
        let mut entries = self.lock();
        let max = self.deps.media.limits.max_streams as usize;
        if entries.len() >= max {
            return Err(StartError::Full(max));
        }
        if entries.contains_key(id) {
            return Err(StartError::AlreadyLive(id.to_string()));
        }
        if let Some(why) = self.deps.capacity.refuse(entries.len()) {
            return Err(StartError::AtCapacity(why));
        }
        let stream = StreamId(id.to_string());
        let handle = Arc::new(make(stream.clone(), self.deps.media.clone(), self.deps.launcher.clone()));
        let info = StreamInfo {
            stream_id: id.to_string(),
            source: description,
            account_id,
            session_id: vigil_core::ids::new_session_id(),
            started_unix_ms: crate::output::unix_ms(),
            dense: false,
            decoder_restarts: 0,
            frames_dropped: 0,
            samples_due: 0,
            samples_analysed: 0,
            model_runs: 0,
            decoder_cpu_secs: 0.0,
            coverage: None,
        };
        let coverage = Arc::new(Coverage::default());
        let handover = Arc::new(HandOver::default());
        let mut context = self.deps.context.clone();
        context.account_id = info.account_id.clone();
        context.session_id = Some(info.session_id.clone());
        let (streams, h, ctx, cov, ho) = (self.clone(), handle.clone(), context, coverage.clone(), handover.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vigil-analyze-{id}"))
            .spawn(move || {
                let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    analyze_stream(&streams, &h, ctx.clone(), ingest, &cov, &ho)
                }));
                if let Err(panic) = guarded {
                    streams.after_panic(&h, &ctx, &ho, panic.as_ref());
                }
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let _ = self.deps.sink.send(SinkMsg::lifecycle(id, "started", Some(&info.source), None));
        let entry = Entry { ingest, handle: handle.clone(), info, coverage, handover, analysis: Some(thread) };
        entries.insert(id.to_string(), entry);
        self.started_total.fetch_add(1, Relaxed);
        Ok(handle)
    }

    /// A publisher who reconnects at once (after a cut, or a dropped connection) finds its
    /// previous session still winding down: its connection is closed, but its last samples
    /// are still in analysis. It waits for that session to finish, up to
    /// [`REPUBLISH_WAIT`], and is then admitted as a new session, analysed (and cut) like
    /// the first, instead of being refused as a second publisher of a live stream. A
    /// session whose publisher is still connected is not waited for.
    fn await_previous_session(&self, id: &str) {
        let deadline = Instant::now() + REPUBLISH_WAIT;
        loop {
            let leaving = self.lock().get(id).map(|e| e.handle.is_leaving());
            if leaving != Some(true) || self.draining.load(Relaxed) || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        self.lock()
            .values()
            .map(|e| StreamInfo {
                dense: e.handle.is_dense(),
                decoder_restarts: e.handle.restarts(),
                frames_dropped: e.handle.queue.dropped(),
                samples_due: e.coverage.due.load(Relaxed),
                samples_analysed: e.coverage.analysed.load(Relaxed),
                model_runs: e.coverage.model_runs.load(Relaxed),
                decoder_cpu_secs: e.handle.decoder_cpu_secs(),
                coverage: e.coverage.ratio(),
                ..e.info.clone()
            })
            .collect()
    }

    /// The hand-over state of a live stream (fleet hand-offs).
    pub fn handover(&self, id: &str) -> Option<Arc<HandOver>> {
        self.lock().get(id).map(|e| e.handover.clone())
    }

    /// Whether a live stream has had a sample analysed yet.
    pub fn has_analysed(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.coverage.analysed.load(Relaxed) > 0)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Why the worker takes no new stream now (at capacity, or analysis fell behind).
    pub fn at_capacity(&self) -> Option<String> {
        self.deps.capacity.refuse(self.len())
    }

    /// Updates the capacity measurements; the worker's main loop calls it every second.
    pub fn measure_capacity(&self) {
        self.deps.capacity.tick(self.len());
        let idle_mode = match self.deps.media.sampling {
            vigil_media::SamplingMode::Fixed => "fixed",
            _ => "keyframes",
        };
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for ingest in [Ingest::Rtmp, Ingest::Whip, Ingest::Pull] {
            for mode in ["fixed", "keyframes", "dense"] {
                counts.insert((ingest.label(), mode), 0);
            }
        }
        for e in self.lock().values() {
            let mode = if e.handle.is_dense() { "dense" } else { idle_mode };
            *counts.entry((e.ingest.label(), mode)).or_default() += 1;
        }
        for ((ingest, mode), n) in counts {
            STREAMS_BY_MODE.with_label_values(&[ingest, mode]).set(n);
        }
        let (due, analysed) = (SAMPLES_DUE.get(), SAMPLES_ANALYSED.get());
        let mut last = self.coverage_mark.lock().unwrap_or_else(|p| p.into_inner());
        let (d_due, d_done) = (due.saturating_sub(last.0), analysed.saturating_sub(last.1));
        COVERAGE.set(if d_due == 0 { 1.0 } else { (d_done as f64 / d_due as f64).min(1.0) });
        *last = (due, analysed);
    }

    /// Stops one stream for `reason`: its decoder stops, and what it already sampled is
    /// still analysed before its analysis ends. False when it is not live here.
    pub fn stop(&self, id: &str, reason: &str) -> bool {
        let handle = self.lock().get(id).map(|e| e.handle.clone());
        match handle {
            Some(h) => {
                // The supervisor joins its thread: not under the streams' lock.
                h.stop_because(reason.to_string());
                true
            }
            None => false,
        }
    }

    /// Cuts a stream whose publisher is connected to this worker (pushed RTMP, WHIP):
    /// its decoder stops and its connection closes. A pulled stream is left running
    /// (its origin cuts it).
    /// With `session`, only that session of the stream is cut: a command about an
    /// earlier session (a late or replayed one) never cuts a publisher who came back.
    pub fn cut_direct(&self, id: &str, session: Option<&str>, reason: &str) -> CutHere {
        let entry = self.lock().get(id).map(|e| (e.ingest, e.handle.clone(), e.info.session_id.clone()));
        match entry {
            Some((_, _, current)) if session.is_some_and(|s| s != current) => CutHere::OtherSession,
            // Already on its way out (cut by the worker's own command, or ending).
            Some((_, h, _)) if h.is_leaving() => CutHere::NotHere,
            Some((ingest, h, _)) if ingest.is_direct() => {
                // The supervisor joins its thread: not under the streams' lock.
                h.stop_because(reason.to_string());
                CutHere::Cut
            }
            Some(_) => CutHere::Pulled,
            None => CutHere::NotHere,
        }
    }

    /// An analysis thread panicked (a bug): its cleanup still runs. The stream is stopped
    /// (its publisher's connection closes, its capacity is given back, a re-publish is a
    /// new session), and the stretch it could not analyse is reported unscanned, never
    /// passed as clean.
    fn after_panic(
        &self,
        handle: &StreamHandle,
        context: &AlertContext,
        handover: &HandOver,
        panic: &(dyn std::any::Any + Send),
    ) {
        let id = handle.id.0.clone();
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        ANALYSIS_PANICS.inc();
        tracing::error!(stream = %id, "the stream's analysis failed ({why}); the stream is stopped, its gap reported unscanned");
        handle.stop_because(format!("the analysis failed: {why}"));
        let deps = &self.deps;
        let session = context.session_id.clone().unwrap_or_else(vigil_core::ids::new_session_id);
        let mut analysis =
            StreamAnalysis::new(deps.policy.clone(), handle.id.clone(), session, &deps.hash, &deps.banks.snapshot());
        let (signals, outcome) = analysis.gap("analysis", &format!("the analysis failed: {why}"));
        // The decoder's queue is drained unread: its samples are part of the gap.
        while handle.queue.pop(Duration::from_millis(50)).is_some() {}
        let _ = deps.sink.send(SinkMsg::Frame(Box::new(FrameMsg {
            stream: id.clone(),
            signals,
            outcome,
            context: context.clone(),
            age_ms: None,
        })));
        let _ = deps.sink.send(SinkMsg::lifecycle(&id, "ended", None, Some("the analysis failed")));
        handover.end(None);
        self.finished(&id);
    }

    /// A live stream's source came back: `/streams` shows its new session.
    fn renew_session(&self, id: &str, session: &str) {
        if let Some(e) = self.lock().get_mut(id) {
            e.info.session_id = session.to_string();
        }
    }

    fn finished(&self, id: &str) {
        // The analysis thread removes its own entry; its JoinHandle is simply dropped.
        self.lock().remove(id);
    }

    /// Graceful stop: no new streams, every decode child stopped, every frame already
    /// sampled analysed, then the analysis threads joined, waiting until `deadline` at
    /// most; returns the streams whose analysis had not finished by then.
    pub fn drain_until(&self, deadline: Instant) -> Vec<String> {
        self.draining.store(true, Relaxed);
        let entries: Vec<(String, Arc<StreamHandle>, Option<std::thread::JoinHandle<()>>)> =
            self.lock().iter_mut().map(|(id, e)| (id.clone(), e.handle.clone(), e.analysis.take())).collect();
        for (_, handle, _) in &entries {
            handle.stop();
        }
        let mut unfinished = Vec::new();
        for (id, _, thread) in entries {
            let Some(t) = thread else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                unfinished.push(id);
            }
        }
        unfinished
    }
}

/// A stream's coverage: the samples its decoder handed over (due) and those analysed in
/// full (hashes, banks and every model). Dropped samples (analysis behind) and samples
/// the inference queue refused are due but not analysed.
#[derive(Default)]
pub struct Coverage {
    due: AtomicU64,
    analysed: AtomicU64,
    model_runs: AtomicU64,
}

impl Coverage {
    fn ratio(&self) -> Option<f64> {
        let due = self.due.load(Relaxed);
        (due > 0).then(|| self.analysed.load(Relaxed) as f64 / due as f64)
    }

    fn add(&self, due: u64, analysed: u64) {
        self.due.fetch_add(due, Relaxed);
        self.analysed.fetch_add(analysed, Relaxed);
        SAMPLES_DUE.inc_by(due);
        SAMPLES_ANALYSED.inc_by(analysed);
    }
}

/// Samples due and analysed, all streams together (their ratio is the worker's coverage).
pub static SAMPLES_DUE: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    prometheus::IntCounter::new("vigil_samples_due_total", "Samples the decoders handed to analysis (all streams)")
        .expect("valid metric")
});
pub static SAMPLES_ANALYSED: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    prometheus::IntCounter::new(
        "vigil_samples_analysed_total",
        "Samples analysed in full: hashed, matched and through every model (all streams)",
    )
    .expect("valid metric")
});

/// Decisions on analysed samples, by outcome (the stream's verdict as of the sample).
pub static DECISIONS: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    let v = prometheus::IntCounterVec::new(
        prometheus::Opts::new("vigil_decisions_total", "Samples decided, by the stream's verdict as of the sample"),
        &["decision"],
    )
    .expect("valid metric");
    for d in ["clear", "unscanned", "review", "interrupt"] {
        let _ = v.with_label_values(&[d]);
    }
    v
});
/// Analysis threads that panicked (a bug; the stream was stopped and its gap reported).
pub static ANALYSIS_PANICS: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    prometheus::IntCounter::new(
        "vigil_analysis_panics_total",
        "Stream analyses that failed with a panic (a bug): each stream was stopped and its gap reported unscanned",
    )
    .expect("valid metric")
});
/// Sessions renewed: a stream's source came back on the same worker (a reconnect after an
/// end, error or stall, or a decoder restart), by ingest kind.
pub static SESSIONS_RENEWED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    let v = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_stream_sessions_renewed_total",
            "Streams whose source came back on this worker and got a new session (new incident and command ids)",
        ),
        &["ingest"],
    )
    .expect("valid metric");
    for i in ["rtmp", "whip", "pull"] {
        let _ = v.with_label_values(&[i]);
    }
    v
});
/// Streams held, by ingest kind and what their sampling does now.
pub static STREAMS_BY_MODE: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(|| {
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "vigil_streams",
            "Streams held, by ingest (rtmp, whip, pull) and sampling mode now (fixed, keyframes, dense)",
        ),
        &["ingest", "mode"],
    )
    .expect("valid metric")
});
/// The share of due samples analysed in full over the last second, all streams.
pub static COVERAGE: std::sync::LazyLock<prometheus::Gauge> = std::sync::LazyLock::new(|| {
    prometheus::Gauge::new(
        "vigil_coverage_ratio",
        "Samples analysed in full over samples due, all streams, over the last measurement (1 when none were due)",
    )
    .expect("valid metric")
});

fn verdict_label(v: vigil_core::Verdict) -> &'static str {
    match v {
        vigil_core::Verdict::Clear => "clear",
        vigil_core::Verdict::Unscanned => "unscanned",
        vigil_core::Verdict::Review => "review",
        vigil_core::Verdict::Interrupt => "interrupt",
    }
}

/// How a stream reaches the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Pushed to this worker's RTMP server.
    Rtmp,
    /// Published to this worker's WHIP endpoint.
    Whip,
    /// Pulled by the worker (a URL or a file).
    Pull,
}

impl Ingest {
    pub fn label(self) -> &'static str {
        match self {
            Ingest::Rtmp => "rtmp",
            Ingest::Whip => "whip",
            Ingest::Pull => "pull",
        }
    }

    /// The publisher is connected to this worker, which can therefore cut it.
    fn is_direct(self) -> bool {
        self != Ingest::Pull
    }
}

/// Sample age at decision: from the frame's coded data reaching its decoder to the
/// decision on it, by ingest kind. The live path's latency, as operators watch it.
pub static SAMPLE_AGE: std::sync::LazyLock<prometheus::HistogramVec> = std::sync::LazyLock::new(|| {
    prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "vigil_sample_age_seconds",
            "From a sample's coded data reaching its decoder to the decision on it, by ingest kind",
        )
        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]),
        &["ingest"],
    )
    .expect("valid metric")
});

/// The longest a reconnecting publisher waits for its previous session to finish.
const REPUBLISH_WAIT: Duration = Duration::from_secs(5);

/// RTMP publishes become streams named `rtmp/APP/NAME`.
pub struct RtmpAdmission(pub Arc<Streams>);

struct Published(Arc<StreamHandle>);

impl PublishedStream for Published {
    fn push(&self, tag: FlvTag) {
        self.0.push(tag);
    }
    fn end(&self, reason: Option<String>) {
        self.0.end_of_push(reason);
    }
    fn analysis_ended(&self) -> Option<String> {
        self.0.ended_because()
    }
}

impl Admission for RtmpAdmission {
    fn admit(&self, r: &PublishRequest) -> Result<Box<dyn PublishedStream>, String> {
        let id = format!("rtmp/{}/{}", r.app, r.name);
        self.0.await_previous_session(&id);
        let handle = self
            .0
            .start(&id, ChildSource::PushedFlv, format!("rtmp publish from {}", r.peer), None)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Published(handle)))
    }
}

/// WHIP publishes become streams named `whip/NAME`; the decode child answers the offer.
pub struct WhipAdmission {
    pub streams: Arc<Streams>,
    pub stun_server: Option<String>,
    /// Whether the child may contact the offer's private-address candidates.
    pub private_candidates: bool,
}

/// How long a publisher waits for its answer (ICE gathering included) before a 504.
const WHIP_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

impl whip::WhipAdmission for WhipAdmission {
    fn publish(&self, r: whip::WhipRequest) -> Result<(String, Arc<StreamHandle>), whip::Refusal> {
        let id = format!("whip/{}", r.name);
        self.streams.await_previous_session(&id);
        let mut answer = None;
        let started = self.streams.start_with(
            &id,
            format!("whip publish from {}", r.peer),
            None,
            Ingest::Whip,
            |stream, media, l| {
                let (handle, rx) = StreamHandle::start_whip(
                    stream,
                    self.stun_server.clone(),
                    self.private_candidates,
                    r.offer,
                    media,
                    l,
                );
                answer = Some(rx);
                handle
            },
        );
        let handle = started.map_err(|e| {
            let status = match e {
                StartError::AlreadyLive(_) => 409,
                StartError::Draining | StartError::Full(_) | StartError::AtCapacity(_) => 503,
                StartError::Thread(_) => 500,
            };
            whip::Refusal { status, reason: e.to_string() }
        })?;
        let answered = answer.map(|rx| rx.recv_timeout(WHIP_ANSWER_TIMEOUT));
        match answered {
            Some(Ok(Ok(sdp))) => Ok((sdp, handle)),
            Some(Ok(Err(NoAnswer::BadOffer(reason)))) => Err(whip::Refusal { status: 400, reason }),
            Some(Ok(Err(NoAnswer::Failed(reason)))) => {
                // The detail is for the operator's log, not for a stranger.
                tracing::error!(stream = %id, "whip: the decode child failed before answering: {reason}");
                Err(whip::Refusal { status: 500, reason: "the worker could not start the stream".into() })
            }
            _ => {
                handle.stop_because("no answer to the WHIP offer in time".into());
                Err(whip::Refusal { status: 504, reason: "the decoder did not answer the offer in time".into() })
            }
        }
    }
}

/// One stream's analysis thread: frames from its queue through hashing, the shared
/// batcher and fusion; alerts to the sink; dense/cheap sampling back to media.
fn analyze_stream(
    streams: &Streams,
    handle: &StreamHandle,
    mut context: AlertContext,
    ingest: Ingest,
    coverage: &Coverage,
    handover: &HandOver,
) {
    let deps = &streams.deps;
    let id = handle.id.0.clone();
    let session = context.session_id.clone().unwrap_or_else(vigil_core::ids::new_session_id);
    let mut analysis =
        StreamAnalysis::new(deps.policy.clone(), handle.id.clone(), session, &deps.hash, &deps.banks.snapshot());
    let calm = Duration::from_secs(deps.media.calm_secs);
    let mut last_risk: Option<Instant> = None;
    let mut dropped_seen = 0u64;
    let send = |msg: SinkMsg| {
        // Blocking: an alert must never be dropped; a slow sink slows analysis, and the
        // stream's queue then drops its oldest frames (counted).
        let _ = deps.sink.send(msg);
    };
    let mut held = Held::default();
    // Tests only (debug builds): make this stream's analysis fail, to prove the cleanup.
    #[cfg(debug_assertions)]
    let fail_on_first_frame = std::env::var("VIGIL_FAULT_PANIC_STREAM").is_ok_and(|s| s == id);
    // Whether a decoder already recognised this stream's video: a second `Started` is
    // the source coming back after an end, an error, a stall or a restart.
    let mut decoding = false;
    loop {
        let mut age_ms = None;
        let Some(item) = handle.queue.pop(Duration::from_millis(500)) else {
            held.send_settled(handover, &mut analysis, &context, &send);
            if handle.queue.is_closed_and_empty() {
                break;
            }
            continue;
        };
        let (signals, mut outcome) = match item {
            StreamOutput::Frame(frame) => {
                #[cfg(debug_assertions)]
                if fail_on_first_frame {
                    panic!("fault injected by VIGIL_FAULT_PANIC_STREAM");
                }
                // Samples dropped since the last one (analysis was behind) are due and
                // not analysed: the stretch is reported unscanned, never passed as clean.
                let dropped = handle.queue.dropped();
                if dropped > dropped_seen {
                    deps.capacity.fell_behind();
                    let lost = dropped - dropped_seen;
                    dropped_seen = dropped;
                    coverage.add(lost, 0);
                    let reason = format!("{lost} sampled frame(s) dropped: analysis was behind");
                    let (signals, mut outcome) = analysis.gap("coverage", &reason);
                    held.route(handover, &mut analysis, &mut outcome.events);
                    send(SinkMsg::Frame(Box::new(FrameMsg {
                        stream: id.clone(),
                        signals,
                        outcome,
                        context: context.clone(),
                        age_ms: None,
                    })));
                }
                let banks = deps.banks.snapshot();
                let analysed = analysis.frame(&frame, &banks, |f| infer(&deps.batcher, &deps.capacity, f));
                age_ms =
                    (frame.arrived_unix_ms > 0).then(|| crate::output::unix_ms().saturating_sub(frame.arrived_unix_ms));
                if let Some(age) = age_ms {
                    SAMPLE_AGE.with_label_values(&[ingest.label()]).observe(age as f64 / 1000.0);
                }
                coverage.add(1, u64::from(analysed.0.unscanned.is_empty()));
                if analysed.0.reused_analysis_of_ms.is_none() {
                    coverage.model_runs.fetch_add(1, Relaxed);
                }
                analysed
            }
            StreamOutput::Gap { reason } => analysis.gap("decode", &reason),
            StreamOutput::Started { width, height, fps, decoder } => {
                let detail = format!(
                    "{width}x{height} at {} fps, decoder {decoder}",
                    fps.map_or("?".into(), |f| format!("{f:.1}"))
                );
                if decoding {
                    // The source came back on this worker: a new session, with new
                    // incident and command ids, so showing the same material again is
                    // alerted and cut again instead of continuing an incident whose
                    // command was already acted on (or lost with the old connection).
                    // What the old session still held goes out first, as it is.
                    if !held.0.is_empty() {
                        send(SinkMsg::Events {
                            events: std::mem::take(&mut held.0),
                            context: Box::new(context.clone()),
                        });
                    }
                    let session = vigil_core::ids::new_session_id();
                    // The old session's incident is closed under the old session's ids.
                    if let Some(closed) = analysis.renew_session(session.clone()) {
                        send(SinkMsg::Events { events: vec![closed], context: Box::new(context.clone()) });
                    }
                    context.session_id = Some(session.clone());
                    streams.renew_session(&id, &session);
                    SESSIONS_RENEWED.with_label_values(&[ingest.label()]).inc();
                    tracing::info!(stream = %id, session, "the source came back: a new session");
                    send(SinkMsg::lifecycle(&id, "reconnected", Some(&session), None));
                }
                decoding = true;
                send(SinkMsg::lifecycle(&id, "decoding", Some(&detail), None));
                continue;
            }
            StreamOutput::Ended { reason } => {
                send(SinkMsg::lifecycle(&id, "ended", None, reason.as_deref()));
                break;
            }
        };
        DECISIONS.with_label_values(&[verdict_label(outcome.verdict)]).inc();
        match outcome.sampling {
            Sampling::Dense => {
                last_risk = Some(Instant::now());
                handle.set_dense(true);
            }
            Sampling::Cheap if last_risk.is_none_or(|t| t.elapsed() >= calm) => handle.set_dense(false),
            Sampling::Cheap => {}
        }
        held.route(handover, &mut analysis, &mut outcome.events);
        let cut = (ingest.is_direct() && deps.cut_direct_publishers)
            .then(|| interrupt_of(&outcome.events, &context))
            .flatten();
        send(SinkMsg::Frame(Box::new(FrameMsg {
            stream: id.clone(),
            signals,
            outcome,
            context: context.clone(),
            age_ms,
        })));
        if let Some(command_id) = cut {
            // The publisher is connected to this worker: cut it now rather than wait for
            // the platform to act on the command (which is still sent). The stream's
            // end closes its RTMP connection or WebRTC session.
            tracing::warn!(stream = %id, command = %command_id, "cutting the publisher");
            let line =
                super::delivery::lifecycle_line(&id, "cut", Some(&command_id), Some("interrupted by the worker"));
            // Stopped first: a publisher reconnecting on seeing the cut finds this session
            // on its way out (and waits for it) rather than live (and refused).
            handle.stop_because(format!("cut by the worker (command {command_id})"));
            send(SinkMsg::Cut { stream: id.to_string(), command_id: command_id.clone(), line });
        }
    }
    // Ended while a previous owner's release was awaited: what was held goes out as is.
    if !held.0.is_empty() {
        send(SinkMsg::Events { events: held.0, context: Box::new(context.clone()) });
    }
    handover.end(analysis.open_incident().cloned());
    streams.finished(&id);
}

/// Alerts held back while the stream's previous owner still alerts on it (a fleet
/// hand-off; see `handover`).
#[derive(Default)]
struct Held(Vec<vigil_fusion::Event>);

impl Held {
    /// Settles the hand-over, then makes `events` what is to be sent now: nothing while
    /// holding; after a release, what the adopted incident leaves to say first.
    fn route(&mut self, handover: &HandOver, analysis: &mut StreamAnalysis, events: &mut Vec<vigil_fusion::Event>) {
        let sending = !events.is_empty() || !self.0.is_empty();
        let mut ready = match handover.poll(Instant::now(), sending) {
            Hold::Holding => {
                self.0.append(events);
                return;
            }
            Hold::Released(prior) => analysis.adopt(prior.map(|p| *p), std::mem::take(&mut self.0)),
            Hold::Off | Hold::Expired => std::mem::take(&mut self.0),
        };
        ready.append(events);
        *events = ready;
    }

    /// With no sample to carry them: sends whatever the hand-over settled.
    fn send_settled(
        &mut self,
        handover: &HandOver,
        analysis: &mut StreamAnalysis,
        context: &AlertContext,
        send: &impl Fn(SinkMsg),
    ) {
        let mut events = Vec::new();
        self.route(handover, analysis, &mut events);
        if !events.is_empty() {
            send(SinkMsg::Events { events, context: Box::new(context.clone()) });
        }
    }
}

/// The command id of the interrupt these events issue, if they issue one.
fn interrupt_of(events: &[vigil_fusion::Event], context: &AlertContext) -> Option<String> {
    events.iter().find_map(|e| e.to_alert(context, 0).interrupt_command()).map(|c| c.command_id)
}

fn infer(batcher: &Batcher, capacity: &super::capacity::Capacity, frame: &vigil_core::Frame) -> Analysis {
    let unscanned = |reason: &str| Analysis {
        unscanned: vec![Unscanned { stage: "infer".into(), reason: reason.into() }],
        ..Default::default()
    };
    match batcher.submit(frame.clone()) {
        Ok(reply) => reply.recv().unwrap_or_else(|_| unscanned("the inference threads stopped")),
        Err(_) => {
            // Analysis is behind (a model error is not: that is the stream's, not load).
            capacity.fell_behind();
            unscanned("the inference queue is full")
        }
    }
}
