//! `vigil keys`: make a part's signing key, and sign a record the way Vigil's parts do
//! (for the platform's lifecycle producer, or a script that must write a topic a Vigil
//! part reads). See `vigil_trust` and SECURITY.md for who may write what.

use anyhow::Context;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use vigil_trust::{Role, Signer};

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key: writes DIR/ROLE.key (0600; never over an existing file)
    /// and prints its keyring line (`ID ROLE PUBLIC_HEX`) for every reader's keyring.
    Gen {
        #[arg(long, value_parser = ["worker", "console", "actuator", "lifecycle"])]
        role: String,
        /// The key id readers see (rotate by making a key with a new id).
        #[arg(long)]
        id: String,
        /// The folder the key goes into (`[trust] key_dir`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign one record: the value is read from stdin (up to 1 MiB); prints the three
    /// headers to send with it, as JSON, or as kcat `-H` arguments.
    Sign {
        /// The signing key file (ROLE.key).
        #[arg(long)]
        key: PathBuf,
        /// The topic the record is written to (part of what is signed).
        #[arg(long)]
        topic: String,
        /// The record's key (lifecycle: the stream id).
        #[arg(long)]
        record_key: Option<String>,
        /// Sign a tombstone (no value; stdin is not read).
        #[arg(long)]
        tombstone: bool,
        #[arg(long, default_value = "json", value_parser = ["json", "kcat"])]
        format: String,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Gen { role, id, out } => {
            let role = Role::parse(&role).context("clap checked the role")?;
            let signer = Signer::generate(&id, role)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join(format!("{role}.key"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("{} (an existing key is never overwritten)", path.display()))?;
            f.write_all(signer.to_file_text().as_bytes())?;
            f.sync_all()?;
            eprintln!("wrote {} (secret: give it to the {role} alone)", path.display());
            println!("{}", signer.keyring_line());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Sign { key, topic, record_key, tombstone, format } => {
            let signer = Signer::load(&key)?;
            let value = if tombstone {
                None
            } else {
                let mut v = Vec::new();
                std::io::stdin().take((1 << 20) + 1).read_to_end(&mut v).context("reading the value from stdin")?;
                anyhow::ensure!(v.len() <= 1 << 20, "the value on stdin is over 1 MiB: not signed");
                Some(v)
            };
            let h =
                signer.sign(&topic, record_key.as_deref().map(str::as_bytes), value.as_deref(), vigil_trust::unix_ms());
            let pairs = [
                (vigil_trust::record::KEY_ID_HEADER, h.key_id.clone()),
                (vigil_trust::record::TS_HEADER, h.ts_ms.to_string()),
                (vigil_trust::record::SIG_HEADER, h.signature_hex.clone()),
            ];
            if format == "kcat" {
                let args: Vec<String> = pairs.iter().map(|(k, v)| format!("-H {k}={v}")).collect();
                println!("{}", args.join(" "));
            } else {
                let map: serde_json::Map<String, serde_json::Value> =
                    pairs.into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect();
                println!("{}", serde_json::Value::Object(map));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
