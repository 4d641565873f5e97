//! The wire between the worker and a decode child: length-prefixed messages on the
//! child's stdin (worker → child) and stdout (child → worker).
//!
//! Every message is `[kind: u8][len: u32 LE][payload: len bytes]`. The worker treats the
//! child as hostile (it parses strangers' media and may be compromised), so every
//! length is checked against a limit before anything is allocated, and a frame's
//! declared size must match its pixels exactly.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

const KIND_FRAME: u8 = 1;
const KIND_EVENT: u8 = 2;
const KIND_MEDIA: u8 = 3;
const KIND_COMMAND: u8 = 4;
const KIND_MEDIA_END: u8 = 5;
const KIND_OFFER: u8 = 6;
const KIND_SPEC: u8 = 7;

/// Largest JSON event or command accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// Largest media chunk in one message to a child (pushed FLV). Larger tags (ingest
/// accepts video messages up to 8 MiB) are split across messages by [`write_media`]:
/// every byte ingest accepts reaches the decoder.
pub const MAX_MEDIA_CHUNK: usize = 4 * 1024 * 1024;
const FRAME_HEADER: usize = 8 + 1 + 4 + 4 + 8;

/// A sampled frame at analysis size, packed RGB.
#[derive(Debug, Clone, PartialEq)]
pub struct WireFrame {
    pub pts_ms: u64,
    pub keyframe: bool,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// When the coded unit this frame came from entered the decoder (unix ms; 0 unknown).
    pub arrived_unix_ms: u64,
}

/// What a child reports besides frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// The video was recognised and accepted: declared size and rate, the decoder chosen.
    Started { width: u32, height: u32, fps: Option<f64>, decoder: String },
    /// Once a second: the child's main loop is alive, with its running totals.
    Heartbeat { input_bytes: u64, units_in: u64, units_decoded: u64, frames_out: u64 },
    /// The source was refused (over a limit) or failed; the child exits after this.
    Failed { kind: crate::events::ChildFailure, reason: String },
    /// The source ended normally; the child exits after this.
    Ended,
    /// WHIP: the SDP answer to the publisher's offer, with every ICE candidate, and the
    /// offer's candidates the child dropped before `webrtcbin` saw them.
    Answer {
        sdp: String,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        dropped_candidates: super::candidates::DroppedCounts,
    },
}

/// What the worker tells a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Adaptive sampling: full decode at the dense rate (true) or keyframes only (false).
    Dense { on: bool },
}

/// A message from a child.
#[derive(Debug, Clone, PartialEq)]
pub enum FromChild {
    Frame(WireFrame),
    Event(ChildEvent),
}

/// A message to a child.
#[derive(Debug, Clone, PartialEq)]
pub enum ToChild {
    /// Bytes of a pushed stream (FLV), in order.
    Media(Vec<u8>),
    /// The pushed stream ended; the child drains and exits.
    MediaEnd,
    Command(Command),
    /// WHIP: the publisher's SDP offer (the child's second message, after its spec).
    Offer(String),
    /// What to decode, as JSON: always the child's first message. Never on the command
    /// line, where `/proc/PID/cmdline` would show a pulled URL's credentials to every
    /// local user.
    Spec(String),
}

