//! Room to act when the disk fills: a reserve file set aside while there is space and given
//! back when the store cannot write for lack of it, so alerts, kept rings and the pruning
//! below can still be written; and the pass that keeps `store.min_free_mib` free by removing
//! kept snapshots, then the oldest rings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Store, StoreError};

/// The reserve's size: what reopening the database needs (sled writes a segment buffer at once).
pub const RESERVE_BYTES: u64 = 2 * 1024 * 1024;
/// Rings the space pass never removes: the newest ones, what an operator looks at first.
const KEEP_RINGS: usize = 100;
const MIB: u64 = 1024 * 1024;

/// `data_dir/store.reserve`: zeros written and fsynced, so its blocks are really taken.
pub struct Reserve {
    path: PathBuf,
    // Given back since the agent started: its return is worth a log line.
    released: AtomicBool,
}

impl Reserve {
    /// The reserve of the store under `data_dir` (not created yet).
    pub fn new(data_dir: &Path) -> Reserve {
        Reserve { path: data_dir.join("store.reserve"), released: AtomicBool::new(false) }
    }

    /// Whether the reserve is set aside.
    pub fn held(&self) -> bool {
        self.path.exists()
    }

    /// Sets the reserve aside when it is missing and `free` leaves `min_free` after it.
    fn restore(&self, free: u64, min_free: u64) {
        if self.held() || free < min_free.saturating_add(RESERVE_BYTES) {
            return;
        }
        match doorbell_base::durable::write_file(&self.path, &vec![0; RESERVE_BYTES as usize], 0o600) {
            Ok(()) if self.released.swap(false, Ordering::Relaxed) => {
                log::info!("store: {} MiB reserve set aside again on {}", RESERVE_BYTES / MIB, self.path.display());
            }
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_file(doorbell_base::durable::sibling(&self.path, ".tmp"));
                log::warn!("store: cannot set the reserve aside at {}: {e}", self.path.display());
            }
        }
    }

    /// Gives the reserve back; returns whether there was one.
    fn release(&self) -> bool {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                self.released.store(true, Ordering::Relaxed);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                log::warn!("store: cannot release the reserve {}: {e}", self.path.display());
                false
            }
        }
    }
}

/// What the space pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shed {
    /// Rings whose kept snapshots were removed.
    pub snapshots: usize,
    /// Bytes those snapshots took.
    pub snapshot_bytes: u64,
    /// Oldest rings removed.
    pub rings: usize,
}

impl Store {
    /// Free bytes where the store lives; `None` when the file system cannot say.
    pub(super) fn free(&self) -> Option<u64> {
        doorbell_base::durable::free_space(&self.data_dir).ok()
    }

    /// Below `store.min_free_mib`: how much is free, and whether the reserve is in use.
    pub(super) fn low_space(&self) -> Option<String> {
        let free = self.free().filter(|free| *free < self.limits.min_free_mib * MIB)?;
        let reserve = if self.reserve.held() { "" } else { ", reserve in use" };
        Some(format!(
            "{:.1} MiB free on {}, below store.min_free_mib = {}{reserve}",
            free as f64 / MIB as f64,
            self.data_dir.display(),
            self.limits.min_free_mib
        ))
    }

    /// Gives the reserve back when the disk is too full for the store to get going again;
    /// returns whether it did.
    pub(super) fn release_reserve_if_full(&self) -> bool {
        if self.free().is_some_and(|free| free >= RESERVE_BYTES) || !self.reserve.release() {
            return false;
        }
        log::warn!(
            "store: {} is full; released the {} MiB reserve so alerts, kept rings and pruning can be written",
            self.data_dir.display(),
            RESERVE_BYTES / MIB
        );
        true
    }

