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
    /// The execution provider the session runs on.
    provider: &'static str,
}

impl Model {
    fn load(cfg: &InferConfig, configured: &str, kind: ModelKind) -> Result<Model, InferError> {
        let manifest = choose_precision(cfg, configured)?;
        let name = manifest.name.as_str();
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
        let (session, provider) = crate::providers::session_with_fallback(&env, cfg, name, &path)?;
        for (what, want, have) in [
            ("input", &manifest.input.name, session.inputs().iter().map(|o| o.name().to_string()).collect::<Vec<_>>()),
            ("output", &manifest.output.name, session.outputs().iter().map(|o| o.name().to_string()).collect()),
        ] {
            if !have.contains(want) {
                return Err(load_err(format!("the manifest names {what} \"{want}\", the model has {have:?}")));
            }
        }
        let input = vec![0f32; manifest.input_len()];
        let m = &crate::metrics::METRICS;
        m.provider.with_label_values(&[name, provider]).set(1);
        // Its series exist from the start, at zero (the alerting rules read them).
        let _ = (m.runs.with_label_values(&[name]), m.errors.with_label_values(&[name]));
        let _ = m.cpu_seconds.with_label_values(&[name]);
        Ok(Model { manifest, session, input, provider })
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
        METRICS.seconds.with_label_values(&[&name, self.provider]).observe(started.elapsed().as_secs_f64());
        Ok(data.to_vec())
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.manifest.name.clone(),
            kind: self.manifest.kind,
            version: self.manifest.version.clone(),
            license: self.manifest.license.spdx.clone(),
            provider: self.provider.into(),
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
    warmup_ms: u64,
}

/// The manifest to run for `configured` under `[infer] precision`: its `-int8` build when
/// asked for (an error when there is none), or with `auto` when one exists and its
/// agreement holds; else the configured one.
pub fn choose_precision(cfg: &InferConfig, configured: &str) -> Result<ModelManifest, InferError> {
    use crate::config::Precision;
    let dir = cfg.models_dir();
    let original = ModelManifest::find(&dir, configured)?;
    if original.quantization.is_some() || cfg.precision == Precision::Fp32 {
        return Ok(original); // a quantised build named directly, or fp32 asked for
    }
    let quantised = ModelManifest::find(&dir, &format!("{configured}-int8"));
    match (cfg.precision, quantised) {
        (Precision::Int8, Ok(q)) => Ok(q),
        (Precision::Int8, Err(e)) => Err(InferError::Load {
            name: configured.into(),
            reason: format!("precision = \"int8\", but no int8 build of it: {e}"),
        }),
        (_, Ok(q)) if q.quantization.as_ref().is_some_and(|x| x.agreement == "holds" && x.from == configured) => Ok(q),
        _ => Ok(original),
    }
}

impl Analyzer {
    /// Loads every configured model, checking checksums and input/output names.
    pub fn load(cfg: &InferConfig) -> Result<Analyzer, InferError> {
        // The runtime first: without it no model can load, and that is the fix to name.
        crate::environment(cfg)?;
        let detector = Model::load(cfg, &cfg.detector, ModelKind::Detector)?;
        // An empty name switches an optional model off (e.g. VIGIL__INFER__CLASSIFIER="").
        let optional = |n: &Option<String>| n.as_deref().filter(|n| !n.is_empty()).map(str::to_string);
        let age = optional(&cfg.age).map(|n| Model::load(cfg, &n, ModelKind::Age)).transpose()?;
        let classifier = optional(&cfg.classifier).map(|n| Model::load(cfg, &n, ModelKind::Classifier)).transpose()?;
        let mut analyzer = Analyzer { detector, age, classifier, warmup_ms: 0 };
        analyzer.warm_up()?;
        Ok(analyzer)
    }

