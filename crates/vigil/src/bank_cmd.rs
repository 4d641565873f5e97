//! `vigil bank stats|check|lookup`: inspect hash banks (the configured ones, or files).

use crate::source::Input;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use vigil_hash::variants::VariantHash;
use vigil_hash::{Bank, BankConfig, FrameHashes, Hash256, Variant, VariantHasher};
use vigil_worker::config::VigilConfig;

#[derive(clap::Subcommand)]
pub enum BankCommand {
    /// Rows, memory and load time of each bank.
    Stats(Files),
    /// Report every malformed line; exit 2 when a bank has any, or none at all.
    Check(Files),
    /// Look a hash, or an image's hashes (with its flips and crop variants), up in banks.
    Lookup {
        #[command(flatten)]
        files: Files,
        /// 64 hex digits.
        #[arg(long, conflicts_with = "image")]
        hash: Option<String>,
        /// An image (or video: its first sampled frame) to hash and look up.
        #[arg(long)]
        image: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct Files {
    /// Bank files (default: the banks in the configuration).
    files: Vec<PathBuf>,
    /// Distance threshold for banks given as files.
    #[arg(long, default_value_t = 31)]
    max_distance: u32,
}

impl Files {
    fn configs(&self, cfg: &VigilConfig) -> Vec<BankConfig> {
        if self.files.is_empty() {
            return cfg.hash.banks.clone();
        }
        self.files
            .iter()
            .map(|p| BankConfig {
                name: p.display().to_string(),
                max_distance: self.max_distance,
                ..BankConfig::for_path(p)
            })
            .collect()
    }
}

fn out(value: serde_json::Value) {
    println!("{value}");
}

pub fn run(config: Option<&Path>, cmd: BankCommand) -> anyhow::Result<ExitCode> {
    let cfg = VigilConfig::load(config)?;
    match cmd {
        BankCommand::Stats(files) => {
            for c in files.configs(&cfg) {
                let started = Instant::now();
                let (bank, bad) = Bank::load(&c)?;
                let stats = bank.stats();
                let per_hash = stats.memory_bytes.checked_div(stats.rows).unwrap_or(0);
                out(serde_json::json!({
                    "bank": stats, "bad_lines": bad.len(), "load_ms": started.elapsed().as_millis() as u64,
                    "bytes_per_hash": per_hash,
                }));
            }
            Ok(ExitCode::SUCCESS)
        }
        BankCommand::Check(files) => {
            let mut failed = false;
            for c in files.configs(&cfg) {
                let (bank, bad) = Bank::load(&c)?;
                for b in &bad {
                    eprintln!("{b}");
                }
                failed |= !bad.is_empty() || bank.is_empty();
                out(serde_json::json!({"bank": c.name, "rows": bank.len(), "bad_lines": bad.len(),
                    "other_signal_types": bank.other_types}));
            }
            Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        BankCommand::Lookup { files, hash, image } => {
            let configs = files.configs(&cfg);
            anyhow::ensure!(!configs.is_empty(), "no banks: name bank files or configure [[hash.banks]]");
            let crops: Vec<f32> = configs.iter().flat_map(|c| c.crops.clone()).collect();
            // The worker's own lookup: every variant at its bank's distance, crop reach
            // reported as review, one match per banked row.
            let frame = match (hash, image) {
                (Some(h), _) => {
                    let h: Hash256 = h.parse().context("--hash")?;
                    let variant = Variant::Dihedral(vigil_hash::Dihedral::Original);
                    let pdq = vigil_hash::PdqOutput { hash: h, quality: 100 };
                    FrameHashes { pdq, variants: vec![VariantHash { variant, hash: h }] }
                }
                (None, Some(img)) => {
                    let frame = Input::open(&img, &cfg.media)?.next().context("no frame in --image")??;
                    VariantHasher::new(&crops).hash(&frame.rgb, frame.width as usize, frame.height as usize)
                }
                (None, None) => anyhow::bail!("give --hash HEX or --image FILE"),
            };
            let mut found = false;
            for c in configs {
                let (bank, _) = Bank::load(&c)?;
                for m in bank.lookup_frame(&frame) {
                    found = true;
                    out(serde_json::to_value(&m)?);
                }
            }
            Ok(if found { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}
