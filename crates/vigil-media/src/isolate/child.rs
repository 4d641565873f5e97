//! The decode child: runs in its own process (`vigil media-child`), confined by
//! rlimits, and turns one source into sampled analysis frames on stdout.
//!
//! Pipeline: source (`urisourcebin`, or `appsrc` fed with pushed FLV from stdin) →
//! `parsebin` → [unit gate: limits, keyframe-only] → `decodebin` → [frame gate] →
//! `pipelines/sample-live.gst` (convert, scale to analysis size, appsink).
//! Everything that could be a limit violation is checked on the parsed stream's caps,
//! before a decoder allocates anything.

use super::jail::Network;
use super::protocol::{ChildEvent, Command, FromChild, ToChild};
use crate::SampleConfig;
use crate::events::ChildFailure;
use crate::sampling::{SamplingGate, Unit};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAMPLE_CHAIN: &str = include_str!("../../../../pipelines/sample-live.gst");
const HARDWARE_DECODERS: [&str; 3] = ["nvh264dec", "nvh265dec", "nvv4l2decoder"];
/// Exit codes the supervisor reads: the kind of ending, when no event said it.
pub const EXIT_ENDED: i32 = 0;
pub const EXIT_FAILED: i32 = 3;
pub const EXIT_CONFINE: i32 = 4;

/// What a child is asked to decode, sent as JSON in the first message on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub source: ChildSource,
    pub media: SampleConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildSource {
    /// Pulled by the child itself: file://, rtmp://, rtsp://, srt://, http(s):// (HLS).
    Uri(String),
    /// Pushed to the worker (RTMP publish); FLV arrives on stdin.
    PushedFlv,
    /// A WHIP publish: the SDP offer arrives on stdin, the answer leaves on stdout, and
    /// the media comes over WebRTC (ICE, DTLS-SRTP) straight to this child.
    Whip {
        stun_server: Option<String>,
        /// Whether the offer's candidates may be private addresses (`[ingest.whip]
        /// private_candidates`); the child drops the others before `webrtcbin` sees them.
        #[serde(default)]
        private_candidates: bool,
    },
}

#[derive(Default)]
struct Counters {
    input_bytes: AtomicU64,
    units_in: AtomicU64,
    units_decoded: AtomicU64,
    frames_out: AtomicU64,
    caps_seen: AtomicU32,
}

/// State shared between the pad probes (streaming threads) and the main loop.
struct Shared {
    media: SampleConfig,
    gate: SamplingGate,
    counters: Counters,
    /// Set by a probe that found the stream over a limit: (kind, reason).
    refusal: Mutex<Option<(ChildFailure, String)>>,
    started: Mutex<Option<ChildEvent>>,
    video_linked: AtomicBool,
    /// The parsed video pad feeding the decoder (where keyframe requests go upstream).
    video_pad: Mutex<Option<gst::Pad>>,
    /// The decoder's own sink pad, inside decodebin: where drains are asked for (a
    /// parser in front of it would hold the request back until the next unit).
    decoder_sink: Mutex<Option<gst::Pad>>,
    /// When each recent decoded unit entered the decoder: (pts ms, unix ms), for the
    /// frames' sample age. Bounded: a decoder holds far fewer frames than this.
    arrivals: Mutex<std::collections::VecDeque<(u64, u64)>>,
}

const ARRIVALS_KEPT: usize = 64;

impl Shared {
    fn unit_arrived(&self, pts_ms: Option<u64>) {
        let Some(pts) = pts_ms else { return };
        let mut a = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        if a.len() == ARRIVALS_KEPT {
            a.pop_front();
        }
        a.push_back((pts, unix_ms()));
    }

