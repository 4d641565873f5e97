//! Fusion policies (`config/policies/*.toml`): thresholds that turn a sample's signals
//! into conditions, and rules over a stream's recent samples ("k of the last n").

use serde::{Deserialize, Serialize};
use std::path::Path;
use vigil_core::{FrameSignals, Verdict};

pub const DEFAULT_POLICY: &str = include_str!("../../../config/policies/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub policy: PolicyMeta,
    pub thresholds: Thresholds,
    pub rule: Vec<Rule>,
    pub incident: IncidentConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub exposed_min_score: f32,
    pub minor_min_probability: f32,
    pub nsfw_min_score: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    BankInterrupt,
    BankReview,
    MinorWithExposure,
    Exposure,
    Nsfw,
    Unscanned,
}

impl Condition {
    pub const ALL: [Condition; 6] = [
        Condition::BankInterrupt,
        Condition::BankReview,
        Condition::MinorWithExposure,
        Condition::Exposure,
        Condition::Nsfw,
        Condition::Unscanned,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Condition::BankInterrupt => "bank_interrupt",
            Condition::BankReview => "bank_review",
            Condition::MinorWithExposure => "minor_with_exposure",
            Condition::Exposure => "exposure",
            Condition::Nsfw => "nsfw",
            Condition::Unscanned => "unscanned",
        }
    }
}

/// The conditions one sample met, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions(u8);

impl Conditions {
    pub fn has(self, c: Condition) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn set(&mut self, c: Condition) {
        self.0 |= c.bit();
    }
    pub fn names(self) -> Vec<&'static str> {
        Condition::ALL.iter().filter(|c| self.has(**c)).map(|c| c.name()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Review,
    Interrupt,
}

impl Decision {
    pub fn verdict(self) -> Verdict {
        match self {
            Decision::Review => Verdict::Review,
            Decision::Interrupt => Verdict::Interrupt,
        }
    }
}

/// A rule's temporal window: either a count over the last samples, or a score over
/// time that each hit raises by one and that halves every `half_life_secs`.
///
/// The decayed score is measured in stream time, not in samples, so it means the same
/// while adaptive sampling switches between one keyframe every few seconds and several
/// frames a second; "k of n" counts samples and is the simpler tool for fixed rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decay {
    pub half_life_secs: f64,
    /// Fires when the score reaches this (e.g. 3.0: about three hits within a half-life).
    pub threshold: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub condition: Condition,
    /// Fires when the condition held in at least `k` of the last `n` samples.
    #[serde(default)]
    pub k: usize,
    #[serde(default)]
    pub n: usize,
    /// Or: fires when the condition's decayed score reaches the threshold.
    #[serde(default)]
    pub decay: Option<Decay>,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentConfig {
    /// Samples in a row with no condition that close an incident (hysteresis).
    pub clear_samples: usize,
    /// And at least this long since the incident was last seen.
    pub cooldown_secs: u64,
    /// A stream still meeting an interrupt rule this long (stream time) after its
    /// command was issued was not cut: the command is issued again under a new id.
    /// 0: never.
    #[serde(default = "default_reissue_secs")]
    pub reissue_secs: u64,
}

fn default_reissue_secs() -> u64 {
    30
}

impl Policy {
    pub fn embedded_default() -> Policy {
        Policy::parse(DEFAULT_POLICY).expect("the shipped policy is valid (tested)")
    }

    /// Parses and validates; every mistake is listed.
    pub fn parse(text: &str) -> Result<Policy, Vec<String>> {
        let p: Policy = toml::from_str(text).map_err(|e| vec![e.message().trim().to_string()])?;
        let errors = p.validate();
        if errors.is_empty() { Ok(p) } else { Err(errors) }
    }

