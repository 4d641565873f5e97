//! The worker's configuration: one section per stage, each owned and validated by its
//! crate. Loading reports every mistake at once: unknown sections, each section's
//! first parse error (unknown keys included), and every semantic error.

use serde::Serialize;
use std::path::Path;
use toml::{Table, Value};

pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/vigil.toml");
const ENV_PREFIX: &str = "VIGIL__";
const SECTIONS: [&str; 12] = [
    "media",
    "ingest",
    "hash",
    "infer",
    "fusion",
    "sink",
    "admin",
    "actuate",
    "fleet",
    "allowlist",
    "console",
    "trust",
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct VigilConfig {
    pub media: vigil_media::SampleConfig,
    /// Only `vigil run` reads it.
    pub ingest: vigil_media::ingest::IngestConfig,
    pub hash: vigil_hash::HashConfig,
    pub infer: vigil_infer::InferConfig,
    pub fusion: vigil_fusion::FusionConfig,
    pub sink: vigil_sink::SinkConfig,
    /// Only `vigil run` reads it.
    pub admin: crate::AdminConfig,
    /// Only `vigil actuate` reads it.
    pub actuate: Option<vigil_sink::actuate::ActuateConfig>,
    /// Only `vigil run` reads it: pulled streams shared with a consumer group.
    pub fleet: Option<crate::FleetConfig>,
    /// Only `vigil run` reads it: the console's allowlist, from the bank-updates topic.
    pub allowlist: Option<crate::AllowlistConfig>,
    /// Only `vigil console` reads it.
    pub console: Option<vigil_console::ConsoleConfig>,
    /// Every part that reads or writes Kafka: its signing key and the keyring it believes.
    pub trust: vigil_trust::TrustConfig,
}

/// All that is wrong with a configuration, one line per mistake.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {} error(s):\n  {}", errors.len(), errors.join("\n  "))]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<String>,
}

impl VigilConfig {
    /// Loads `path`, or the embedded default when `None`, then applies `VIGIL__*`
    /// environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<VigilConfig, ConfigErrors> {
        let (name, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| ConfigErrors {
                    source_name: p.display().to_string(),
                    errors: vec![format!("cannot read: {e}")],
                })?,
            ),
            None => ("embedded default config".to_string(), EMBEDDED_DEFAULT.to_string()),
        };
        Self::from_str_with_env(&name, &text, std::env::vars())
    }

    pub fn from_str_with_env(
        name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<VigilConfig, ConfigErrors> {
        let fail = |errors| ConfigErrors { source_name: name.to_string(), errors };
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| fail(vec![e.to_string()]))?;
        let mut errors = apply_env(&mut table, env);
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                errors.push(format!("{key}: unknown section (known: {})", SECTIONS.join(", ")));
            }
        }
        let mut cfg = VigilConfig::default();
        section(&table, "media", &mut cfg.media, &mut errors);
        section(&table, "ingest", &mut cfg.ingest, &mut errors);
        section(&table, "admin", &mut cfg.admin, &mut errors);
        section(&table, "hash", &mut cfg.hash, &mut errors);
        section(&table, "infer", &mut cfg.infer, &mut errors);
        section(&table, "fusion", &mut cfg.fusion, &mut errors);
        section(&table, "sink", &mut cfg.sink, &mut errors);
        section(&table, "actuate", &mut cfg.actuate, &mut errors);
        section(&table, "fleet", &mut cfg.fleet, &mut errors);
        section(&table, "allowlist", &mut cfg.allowlist, &mut errors);
        section(&table, "console", &mut cfg.console, &mut errors);
        section(&table, "trust", &mut cfg.trust, &mut errors);
        errors.extend(cfg.validate());
        if errors.is_empty() { Ok(cfg) } else { Err(fail(errors)) }
    }

    pub fn validate(&self) -> Vec<String> {
        let mut e = self.media.validate("media");
        e.extend(self.ingest.validate("ingest"));
        e.extend(self.admin.validate("admin"));
        e.extend(self.hash.validate("hash"));
        e.extend(self.infer.validate("infer"));
        // The batcher's frames come from the streams' queues, at analysis size.
        let batcher_bytes = self.infer.queue_frames as u64 * self.media.max_frame_bytes();
        if batcher_bytes > vigil_media::MAX_QUEUE_BYTES {
            e.push(format!(
                "infer.queue_frames: {} frames of up to {1}x{1} RGB (media.analysis_max_px) would hold {2} MiB, over {3} MiB",
                self.infer.queue_frames,
                self.media.analysis_max_px,
                batcher_bytes >> 20,
                vigil_media::MAX_QUEUE_BYTES >> 20
            ));
        }
        e.extend(self.fusion.validate("fusion"));
        e.extend(self.sink.validate("sink"));
        if let Some(a) = &self.actuate {
            e.extend(a.validate("actuate"));
        }
        if let Some(f) = &self.fleet {
            e.extend(f.validate("fleet", self.sink.kafka.is_some()));
        }
        if let Some(a) = &self.allowlist {
            e.extend(a.validate("allowlist", self.sink.kafka.is_some()));
        }
        if let Some(c) = &self.console {
            e.extend(c.validate("console"));
        }
        e.extend(self.trust.validate("trust", self.sink.kafka.is_some()));
        if let Some(a) = &self.actuate
            && self.trust.command_max_age_secs <= a.retry.budget_secs
        {
            e.push(format!(
                "trust.command_max_age_secs: {} must exceed actuate.retry.budget_secs ({}): commands behind a retried one wait that long, and would be refused as stale",
                self.trust.command_max_age_secs, a.retry.budget_secs
            ));
        }
        e
    }

    /// This part's trust, loaded: its key when it `writes` Kafka records, the keyring
    /// when it `reads` them; a missing one is an error naming the setting.
    pub fn open_trust(
        &self,
        role: vigil_trust::Role,
        writes: bool,
        reads: bool,
    ) -> anyhow::Result<vigil_trust::config::Trust> {
        Ok(vigil_trust::config::Trust::open(&self.trust, role, writes, reads)?)
    }
}

