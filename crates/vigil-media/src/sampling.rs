//! Which coded units reach the decoder and which decoded frames reach analysis.
//!
//! Decoding is the cost of the whole system (PERFORMANCE.md: keyframe-only decode is
//! 14–27× cheaper than full decode), so the cheap mode drops delta units *before* the
//! decoder, and even keyframes are capped at `sample_fps` (an all-intra stream must not
//! cost a decode per frame). The dense mode decodes everything and keeps frames at
//! `dense_fps`. Adaptive switches between the two on fusion's word; a switch to dense
//! waits for the next keyframe so the decoder never sees a delta unit without its
//! reference.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingMode {
    /// Full decode, frames kept at `sample_fps`.
    Fixed,
    /// Keyframes only (at most `sample_fps` of them).
    Keyframes,
    /// Keyframes only while calm; full decode at `dense_fps` while fusion sees risk.
    Adaptive,
}

/// Keeps one sample per interval on a fixed grid, so the rate is exact over time and a
/// little timestamp jitter does not lose a sample.
#[derive(Debug, Clone)]
struct RateGate {
    interval_ms: u64,
    next_due_ms: Option<u64>,
}

impl RateGate {
    fn new(interval_ms: u64) -> Self {
        Self { interval_ms, next_due_ms: None }
    }

    fn take(&mut self, pts_ms: u64) -> bool {
        let iv = self.interval_ms;
        // Timestamps in whole milliseconds: a frame due at 1000 may say 999.
        let tolerance = 2.min(iv);
        match self.next_due_ms {
            // Timestamps went backwards (a new segment, a reconnect): start a new grid.
            Some(due) if pts_ms + 2 * iv < due => {
                self.next_due_ms = Some(pts_ms + iv);
                true
            }
            Some(due) if pts_ms + tolerance < due => false,
            Some(due) => {
                // On the grid unless we fell behind it by a whole interval (a gap).
                self.next_due_ms = Some(if pts_ms >= due + iv { pts_ms + iv } else { due + iv });
                true
            }
            None => {
                self.next_due_ms = Some(pts_ms + iv);
                true
            }
        }
    }
}

fn interval_ms(fps: f64) -> u64 {
    (1000.0 / fps).round().max(1.0) as u64
}

#[derive(Debug)]
struct GateState {
    mode: SamplingMode,
    dense: bool,
    /// After a switch to dense: delta units wait for the next keyframe.
    awaiting_keyframe: bool,
    units: RateGate,
    frames: RateGate,
}

/// What happens to a coded unit before the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Drop,
    Decode,
    /// Decode it, then drain the decoder so that the frame comes out at once.
    DecodeAndDrain,
}

/// The two decisions, shared by the pad probes before and after the decoder and by the
/// command reader that flips adaptive sampling.
#[derive(Debug)]
pub struct SamplingGate {
    state: Mutex<GateState>,
}