    /// Runs every model once on a blank input, so the first real frame does not pay
    /// for lazy initialisation and a model that cannot run is found before serving.
    fn warm_up(&mut self) -> Result<(), InferError> {
        let started = Instant::now();
        for m in std::iter::once(&mut self.detector).chain(self.age.as_mut()).chain(self.classifier.as_mut()) {
            let n = m.manifest.input_len();
            m.input[..n].fill(0.0);
            m.run(1)?;
        }
        self.warmup_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// How long the warm-up run of every model took.
    pub fn warmup_ms(&self) -> u64 {
        self.warmup_ms
    }

    pub fn models(&self) -> Vec<ModelInfo> {
        std::iter::once(&self.detector).chain(&self.age).chain(&self.classifier).map(Model::info).collect()
    }

    pub fn analyze(&mut self, frame: &Frame) -> Analysis {
        self.analyze_batch(std::slice::from_ref(frame)).pop().unwrap_or_default()
    }

    /// Analyses frames together: one detector run and one classifier run for the whole
    /// batch, one age run for every face in it. A failed run marks the stage unscanned
    /// on every frame of the batch.
    pub fn analyze_batch(&mut self, frames: &[Frame]) -> Vec<Analysis> {
        let mut out = vec![Analysis::default(); frames.len()];
        if frames.is_empty() {
            return out;
        }
        let unscanned = |out: &mut Vec<Analysis>, stage: &str, e: &InferError| {
            for a in out.iter_mut() {
                a.unscanned.push(Unscanned { stage: stage.into(), reason: e.to_string() });
            }
        };
        let cpu = |m: &Model| crate::metrics::METRICS.cpu_seconds.with_label_values(&[m.manifest.name.as_str()]);
        let (detected, secs) = vigil_core::cpu::timed(|| detect(&mut self.detector, frames));
        cpu(&self.detector).inc_by(secs);
        match detected {
            Ok(dets) => out.iter_mut().zip(dets).for_each(|(a, d)| a.detections = d),
            Err(e) => unscanned(&mut out, "detector", &e),
        }
        for a in out.iter_mut() {
            a.faces = a
                .detections
                .iter()
                .filter(|d| d.signal.as_deref() == Some("face"))
                .take(MAX_FACES)
                .map(|d| FaceSignal { bbox: d.bbox, score: d.score, age: None })
                .collect();
        }
        if let Some(age) = self.age.as_mut() {
            let faces: Vec<(usize, usize)> =
                out.iter().enumerate().flat_map(|(fi, a)| (0..a.faces.len()).map(move |k| (fi, k))).collect();
            if !faces.is_empty() {
                let crops: Vec<(&Frame, [f32; 4])> =
                    faces.iter().map(|&(fi, k)| (&frames[fi], out[fi].faces[k].bbox)).collect();
                let (estimated, secs) = vigil_core::cpu::timed(|| estimate_ages(age, &crops));
                cpu(age).inc_by(secs);
                match estimated {
                    Ok(ages) => faces.iter().zip(ages).for_each(|(&(fi, k), a)| out[fi].faces[k].age = a),
                    Err(e) => {
                        for &(fi, _) in &faces {
                            if !out[fi].unscanned.iter().any(|u| u.stage == "age") {
                                out[fi].unscanned.push(Unscanned { stage: "age".into(), reason: e.to_string() });
                            }
                        }
                    }
                }
            }
        }
        if let Some(c) = self.classifier.as_mut() {
            let (classified, secs) = vigil_core::cpu::timed(|| classify(c, frames));
            cpu(c).inc_by(secs);
            match classified {
                Ok(scores) => out.iter_mut().zip(scores).for_each(|(a, s)| a.nsfw_score = s),
                Err(e) => unscanned(&mut out, "classifier", &e),
            }
        }
        out
    }
}

/// Writes `items` (a frame and the region of it to use) as a batch into the model's
/// input buffer, growing it only when a larger batch than ever before arrives.
fn fill_batch<'a>(
    m: &mut Model,
    items: impl ExactSizeIterator<Item = (&'a Frame, Region)>,
) -> Vec<preprocess::Mapping> {
    let n = m.manifest.input_len();
    let len = items.len();
    if m.input.len() < n * len {
        m.input.resize(n * len, 0.0);
    }
    items
        .enumerate()
        .map(|(i, (frame, region))| {
            preprocess::fill_input(&m.manifest.input, frame, region, &mut m.input[i * n..(i + 1) * n])
        })
        .collect()
}

fn detect(m: &mut Model, frames: &[Frame]) -> Result<Vec<Vec<Detection>>, InferError> {
    let mappings = fill_batch(m, frames.iter().map(|f| (f, Region::whole(f))));
    let raw = m.run(frames.len())?;
    let o = &m.manifest.output;
    let per_image = raw.len() / frames.len();
    Ok(frames
        .iter()
        .zip(mappings)
        .zip(raw.chunks_exact(per_image.max(1)))
        .map(|((frame, mapping), out)| {
            decode::yolov8(
                out,
                o.labels.len(),
                mapping,
                (frame.width as f32, frame.height as f32),
                o.score_threshold,
                o.iou_threshold,
            )
            .into_iter()
            .map(|d| {
                let label = o.labels[d.class].clone();
                let signal = m.manifest.signal_of(&label).map(str::to_string);
                Detection { label, score: d.score, bbox: d.bbox, signal }
            })
            .collect()
        })
        .collect())
}

/// Every face crop in one batch.
fn estimate_ages(m: &mut Model, faces: &[(&Frame, [f32; 4])]) -> Result<Vec<Option<AgeEstimate>>, InferError> {
    let pad = m.manifest.input.face_padding;
    fill_batch(
        m,
        faces.iter().map(|(frame, [x, y, w, h])| {
            (*frame, Region { x: x - w * pad, y: y - h * pad, w: w * (1.0 + 2.0 * pad), h: h * (1.0 + 2.0 * pad) })
        }),
    );
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

/// The classifier's probability for its `nsfw_score` signal, per frame.
fn classify(m: &mut Model, frames: &[Frame]) -> Result<Vec<Option<f32>>, InferError> {
    fill_batch(m, frames.iter().map(|f| (f, Region::whole(f))));
    let raw = m.run(frames.len())?;
    let labels = &m.manifest.output.labels;
    let idx = labels.iter().position(|l| m.manifest.signal_of(l) == Some("nsfw_score"));
    Ok(raw
        .chunks_exact(labels.len().max(1))
        .map(|p| idx.and_then(|i| p.get(i).copied()).filter(|v| v.is_finite()))
        .collect())
}

/// Loads model `name` alone and times `runs` runs at batch size `batch` on a synthetic
/// input (for `vigil bench infer`). Returns the sorted run times and the provider.
pub fn time_model_runs(
    cfg: &InferConfig,
    name: &str,
    kind: ModelKind,
    batch: usize,
    runs: usize,
) -> Result<(Vec<std::time::Duration>, &'static str), InferError> {
    let mut m = Model::load(cfg, name, kind)?;
    let n = m.manifest.input_len();
    m.input.resize(n * batch, 0.0);
    for (i, v) in m.input.iter_mut().enumerate() {
        *v = ((i * 2654435761) % 255) as f32 / 255.0;
    }
    m.run(batch)?; // warm-up at this batch size
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        m.run(batch)?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok((times, m.provider))
}

#[cfg(test)]
mod precision_tests {
    use super::*;
    use crate::config::Precision;

    fn chosen(precision: Precision, configured: &str) -> Result<String, InferError> {
        let cfg = InferConfig {
            models_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"),
            precision,
            ..InferConfig::default()
        };
        choose_precision(&cfg, configured).map(|m| m.name)
    }

    #[test]
    fn auto_runs_int8_only_where_its_agreement_with_fp32_holds() {
        assert_eq!(chosen(Precision::Auto, "nudenet-320n").unwrap(), "nudenet-320n-int8");
        assert_eq!(chosen(Precision::Auto, "open-nsfw").unwrap(), "open-nsfw-int8");
        assert_eq!(chosen(Precision::Auto, "age-v1").unwrap(), "age-v1", "its int8 build moved a minor flag");
    }

    #[test]
    fn fp32_and_int8_are_the_operators_choice() {
        assert_eq!(chosen(Precision::Fp32, "nudenet-320n").unwrap(), "nudenet-320n");
        assert_eq!(chosen(Precision::Int8, "age-v1").unwrap(), "age-v1-int8");
        assert_eq!(chosen(Precision::Fp32, "open-nsfw-int8").unwrap(), "open-nsfw-int8", "named directly");
        // A model with no int8 build: int8 is an error that says so, auto is fp32.
        let dir = std::env::temp_dir().join(format!("vigil-precision-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let models = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
        std::fs::copy(models.join("nudenet-320n.toml"), dir.join("nudenet-320n.toml")).unwrap();
        let only_fp32 = |precision| {
            let cfg = InferConfig { models_dir: dir.clone(), precision, ..InferConfig::default() };
            choose_precision(&cfg, "nudenet-320n").map(|m| m.name)
        };
        let e = only_fp32(Precision::Int8).unwrap_err().to_string();
        assert!(e.contains("no int8 build"), "{e}");
        assert_eq!(only_fp32(Precision::Auto).unwrap(), "nudenet-320n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
