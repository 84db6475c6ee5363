//! `doorbell-agent update …`: the technician's commands. They stage and request through the
//! same files the running agent and slotctl use, then follow the slot state file (readable
//! even while the agent is down) until the outcome is known.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::stage::{self, Progress, Source};
use crate::config::Config;
use doorbell_slotctl::ctl::StagedOptions;
use doorbell_slotctl::{Layout, Outcome, OutcomeKind, State};

/// How long to wait for the running agent to restart and slotctl to act on a request.
const HANDOVER: Duration = Duration::from_secs(60);

fn load_state(layout: &Layout) -> anyhow::Result<State> {
    State::load(&layout.state_file()).with_context(|| format!("reading the slot state {}", layout.state_file().display()))
}

fn last_id(state: &State) -> u64 {
    state.outcomes.last().map_or(0, |o| o.id)
}

fn agent_running(cfg: &Config) -> bool {
    doorbell_base::client::request(cfg.probe.listen, "GET", "/ready", Duration::from_secs(2)).is_ok()
}

/// `update apply FILE|URL [--force] [--no-wait]`.
pub fn apply(cfg: &Config, source: &str, force: bool, wait: bool) -> anyhow::Result<()> {
    let ctx = stage::Context::from_config(cfg).map_err(anyhow::Error::msg)?;
    let before = load_state(&ctx.layout).map(|s| last_id(&s)).unwrap_or(0);
    let tty = std::io::stderr().is_terminal();
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut progress = |p: Progress| match p {
        Progress::Downloading { got, total } => {
            if last_print.elapsed() >= Duration::from_millis(if tty { 100 } else { 1000 }) || Some(got) == total {
                last_print = Instant::now();
                let mib = |b: u64| b as f64 / 1048576.0;
                let line = match total {
                    Some(t) => format!("downloading {:.1} of {:.1} MiB ({:.0} %)", mib(got), mib(t), got as f64 * 100.0 / t.max(1) as f64),
                    None => format!("downloading {:.1} MiB", mib(got)),
                };
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
        }
        Progress::Verifying => eprintln!("{}verifying signature, version and payload", if tty { "\n" } else { "" }),
        Progress::Unpacking => eprintln!("decompressing and checking the binary"),
        Progress::Staging => eprintln!("staging"),
    };
    let options = StagedOptions { force, request_id: None };
    let staged = stage::stage(&ctx, &Source::parse(source), &options, &mut progress)
        .map_err(|r| anyhow::anyhow!("update refused ({}): {r}", r.code()))?;
    println!("staged {} (replacing {}) in {}", staged.manifest.version, staged.from_version, staged.dir.display());
    if !agent_running(cfg) {
        println!("the agent is not running: the update is installed at its next start (systemctl restart doorbell-agent)");
        return Ok(());
    }
    println!("the agent restarts now; doorbell-slotctl installs it into the inactive slot and starts its trial");
    follow(&ctx.layout, before, &staged.manifest.version, wait)
}

/// Follows the slot state until the update named `version` is on trial (and, with `wait`,
/// until its outcome), printing what happens.
fn follow(layout: &Layout, before: u64, version: &str, wait: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_line = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Ok(state) = State::load(&layout.state_file()) else { continue };
        if let Some(o) = state.outcomes.iter().rev().find(|o| o.id > before) {
            return report(o);
        }
        match &state.trial {
            Some(t) if t.version == version => {
                let line = state.summary();
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
                if !wait {
                    println!("follow it with `doorbell-agent update status`");
                    return Ok(());
                }
                let limit = Duration::from_secs(t.deadline_s) + HANDOVER;
                if start.elapsed() > limit {
                    bail!(
                        "no outcome after {}: see `doorbell-slotctl status` and `journalctl -u doorbell-agent`",
                        humantime::format_duration(limit)
                    );
                }
            }
            _ if start.elapsed() > HANDOVER => {
                bail!("the agent did not hand the update to doorbell-slotctl within {}s (journalctl -u doorbell-agent)", HANDOVER.as_secs())
            }
            _ => {}
        }
    }
}

