//! One stream's analysis, the same for `vigil scan` and the worker: PDQ (+ dihedral and
//! crop variants) → bank match → models (unless a near-duplicate of the last analysed
//! sample lets us reuse its result) → fusion.

use std::sync::Arc;
use vigil_core::{Frame, FrameSignals, PdqSignal, StreamId, Unscanned};
use vigil_fusion::{Outcome, Policy, StreamFusion};
use vigil_hash::{BankSet, Hash256, HashConfig, VariantHasher, metrics::METRICS as HASH_METRICS};
use vigil_infer::Analysis;

/// CPU seconds fusion spends deciding (every stream together).
pub static FUSION_CPU: std::sync::LazyLock<prometheus::Counter> = std::sync::LazyLock::new(|| {
    prometheus::Counter::new("vigil_fusion_cpu_seconds_total", "CPU seconds spent in fusion (policy rules over time)")
        .expect("valid metric")
});

/// Counters for a stream's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct AnalysisStats {
    pub below_quality_floor: u64,
    pub near_duplicate_skips: u64,
}

pub struct StreamAnalysis {
    hasher: VariantHasher,
    hash_cfg: HashConfig,
    last: Option<LastAnalysis>,
    fusion: StreamFusion,
    last_pts_ms: u64,
    pub stats: AnalysisStats,
}

impl StreamAnalysis {
    /// `session` names this run of the stream; incident ids are unique per session.
    pub fn new(policy: Arc<Policy>, stream: StreamId, session: String, hash_cfg: &HashConfig, banks: &BankSet) -> Self {
        Self {
            hasher: VariantHasher::new(&banks.crop_fractions()),
            hash_cfg: hash_cfg.clone(),
            last: None,
            fusion: StreamFusion::new(policy, stream, session),
            last_pts_ms: 0,
            stats: AnalysisStats::default(),
        }
    }

    /// Analyses one sampled frame; `infer` runs the models when they must run.
    pub fn frame(
        &mut self,
        frame: &Frame,
        banks: &BankSet,
        infer: impl FnOnce(&Frame) -> Analysis,
    ) -> (FrameSignals, Outcome) {
        HASH_METRICS.frames_hashed.inc();
        self.last_pts_ms = frame.pts_ms;
        let hash_started = vigil_core::cpu::thread_cpu();
        let hashes = self.hasher.hash(&frame.rgb, frame.width as usize, frame.height as usize);
        let pdq = hashes.pdq;
        let mut signals = FrameSignals {
            pts_ms: frame.pts_ms,
            pdq: Some(PdqSignal { hash: pdq.hash.to_hex(), quality: pdq.quality }),
            ..Default::default()
        };
        if pdq.quality >= self.hash_cfg.quality_floor {
            (signals.bank_matches, signals.allowed_rules) = banks.lookup_at(&hashes, crate::output::unix_ms());
            for m in &signals.bank_matches {
                HASH_METRICS.matches.with_label_values(&[m.action.as_str()]).inc();
            }
        } else {
            self.stats.below_quality_floor += 1;
            HASH_METRICS.below_quality_floor.inc();
        }
        HASH_METRICS.cpu_seconds.inc_by(vigil_core::cpu::thread_cpu().saturating_sub(hash_started).as_secs_f64());
        let analysis = match self.last.as_mut().filter(|l| l.reusable_for(&pdq.hash, &self.hash_cfg)) {
            Some(l) => {
                l.reused += 1;
                self.stats.near_duplicate_skips += 1;
                HASH_METRICS.near_duplicate_skips.inc();
                signals.reused_analysis_of_ms = Some(l.pts_ms);
                l.analysis.clone()
            }
            None => {
                let analysis = infer(frame);
                // A failed analysis is never reused: the next sample tries again.
                self.last = analysis.unscanned.is_empty().then(|| LastAnalysis {
                    hash: pdq.hash,
                    pts_ms: frame.pts_ms,
                    reused: 0,
                    analysis: analysis.clone(),
                });
                analysis
            }
        };
        signals.detections = analysis.detections;
        signals.faces = analysis.faces;
        signals.nsfw_score = analysis.nsfw_score;
        signals.unscanned = analysis.unscanned;
        let (outcome, cpu) = vigil_core::cpu::timed(|| self.fusion.observe(&signals));
        FUSION_CPU.inc_by(cpu);
        (signals, outcome)
    }

    /// The source came back: a new session (see [`StreamFusion::renew_session`]); the
    /// next sample runs the models afresh. Returns the old session's incident, closed.
    pub fn renew_session(&mut self, session: String) -> Option<vigil_fusion::Event> {
        self.last = None;
        self.fusion.renew_session(session)
    }

    /// The incident open on this stream now, if any.
    pub fn open_incident(&self) -> Option<&vigil_fusion::Incident> {
        self.fusion.open_incident()
    }

    /// Continues the incident a previous owner handed over (see [`StreamFusion::adopt`]).
    pub fn adopt(
        &mut self,
        prior: Option<vigil_fusion::Incident>,
        held: Vec<vigil_fusion::Event>,
    ) -> Vec<vigil_fusion::Event> {
        self.fusion.adopt(prior, held)
    }

    /// A stretch of the stream that could not be looked at (decoder crash, restart):
    /// fusion sees it as an unscanned sample, never as a clean one.
    pub fn gap(&mut self, stage: &str, reason: &str) -> (FrameSignals, Outcome) {
        let signals = FrameSignals {
            pts_ms: self.last_pts_ms,
            unscanned: vec![Unscanned { stage: stage.to_string(), reason: reason.to_string() }],
            ..Default::default()
        };
        // The next frame must run the models: what came before the gap says nothing.
        self.last = None;
        let (outcome, cpu) = vigil_core::cpu::timed(|| self.fusion.observe(&signals));
        FUSION_CPU.inc_by(cpu);
        (signals, outcome)
    }
}

/// The last sample the models ran on, for near-duplicate skipping.
struct LastAnalysis {
    hash: Hash256,
    pts_ms: u64,
    reused: u32,
    analysis: Analysis,
}

impl LastAnalysis {
    fn reusable_for(&self, hash: &Hash256, cfg: &HashConfig) -> bool {
        cfg.near_duplicate_max_distance > 0
            && self.reused < cfg.near_duplicate_max_reuse
            && self.hash.distance(hash) <= cfg.near_duplicate_max_distance
    }
}
