//! doorbell-fleet: the operator's tool for a fleet of doorbells, on an operator's machine and
//! never on a device. Talks to the fleet's MQTT broker like any client would:
//!
//! ```text
//! doorbell-fleet --broker URL [TLS and login options] devices | send | watch | rollout
//! doorbell-fleet keygen FILE
//! ```
//!
//! `broker` is the client every command shares; `operator` holds `devices`, `send`, `watch`
//! and `keygen`; `rollout` updates devices in waves. The contract is docs/fleet-protocol.md.

mod broker;
mod operator;
mod rollout;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use broker::Broker;

/// Operate a fleet of doorbells over MQTT: list devices, send commands, watch events,
/// roll out updates.
#[derive(Parser)]
#[command(name = "doorbell-fleet", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    broker: Broker,
    #[command(subcommand)]
    action: Action,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List the devices that reported in (from their retained status and alarms).
    Devices {
        /// One JSON object per device.
        #[arg(long)]
        json: bool,
    },
    /// Send a command to a device or to `all`; with --wait, print its lifecycle and exit 0 only
    /// if every answer is `successful`.
    Send {
        /// Device id, or `all`.
        target: String,
        /// Command name (`ping`, `status`, `config/set`, `alert/ack`, `restart`, ...).
        command: String,
        /// Argument `key=value` (repeatable); values are JSON when they parse as JSON.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Wait for the final status (of every online device for `all`).
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Sign with this fleet key (see `keygen`); needed when devices set `mqtt.command_key`.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Print the responses as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Follow rings, alerts, presence and command responses live (Ctrl-C to stop); broker
    /// outages are waited out.
    Watch {
        /// Only this device.
        device: Option<String>,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
        /// Use a persistent session under this client id: the broker queues what arrives
        /// while the watcher is away (QoS 1), so nothing is missed across reconnections.
        #[arg(long, value_name = "CLIENT_ID")]
        session: Option<String>,
    },
    /// Update devices in waves with a signed artifact; halts (exit 1) once the failures
    /// exceed the budget, and prints a per-device table.
    Rollout(rollout::Options),
    /// Create a fleet signing key; prints the public key for the devices' `mqtt.command_key`.
    Keygen {
        /// Where to write the private key (mode 0600; keep it off the devices).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    doorbell_base::die_on_broken_pipe();
    let cli = Cli::parse();
    match run(cli.broker, cli.action) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; the exit code.
fn run(broker: Broker, action: Action) -> anyhow::Result<u8> {
    if let Action::Keygen { file } = &action {
        return operator::keygen(file);
    }
    anyhow::ensure!(broker.broker.is_some(), "--broker URL (or DOORBELL_BROKER) is required");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match action {
            Action::Devices { json } => operator::devices(&broker, json).await,
            Action::Send { target, command, args, wait, timeout, sign_key, json } => {
                operator::send(&broker, &target, &command, &args, wait, timeout, sign_key.as_deref(), json).await
            }
            Action::Watch { device, json, session } => operator::watch(&broker, device.as_deref(), json, session.as_deref()).await,
            Action::Rollout(options) => rollout::run(&broker, options).await,
            Action::Keygen { .. } => unreachable!("handled above"),
        }
    })
}
