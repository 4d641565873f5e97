//! The RTMP ingest fuzz target's body, shared by `cargo fuzz` (`fuzz/fuzz_targets/
//! rtmp_ingest.rs`, coverage-guided, needs nightly) and a bounded smoke run in the test
//! suite (stable, seeded inputs), so CI exercises the same code path on every change.

use super::guard::ChunkGuard;
use crate::flv;
use rml_rtmp::handshake::{Handshake, PeerType};

/// Bytes from an RTMP publisher, as the worker sees them: the handshake, then the chunk
/// stream through [`ChunkGuard`], then each video message framed as an FLV tag. None of
/// it may panic, loop or allocate without bound on any input.
pub fn rtmp_ingest(data: &[u8]) {
    let (split, rest) = data.split_at(data.len().min(1 + 1536 + 1536));
    let mut handshake = Handshake::new(PeerType::Server);
    let _ = handshake.process_bytes(split);

    // Reads arrive split anywhere: feed in uneven pieces.
    let mut guard = ChunkGuard::default();
    for piece in rest.chunks(97) {
        if guard.feed(piece).is_err() {
            break;
        }
    }
    if let Ok(tag) = flv::video_tag(rest, u32::from_le_bytes([0, 1, 2, 3])) {
        assert_eq!(tag.bytes.len(), rest.len() + 15);
    }
}

#[cfg(test)]
mod tests {
    use vigil_core::SeededRng;

    /// A bounded smoke run of the fuzz target: random bytes, and a valid-looking
    /// handshake followed by chunk headers with random fields and random video bodies.
    #[test]
    fn the_fuzz_target_survives_a_seeded_smoke_run() {
        let mut rng = SeededRng::new(0x5eed_f00d);
        for i in 0..3000u32 {
            let len = rng.below(if i % 10 == 0 { 64 * 1024 } else { 6000 });
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 2 == 0 && data.len() > 3073 + 12 {
                data[0] = 3; // RTMP version: the handshake goes on to its next stage
                let body = 3073;
                data[body] = 0x03 | ((rng.below(4) as u8) << 6); // chunk basic header, csid 3
                data[body + 7] = [8, 9, 20, 1][rng.below(4)]; // audio, video, AMF0, chunk size
            }
            super::rtmp_ingest(&data);
        }
    }
}