    /// When the unit of the frame at `pts_ms` entered the decoder; the latest unit at
    /// or before it when the decoder moved the timestamp a little; now if none is known.
    fn arrival_of(&self, pts_ms: u64) -> u64 {
        let a = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        a.iter().rev().find(|(pts, _)| *pts <= pts_ms).map_or_else(unix_ms, |&(_, at)| at)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    fn refuse(&self, kind: ChildFailure, reason: String) {
        let mut r = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert((kind, reason));
    }
}

/// Limits the child process itself before it touches any media: a user namespace of
/// its own when started as root, address space, no core dumps (a core would write
/// frames to disk), few descriptors, no privilege gain, and death with the worker.
/// Runs while the child has one thread (a user namespace needs that).
pub(super) fn confine(isolation: &crate::config::IsolationConfig) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    if isolation.user_namespace {
        super::jail::leave_root()?;
    }
    let limits = || -> rustix::io::Result<()> {
        let bytes = isolation.memory_mb.saturating_mul(1024 * 1024);
        setrlimit(Resource::As, Rlimit { current: Some(bytes), maximum: Some(bytes) })?;
        setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
        setrlimit(Resource::Nofile, Rlimit { current: Some(512), maximum: Some(512) })?;
        rustix::thread::set_no_new_privs(true)?;
        // Not dumpable: another process of the same uid (a sibling child taken over by
        // its stream) cannot read this one's memory through /proc/PID/mem or ptrace it.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    };
    limits().map_err(|e| e.to_string())
}

/// `vigil media-child`: reads the spec from the first message on stdin, then runs.
pub fn run_from_stdin() -> i32 {
    let first = ToChild::read(&mut std::io::stdin().lock());
    let spec = match first {
        Ok(Some(ToChild::Spec(json))) => serde_json::from_str::<ChildSpec>(&json).map_err(|e| e.to_string()),
        Ok(_) => Err("the first message is not a spec".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match spec {
        Ok(spec) => run(&spec),
        Err(reason) => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let _ = send(
                &mut out,
                ChildEvent::Failed { kind: ChildFailure::Pipeline, reason: format!("bad spec: {reason}") },
            );
            EXIT_FAILED
        }
    }
}

/// The child's whole life; returns its exit code.
pub fn run(spec: &ChildSpec) -> i32 {
    let mut out = BufWriter::new(std::io::stdout().lock());
    if let Err(e) = confine(&spec.media.isolation) {
        let _ = send(&mut out, ChildEvent::Failed { kind: ChildFailure::Confine, reason: e.to_string() });
        return EXIT_CONFINE;
    }
    match decode(spec, &mut out) {
        Ok(()) => {
            let _ = send(&mut out, ChildEvent::Ended);
            EXIT_ENDED
        }
        Err((kind, reason)) => {
            let _ = send(&mut out, ChildEvent::Failed { kind, reason });
            EXIT_FAILED
        }
    }
}

fn send(out: &mut impl Write, event: ChildEvent) -> std::io::Result<()> {
    FromChild::Event(event).write(out)?;
    out.flush()
}

pub(super) type Failure = (ChildFailure, String);

pub(super) fn fail(kind: ChildFailure) -> impl Fn(String) -> Failure {
    move |reason| (kind, reason)
}

fn decode(spec: &ChildSpec, out: &mut impl Write) -> Result<(), Failure> {
    gst::init().map_err(|e| (ChildFailure::Init, e.to_string()))?;
    if spec.media.hardware_decode {
        prefer_hardware_decoders();
    }
    // After init: GStreamer may start its plugin scanner (an exec) while loading the
    // registry; from here on nothing legitimate needs the denied calls.
    if spec.media.isolation.seccomp {
        // Pulled and WHIP sources reach the network themselves; pushed ones never do.
        let network = match spec.source {
            ChildSource::PushedFlv => Network::None,
            ChildSource::Whip { .. } => Network::Udp,
            ChildSource::Uri(_) => Network::Any,
        };
        super::jail::install(network).map_err(fail(ChildFailure::Confine))?;
    }
    let m = &spec.media;
    let shared = Arc::new(Shared {
        media: m.clone(),
        gate: SamplingGate::new(m.sampling, m.sample_fps, m.dense_fps),
        counters: Counters::default(),
        refusal: Mutex::new(None),
        started: Mutex::new(None),
        video_linked: AtomicBool::new(false),
        video_pad: Mutex::new(None),
        decoder_sink: Mutex::new(None),
        arrivals: Mutex::new(std::collections::VecDeque::with_capacity(ARRIVALS_KEPT)),
    });
    let pipeline = gst::Pipeline::new();
    let parse = make("parsebin")?;
    let chain = gst::parse::bin_from_description(SAMPLE_CHAIN.trim(), true)
        .map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;
    let sink = chain
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail(ChildFailure::Pipeline)("sample-live.gst has no appsink named frames".into()))?;
    let live_pace = m.pace_files && matches!(&spec.source, ChildSource::Uri(u) if u.starts_with("file:"));
    // A file is paced like a live stream; live sources arrive at their own pace.
    sink.set_property("sync", live_pace);
    pipeline.add_many([&parse, chain.upcast_ref()]).map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;

    let mut webrtc = None;
    let appsrc = match &spec.source {
        ChildSource::Uri(uri) => {
            let src = gst::ElementFactory::make("urisourcebin")
                .property("uri", uri)
                .build()
                .map_err(|e| fail(ChildFailure::Pipeline)(format!("urisourcebin: {e}")))?;
            pipeline.add(&src).map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;
            let parse_sink =
                parse.static_pad("sink").ok_or_else(|| fail(ChildFailure::Pipeline)("parsebin without sink".into()))?;
            let pipeline_weak = pipeline.downgrade();
            src.connect_pad_added(move |_, pad| {
                if parse_sink.is_linked() {
                    if let Some(p) = pipeline_weak.upgrade() {
                        discard(&p, pad);
                    }
                } else if let Err(e) = pad.link(&parse_sink) {
                    eprintln!("vigil-media-child: cannot link source: {e:?}");
                }
            });
            None
        }
        ChildSource::PushedFlv => {
            let src = gst_app::AppSrc::builder()
                .caps(&gst::Caps::builder("video/x-flv").build())
                .format(gst::Format::Bytes)
                .is_live(true)
                .block(true)
                .max_bytes(16 * 1024 * 1024)
                .build();
            pipeline.add(&src).map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;
            src.link(&parse).map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;
            Some(src)
        }
        ChildSource::Whip { stun_server, .. } => {
            webrtc = Some(super::webrtc::add_webrtcbin(&pipeline, &parse, stun_server.as_deref())?);
            None
        }
    };

    let chain_sink =
        chain.static_pad("sink").ok_or_else(|| fail(ChildFailure::Pipeline)("chain has no sink pad".into()))?;
    let size_caps =
        chain.by_name("size_caps").ok_or_else(|| fail(ChildFailure::Pipeline)("chain has no size_caps".into()))?;
    {
        let shared = shared.clone();
        let pipeline_weak = pipeline.downgrade();
        parse.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else { return };
            on_parsed_pad(&pipeline, pad, &chain_sink, &size_caps, &shared);
        });
    }

    // A WHIP child's first message is the publisher's offer.
    let offer = match &webrtc {
        Some(_) => match ToChild::read(&mut std::io::stdin().lock()) {
            Ok(Some(ToChild::Offer(sdp))) => Some(sdp),
            Ok(_) => return Err(fail(ChildFailure::Whip)("the worker sent no offer".into())),
            Err(e) => return Err(fail(ChildFailure::Whip)(format!("reading the offer: {e}"))),
        },
        None => None,
    };
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| fail(ChildFailure::Decode)(crate::decode::first_bus_error(&pipeline)))?;
    if let (Some(webrtc), Some(offer)) = (&webrtc, offer) {
        let private = matches!(spec.source, ChildSource::Whip { private_candidates: true, .. });
        let (sdp, dropped_candidates) = super::webrtc::answer(webrtc, &offer, private)?;
        send(out, ChildEvent::Answer { sdp, dropped_candidates })
            .map_err(|e| fail(ChildFailure::Pipe)(e.to_string()))?;
    }
    spawn_stdin_reader(appsrc, shared.clone());
    let result = main_loop(&pipeline, &sink, &shared, webrtc.as_ref(), out);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn make(factory: &str) -> Result<gst::Element, Failure> {
    gst::ElementFactory::make(factory).build().map_err(|e| fail(ChildFailure::Pipeline)(format!("{factory}: {e}")))
}

