//! Bytes from an RTMP publisher, as the worker sees them: the handshake, then the chunk
//! stream through `ChunkGuard`, then each video message framed as an FLV tag. None of
//! it may panic, loop or allocate without bound on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_rtmp::handshake::{Handshake, PeerType};
use vigil_media::flv;
use vigil_media::ingest::guard::ChunkGuard;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = data.split_at(data.len().min(1 + 1536 + 1536));
    let mut handshake = Handshake::new(PeerType::Server);
    let _ = handshake.process_bytes(split);

    // Reads arrive split anywhere: feed in uneven pieces.
    let mut guard = ChunkGuard::default();
    let mut pieces = rest.chunks(97);
    while let Some(piece) = pieces.next() {
        if guard.feed(piece).is_err() {
            break;
        }
    }
    if let Ok(tag) = flv::video_tag(rest, u32::from_le_bytes([0, 1, 2, 3])) {
        assert_eq!(tag.bytes.len(), rest.len() + 15);
    }
});