    pub fn load(path: &Path) -> Result<Policy, Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
        Policy::parse(&text)
    }

    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        for (k, v) in [
            ("exposed_min_score", self.thresholds.exposed_min_score),
            ("minor_min_probability", self.thresholds.minor_min_probability),
            ("nsfw_min_score", self.thresholds.nsfw_min_score),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                e.push(format!("thresholds.{k}: {v} is outside (0, 1]"));
            }
        }
        if self.rule.is_empty() {
            e.push("rule: a policy needs at least one rule".into());
        }
        if self.rule.len() > 64 {
            e.push(format!("rule: {} rules, more than 64", self.rule.len()));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.rule.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                e.push(format!("rule[{i}].name: \"{}\" is used twice", r.name));
            }
            match (&r.decay, r.k, r.n) {
                (Some(d), 0, 0) => {
                    if !(d.half_life_secs > 0.0 && d.half_life_secs <= 3600.0) {
                        e.push(format!(
                            "rule[{i}] ({}): decay.half_life_secs {} is outside (0, 3600]",
                            r.name, d.half_life_secs
                        ));
                    }
                    if !(d.threshold > 0.0 && d.threshold.is_finite()) {
                        e.push(format!("rule[{i}] ({}): decay.threshold {} must be above 0", r.name, d.threshold));
                    }
                }
                (Some(_), _, _) => e.push(format!("rule[{i}] ({}): give k and n, or decay, not both", r.name)),
                (None, k, n) => {
                    if k == 0 || k > n {
                        e.push(format!("rule[{i}] ({}): k = {k} must be in 1..=n ({n})", r.name));
                    }
                    if n > 64 {
                        e.push(format!("rule[{i}] ({}): n = {n} is more than 64 samples", r.name));
                    }
                }
            }
        }
        if self.incident.clear_samples == 0 {
            e.push("incident.clear_samples: must be at least 1".into());
        }
        e
    }

    /// The longest window any rule looks at.
    pub fn window(&self) -> usize {
        self.rule.iter().map(|r| r.n).max().unwrap_or(1).max(1)
    }

    /// Which conditions a sample meets, with the facts behind each.
    pub fn conditions(&self, s: &FrameSignals) -> (Conditions, Vec<String>) {
        let t = &self.thresholds;
        let mut c = Conditions::default();
        let mut why = Vec::new();
        for m in &s.bank_matches {
            let cond = match m.action.as_str() {
                "interrupt" => Condition::BankInterrupt,
                "review" => Condition::BankReview,
                _ => continue,
            };
            c.set(cond);
            why.push(format!("bank {} id {} at distance {} ({})", m.bank, m.id, m.distance, m.variant));
        }
        let exposed: Vec<String> = s
            .detections
            .iter()
            .filter(|d| d.signal.as_deref() == Some("sexual_exposed") && d.score >= t.exposed_min_score)
            .map(|d| format!("{} {:.2}", d.label, d.score))
            .collect();
        let minors: Vec<String> = s
            .faces
            .iter()
            .filter_map(|f| f.age)
            .filter(|a| a.p_minor >= t.minor_min_probability)
            .map(|a| format!("face P(minor) {:.2}, expected age {:.1}", a.p_minor, a.expected_years))
            .collect();
        if !exposed.is_empty() {
            c.set(Condition::Exposure);
            if !minors.is_empty() {
                c.set(Condition::MinorWithExposure);
                why.extend(minors);
            }
            why.extend(exposed);
        }
        if let Some(score) = s.nsfw_score.filter(|v| *v >= t.nsfw_min_score) {
            c.set(Condition::Nsfw);
            why.push(format!("nsfw score {score:.2}"));
        }
        if !s.unscanned.is_empty() {
            c.set(Condition::Unscanned);
            why.extend(s.unscanned.iter().map(|u| format!("unscanned {}: {}", u.stage, u.reason)));
        }
        (c, why)
    }

    /// The rules (bit i = `rule[i]`) that a console allowlist entry silences on this
    /// frame (a reviewed false positive): they do not count it, while every other rule,
    /// one sharing the same condition included, still does. A rule on `unscanned` is
    /// never silenced: a frame nobody looked at is not a known false positive.
    pub fn allowed_mask(&self, s: &FrameSignals) -> u64 {
        self.rule
            .iter()
            .enumerate()
            .filter(|(_, r)| r.condition != Condition::Unscanned && s.allowed_rules.contains(&r.name))
            .fold(0, |mask, (i, _)| mask | 1u64 << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policy_is_valid() {
        let p = Policy::embedded_default();
        assert_eq!(p.policy.name, "default");
        assert!(p.window() >= 4);
    }

    #[test]
    fn every_mistake_is_listed() {
        let text = DEFAULT_POLICY
            .replace("nsfw_min_score = 0.8", "nsfw_min_score = 1.8")
            .replace("k = 2\nn = 4\ndecision = \"interrupt\"", "k = 5\nn = 4\ndecision = \"interrupt\"")
            .replace("clear_samples = 5", "clear_samples = 0");
        let e = Policy::parse(&text).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn a_decay_rule_needs_a_half_life_and_a_threshold_and_no_k_or_n() {
        let rule = |body: &str| {
            DEFAULT_POLICY.replace(
                "[[rule]]\nname = \"known_abuse_material\"",
                &format!("[[rule]]\nname = \"decaying\"\ncondition = \"nsfw\"\n{body}\ndecision = \"review\"\n\n[[rule]]\nname = \"known_abuse_material\""),
            )
        };
        assert!(Policy::parse(&rule("decay = { half_life_secs = 10.0, threshold = 3.0 }")).is_ok());
        let e = Policy::parse(&rule("decay = { half_life_secs = 0.0, threshold = -1.0 }")).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        let e = Policy::parse(&rule("k = 1\nn = 2\ndecay = { half_life_secs = 10.0, threshold = 3.0 }")).unwrap_err();
        assert!(e[0].contains("not both"), "{e:?}");
    }

    #[test]
    fn an_allowed_rule_is_masked_alone_and_unscanned_never() {
        let p = Policy::embedded_default();
        let nsfw = p.rule.iter().position(|r| r.condition == Condition::Nsfw).expect("an nsfw rule");
        let mut s = FrameSignals { nsfw_score: Some(0.99), ..Default::default() };
        assert_eq!(p.allowed_mask(&s), 0);
        s.allowed_rules = vec![p.rule[nsfw].name.clone(), "no_such_rule".into()];
        assert_eq!(p.allowed_mask(&s), 1 << nsfw, "only the named rule");
        assert!(p.conditions(&s).0.has(Condition::Nsfw), "the condition still held (other rules count it)");
        let unscanned = p.rule.iter().find(|r| r.condition == Condition::Unscanned).expect("an unscanned rule");
        s.allowed_rules = vec![unscanned.name.clone()];
        assert_eq!(p.allowed_mask(&s), 0);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Policy::parse(&DEFAULT_POLICY.replace("[incident]", "[incident]\ncooldown_mins = 3")).unwrap_err();
        assert!(e[0].contains("cooldown_mins"), "{e:?}");
    }
}
