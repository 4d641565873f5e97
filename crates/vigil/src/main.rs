//! `vigil`: the command-line tool, a thin layer over the library crates (`vigil run` is
//! `vigil_worker::run`). Each subcommand lives in its own module; this file only parses
//! arguments, sets up logging and maps outcomes to exit codes: 0 clean, 1 at least one
//! alert, 2 error.

mod actuate_cmd;
mod bank_cmd;
mod console_cmd;
mod hash_cmd;
mod keys_cmd;
mod models_cmd;
mod scan;
mod source;

use vigil_worker as worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vigil", version, about = "Live-stream abuse detection: decode, hash, infer, fuse, alert")]
struct Cli {
    /// Configuration file (default: the embedded config/vigil.toml).
    #[arg(long, global = true, env = "VIGIL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker: ingest live streams (RTMP publish, pulled URLs), analyse, alert.
    Run(worker::RunArgs),
    /// (internal) Decode one stream in a confined child process for `vigil run`.
    #[command(hide = true)]
    MediaChild {
        /// (tests) Confine as a child of this kind (pushed, whip, pulled), try each
        /// forbidden call, print the outcomes; exit 0 when all were refused.
        #[arg(long)]
        probe: Option<String>,
        /// (tests) The process the probe attacks (default: its parent).
        #[arg(long, requires = "probe")]
        target: Option<u32>,
    },
    /// Scan a video file, URL or image: one JSON line per sampled frame, then a summary.
    Scan(scan::ScanArgs),
    /// Print the PDQ hash and quality of an image, or of each sampled frame of a video.
    Hash(hash_cmd::HashArgs),
    /// Consume interrupt commands from Kafka and have the platform cut the streams.
    Actuate(actuate_cmd::ActuateArgs),
    /// The on-call console: the queue, incidents, actions, paging, the audit log.
    #[command(subcommand)]
    Console(console_cmd::ConsoleCommand),
    /// Inspect hash banks.
    #[command(subcommand)]
    Bank(bank_cmd::BankCommand),
    /// Model manifests, checksums, and what the loaded models run on.
    #[command(subcommand)]
    Models(models_cmd::ModelsCommand),
    /// Benchmarks (ratios against a baseline measured in the same run).
    #[command(subcommand)]
    #[cfg(feature = "bench")]
    Bench(vigil_bench::BenchCommand),
    /// Signing keys for the records Vigil's parts write to Kafka, and signing by hand.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Check configuration files; lists every mistake.
    Validate {
        /// Files to check (none: the embedded default).
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::MediaChild { probe, target } = &cli.command {
        use vigil_media::isolate::jail;
        if let Some(kind) = probe {
            let Some(kind) = jail::Network::from_name(kind) else {
                eprintln!("--probe takes pushed, whip or pulled");
                return ExitCode::from(2);
            };
            return ExitCode::from(jail::probe(kind, *target) as u8);
        }
        // Its spec comes as the first message on stdin; its stdout is the frame pipe,
        // so nothing else may print there.
        return ExitCode::from(vigil_media::isolate::child::run_from_stdin() as u8);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let result = match cli.command {
        Command::Run(args) => worker::run(cli.config.as_deref(), args),
        Command::MediaChild { .. } => unreachable!("handled before logging is set up"),
        Command::Scan(args) => scan::run(cli.config.as_deref(), args),
        Command::Hash(args) => hash_cmd::run(cli.config.as_deref(), args),
        Command::Models(cmd) => models_cmd::run(cli.config.as_deref(), cmd),
        Command::Actuate(args) => actuate_cmd::run(cli.config.as_deref(), args),
        Command::Bank(cmd) => bank_cmd::run(cli.config.as_deref(), cmd),
        Command::Console(cmd) => console_cmd::run(cli.config.as_deref(), cmd),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => worker::config::VigilConfig::load(cli.config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|cfg| vigil_bench::run(cmd, &cfg)),
        Command::Keys(cmd) => keys_cmd::run(cmd),
        Command::Validate { files } => validate(files),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS, // the reader went away (`| head`)
        Err(e) => {
            // One line: what failed and why, for the operator's terminal or a log.
            let msg = format!("{e:#}").replace('\n', "; ");
            eprintln!("vigil: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Policy files have a top-level `[policy]` table; worker configurations never do.
fn is_policy_file(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("policy"))
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<vigil_sink::SinkError>().is_some_and(
                |s| matches!(s, vigil_sink::SinkError::Write(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            )
    })
}

fn validate(files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let targets: Vec<Option<PathBuf>> =
        if files.is_empty() { vec![None] } else { files.into_iter().map(Some).collect() };
    let mut failed = false;
    for f in targets {
        if let Some(path) = f.as_deref().filter(|p| is_policy_file(p)) {
            match vigil_fusion::Policy::load(path) {
                Ok(_) => println!("{}: ok (policy)", path.display()),
                Err(errors) => {
                    failed = true;
                    eprintln!("{}: {} error(s):\n  {}", path.display(), errors.len(), errors.join("\n  "));
                }
            }
            continue;
        }
        match worker::config::VigilConfig::load(f.as_deref()) {
            Ok(_) => {
                println!("{}: ok", f.as_ref().map_or("embedded default config".into(), |p| p.display().to_string()))
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
