//! The privileged operations of `doorbell-slotctl`: the only code that writes the slot state
//! file and the `current`/`committed` links. It runs as root from systemd (ExecStartPre=+,
//! the OnFailure= rollback unit, the commit path unit, the trial deadline timer) and is never
//! replaced by an update, so the code that decides to roll back is never the code on trial.
//!
//! Every operation takes the state lock, reads the state, decides, writes the state durably,
//! and only then moves the links; a rerun after an interruption at any point converges on
//! the same result (the state file is the truth, the links follow it).
//!
//! The agent talks to it through files in its own state directory (`data_dir/update/`),
//! which slotctl treats as untrusted input: a staged artifact is verified again from its
//! signature down, and requests must name the trial they are about.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::settings::Settings;
use super::state::{LoadError, Outcome, OutcomeKind, SlotInfo, State, Trial};
use super::{Layout, Slot};
use doorbell_artifact::{self as artifact, compare_versions, Refusal};
use doorbell_base::durable;

/// The unit whose binary the slots hold.
pub const AGENT_UNIT: &str = "doorbell-agent.service";
/// The timer that checks the trial deadline while a trial runs.
pub const TRIAL_TIMER: &str = "doorbell-agent-trial.timer";
/// Free space kept beyond the binary when installing into a slot.
const SPACE_MARGIN: u64 = 1024 * 1024;

/// The files through which the agent hands work to slotctl (`data_dir/update/`).
#[derive(Debug, Clone)]
pub struct Requests {
    /// `data_dir/update`.
    pub dir: PathBuf,
}

impl Requests {
    /// The request directory of a data directory.
    pub fn new(data_dir: &Path) -> Requests {
        Requests { dir: data_dir.join("update") }
    }

    /// A verified artifact, unpacked and ready to install (appears atomically by rename).
    pub fn staged(&self) -> PathBuf {
        self.dir.join("staged")
    }

    /// The trial passed its checks: please commit it.
    pub fn commit(&self) -> PathBuf {
        self.dir.join("commit-request")
    }

    /// Please roll back (failed checks, or an operator's request).
    pub fn rollback(&self) -> PathBuf {
        self.dir.join("rollback-request")
    }
}

/// Files of a staged artifact.
pub mod staged {
    /// The decompressed agent binary.
    pub const BINARY: &str = "doorbell-agent";
    /// The manifest exactly as signed.
    pub const MANIFEST: &str = "manifest.json";
    /// The 64-byte signature.
    pub const SIGNATURE: &str = "manifest.sig";
    /// `StagedOptions` as JSON.
    pub const OPTIONS: &str = "options.json";
}

/// What the operator asked for with a staged artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedOptions {
    /// Allow a downgrade, a reinstall, or a binary that failed before.
    pub force: bool,
    /// Opaque id of the request (a fleet command's id), carried into the trial and its
    /// outcome so the reply can name it after the restart. slotctl is never updated, so it
    /// carries this already for the fleet link.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Longest request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The agent's request to commit its trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The trial's id (from the state file).
    pub trial_id: u64,
    /// The version that passed.
    pub version: String,
    /// How long it soaked, ms.
    pub soak_ms: u64,
    /// What the trial checks found (the canary's comparison), for the outcome's reason.
    /// Optional both ways: an older agent sends none, an older slotctl ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
}

/// A request to roll back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// Why, for the history.
    pub reason: String,
    /// The trial it is about (None: an operator's rollback to the other slot).
    pub trial_id: Option<u64>,
    /// Opaque id of the request (a fleet `rollback` command's id), recorded in the outcome.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// The slot controller.
#[derive(Debug, Clone)]
pub struct Ctl {
    /// Paths.
    pub layout: Layout,
    /// Settings from the agent's config.
    pub settings: Settings,
    /// Whether to drive systemd (start the trial timer, restart the agent after a deadline
    /// rollback). Off for tests on a plain directory tree.
    pub systemctl: bool,
}

