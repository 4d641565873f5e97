use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[infer]`: where ONNX Runtime and the models are, and which models run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferConfig {
    /// The setup cache: model files under `models/`, ONNX Runtime under `onnxruntime/`.
    /// Default: `$VIGIL_CACHE_DIR`, else `.cache/vigil`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// libonnxruntime.so; default: `$ORT_DYLIB_PATH`, else the one setup put in the cache.
    #[serde(default)]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Folder of model manifests (`*.toml`).
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// Manifest names of the models to run; the age model runs on detected faces.
    #[serde(default = "default_detector")]
    pub detector: String,
    #[serde(default = "default_age")]
    pub age: Option<String>,
    #[serde(default = "default_classifier")]
    pub classifier: Option<String>,
    /// `fp32`, `int8`, or `auto` (the default): each configured model's int8 build
    /// (manifest `NAME-int8`) where its agreement with fp32 holds, else fp32.
    #[serde(default)]
    pub precision: Precision,
    /// Threads inside one model run.
    #[serde(default = "default_intra_threads")]
    pub intra_threads: usize,
    /// Tried in order; CPU is always the last resort unless `require_gpu`.
    #[serde(default = "default_providers")]
    pub execution_providers: Vec<String>,
    #[serde(default)]
    pub require_gpu: bool,
    /// Inference threads, each with its own sessions; 0 (the default): one per core
    /// this process may use, so a worker uses the machine it is given.
    #[serde(default = "default_inference_threads")]
    pub inference_threads: usize,
    /// The batcher runs at most this many frames together...
    #[serde(default = "default_batch_max_frames")]
    pub batch_max_frames: usize,
    /// ...and waits at most this long after the first frame for more.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Frames waiting for inference, across all streams.
    #[serde(default = "default_queue_frames")]
    pub queue_frames: usize,
    /// The share of the inference threads' time the worker plans to fill: new streams
    /// are refused (and the worker reports not ready) before analysis falls behind.
    #[serde(default = "default_max_utilization")]
    pub max_utilization: f64,
    /// Streams this worker can analyse, when the operator knows it; 0 (the default):
    /// measured from the per-sample cost and each stream's sample rate.
    #[serde(default)]
    pub capacity_streams: usize,
}

/// Which build of each model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Auto,
    Fp32,
    Int8,
}

fn default_max_utilization() -> f64 {
    0.8
}

fn default_inference_threads() -> usize {
    0
}
fn default_batch_max_frames() -> usize {
    8
}
fn default_batch_max_wait_ms() -> u64 {
    5
}
fn default_queue_frames() -> usize {
    64
}

impl InferConfig {
    /// The inference threads to start: `inference_threads`, or one per core this
    /// process may use (its CPU affinity and cgroup quota, as the standard library reads
    /// them) when it is 0.
    pub fn threads(&self) -> usize {
        match self.inference_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(64),
            n => n,
        }
    }
}

pub const KNOWN_PROVIDERS: [&str; 3] = ["tensorrt", "cuda", "cpu"];
pub const ORT_LIB_FILE: &str = "onnxruntime/libonnxruntime.so.1.32.0";

impl Default for InferConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("VIGIL_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".cache/vigil"))
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("models")
}

/// A relative path as found from the working directory, else from the folders above
/// the executable (a checkout's `target/release/vigil` finds the checkout's cache), else
/// as given.
fn locate(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().skip(1).map(|a| a.join(path)).find(|p| p.exists()))
        .unwrap_or_else(|| path.to_path_buf())
}
fn default_detector() -> String {
    "nudenet-320n".into()
}
fn default_age() -> Option<String> {
    Some("age-v1".into())
}
fn default_classifier() -> Option<String> {
    Some("open-nsfw".into())
}
fn default_intra_threads() -> usize {
    1
}
fn default_providers() -> Vec<String> {
    vec!["cpu".into()]
}

impl InferConfig {
    pub fn onnxruntime_lib(&self) -> PathBuf {
        self.onnxruntime_lib
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .unwrap_or_else(|| self.cache_dir().join(ORT_LIB_FILE))
    }

    /// The cache folder, found as [`locate`] does for relative paths.
    pub fn cache_dir(&self) -> PathBuf {
        locate(&self.cache_dir)
    }

    /// The manifest folder, found as [`locate`] does for relative paths.
    pub fn models_dir(&self) -> PathBuf {
        locate(&self.models_dir)
    }

    pub fn model_file(&self, file: &str) -> PathBuf {
        self.cache_dir().join("models").join(file)
    }

    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut e = Vec::new();
        if self.detector.trim().is_empty() {
            e.push(format!("{prefix}.detector: must name a model manifest"));
        }
        if !(1..=64).contains(&self.intra_threads) {
            e.push(format!("{prefix}.intra_threads: {} is outside 1..=64", self.intra_threads));
        }
        if self.execution_providers.is_empty() {
            e.push(format!("{prefix}.execution_providers: must list at least one of {KNOWN_PROVIDERS:?}"));
        }
        for (i, p) in self.execution_providers.iter().enumerate() {
            if !KNOWN_PROVIDERS.contains(&p.as_str()) {
                e.push(format!(
                    "{prefix}.execution_providers[{i}]: unknown provider \"{p}\" (known: {KNOWN_PROVIDERS:?})"
                ));
            }
        }
        if !(0.1..=1.0).contains(&self.max_utilization) {
            e.push(format!("{prefix}.max_utilization: {} is outside 0.1..=1.0", self.max_utilization));
        }
        if self.inference_threads > 64 {
            e.push(format!("{prefix}.inference_threads: {} is over 64 (0: one per core)", self.inference_threads));
        }
        if !(1..=256).contains(&self.batch_max_frames) {
            e.push(format!("{prefix}.batch_max_frames: {} is outside 1..=256", self.batch_max_frames));
        }
        if self.batch_max_wait_ms > 1000 {
            e.push(format!(
                "{prefix}.batch_max_wait_ms: {} ms would delay alerts; at most 1000",
                self.batch_max_wait_ms
            ));
        }
        if self.queue_frames < self.batch_max_frames {
            e.push(format!(
                "{prefix}.queue_frames: {} is smaller than batch_max_frames ({})",
                self.queue_frames, self.batch_max_frames
            ));
        }
        if self.require_gpu && self.execution_providers.iter().all(|p| p == "cpu") {
            e.push(format!("{prefix}.require_gpu: set, but execution_providers lists no GPU provider"));
        }
        e
    }
}
