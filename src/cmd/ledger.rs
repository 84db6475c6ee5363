//! The command ledger: the latest response of every recent command id, durably, so that a
//! repeated id is answered with its stored outcome and never executed twice, also across
//! restarts (and so that `restart` can report `successful` once the agent is back).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{decode, encode, Store, StoreError};

use super::{Response, Status};

/// The tree the ledger keeps its records in.
const TREE: &str = "commands";
/// Command ids remembered; the oldest are forgotten beyond this.
const KEEP: usize = 1000;
/// Largest response kept whole. A bigger `result` (an exported gallery, many log lines) is
/// replaced by a note: the ledger must stay small, and keeps no face descriptors.
const MAX_KEPT: usize = 16 * 1024;

/// Stored values of the `commands` tree. Append variants only.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum CommandRecord {
    /// The latest response of a command, first version.
    V1 {
        /// Insertion order, for pruning.
        seq: u64,
        /// Command name.
        name: String,
        /// Whether the command has finished.
        finished: bool,
        /// The response payload (JSON), re-published for repeated ids.
        response: String,
    },
    /// Second version: also whether the request came from the local control socket (its
    /// answers are never published over MQTT, also not after a restart).
    V2 {
        /// Insertion order, for pruning.
        seq: u64,
        /// Command name.
        name: String,
        /// Whether the command has finished.
        finished: bool,
        /// The response payload (JSON), answered for repeated ids.
        response: String,
        /// From the local control socket.
        local: bool,
    },
}

impl CommandRecord {
    fn seq(&self) -> u64 {
        match self {
            CommandRecord::V1 { seq, .. } | CommandRecord::V2 { seq, .. } => *seq,
        }
    }
}

/// What the ledger knows of an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Command name.
    pub name: String,
    /// Finished (successful or failed).
    pub finished: bool,
    /// The latest response payload.
    pub response: Value,
}

/// Durable record of recent command outcomes; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: Store,
    next_seq: std::sync::Arc<AtomicU64>,
}

impl Ledger {
    /// Opens the `commands` tree. Without a database (the disk refused it) nothing can be
    /// recorded, and the agent restarts once there is one: numbering starts from 1 meanwhile.
    pub fn open(store: &Store) -> Result<Ledger, StoreError> {
        let tree = match store.tree(TREE) {
            Ok(tree) => Some(tree),
            Err(StoreError::NotOpen) => None,
            Err(e) => return Err(e),
        };
        let last = tree
            .iter()
            .flat_map(|t| t.iter().values())
            .filter_map(|v| v.ok())
            .filter_map(|v| decode::<CommandRecord>(&v).ok())
            .map(|r| r.seq())
            .max()
            .unwrap_or(0);
        Ok(Ledger { store: store.clone(), next_seq: std::sync::Arc::new(AtomicU64::new(last + 1)) })
    }

    /// The `commands` tree, for one call.
    fn tree(&self) -> Result<sled::Tree, StoreError> {
        self.store.tree(TREE)
    }

