//! doorbell-slotctl: A/B slots. The on-disk layout, the slot state file (`state`), what
//! slotctl reads of the agent's configuration (`settings`, with the `[update]` section it
//! owns), the request files and the privileged operations (`ctl`; the binary is
//! `src/main.rs`, the only writer of the slots and the state). The agent links this library
//! too, but only reads the layout and the state, and writes requests.
//!
//! ```text
//! /opt/doorbell-agent/slots/a/doorbell-agent     slot A
//! /opt/doorbell-agent/slots/b/doorbell-agent     slot B
//! /opt/doorbell-agent/current -> slots/a         what the unit starts (ExecStart)
//! /opt/doorbell-agent/committed -> slots/a       last committed slot (fallback for a lost state file)
//! /var/lib/doorbell-slotctl/state.json           slot state (JSON + sha256), root-owned
//! ```

pub mod ctl;
pub mod settings;
pub mod state;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use state::{Outcome, OutcomeKind, SlotInfo, State, Trial};

/// Default install root.
pub const INSTALL_ROOT: &str = "/opt/doorbell-agent";
/// Default directory of the slot state file (root-owned, outside the agent's state dir).
pub const STATE_DIR: &str = "/var/lib/doorbell-slotctl";
/// File name of the agent binary inside a slot.
pub const BINARY: &str = "doorbell-agent";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` or `b`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// Parses `a` or `b`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the slots, the links and the state file live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Install root (`/opt/doorbell-agent`).
    pub root: PathBuf,
    /// Directory of the slot state file (`/var/lib/doorbell-slotctl`).
    pub state_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { root: PathBuf::from(INSTALL_ROOT), state_dir: PathBuf::from(STATE_DIR) }
    }
}

impl Layout {
    /// The layout the agent's configuration names (`update.install_root`, `update.slot_state_dir`).
    pub fn from_config(update: &settings::UpdateConfig) -> Layout {
        Layout { root: update.install_root.clone(), state_dir: update.slot_state_dir.clone() }
    }

    /// `slots/<slot>` relative to the root: the target of the links.
    pub fn relative(slot: Slot) -> PathBuf {
        Path::new("slots").join(slot.as_str())
    }

    /// The directory of a slot.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join(Layout::relative(slot))
    }

    /// The agent binary of a slot.
    pub fn binary(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join(BINARY)
    }

    /// The `current` symlink.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The `committed` symlink.
    pub fn committed(&self) -> PathBuf {
        self.root.join("committed")
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The slot a link points at, if it points at one.
    pub fn link_slot(link: &Path) -> Option<Slot> {
        let target = std::fs::read_link(link).ok()?;
        let mut parts = target.components().rev();
        let name = parts.next()?.as_os_str().to_str()?;
        (parts.next()?.as_os_str() == "slots").then_some(())?;
        Slot::parse(name)
    }

    /// The slot an executable path lies in (`<root>/slots/<x>/doorbell-agent`), if any.
    pub fn slot_of(&self, exe: &Path) -> Option<Slot> {
        [Slot::A, Slot::B].into_iter().find(|&s| exe == self.binary(s))
    }
}

/// The slot the running process was started from (None outside the A/B layout, e.g. on a
/// laptop or in `cargo run`).
pub fn running_slot(layout: &Layout) -> Option<Slot> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    layout.slot_of(&exe).or_else(|| {
        // The root itself may be reached through a symlink (e.g. /opt on another disk).
        let root = std::fs::canonicalize(&layout.root).ok()?;
        Layout { root, state_dir: layout.state_dir.clone() }.slot_of(&exe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_slot_reads_relative_links() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout { root: dir.path().into(), state_dir: dir.path().into() };
        std::os::unix::fs::symlink("slots/b", l.current()).unwrap();
        assert_eq!(Layout::link_slot(&l.current()), Some(Slot::B));
        assert_eq!(Layout::link_slot(&l.committed()), None);
        assert_eq!(l.slot_of(&l.binary(Slot::A)), Some(Slot::A));
    }
}
