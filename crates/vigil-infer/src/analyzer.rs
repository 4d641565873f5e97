//! Runs the configured models on a frame: the detector, the age model on each face it
//! finds, and the whole-frame classifier. A model that fails marks the frame unscanned
//! for that stage; it never makes a frame look clean.

use crate::decode;
use crate::manifest::{ModelKind, ModelManifest};
use crate::metrics::METRICS;
use crate::preprocess::{self, Region};
use crate::{InferConfig, InferError};
use ort::session::Session;
use ort::value::TensorRef;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;
use vigil_core::{AgeEstimate, Detection, FaceSignal, Frame, Unscanned};

/// Faces beyond this many per frame are not age-estimated (counted in the output).
const MAX_FACES: usize = 16;

/// What the models found in one frame.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub detections: Vec<Detection>,
    pub faces: Vec<FaceSignal>,
    pub nsfw_score: Option<f32>,
    pub unscanned: Vec<Unscanned>,
}

/// A loaded model, for reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub kind: ModelKind,
    pub version: String,
    pub license: String,
    pub provider: String,
}

struct Model {
    manifest: ModelManifest,
    session: Session,
    input: Vec<f32>,
}

impl Model {
    fn load(cfg: &InferConfig, name: &str, kind: ModelKind) -> Result<Model, InferError> {
        let manifest = ModelManifest::find(&cfg.models_dir(), name)?;
        if manifest.kind != kind {
            return Err(InferError::Load {
                name: name.into(),
                reason: format!("is a {:?} model, configured where a {kind:?} model belongs", manifest.kind),
            });
        }
        let path = cfg.model_file(&manifest.file);
        verify_checksum(&manifest, &path)?;
        let env = crate::environment(cfg)?;
        let load_err = |e: String| InferError::Load { name: name.into(), reason: e };
        let session = Session::builder(&env)
            .map_err(|e| load_err(e.to_string()))?
            .with_intra_threads(cfg.intra_threads)
            .map_err(|e| load_err(e.to_string()))?
            .commit_from_file(&path)
            .map_err(|e| load_err(e.to_string()))?;
        for (what, want, have) in [
            ("input", &manifest.input.name, session.inputs().iter().map(|o| o.name().to_string()).collect::<Vec<_>>()),
            ("output", &manifest.output.name, session.outputs().iter().map(|o| o.name().to_string()).collect()),
        ] {
            if !have.contains(want) {
                return Err(load_err(format!("the manifest names {what} \"{want}\", the model has {have:?}")));
            }
        }
        let input = vec![0f32; manifest.input_len()];
        Ok(Model { manifest, session, input })
    }

    /// Runs the model on `batch` images already written to `self.input`.
    fn run(&mut self, batch: usize) -> Result<Vec<f32>, InferError> {
        let name = self.manifest.name.clone();
        let spec = &self.manifest.input;
        let shape = match spec.layout {
            crate::manifest::Layout::Nchw => [batch, 3, spec.height as usize, spec.width as usize],
            crate::manifest::Layout::Nhwc => [batch, spec.height as usize, spec.width as usize, 3],
        };
        let err = |e: String| {
            METRICS.errors.with_label_values(&[&name]).inc();
            InferError::Run { name: name.clone(), reason: e }
        };
        let started = Instant::now();
        let tensor = TensorRef::from_array_view((shape, &self.input[..batch * self.manifest.input_len()]))
            .map_err(|e| err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => tensor])
            .map_err(|e| err(e.to_string()))?;
        let value = outputs.get(&self.manifest.output.name).ok_or_else(|| err("output missing".into()))?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(|e| err(e.to_string()))?;
        METRICS.runs.with_label_values(&[&name]).inc();
        METRICS.seconds.with_label_values(&[&name]).observe(started.elapsed().as_secs_f64());
        Ok(data.to_vec())
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.manifest.name.clone(),
            kind: self.manifest.kind,
            version: self.manifest.version.clone(),
            license: self.manifest.license.spdx.clone(),
            provider: "cpu".into(),
        }
    }
}