/// Kernel boot id: a trial's monotonic start is only comparable within one boot.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// CLOCK_MONOTONIC in ms (a Pi has no RTC: wall time may jump at the first NTP sync).
pub fn mono_ms() -> u64 {
    // SAFETY: clock_gettime writes into the zeroed timespec we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Ctl {
    fn requests(&self) -> Requests {
        Requests::new(&self.settings.data_dir)
    }

    /// Takes the state lock (held until the returned file is dropped).
    fn lock(&self) -> io::Result<File> {
        fs::create_dir_all(&self.layout.state_dir)?;
        let file = File::options().create(true).truncate(false).write(true).open(self.layout.state_dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(file)
    }

    fn save(&self, state: &mut State) -> io::Result<()> {
        state.save(&self.layout.state_file())
    }

    /// Reads the state; a missing or unreadable one is rebuilt from the slots and the
    /// `committed` link (falling back to `current`), and written back.
    pub fn load(&self) -> io::Result<State> {
        let why = match State::load(&self.layout.state_file()) {
            Ok(s) => return Ok(s),
            Err(LoadError::Missing) => None,
            Err(e) => Some(e.to_string()),
        };
        let committed = Layout::link_slot(&self.layout.committed())
            .or_else(|| Layout::link_slot(&self.layout.current()))
            .or_else(|| [Slot::A, Slot::B].into_iter().find(|&s| self.layout.binary(s).exists()))
            .unwrap_or(Slot::A);
        let mut state = State::new(committed);
        for slot in [Slot::A, Slot::B] {
            state.set_slot(slot, self.describe_installed(slot));
        }
        if let Some(reason) = why {
            log::error!("{reason}: rebuilt it with slot {committed} committed (the last committed slot)");
            let id = state.take_id();
            let version = state.committed_version();
            state.record(Outcome {
                id,
                kind: OutcomeKind::StateRecovered,
                version: version.clone(),
                from_version: version,
                slot: committed,
                reason: format!("{reason}; fell back to the last committed slot {committed}"),
                ts_ms: doorbell_base::time::now_ms(),
                trial_ms: None,
                request_id: None,
                rollback_request_id: None,
            });
        } else {
            log::info!("no slot state yet: slot {committed} ({}) is the committed one", state.committed_version());
        }
        self.save(&mut state)?;
        Ok(state)
    }

    /// Describes a slot's binary as installed (used only when there is no state to trust).
    fn describe_installed(&self, slot: Slot) -> Option<SlotInfo> {
        let path = self.layout.binary(slot);
        let bytes = durable::read_limited(&path, self.settings.update.max_size()).ok()?;
        // The installer put this binary here; asking it its version is as trusted as running it.
        let version = Command::new(&path)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.split_whitespace().nth(1).map(String::from))
            .unwrap_or_else(|| "unknown".into());
        Some(SlotInfo {
            version,
            sha256: artifact::sha256_hex(&bytes),
            size: bytes.len() as u64,
            installed_ms: doorbell_base::time::now_ms(),
        })
    }

    /// Whether a slot's binary matches what the state recorded for it.
    fn verified(&self, state: &State, slot: Slot) -> Result<(), String> {
        let info = state.slot(slot).ok_or_else(|| format!("slot {slot} is empty"))?;
        let path = self.layout.binary(slot);
        let bytes = durable::read_bounded(&path, info.size).map_err(|e| format!("{}: {e}", path.display()))?;
        let got = artifact::sha256_hex(&bytes);
        if got != info.sha256 {
            return Err(format!("binary in slot {slot} does not match its recorded sha256 ({got} != {})", info.sha256));
        }
        Ok(())
    }

    /// Makes `current` (and `committed`) point where the state says.
    fn apply_links(&self, state: &State) -> io::Result<()> {
        for (link, slot) in [(self.layout.current(), state.expected()), (self.layout.committed(), state.committed)] {
            if Layout::link_slot(&link) != Some(slot) {
                durable::swap_symlink(&link, &Layout::relative(slot))?;
                log::info!("{} -> slots/{slot}", link.display());
            }
        }
        Ok(())
    }

    fn outcome(state: &mut State, kind: OutcomeKind, version: String, from_version: String, reason: String, trial: Option<&Trial>) {
        Ctl::outcome_for(state, kind, version, from_version, reason, trial, trial.and_then(|t| t.request_id.clone()));
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome_for(
        state: &mut State,
        kind: OutcomeKind,
        version: String,
        from_version: String,
        reason: String,
        trial: Option<&Trial>,
        request_id: Option<String>,
    ) {
        let now = doorbell_base::time::now_ms();
        let id = state.take_id();
        let slot = state.expected();
        let trial_ms = trial.map(|t| now.saturating_sub(t.armed_ms));
        let line = format!("update {}: {version} (from {from_version}): {reason}", kind.as_str());
        state.record(Outcome {
            id,
            kind,
            version,
            from_version,
            slot,
            reason,
            ts_ms: now,
            trial_ms,
            request_id,
            rollback_request_id: None,
        });
        match kind {
            OutcomeKind::Successful => log::info!("{line}"),
            OutcomeKind::BothSlotsBad | OutcomeKind::StateRecovered => log::error!("{line}"),
            _ => log::warn!("{line}"),
        }
    }

    /// Ends the trial in favour of the committed slot.
    fn roll_back_trial(&self, state: &mut State, reason: &str) -> io::Result<()> {
        self.roll_back_trial_for(state, reason, None)
    }

    /// Ends the trial; `requested_by` names the rollback request that asked for it.
    fn roll_back_trial_for(&self, state: &mut State, reason: &str, requested_by: Option<&str>) -> io::Result<()> {
        let Some(trial) = state.trial.take() else { return Ok(()) };
        if let Some(info) = state.slot(trial.slot).cloned() {
            state.mark_bad(&info.sha256);
        }
        let reason = format!("{reason}; back on slot {} ({})", state.committed, state.committed_version());
        Ctl::outcome(state, OutcomeKind::RolledBack, trial.version.clone(), trial.from_version.clone(), reason, Some(&trial));
        Ctl::requested_by(state, requested_by);
        self.save(state)?;
        self.apply_links(state)
    }

    /// Names the rollback request on the outcome just recorded (in the same state write).
    fn requested_by(state: &mut State, requested_by: Option<&str>) {
        if let (Some(id), Some(o)) = (requested_by, state.outcomes.last_mut()) {
            o.rollback_request_id = Some(id.to_string());
        }
    }

    /// Commits the trial.
    fn commit(&self, state: &mut State, req: &CommitRequest) -> io::Result<()> {
        let Some(trial) = state.trial.take() else { return Ok(()) };
        state.committed = trial.slot;
        let mut reason = format!("passed its checks and a {} s soak", req.soak_ms / 1000);
        if let Some(checks) = &req.checks {
            reason.push_str("; ");
            reason.push_str(checks);
        }
        Ctl::outcome(state, OutcomeKind::Successful, trial.version.clone(), trial.from_version.clone(), reason, Some(&trial));
        self.save(state)?;
        self.apply_links(state)
    }

    /// Reads a request file. It is removed (`done`) only after its effect is durable, so a
    /// crash in between re-reads it, and a request that no longer applies is then ignored.
    fn read_request<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
        match durable::read_bounded(path, 4096) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| log::warn!("{}: ignored ({e})", path.display())).ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("{}: ignored ({e})", path.display());
                None
            }
        }
    }

    /// Removes a handled (or unusable) request, whatever it held, so it cannot re-trigger
    /// the path unit forever.
    fn done(path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
        }
    }

    fn matches_trial(state: &State, req: &CommitRequest) -> bool {
        let ok = state.trial.as_ref().is_some_and(|t| t.id == req.trial_id && t.version == req.version);
        if !ok {
            log::warn!("commit request for trial {} ({}) ignored: {}", req.trial_id, req.version, state.summary());
        }
        ok
    }

    /// `ExecStartPre=+doorbell-slotctl pre-start`: runs before every start of the agent.
    /// Honours pending commit/rollback requests, counts down the trial's tries (rolling back
    /// when none are left or its deadline has passed), installs a staged artifact and arms
    /// its trial, and makes `current` point at a verified slot.
    pub fn pre_start(&self) -> io::Result<State> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let requests = self.requests();

        // A commit the path unit did not get to is still a commit: the agent passed its soak.
        if let Some(req) = Ctl::read_request::<CommitRequest>(&requests.commit()) {
            if Ctl::matches_trial(&state, &req) {
                self.commit(&mut state, &req)?;
            }
        }
        Ctl::done(&requests.commit());
        if let Some(req) = Ctl::read_request::<RollbackRequest>(&requests.rollback()) {
            self.handle_rollback_request(&mut state, &req)?;
        }
        Ctl::done(&requests.rollback());
        if let Some(trial) = state.trial.clone() {
            let elapsed = mono_ms().saturating_sub(trial.started_mono_ms);
            if trial.boot_id == boot_id() && elapsed >= trial.deadline_s * 1000 {
                self.roll_back_trial(&mut state, &format!("no commit within the {} s deadline", trial.deadline_s))?;
            } else if trial.tries_left == 0 {
                let how = if trial.failures.is_empty() { "power loss or kill".to_string() } else { trial.failures.join(", ") };
                let reason = format!("failed on all {} starts before committing ({how})", trial.tries);
                self.roll_back_trial(&mut state, &reason)?;
            } else if let Some(t) = state.trial.as_mut() {
                t.tries_left -= 1;
                if t.boot_id != boot_id() {
                    // A power cut: the deadline restarts with this boot's clock.
                    t.boot_id = boot_id();
                    t.started_mono_ms = mono_ms();
                }
                self.save(&mut state)?;
                log::info!("{}", state.summary());
            }
        }
        if requests.staged().exists() {
            self.install_staged(&mut state, &requests.staged())?;
        }
        self.ensure_verified(&mut state)?;
        self.apply_links(&state)?;
        if state.trial.is_some() {
            self.systemctl(&["start", "--no-block", TRIAL_TIMER]);
        }
        Ok(state)
    }

    fn handle_rollback_request(&self, state: &mut State, req: &RollbackRequest) -> io::Result<()> {
        let by = req.request_id.as_deref().filter(|r| r.len() <= MAX_REQUEST_ID);
        // A request whose outcome is already recorded was handled before a crash that kept
        // its file: doing it again would flip back to the slot it left.
        if by.is_some_and(|by| state.outcomes.iter().any(|o| o.rollback_request_id.as_deref() == Some(by))) {
            log::info!("rollback request {by:?} was already handled");
            return Ok(());
        }
        match (&state.trial, req.trial_id) {
            (Some(t), Some(id)) if t.id == id => self.roll_back_trial_for(state, &req.reason, by),
            (Some(_), None) => self.roll_back_trial_for(state, &req.reason, by),
            (None, None) => self.manual_rollback(state, &req.reason, by),
            _ => {
                log::warn!("rollback request for trial {:?} ignored: {}", req.trial_id, state.summary());
                Ok(())
            }
        }
    }

    /// Goes back to the other slot when no trial runs (an operator's rollback).
    fn manual_rollback(&self, state: &mut State, reason: &str, requested_by: Option<&str>) -> io::Result<()> {
        let other = state.committed.other();
        let from = state.committed_version();
        let refusal = match state.slot(other) {
            None => Some(format!("slot {other} is empty: nothing to roll back to")),
            Some(i) if state.bad.contains(&i.sha256) => Some(format!("slot {other} holds {} which failed its trial", i.version)),
            Some(_) => self.verified(state, other).err(),
        };
        if let Some(why) = refusal {
            Ctl::outcome(state, OutcomeKind::Refused, from.clone(), from, format!("rollback refused: {why}"), None);
            Ctl::requested_by(state, requested_by);
            return self.save(state);
        }
        state.committed = other;
        let version = state.committed_version();
        Ctl::outcome(state, OutcomeKind::ManualRollback, version, from, reason.to_string(), None);
        Ctl::requested_by(state, requested_by);
        self.save(state)?;
        self.apply_links(state)
    }

    /// Verifies and installs a staged artifact into the inactive slot and arms its trial;
    /// a refusal is recorded and changes nothing.
    fn install_staged(&self, state: &mut State, dir: &Path) -> io::Result<()> {
        let options: StagedOptions =
            durable::read_bounded(&dir.join(staged::OPTIONS), 4096).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let request_id = options.request_id.clone().filter(|r| r.len() <= MAX_REQUEST_ID);
        match self.check_staged(state, dir, options.force) {
            Ok(None) => log::info!("staged artifact already installed; removing it"),
            Ok(Some((manifest, binary))) => self.install(state, &manifest, &binary, request_id)?,
            Err((version, refusal)) => {
                let from = state.committed_version();
                Ctl::outcome_for(state, OutcomeKind::Refused, version, from, refusal.to_string(), None, request_id);
                self.save(state)?;
            }
        }
        // Removed only once the outcome is durable: a crash before this re-runs the check.
        if let Err(e) = fs::remove_dir_all(dir) {
            log::warn!("cannot remove {}: {e}", dir.display());
        }
        Ok(())
    }

    /// Everything that must hold before a slot is touched. `Ok(None)`: this very artifact is
    /// already the running trial (a rerun after a crash).
    #[allow(clippy::type_complexity)]
    fn check_staged(&self, state: &State, dir: &Path, force: bool) -> Result<Option<(artifact::Manifest, Vec<u8>)>, (String, Refusal)> {
        let unknown = |r: Refusal| ("unknown".to_string(), r);
        let read = |name: &str, max: u64| durable::read_bounded(&dir.join(name), max).map_err(|e| Refusal::io(format!("staged {name}"), e));
        let manifest_bytes = read(staged::MANIFEST, artifact::MAX_MANIFEST as u64).map_err(unknown)?;
        let signature: [u8; artifact::SIGNATURE_LEN] =
            read(staged::SIGNATURE, artifact::SIGNATURE_LEN as u64).map_err(unknown)?.try_into().map_err(|_| unknown(Refusal::Unsigned))?;
        let manifest = artifact::verify_manifest(&manifest_bytes, &signature, self.settings.key().as_ref()).map_err(unknown)?;
        let v = manifest.version.clone();
        let refuse = |r: Refusal| (v.clone(), r);
        if let Some(t) = &state.trial {
            if state.slot(t.slot).is_some_and(|i| i.sha256 == manifest.sha256) {
                return Ok(None);
            }
            return Err(refuse(Refusal::TrialRunning { version: t.version.clone(), slot: t.slot.to_string() }));
        }
        let max = self.settings.update.max_size();
        if manifest.size > max {
            return Err(refuse(Refusal::TooLarge { size: manifest.size, max }));
        }
        check_version(state, &manifest, force).map_err(refuse)?;
        let binary = read(staged::BINARY, manifest.size).map_err(refuse)?;
        artifact::check_binary(&manifest, &binary).map_err(refuse)?;
        let slots = self.layout.root.join("slots");
        let free = durable::free_space(&slots).map_err(|e| refuse(Refusal::io(slots.display(), e)))?;
        let need = manifest.size + SPACE_MARGIN;
        if free < need {
            return Err(refuse(Refusal::NoSpace { path: slots.display().to_string(), need, free }));
        }
        Ok(Some((manifest, binary)))
    }

    /// Writes the binary into the inactive slot and arms the trial, in an order where a
    /// crash at any point leaves `current` on a verified slot.
    fn install(&self, state: &mut State, manifest: &artifact::Manifest, binary: &[u8], request_id: Option<String>) -> io::Result<()> {
        let slot = state.committed.other();
        // 1. The slot is forgotten before its file is touched: nothing will trust it meanwhile.
        if state.slot(slot).is_some() {
            state.set_slot(slot, None);
            self.save(state)?;
        }
        // 2. The binary, durably.
        let dir = self.layout.slot_dir(slot);
        fs::create_dir_all(&dir)?;
        durable::write_file(&self.layout.binary(slot), binary, 0o755)?;
        // 3. Read back: the bytes on the card, not the ones in memory, are what will run.
        let written = fs::read(self.layout.binary(slot))?;
        if artifact::sha256_hex(&written) != manifest.sha256 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("slot {slot}: written binary does not read back intact")));
        }
        // 4. Slot contents and the trial, in one state write.
        let now = doorbell_base::time::now_ms();
        state.set_slot(
            slot,
            Some(SlotInfo { version: manifest.version.clone(), sha256: manifest.sha256.clone(), size: manifest.size, installed_ms: now }),
        );
        let tries = self.settings.update.tries;
        let id = state.take_id();
        state.trial = Some(Trial {
            id,
            slot,
            version: manifest.version.clone(),
            from_version: state.committed_version(),
            tries,
            // This start is the first try.
            tries_left: tries - 1,
            armed_ms: now,
            boot_id: boot_id(),
            started_mono_ms: mono_ms(),
            deadline_s: self.settings.update.deadline.as_secs(),
            failures: Vec::new(),
            request_id,
        });
        self.save(state)?;
        log::info!("installed {} into slot {slot}; {}", manifest.version, state.summary());
        // 5. `current` follows in apply_links.
        Ok(())
    }

    /// Makes sure the slot about to start holds the binary the state recorded.
    fn ensure_verified(&self, state: &mut State) -> io::Result<()> {
        if let Some(t) = state.trial.clone() {
            if let Err(why) = self.verified(state, t.slot) {
                self.roll_back_trial(state, &why)?;
            }
        }
        let committed = state.committed;
        if state.trial.is_none() {
            if let Err(why) = self.verified(state, committed) {
                let other = committed.other();
                let usable = state.slot(other).is_some_and(|i| !state.bad.contains(&i.sha256)) && self.verified(state, other).is_ok();
                let version = state.committed_version();
                if usable {
                    state.committed = other;
                    let to = state.committed_version();
                    Ctl::outcome(state, OutcomeKind::StateRecovered, to, version, format!("{why}; switched to slot {other}"), None);
                } else {
                    Ctl::outcome(state, OutcomeKind::BothSlotsBad, version.clone(), version, format!("{why}; no other usable slot"), None);
                }
                self.save(state)?;
            }
        }
        Ok(())
    }

    /// `doorbell-slotctl rollback`: ends a trial in favour of the committed slot. Without a
    /// trial, an operator's rollback (`on_failure` false) goes back to the other slot, while
    /// the OnFailure= path (the committed version itself failing) stays where it is and
    /// records it: rolling "back" to an unverified or failed slot would start a flip-flop.
    /// `retry_after`: how long the OnFailure= path waits before the unit starts the committed
    /// version again when there was nothing to roll back (no busy restart loop).
    pub fn rollback(&self, reason: &str, on_failure: bool, retry_after: Duration) -> io::Result<State> {
        let lock = self.lock()?;
        let mut state = self.load()?;
        if state.trial.is_some() {
            self.roll_back_trial(&mut state, reason)?;
        } else if !on_failure {
            self.manual_rollback(&mut state, reason, None)?;
        } else {
            // Right after a rollback, the version rolled back to failing as well means neither
            // slot works: said once, loudly. Otherwise the committed version is just failing.
            let version = state.committed_version();
            if state.outcomes.last().is_some_and(|o| o.kind == OutcomeKind::RolledBack) {
                let why = format!("the committed {version} fails too ({reason}) after the rollback; staying on slot {}", state.committed);
                Ctl::outcome(&mut state, OutcomeKind::BothSlotsBad, version.clone(), version.clone(), why, None);
                self.save(&mut state)?;
            } else {
                log::error!("the committed {version} in slot {} failed ({reason}); staying on it", state.committed);
            }
            self.apply_links(&state)?;
            drop(lock);
            log::warn!("starting the committed {version} again in {} s", retry_after.as_secs());
            std::thread::sleep(retry_after);
            return Ok(state);
        }
        self.apply_links(&state)?;
        Ok(state)
    }

    /// `doorbell-slotctl verify` (read-only): `current` must resolve to a complete slot whose
    /// binary matches the sha256 recorded for it (never one half-written or forgotten). Right
    /// after a rollback's state write and before its link swap, that may still be the slot
    /// just rolled back from: complete and verified, and pre-start repoints `current` before
    /// anything starts from it. Returns the state and that remark, if any.
    pub fn verify(&self) -> Result<(State, Option<String>), String> {
        let state = State::load(&self.layout.state_file()).map_err(|e| e.to_string())?;
        let current = Layout::link_slot(&self.layout.current())
            .ok_or_else(|| format!("{} does not point at a slot", self.layout.current().display()))?;
        self.verified(&state, current)?;
        let remark = (current != state.expected())
            .then(|| format!("current -> slot {current}, pre-start will point it at slot {} before the next start", state.expected()));
        Ok((state, remark))
    }

    /// `ExecStopPost=+doorbell-slotctl post-stop`: how the agent's run ended, from systemd's
    /// `SERVICE_RESULT`/`EXIT_CODE`/`EXIT_STATUS`. During a trial, a hang (start timeout or
    /// watchdog) rolls back at once: a retry would cost another full timeout while the
    /// doorbell is dead, whereas a crash costs only RestartSec and may be a one-off, so
    /// crashes use up tries (counted by pre-start). Power cuts never reach here; pre-start
    /// counts those too.
    pub fn post_stop(&self, result: &str, code: &str, status: &str) -> io::Result<State> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let running = Layout::link_slot(&self.layout.current());
        let Some(trial) = state.trial.as_mut().filter(|t| Some(t.slot) == running) else { return Ok(state) };
        let how = match (result, code, status) {
            ("success", _, _) => return Ok(state),
            ("timeout", _, _) => "hung before READY (start timeout)".to_string(),
            ("watchdog", _, _) => "hung after READY (watchdog timeout)".to_string(),
            (_, "killed" | "dumped", s) => format!("killed by signal {s}"),
            (_, "exited", s) => format!("exited with status {s}"),
            (r, c, s) => format!("{r} ({c} {s})"),
        };
        trial.failures.push(how.clone());
        if matches!(result, "timeout" | "watchdog") {
            self.roll_back_trial(&mut state, &how)?;
        } else {
            self.save(&mut state)?;
            log::warn!("trial run ended: {how}; {}", state.summary());
        }
        Ok(state)
    }

    /// `doorbell-slotctl mark-good`: commits the trial named by the agent's commit request,
    /// after asking the agent's probe for /health itself (the agent's word alone is not
    /// enough). The request is removed whatever happens.
    pub fn mark_good(&self) -> io::Result<State> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let path = self.requests().commit();
        let Some(req) = Ctl::read_request::<CommitRequest>(&path) else {
            Ctl::done(&path);
            log::info!("no commit request; {}", state.summary());
            return Ok(state);
        };
        if Ctl::matches_trial(&state, &req) {
            match self.probe_health(&state) {
                Ok(()) => self.commit(&mut state, &req)?,
                Err(why) => log::warn!("commit of trial {} refused: {why}; the agent asks again, the deadline still holds", req.trial_id),
            }
        }
        Ctl::done(&path);
        Ok(state)
    }

    /// Asks the running agent: /health 200 and /status naming the trial's slot.
    fn probe_health(&self, state: &State) -> Result<(), String> {
        let Some(trial) = &state.trial else { return Err("no trial".into()) };
        let timeout = Duration::from_secs(3);
        let (code, body) = doorbell_base::client::request(self.settings.probe, "GET", "/health", timeout).map_err(|e| e.to_string())?;
        if code != 200 {
            return Err(format!("/health answered {code}: {body}"));
        }
        let (_, status) = doorbell_base::client::request(self.settings.probe, "GET", "/status", timeout).map_err(|e| e.to_string())?;
        let slot = serde_json::from_str::<serde_json::Value>(&status).ok().and_then(|v| v["slot"].as_str().map(String::from));
        if slot.as_deref() != Some(trial.slot.as_str()) {
            return Err(format!("the agent answering runs from slot {slot:?}, the trial is in slot {}", trial.slot));
        }
        Ok(())
    }

    /// `doorbell-slotctl check-deadline` (the trial timer): commits a pending request, or rolls
    /// back a trial past its deadline and restarts the agent into the committed slot.
    pub fn check_deadline(&self) -> io::Result<State> {
        if self.requests().commit().exists() {
            self.mark_good()?;
        }
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let Some(trial) = state.trial.clone() else {
            self.systemctl(&["stop", "--no-block", TRIAL_TIMER]);
            return Ok(state);
        };
        let elapsed = mono_ms().saturating_sub(trial.started_mono_ms);
        if trial.boot_id == boot_id() && elapsed >= trial.deadline_s * 1000 {
            self.roll_back_trial(&mut state, &format!("no commit within the {} s deadline", trial.deadline_s))?;
            self.systemctl(&["restart", "--no-block", AGENT_UNIT]);
            self.systemctl(&["stop", "--no-block", TRIAL_TIMER]);
        }
        Ok(state)
    }

    fn systemctl(&self, args: &[&str]) {
        if !self.systemctl {
            return;
        }
        match Command::new("systemctl").args(args).status() {
            Ok(s) if s.success() => {}
            Ok(s) => log::warn!("systemctl {}: {s}", args.join(" ")),
            Err(e) => log::warn!("systemctl {}: {e}", args.join(" ")),
        }
    }
}