/// NVIDIA decoders, when this machine's GStreamer has them, outrank the software ones.
fn prefer_hardware_decoders() {
    for name in HARDWARE_DECODERS {
        if let Some(f) = gst::ElementFactory::find(name) {
            f.set_rank(gst::Rank::PRIMARY + 100);
        }
    }
}

/// Links a pad nobody needs (audio, a second video, subtitles) to a fakesink, so its
/// data flows away instead of stopping the pipeline with not-linked.
pub(super) fn discard(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(sink) = gst::ElementFactory::make("fakesink").property("sync", false).build() else { return };
    if pipeline.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        if let Some(sink_pad) = sink.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
    }
}

fn caps_limits(caps: &gst::CapsRef, m: &SampleConfig) -> Result<(u32, u32, Option<f64>), String> {
    let s = caps.structure(0).ok_or("caps without structure")?;
    let (w, h) = (s.get::<i32>("width").unwrap_or(0), s.get::<i32>("height").unwrap_or(0));
    if w < 0 || h < 0 || w as u32 > m.max_input_px || h as u32 > m.max_input_px {
        return Err(format!("video is {w}x{h}, the limit is {0}x{0}", m.max_input_px));
    }
    let fps = s.get::<gst::Fraction>("framerate").ok().filter(|f| f.denom() > 0 && f.numer() > 0);
    let fps = fps.map(|f| f.numer() as f64 / f.denom() as f64);
    if let Some(f) = fps.filter(|&f| f > m.limits.max_fps) {
        return Err(format!("video declares {f:.1} fps, the limit is {}", m.limits.max_fps));
    }
    Ok((w as u32, h as u32, fps))
}

