//! doorbell-slotctl: the A/B slot controller of doorbell-agent. Installed once at
//! /usr/local/sbin/doorbell-slotctl beside the units and never replaced by an update; the
//! only writer of the slot state file and of the `current` link. Runs as root from systemd.
//!
//! ```text
//! doorbell-slotctl [--config PATH] [--root DIR] [--state-dir DIR] [--no-systemctl] COMMAND
//!   pre-start                 ExecStartPre=+: requests, tries countdown, install, links
//!   post-stop                 ExecStopPost=+: record how a trial run ended; a hang rolls back
//!   rollback [--on-failure [--retry-after SECS]] [--reason TEXT]
//!   mark-good                 commit the trial named by the agent's commit request
//!   check-deadline            the trial timer: roll back a trial past its deadline
//!   status [--json]           read-only
//!   verify                    read-only: `current` is on a verified, non-pending slot
//! ```
//! Exit codes: 0 done, 1 failed, 2 usage. `pre-start` and `post-stop` always exit 0: a slot controller
//! that cannot do its job must not also stop the agent from starting.

use std::path::PathBuf;
use std::process::ExitCode;

use doorbell_base::device::CONFIG_PATH;
use doorbell_base::logging;
use doorbell_slotctl::ctl::Ctl;
use doorbell_slotctl::settings::Settings;
use doorbell_slotctl::{Layout, Slot, State};

const USAGE: &str = "usage: doorbell-slotctl [--config PATH] [--root DIR] [--state-dir DIR] [--no-systemctl] \
                     pre-start | post-stop | rollback [--on-failure [--retry-after SECS]] [--reason TEXT] | mark-good | check-deadline | status [--json] | verify";

fn main() -> ExitCode {
    doorbell_base::die_on_broken_pipe();
    logging::init();
    // systemd runs ExecStartPre=+ with the agent unit's UMask=0027; the slots, the links and
    // the state must stay readable (and the binaries executable) by the agent's user.
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o022) };
    let mut args = std::env::args().skip(1);
    let (mut config, mut layout, mut systemctl) = (PathBuf::from(CONFIG_PATH), Layout::default(), true);
    let (mut command, mut on_failure, mut json, mut reason) = (None, false, false, None);
    let mut retry_after = std::time::Duration::from_secs(30);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed = match a.as_str() {
            "--config" | "-c" => value("--config").map(|v| config = v.into()),
            "--root" => value("--root").map(|v| layout.root = v.into()),
            "--state-dir" => value("--state-dir").map(|v| layout.state_dir = v.into()),
            "--reason" => value("--reason").map(|v| reason = Some(v)),
            "--retry-after" => value("--retry-after")
                .and_then(|v| v.parse().map_err(|_| format!("--retry-after `{v}`: seconds expected")))
                .map(|s| retry_after = std::time::Duration::from_secs(s)),
            "--no-systemctl" => {
                systemctl = false;
                Ok(())
            }
            "--on-failure" => {
                on_failure = true;
                Ok(())
            }
            "--json" => {
                json = true;
                Ok(())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("doorbell-slotctl {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            c if !c.starts_with('-') && command.is_none() => {
                command = Some(c.to_string());
                Ok(())
            }
            other => Err(format!("unexpected argument `{other}`")),
        };
        if let Err(e) = parsed {
            eprintln!("doorbell-slotctl: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let ctl = Ctl { layout, settings: Settings::load(&config), systemctl };
    let result = match command.as_deref() {
        Some("pre-start") => match ctl.pre_start() {
            Ok(state) => Ok(state),
            Err(e) => {
                log::error!("pre-start failed: {e}; starting whatever `current` points at");
                return ExitCode::SUCCESS;
            }
        },
        Some("rollback") => {
            let reason =
                reason
                    .unwrap_or_else(|| if on_failure { failure_reason() } else { "operator rollback (doorbell-slotctl rollback)".into() });
            ctl.rollback(&reason, on_failure, retry_after)
        }
        Some("post-stop") => {
            let var = |k: &str| std::env::var(k).unwrap_or_default();
            match ctl.post_stop(&var("SERVICE_RESULT"), &var("EXIT_CODE"), &var("EXIT_STATUS")) {
                Ok(state) => Ok(state),
                Err(e) => {
                    log::error!("post-stop failed: {e}");
                    return ExitCode::SUCCESS;
                }
            }
        }
        Some("mark-good") => ctl.mark_good(),
        Some("check-deadline") => ctl.check_deadline(),
        // Read-only: never rebuilds a missing or unreadable state file.
        Some("status") => match State::load(&ctl.layout.state_file()) {
            Ok(state) => Ok(state),
            Err(e) => {
                eprintln!(
                    "doorbell-slotctl: {e} ({}); `current` -> {:?}",
                    ctl.layout.state_file().display(),
                    Layout::link_slot(&ctl.layout.current())
                );
                return ExitCode::FAILURE;
            }
        },
        Some("verify") => match ctl.verify() {
            Ok((state, remark)) => {
                if let Some(r) = remark {
                    println!("note: {r}");
                }
                Ok(state)
            }
            Err(e) => {
                eprintln!("doorbell-slotctl: verify: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("doorbell-slotctl: missing or unknown command\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(state) => {
            // What systemd runs logs to the journal already; people get the state printed.
            if matches!(command.as_deref(), Some("status" | "verify" | "rollback")) {
                print_state(&state, json);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{}: {e}", command.unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

/// What systemd tells an OnFailure= unit about the unit that failed.
fn failure_reason() -> String {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "?".into());
    format!(
        "{} failed (result {}, {} {}) and hit its start limit",
        var("MONITOR_UNIT"),
        var("MONITOR_SERVICE_RESULT"),
        var("MONITOR_EXIT_CODE"),
        var("MONITOR_EXIT_STATUS")
    )
}

fn print_state(state: &State, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(state).unwrap_or_default());
        return;
    }
    println!("{}", state.summary());
    for slot in [Slot::A, Slot::B] {
        match state.slot(slot) {
            Some(i) => println!("  slot {slot}: {} ({} bytes, sha256 {})", i.version, i.size, &i.sha256[..16.min(i.sha256.len())]),
            None => println!("  slot {slot}: empty"),
        }
    }
    if let Some(o) = state.outcomes.last() {
        println!("  last outcome: {} {} (from {}): {}", o.kind.as_str(), o.version, o.from_version, o.reason);
    }
}
