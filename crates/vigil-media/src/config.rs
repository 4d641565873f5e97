use crate::sampling::SamplingMode;
use serde::{Deserialize, Serialize};

/// `[media]`: how frames are sampled and how large they may be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Frames per second handed to analysis.
    #[serde(default = "default_sample_fps")]
    pub sample_fps: f64,
    /// Analysis frames fit in a square of this side, aspect ratio kept; never upscaled.
    #[serde(default = "default_analysis_max_px")]
    pub analysis_max_px: u32,
    /// Streams that declare a larger width or height are refused before decoding.
    #[serde(default = "default_max_input_px")]
    pub max_input_px: u32,
    /// Frames buffered between the pipeline and analysis.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: u32,
    /// A source that produces no frame for this long is abandoned.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    /// Live streams (`vigil run`): fixed, keyframes, or adaptive. `vigil scan` of a file
    /// always samples at the fixed rate.
    #[serde(default = "default_sampling")]
    pub sampling: SamplingMode,
    /// Adaptive and dense sampling: frames per second while fusion sees risk.
    #[serde(default = "default_dense_fps")]
    pub dense_fps: f64,
    /// Adaptive: back to keyframes after this long without risk.
    #[serde(default = "default_calm_secs")]
    pub calm_secs: u64,
    /// Use NVIDIA decoders when GStreamer has them (`nvh264dec`, `nvv4l2decoder`).
    #[serde(default = "default_true")]
    pub hardware_decode: bool,
    /// `vigil run`: play files at their own speed, like a live stream (false: as fast as
    /// they decode, for batch jobs and tests).
    #[serde(default = "default_true")]
    pub pace_files: bool,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub isolation: IsolationConfig,
}

/// `[media.limits]`: what one stream may declare or send. Over a limit, the stream is
/// refused or ended with the reason; the others keep running.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_streams: u32,
    pub max_fps: f64,
    pub max_bitrate_kbps: u64,
    /// Resolution or format changes allowed in one session (a hostile stream can
    /// renegotiate without end, re-allocating each time).
    pub max_caps_changes: u32,
    /// Pushed streams: bytes of media the worker holds for a decode child that is
    /// behind; over this, tags are dropped up to the next keyframe (counted). Memory per
    /// pushed stream is bounded by this, not by a count of tags of up to 8 MiB each.
    pub max_feed_bytes: u64,
}

/// The largest video message the RTMP server accepts: the feed must hold at least one.
const MIN_FEED_BYTES: u64 = crate::flv::MAX_VIDEO_BODY as u64 + 64;
const MAX_FEED_BYTES: u64 = 1 << 30;
/// A queue of analysis frames (a stream's, the inference batcher's) may hold at most
/// this many bytes: its length times the largest frame ([`SampleConfig::max_frame_bytes`]).
/// A count bound is a byte bound only while frames are bounded in size.
pub const MAX_QUEUE_BYTES: u64 = 1 << 30;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_streams: 64,
            max_fps: 120.0,
            max_bitrate_kbps: 20_000,
            max_caps_changes: 8,
            max_feed_bytes: 32 << 20,
        }
    }
}