fn section<T: serde::de::DeserializeOwned>(table: &Table, name: &str, into: &mut T, errors: &mut Vec<String>) {
    let Some(value) = table.get(name) else { return };
    match value.clone().try_into::<T>() {
        Ok(v) => *into = v,
        Err(e) => errors.push(format!("{name}: {}", e.message().trim())),
    }
}

/// `VIGIL__MEDIA__SAMPLE_FPS=2` sets `media.sample_fps = 2`. Values parse as TOML
/// (numbers, booleans, arrays) and fall back to a string.
fn apply_env(table: &mut Table, env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, raw) in env {
        let Some(path) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.len() != 2 || parts.iter().any(String::is_empty) {
            errors.push(format!("{key}: environment overrides look like VIGIL__SECTION__KEY"));
            continue;
        }
        let value =
            format!("v = {raw}").parse::<Table>().ok().and_then(|mut t| t.remove("v")).unwrap_or(Value::String(raw));
        let section = table.entry(parts[0].clone()).or_insert_with(|| Value::Table(Table::new()));
        match section.as_table_mut() {
            Some(t) => {
                t.insert(parts[1].clone(), value);
            }
            None => errors.push(format!("{key}: {} is not a section", parts[0])),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<VigilConfig, ConfigErrors> {
        VigilConfig::from_str_with_env("t", text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn embedded_default_is_valid() {
        load(EMBEDDED_DEFAULT, &[]).unwrap();
    }

    #[test]
    fn every_mistake_is_listed_at_once() {
        let text =
            "[media]\nsample_fps = 0\n[hash]\nqualty_floor = 3\n[fusion]\npolicy = \"/nonexistent.toml\"\n[bogus]\n";
        let e = load(text, &[]).unwrap_err();
        let all = e.errors.join("\n");
        assert!(all.contains("bogus: unknown section"), "{all}");
        assert!(all.contains("qualty_floor"), "{all}");
        assert!(all.contains("media.sample_fps"), "{all}");
        assert!(all.contains("fusion.policy"), "{all}");
        assert_eq!(e.errors.len(), 4, "{all}");
    }

    #[test]
    fn the_inference_queue_is_bounded_in_bytes() {
        // 32 frames of 4096 px fit a stream's queue of 8 but not the batcher's queue.
        let text = "[media]\nanalysis_max_px = 4096\nqueue_frames = 8\n[infer]\nqueue_frames = 32\n";
        let e = load(text, &[]).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{:?}", e.errors);
        assert!(e.errors[0].contains("infer.queue_frames: 32 frames of up to 4096x4096"), "{:?}", e.errors);
        load("[media]\nanalysis_max_px = 4096\nqueue_frames = 8\n[infer]\nqueue_frames = 16\n", &[]).unwrap();
    }

    #[test]
    fn environment_overrides_apply_and_are_validated() {
        let cfg =
            load(EMBEDDED_DEFAULT, &[("VIGIL__MEDIA__SAMPLE_FPS", "2.5"), ("VIGIL__INFER__DETECTOR", "x")]).unwrap();
        assert_eq!(cfg.media.sample_fps, 2.5);
        assert_eq!(cfg.infer.detector, "x");
        let e = load(EMBEDDED_DEFAULT, &[("VIGIL__MEDIA__SAMPLE_FPS", "-1"), ("VIGIL__NOPE", "1")]).unwrap_err();
        assert_eq!(e.errors.len(), 2, "{:?}", e.errors);
    }
}
