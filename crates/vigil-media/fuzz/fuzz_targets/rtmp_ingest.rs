//! Bytes from an RTMP publisher, as the worker sees them: the handshake, then the chunk
//! stream through `ChunkGuard`, then each video message framed as an FLV tag. None of
//! it may panic, loop or allocate without bound on any input. The body lives in
//! `vigil_media::ingest::fuzz`, where the test suite runs it as a seeded smoke run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vigil_media::ingest::fuzz::rtmp_ingest(data));