/// A parsed elementary stream appeared: the first video one goes through the unit gate
/// to a decoder; the rest are discarded.
fn on_parsed_pad(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    chain_sink: &gst::Pad,
    size_caps: &gst::Element,
    shared: &Arc<Shared>,
) {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let is_video = caps.structure(0).is_some_and(|s| s.name().starts_with("video/"));
    if !is_video || shared.video_linked.swap(true, Relaxed) {
        discard(pipeline, pad);
        return;
    }
    if let Err(reason) = caps_limits(&caps, &shared.media) {
        shared.refuse(ChildFailure::Refused, reason);
        return;
    }
    add_unit_gate(pad, shared);
    *shared.video_pad.lock().unwrap_or_else(|p| p.into_inner()) = Some(pad.clone());
    let decoder = match gst::ElementFactory::make("decodebin").build() {
        Ok(d) => d,
        Err(e) => return shared.refuse(ChildFailure::Pipeline, format!("decodebin: {e}")),
    };
    if pipeline.add(&decoder).is_err() || decoder.sync_state_with_parent().is_err() {
        return shared.refuse(ChildFailure::Pipeline, "cannot start decodebin".into());
    }
    {
        let shared = shared.clone();
        decoder.connect("deep-element-added", false, move |args| {
            let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok());
            if let Some(e) = element
                && e.factory().is_some_and(|f| f.metadata("klass").is_some_and(|k| k.contains("Decoder")))
            {
                *shared.decoder_sink.lock().unwrap_or_else(|p| p.into_inner()) = e.static_pad("sink");
            }
            None
        });
    }
    let Some(decoder_sink) = decoder.static_pad("sink") else { return };
    let (chain_sink, size_caps, shared2) = (chain_sink.clone(), size_caps.clone(), shared.clone());
    let pipeline_weak = pipeline.downgrade();
    decoder.connect_pad_added(move |bin, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        on_decoded_pad(&pipeline, bin, pad, &chain_sink, &size_caps, &shared2);
    });
    if let Err(e) = pad.link(&decoder_sink) {
        shared.refuse(ChildFailure::Pipeline, format!("cannot link parser to decoder: {e:?}"));
    }
}

