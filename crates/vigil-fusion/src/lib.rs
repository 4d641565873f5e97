//! Signals → verdicts. This first rule judges each frame on its own; temporal policies
//! (k of n samples, decay, hysteresis, cooldown) build on the same inputs.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use vigil_core::{FrameSignals, Verdict};

/// `[fusion]`: thresholds of the frame rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// A detection carrying the `sexual_exposed` signal counts at or above this score.
    #[serde(default = "default_exposed_min_score")]
    pub exposed_min_score: f32,
    /// A face counts as a likely minor when P(under 18) is at or above this.
    #[serde(default = "default_minor_min_probability")]
    pub minor_min_probability: f32,
    /// The whole-frame classifier sends a frame to review at or above this score.
    #[serde(default = "default_nsfw_review_score")]
    pub nsfw_review_score: f32,
}

fn default_exposed_min_score() -> f32 {
    0.5
}
fn default_minor_min_probability() -> f32 {
    0.5
}
fn default_nsfw_review_score() -> f32 {
    0.8
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            exposed_min_score: default_exposed_min_score(),
            minor_min_probability: default_minor_min_probability(),
            nsfw_review_score: default_nsfw_review_score(),
        }
    }
}

impl FusionConfig {
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        [
            ("exposed_min_score", self.exposed_min_score),
            ("minor_min_probability", self.minor_min_probability),
            ("nsfw_review_score", self.nsfw_review_score),
        ]
        .into_iter()
        .filter(|(_, v)| !(*v > 0.0 && *v <= 1.0))
        .map(|(k, v)| format!("{prefix}.{k}: {v} is outside (0, 1]"))
        .collect()
    }
}

/// A verdict with the rule that produced it and the facts it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameVerdict {
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The frame rule, strongest first:
/// 1. a match in an `interrupt` bank → interrupt;
/// 2. sexual exposure together with a likely minor's face → interrupt;
/// 3. a `review` bank match, sexual exposure alone, or a high classifier score → review;
/// 4. anything not scanned → unscanned (never clear);
/// 5. clear.
pub fn judge_frame(cfg: &FusionConfig, s: &FrameSignals) -> FrameVerdict {
    let verdict = |v, rule: &str, reasons| FrameVerdict { verdict: v, rule: Some(rule.into()), reasons };
    let bank = |action: &str| -> Vec<String> {
        s.bank_matches
            .iter()
            .filter(|m| m.action == action)
            .map(|m| format!("bank {} id {} at distance {}", m.bank, m.id, m.distance))
            .collect()
    };
    let interrupt_matches = bank("interrupt");
    if !interrupt_matches.is_empty() {
        return verdict(Verdict::Interrupt, "bank_match", interrupt_matches);
    }
    let exposed: Vec<String> = s
        .detections
        .iter()
        .filter(|d| d.signal.as_deref() == Some("sexual_exposed") && d.score >= cfg.exposed_min_score)
        .map(|d| format!("{} {:.2}", d.label, d.score))
        .collect();
    let minors: Vec<String> = s
        .faces
        .iter()
        .filter_map(|f| f.age)
        .filter(|a| a.p_minor >= cfg.minor_min_probability)
        .map(|a| format!("face P(minor) {:.2}, expected age {:.1}", a.p_minor, a.expected_years))
        .collect();
    if !exposed.is_empty() && !minors.is_empty() {
        return verdict(Verdict::Interrupt, "minor_with_sexual_exposure", [exposed, minors].concat());
    }
    let review_matches = bank("review");
    if !review_matches.is_empty() {
        return verdict(Verdict::Review, "bank_match_review", review_matches);
    }
    if !exposed.is_empty() {
        return verdict(Verdict::Review, "sexual_exposure", exposed);
    }
    if let Some(score) = s.nsfw_score.filter(|v| *v >= cfg.nsfw_review_score) {
        return verdict(Verdict::Review, "nsfw_classifier", vec![format!("nsfw score {score:.2}")]);
    }
    if !s.unscanned.is_empty() {
        let reasons = s.unscanned.iter().map(|u| format!("{}: {}", u.stage, u.reason)).collect();
        return verdict(Verdict::Unscanned, "unscanned", reasons);
    }
    FrameVerdict { verdict: Verdict::Clear, rule: None, reasons: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{AgeEstimate, BankMatch, Detection, FaceSignal, Unscanned};

    fn exposed(score: f32) -> Detection {
        Detection { label: "X_EXPOSED".into(), score, bbox: [0.0; 4], signal: Some("sexual_exposed".into()) }
    }
    fn face(p_minor: f32) -> FaceSignal {
        FaceSignal { bbox: [0.0; 4], score: 0.9, age: Some(AgeEstimate { expected_years: 12.0, p_minor }) }
    }
    fn bank(action: &str) -> BankMatch {
        BankMatch { bank: "b".into(), id: "1".into(), distance: 3, action: action.into(), variant: "original".into() }
    }

    #[test]
    fn empty_signals_are_clear() {
        assert_eq!(judge_frame(&FusionConfig::default(), &FrameSignals::default()).verdict, Verdict::Clear);
    }

    #[test]
    fn interrupt_bank_match_interrupts() {
        let s = FrameSignals { bank_matches: vec![bank("interrupt")], ..Default::default() };
        let v = judge_frame(&FusionConfig::default(), &s);
        assert_eq!((v.verdict, v.rule.as_deref()), (Verdict::Interrupt, Some("bank_match")));
    }

    #[test]
    fn minor_and_exposure_together_interrupt_but_neither_alone() {
        let cfg = FusionConfig::default();
        let both = FrameSignals { detections: vec![exposed(0.9)], faces: vec![face(0.9)], ..Default::default() };
        assert_eq!(judge_frame(&cfg, &both).verdict, Verdict::Interrupt);
        let only_exposed =
            FrameSignals { detections: vec![exposed(0.9)], faces: vec![face(0.1)], ..Default::default() };
        assert_eq!(judge_frame(&cfg, &only_exposed).verdict, Verdict::Review);
        let only_minor = FrameSignals { faces: vec![face(0.9)], ..Default::default() };
        assert_eq!(judge_frame(&cfg, &only_minor).verdict, Verdict::Clear);
    }

    #[test]
    fn unscanned_is_never_clear() {
        let s = FrameSignals {
            unscanned: vec![Unscanned { stage: "detector".into(), reason: "x".into() }],
            ..Default::default()
        };
        assert_eq!(judge_frame(&FusionConfig::default(), &s).verdict, Verdict::Unscanned);
    }

    #[test]
    fn allow_matches_alone_are_clear() {
        let s = FrameSignals { bank_matches: vec![bank("allow")], ..Default::default() };
        assert_eq!(judge_frame(&FusionConfig::default(), &s).verdict, Verdict::Clear);
    }

    #[test]
    fn validation_names_each_bad_threshold() {
        let c = FusionConfig { exposed_min_score: 0.0, minor_min_probability: 2.0, nsfw_review_score: 0.5 };
        assert_eq!(c.validate("fusion").len(), 2);
    }
}
