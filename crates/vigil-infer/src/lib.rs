//! Inference through ONNX Runtime (`ort`, loaded dynamically).
//!
//! Models are data: each `models/*.toml` manifest says where the file comes from, its
//! checksum and licence, and how to feed it and read it ([`manifest`]). Preprocessing
//! ([`preprocess`]) and output decoding ([`decode`]) are plain Rust driven by the
//! manifest; [`Analyzer`] runs the detector, the age model on each detected face and
//! the whole-frame classifier.
#![forbid(unsafe_code)]

mod analyzer;
mod batcher;
pub mod config;
pub mod decode;
mod error;
pub mod manifest;
pub mod metrics;
pub mod preprocess;
mod providers;
mod runtime;

pub use analyzer::{Analysis, Analyzer, ModelInfo, choose_precision, time_model_runs};
pub use batcher::{Batcher, BatcherLoad, QueueFull};
pub use config::InferConfig;
pub use error::InferError;
pub use manifest::{ModelKind, ModelManifest};
pub use runtime::environment;