/// `[media.isolation]`: each stream decodes in a child process with these limits, so a
/// crash or hang in GStreamer's C demuxers and decoders costs one stream a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationConfig {
    /// Address-space limit of a decode child (RLIMIT_AS).
    pub memory_mb: u64,
    /// A child using more CPU than this many cores, averaged over the watchdog window,
    /// is killed and restarted.
    pub max_cpu_cores: f64,
    /// A child whose main loop is silent this long is hung: killed and restarted.
    pub watchdog_secs: u64,
    pub restart_backoff_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// A pulled source that cannot be reached for this long has ended.
    pub give_up_after_secs: u64,
    /// A seccomp filter in each child: no exec, ptrace, namespaces, modules, eBPF; no
    /// network sockets for pushed streams.
    pub seccomp: bool,
    /// When the worker runs as root, each child first moves into a user namespace of
    /// its own: it keeps root's files but loses every capability on the host (no
    /// ptrace of the worker, no raw sockets, no reading other users' files). Off only
    /// on hosts without user namespaces, and then run the worker as a non-root user.
    pub user_namespace: bool,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        Self {
            memory_mb: 2048,
            max_cpu_cores: 1.5,
            watchdog_secs: 10,
            restart_backoff_ms: 500,
            restart_backoff_max_ms: 30_000,
            give_up_after_secs: 300,
            seccomp: true,
            user_namespace: true,
        }
    }
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            sample_fps: default_sample_fps(),
            analysis_max_px: default_analysis_max_px(),
            max_input_px: default_max_input_px(),
            queue_frames: default_queue_frames(),
            stall_timeout_secs: default_stall_timeout_secs(),
            sampling: default_sampling(),
            dense_fps: default_dense_fps(),
            calm_secs: default_calm_secs(),
            hardware_decode: true,
            pace_files: true,
            limits: LimitsConfig::default(),
            isolation: IsolationConfig::default(),
        }
    }
}

fn default_sample_fps() -> f64 {
    1.0
}
fn default_analysis_max_px() -> u32 {
    640
}
fn default_max_input_px() -> u32 {
    4096
}
fn default_queue_frames() -> u32 {
    8
}
fn default_stall_timeout_secs() -> u64 {
    30
}
fn default_sampling() -> SamplingMode {
    SamplingMode::Adaptive
}
fn default_dense_fps() -> f64 {
    4.0
}
fn default_calm_secs() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

