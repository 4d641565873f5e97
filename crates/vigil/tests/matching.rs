//! Known-content matching end to end: what streamers do to a banked image (mirror it,
//! crop it) still matches; bank files in the formats partners export load, and their
//! mistakes are reported by line; near-duplicate samples reuse the last analysis.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn pdq_of(image: &Path) -> String {
    let out = vigil(&["hash", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stdout_json(&out)[0]["pdq"].as_str().unwrap().to_string()
}

fn bank_file(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("bank.txt");
    std::fs::write(&p, body).unwrap();
    p
}

/// Scans `clip` against `bank`; returns the first frame's best match (variant, distance).
fn first_match(clip: &Path, bank: &Path) -> Option<(String, u64)> {
    let out = vigil(&["scan", "--bank", bank.to_str().unwrap(), clip.to_str().unwrap()]);
    let recs = stdout_json(&out);
    let m = &frames(&recs)[0]["bank_matches"][0];
    m.is_object().then(|| (m["variant"].as_str().unwrap().to_string(), m["distance"].as_u64().unwrap()))
}

#[test]
fn mirrored_copy_matches_through_its_dihedral_hash() {
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_file(dir.path(), &format!("pdq {}\n", pdq_of(&astronaut())));
    let clip =
        transformed_clip(dir.path(), &astronaut(), "mirror.mp4", 2, 300, "videoflip video-direction=horiz", "mp4mux");
    let (variant, distance) = first_match(&clip, &bank).expect("the mirrored copy matches");
    assert_eq!(variant, "flip_y");
    assert!(distance <= 31);
    // Plain PDQ alone would have missed it.
    let plain = pdq_of(&clip);
    let d = hamming(&plain, &pdq_of(&astronaut()));
    assert!(d > 31, "plain distance {d}");
}

#[test]
fn copy_cropped_five_percent_per_side_matches_through_crop_reach() {
    let dir = tempfile::tempdir().unwrap();
    let bank = bank_file(dir.path(), &format!("{}\n", pdq_of(&astronaut())));
    // 26 of 512 pixels from each side, scaled back to full frame.
    let crop = "videocrop left=26 right=26 top=26 bottom=26 ! videoscale ! video/x-raw,width=512,height=512";
    let clip = transformed_clip(dir.path(), &astronaut(), "crop5.mp4", 2, 300, crop, "mp4mux");
    let (variant, distance) = first_match(&clip, &bank).expect("the cropped copy matches");
    assert!(variant.starts_with("crop_"), "{variant}");
    assert!(distance <= 31);
}

#[test]
fn a_crop_beyond_thirty_one_bits_is_reached_for_review_never_interrupt() {
    // scikit-image's cat photo loses enough to a 5% crop to land past 31 bits even after
    // the crop reach (38 here): the reach tier finds it, and a human decides.
    let dir = tempfile::tempdir().unwrap();
    let cat = cache_dir().join("testdata/skimage/chelsea.png");
    let bank = bank_file(dir.path(), &format!("{}\n", pdq_of(&cat)));
    let crop = "videoscale ! video/x-raw,width=450,height=300 ! videocrop left=22 right=22 top=15 bottom=15 \
                ! videoscale ! video/x-raw,width=450,height=300";
    let clip = transformed_clip(dir.path(), &cat, "cat-crop5.mp4", 2, 300, crop, "mp4mux");
    let out = vigil(&["scan", "--bank", bank.to_str().unwrap(), clip.to_str().unwrap()]);
    let recs = stdout_json(&out);
    let frame = &frames(&recs)[0];
    let m = &frame["bank_matches"][0];
    let distance = m["distance"].as_u64().unwrap();
    assert!((32..=46).contains(&distance), "{m}");
    assert_eq!((m["variant"].as_str(), m["action"].as_str()), (Some("crop_5%"), Some("review")), "{m}");
    assert_eq!(frame["verdict"], "review", "{frame}");
    assert!(recs.iter().all(|r| r["type"] != "interrupt"), "a reach match never interrupts");
}

fn hamming(a: &str, b: &str) -> u32 {
    let (a, b) = (hex_bytes(a), hex_bytes(b));
    a.iter().zip(&b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn bank_check_reports_bad_lines_and_stats_count_rows() {
    let dir = tempfile::tempdir().unwrap();
    let h = pdq_of(&astronaut());
    let bank = bank_file(
        dir.path(),
        &format!("signal_type,signal_str,collab,category,tags\npdq,{h},c,cat,a b\nmd5,abc,c,cat,\npdq,nothex,c,cat,\n"),
    );
    let out = vigil(&["bank", "check", bank.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bank.txt:4:"), "{stderr}");
    let rec = &stdout_json(&out)[0];
    assert_eq!((rec["rows"].as_u64(), rec["other_signal_types"].as_u64()), (Some(1), Some(1)));

    let out = vigil(&["bank", "stats", bank.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(stdout_json(&out)[0]["bank"]["rows"], 1);

    let out = vigil(&["bank", "lookup", bank.to_str().unwrap(), "--image", astronaut().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "found");
    assert_eq!(stdout_json(&out)[0]["distance"], 0);
}

#[test]
fn unreadable_bank_is_an_error_for_scan() {
    let out = vigil(&["scan", "--bank", "/nonexistent/bank.csv", astronaut().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bank.csv"));
}

#[test]
fn near_duplicate_samples_reuse_analysis_on_static_but_not_moving_content() {
    let dir = tempfile::tempdir().unwrap();
    let still = still_clip(dir.path(), &astronaut(), "still.mp4", 4, 1000, 512, "mp4mux");
    let recs = stdout_json(&vigil(&["scan", still.to_str().unwrap()]));
    let f = frames(&recs);
    assert_eq!(f.len(), 4);
    assert!(f[0].get("reused_analysis_of_ms").is_none());
    assert!(f[1..].iter().all(|r| r["reused_analysis_of_ms"] == 0), "{f:?}");
    assert!(f[1..].iter().all(|r| r["faces"].as_array().unwrap().len() == 1), "reused results are kept");
    assert_eq!(summary(&recs)["near_duplicate_skips"], 3);

    let moving = dir.path().join("snow.mp4");
    gst_launch(&format!(
        "videotestsrc num-buffers=120 pattern=snow ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location={}",
        moving.display()
    ));
    let recs = stdout_json(&vigil(&["scan", moving.to_str().unwrap()]));
    assert_eq!(summary(&recs)["near_duplicate_skips"], 0);

    let off = stdout_json(&vigil_env(
        &["scan", still.to_str().unwrap()],
        &[("VIGIL__HASH__NEAR_DUPLICATE_MAX_DISTANCE", "0")],
    ));
    assert_eq!(summary(&off)["near_duplicate_skips"], 0);
}

#[test]
fn bench_hash_quick_smoke_is_exact() {
    let out = vigil(&["bench", "hash", "--quick"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let (allowlist, banks): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r["bench"] == "allowlist");
    assert_eq!(banks.len(), 2, "random and clustered");
    for r in banks {
        assert_eq!(r["exact_vs_scan"], true);
        assert!(r["bytes_per_hash"].as_f64().unwrap() <= 256.0);
    }
    // A full allowlist costs a frame's lookup a bounded multiple of an empty one, and the
    // index gives the answers a comparison with every hash gives.
    assert_eq!(allowlist.len(), 1);
    assert_eq!(allowlist[0]["exact_vs_scan"], true, "{}", allowlist[0]);
    assert_eq!(allowlist[0]["over_budget"], 0, "{}", allowlist[0]);
    assert!(allowlist[0]["ratio_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_robustness_quick_shows_what_variants_win() {
    let out = vigil(&["bench", "robustness", "--quick"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mirrored = text.lines().find(|l| l.starts_with("mirrored")).expect("a mirrored row");
    let cols: Vec<&str> = mirrored.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols[2]),
        ("0%", "100%"),
        "plain PDQ misses mirrored copies, the variants find them: {mirrored}"
    );
    assert!(text.contains("false matches against 10000 random hashes"), "{text}");
}
