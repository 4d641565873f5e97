//! `vigil actuate`: consume interrupt commands and cut the streams (see
//! `vigil_sink::actuate`). Reads `[sink.kafka]` for the cluster and topic and
//! `[actuate]` for the platform adapter.

use crate::config::VigilConfig;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ActuateArgs {
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    max_runtime_secs: Option<u64>,
    /// Stop after this many messages were handled (acted on, duplicate or malformed).
    #[arg(long)]
    exit_after_messages: Option<u64>,
}

pub fn run(config: Option<&Path>, args: ActuateArgs) -> anyhow::Result<ExitCode> {
    let cfg = VigilConfig::load(config)?;
    let kafka = cfg.sink.kafka.as_ref().context("vigil actuate needs [sink.kafka] (brokers, interrupts_topic)")?;
    let actuate = cfg.actuate.as_ref().context("vigil actuate needs [actuate] with an adapter")?;
    let limit = args.exit_after_messages;
    let stats = vigil_sink::actuate::run(kafka, actuate, args.max_runtime_secs.map(Duration::from_secs), &|s| {
        limit.is_some_and(|n| s.acted + s.duplicates + s.malformed >= n)
    })
    .map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}
