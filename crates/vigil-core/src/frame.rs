use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one stream session (a publish, a pulled URL, a scanned file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub String);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One sampled frame at analysis size, packed RGB (3 bytes per pixel, no row padding).
///
/// Deliberately not `Serialize`: pixels never leave the process.
#[derive(Clone)]
pub struct Frame {
    pub stream: StreamId,
    /// Presentation time within the stream, in milliseconds.
    pub pts_ms: u64,
    /// Whether the decoder produced this frame from a keyframe.
    pub keyframe: bool,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// When the frame's coded data reached its decoder (unix ms), for the sample age at
    /// decision; 0 where unknown (files scanned at their own pace, tests).
    pub arrived_unix_ms: u64,
}

impl Frame {
    /// The RGB value at (x, y). Callers keep x < width and y < height.
    #[inline]
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("stream", &self.stream)
            .field("pts_ms", &self.pts_ms)
            .field("keyframe", &self.keyframe)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("arrived_unix_ms", &self.arrived_unix_ms)
            .finish_non_exhaustive()
    }
}
