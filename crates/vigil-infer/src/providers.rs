//! Execution providers, tried in the configured order (TensorRT → CUDA → CPU). A
//! provider that cannot be registered or cannot run the model is skipped with the
//! reason logged; CPU is the last resort unless the configuration requires a GPU.

use crate::{InferConfig, InferError};
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use std::path::Path;

/// Builds a session for `path` on the first provider that works; returns it and the
/// provider's name.
pub fn session_with_fallback(
    env: &Environment,
    cfg: &InferConfig,
    model: &str,
    path: &Path,
) -> Result<(Session, &'static str), InferError> {
    let mut tried = Vec::new();
    let mut order: Vec<&str> = cfg.execution_providers.iter().map(String::as_str).collect();
    if !cfg.require_gpu && !order.contains(&"cpu") {
        order.push("cpu");
    }
    for provider in order {
        match try_provider(env, cfg, provider, path) {
            Ok((session, name)) => {
                if !tried.is_empty() {
                    tracing::warn!(%model, provider = name, "fell back to {name}: {}", tried.join("; "));
                }
                tracing::info!(%model, provider = name, "model loaded");
                return Ok((session, name));
            }
            Err(reason) => {
                tracing::warn!(%model, %provider, "execution provider not usable: {reason}");
                tried.push(format!("{provider}: {reason}"));
            }
        }
    }
    if cfg.require_gpu {
        return Err(InferError::ProviderUnavailable(tried.join("; ")));
    }
    Err(InferError::Load { name: model.into(), reason: tried.join("; ") })
}

fn try_provider(
    env: &Environment,
    cfg: &InferConfig,
    provider: &str,
    path: &Path,
) -> Result<(Session, &'static str), String> {
    let builder = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(cfg.intra_threads)
        .map_err(|e| e.to_string())?;
    let (builder, name) = match provider {
        "tensorrt" => {
            require_compiled_in::<ep::TensorRT>()?;
            let eps = [ep::TensorRT::default().build().error_on_failure()];
            (builder.with_execution_providers(eps).map_err(|e| e.to_string())?, "tensorrt")
        }
        "cuda" => {
            require_compiled_in::<ep::CUDA>()?;
            let eps = [ep::CUDA::default().build().error_on_failure()];
            (builder.with_execution_providers(eps).map_err(|e| e.to_string())?, "cuda")
        }
        "cpu" => (builder, "cpu"),
        other => return Err(format!("unknown provider {other}")),
    };
    let mut builder = builder;
    builder.commit_from_file(path).map(|s| (s, name)).map_err(|e| e.to_string())
}

/// ONNX Runtime says which providers its build has; the CPU wheel has neither GPU one.
fn require_compiled_in<E: ExecutionProvider>() -> Result<(), String> {
    match E::is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "this ONNX Runtime build has no {} (install the onnxruntime-gpu library and point \
             [infer].onnxruntime_lib at it)",
            E::NAME
        )),
        Err(e) => Err(e.to_string()),
    }
}
