use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(
        "ONNX Runtime library not found at {path}: run `make setup` (it installs it from the onnxruntime wheel), \
         or point [infer].onnxruntime_lib or ORT_DYLIB_PATH at libonnxruntime.so"
    )]
    RuntimeMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("model {name}: file {path} is missing: run `make setup` to fetch the reference models")]
    ModelMissing { name: String, path: PathBuf },
    #[error("model {name}: {path} has sha256 {actual}, its manifest expects {expected}; refusing to load it")]
    Checksum { name: String, path: PathBuf, expected: String, actual: String },
    #[error("model {name}: {reason}")]
    Load { name: String, reason: String },
    #[error("model {name}: inference failed: {reason}")]
    Run { name: String, reason: String },
    #[error("execution provider {0} is required by config but not available in this ONNX Runtime build")]
    ProviderUnavailable(String),
}
