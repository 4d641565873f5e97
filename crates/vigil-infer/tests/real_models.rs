//! The reference models through ONNX Runtime on real images. Needs `make setup`
//! (models, the ONNX Runtime library and the astronaut image in the cache).

mod common;

use common::{config, image_frame};
use std::path::PathBuf;
use vigil_core::{Frame, StreamId};
use vigil_infer::Analyzer;

#[test]
fn astronaut_face_is_found_and_estimated_adult() {
    let cfg = config();
    let mut a = Analyzer::load(&cfg).expect("models load");
    let frame = image_frame(&cfg.cache_dir.join("testdata/astronaut.png"), "t");
    let out = a.analyze(&frame);
    assert!(out.unscanned.is_empty(), "{:?}", out.unscanned);
    assert_eq!(out.faces.len(), 1, "{:?}", out.detections);
    let face = &out.faces[0];
    assert!(face.score > 0.5, "{face:?}");
    // The face is in the upper middle of the 512x512 picture.
    let [x, y, w, h] = face.bbox;
    assert!((150.0..350.0).contains(&(x + w / 2.0)) && (50.0..250.0).contains(&(y + h / 2.0)), "{face:?}");
    let age = face.age.expect("age estimated");
    assert!(age.expected_years >= 20.0 && age.expected_years <= 50.0, "{age:?}");
    assert!(age.p_minor < 0.2, "{age:?}");
    let nsfw = out.nsfw_score.expect("classifier ran");
    assert!(nsfw < 0.2, "astronaut is not NSFW: {nsfw}");
}

#[test]
fn blank_frame_gives_no_detections() {
    let mut a = Analyzer::load(&config()).expect("models load");
    let frame = Frame {
        stream: StreamId("t".into()),
        pts_ms: 0,
        keyframe: true,
        width: 640,
        height: 360,
        rgb: vec![128; 640 * 360 * 3],
        arrived_unix_ms: 0,
    };
    let out = a.analyze(&frame);
    assert!(out.unscanned.is_empty(), "{:?}", out.unscanned);
    assert!(out.detections.is_empty(), "{:?}", out.detections);
    assert!(out.faces.is_empty());
}

#[test]
fn missing_runtime_library_is_a_clear_error() {
    let mut cfg = config();
    cfg.onnxruntime_lib = Some(PathBuf::from("/nonexistent/libonnxruntime.so"));
    // Only meaningful before the runtime is loaded in this process; the message is
    // what the operator reads either way.
    let err = vigil_infer::InferError::RuntimeMissing { path: cfg.onnxruntime_lib() };
    assert!(err.to_string().contains("make setup"));
}
