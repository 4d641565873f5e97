//! `vigil validate`: every file in config/ is valid; a broken one lists every mistake.

mod common;

use common::*;

#[test]
fn every_shipped_config_file_validates() {
    let files: Vec<_> = ["config", "config/policies"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(files.iter().any(|f| f.ends_with("policies/default.toml")));
    assert!(!files.is_empty());
    for f in files {
        let out = vigil(&["validate", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
    assert!(vigil(&["validate"]).status.success(), "embedded default");
}

/// `vigil validate` of `toml` fails with exit code 2 and names every one of `needles`.
fn assert_validate_names(toml: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, toml).unwrap();
    let out = vigil(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}

#[test]
fn broken_config_lists_every_mistake() {
    assert_validate_names(
        "[media]\nsample_fps = -1\n[infer]\nexecution_providers = [\"gpu\"]\n[fusion]\npolicy = \"/nonexistent/policy.toml\"\n[sinks]\n",
        &["4 error(s)", "sinks: unknown section", "media.sample_fps", "infer.execution_providers[0]", "fusion.policy"],
    );
}

#[test]
fn a_broken_ingest_section_names_each_mistake() {
    assert_validate_names(
        "[ingest.rtmp]\nlisten = \"127.0.0.1:1935\"\nstream_keys = { a = \"long-enough-key\" }\n\
         [ingest.whip]\nlisten = \"127.0.0.1:1935\"\nstun_server = \"stun.example\"\n\
         stream_keys = { b = \"short\" }\nmax_connections_per_ip = 0\n",
        &[
            "4 error(s)",
            "ingest.whip.listen: \"127.0.0.1:1935\" is also the RTMP address",
            "ingest.whip.stun_server",
            "ingest.whip.stream_keys.b: a key needs at least 8 characters",
            "ingest.whip.max_connections_per_ip: 0 is outside 1..=256",
        ],
    );
}

#[test]
fn scan_refuses_an_invalid_config_before_doing_work() {
    let out = vigil_env(&["scan", astronaut().to_str().unwrap()], &[("VIGIL__MEDIA__SAMPLE_FPS", "0")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("media.sample_fps"));
}

#[test]
fn a_broken_policy_lists_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("config/policies/default.toml"))
        .unwrap()
        .replace("nsfw_min_score = 0.8", "nsfw_min_score = 3.0")
        .replace("clear_samples = 5", "clear_samples = 0");
    let f = dir.path().join("policy.toml");
    std::fs::write(&f, text).unwrap();
    let out = vigil(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("thresholds.nsfw_min_score") && err.contains("incident.clear_samples"), "{err}");
}
