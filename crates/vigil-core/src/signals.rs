use serde::{Deserialize, Serialize};

/// Everything the stages found in one frame. Hashes, scores and boxes only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FrameSignals {
    pub pts_ms: u64,
    /// PDQ hash of the frame; absent when hashing was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<PdqSignal>,
    pub bank_matches: Vec<BankMatch>,
    pub detections: Vec<Detection>,
    pub faces: Vec<FaceSignal>,
    /// Set when this sample was a near-duplicate of the sample at this time, whose model
    /// results it reuses (hashing and bank matching still ran on this sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_analysis_of_ms: Option<u64>,
    /// Whole-frame classifier score in 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsfw_score: Option<f32>,
    /// Stages that could not look at this frame. A frame with any entry here was
    /// not fully scanned and is never reported as clean.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unscanned: Vec<Unscanned>,
    /// Policy rules that a console allowlist entry silences on this frame (a reviewed
    /// false positive); the frame's matches show the entry as an `allow` match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PdqSignal {
    /// 64 hex digits, ThreatExchange order (bit 255 first).
    pub hash: String,
    /// ThreatExchange's integer quality, 0..=100.
    pub quality: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BankMatch {
    pub bank: String,
    /// Row id of the banked hash (its line number when the bank has no ids).
    pub id: String,
    pub distance: u32,
    pub action: String,
    /// Which hash of the frame matched: `original`, a rotation or flip (`flip_y`), or a
    /// crop-reach variant (`crop_5%`).
    pub variant: String,
}

/// A region the detector found, in frame pixel coordinates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    pub label: String,
    pub score: f32,
    /// x, y, width, height.
    pub bbox: [f32; 4],
    /// The Vigil signal this label maps to (`face`, `sexual_exposed`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaceSignal {
    pub bbox: [f32; 4],
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeEstimate>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct AgeEstimate {
    /// Expected age in years over the model's age bins.
    pub expected_years: f32,
    /// Probability that the face is under 18.
    pub p_minor: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unscanned {
    pub stage: String,
    pub reason: String,
}

/// What fusion decided about a frame (later: about a stream over time).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Clear,
    /// Not everything could be looked at: never treated as clean.
    Unscanned,
    Review,
    Interrupt,
}

impl Verdict {
    /// Whether this verdict is an alert a human or a platform must see.
    pub fn is_alert(self) -> bool {
        matches!(self, Verdict::Review | Verdict::Interrupt)
    }
}