    /// Keeps `store.min_free_mib` free: below it, removes kept snapshots (oldest rings' first)
    /// until enough is free, then a quarter of the rings beyond the newest `KEEP_RINGS` per
    /// pass (sled reuses their pages, so the store stops growing into the last free space).
    /// With room again, sets the reserve aside. Says what it removed.
    pub fn keep_free(&self) -> Result<Shed, StoreError> {
        let min_free = self.limits.min_free_mib * MIB;
        let Some(mut free) = self.free() else { return Ok(Shed::default()) };
        let mut shed = Shed::default();
        while free < min_free {
            let dir_err = |source| StoreError::DataDir { path: self.data_dir.join("snapshots"), source };
            let Some(bytes) = crate::snapshots::shed_oldest(&self.data_dir).map_err(dir_err)? else { break };
            shed.snapshots += 1;
            shed.snapshot_bytes += bytes;
            free = self.free().unwrap_or(free);
        }
        if free < min_free {
            let rings = self.counts().0;
            shed.rings = self.remove_oldest_rings(rings.saturating_sub(KEEP_RINGS).div_ceil(4))?;
            if shed.rings > 0 {
                self.flush()?;
            }
        }
        if shed != Shed::default() {
            self.metrics.store_pruned.add(&["snapshots"], shed.snapshots as f64);
            self.metrics.store_pruned.add(&["rings"], shed.rings as f64);
            log::warn!(
                "store: {:.1} MiB free on {}, below store.min_free_mib = {}: removed the snapshots of {} rings ({:.1} MiB) and the {} oldest rings",
                free as f64 / MIB as f64,
                self.data_dir.display(),
                self.limits.min_free_mib,
                shed.snapshots,
                shed.snapshot_bytes as f64 / MIB as f64,
                shed.rings
            );
        }
        if self.write_error().is_none() {
            self.reserve.restore(self.free().unwrap_or(0), min_free);
        }
        Ok(shed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::tests::{open, ring};

    #[test]
    fn below_min_free_snapshots_go_first_then_a_quarter_of_the_old_rings_per_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), &StoreConfig { min_free_mib: 0, ..StoreConfig::default() });
        assert!(store.reserve.held(), "the reserve is set aside at open when there is room");
        assert_eq!(std::fs::metadata(dir.path().join("store.reserve")).unwrap().len(), RESERVE_BYTES);
        for seq in 1..=500 {
            store.put_ring(&ring(seq), &[]).unwrap();
        }
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir(&snaps).unwrap();
        for name in ["0000000000001-aaa-0.jpg", "0000000000001-aaa-1.jpg", "0000000000002-bbb-0.jpg"] {
            std::fs::write(snaps.join(name), [0u8; 100]).unwrap();
        }
        assert_eq!(store.keep_free().unwrap(), Shed::default(), "nothing goes while there is room");
        drop(store);

        // More asked for than the disk has: every snapshot goes, then the oldest rings.
        let free_mib = doorbell_base::durable::free_space(dir.path()).unwrap() / MIB;
        let (store, _) = open(dir.path(), &StoreConfig { min_free_mib: free_mib + 1024, ..StoreConfig::default() });
        assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 0, "snapshots are shed at open");
        let seqs: Vec<u64> = store.rings(1000).iter().map(|r| r.seq).collect();
        assert_eq!((seqs.len(), seqs.last().copied(), seqs.first().copied()), (400, Some(101), Some(500)));
        let shed = store.keep_free().unwrap();
        assert_eq!(shed, Shed { snapshots: 0, snapshot_bytes: 0, rings: 75 }, "a quarter of those beyond the newest 100");
        for _ in 0..20 {
            store.keep_free().unwrap();
        }
        assert_eq!(store.counts().0, KEEP_RINGS, "the newest rings stay");
        assert_eq!(store.rings(1).first().map(|r| r.seq), Some(500));
        let low = store.low_space().unwrap();
        assert!(low.contains(&format!("below store.min_free_mib = {}", free_mib + 1024)) && !low.contains("reserve in use"), "{low}");
        assert_eq!(store.metrics.store_pruned.get(&["snapshots"]), 2.0);
    }
}
