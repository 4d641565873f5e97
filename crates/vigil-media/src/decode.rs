//! Files and pulled URLs: `uridecodebin` → sampling chain → `appsink`.
//!
//! Frames are pulled from the appsink by the consumer's thread, never by a callback on
//! a streaming thread, so analysis can take as long as it needs without stalling
//! GStreamer. For files the appsink's bounded queue gives backpressure (nothing is
//! dropped); live sources will use the drop-oldest mode.

use crate::events::StreamFailure;
use crate::{MediaError, SampleConfig, metrics::METRICS};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_core::{Frame, StreamId};

const SAMPLE_CHAIN: &str = include_str!("../../../pipelines/sample-fixed-rate.gst");
const POLL: Duration = Duration::from_millis(100);

/// A running decode of one source, yielding sampled frames in order.
pub struct FrameSource {
    input: String,
    stream: StreamId,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    stall_timeout: Duration,
    /// Set from the pad-added callback when the source's video is refused.
    refusal: Arc<Mutex<Option<String>>>,
    /// Set from the no-more-pads callback when the source exposed no video at all.
    no_video: Arc<Mutex<Option<String>>>,
    /// Duration of the source when it is known (files), for progress reporting.
    duration_ms: Option<u64>,
    frames: u64,
    done: bool,
}

/// Starts decoding `uri` (see [`crate::to_uri`]) and returns the frame source.
pub fn open_uri(uri: &str, stream: StreamId, cfg: &SampleConfig) -> Result<FrameSource, MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("uridecodebin")
        .property("uri", uri)
        .build()
        .map_err(|e| MediaError::Pipeline(format!("uridecodebin: {e}")))?;
    let chain_desc = SAMPLE_CHAIN
        .trim()
        .replace("{fps}", &cfg.fps_fraction())
        .replace("{queue_frames}", &cfg.queue_frames.to_string())
        .replace("{drop}", "false");
    let chain = gst::parse::bin_from_description(&chain_desc, true)
        .map_err(|e| MediaError::Pipeline(format!("sampling chain: {e}")))?;
    pipeline.add_many([&src, chain.upcast_ref()]).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let sink = chain
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("sampling chain has no appsink named frames".into()))?;
    let size_caps = chain
        .by_name("size_caps")
        .ok_or_else(|| MediaError::Pipeline("sampling chain has no capsfilter named size_caps".into()))?;

    let refusal = Arc::new(Mutex::new(None));
    let chain_sink = chain.static_pad("sink").ok_or_else(|| MediaError::Pipeline("chain has no sink pad".into()))?;
    let cfg2 = cfg.clone();
    let refusal2 = refusal.clone();
    // Media types of the pads the decoder exposed, for the no-video message.
    let exposed = Arc::new(Mutex::new(Vec::<String>::new()));
    let exposed2 = exposed.clone();
    let linked = chain_sink.clone();
    src.connect_pad_added(move |element, pad| {
        if let Some(name) = pad.current_caps().and_then(|c| c.structure(0).map(|s| s.name().to_string())) {
            lock(&exposed2).push(name);
        }
        link_video_pad(element, pad, &chain_sink, &size_caps, &cfg2, &refusal2);
    });
    // Without this an audio-only input would sit in PAUSED (the appsink never prerolls)
    // until the stall timeout: once every stream is exposed and none was video, say so.
    let no_video = Arc::new(Mutex::new(None));
    let (no_video2, refusal3) = (no_video.clone(), refusal.clone());
    src.connect_no_more_pads(move |element| {
        if linked.is_linked() || lock(&refusal3).is_some() {
            return;
        }
        let found = lock(&exposed);
        let found = if found.is_empty() { "nothing".to_string() } else { found.join(", ") };
        *lock(&no_video2) = Some(found.clone());
        gst::element_error!(element, gst::StreamError::WrongType, ["no video stream (found only: {})", found]);
    });

    pipeline.set_state(gst::State::Playing).map_err(|_| match lock(&no_video).take() {
        Some(found) => MediaError::NoVideo { input: uri.to_string(), found },
        None => MediaError::Decode { input: uri.to_string(), reason: first_bus_error(&pipeline) },
    })?;
    Ok(FrameSource {
        input: uri.to_string(),
        stream,
        pipeline,
        sink,
        stall_timeout: Duration::from_secs(cfg.stall_timeout_secs),
        refusal,
        no_video,
        duration_ms: None,
        frames: 0,
        done: false,
    })
}

/// Links the first video pad of the decoder to the sampling chain, after checking the
/// decoded size against the limits. Other pads (audio, subtitles) stay unlinked.
fn link_video_pad(
    element: &gst::Element,
    pad: &gst::Pad,
    chain_sink: &gst::Pad,
    size_caps: &gst::Element,
    cfg: &SampleConfig,
    refusal: &Mutex<Option<String>>,
) {
    let Some(caps) = pad.current_caps().or_else(|| Some(pad.query_caps(None))) else {
        return;
    };
    let Some(s) = caps.structure(0) else { return };
    if !s.name().starts_with("video/") || chain_sink.is_linked() {
        return;
    }
    let (w, h) = (s.get::<i32>("width").unwrap_or(0), s.get::<i32>("height").unwrap_or(0));
    if w <= 0 || h <= 0 || w as u32 > cfg.max_input_px || h as u32 > cfg.max_input_px {
        let reason = format!("video is {w}x{h}, the limit is {0}x{0}", cfg.max_input_px);
        *lock(refusal) = Some(reason.clone());
        gst::element_error!(element, gst::StreamError::Format, ["{}", reason]);
        return;
    }
    size_caps.set_property("caps", analysis_caps(cfg, w as u32, h as u32));
    if let Err(e) = pad.link(chain_sink) {
        gst::element_error!(element, gst::CoreError::Negotiation, ["cannot link video pad: {:?}", e]);
    }
}

