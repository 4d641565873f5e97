//! The hand-over from a stream's decoder to analysis: bounded, never blocking the
//! producer. When analysis is slow the *oldest* frame goes (the newest is the one worth
//! looking at on a live stream) and is counted; lifecycle notices are never dropped.

use crate::metrics::METRICS;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use vigil_core::Frame;

/// What a stream hands to analysis.
#[derive(Debug)]
pub enum StreamOutput {
    Frame(Frame),
    /// The decoder recognised the video (declared size and rate, decoder chosen).
    Started {
        width: u32,
        height: u32,
        fps: Option<f64>,
        decoder: String,
    },
    /// Frames were lost here (decoder crashed, hung, or was restarted): this stretch of
    /// the stream was not scanned.
    Gap {
        reason: String,
    },
    /// The stream is over: `None` when it ended normally, else why it was ended.
    Ended {
        reason: Option<String>,
    },
}

/// Bounded by a count of frames, which is also a byte bound: frames come only from a
/// decode child, whose pipe reader refuses any frame larger than `analysis_max_px`²×3
/// bytes ([`crate::isolate::protocol`]), and config validation keeps `queue_frames`
/// times that under [`crate::MAX_QUEUE_BYTES`] (640 px, 8 frames: 9.4 MiB). Still
/// images, which keep their exact size up to `max_input_px`, never pass through here:
/// `vigil scan` analyses them one at a time. Notices carry no media.
pub struct StreamQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    frame_capacity: usize,
    dropped: AtomicU64,
}

struct Inner {
    items: VecDeque<StreamOutput>,
    frames: usize,
    closed: bool,
}

impl StreamQueue {
    pub fn new(frame_capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner { items: VecDeque::new(), frames: 0, closed: false }),
            ready: Condvar::new(),
            frame_capacity: frame_capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Never blocks. Returns whether an older frame was dropped to make room.
    pub fn push(&self, item: StreamOutput) -> bool {
        let mut q = self.lock();
        let mut dropped = false;
        if matches!(item, StreamOutput::Frame(_)) {
            if q.frames >= self.frame_capacity
                && let Some(pos) = q.items.iter().position(|i| matches!(i, StreamOutput::Frame(_)))
            {
                q.items.remove(pos);
                q.frames -= 1;
                dropped = true;
                self.dropped.fetch_add(1, Relaxed);
                METRICS.frames_dropped.inc();
            }
            q.frames += 1;
        }
        q.items.push_back(item);
        drop(q);
        self.ready.notify_one();
        dropped
    }

    /// The next item, waiting up to `timeout`; `None` on timeout or when closed and empty.
    pub fn pop(&self, timeout: Duration) -> Option<StreamOutput> {
        let mut q = self.lock();
        if q.items.is_empty() && !q.closed {
            q = self.ready.wait_timeout(q, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        let item = q.items.pop_front()?;
        if matches!(item, StreamOutput::Frame(_)) {
            q.frames -= 1;
        }
        Some(item)
    }

    /// No more items will come; waiting consumers wake up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed_and_empty(&self) -> bool {
        let q = self.lock();
        q.closed && q.items.is_empty()
    }

    /// Frames dropped from this queue so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::StreamId;

    fn frame(pts_ms: u64) -> StreamOutput {
        StreamOutput::Frame(Frame {
            stream: StreamId("s".into()),
            pts_ms,
            keyframe: true,
            width: 1,
            height: 1,
            rgb: vec![0; 3],
            arrived_unix_ms: 0,
        })
    }

    #[test]
    fn drops_the_oldest_frame_and_keeps_notices() {
        let q = StreamQueue::new(2);
        q.push(StreamOutput::Gap { reason: "restart".into() });
        assert!(!q.push(frame(1)));
        assert!(!q.push(frame(2)));
        assert!(q.push(frame(3)), "full: frame 1 goes");
        q.push(StreamOutput::Ended { reason: None });
        assert_eq!(q.dropped(), 1);
        let got: Vec<String> = std::iter::from_fn(|| q.pop(Duration::ZERO))
            .map(|i| match i {
                StreamOutput::Frame(f) => f.pts_ms.to_string(),
                StreamOutput::Gap { .. } => "gap".into(),
                StreamOutput::Ended { .. } => "end".into(),
                StreamOutput::Started { .. } => "start".into(),
            })
            .collect();
        assert_eq!(got, ["gap", "2", "3", "end"]);
    }

    #[test]
    fn pop_waits_for_a_producer_and_close_wakes_it() {
        let q = std::sync::Arc::new(StreamQueue::new(4));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(Duration::from_secs(5)).is_some());
        std::thread::sleep(Duration::from_millis(50));
        q.push(frame(1));
        assert!(t.join().unwrap());
        q.close();
        assert!(q.pop(Duration::from_secs(5)).is_none());
        assert!(q.is_closed_and_empty());
    }
}
