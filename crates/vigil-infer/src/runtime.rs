//! The one ONNX Runtime environment of the process, loaded from a shared library.

use crate::{InferConfig, InferError};
use ort::environment::Environment;
use std::sync::OnceLock;

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime (once per process) and returns its environment.
pub fn environment(cfg: &InferConfig) -> Result<Environment, InferError> {
    let path = cfg.onnxruntime_lib();
    if ENV.get().is_none() && !path.exists() {
        return Err(InferError::RuntimeMissing { path });
    }
    let result = ENV.get_or_init(|| {
        tracing::info!(lib = %path.display(), "loading ONNX Runtime");
        ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("vigil").build().map_err(|e| e.to_string()))
    });
    result.clone().map_err(|reason| InferError::Runtime { path, reason })
}