fn verify_checksum(m: &ModelManifest, path: &Path) -> Result<(), InferError> {
    let data =
        std::fs::read(path).map_err(|_| InferError::ModelMissing { name: m.name.clone(), path: path.to_path_buf() })?;
    let actual = hex::encode(Sha256::digest(&data));
    if !actual.eq_ignore_ascii_case(&m.sha256) {
        return Err(InferError::Checksum {
            name: m.name.clone(),
            path: path.to_path_buf(),
            expected: m.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

pub struct Analyzer {
    detector: Model,
    age: Option<Model>,
    classifier: Option<Model>,
}

impl Analyzer {
    /// Loads every configured model, checking checksums and input/output names.
    pub fn load(cfg: &InferConfig) -> Result<Analyzer, InferError> {
        for p in &cfg.execution_providers {
            if p != "cpu" {
                if cfg.require_gpu {
                    return Err(InferError::ProviderUnavailable(p.clone()));
                }
                tracing::warn!(provider = %p, "this build runs on the CPU provider only; falling back to CPU");
            }
        }
        // The runtime first: without it no model can load, and that is the fix to name.
        crate::environment(cfg)?;
        let detector = Model::load(cfg, &cfg.detector, ModelKind::Detector)?;
        let age = cfg.age.as_deref().map(|n| Model::load(cfg, n, ModelKind::Age)).transpose()?;
        let classifier = cfg.classifier.as_deref().map(|n| Model::load(cfg, n, ModelKind::Classifier)).transpose()?;
        Ok(Analyzer { detector, age, classifier })
    }

    pub fn models(&self) -> Vec<ModelInfo> {
        std::iter::once(&self.detector).chain(&self.age).chain(&self.classifier).map(Model::info).collect()
    }

    pub fn analyze(&mut self, frame: &Frame) -> Analysis {
        let mut out = Analysis::default();
        match self.detect(frame) {
            Ok(dets) => out.detections = dets,
            Err(e) => out.unscanned.push(Unscanned { stage: "detector".into(), reason: e.to_string() }),
        }
        let faces: Vec<&Detection> =
            out.detections.iter().filter(|d| d.signal.as_deref() == Some("face")).take(MAX_FACES).collect();
        out.faces = faces.iter().map(|d| FaceSignal { bbox: d.bbox, score: d.score, age: None }).collect();
        if !out.faces.is_empty()
            && let Some(age) = self.age.as_mut()
        {
            match estimate_ages(age, frame, &out.faces) {
                Ok(ages) => out.faces.iter_mut().zip(ages).for_each(|(f, a)| f.age = a),
                Err(e) => out.unscanned.push(Unscanned { stage: "age".into(), reason: e.to_string() }),
            }
        }
        if let Some(c) = self.classifier.as_mut() {
            match classify(c, frame) {
                Ok(score) => out.nsfw_score = score,
                Err(e) => out.unscanned.push(Unscanned { stage: "classifier".into(), reason: e.to_string() }),
            }
        }
        out
    }

    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, InferError> {
        let m = &mut self.detector;
        let mapping = preprocess::fill_input(&m.manifest.input, frame, Region::whole(frame), &mut m.input);
        let raw = m.run(1)?;
        let o = &m.manifest.output;
        let dets = decode::yolov8(
            &raw,
            o.labels.len(),
            mapping,
            (frame.width as f32, frame.height as f32),
            o.score_threshold,
            o.iou_threshold,
        );
        Ok(dets
            .into_iter()
            .map(|d| {
                let label = o.labels[d.class].clone();
                let signal = m.manifest.signal_of(&label).map(str::to_string);
                Detection { label, score: d.score, bbox: d.bbox, signal }
            })
            .collect())
    }
}

/// All faces of a frame in one batch.
fn estimate_ages(m: &mut Model, frame: &Frame, faces: &[FaceSignal]) -> Result<Vec<Option<AgeEstimate>>, InferError> {
    let n = m.manifest.input_len();
    if m.input.len() < n * faces.len() {
        m.input.resize(n * faces.len(), 0.0);
    }
    let pad = m.manifest.input.face_padding;
    for (i, f) in faces.iter().enumerate() {
        let [x, y, w, h] = f.bbox;
        let region = Region { x: x - w * pad, y: y - h * pad, w: w * (1.0 + 2.0 * pad), h: h * (1.0 + 2.0 * pad) };
        preprocess::fill_input(&m.manifest.input, frame, region, &mut m.input[i * n..(i + 1) * n]);
    }
    let raw = m.run(faces.len())?;
    let bins = &m.manifest.output.bins;
    let minor_below = m.manifest.output.minor_below_years;
    Ok(raw
        .chunks_exact(bins.len())
        .map(|p| {
            decode::age_bins(p, bins, minor_below)
                .map(|(expected_years, p_minor)| AgeEstimate { expected_years, p_minor })
        })
        .collect())
}

/// The classifier's probability for its `nsfw_score` signal.
fn classify(m: &mut Model, frame: &Frame) -> Result<Option<f32>, InferError> {
    preprocess::fill_input(&m.manifest.input, frame, Region::whole(frame), &mut m.input);
    let raw = m.run(1)?;
    let labels = &m.manifest.output.labels;
    let idx = labels.iter().position(|l| m.manifest.signal_of(l) == Some("nsfw_score"));
    Ok(idx.and_then(|i| raw.get(i).copied()).filter(|v| v.is_finite()))
}