fn on_decoded_pad(
    pipeline: &gst::Pipeline,
    decodebin: &gst::Element,
    pad: &gst::Pad,
    chain_sink: &gst::Pad,
    size_caps: &gst::Element,
    shared: &Arc<Shared>,
) {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else { return };
    if !s.name().starts_with("video/x-raw") || chain_sink.is_linked() {
        discard(pipeline, pad);
        return;
    }
    let (w, h, fps) = match caps_limits(&caps, &shared.media) {
        Ok((w, h, fps)) if w > 0 && h > 0 => (w, h, fps),
        Ok((w, h, _)) => return shared.refuse(ChildFailure::Refused, format!("decoded video is {w}x{h}")),
        Err(reason) => return shared.refuse(ChildFailure::Refused, reason),
    };
    size_caps.set_property("caps", crate::decode::analysis_caps(&shared.media, w, h));
    let decoder = decoder_name(decodebin);
    *shared.started.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(ChildEvent::Started { width: w, height: h, fps, decoder });
    add_frame_gate(pad, shared);
    if let Err(e) = pad.link(chain_sink) {
        shared.refuse(ChildFailure::Pipeline, format!("cannot link decoder to sampling chain: {e:?}"));
    }
}

/// The decoder element decodebin chose (software or hardware), for the logs.
fn decoder_name(decodebin: &gst::Element) -> String {
    let Some(bin) = decodebin.downcast_ref::<gst::Bin>() else { return "unknown".into() };
    bin.iterate_recurse()
        .into_iter()
        .flatten()
        .filter_map(|e| e.factory())
        .find(|f| f.metadata("klass").is_some_and(|k| k.contains("Decoder")))
        .map_or_else(|| "unknown".into(), |f| f.name().to_string())
}

/// Before the decoder: counts and bounds what arrives (caps changes, rate, size), and
/// drops what the sampling mode does not decode.
fn add_unit_gate(pad: &gst::Pad, shared: &Arc<Shared>) {
    let shared = shared.clone();
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| match &info.data {
        Some(gst::PadProbeData::Buffer(buf)) => {
            let c = &shared.counters;
            c.units_in.fetch_add(1, Relaxed);
            c.input_bytes.fetch_add(buf.size() as u64, Relaxed);
            let keyframe = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let time = buf.pts().or(buf.dts());
            let pts_ms = time.map(|t| t.mseconds());
            let unit = shared.gate.unit(pts_ms, keyframe);
            if unit != Unit::Drop {
                c.units_decoded.fetch_add(1, Relaxed);
                shared.unit_arrived(buf.pts().map(|t| t.mseconds()));
            }
            match unit {
                Unit::Drop => gst::PadProbeReturn::Drop,
                Unit::Decode => gst::PadProbeReturn::Ok,
                Unit::DecodeAndDrain => decode_and_drain(pad, info, &shared),
            }
        }
        Some(gst::PadProbeData::Event(ev)) => {
            let gst::EventView::Caps(caps) = ev.view() else { return gst::PadProbeReturn::Ok };
            let changes = shared.counters.caps_seen.fetch_add(1, Relaxed);
            let limit = shared.media.limits.max_caps_changes;
            if changes > limit {
                shared.refuse(
                    ChildFailure::Refused,
                    format!("the stream changed format {changes} times, the limit is {limit}"),
                );
                return gst::PadProbeReturn::Drop;
            }
            match caps_limits(caps.caps(), &shared.media) {
                Ok(_) => gst::PadProbeReturn::Ok,
                Err(reason) => {
                    shared.refuse(ChildFailure::Refused, reason);
                    gst::PadProbeReturn::Drop
                }
            }
        }
        _ => gst::PadProbeReturn::Ok,
    });
}

