//! `vigil bench`: measurements that print ratios against a baseline measured in the
//! same run (these machines are shared and noisy; absolute times are for context).

mod decode;
mod hash;
mod infer;
mod robustness;
mod streams;

use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The bank index against a linear scan (and FAISS when installed): build time,
    /// memory per hash, radius-31 query p50/p99, on random and clustered banks.
    Hash(hash::HashBenchArgs),
    /// What bank matching survives (re-encode, scaling, text, crops, mirroring) with
    /// plain PDQ, PDQ with variants, and pHash; false matches; variant cost.
    Robustness(robustness::RobustnessArgs),
    /// Each model at batch 1, 8, 32 (frames/s, p50/p99), and the cross-stream batcher
    /// against frame-by-frame analysis.
    Infer(infer::InferBenchArgs),
    /// Decode cost per stream: full decode against keyframe-only on the same 720p30
    /// input, through the real decode child.
    Decode(decode::DecodeBenchArgs),
    /// Live streams one worker holds per sampling mode (pushed 720p30 over RTMP, a
    /// stated content mix), CPU and memory per stream, and banked frame → interrupt
    /// latency.
    Streams(streams::StreamsBenchArgs),
}

pub fn run(cmd: BenchCommand, config: &vigil_worker::config::VigilConfig) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Hash(args) => hash::run(args),
        BenchCommand::Robustness(args) => robustness::run(args, &config.infer.cache_dir()),
        BenchCommand::Infer(args) => infer::run(args, config),
        BenchCommand::Decode(args) => decode::run(args),
        BenchCommand::Streams(args) => streams::run(args),
    }
}

/// p-th percentile (0..=100) of durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `f` once per item; the p50 and p99, in milliseconds.
pub fn p50_p99_ms<T>(items: impl IntoIterator<Item = T>, mut f: impl FnMut(T)) -> (f64, f64) {
    let mut times: Vec<Duration> = items
        .into_iter()
        .map(|item| {
            let start = std::time::Instant::now();
            f(item);
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    (percentile_ms(&times, 50.0), percentile_ms(&times, 99.0))
}
