//! Cross-stream dynamic batching. Frames from any number of streams go into one
//! bounded queue; each inference thread owns its own sessions (`Session::run` takes
//! `&mut self`, so no lock on the hot path), takes the first waiting frame, gathers more
//! until the batch is full or `batch_max_wait_ms` has passed, and runs them together —
//! so a GPU sees full batches when load is high and a lone frame waits only briefly.
//!
//! The queue never grows without bound: `submit` refuses a frame when it is full (the
//! caller counts it and marks the sample unscanned), `submit_wait` blocks (for files).
//! Its count is a byte bound too: the worker submits frames from the streams' queues,
//! at most `analysis_max_px`²×3 bytes each, and the worker's config validation keeps
//! `queue_frames` times that under 1 GiB (64 frames of 640 px: 75 MiB). `vigil scan`
//! never uses the batcher (stills at full size go straight to an analyzer).

use crate::metrics::METRICS;
use crate::{Analysis, Analyzer, InferConfig, InferError};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vigil_core::Frame;

struct Job {
    frame: Frame,
    reply: SyncSender<Analysis>,
}

pub struct Batcher {
    queue: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    load: Arc<BatcherLoad>,
}

/// What the inference threads have done, for the worker's capacity: time spent running
/// models and frames analysed, since start, plus the cost of one frame measured at start.
#[derive(Debug, Default)]
pub struct BatcherLoad {
    busy_ns: AtomicU64,
    frames: AtomicU64,
    pub threads: usize,
    /// One 640x360 frame through every model, timed after the warm-up.
    pub start_cost: Duration,
}

impl BatcherLoad {
    /// (time spent running models, frames analysed) since start.
    pub fn totals(&self) -> (Duration, u64) {
        (Duration::from_nanos(self.busy_ns.load(Relaxed)), self.frames.load(Relaxed))
    }
}

/// A frame the batcher could not take: the queue was full.
#[derive(Debug)]
pub struct QueueFull(pub Frame);

impl Batcher {
    /// Loads one analyzer per inference thread (each warmed up) and starts the threads.
    pub fn start(cfg: &InferConfig) -> Result<Batcher, InferError> {
        let (tx, rx) = sync_channel::<Job>(cfg.queue_frames);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        let mut load = BatcherLoad { threads: cfg.threads(), ..Default::default() };
        let mut analyzers = (0..load.threads).map(|_| Analyzer::load(cfg)).collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = analyzers.first_mut() {
            load.start_cost = time_one_frame(first);
        }
        let load = Arc::new(load);
        for (i, analyzer) in analyzers.into_iter().enumerate() {
            let (rx, load) = (rx.clone(), load.clone());
            let (max_batch, max_wait) = (cfg.batch_max_frames, Duration::from_millis(cfg.batch_max_wait_ms));
            let handle = std::thread::Builder::new()
                .name(format!("vigil-infer-{i}"))
                .spawn(move || worker(analyzer, rx, max_batch, max_wait, &load))
                .map_err(|e| InferError::Load { name: "batcher".into(), reason: e.to_string() })?;
            workers.push(handle);
        }
        Ok(Batcher { queue: Some(tx), workers, load })
    }

    /// The inference threads' running totals (shared; cheap to read).
    pub fn load(&self) -> Arc<BatcherLoad> {
        self.load.clone()
    }

    /// Queues a frame unless the queue is full; the analysis arrives on the receiver.
    pub fn submit(&self, frame: Frame) -> Result<Receiver<Analysis>, QueueFull> {
        let (reply, rx) = sync_channel(1);
        // The queue is gone only inside `drop`; a frame offered then is refused like a
        // frame offered to a full queue.
        let Some(queue) = self.queue.as_ref() else { return Err(QueueFull(frame)) };
        match queue.try_send(Job { frame, reply }) {
            Ok(()) => {
                METRICS.queue_frames.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                METRICS.queue_full.inc();
                Err(QueueFull(job.frame))
            }
        }
    }

    /// Queues a frame, waiting for room (backpressure for sources that can wait).
    pub fn submit_wait(&self, frame: Frame) -> Receiver<Analysis> {
        let (reply, rx) = sync_channel(1);
        // A send fails only when every worker (or the queue) is gone; the dropped reply
        // then tells the caller (its receiver sees a disconnect).
        if let Some(queue) = self.queue.as_ref()
            && queue.send(Job { frame, reply }).is_ok()
        {
            METRICS.queue_frames.inc();
        }
        rx
    }
}

impl Drop for Batcher {
    /// Closes the queue and lets the threads finish what was already accepted.
    fn drop(&mut self) {
        self.queue.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// One analysis-size frame through every model (after the warm-up, so it costs what a
/// real frame costs): the per-sample cost the worker plans with before it has measured
/// real ones.
fn time_one_frame(analyzer: &mut Analyzer) -> Duration {
    let (width, height) = (640, 360);
    let frame = Frame {
        stream: vigil_core::StreamId("capacity-probe".into()),
        pts_ms: 0,
        keyframe: true,
        width,
        height,
        rgb: vec![128; (width * height * 3) as usize],
        arrived_unix_ms: 0,
    };
    let started = Instant::now();
    let _ = analyzer.analyze(&frame);
    started.elapsed()
}

fn worker(
    mut analyzer: Analyzer,
    rx: Arc<Mutex<Receiver<Job>>>,
    max_batch: usize,
    max_wait: Duration,
    load: &BatcherLoad,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    let mut frames: Vec<Frame> = Vec::with_capacity(max_batch);
    loop {
        {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => jobs.push(job),
                Err(_) => return, // queue closed and drained
            }
            METRICS.queue_frames.dec();
            let deadline = Instant::now() + max_wait;
            while jobs.len() < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        METRICS.queue_frames.dec();
                        jobs.push(job)
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        METRICS.batch_frames.observe(jobs.len() as f64);
        let replies: Vec<SyncSender<Analysis>> = jobs
            .drain(..)
            .map(|j| {
                frames.push(j.frame);
                j.reply
            })
            .collect();
        let started = Instant::now();
        let results = analyzer.analyze_batch(&frames);
        load.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        load.frames.fetch_add(frames.len() as u64, Relaxed);
        frames.clear();
        for (reply, analysis) in replies.into_iter().zip(results) {
            let _ = reply.send(analysis); // the submitter may have gone away; fine
        }
    }
}