impl SampleConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if !(self.sample_fps > 0.0 && self.sample_fps <= 60.0) {
            e.push(format!("{prefix}.sample_fps: {} is outside (0, 60]", self.sample_fps));
        }
        if !(64..=4096).contains(&self.analysis_max_px) {
            e.push(format!("{prefix}.analysis_max_px: {} is outside 64..=4096", self.analysis_max_px));
        }
        if !(16..=16384).contains(&self.max_input_px) {
            e.push(format!("{prefix}.max_input_px: {} is outside 16..=16384", self.max_input_px));
        }
        if !(1..=1024).contains(&self.queue_frames) {
            e.push(format!("{prefix}.queue_frames: {} is outside 1..=1024", self.queue_frames));
        }
        if self.stall_timeout_secs == 0 {
            e.push(format!("{prefix}.stall_timeout_secs: must be at least 1"));
        }
        if !(self.dense_fps > 0.0 && self.dense_fps <= 60.0) {
            e.push(format!("{prefix}.dense_fps: {} is outside (0, 60]", self.dense_fps));
        }
        let l = &self.limits;
        if l.max_streams == 0 {
            e.push(format!("{prefix}.limits.max_streams: must be at least 1"));
        }
        if !(l.max_fps >= 1.0 && l.max_fps <= 1000.0) {
            e.push(format!("{prefix}.limits.max_fps: {} is outside [1, 1000]", l.max_fps));
        }
        if l.max_bitrate_kbps < 100 {
            e.push(format!("{prefix}.limits.max_bitrate_kbps: {} is below 100", l.max_bitrate_kbps));
        }
        if !(MIN_FEED_BYTES..=MAX_FEED_BYTES).contains(&l.max_feed_bytes) {
            e.push(format!(
                "{prefix}.limits.max_feed_bytes: {} is outside {MIN_FEED_BYTES}..={MAX_FEED_BYTES} (one video \
                 message of up to 8 MiB must fit)",
                l.max_feed_bytes
            ));
        }
        if self.queue_bytes() > MAX_QUEUE_BYTES {
            e.push(format!(
                "{prefix}.queue_frames: {} frames of up to {1}x{1} RGB would hold {2} MiB per stream, over {3} MiB",
                self.queue_frames,
                self.analysis_max_px,
                self.queue_bytes() >> 20,
                MAX_QUEUE_BYTES >> 20
            ));
        }
        let i = &self.isolation;
        if i.memory_mb < 256 {
            e.push(format!("{prefix}.isolation.memory_mb: {} is below 256 (GStreamer alone needs more)", i.memory_mb));
        }
        if i.max_cpu_cores.is_nan() || i.max_cpu_cores <= 0.0 {
            e.push(format!("{prefix}.isolation.max_cpu_cores: must be above 0"));
        }
        if i.watchdog_secs < 2 {
            e.push(format!(
                "{prefix}.isolation.watchdog_secs: {} is below 2 (heartbeats come every second)",
                i.watchdog_secs
            ));
        }
        if i.restart_backoff_ms == 0 || i.restart_backoff_max_ms < i.restart_backoff_ms {
            e.push(format!("{prefix}.isolation.restart_backoff_ms/_max_ms: need 0 < backoff <= max"));
        }
        e
    }

    /// The largest frame a decode child may hand over: the worker refuses larger ones
    /// ([`crate::isolate::protocol`]), so every queue of analysis frames is bounded in
    /// bytes by its count times this.
    pub fn max_frame_bytes(&self) -> u64 {
        u64::from(self.analysis_max_px).pow(2) * 3
    }

    /// Bytes a stream's frame queue ([`crate::queue::StreamQueue`]) can hold at most.
    pub fn queue_bytes(&self) -> u64 {
        u64::from(self.queue_frames) * self.max_frame_bytes()
    }

    /// The sampling rate as a GStreamer fraction string (millihertz precision).
    pub(crate) fn fps_fraction(&self) -> String {
        let milli = (self.sample_fps * 1000.0).round().max(1.0) as u64;
        format!("{milli}/1000")
    }

    /// Analysis size for a decoded size: fits in `analysis_max_px`, keeps the aspect
    /// ratio, never upscales, even dimensions (what the colour converters like).
    pub fn analysis_size(&self, width: u32, height: u32) -> (u32, u32) {
        let max = self.analysis_max_px as f64;
        let scale = (max / width.max(height) as f64).min(1.0);
        let even = |v: f64| ((v.round() as u32) & !1).max(2);
        (even(width as f64 * scale), even(height as f64 * scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_size_keeps_aspect_and_never_upscales() {
        let c = SampleConfig::default();
        assert_eq!(c.analysis_size(1280, 720), (640, 360));
        assert_eq!(c.analysis_size(720, 1280), (360, 640));
        assert_eq!(c.analysis_size(320, 240), (320, 240));
        assert_eq!(c.analysis_size(333, 201), (332, 200));
    }

    #[test]
    fn validation_names_every_mistake() {
        let c = SampleConfig { sample_fps: 0.0, analysis_max_px: 1, queue_frames: 0, ..Default::default() };
        let e = c.validate("media");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("media.sample_fps"));
    }

    #[test]
    fn queues_that_hold_media_are_bounded_in_bytes() {
        assert!(SampleConfig::default().validate("media").is_empty());
        let mut c = SampleConfig::default();
        // Smaller than one video message, then absurdly large.
        c.limits.max_feed_bytes = 1 << 20;
        // 64 frames of 4096 px RGB: 3 GiB per stream.
        (c.analysis_max_px, c.queue_frames) = (4096, 64);
        let e = c.validate("media");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("media.limits.max_feed_bytes: 1048576 is outside"), "{e:?}");
        assert!(e[1].starts_with("media.queue_frames: 64 frames of up to 4096x4096 RGB would hold 3072 MiB"), "{e:?}");
        c.limits.max_feed_bytes = 2 << 30;
        (c.analysis_max_px, c.queue_frames) = (4096, 21);
        let e = c.validate("media");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("media.limits.max_feed_bytes: 2147483648 is outside"), "{e:?}");
    }
}
