//! Opens what the user named: a still image (decoded at its exact size, see
//! [`vigil_media::still`]) or anything GStreamer decodes.

use vigil_core::{Frame, StreamId};
use vigil_media::still::{self, StillFrames};
use vigil_media::{FrameSource, MediaError, SampleConfig};

pub enum Input {
    Still(StillFrames),
    Video(FrameSource),
}

impl Input {
    pub fn open(input: &str, cfg: &SampleConfig) -> Result<Input, MediaError> {
        let stream = StreamId(input.to_string());
        if still::is_still_image(input) {
            return Ok(Input::Still(still::open(std::path::Path::new(input), stream, cfg)?));
        }
        let uri = vigil_media::to_uri(input)?;
        Ok(Input::Video(vigil_media::open_uri(&uri, stream, cfg)?))
    }

    /// Length in milliseconds when known, for progress.
    pub fn duration_ms(&mut self) -> Option<u64> {
        match self {
            Input::Still(_) => None,
            Input::Video(v) => v.duration_ms(),
        }
    }
}

impl Iterator for Input {
    type Item = Result<Frame, MediaError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Input::Still(f) => f.next(),
            Input::Video(v) => v.next(),
        }
    }
}