/// Writes `bytes` of a pushed stream as one or more media messages of at most
/// [`MAX_MEDIA_CHUNK`] bytes (the child's appsrc takes a byte stream: the split is
/// invisible to the demuxer).
pub fn write_media(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.chunks(MAX_MEDIA_CHUNK) {
        write_message(w, KIND_MEDIA, &[chunk])?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("pipe: {0}")]
    Io(#[from] io::Error),
    #[error("message kind {0} is unknown")]
    UnknownKind(u8),
    #[error("message of {len} bytes is over the {max}-byte limit for its kind")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn write_message(w: &mut impl Write, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    w.write_all(&[kind])?;
    w.write_all(&len.to_le_bytes())?;
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

/// Reads one message header; `None` at a clean end of stream (between messages).
fn read_header(r: &mut impl Read) -> Result<Option<(u8, usize)>, WireError> {
    let mut header = [0u8; 5];
    match r.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut header[1..])?,
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    Ok(Some((header[0], len)))
}

fn read_payload(r: &mut impl Read, len: usize, max: usize) -> Result<Vec<u8>, WireError> {
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn json_payload<T: serde::de::DeserializeOwned>(r: &mut impl Read, len: usize) -> Result<T, WireError> {
    let buf = read_payload(r, len, MAX_JSON_BYTES)?;
    serde_json::from_slice(&buf).map_err(|e| WireError::Malformed(e.to_string()))
}

impl FromChild {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            FromChild::Frame(f) => {
                let mut head = [0u8; FRAME_HEADER];
                head[..8].copy_from_slice(&f.pts_ms.to_le_bytes());
                head[8] = u8::from(f.keyframe);
                head[9..13].copy_from_slice(&f.width.to_le_bytes());
                head[13..17].copy_from_slice(&f.height.to_le_bytes());
                head[17..25].copy_from_slice(&f.arrived_unix_ms.to_le_bytes());
                write_message(w, KIND_FRAME, &[&head, &f.rgb])
            }
            FromChild::Event(e) => {
                let json = serde_json::to_vec(e).map_err(io::Error::other)?;
                write_message(w, KIND_EVENT, &[&json])
            }
        }
    }

    /// Reads the next message; frames larger than `max_side`×`max_side` are refused
    /// before their pixels are read. `None` when the child closed its end.
    pub fn read(r: &mut impl Read, max_side: u32) -> Result<Option<FromChild>, WireError> {
        let Some((kind, len)) = read_header(r)? else { return Ok(None) };
        match kind {
            KIND_FRAME => {
                let max = FRAME_HEADER + (max_side as usize).pow(2) * 3;
                let buf = read_payload(r, len, max)?;
                if buf.len() < FRAME_HEADER {
                    return Err(WireError::Malformed("frame shorter than its header".into()));
                }
                let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let mut pts = [0u8; 8];
                pts.copy_from_slice(&buf[..8]);
                let (width, height) = (u32_at(9), u32_at(13));
                let pixels = buf.len() - FRAME_HEADER;
                if width == 0 || height == 0 || width > max_side || height > max_side {
                    return Err(WireError::Malformed(format!("frame size {width}x{height}")));
                }
                if pixels != width as usize * height as usize * 3 {
                    return Err(WireError::Malformed(format!("{width}x{height} frame with {pixels} bytes of pixels")));
                }
                let keyframe = buf[8] != 0;
                let mut arrived = [0u8; 8];
                arrived.copy_from_slice(&buf[17..25]);
                let mut rgb = buf;
                rgb.drain(..FRAME_HEADER);
                Ok(Some(FromChild::Frame(WireFrame {
                    pts_ms: u64::from_le_bytes(pts),
                    keyframe,
                    width,
                    height,
                    rgb,
                    arrived_unix_ms: u64::from_le_bytes(arrived),
                })))
            }
            KIND_EVENT => Ok(Some(FromChild::Event(json_payload(r, len)?))),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

impl ToChild {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToChild::Media(bytes) => write_message(w, KIND_MEDIA, &[bytes]),
            ToChild::MediaEnd => write_message(w, KIND_MEDIA_END, &[]),
            ToChild::Command(c) => {
                let json = serde_json::to_vec(c).map_err(io::Error::other)?;
                write_message(w, KIND_COMMAND, &[&json])
            }
            ToChild::Offer(sdp) => write_message(w, KIND_OFFER, &[sdp.as_bytes()]),
            ToChild::Spec(json) => write_message(w, KIND_SPEC, &[json.as_bytes()]),
        }
    }

    /// Reads the next message; `None` when the worker closed its end.
    pub fn read(r: &mut impl Read) -> Result<Option<ToChild>, WireError> {
        let Some((kind, len)) = read_header(r)? else { return Ok(None) };
        match kind {
            KIND_MEDIA => Ok(Some(ToChild::Media(read_payload(r, len, MAX_MEDIA_CHUNK)?))),
            KIND_MEDIA_END => {
                read_payload(r, len, 0)?;
                Ok(Some(ToChild::MediaEnd))
            }
            KIND_COMMAND => Ok(Some(ToChild::Command(json_payload(r, len)?))),
            KIND_OFFER => {
                let sdp = read_payload(r, len, MAX_JSON_BYTES)?;
                String::from_utf8(sdp)
                    .map(|s| Some(ToChild::Offer(s)))
                    .map_err(|_| WireError::Malformed("offer is not UTF-8".into()))
            }
            KIND_SPEC => {
                let spec = read_payload(r, len, MAX_JSON_BYTES)?;
                String::from_utf8(spec)
                    .map(|s| Some(ToChild::Spec(s)))
                    .map_err(|_| WireError::Malformed("spec is not UTF-8".into()))
            }
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_larger_than_one_message_is_split_and_arrives_whole() {
        let tag: Vec<u8> = (0..MAX_MEDIA_CHUNK * 2 + 123).map(|i| (i % 251) as u8).collect();
        let mut pipe = Vec::new();
        write_media(&mut pipe, &tag).unwrap();
        let mut r = &pipe[..];
        let mut got = Vec::new();
        while let Some(m) = ToChild::read(&mut r).unwrap() {
            let ToChild::Media(b) = m else { panic!("not media") };
            assert!(b.len() <= MAX_MEDIA_CHUNK);
            got.extend(b);
        }
        assert_eq!(got, tag);
        ToChild::Spec("{}".into()).write(&mut pipe).unwrap();
        let mut r = &pipe[pipe.len() - 7..];
        assert_eq!(ToChild::read(&mut r).unwrap(), Some(ToChild::Spec("{}".into())));
    }

    fn roundtrip_from(m: &FromChild, max_side: u32) -> Result<Option<FromChild>, WireError> {
        let mut buf = Vec::new();
        m.write(&mut buf).unwrap();
        FromChild::read(&mut buf.as_slice(), max_side)
    }

    #[test]
    fn frames_and_events_round_trip() {
        let f = FromChild::Frame(WireFrame {
            pts_ms: 1234,
            keyframe: true,
            width: 4,
            height: 2,
            rgb: vec![7; 24],
            arrived_unix_ms: 1_795_000_000_123,
        });
        assert_eq!(roundtrip_from(&f, 640).unwrap(), Some(f));
        let e = FromChild::Event(ChildEvent::Failed {
            kind: crate::events::ChildFailure::Refused,
            reason: "too big".into(),
        });
        assert_eq!(roundtrip_from(&e, 640).unwrap(), Some(e));
        for m in [
            ToChild::Media(vec![1, 2, 3]),
            ToChild::MediaEnd,
            ToChild::Command(Command::Dense { on: true }),
            ToChild::Offer("v=0\r\n".into()),
        ] {
            let mut buf = Vec::new();
            m.write(&mut buf).unwrap();
            assert_eq!(ToChild::read(&mut buf.as_slice()).unwrap(), Some(m));
        }
    }

    #[test]
    fn answers_carry_the_childs_dropped_candidates_by_known_reason_only() {
        use crate::isolate::candidates::{Dropped, DroppedCounts};
        let dropped = DroppedCounts::from([(Dropped::Loopback, 2), (Dropped::Hostname, 1)]);
        let e = FromChild::Event(ChildEvent::Answer { sdp: "v=0\r\n".into(), dropped_candidates: dropped });
        assert_eq!(roundtrip_from(&e, 640).unwrap(), Some(e));
        // Nothing dropped: the field is left out, and an answer without it reads as none.
        let plain: ChildEvent = serde_json::from_str(r#"{"event":"answer","sdp":"v=0"}"#).unwrap();
        assert_eq!(plain, ChildEvent::Answer { sdp: "v=0".into(), dropped_candidates: DroppedCounts::new() });
        assert!(!serde_json::to_string(&plain).unwrap().contains("dropped"));
        // The reasons become metric labels: a child cannot invent one.
        let invented = r#"{"event":"answer","sdp":"v=0","dropped_candidates":{"x\"}":1}}"#;
        assert!(serde_json::from_str::<ChildEvent>(invented).is_err());
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let big = FromChild::Frame(WireFrame {
            pts_ms: 0,
            keyframe: false,
            width: 8,
            height: 8,
            rgb: vec![0; 192],
            arrived_unix_ms: 0,
        });
        assert!(matches!(roundtrip_from(&big, 4), Err(WireError::TooLarge { .. })));
        // A header that claims 4 GiB of payload.
        let mut lie = vec![KIND_FRAME];
        lie.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(FromChild::read(&mut lie.as_slice(), 640), Err(WireError::TooLarge { .. })));
        // Declared size and pixel count disagree.
        let mut wrong = Vec::new();
        FromChild::Frame(WireFrame {
            pts_ms: 0,
            keyframe: false,
            width: 4,
            height: 2,
            rgb: vec![0; 23],
            arrived_unix_ms: 0,
        })
        .write(&mut wrong)
        .unwrap();
        assert!(matches!(FromChild::read(&mut wrong.as_slice(), 640), Err(WireError::Malformed(_))));
        assert!(matches!(FromChild::read(&mut [9u8, 0, 0, 0, 0].as_slice(), 640), Err(WireError::UnknownKind(9))));
        assert!(matches!(FromChild::read(&mut [].as_slice(), 640), Ok(None)));
    }
}
