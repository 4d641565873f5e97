//! FLV framing for pushed RTMP streams: RTMP video messages are FLV VIDEODATA bodies;
//! the worker wraps them in FLV tags for the decode child's `flvdemux`. Only video is
//! forwarded (audio is not analysed), which also halves what a child must parse.

use crate::isolate::FlvTag;

const TAG_VIDEO: u8 = 9;
/// Bodies larger than this are refused (RTMP's own limit is 16 MiB per message).
pub const MAX_VIDEO_BODY: usize = 8 * 1024 * 1024;

/// The FLV file header (video only) and the first PreviousTagSize.
pub fn file_header() -> [u8; 13] {
    [b'F', b'L', b'V', 1, 0x01, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// What the first bytes of a VIDEODATA body say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoInfo {
    pub keyframe: bool,
    /// 7 = AVC (H.264), 12 = HEVC in the common extension: nothing else is passed on.
    pub codec_id: u8,
    /// AVC/HEVC sequence header: the decoder configuration.
    pub config: bool,
}

/// FLV video codecs a decode child is given: AVC and HEVC. The legacy ones (Sorenson,
/// VP6, screen video) are rarely published and each would be another decoder exposed to
/// strangers' bytes.
const CODECS: [u8; 2] = [7, 12];

/// Why a video message is refused: the connection is closed with this reason, since a
/// stream whose video cannot reach the decoder must not go on unwatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoRefusal {
    #[error("an empty video message")]
    Empty,
    #[error("a video message of {0} bytes, over the {MAX_VIDEO_BODY}-byte limit")]
    TooLarge(usize),
    #[error("video codec {0} (only H.264 and HEVC are analysed)")]
    Codec(u8),
}

/// Reads the VIDEODATA header of an accepted body.
pub fn video_info(body: &[u8]) -> Result<VideoInfo, VideoRefusal> {
    let first = *body.first().ok_or(VideoRefusal::Empty)?;
    if body.len() > MAX_VIDEO_BODY {
        return Err(VideoRefusal::TooLarge(body.len()));
    }
    let codec_id = first & 0x0f;
    if !CODECS.contains(&codec_id) {
        return Err(VideoRefusal::Codec(codec_id));
    }
    Ok(VideoInfo { keyframe: first >> 4 == 1, codec_id, config: body.get(1) == Some(&0) })
}

/// Wraps a VIDEODATA body in an FLV tag at `timestamp_ms`.
pub fn video_tag(body: &[u8], timestamp_ms: u32) -> Result<FlvTag, VideoRefusal> {
    let info = video_info(body)?;
    let len = body.len() as u32;
    let mut bytes = Vec::with_capacity(body.len() + 15);
    bytes.push(TAG_VIDEO);
    bytes.extend_from_slice(&len.to_be_bytes()[1..]);
    let ts = timestamp_ms.to_be_bytes();
    bytes.extend_from_slice(&[ts[1], ts[2], ts[3], ts[0]]);
    bytes.extend_from_slice(&[0, 0, 0]);
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(&(len + 11).to_be_bytes());
    Ok(FlvTag { keyframe: info.keyframe, config: info.config, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_size_timestamp_and_flags() {
        let body = [0x17, 0x00, 0, 0, 0, 1, 2, 3];
        let t = video_tag(&body, 0x0102_0304).unwrap();
        assert!(t.keyframe && t.config);
        assert_eq!(&t.bytes[..11], &[9, 0, 0, 8, 0x02, 0x03, 0x04, 0x01, 0, 0, 0]);
        assert_eq!(&t.bytes[11..19], &body);
        assert_eq!(&t.bytes[19..], &19u32.to_be_bytes());
        let inter = video_tag(&[0x27, 0x01, 0, 0, 0], 40).unwrap();
        assert!(!inter.keyframe && !inter.config);
        assert_eq!(video_tag(&[], 0).unwrap_err(), VideoRefusal::Empty);
        // Sorenson H.263 (2), VP6 (4), screen video (3): refused before any decoder.
        for codec in [2u8, 3, 4, 5, 6] {
            assert_eq!(video_tag(&[0x10 | codec, 0, 0], 0).unwrap_err(), VideoRefusal::Codec(codec));
        }
        assert!(video_tag(&[0x1c, 0x00, 0, 0, 0], 0).unwrap().config, "HEVC");
        let huge = vec![0x17; MAX_VIDEO_BODY + 1];
        assert_eq!(video_tag(&huge, 0).unwrap_err(), VideoRefusal::TooLarge(MAX_VIDEO_BODY + 1));
    }
}