/// A callback that panicked while holding one of these leaves a plain value behind.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The caps of analysis frames for a `width`×`height` video: packed RGB at analysis
/// size, square pixels (what the sampling chain's `size_caps` filter is set to).
pub(crate) fn analysis_caps(cfg: &SampleConfig, width: u32, height: u32) -> gst::Caps {
    let (aw, ah) = cfg.analysis_size(width, height);
    gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", aw as i32)
        .field("height", ah as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// The first error the pipeline posted (waiting briefly), for a pipeline that refused
/// to start.
pub(crate) fn first_bus_error(pipeline: &gst::Pipeline) -> String {
    let Some(bus) = pipeline.bus() else { return "the pipeline refused to start".into() };
    match bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(err) => describe(err),
            _ => "the pipeline refused to start".into(),
        },
        None => "the pipeline refused to start".into(),
    }
}

pub(crate) fn describe(err: &gst::message::Error) -> String {
    let mut s = err.error().to_string();
    if let Some(d) = err.debug() {
        // The first line of the debug string names the element and the cause.
        if let Some(line) = d.lines().next() {
            let short: String = line.chars().take(200).collect();
            s = format!("{s} ({short})");
        }
    }
    s
}

impl FrameSource {
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// Duration of the source in milliseconds, when the container says.
    pub fn duration_ms(&mut self) -> Option<u64> {
        if self.duration_ms.is_none() {
            self.duration_ms = self.pipeline.query_duration::<gst::ClockTime>().map(|d| d.mseconds());
        }
        self.duration_ms
    }

    pub fn frames_so_far(&self) -> u64 {
        self.frames
    }

    fn fail(&mut self, kind: StreamFailure, err: MediaError) -> Option<Result<Frame, MediaError>> {
        self.done = true;
        crate::events::stream_failed(kind);
        let _ = self.pipeline.set_state(gst::State::Null);
        Some(Err(err))
    }

    fn check_bus(&mut self) -> Option<Result<Frame, MediaError>> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let refused = lock(&self.refusal).take();
                    let no_video = lock(&self.no_video).take();
                    let input = self.input.clone();
                    return match (refused, no_video) {
                        (Some(reason), _) => self.fail(StreamFailure::Refused, MediaError::Refused { input, reason }),
                        (None, Some(found)) => self.fail(StreamFailure::NoVideo, MediaError::NoVideo { input, found }),
                        (None, None) => {
                            self.fail(StreamFailure::Decode, MediaError::Decode { input, reason: describe(err) })
                        }
                    };
                }
                // The source ended without any video reaching the sampling chain.
                gst::MessageView::Eos(_) if !self.sink.is_eos() && self.frames == 0 => {
                    let input = self.input.clone();
                    let reason = "no video stream found".into();
                    return self.fail(StreamFailure::NoVideo, MediaError::Decode { input, reason });
                }
                _ => {}
            }
        }
        None
    }

    fn frame_from_sample(&self, sample: &gst::Sample) -> Result<Frame, MediaError> {
        let f = packed_rgb(sample)
            .map_err(|reason| MediaError::Decode { input: self.input.clone(), reason: reason.to_string() })?;
        Ok(Frame {
            stream: self.stream.clone(),
            pts_ms: f.pts_ms,
            keyframe: f.keyframe,
            width: f.width,
            height: f.height,
            rgb: f.rgb,
            arrived_unix_ms: 0,
        })
    }
}

/// An appsink sample of RGB video as packed pixels (no row padding).
pub(crate) fn packed_rgb(sample: &gst::Sample) -> Result<crate::isolate::WireFrame, &'static str> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| "sample caps are not raw video")?;
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| "cannot map frame")?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = vframe.plane_stride()[0] as usize;
    let data = vframe.plane_data(0).map_err(|_| "cannot read frame plane")?;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        rgb.extend_from_slice(&data[row * stride..row * stride + w * 3]);
    }
    Ok(crate::isolate::WireFrame {
        pts_ms: buffer.pts().map(|t| t.mseconds()).unwrap_or(0),
        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        width: w as u32,
        height: h as u32,
        rgb,
        arrived_unix_ms: 0,
    })
}

impl Iterator for FrameSource {
    type Item = Result<Frame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let started = Instant::now();
        loop {
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) {
                return match self.frame_from_sample(&sample) {
                    Ok(frame) => {
                        self.frames += 1;
                        METRICS.frames_sampled.inc();
                        Some(Ok(frame))
                    }
                    Err(e) => self.fail(StreamFailure::Frame, e),
                };
            }
            if let Some(err) = self.check_bus() {
                return Some(err);
            }
            if self.sink.is_eos() {
                self.done = true;
                let _ = self.pipeline.set_state(gst::State::Null);
                if self.frames == 0 {
                    let input = self.input.clone();
                    self.done = false;
                    return self.fail(
                        StreamFailure::NoVideo,
                        MediaError::Decode { input, reason: "no frames could be decoded".into() },
                    );
                }
                return None;
            }
            if started.elapsed() > self.stall_timeout {
                let (input, secs) = (self.input.clone(), self.stall_timeout.as_secs());
                return self.fail(StreamFailure::Stalled, MediaError::Stalled { input, secs });
            }
        }
    }
}

impl Drop for FrameSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
