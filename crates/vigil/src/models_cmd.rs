//! `vigil models list|verify|info`: what models are configured, whether their files
//! hold their checksums, and what a loaded model runs on.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitCode;
use vigil_infer::{Analyzer, ModelManifest};
use vigil_worker::config::VigilConfig;

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// Every manifest in the models folder, and whether its file is present.
    List,
    /// Check every present model file against its manifest's sha256 (exit 2 on any
    /// mismatch or missing file of a configured model).
    Verify,
    /// Load the configured models (runtime, providers, warm-up) and describe them.
    Info,
}

pub fn run(config: Option<&Path>, cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    let cfg = VigilConfig::load(config)?;
    let infer = &cfg.infer;
    // What runs: each configured model, in the build `[infer] precision` picks for it.
    let configured: Vec<String> = std::iter::once(infer.detector.as_str())
        .chain(infer.age.as_deref())
        .chain(infer.classifier.as_deref())
        .filter(|n| !n.is_empty())
        .map(|n| vigil_infer::choose_precision(infer, n).map_or_else(|_| n.to_string(), |m| m.name))
        .collect();
    let configured: Vec<&str> = configured.iter().map(String::as_str).collect();
    let manifests = ModelManifest::load_dir(&infer.models_dir())?;
    match cmd {
        ModelsCommand::List => {
            for (path, m) in manifests {
                let file = infer.model_file(&m.file);
                println!(
                    "{}",
                    serde_json::json!({
                        "name": m.name, "kind": m.kind, "version": m.version, "license": m.license.spdx,
                        "license_note": m.license.note, "manifest": path, "file": file, "present": file.exists(),
                        "configured": configured.contains(&m.name.as_str()),
                        "source": m.source.as_ref().map(|s| format!("{}=={} {}", s.pypi, s.version, s.path)),
                    })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify => {
            let mut failed = false;
            for (_, m) in manifests {
                let file = infer.model_file(&m.file);
                let state = match std::fs::read(&file) {
                    Err(_) => {
                        failed |= configured.contains(&m.name.as_str());
                        "missing".to_string()
                    }
                    Ok(bytes) => {
                        let actual = hex::encode(Sha256::digest(&bytes));
                        if actual.eq_ignore_ascii_case(&m.sha256) {
                            "ok".to_string()
                        } else {
                            failed = true;
                            format!("mismatch: {actual}")
                        }
                    }
                };
                println!("{}", serde_json::json!({"name": m.name, "file": file, "sha256": m.sha256, "state": state}));
            }
            Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        ModelsCommand::Info => {
            let analyzer = Analyzer::load(infer).context("loading models")?;
            for info in analyzer.models() {
                let manifest = manifests.iter().find(|(_, m)| m.name == info.name).map(|(_, m)| m);
                let warning = manifest
                    .filter(|m| m.license.spdx.to_ascii_uppercase().contains("AGPL"))
                    .map(|m| format!("licence {}: {}", m.license.spdx, m.license.note));
                if let Some(w) = &warning {
                    tracing::warn!(model = %info.name, "{w}");
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "model": info, "license_warning": warning,
                        "input": manifest.map(|m| &m.input), "output": manifest.map(|m| &m.output.name),
                    })
                );
            }
            println!("{}", serde_json::json!({"ready": true, "warmup_ms": analyzer.warmup_ms()}));
            Ok(ExitCode::SUCCESS)
        }
    }
}
