//! The inference path end to end, including the positive paths, driven by tiny
//! marker models the setup builds (scripts/make_test_models.py): a red square in the
//! frame's corner makes the stand-in detector report a face and a sexual-exposure
//! region; a green face makes the stand-in age model say 8 years old. No real sexual
//! imagery of anyone is used or generated.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn marker_env() -> Vec<(&'static str, String)> {
    vec![
        ("VIGIL__INFER__MODELS_DIR", cache_dir().join("test-models").display().to_string()),
        ("VIGIL__INFER__DETECTOR", "test-marker-detector".into()),
        ("VIGIL__INFER__AGE", "test-marker-age".into()),
    ]
}

fn scan_with_markers(input: &Path) -> std::process::Output {
    let env = marker_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vigil_env(&["scan", input.to_str().unwrap()], &env)
}

/// A 640x360 grey frame; `marker` paints the detector's red corner, `face` the colour
/// of the region where the stand-in detector reports the face.
fn synthetic(dir: &Path, name: &str, marker: bool, face: [u8; 3]) -> PathBuf {
    let mut img = image::RgbImage::from_pixel(640, 360, image::Rgb([128, 128, 128]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        if marker && x < 40 && y < 40 {
            *p = image::Rgb([255, 0, 0]);
        } else if (230..410).contains(&x) && (110..290).contains(&y) {
            *p = image::Rgb(face);
        }
    }
    let path = dir.join(name);
    img.save(&path).unwrap();
    path
}

#[test]
fn a_likely_minor_with_sexual_exposure_goes_to_review_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let img = synthetic(dir.path(), "positive.png", true, [0, 255, 0]);
    let out = scan_with_markers(&img);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = stdout_json(&out);
    let f = frames(&recs)[0];
    assert_eq!(f["verdict"], "review", "{f}");
    assert_eq!(f["rule"], "minor_with_sexual_exposure");
    let age = &f["faces"][0]["age"];
    assert!((age["expected_years"].as_f64().unwrap() - 8.0).abs() < 0.5, "{f}");
    assert!(age["p_minor"].as_f64().unwrap() > 0.99, "{f}");
    // The face box lands where the stand-in put it, mapped back to frame pixels.
    let bbox: Vec<f64> = f["faces"][0]["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((bbox[0] - 260.0).abs() < 2.0 && (bbox[1] - 140.0).abs() < 2.0, "{bbox:?}");
}

#[test]
fn sustained_minor_with_exposure_escalates_one_alert_to_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    let img = synthetic(dir.path(), "positive.png", true, [0, 255, 0]);
    let clip = still_clip(dir.path(), &img, "positive.mp4", 3, 1500, 360, "mp4mux");
    let out = scan_with_markers(&clip);
    assert_eq!(out.status.code(), Some(1));
    let recs = stdout_json(&out);
    let verdicts: Vec<&str> = frames(&recs).iter().map(|f| f["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, vec!["review", "interrupt", "interrupt"]);
    let events: Vec<(&str, &str)> = messages(&recs)
        .into_iter()
        .map(|r| (r["event"].as_str().unwrap_or("command"), r["alert_id"].as_str().unwrap()))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!((events[0].0, events[1].0, events[2].0), ("opened", "escalated", "command"));
    assert!(events.iter().all(|e| e.1 == events[0].1), "the same alert id, updated");
    assert_eq!((summary(&recs)["alerts"].as_u64(), summary(&recs)["escalations"].as_u64()), (Some(1), Some(1)));
    assert_eq!(summary(&recs)["interrupts"], 1);
}

#[test]
fn sustained_exposure_with_an_adult_face_goes_to_review_and_blank_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let adult = synthetic(dir.path(), "adult.png", true, [128, 128, 128]);
    // One sample is not enough for the exposure rule (2 of 4)...
    let out = scan_with_markers(&adult);
    assert_eq!(out.status.code(), Some(0));
    let f = &frames(&stdout_json(&out))[0].clone();
    assert_eq!((f["verdict"].as_str(), f["conditions"][0].as_str()), (Some("clear"), Some("exposure")));
    // ...two are.
    let clip = still_clip(dir.path(), &adult, "adult.mp4", 3, 1500, 360, "mp4mux");
    let out = scan_with_markers(&clip);
    assert_eq!(out.status.code(), Some(1));
    let recs = stdout_json(&out);
    assert_eq!(frames(&recs)[1]["verdict"], "review");
    assert_eq!(frames(&recs)[1]["rule"], "sexual_exposure");

    let blank = synthetic(dir.path(), "blank.png", false, [0, 255, 0]);
    let out = scan_with_markers(&blank);
    assert_eq!(out.status.code(), Some(0));
    let f = &frames(&stdout_json(&out))[0].clone();
    assert_eq!(f["verdict"], "clear");
    assert!(f["detections"].as_array().unwrap().is_empty());
}

#[test]
fn models_list_verify_and_info() {
    let out = vigil(&["models", "list"]);
    assert!(out.status.success());
    let list = stdout_json(&out);
    let mut names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["age-v1", "age-v1-int8", "nudenet-320n", "nudenet-320n-int8", "open-nsfw", "open-nsfw-int8"]);
    assert!(list.iter().all(|m| m["present"] == true));
    // precision = "auto": int8 where it agrees with fp32 (detector, classifier), fp32 for age.
    let running: Vec<&str> =
        list.iter().filter(|m| m["configured"] == true).map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(running, ["age-v1", "nudenet-320n-int8", "open-nsfw-int8"]);

    let out = vigil(&["models", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stdout_json(&out).iter().all(|m| m["state"] == "ok"));

    let out = vigil(&["models", "info"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = stdout_json(&out);
    assert!(info.iter().filter(|r| r.get("model").is_some()).all(|r| r["model"]["provider"] == "cpu"));
    let nudenet = info.iter().find(|r| r["model"]["name"] == "nudenet-320n-int8").unwrap();
    assert!(nudenet["license_warning"].as_str().unwrap().contains("AGPL"));
    assert_eq!(info.last().unwrap()["ready"], true);
}

#[test]
fn verify_finds_a_tampered_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    for f in ["age-v1.onnx", "open-nsfw.onnx"] {
        std::os::unix::fs::symlink(cache_dir().join("models").join(f), dir.path().join("models").join(f)).unwrap();
    }
    std::fs::write(dir.path().join("models/nudenet-320n.onnx"), b"tampered").unwrap();
    let out = vigil_env(&["models", "verify"], &[("VIGIL__INFER__CACHE_DIR", dir.path().to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2));
    let rows = stdout_json(&out);
    let bad = rows.iter().find(|r| r["name"] == "nudenet-320n").unwrap();
    assert!(bad["state"].as_str().unwrap().starts_with("mismatch"), "{bad}");
}

#[test]
fn gpu_providers_fall_back_to_cpu_or_fail_clearly_when_required() {
    let out =
        vigil_env(&["models", "info"], &[("VIGIL__INFER__EXECUTION_PROVIDERS", "[\"tensorrt\", \"cuda\", \"cpu\"]")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = stdout_json(&out);
    assert!(info.iter().filter(|r| r.get("model").is_some()).all(|r| r["model"]["provider"] == "cpu"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("CUDAExecutionProvider"), "the fallback is logged with its reason: {log}");

    let out = vigil_env(
        &["models", "info"],
        &[("VIGIL__INFER__EXECUTION_PROVIDERS", "[\"cuda\"]"), ("VIGIL__INFER__REQUIRE_GPU", "true")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vigil: error:") && err.contains("CUDAExecutionProvider"), "{err}");
}

#[test]
fn bench_infer_quick_reports_every_model_and_the_batcher() {
    let out = vigil(&["bench", "infer", "--quick"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let models: Vec<&serde_json::Value> = records.iter().filter(|r| r["bench"] == "infer_model").collect();
    assert_eq!(models.len(), 6, "3 models x 2 batch sizes");
    assert!(models.iter().all(|r| r["frames_per_s"].as_f64().unwrap() > 0.0 && r["provider"] == "cpu"));
    let batcher = records.iter().find(|r| r["bench"] == "infer_batcher").expect("batcher line");
    assert!(batcher["ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_inference_error_at_run_time_marks_the_frame_unscanned_never_clean() {
    let dir = tempfile::tempdir().unwrap();
    // The failing age model loads and warms up, then fails on this frame's green face.
    let img = synthetic(dir.path(), "failing.png", true, [0, 255, 0]);
    let mut env = marker_env();
    env.retain(|(k, _)| *k != "VIGIL__INFER__AGE");
    env.push(("VIGIL__INFER__AGE", "test-failing-age".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = vigil_env(&["scan", img.to_str().unwrap()], &env);
    let recs = stdout_json(&out);
    let f = frames(&recs)[0];
    let unscanned = f["unscanned"].as_array().expect("an unscanned stage");
    assert_eq!(unscanned[0]["stage"], "age", "{f}");
    assert!(!unscanned[0]["reason"].as_str().unwrap().is_empty());
    assert!(f["faces"][0]["age"].is_null(), "no age was made up: {f}");
    assert_ne!(f["verdict"], "clear", "{f}");
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The same model on a frame without a green face runs fine (the error is per run).
    let adult = synthetic(dir.path(), "grey-face.png", true, [200, 170, 150]);
    let out = vigil_env(&["scan", adult.to_str().unwrap()], &env);
    let recs = stdout_json(&out);
    assert!(frames(&recs)[0]["unscanned"].as_array().is_none_or(|u| u.is_empty()), "{:?}", frames(&recs)[0]);
}
