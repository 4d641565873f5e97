//! Model manifests: a model is a file plus this description, never code.

use crate::InferError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    pub kind: ModelKind,
    pub version: String,
    /// File name inside the model cache.
    pub file: String,
    pub sha256: String,
    pub license: License,
    /// Where setup fetches the file from; absent for a platform's own model.
    #[serde(default)]
    pub source: Option<Source>,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Vigil signal name → the output labels that carry it.
    #[serde(default)]
    pub signals: BTreeMap<String, Vec<String>>,
    /// For a quantised build of another manifest's model: which, and whether it agrees.
    #[serde(default)]
    pub quantization: Option<Quantization>,
}

/// A quantised model's provenance and its measured agreement with the original
/// (`scripts/int8_agreement.py`; `bench/results/int8-agreement-*.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// `int8`.
    pub precision: String,
    /// The fp32 manifest it was built from.
    pub from: String,
    /// The calibration ranges it was built with.
    #[serde(default)]
    pub ranges: Option<String>,
    /// `holds` or `fails`: whether its outputs agree with the original's on the fixed
    /// benign set within the stated thresholds. `precision = "auto"` uses only `holds`.
    pub agreement: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Detector,
    Classifier,
    Age,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    pub spdx: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub pypi: String,
    pub version: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Pad right and bottom to a square with black, then resize.
    Letterbox,
    /// Resize to the input size, aspect ratio not kept.
    Stretch,
    /// Resize to `resize_to` square, keep the centre input-size square.
    ResizeCenterCrop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
    pub resize: Resize,
    #[serde(default)]
    pub resize_to: Option<u32>,
    /// Per channel, in the model's channel order: value = (byte - mean) * scale.
    pub mean: [f32; 3],
    pub scale: f32,
    /// For age models: share of the face box added on each side before cropping.
    #[serde(default)]
    pub face_padding: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// `[N, 4 + classes, anchors]`: centre x, y, width, height, then class scores.
    Yolov8,
    /// `[N, classes]` probabilities.
    Probabilities,
    /// `[N, bins]` probabilities over ages.
    AgeBins,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub decode: Decode,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub score_threshold: f32,
    #[serde(default)]
    pub iou_threshold: f32,
    #[serde(default)]
    pub bins: Vec<f32>,
    #[serde(default)]
    pub minor_below_years: f32,
}

impl ModelManifest {
    pub fn load(path: &Path) -> Result<ModelManifest, InferError> {
        let err = |reason: String| InferError::Manifest { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let m: ModelManifest = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let problems = m.problems();
        if problems.is_empty() { Ok(m) } else { Err(err(problems.join("; "))) }
    }

    /// Finds the manifest called `name` in `dir` (its `name` field, file `NAME.toml`).
    pub fn find(dir: &Path, name: &str) -> Result<ModelManifest, InferError> {
        let path = dir.join(format!("{name}.toml"));
        if !path.exists() {
            return Err(InferError::Manifest { path, reason: "no such manifest".into() });
        }
        let m = Self::load(&path)?;
        if m.name != name {
            return Err(InferError::Manifest { path, reason: format!("its name is \"{}\", not \"{name}\"", m.name) });
        }
        Ok(m)
    }

    /// Every manifest in a folder, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, ModelManifest)>, InferError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| InferError::Manifest { path: dir.to_path_buf(), reason: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.into_iter().map(|p| Self::load(&p).map(|m| (p, m))).collect()
    }

    /// Everything inconsistent in the manifest, all at once.
    pub fn problems(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            e.push("sha256: must be 64 hex digits".to_string());
        }
        if self.input.width == 0 || self.input.height == 0 || self.input.width > 4096 || self.input.height > 4096 {
            e.push(format!("input: size {}x{} is outside 1..=4096", self.input.width, self.input.height));
        }
        if self.input.resize == Resize::ResizeCenterCrop
            && self.input.resize_to.is_none_or(|r| r < self.input.width.max(self.input.height))
        {
            e.push("input.resize_to: resize_center_crop needs resize_to at least the input size".into());
        }
        if !(self.input.scale.is_finite() && self.input.scale > 0.0) {
            e.push("input.scale: must be a positive number".into());
        }
        let wants = |k: ModelKind, d: Decode| self.kind == k && self.output.decode != d;
        if wants(ModelKind::Detector, Decode::Yolov8)
            || wants(ModelKind::Age, Decode::AgeBins)
            || wants(ModelKind::Classifier, Decode::Probabilities)
        {
            e.push(format!("output.decode: {:?} does not fit a model of kind {:?}", self.output.decode, self.kind));
        }
        match self.output.decode {
            Decode::Yolov8 | Decode::Probabilities if self.output.labels.is_empty() => {
                e.push("output.labels: must list the classes".into());
            }
            Decode::AgeBins if self.output.bins.is_empty() || self.output.minor_below_years <= 0.0 => {
                e.push("output: age_bins needs bins and minor_below_years".into());
            }
            _ => {}
        }
        for (signal, labels) in &self.signals {
            for l in labels {
                if !self.output.labels.contains(l) {
                    e.push(format!("signals.{signal}: \"{l}\" is not one of output.labels"));
                }
            }
        }
        e
    }

    /// The Vigil signal a label carries, if any.
    pub fn signal_of(&self, label: &str) -> Option<&str> {
        self.signals.iter().find(|(_, ls)| ls.iter().any(|l| l == label)).map(|(s, _)| s.as_str())
    }

    /// Elements of one input image.
    pub fn input_len(&self) -> usize {
        3 * self.input.width as usize * self.input.height as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_manifests_are_consistent() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let all = ModelManifest::load_dir(&dir).unwrap();
        assert!(all.len() >= 3);
        for (_, m) in all {
            assert!(m.problems().is_empty(), "{}: {:?}", m.name, m.problems());
        }
    }

    #[test]
    fn problems_are_listed_together() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let mut m = ModelManifest::find(&dir, "nudenet-320n").unwrap();
        m.sha256 = "xyz".into();
        m.input.scale = 0.0;
        m.signals.insert("face".into(), vec!["NOSE".into()]);
        let p = m.problems();
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
