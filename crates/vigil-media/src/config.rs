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
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            sample_fps: default_sample_fps(),
            analysis_max_px: default_analysis_max_px(),
            max_input_px: default_max_input_px(),
            queue_frames: default_queue_frames(),
            stall_timeout_secs: default_stall_timeout_secs(),
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
        e
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
}
