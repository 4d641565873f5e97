//! A strict reader of the RTMP chunk stream that runs *before* the protocol library.
//!
//! `rml_rtmp` trusts its peer more than a worker can: one reassembly buffer for all
//! chunk streams (interleaving mixes messages and can underflow a length), no limit on
//! message size, recursive AMF0 parsing without a depth bound. This guard follows the
//! chunk headers itself and refuses, before any of that code sees the bytes: messages
//! over a per-type size (control and command messages are small), interleaved partial
//! messages, headers that continue a chunk stream that never started, unknown message
//! types and absurd chunk sizes. It keeps a few bytes of state per chunk stream and
//! never buffers payload (except a SetChunkSize's 4 bytes).

use std::collections::HashMap;

/// Largest audio or video message (RTMP allows 16 MiB).
pub const MAX_MEDIA_MESSAGE: usize = 8 * 1024 * 1024;
/// Largest control, data or command message: AMF0 nesting deep enough to exhaust a
/// stack needs more room than this.
pub const MAX_COMMAND_MESSAGE: usize = 16 * 1024;
const MAX_CHUNK_SIZE: usize = 1 << 20;
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("message type {0} is not accepted from a publisher")]
    MessageType(u8),
    #[error("message of type {type_id} declares {len} bytes, the limit is {max}")]
    TooLarge { type_id: u8, len: usize, max: usize },
    #[error("chunk stream {0} continues a message that never started")]
    NoMessage(u32),
    #[error("chunk stream {0} starts while another message is incomplete (interleaving is not accepted)")]
    Interleaved(u32),
    #[error("chunk size {0} is outside 1..=1048576")]
    ChunkSize(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyStreams,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChunkStream {
    len: usize,
    type_id: u8,
    extended_ts: bool,
    started: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Payload { csid: u32, left: usize },
}

#[derive(Debug)]
pub struct ChunkGuard {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk stream whose message is incomplete, and how much of it is left.
    partial: Option<(u32, usize)>,
    state: State,
    header: Vec<u8>,
    /// Payload of a SetChunkSize being read (applies once complete).
    set_chunk_size: Option<Vec<u8>>,
}

impl Default for ChunkGuard {
    fn default() -> Self {
        Self {
            chunk_size: 128,
            streams: HashMap::new(),
            partial: None,
            state: State::Header,
            header: Vec::with_capacity(18),
            set_chunk_size: None,
        }
    }
}

fn max_len(type_id: u8) -> Result<usize, GuardError> {
    match type_id {
        8 | 9 => Ok(MAX_MEDIA_MESSAGE),
        1..=6 | 15 | 17 | 18 | 20 => Ok(MAX_COMMAND_MESSAGE),
        other => Err(GuardError::MessageType(other)),
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

impl ChunkGuard {
    /// Checks the next bytes of the stream (after the handshake). Once it returns an
    /// error the connection must be closed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), GuardError> {
        while !bytes.is_empty() {
            match self.state {
                State::Header => {
                    let take = bytes.len().min(18 - self.header.len());
                    let before = self.header.len();
                    self.header.extend_from_slice(&bytes[..take]);
                    match self.parse_header()? {
                        Some(used) => {
                            bytes = &bytes[used - before..];
                            self.header.clear();
                        }
                        None => bytes = &bytes[take..],
                    }
                }
                State::Payload { csid, left } => {
                    let n = left.min(bytes.len());
                    if let Some(buf) = self.set_chunk_size.as_mut() {
                        buf.extend_from_slice(&bytes[..n.min(4usize.saturating_sub(buf.len()))]);
                    }
                    bytes = &bytes[n..];
                    let left = left - n;
                    if left > 0 {
                        self.state = State::Payload { csid, left };
                        continue;
                    }
                    self.state = State::Header;
                    if self.partial.is_none() {
                        self.apply_set_chunk_size()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_set_chunk_size(&mut self) -> Result<(), GuardError> {
        if let Some(buf) = self.set_chunk_size.take()
            && buf.len() == 4
        {
            let size = u32::from_be_bytes([buf[0] & 0x7f, buf[1], buf[2], buf[3]]);
            if size == 0 || size as usize > MAX_CHUNK_SIZE {
                return Err(GuardError::ChunkSize(size));
            }
            self.chunk_size = size as usize;
        }
        Ok(())
    }

    /// Parses a complete chunk header from `self.header`; `None` when more bytes are
    /// needed. Returns how many header bytes it used.
    fn parse_header(&mut self) -> Result<Option<usize>, GuardError> {
        let h = &self.header;
        let Some(&first) = h.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, basic) = match first & 0x3f {
            0 if h.len() >= 2 => (64 + h[1] as u32, 2),
            1 if h.len() >= 3 => (64 + h[1] as u32 + 256 * h[2] as u32, 3),
            0 | 1 => return Ok(None),
            id => (id as u32, 1),
        };
        if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(GuardError::TooManyStreams);
        }
        let mut cs = self.streams.get(&csid).copied().unwrap_or_default();
        if fmt != 0 && !cs.started {
            return Err(GuardError::NoMessage(csid));
        }
        let msg_len = [11, 7, 3, 0][fmt as usize];
        if h.len() < basic + msg_len {
            return Ok(None);
        }
        let m = &h[basic..basic + msg_len];
        let extended = if fmt == 3 { cs.extended_ts } else { u24(&m[..3]) == 0x00ff_ffff };
        let total = basic + msg_len + if extended { 4 } else { 0 };
        if h.len() < total {
            return Ok(None);
        }
        let continuing = self.partial.filter(|&(p, _)| p == csid);
        match (self.partial, fmt) {
            (Some((p, _)), _) if p != csid => return Err(GuardError::Interleaved(csid)),
            (Some(_), 0..=2) => return Err(GuardError::Interleaved(csid)),
            _ => {}
        }
        if fmt <= 1 {
            cs.len = u24(&m[3..6]) as usize;
            cs.type_id = m[6];
            let max = max_len(cs.type_id)?;
            if cs.len > max {
                return Err(GuardError::TooLarge { type_id: cs.type_id, len: cs.len, max });
            }
        }
        cs.extended_ts = extended;
        cs.started = true;
        self.streams.insert(csid, cs);
        let left_in_message = continuing.map_or(cs.len, |(_, left)| left);
        let chunk = left_in_message.min(self.chunk_size);
        let after = left_in_message - chunk;
        self.partial = (after > 0).then_some((csid, after));
        if continuing.is_none() && cs.type_id == 1 {
            self.set_chunk_size = Some(Vec::with_capacity(4));
        }
        self.state = State::Payload { csid, left: chunk };
        if chunk == 0 {
            self.state = State::Header;
            if self.partial.is_none() {
                self.apply_set_chunk_size()?;
            }
        }
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk0(csid: u8, type_id: u8, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![csid & 0x3f, 0, 0, 0];
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&[1, 0, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn accepts_messages_split_into_chunks_and_bytes() {
        let mut g = ChunkGuard::default();
        // 300-byte video message at the default chunk size of 128: 128 + 3 + 128 + 3 + 44.
        let mut s = chunk0(6, 9, 300, &[0x17; 128]);
        s.push(0xc6);
        s.extend_from_slice(&[0; 128]);
        s.push(0xc6);
        s.extend_from_slice(&[0; 44]);
        // Fed one byte at a time: reads split anywhere.
        for b in &s {
            g.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(g.partial.is_none());
        // SetChunkSize 4096, then a 4000-byte message in one chunk.
        g.feed(&chunk0(2, 1, 4, &4096u32.to_be_bytes())).unwrap();
        assert_eq!(g.chunk_size, 4096);
        g.feed(&chunk0(6, 9, 4000, &[0; 4000])).unwrap();
        assert!(g.partial.is_none());
    }

    #[test]
    fn refuses_what_the_library_would_choke_on() {
        let big_command = chunk0(3, 20, 1 << 20, &[]);
        assert!(matches!(ChunkGuard::default().feed(&big_command), Err(GuardError::TooLarge { .. })));
        assert_eq!(ChunkGuard::default().feed(&[0x43, 0, 0, 0]), Err(GuardError::NoMessage(3)));
        assert_eq!(ChunkGuard::default().feed(&chunk0(3, 22, 10, &[])), Err(GuardError::MessageType(22)));
        let mut g = ChunkGuard::default();
        g.feed(&chunk0(6, 9, 300, &[0; 128])).unwrap();
        assert_eq!(g.feed(&chunk0(4, 8, 10, &[0; 10])), Err(GuardError::Interleaved(4)));
        let mut g = ChunkGuard::default();
        assert_eq!(g.feed(&chunk0(2, 1, 4, &0u32.to_be_bytes())), Err(GuardError::ChunkSize(0)));
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut rng = vigil_core::SeededRng::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut g = ChunkGuard::default();
            let bytes: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
            let _ = g.feed(&bytes);
        }
    }
}
