#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot open {input}: {reason}")]
    Open { input: String, reason: String },
    #[error("GStreamer is not usable: {0}")]
    Init(String),
    #[error("cannot build the decode pipeline: {0}")]
    Pipeline(String),
    #[error("cannot decode {input}: {reason}")]
    Decode { input: String, reason: String },
    #[error("{input}: refused: {reason}")]
    Refused { input: String, reason: String },
    /// The input holds no video at all (audio only, data only): known as soon as the
    /// demuxer has exposed its streams, never after a stall timeout.
    #[error("{input}: no video stream in the input (found only: {found})")]
    NoVideo { input: String, found: String },
    #[error("{input}: no frame for {secs} s, giving up")]
    Stalled { input: String, secs: u64 },
}