fn report(o: &Outcome) -> anyhow::Result<()> {
    let line = format!("{}: {} (from {}), slot {}: {}", o.kind.as_str(), o.version, o.from_version, o.slot, o.reason);
    match o.kind {
        OutcomeKind::Successful | OutcomeKind::ManualRollback => {
            println!("{line}");
            Ok(())
        }
        _ => bail!("{line}"),
    }
}

/// `update rollback`: asks for a rollback (of the trial, or to the other slot).
pub fn rollback(cfg: &Config) -> anyhow::Result<()> {
    let layout = Layout::from_config(&cfg.update);
    let state = load_state(&layout)?;
    let reason = "operator rollback (doorbell-agent update rollback)";
    // The id lets slotctl refuse to apply this request twice (after a crash that kept the
    // file) and lets us find its outcome.
    let id = format!("local-{}", uuid::Uuid::new_v4().simple());
    super::request::request_rollback(&cfg.data_dir, &state, reason, Some(&id))
        .with_context(|| format!("writing the rollback request in {}", cfg.data_dir.display()))?;
    match &state.trial {
        Some(t) => println!("rollback of the trial of {} in slot {} requested", t.version, t.slot),
        None => println!("rollback from {} to the other slot requested", state.committed_version()),
    }
    if !agent_running(cfg) {
        println!("the agent is not running: the rollback happens at its next start (systemctl restart doorbell-agent)");
        return Ok(());
    }
    let start = Instant::now();
    while start.elapsed() < HANDOVER {
        std::thread::sleep(Duration::from_millis(250));
        let ours = |o: &doorbell_slotctl::Outcome| o.rollback_request_id.as_deref() == Some(id.as_str());
        if let Some(o) = State::load(&layout.state_file()).ok().and_then(|s| s.outcomes.into_iter().find(ours)) {
            return report(&o);
        }
    }
    bail!("no rollback within {} s (journalctl -u doorbell-agent)", HANDOVER.as_secs())
}

/// `update status [--json]`: the slot state, straight from the file (works with the agent down).
pub fn status(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let layout = Layout::from_config(&cfg.update);
    let state = load_state(&layout)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(());
    }
    println!("{}", state.summary());
    for slot in [doorbell_slotctl::Slot::A, doorbell_slotctl::Slot::B] {
        let mark = if slot == state.committed { " (committed)" } else { "" };
        match state.slot(slot) {
            Some(i) => println!("  slot {slot}{mark}: {} installed {}", i.version, doorbell_base::time::rfc3339(i.installed_ms)),
            None => println!("  slot {slot}{mark}: empty"),
        }
    }
    if let Some(t) = &state.trial {
        println!(
            "  trial: {} from {}, {} of {} tries left, deadline {} s after its start",
            t.version, t.from_version, t.tries_left, t.tries, t.deadline_s
        );
    }
    if let Some(o) = state.outcomes.last() {
        println!("  last: {} {} at {}: {}", o.kind.as_str(), o.version, doorbell_base::time::rfc3339(o.ts_ms), o.reason);
    }
    match doorbell_base::client::request(cfg.probe.listen, "GET", "/status", Duration::from_secs(2)) {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            println!(
                "  agent: running from slot {}, update {}",
                v["slot"].as_str().unwrap_or("-"),
                v["update"]["state"].as_str().unwrap_or("?")
            );
        }
        _ => println!("  agent: not answering on {}", cfg.probe.listen),
    }
    Ok(())
}

/// `update history [--limit N] [--json]`: from the running agent's store.
pub fn history(cfg: &Config, limit: usize, json: bool) -> anyhow::Result<()> {
    let (code, body) = doorbell_base::client::request(cfg.probe.listen, "GET", &format!("/updates?limit={limit}"), Duration::from_secs(3))
        .context("the history is kept in the agent's store: the agent must be running (`doorbell-slotctl status` shows the recent outcomes without it)")?;
    anyhow::ensure!(code == 200, "probe answered {code}: {body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).context("probe sent invalid JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no updates recorded");
    }
    for e in &list {
        let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        let trial = e["trial_ms"].as_u64().map(|ms| format!(", trial {:.0} s", ms as f64 / 1000.0)).unwrap_or_default();
        println!(
            "{}  {:<15} {} (from {}), slot {}{trial}: {}",
            s("ts"),
            s("outcome"),
            s("version"),
            s("from_version"),
            s("slot"),
            s("reason")
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