    /// The latest response recorded for `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let bytes = self.tree().ok()?.get(id.as_bytes()).ok()??;
        // A record of a newer version (after a rollback) is unknown to us: treat the id as new.
        let (CommandRecord::V1 { name, finished, response, .. } | CommandRecord::V2 { name, finished, response, .. }) =
            decode(&bytes).ok()?;
        Some(Entry { name, finished, response: serde_json::from_str(&response).ok()? })
    }

    /// Records the latest response of a command durably; `local`: it came from the local
    /// control socket.
    pub fn record(&self, response: &Response, local: bool) -> Result<(), StoreError> {
        let Some(id) = &response.id else { return Ok(()) };
        let mut json = response.to_json();
        let mut text = json.to_string();
        if text.len() > MAX_KEPT {
            json["result"] = serde_json::json!({
                "omitted": format!("the result ({} bytes) is not kept for repeats; send the command again with a new id", text.len())
            });
            text = json.to_string();
        }
        let record = CommandRecord::V2 {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            name: response.name.clone(),
            finished: response.status.is_final(),
            response: text,
            local,
        };
        let tree = self.tree()?;
        let (written, key, value) = (tree.clone(), id.as_bytes().to_vec(), encode(&record));
        self.store.write(move || {
            written.insert(key, value)?;
            written.flush().map(drop)
        })?;
        if tree.len() > KEEP + KEEP / 10 {
            self.prune()?;
        }
        Ok(())
    }

    /// Commands that were accepted but never finished (the agent stopped meanwhile): id,
    /// name, and whether they came from the local control socket.
    pub fn unfinished(&self) -> Vec<(String, String, bool)> {
        let Ok(tree) = self.tree() else { return Vec::new() };
        tree.iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let (name, local) = match decode::<CommandRecord>(&v).ok()? {
                    CommandRecord::V1 { name, finished: false, .. } => (name, false),
                    CommandRecord::V2 { name, finished: false, local, .. } => (name, local),
                    CommandRecord::V1 { .. } | CommandRecord::V2 { .. } => return None,
                };
                Some((String::from_utf8_lossy(&k).into_owned(), name, local))
            })
            .collect()
    }

    fn prune(&self) -> Result<(), StoreError> {
        let tree = self.tree()?;
        let mut by_age: Vec<(u64, sled::IVec)> =
            tree.iter().filter_map(|kv| kv.ok()).filter_map(|(k, v)| decode::<CommandRecord>(&v).ok().map(|r| (r.seq(), k))).collect();
        by_age.sort_unstable_by_key(|(seq, _)| *seq);
        let excess = by_age.len().saturating_sub(KEEP);
        self.store.write_unflushed(|| {
            for (_, key) in by_age.into_iter().take(excess) {
                tree.remove(key)?;
            }
            Ok(())
        })
    }
}

impl Entry {
    /// The lifecycle step the entry is at.
    pub fn status(&self) -> Option<Status> {
        match self.response.get("status")?.as_str()? {
            "accepted" => Some(Status::Accepted),
            "executing" => Some(Status::Executing),
            "successful" => Some(Status::Successful),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::metrics::Metrics;

    #[test]
    fn outcomes_survive_a_reopen_and_old_ids_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path(), &StoreConfig::default(), std::sync::Arc::new(Metrics::default())).unwrap();
            let ledger = Ledger::open(&store).unwrap();
            ledger.record(&Response::new("a", "restart", Status::Executing), false).unwrap();
            ledger.record(&Response::new("b", "ping", Status::Successful), false).unwrap();
            ledger.record(&Response::new("c", "face/import", Status::Executing), true).unwrap();
        }
        let (store, _) = Store::open(dir.path(), &StoreConfig::default(), std::sync::Arc::new(Metrics::default())).unwrap();
        let ledger = Ledger::open(&store).unwrap();
        assert_eq!(ledger.get("b").unwrap().status(), Some(Status::Successful));
        let mut unfinished = ledger.unfinished();
        unfinished.sort();
        assert_eq!(unfinished, vec![("a".into(), "restart".into(), false), ("c".into(), "face/import".into(), true)]);
        for i in 0..KEEP + KEEP / 10 + 1 {
            ledger.record(&Response::new(&format!("x{i}"), "ping", Status::Successful), false).unwrap();
        }
        assert!(ledger.get("a").is_none(), "the oldest ids are pruned");
        assert!(ledger.get(&format!("x{}", KEEP + KEEP / 10)).is_some());
        assert!(ledger.tree().unwrap().len() <= KEEP + KEEP / 10);
    }

    #[test]
    fn a_large_result_is_kept_as_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default(), std::sync::Arc::new(Metrics::default())).unwrap();
        let ledger = Ledger::open(&store).unwrap();
        let mut big = Response::new("e", "face/export", Status::Successful);
        big.result = Some(serde_json::json!({"file": "A".repeat(MAX_KEPT)}));
        ledger.record(&big, true).unwrap();
        let kept = ledger.get("e").unwrap();
        assert_eq!(kept.status(), Some(Status::Successful));
        assert!(kept.response["result"]["omitted"].as_str().unwrap().contains("new id"), "{}", kept.response);
        assert!(kept.response.to_string().len() < 1024);
    }
}
