//! Model outputs → detections, probabilities, ages. Plain Rust, no model calls.

use crate::preprocess::Mapping;

#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    pub class: usize,
    pub score: f32,
    /// x, y, width, height in frame pixels.
    pub bbox: [f32; 4],
}

/// Decodes one image of a YOLOv8 output laid out `[4 + classes, anchors]`, keeps boxes
/// at or above `score_threshold`, maps them to the frame (clipped to it) and applies
/// class-agnostic non-maximum suppression.
pub fn yolov8(
    out: &[f32],
    classes: usize,
    mapping: Mapping,
    frame_size: (f32, f32),
    score_threshold: f32,
    iou_threshold: f32,
) -> Vec<RawDetection> {
    let rows = 4 + classes;
    if classes == 0 || !out.len().is_multiple_of(rows) {
        return Vec::new();
    }
    let anchors = out.len() / rows;
    let at = |r: usize, a: usize| out[r * anchors + a];
    let (fw, fh) = frame_size;
    let mut found = Vec::new();
    for a in 0..anchors {
        let (mut best, mut class) = (f32::MIN, 0);
        for c in 0..classes {
            let s = at(4 + c, a);
            if s > best {
                best = s;
                class = c;
            }
        }
        if best.is_nan() || best < score_threshold {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        if ![cx, cy, w, h].iter().all(|v| v.is_finite()) {
            continue;
        }
        let x = ((cx - w / 2.0) * mapping.scale_x + mapping.offset_x).clamp(0.0, fw);
        let y = ((cy - h / 2.0) * mapping.scale_y + mapping.offset_y).clamp(0.0, fh);
        let w = (w * mapping.scale_x).min(fw - x);
        let h = (h * mapping.scale_y).min(fh - y);
        if w > 0.0 && h > 0.0 {
            found.push(RawDetection { class, score: best, bbox: [x, y, w, h] });
        }
    }
    nms(found, iou_threshold)
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// Greedy NMS, highest score first, across classes (as `cv2.dnn.NMSBoxes`).
pub fn nms(mut dets: Vec<RawDetection>, iou_threshold: f32) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawDetection> = Vec::new();
    for d in dets {
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// Expected age and P(age < `minor_below`) from probabilities over age bins.
/// Renormalises, so a model that outputs unnormalised scores still gives a mean.
pub fn age_bins(probs: &[f32], bins: &[f32], minor_below: f32) -> Option<(f32, f32)> {
    if probs.len() != bins.len() || probs.iter().any(|p| !p.is_finite() || *p < 0.0) {
        return None;
    }
    let total: f32 = probs.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let expected = probs.iter().zip(bins).map(|(p, b)| p * b).sum::<f32>() / total;
    let minor = probs.iter().zip(bins).filter(|(_, b)| **b < minor_below).map(|(p, _)| p).sum::<f32>() / total;
    Some((expected, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: Mapping = Mapping { scale_x: 1.0, scale_y: 1.0, offset_x: 0.0, offset_y: 0.0 };

    #[test]
    fn yolo_keeps_best_class_and_suppresses_overlaps() {
        // Two classes, three anchors laid out [4 + 2, 3].
        let out = [
            10.0, 11.0, 50.0, // cx
            10.0, 10.0, 50.0, // cy
            4.0, 4.0, 4.0, // w
            4.0, 4.0, 4.0, // h
            0.9, 0.1, 0.1, // class 0
            0.1, 0.8, 0.2, // class 1
        ];
        let d = yolov8(&out, 2, IDENTITY, (100.0, 100.0), 0.25, 0.45);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].class, 0);
        assert_eq!(d[0].bbox, [8.0, 8.0, 4.0, 4.0]);
    }

    #[test]
    fn yolo_clips_to_frame_and_ignores_nan() {
        let out = [1.0, f32::NAN, 1.0, 0.0, 4.0, 4.0, 4.0, 4.0, 0.9, 0.9];
        let d = yolov8(&out, 1, IDENTITY, (10.0, 10.0), 0.25, 0.45);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].bbox, [0.0, 0.0, 4.0, 4.0]);
    }

    #[test]
    fn age_bins_give_mean_and_minor_mass() {
        let (mean, minor) = age_bins(&[0.5, 0.5], &[10.0, 30.0], 18.0).unwrap();
        assert!((mean - 20.0).abs() < 1e-5);
        assert!((minor - 0.5).abs() < 1e-5);
        assert!(age_bins(&[0.5], &[10.0, 30.0], 18.0).is_none());
        assert!(age_bins(&[f32::NAN, 1.0], &[10.0, 30.0], 18.0).is_none());
    }
}
