//! Inference benchmark: each configured model alone at batch 1, 8 and 32 (frames/s,
//! p50/p99 per run), then the cross-stream batcher against frame-by-frame analysis on
//! the same frames, in the same run.

use super::percentile_ms;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use vigil_core::{Frame, StreamId};
use vigil_infer::{Analyzer, Batcher, ModelKind, time_model_runs};
use vigil_worker::config::VigilConfig;

#[derive(clap::Args)]
pub struct InferBenchArgs {
    /// Batch sizes per model.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batches: Vec<usize>,
    /// Timed runs per batch size.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Frames pushed through the batcher comparison (from 4 streams).
    #[arg(long, default_value_t = 64)]
    frames: usize,
    /// A smoke run for CI (batches 1 and 4, 3 runs, 8 frames).
    #[arg(long)]
    quick: bool,
}

fn frame(i: usize) -> Frame {
    // A synthetic 640x360 gradient that shifts per frame: no content, steady cost.
    let rgb = (0..640 * 360 * 3).map(|k| ((k / 3 + i * 7) % 251) as u8).collect();
    Frame {
        stream: StreamId(format!("s{}", i % 4)),
        pts_ms: i as u64 * 1000,
        keyframe: true,
        width: 640,
        height: 360,
        rgb,
        arrived_unix_ms: 0,
    }
}

pub fn run(mut args: InferBenchArgs, cfg: &VigilConfig) -> anyhow::Result<ExitCode> {
    if args.quick {
        args.batches = vec![1, 4];
        args.runs = 3;
        args.frames = 8;
    }
    let infer = &cfg.infer;
    let models: Vec<(&str, ModelKind)> = [
        (Some(infer.detector.as_str()), ModelKind::Detector),
        (infer.age.as_deref(), ModelKind::Age),
        (infer.classifier.as_deref(), ModelKind::Classifier),
    ]
    .into_iter()
    .filter_map(|(n, k)| n.filter(|n| !n.is_empty()).map(|n| (n, k)))
    .collect();
    println!(
        "{:<14} {:>9} {:>6} {:>10} {:>10} {:>12} {:>9}",
        "model", "provider", "batch", "p50_ms", "p99_ms", "ms/frame", "frames/s"
    );
    for (name, kind) in models {
        let mut base_per_item = None;
        for &batch in &args.batches {
            let (times, provider) = time_model_runs(infer, name, kind, batch, args.runs)?;
            let (p50, p99) = (percentile_ms(&times, 50.0), percentile_ms(&times, 99.0));
            let per_item = p50 / batch as f64;
            let base = *base_per_item.get_or_insert(per_item);
            println!(
                "{name:<14} {provider:>9} {batch:>6} {p50:>10.2} {p99:>10.2} {per_item:>12.2} {:>9.1}   ({:.2}x batch 1 per frame)",
                1000.0 / per_item,
                base / per_item
            );
            eprintln!(
                "{}",
                json!({"bench": "infer_model", "model": name, "provider": provider, "batch": batch,
                       "run_p50_ms": p50, "run_p99_ms": p99, "ms_per_frame": per_item, "frames_per_s": 1000.0 / per_item})
            );
        }
    }
    println!(
        "GPU execution providers: not measured here (no GPU on this machine); run this on a GPU worker with execution_providers = [\"tensorrt\", \"cuda\"]."
    );

    let frames: Vec<Frame> = (0..args.frames).map(frame).collect();
    let mut single = Analyzer::load(infer)?;
    let t = Instant::now();
    for f in &frames {
        std::hint::black_box(single.analyze(f));
    }
    let unbatched = frames.len() as f64 / t.elapsed().as_secs_f64();
    drop(single);
    let batcher = Arc::new(Batcher::start(infer)?);
    let t = Instant::now();
    let waits: Vec<_> = frames.iter().cloned().map(|f| batcher.submit_wait(f)).collect();
    for w in waits {
        w.recv()?;
    }
    let batched = frames.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "full analysis of {} frames: frame by frame {unbatched:.1} frames/s, batcher (max {} frames, {} ms) {batched:.1} frames/s: {:.2}x",
        frames.len(),
        infer.batch_max_frames,
        infer.batch_max_wait_ms,
        batched / unbatched
    );
    eprintln!(
        "{}",
        json!({"bench": "infer_batcher", "frames": frames.len(), "unbatched_fps": unbatched, "batched_fps": batched, "ratio": batched / unbatched})
    );
    drop(batcher);
    thread_splits(infer, &frames)?;
    Ok(ExitCode::SUCCESS)
}

/// Inference threads (each with its own sessions, inter-op) against threads inside one
/// run (intra-op), for the cores this process may use: the same frames through the
/// batcher under each split, the best named. Streams arrive independently, so the
/// worker's default is one inference thread per core with one intra-op thread each.
fn thread_splits(infer: &vigil_infer::InferConfig, frames: &[Frame]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut splits: Vec<(usize, usize)> =
        (1..=cores).filter(|t| cores.is_multiple_of(*t)).map(|t| (t, cores / t)).collect();
    splits.push((cores, 1));
    splits.dedup();
    let mut best: Option<(usize, usize, f64)> = None;
    for (threads, intra) in splits {
        let cfg = vigil_infer::InferConfig { inference_threads: threads, intra_threads: intra, ..infer.clone() };
        let batcher = Batcher::start(&cfg)?;
        let t = Instant::now();
        let waits: Vec<_> = frames.iter().cloned().map(|f| batcher.submit_wait(f)).collect();
        for w in waits {
            w.recv()?;
        }
        let fps = frames.len() as f64 / t.elapsed().as_secs_f64();
        println!("thread split: {threads} inference thread(s) x {intra} intra-op: {fps:.1} frames/s");
        eprintln!(
            "{}",
            json!({"bench": "infer_threads", "inference_threads": threads, "intra_threads": intra, "fps": fps})
        );
        if best.is_none_or(|(_, _, b)| fps > b) {
            best = Some((threads, intra, fps));
        }
    }
    if let Some((threads, intra, fps)) = best {
        println!(
            "best split on {cores} core(s): inference_threads = {threads}, intra_threads = {intra} ({fps:.1} frames/s)"
        );
    }
    Ok(())
}
