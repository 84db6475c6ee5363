//! The slot state file: which slot is committed, what each slot holds, the trial in
//! progress, and the recent outcomes the agent has yet to import.
//!
//! On disk: `{"sha256":"<hex of the state bytes>","state":{...}}`. The checksum covers the
//! exact bytes of `state`, so a torn or bit-rotted file is detected, never half-trusted.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Slot;
use doorbell_artifact::sha256_hex;

/// Outcomes kept in the state file (the agent keeps the long history in its store).
pub const OUTCOMES_KEPT: usize = 16;
/// Hashes of binaries that failed a trial, remembered so they are not retried by accident.
pub const BAD_KEPT: usize = 8;
/// The only state format this build writes and reads.
pub const FORMAT: u32 = 1;

/// What is installed in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// Agent version.
    pub version: String,
    /// sha256 of the binary (checked at every start).
    pub sha256: String,
    /// Binary size.
    pub size: u64,
    /// Installed at, Unix ms.
    pub installed_ms: u64,
}

/// A new version on trial: it must commit before its tries or its deadline run out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// Id; the agent's commit request must name it.
    pub id: u64,
    /// Slot on trial.
    pub slot: Slot,
    /// Version on trial.
    pub version: String,
    /// The committed version it would replace.
    pub from_version: String,
    /// Starts allowed in total.
    pub tries: u32,
    /// Starts left after the current one.
    pub tries_left: u32,
    /// Armed at, Unix ms (for humans; deadlines use the monotonic clock).
    pub armed_ms: u64,
    /// Kernel boot id when `started_mono_ms` was taken.
    pub boot_id: String,
    /// CLOCK_MONOTONIC (ms) at the trial's first start in this boot.
    pub started_mono_ms: u64,
    /// Seconds from `started_mono_ms` within which it must commit.
    pub deadline_s: u64,
    /// How each of its runs so far ended (from ExecStopPost), for the rollback reason.
    pub failures: Vec<String>,
    /// Who asked for it (`StagedOptions::request_id`).
    #[serde(default)]
    pub request_id: Option<String>,
}

/// How an update attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Committed after passing its trial.
    Successful,
    /// The trial failed; the previous slot runs again.
    RolledBack,
    /// An operator asked to go back to the other slot.
    ManualRollback,
    /// Not installed (bad artifact, trial running, ...); nothing changed.
    Refused,
    /// The committed slot fails too and the other one is not usable: staying on it.
    BothSlotsBad,
    /// The state file was unreadable or missing and was rebuilt from the slots.
    StateRecovered,
}

impl OutcomeKind {
    /// Name used in history, alerts and fleet replies.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Successful => "successful",
            OutcomeKind::RolledBack => "rolled_back",
            OutcomeKind::ManualRollback => "manual_rollback",
            OutcomeKind::Refused => "refused",
            OutcomeKind::BothSlotsBad => "both_slots_bad",
            OutcomeKind::StateRecovered => "state_recovered",
        }
    }
}

/// One recorded outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Increasing id (the agent imports outcomes it has not seen by id).
    pub id: u64,
    /// What happened.
    pub kind: OutcomeKind,
    /// The version the attempt was about.
    pub version: String,
    /// The version that was committed before.
    pub from_version: String,
    /// The slot now current.
    pub slot: Slot,
    /// Why, for humans.
    pub reason: String,
    /// When, Unix ms.
    pub ts_ms: u64,
    /// How long the trial ran (armed → outcome), ms.
    pub trial_ms: Option<u64>,
    /// Who asked for the update it is about (`StagedOptions::request_id`).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Who asked for the rollback it records (`RollbackRequest::request_id`), so that a
    /// fleet `rollback` command can be answered after the restart it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_request_id: Option<String>,
}

/// Both slots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    /// Slot A.
    pub a: Option<SlotInfo>,
    /// Slot B.
    pub b: Option<SlotInfo>,
}

/// The whole slot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// File format.
    pub format: u32,
    /// Incremented by every write.
    pub seq: u64,
    /// The last committed slot.
    pub committed: Slot,
    /// What each slot holds (None: empty or being written).
    pub slots: Slots,
    /// The trial in progress.
    pub trial: Option<Trial>,
    /// sha256 of binaries that failed a trial, newest last.
    pub bad: Vec<String>,
    /// Recent outcomes, oldest first.
    pub outcomes: Vec<Outcome>,
    /// Id of the next outcome or trial.
    pub next_id: u64,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// There is none (first start after installation).
    #[error("no state file")]
    Missing,
    /// It exists but cannot be trusted.
    #[error("state file unreadable: {0}")]
    Unreadable(String),
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    sha256: String,
    #[serde(borrow)]
    state: &'a RawValue,
}

impl State {
    /// A fresh state with one committed slot.
    pub fn new(committed: Slot) -> State {
        State { format: FORMAT, seq: 0, committed, slots: Slots::default(), trial: None, bad: Vec::new(), outcomes: Vec::new(), next_id: 1 }
    }