impl SamplingGate {
    pub fn new(mode: SamplingMode, sample_fps: f64, dense_fps: f64) -> Self {
        let frame_fps = if mode == SamplingMode::Fixed { sample_fps } else { dense_fps };
        Self {
            state: Mutex::new(GateState {
                mode,
                dense: false,
                awaiting_keyframe: false,
                units: RateGate::new(interval_ms(sample_fps)),
                frames: RateGate::new(interval_ms(frame_fps)),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adaptive mode only: full decode (true) or keyframes (false). Returns whether
    /// anything changed.
    pub fn set_dense(&self, on: bool) -> bool {
        let mut s = self.lock();
        if s.mode != SamplingMode::Adaptive || s.dense == on {
            return false;
        }
        s.dense = on;
        s.awaiting_keyframe = on;
        true
    }

    pub fn is_dense(&self) -> bool {
        let s = self.lock();
        s.mode == SamplingMode::Fixed || s.dense
    }

    /// How often to ask the sender for a keyframe, for senders that make them only on
    /// request (WebRTC): at the sampling interval while only keyframes are decoded, and
    /// quickly after a switch to dense until one arrives. `None` while decoding fully.
    pub fn keyframe_request_interval(&self) -> Option<std::time::Duration> {
        let s = self.lock();
        let full_decode = s.mode == SamplingMode::Fixed || s.dense;
        match (full_decode, s.awaiting_keyframe) {
            (true, true) => Some(std::time::Duration::from_millis(250)),
            (true, false) => None,
            (false, _) => Some(std::time::Duration::from_millis(s.units.interval_ms)),
        }
    }

    /// Before the decoder: may this coded unit be decoded? Units without a timestamp
    /// are decoded (headers, codec data).
    pub fn pass_unit(&self, pts_ms: Option<u64>, keyframe: bool) -> bool {
        self.unit(pts_ms, keyframe) != Unit::Drop
    }

    /// Like [`SamplingGate::pass_unit`], and says whether the decoder must be drained
    /// after this unit: in keyframe-only decoding the next unit it gets is another
    /// keyframe, seconds away, and a decoder with a reorder window (H.264 with B-frames:
    /// two frames) would hold this one until then: four seconds late at a 2 s GOP.
    pub fn unit(&self, pts_ms: Option<u64>, keyframe: bool) -> Unit {
        let mut s = self.lock();
        let full_decode = s.mode == SamplingMode::Fixed || s.dense;
        if full_decode {
            if s.awaiting_keyframe {
                if !keyframe {
                    return Unit::Drop;
                }
                s.awaiting_keyframe = false;
            }
            return Unit::Decode;
        }
        match (keyframe, pts_ms) {
            (false, _) => Unit::Drop,
            (true, None) => Unit::Decode,
            (true, Some(t)) if s.units.take(t) => Unit::DecodeAndDrain,
            (true, Some(_)) => Unit::Drop,
        }
    }

    /// After the decoder: does this decoded frame go to analysis?
    pub fn pass_frame(&self, pts_ms: Option<u64>) -> bool {
        let mut s = self.lock();
        let full_decode = s.mode == SamplingMode::Fixed || s.dense;
        // In keyframe mode every decoded frame was already chosen before decoding.
        !full_decode || pts_ms.is_none_or(|t| s.frames.take(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_only_decoding_drains_after_each_keyframe_and_full_decoding_never_does() {
        let g = SamplingGate::new(SamplingMode::Adaptive, 1.0, 4.0);
        assert_eq!(g.unit(Some(0), true), Unit::DecodeAndDrain);
        assert_eq!(g.unit(Some(33), false), Unit::Drop);
        assert_eq!(g.unit(None, true), Unit::Decode, "codec data");
        assert!(g.set_dense(true));
        assert_eq!(g.unit(Some(66), false), Unit::Drop, "dense waits for a keyframe");
        assert_eq!(g.unit(Some(2000), true), Unit::Decode);
        assert_eq!(g.unit(Some(2033), false), Unit::Decode);
        let fixed = SamplingGate::new(SamplingMode::Fixed, 1.0, 4.0);
        assert_eq!(fixed.unit(Some(0), true), Unit::Decode);
    }

    /// A 30 fps stream with a keyframe every 60 frames, for `secs` seconds.
    fn units(secs: u64) -> impl Iterator<Item = (u64, bool)> {
        (0..secs * 30).map(|i| (i * 1000 / 30, i % 60 == 0))
    }

    #[test]
    fn fixed_decodes_everything_and_keeps_the_rate() {
        let g = SamplingGate::new(SamplingMode::Fixed, 1.0, 4.0);
        let decoded: Vec<u64> = units(10).filter(|&(t, k)| g.pass_unit(Some(t), k)).map(|(t, _)| t).collect();
        assert_eq!(decoded.len(), 300);
        let kept = decoded.iter().filter(|&&t| g.pass_frame(Some(t))).count();
        assert_eq!(kept, 10);
    }

    #[test]
    fn keyframes_decodes_one_unit_per_gop() {
        let g = SamplingGate::new(SamplingMode::Keyframes, 1.0, 4.0);
        let decoded: Vec<u64> = units(10).filter(|&(t, k)| g.pass_unit(Some(t), k)).map(|(t, _)| t).collect();
        assert_eq!(decoded, vec![0, 2000, 4000, 6000, 8000]);
        assert!(decoded.iter().all(|&t| g.pass_frame(Some(t))));
    }

    #[test]
    fn all_intra_streams_are_capped_before_decoding() {
        let g = SamplingGate::new(SamplingMode::Keyframes, 2.0, 4.0);
        let decoded = (0..300u64).filter(|i| g.pass_unit(Some(i * 1000 / 30), true)).count();
        assert_eq!(decoded, 20, "10 s of all-keyframe video at 2 fps");
    }

    #[test]
    fn adaptive_switches_at_a_keyframe_and_back() {
        let g = SamplingGate::new(SamplingMode::Adaptive, 1.0, 4.0);
        let mut decoded = Vec::new();
        let mut kept = Vec::new();
        for (t, k) in units(12) {
            if t == 3000 {
                assert!(g.set_dense(true));
                assert!(!g.set_dense(true), "no change the second time");
            }
            if t == 8000 {
                g.set_dense(false);
            }
            if g.pass_unit(Some(t), k) {
                decoded.push(t);
                if g.pass_frame(Some(t)) {
                    kept.push(t);
                }
            }
        }
        // Cheap: keyframes 0, 2000. Dense from the keyframe at 4000 until 8000 (exclusive)
        // = 120 units; cheap again: keyframes 8000 and 10000.
        assert_eq!(decoded.len(), 2 + 120 + 2, "{decoded:?}");
        assert!(!decoded.contains(&3000) && decoded.contains(&4000));
        // Dense keeps 4 per second over 4 s (16) plus the 4 keyframes.
        assert_eq!(kept.len(), 4 + 16, "{kept:?}");
    }

    #[test]
    fn a_backwards_jump_restarts_the_grid() {
        let mut r = RateGate::new(1000);
        assert!(r.take(50_000));
        assert!(!r.take(50_500));
        assert!(r.take(0), "timestamps restarted after a reconnect");
        assert!(r.take(1000));
    }
}
