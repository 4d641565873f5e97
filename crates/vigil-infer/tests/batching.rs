//! Batching must not change results: a batch of N equals N single runs, and the
//! cross-stream batcher returns every frame's own analysis.

mod common;

use common::{config, image_frame};
use vigil_core::{Frame, StreamId};
use vigil_infer::{Analysis, Analyzer, Batcher, InferConfig};

fn photo(cfg: &InferConfig, name: &str, stream: &str) -> Frame {
    image_frame(&cfg.cache_dir.join("testdata").join(name), stream)
}

fn frames(cfg: &InferConfig) -> Vec<Frame> {
    vec![
        photo(cfg, "astronaut.png", "a"),
        photo(cfg, "skimage/chelsea.png", "b"),
        Frame {
            stream: StreamId("c".into()),
            pts_ms: 0,
            keyframe: true,
            width: 320,
            height: 240,
            rgb: vec![90; 320 * 240 * 3],
            arrived_unix_ms: 0,
        },
        photo(cfg, "skimage/coffee.png", "d"),
        photo(cfg, "skimage/motorcycle_left.png", "e"),
    ]
}

fn assert_close(a: &Analysis, b: &Analysis, what: &str) {
    assert_eq!(a.detections.len(), b.detections.len(), "{what}: {:?} vs {:?}", a.detections, b.detections);
    for (x, y) in a.detections.iter().zip(&b.detections) {
        assert_eq!(x.label, y.label, "{what}");
        assert!((x.score - y.score).abs() < 1e-3, "{what}: {x:?} vs {y:?}");
        for k in 0..4 {
            assert!((x.bbox[k] - y.bbox[k]).abs() < 0.5, "{what}: {x:?} vs {y:?}");
        }
    }
    for (x, y) in a.faces.iter().zip(&b.faces) {
        let (ax, ay) = (x.age.unwrap(), y.age.unwrap());
        assert!((ax.expected_years - ay.expected_years).abs() < 0.05, "{what}: {ax:?} vs {ay:?}");
    }
    let (sa, sb) = (a.nsfw_score.unwrap(), b.nsfw_score.unwrap());
    assert!((sa - sb).abs() < 1e-4, "{what}: {sa} vs {sb}");
}

#[test]
fn a_batch_of_n_equals_n_single_runs() {
    let cfg = config();
    let mut analyzer = Analyzer::load(&cfg).expect("models load");
    let frames = frames(&cfg);
    let singles: Vec<Analysis> = frames.iter().map(|f| analyzer.analyze(f)).collect();
    let batch = analyzer.analyze_batch(&frames);
    assert_eq!(batch.len(), frames.len());
    assert!(singles.iter().any(|a| !a.faces.is_empty()), "the astronaut's face gives the age path work");
    for (i, (s, b)) in singles.iter().zip(&batch).enumerate() {
        assert!(s.unscanned.is_empty() && b.unscanned.is_empty());
        assert_close(s, b, &format!("frame {i}"));
    }
}

#[test]
fn batcher_serves_concurrent_streams_each_its_own_result() {
    let mut cfg = config();
    cfg.batch_max_frames = 4;
    cfg.batch_max_wait_ms = 50;
    let mut reference = Analyzer::load(&cfg).expect("models load");
    let frames = frames(&cfg);
    let expected: Vec<Analysis> = frames.iter().map(|f| reference.analyze(f)).collect();
    let batcher = std::sync::Arc::new(Batcher::start(&cfg).expect("batcher starts"));
    let handles: Vec<_> = frames
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, f)| {
            let b = batcher.clone();
            std::thread::spawn(move || (i, b.submit_wait(f).recv().expect("an analysis")))
        })
        .collect();
    for h in handles {
        let (i, got) = h.join().unwrap();
        assert_close(&got, &expected[i], &format!("stream {i}"));
    }
}
