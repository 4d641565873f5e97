//! `vigil console`: the on-call console (see `vigil_console`). Reads `[console]` for
//! itself and `[sink.kafka]` for the cluster and the alerts and interrupts topics.

use anyhow::Context;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use vigil_console::model::{Role, now_ms};
use vigil_worker::config::VigilConfig;

#[derive(clap::Subcommand)]
pub enum ConsoleCommand {
    /// Serve the console (the queue, incidents, actions, paging) until SIGTERM.
    Serve,
    /// Create a local account, or change its role and password. The password is read
    /// from standard input (one line), or from VIGIL_CONSOLE_PASSWORD.
    User {
        name: String,
        #[arg(long, value_parser = ["viewer", "reviewer", "admin"])]
        role: String,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check the keyed hash chain; names the first broken entry (exit 1 when one is).
    /// Needs a store that exists (it never creates one) and the audit key.
    Verify,
}

fn config(path: Option<&Path>) -> anyhow::Result<(VigilConfig, vigil_console::ConsoleConfig)> {
    let cfg = VigilConfig::load(path)?;
    let console = cfg.console.clone().unwrap_or_default();
    Ok((cfg, console))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn run(path: Option<&Path>, cmd: ConsoleCommand) -> anyhow::Result<ExitCode> {
    let (cfg, console) = config(path)?;
    match cmd {
        ConsoleCommand::Serve => {
            // It signs the commands and allowlist entries it writes, and believes only
            // workers' alerts, workers' and its own commands, and workers' and
            // actuators' outcomes.
            let has_kafka = cfg.sink.kafka.is_some();
            let trust = cfg.open_trust(vigil_trust::Role::Console, has_kafka, has_kafka).context("[trust]")?;
            vigil_console::run(console, cfg.sink.kafka.clone(), trust)?;
            Ok(ExitCode::SUCCESS)
        }
        ConsoleCommand::User { name, role } => {
            let password = match std::env::var("VIGIL_CONSOLE_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut s = String::new();
                    std::io::stdin().take(1024).read_to_string(&mut s).context("reading the password from stdin")?;
                    s.lines().next().unwrap_or("").to_string()
                }
            };
            if password.chars().count() < 12 {
                anyhow::bail!("the password must have at least 12 characters");
            }
            if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                anyhow::bail!("the user name must be 1 to 200 characters, without spaces");
            }
            let role = Role::parse(&role).expect("clap checked it");
            let hash = vigil_console::web::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
            runtime()?.block_on(async {
                let store = vigil_console::open_store(&console, Duration::from_secs(10)).await?;
                store.upsert_user(&name, Some(&hash), role).await?;
                store.audit("cli", "user", &name, &serde_json::json!({ "role": role.as_str() }), now_ms()).await?;
                anyhow::Ok(())
            })?;
            eprintln!("user {name} has the {} role", role.as_str());
            Ok(ExitCode::SUCCESS)
        }
        ConsoleCommand::Audit(AuditCommand::Verify) => {
            let check = runtime()?.block_on(async {
                // Never an empty store made here and then found "intact".
                let store = vigil_console::open_existing_store(&console).await?;
                anyhow::Ok(store.audit_verify().await?)
            })?;
            match check.first_broken {
                None => {
                    println!("audit log intact: {} entries", check.entries);
                    Ok(ExitCode::SUCCESS)
                }
                Some((seq, why)) => {
                    println!("audit log BROKEN at entry {seq}: {why} ({} entries)", check.entries);
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
