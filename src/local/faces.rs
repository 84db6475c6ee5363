//! `doorbell-agent faces …`: the face gallery of the running agent through its local control
//! socket (the `face/*` commands), with human-readable output.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::Client;
use crate::config::Config;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Mode of an exported gallery: face descriptors are personal data.
const EXPORT_MODE: u32 = 0o600;

/// The `faces` subcommands.
#[derive(Debug, Subcommand)]
pub enum FacesCommand {
    /// Enroll a person from a photo of their face, or from a kept ring's frames.
    Enroll {
        /// Their name (1-64 characters).
        name: String,
        /// A JPEG showing their face (the largest face is taken).
        #[arg(long, value_name = "FILE.jpg", required_unless_present = "ring", conflicts_with = "ring")]
        image: Option<PathBuf>,
        /// A ring whose frames were kept (`snapshots.keep`): its sequence number or id.
        #[arg(long, value_name = "SEQ|ID")]
        ring: Option<String>,
        /// Known (rings become `known`) or blocked (rings raise a critical alert).
        #[arg(long, value_enum, default_value_t = ListArg::Known)]
        list: ListArg,
    },
    /// Remove a person and their descriptors.
    Remove {
        /// Their name.
        name: String,
    },
    /// Everyone enrolled.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tell the agent whether a ring's result was right (feeds the accuracy gauge).
    Feedback {
        /// The ring: its sequence number (as `status` shows) or id.
        #[arg(value_name = "RING_SEQ")]
        ring: String,
        /// Was the result right?
        verdict: Verdict,
    },
    /// Write the gallery to FILE (versioned, checksummed; mode 0600) for a backup.
    Export {
        /// Where to write it.
        file: PathBuf,
    },
    /// Restore people from an exported FILE (same-named people are replaced).
    Import {
        /// An exported gallery.
        file: PathBuf,
    },
}

/// Which list to enroll on.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListArg {
    /// Family, friends.
    Known,
    /// People who must not come in.
    Blocked,
}

/// An operator's verdict on a ring.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Verdict {
    /// The result was right.
    Right,
    /// The result was wrong.
    Wrong,
}

/// Runs one `faces` subcommand against the agent configured in `cfg`.
pub fn run(cfg: &Config, command: FacesCommand) -> anyhow::Result<()> {
    // A file the socket would refuse anyway is refused before it is read whole; base64 and
    // the request around it take a third more.
    let max_file = (cfg.control.max_request_bytes() / 4 * 3).saturating_sub(4096) as u64;
    let (name, args) = request(&command, max_file)?;
    let mut client = Client::connect(&cfg.control_socket())?;
    let show_progress = std::io::stderr().is_terminal();
    let result = client.call(name, args, |status| {
        if show_progress {
            eprintln!("{name}: {status}");
        }
    })?;
    print!("{}", render(&command, &result)?);
    Ok(())
}

/// The command name and arguments of a subcommand (reading the files it names).
fn request(command: &FacesCommand, max_file: u64) -> anyhow::Result<(&'static str, Value)> {
    Ok(match command {
        FacesCommand::Enroll { name, image: Some(image), list, .. } => {
            let jpeg = read(image, max_file)?;
            ("face/enroll", json!({"name": name, "list": list_name(*list), "jpeg": BASE64.encode(jpeg)}))
        }
        FacesCommand::Enroll { name, ring: Some(ring), list, .. } => {
            ("face/enroll", json!({"name": name, "list": list_name(*list), "ring": ring_arg(ring)}))
        }
        FacesCommand::Enroll { .. } => anyhow::bail!("give --image FILE.jpg or --ring SEQ"),
        FacesCommand::Remove { name } => ("face/remove", json!({"name": name})),
        FacesCommand::List { .. } => ("face/list", json!({})),
        FacesCommand::Feedback { ring, verdict } => {
            ("face/feedback", json!({"ring": ring_arg(ring), "correct": matches!(verdict, Verdict::Right)}))
        }
        FacesCommand::Export { .. } => ("face/export", json!({})),
        FacesCommand::Import { file } => ("face/import", json!({"file": BASE64.encode(read(file, max_file)?)})),
    })
}

/// What the command prints on success (an export also writes its file).
fn render(command: &FacesCommand, result: &Value) -> anyhow::Result<String> {
    let text = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let count = |key: &str| result.get(key).and_then(Value::as_u64).unwrap_or(0);
    Ok(match command {
        FacesCommand::Enroll { .. } => {
            let samples = count("samples");
            format!("enrolled {} on the {} list ({samples} sample{})\n", text("name"), text("list"), if samples == 1 { "" } else { "s" })
        }
        FacesCommand::Remove { .. } => format!("removed {} (was on the {} list)\n", text("name"), text("list")),
        FacesCommand::List { json: true } => format!("{}\n", serde_json::to_string_pretty(result)?),
        FacesCommand::List { json: false } => people(result),
        FacesCommand::Feedback { ring, verdict } => {
            let accuracy = match result.get("accuracy").and_then(Value::as_f64) {
                Some(a) => format!("{:.0} %", a * 100.0),
                None => "unknown".into(),
            };
            let verdict = if matches!(verdict, Verdict::Right) { "right" } else { "wrong" };
            format!("recorded: ring {ring} was {verdict}; accuracy {accuracy} over the last {} verdict(s)\n", count("samples"))
        }
        FacesCommand::Export { file } => {
            let b64 = result.get("file").and_then(Value::as_str).context("the agent's answer has no file")?;
            let bytes = BASE64.decode(b64).context("the agent's file is not base64")?;
            doorbell_base::durable::write_file(file, &bytes, EXPORT_MODE).with_context(|| format!("writing {}", file.display()))?;
            format!("exported {} person(s) ({} bytes) to {}\n", count("people"), bytes.len(), file.display())
        }
        FacesCommand::Import { file } => format!(
            "imported {}: {} added, {} replaced (exported on {})\n",
            file.display(),
            count("added"),
            count("replaced"),
            text("from_device")
        ),
    })
}

/// The gallery as a table.
fn people(result: &Value) -> String {
    let people = result.get("people").and_then(Value::as_array).cloned().unwrap_or_default();
    if people.is_empty() {
        return "nobody is enrolled\n".into();
    }
    let mut out = format!("{:<24} {:<8} {:>7}  {}\n", "NAME", "LIST", "SAMPLES", "ENROLLED");
    for p in &people {
        let enrolled = p.get("enrolled_ms").and_then(Value::as_u64).map(doorbell_base::time::rfc3339).unwrap_or_default();
        out += &format!(
            "{:<24} {:<8} {:>7}  {}\n",
            p.get("name").and_then(Value::as_str).unwrap_or("?"),
            p.get("list").and_then(Value::as_str).unwrap_or("?"),
            p.get("samples").and_then(Value::as_u64).unwrap_or(0),
            enrolled
        );
    }
    out
}

fn list_name(list: ListArg) -> &'static str {
    match list {
        ListArg::Known => "known",
        ListArg::Blocked => "blocked",
    }
}

/// A ring as the command takes it: a sequence number, or an id.
fn ring_arg(ring: &str) -> Value {
    ring.parse::<u64>().map_or_else(|_| Value::from(ring), Value::from)
}

/// Reads a file the user named, refusing one too large to send.
fn read(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    doorbell_base::durable::read_limited(path, max)
        .with_context(|| format!("reading {} (the agent takes at most {max} bytes: control.max_request_mib)", path.display()))
}
