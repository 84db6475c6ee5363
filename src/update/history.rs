//! The update history, kept bounded in the store's own `updates` tree. Outcomes decided by
//! slotctl (commit, rollback, refusal at install) reach it when the agent next starts and
//! imports the state file's recent outcomes by id; outcomes decided in the agent (refusals
//! at staging) are recorded directly.

use serde::{Deserialize, Serialize};

use crate::store::{decode, encode, Store, StoreError};
use doorbell_slotctl::{Outcome, State};

/// Entries kept; the oldest go first.
pub const KEPT: usize = 200;
const TREE: &str = "updates";
const IMPORTED: &[u8] = b"imported";

/// Every value of the `updates` tree. Append variants only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UpdateRecord {
    /// One update outcome.
    EntryV1(EntryV1),
    /// Id of the newest slotctl outcome already imported.
    ImportedV1(u64),
}

/// One update outcome as stored (version 1; frozen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryV1 {
    /// `successful`, `rolled_back`, `manual_rollback`, `refused`, `both_slots_bad`, `state_recovered`.
    pub outcome: String,
    /// The version the attempt was about.
    pub version: String,
    /// The version committed before it.
    pub from_version: String,
    /// The slot current after it.
    pub slot: String,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub ts_ms: u64,
    /// Trial duration, ms.
    pub trial_ms: Option<u64>,
    /// Who decided: `slotctl` or `agent`.
    pub decided_by: String,
    /// The request (fleet command) it answers, if any.
    pub request_id: Option<String>,
}

impl EntryV1 {
    /// From a slotctl outcome.
    pub fn from_outcome(o: &Outcome) -> EntryV1 {
        EntryV1 {
            outcome: o.kind.as_str().into(),
            version: o.version.clone(),
            from_version: o.from_version.clone(),
            slot: o.slot.to_string(),
            reason: o.reason.clone(),
            ts_ms: o.ts_ms,
            trial_ms: o.trial_ms,
            decided_by: "slotctl".into(),
            request_id: o.request_id.clone(),
        }
    }

    /// JSON for /updates and the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "outcome": self.outcome,
            "version": self.version,
            "from_version": self.from_version,
            "slot": self.slot,
            "reason": self.reason,
            "ts": doorbell_base::time::rfc3339(self.ts_ms),
            "trial_ms": self.trial_ms,
            "decided_by": self.decided_by,
            "request_id": self.request_id,
        })
    }
}

/// Handle on the history tree.
#[derive(Clone)]
pub struct History {
    store: Store,
}

impl History {
    /// Opens the `updates` tree (later, when the disk refused the database at the start).
    pub fn open(store: &Store) -> Result<History, StoreError> {
        match store.tree(TREE) {
            Ok(_) | Err(StoreError::NotOpen) => Ok(History { store: store.clone() }),
            Err(e) => Err(e),
        }
    }

    /// The history tree, for one call.
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        self.store.tree(TREE)
    }

    /// Appends an entry durably, dropping the oldest beyond `KEPT`.
    pub fn record(&self, entry: &EntryV1) -> Result<(), StoreError> {
        let (tree, record) = (self.tree()?, encode(&UpdateRecord::EntryV1(entry.clone())));
        self.store.write(move || {
            let next = Self::entries_keys(&tree).last().map_or(1, |k| k + 1);
            tree.insert(next.to_be_bytes(), record)?;
            let keys = Self::entries_keys(&tree);
            for k in keys.iter().take(keys.len().saturating_sub(KEPT)) {
                tree.remove(k.to_be_bytes())?;
            }
            tree.flush().map(drop)
        })
    }

    fn entries_keys(tree: &sled::Tree) -> Vec<u64> {
        tree.iter()
            .keys()
            .filter_map(|k| k.ok())
            // The import marker's key is 8 bytes long too: it is not an entry.
            .filter(|k| k.as_ref() != IMPORTED)
            .filter_map(|k| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(u64::from_be_bytes)
            .collect()
    }

    /// Newest first.
    pub fn list(&self, limit: usize) -> Vec<EntryV1> {
        let Ok(tree) = self.tree() else { return Vec::new() };
        tree.iter()
            .rev()
            .filter_map(|kv| kv.ok())
            .filter(|(k, _)| k.len() == 8)
            .filter_map(|(_, v)| match decode::<UpdateRecord>(&v) {
                Ok(UpdateRecord::EntryV1(e)) => Some(e),
                // A newer version's entry after a rollback: skipped, kept.
                _ => None,
            })
            .take(limit)
            .collect()
    }

    /// Records the slotctl outcomes not imported yet; returns them (for alerts), oldest first.
    pub fn import(&self, state: &State) -> Result<Vec<Outcome>, StoreError> {
        let tree = self.tree()?;
        let done = match tree.get(IMPORTED).ok().flatten().map(|v| decode::<UpdateRecord>(&v)) {
            Some(Ok(UpdateRecord::ImportedV1(id))) => id,
            _ => 0,
        };
        let new: Vec<Outcome> = state.outcomes.iter().filter(|o| o.id > done).cloned().collect();
        for o in &new {
            self.record(&EntryV1::from_outcome(o))?;
            let (tree, marker) = (tree.clone(), encode(&UpdateRecord::ImportedV1(o.id)));
            self.store.write(move || {
                tree.insert(IMPORTED, marker)?;
                tree.flush().map(drop)
            })?;
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorbell_slotctl::{OutcomeKind, Slot};
    use std::sync::Arc;

    #[test]
    fn import_is_once_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &Default::default(), Arc::new(Default::default())).unwrap();
        let h = History::open(&store).unwrap();
        let mut state = State::new(Slot::A);
        let outcome = |id| Outcome {
            id,
            kind: OutcomeKind::RolledBack,
            version: "0.2.0".into(),
            from_version: "0.1.0".into(),
            slot: Slot::A,
            reason: "crash".into(),
            ts_ms: 1,
            trial_ms: Some(5),
            request_id: None,
            rollback_request_id: None,
        };
        state.record(outcome(1));
        assert_eq!(h.import(&state).unwrap().len(), 1);
        assert_eq!(h.import(&state).unwrap().len(), 0);
        state.record(outcome(2));
        assert_eq!(h.import(&state).unwrap().len(), 1);
        for _ in 0..KEPT + 5 {
            h.record(&EntryV1::from_outcome(&outcome(9))).unwrap();
        }
        assert_eq!(h.list(1000).len(), KEPT);
        assert_eq!(h.import(&state).unwrap().len(), 0, "pruning never drops the import marker");
        assert_eq!(h.list(3)[0].outcome, "rolled_back");
    }
}