/// The version rules: no downgrade, no reinstall, no retry of a binary that failed here,
/// unless forced.
pub fn check_version(state: &State, manifest: &artifact::Manifest, force: bool) -> Result<(), Refusal> {
    if force {
        return Ok(());
    }
    if state.bad.contains(&manifest.sha256) {
        return Err(Refusal::KnownBad { version: manifest.version.clone(), sha256: manifest.sha256.clone() });
    }
    let committed = state.committed_version();
    match compare_versions(&manifest.version, &committed) {
        std::cmp::Ordering::Less => Err(Refusal::Downgrade { version: manifest.version.clone(), committed }),
        std::cmp::Ordering::Equal => Err(Refusal::AlreadyInstalled { version: manifest.version.clone() }),
        std::cmp::Ordering::Greater => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A layout in a temp dir with two distinct "agents" (copies of /bin/true), `current`
    /// and `committed` on `committed`, and a state recording both.
    fn setup(committed: Slot) -> (tempfile::TempDir, Ctl, State) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout { root: dir.path().join("opt"), state_dir: dir.path().join("slotctl") };
        let settings = Settings { data_dir: dir.path().join("data"), ..Default::default() };
        let ctl = Ctl { layout, settings, systemctl: false };
        let mut state = State::new(committed);
        for (slot, tail) in [(Slot::A, b"a".as_slice()), (Slot::B, b"b".as_slice())] {
            let mut bin = fs::read("/bin/true").unwrap();
            bin.extend_from_slice(tail);
            fs::create_dir_all(ctl.layout.slot_dir(slot)).unwrap();
            fs::write(ctl.layout.binary(slot), &bin).unwrap();
            let version = if slot == committed { "0.1.0" } else { "0.2.0" };
            state.set_slot(
                slot,
                Some(SlotInfo { version: version.into(), sha256: artifact::sha256_hex(&bin), size: bin.len() as u64, installed_ms: 0 }),
            );
        }
        symlink(Layout::relative(committed), ctl.layout.current()).unwrap();
        symlink(Layout::relative(committed), ctl.layout.committed()).unwrap();
        fs::create_dir_all(&ctl.layout.state_dir).unwrap();
        state.save(&ctl.layout.state_file()).unwrap();
        (dir, ctl, state)
    }

    fn arm(ctl: &Ctl, state: &mut State, tries_left: u32) {
        let id = state.take_id();
        state.trial = Some(Trial {
            id,
            slot: state.committed.other(),
            version: "0.2.0".into(),
            from_version: "0.1.0".into(),
            tries: 3,
            tries_left,
            armed_ms: 0,
            boot_id: boot_id(),
            started_mono_ms: mono_ms(),
            deadline_s: 600,
            failures: Vec::new(),
            request_id: None,
        });
        state.save(&ctl.layout.state_file()).unwrap();
        ctl.apply_links(state).unwrap();
    }

    #[test]
    fn unreadable_state_falls_back_to_the_committed_link() {
        let (_dir, ctl, _) = setup(Slot::B);
        // A trial had moved `current` to a; then the state file rotted.
        fs::remove_file(ctl.layout.current()).unwrap();
        symlink("slots/a", ctl.layout.current()).unwrap();
        fs::write(ctl.layout.state_file(), b"{\"sha256\":\"00\",\"state\":{}}").unwrap();
        let state = ctl.pre_start().unwrap();
        assert_eq!(state.committed, Slot::B);
        assert_eq!(state.outcomes.last().unwrap().kind, OutcomeKind::StateRecovered);
        assert_eq!(Layout::link_slot(&ctl.layout.current()), Some(Slot::B));
        assert_eq!(ctl.verify().unwrap().1, None);
    }

    #[test]
    fn tries_count_down_then_roll_back_and_remember_the_binary() {
        let (_dir, ctl, mut state) = setup(Slot::A);
        arm(&ctl, &mut state, 2);
        assert_eq!(ctl.pre_start().unwrap().trial.unwrap().tries_left, 1);
        assert_eq!(ctl.post_stop("exit-code", "killed", "ABRT").unwrap().trial.unwrap().failures, vec!["killed by signal ABRT"]);
        assert_eq!(ctl.pre_start().unwrap().trial.unwrap().tries_left, 0);
        let state = ctl.pre_start().unwrap();
        assert!(state.trial.is_none());
        let o = state.outcomes.last().unwrap();
        assert_eq!((o.kind, o.slot), (OutcomeKind::RolledBack, Slot::A));
        assert!(o.reason.contains("failed on all 3 starts"), "{}", o.reason);
        assert!(state.bad.contains(&state.slot(Slot::B).unwrap().sha256));
        assert_eq!(Layout::link_slot(&ctl.layout.current()), Some(Slot::A));
    }

    #[test]
    fn a_hang_rolls_back_at_once_a_clean_exit_does_not() {
        let (_dir, ctl, mut state) = setup(Slot::A);
        arm(&ctl, &mut state, 2);
        assert!(ctl.post_stop("success", "exited", "75").unwrap().trial.is_some());
        let state = ctl.post_stop("watchdog", "killed", "ABRT").unwrap();
        assert!(state.trial.is_none());
        assert!(state.outcomes.last().unwrap().reason.contains("watchdog"));
        assert_eq!(Layout::link_slot(&ctl.layout.current()), Some(Slot::A));
    }

    #[test]
    fn commit_request_must_name_the_trial_and_is_honoured_by_pre_start() {
        let (_dir, ctl, mut state) = setup(Slot::A);
        arm(&ctl, &mut state, 2);
        let id = state.trial.as_ref().unwrap().id;
        let requests = ctl.requests();
        fs::create_dir_all(&requests.dir).unwrap();
        let write = |trial_id| {
            let req = CommitRequest { trial_id, version: "0.2.0".into(), soak_ms: 1, checks: None };
            fs::write(requests.commit(), serde_json::to_vec(&req).unwrap()).unwrap();
        };
        write(id + 100);
        assert!(ctl.pre_start().unwrap().trial.is_some(), "a request for another trial is ignored");
        assert!(!requests.commit().exists(), "and removed");
        write(id);
        let state = ctl.pre_start().unwrap();
        assert_eq!((state.committed, state.trial.is_none()), (Slot::B, true));
        assert_eq!(Layout::link_slot(&ctl.layout.committed()), Some(Slot::B));
    }

    #[test]
    fn a_named_rollback_request_is_recorded_once_even_if_its_file_survives_a_crash() {
        let (_dir, ctl, state) = setup(Slot::A);
        let requests = ctl.requests();
        // As the agent's `update::request` writes it.
        let req = RollbackRequest {
            reason: "fleet rollback".into(),
            trial_id: state.trial.as_ref().map(|t| t.id),
            request_id: Some("r1".into()),
        };
        fs::create_dir_all(&requests.dir).unwrap();
        fs::write(requests.rollback(), serde_json::to_vec(&req).unwrap()).unwrap();
        let kept = fs::read(requests.rollback()).unwrap();
        let state = ctl.pre_start().unwrap();
        let o = state.outcomes.last().unwrap();
        assert_eq!((o.kind, o.rollback_request_id.as_deref(), state.committed), (OutcomeKind::ManualRollback, Some("r1"), Slot::B));
        // A crash between the state write and the request's removal: the file comes back.
        fs::write(requests.rollback(), kept).unwrap();
        let state = ctl.pre_start().unwrap();
        assert_eq!((state.committed, state.outcomes.len()), (Slot::B, 1), "not flipped back");
    }

    #[test]
    fn a_corrupted_trial_binary_is_never_started() {
        let (_dir, ctl, mut state) = setup(Slot::A);
        arm(&ctl, &mut state, 2);
        fs::write(ctl.layout.binary(Slot::B), b"bit rot").unwrap();
        let state = ctl.pre_start().unwrap();
        assert!(state.trial.is_none());
        assert_eq!(Layout::link_slot(&ctl.layout.current()), Some(Slot::A));
    }

    #[test]
    fn settings_skip_keys_of_newer_agents() {
        let dir = tempfile::tempdir().unwrap();
        let key = artifact::SecretKey::from_seed([9; 32]).public().to_base64();
        let path = dir.path().join("config.toml");
        fs::write(
            &path,
            format!("data_dir = \"/d\"\nnew_section_key = 1\n[update]\npublic_key = \"{key}\"\ntries = 2\nchannel = \"beta\"\n"),
        )
        .unwrap();
        let s = Settings::load(&path);
        assert_eq!((s.key().map(|k| k.to_base64()), s.data_dir, s.update.tries), (Some(key), PathBuf::from("/d"), 2));
    }
}
