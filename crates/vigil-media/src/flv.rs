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
    /// 7 = AVC (H.264), 12 = HEVC in the common extension; others are passed on too.
    pub codec_id: u8,
    /// AVC/HEVC sequence header: the decoder configuration.
    pub config: bool,
}

/// Reads the VIDEODATA header; `None` for an empty or oversized body.
pub fn video_info(body: &[u8]) -> Option<VideoInfo> {
    let first = *body.first()?;
    if body.len() > MAX_VIDEO_BODY {
        return None;
    }
    let codec_id = first & 0x0f;
    let has_packet_type = matches!(codec_id, 7 | 12);
    Some(VideoInfo { keyframe: first >> 4 == 1, codec_id, config: has_packet_type && body.get(1) == Some(&0) })
}

/// Wraps a VIDEODATA body in an FLV tag at `timestamp_ms`.
pub fn video_tag(body: &[u8], timestamp_ms: u32) -> Option<FlvTag> {
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
    Some(FlvTag { keyframe: info.keyframe, config: info.config, bytes })
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
        assert!(video_tag(&[], 0).is_none());
    }
}