/// Hands a keyframe to the decoder, then a still-frame event, on which every GStreamer
/// video decoder drains: the frame comes out now instead of when the decoder's reorder window
/// fills, which in keyframe-only decoding is two keyframes (seconds) later. The next
/// unit is a keyframe again, so the drain costs no reference the decoder needs.
fn decode_and_drain(pad: &gst::Pad, info: &mut gst::PadProbeInfo, shared: &Shared) -> gst::PadProbeReturn {
    let Some(peer) = pad.peer() else { return gst::PadProbeReturn::Ok };
    let Some(gst::PadProbeData::Buffer(buf)) = info.data.take() else { return gst::PadProbeReturn::Ok };
    // Pushed through to the decoder on this thread: the parser inside decodebin
    // forwards a complete access unit at once.
    let flow = peer.chain(buf);
    if flow.is_ok() {
        // A still-frame event: every GStreamer video decoder drains on it (GAP drains
        // only in trick modes in 1.22). Straight to the decoder, since a parser in front
        // of it keeps events until the next unit; through the pad until it is known.
        let still = || gst_video::StillFrameEvent::builder(true).build();
        let decoder = shared.decoder_sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = match decoder {
            Some(sink) => sink.send_event(still()),
            None => pad.push_event(still()),
        };
    }
    info.flow_res = flow;
    gst::PadProbeReturn::Handled
}

/// After the decoder, before conversion: keeps frames at the dense rate.
fn add_frame_gate(pad: &gst::Pad, shared: &Arc<Shared>) {
    let shared = shared.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buf)) = &info.data else { return gst::PadProbeReturn::Ok };
        if shared.gate.pass_frame(buf.pts().map(|t| t.mseconds())) {
            gst::PadProbeReturn::Ok
        } else {
            gst::PadProbeReturn::Drop
        }
    });
}

/// Reads the worker's messages: pushed media into the appsrc, sampling commands into
/// the gate. When the worker goes away, so does the child.
fn spawn_stdin_reader(appsrc: Option<gst_app::AppSrc>, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            match ToChild::read(&mut stdin) {
                Ok(Some(ToChild::Media(bytes))) => {
                    if let Some(src) = &appsrc
                        && src.push_buffer(gst::Buffer::from_mut_slice(bytes)).is_err()
                    {
                        return; // the pipeline is shutting down
                    }
                }
                Ok(Some(ToChild::MediaEnd)) => {
                    if let Some(src) = &appsrc {
                        let _ = src.end_of_stream();
                    }
                }
                Ok(Some(ToChild::Command(Command::Dense { on }))) => {
                    shared.gate.set_dense(on);
                }
                Ok(Some(ToChild::Offer(_) | ToChild::Spec(_))) => {} // each read once, before this
                Err(e) => {
                    // Broken input is a failure, never the end of the stream: the
                    // supervisor reports the gap and starts a new child.
                    shared.refuse(ChildFailure::Protocol, format!("reading the worker's messages: {e}"));
                    return;
                }
                Ok(None) => {
                    // The worker closed our stdin (or is gone): nothing more will come.
                    match &appsrc {
                        Some(src) => {
                            let _ = src.end_of_stream();
                        }
                        None => std::process::exit(EXIT_ENDED),
                    }
                    return;
                }
            }
        }
    });
}