    /// What a slot holds.
    pub fn slot(&self, slot: Slot) -> Option<&SlotInfo> {
        match slot {
            Slot::A => self.slots.a.as_ref(),
            Slot::B => self.slots.b.as_ref(),
        }
    }

    /// Sets what a slot holds.
    pub fn set_slot(&mut self, slot: Slot, info: Option<SlotInfo>) {
        match slot {
            Slot::A => self.slots.a = info,
            Slot::B => self.slots.b = info,
        }
    }

    /// The version committed, or `unknown`.
    pub fn committed_version(&self) -> String {
        self.slot(self.committed).map_or_else(|| "unknown".into(), |i| i.version.clone())
    }

    /// The slot `current` must point at: the trial's while one runs, else the committed one.
    pub fn expected(&self) -> Slot {
        self.trial.as_ref().map_or(self.committed, |t| t.slot)
    }

    /// Takes the next id.
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records an outcome (bounded).
    pub fn record(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
        let excess = self.outcomes.len().saturating_sub(OUTCOMES_KEPT);
        self.outcomes.drain(..excess);
    }

    /// Remembers a binary that failed a trial (bounded).
    pub fn mark_bad(&mut self, sha256: &str) {
        if !self.bad.iter().any(|b| b == sha256) {
            self.bad.push(sha256.to_string());
        }
        let excess = self.bad.len().saturating_sub(BAD_KEPT);
        self.bad.drain(..excess);
    }

    /// The file content: the state with its checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data cannot fail.
        let state = serde_json::to_string(self).unwrap_or_default();
        let mut out = format!("{{\"sha256\":\"{}\",\"state\":{state}}}", sha256_hex(state.as_bytes())).into_bytes();
        out.push(b'\n');
        out
    }

    /// Parses and checks file content.
    pub fn from_bytes(bytes: &[u8]) -> Result<State, LoadError> {
        let bad = |r: String| LoadError::Unreadable(r);
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a state envelope: {e}")))?;
        let got = sha256_hex(env.state.get().as_bytes());
        if got != env.sha256 {
            return Err(bad(format!("checksum mismatch (recorded {}, content {got})", env.sha256)));
        }
        let state: State = serde_json::from_str(env.state.get()).map_err(|e| bad(format!("bad state: {e}")))?;
        if state.format != FORMAT {
            return Err(bad(format!("state format {} (this build reads {FORMAT})", state.format)));
        }
        Ok(state)
    }

    /// Reads the state file.
    pub fn load(path: &Path) -> Result<State, LoadError> {
        match doorbell_base::durable::read_bounded(path, 1 << 20) {
            Ok(bytes) => State::from_bytes(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LoadError::Missing),
            Err(e) => Err(LoadError::Unreadable(e.to_string())),
        }
    }

    /// Writes the state file durably (temp + fsync + rename + directory fsync).
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        self.seq += 1;
        doorbell_base::durable::write_file(path, &self.to_bytes(), 0o644)
    }

    /// The `STATUS=`-style one-liner of the update state.
    pub fn summary(&self) -> String {
        match &self.trial {
            Some(t) => {
                format!("trial {} in slot {}, {} {} left", t.version, t.slot, t.tries_left, if t.tries_left == 1 { "try" } else { "tries" })
            }
            None => format!("{} committed in slot {}", self.committed_version(), self.committed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_catches_any_change() {
        let mut s = State::new(Slot::A);
        s.set_slot(Slot::A, Some(SlotInfo { version: "0.1.0".into(), sha256: "00".into(), size: 1, installed_ms: 1 }));
        let bytes = s.to_bytes();
        assert_eq!(State::from_bytes(&bytes).unwrap(), s);
        let text = String::from_utf8(bytes).unwrap().replace("0.1.0", "0.1.1");
        assert!(matches!(State::from_bytes(text.as_bytes()), Err(LoadError::Unreadable(_))));
        assert!(matches!(State::from_bytes(b"{\"sha256\":\"x\""), Err(LoadError::Unreadable(_))));
    }

    #[test]
    fn outcomes_and_bad_list_are_bounded() {
        let mut s = State::new(Slot::A);
        for i in 0..40 {
            let id = s.take_id();
            s.record(Outcome {
                id,
                kind: OutcomeKind::Refused,
                version: "1.0.0".into(),
                from_version: "0.1.0".into(),
                slot: Slot::A,
                reason: "r".into(),
                ts_ms: i,
                trial_ms: None,
                request_id: None,
                rollback_request_id: None,
            });
            s.mark_bad(&format!("{i}"));
        }
        assert_eq!(s.outcomes.len(), OUTCOMES_KEPT);
        assert_eq!(s.outcomes.last().unwrap().id, 40);
        assert_eq!(s.bad.len(), BAD_KEPT);
    }
}