fn main_loop(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    shared: &Shared,
    webrtc: Option<&gst::Element>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut last_keyframe_request = Instant::now();
    let (mut units_seen, mut units_moved) = (0u64, Instant::now());
    let bus = pipeline.bus().ok_or_else(|| fail(ChildFailure::Pipeline)("pipeline without bus".into()))?;
    let mut last_beat = Instant::now();
    let mut started_sent = false;
    let window = Duration::from_secs(10);
    let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
    // A demuxer can wait forever on input it half understands (seen in the mutation
    // corpus): no unit in and no frame out for the stall timeout ends the child.
    let stall = Duration::from_secs(shared.media.stall_timeout_secs);
    let (mut last_progress, mut progress_mark) = (Instant::now(), (0u64, 0u64));
    let io = |e: std::io::Error| fail(ChildFailure::Pipe)(e.to_string());
    loop {
        if !started_sent && let Some(ev) = shared.started.lock().unwrap_or_else(|p| p.into_inner()).take() {
            send(out, ev).map_err(io)?;
            started_sent = true;
        }
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            // The decoder's notice goes before its first frame.
            if !started_sent && let Some(ev) = shared.started.lock().unwrap_or_else(|p| p.into_inner()).take() {
                send(out, ev).map_err(io)?;
                started_sent = true;
            }
            let mut frame =
                crate::decode::packed_rgb(&sample).map_err(|e| fail(ChildFailure::Decode)(e.to_string()))?;
            frame.arrived_unix_ms = shared.arrival_of(frame.pts_ms);
            shared.counters.frames_out.fetch_add(1, Relaxed);
            FromChild::Frame(frame).write(out).map_err(io)?;
            out.flush().map_err(io)?;
        }
        if let Some((kind, reason)) = shared.refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err((kind, reason));
        }
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(err) => return Err(fail(ChildFailure::Decode)(crate::decode::describe(err))),
                gst::MessageView::Eos(_) => return Ok(()),
                _ => {}
            }
        }
        if sink.is_eos() {
            return Ok(());
        }
        if let Some(webrtc) = webrtc {
            if super::webrtc::connection_lost(webrtc) {
                return Err(fail(ChildFailure::Whip)("the publisher's WebRTC connection was lost".into()));
            }
            let pad = shared.video_pad.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let (Some(pad), Some(every)) = (pad, shared.gate.keyframe_request_interval())
                && last_keyframe_request.elapsed() >= every
            {
                last_keyframe_request = Instant::now();
                super::webrtc::request_keyframe(&pad);
            }
            // WebRTC media never pauses while a publisher is there (a still screen still
            // sends frames): silence after media means it left without a DELETE.
            let units = shared.counters.units_in.load(Relaxed);
            if units != units_seen {
                (units_seen, units_moved) = (units, Instant::now());
            } else if units > 0 && units_moved.elapsed() > super::webrtc::PUBLISHER_SILENCE {
                return Err(fail(ChildFailure::Whip)(format!(
                    "no media from the publisher for {} s: it left without ending the session",
                    super::webrtc::PUBLISHER_SILENCE.as_secs()
                )));
            } else if units == 0 && units_moved.elapsed() > super::webrtc::CONNECT_TIMEOUT {
                return Err(fail(ChildFailure::Whip)(format!(
                    "the publisher sent no media in the {} s after its answer",
                    super::webrtc::CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
        if last_beat.elapsed() >= Duration::from_secs(1) {
            last_beat = Instant::now();
            let c = &shared.counters;
            let mark = (c.units_in.load(Relaxed), c.frames_out.load(Relaxed));
            if mark != progress_mark {
                (progress_mark, last_progress) = (mark, Instant::now());
            } else if last_progress.elapsed() > stall {
                return Err(fail(ChildFailure::Stalled)(format!("no data for {} s", stall.as_secs())));
            }
            let input_bytes = c.input_bytes.load(Relaxed);
            send(
                out,
                ChildEvent::Heartbeat {
                    input_bytes,
                    units_in: c.units_in.load(Relaxed),
                    units_decoded: c.units_decoded.load(Relaxed),
                    frames_out: c.frames_out.load(Relaxed),
                },
            )
            .map_err(io)?;
            if window_start.elapsed() >= window {
                let kbps = (input_bytes - window_bytes) * 8 / window_start.elapsed().as_millis().max(1) as u64;
                let limit = shared.media.limits.max_bitrate_kbps;
                if kbps > limit {
                    return Err(fail(ChildFailure::Refused)(format!(
                        "the stream sends {kbps} kbit/s, the limit is {limit}"
                    )));
                }
                (window_start, window_bytes) = (Instant::now(), input_bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whip_spec_carries_the_private_candidates_setting_off_by_default() {
        let on = ChildSource::Whip { stun_server: None, private_candidates: true };
        let json = serde_json::to_string(&on).unwrap();
        assert_eq!(serde_json::from_str::<ChildSource>(&json).unwrap(), on);
        let unset: ChildSource = serde_json::from_str(r#"{"whip":{"stun_server":null}}"#).unwrap();
        assert_eq!(unset, ChildSource::Whip { stun_server: None, private_candidates: false });
    }
}
