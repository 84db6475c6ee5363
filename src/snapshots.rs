//! Frames of unknown and blocked visitors, kept on the device only when `snapshots.keep`
//! is set, bounded by ring count and bytes (oldest rings removed first). They are what a
//! later enrollment "from ring" reads; nothing here is ever sent anywhere. When the disk
//! runs low, the store's space pass removes them before any ring (`shed_oldest`).

use std::io;
use std::path::{Path, PathBuf};

use crate::config::SnapshotsConfig;

/// The snapshot directory (`data_dir/snapshots`).
pub struct Snapshots {
    dir: PathBuf,
    max_rings: usize,
    max_bytes: u64,
}

struct Kept {
    path: PathBuf,
    ring: String,
    bytes: u64,
}

impl Snapshots {
    /// Snapshots under `data_dir`, or `None` when they are not to be kept.
    pub fn new(cfg: &SnapshotsConfig, data_dir: &Path) -> Option<Snapshots> {
        cfg.keep.then(|| Snapshots { dir: dir_of(data_dir), max_rings: cfg.max_rings, max_bytes: cfg.max_mib * 1024 * 1024 })
    }

    /// Writes a ring's frames (temp + rename), then prunes to the bounds. Returns the
    /// (rings, bytes) kept afterwards.
    pub fn keep(&self, ring_id: &str, ts_ms: u64, frames: &[Vec<u8>]) -> io::Result<(usize, u64)> {
        std::fs::create_dir_all(&self.dir)?;
        for (i, jpeg) in frames.iter().enumerate() {
            let name = format!("{ts_ms:013}-{ring_id}-{i}.jpg");
            let tmp = self.dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, jpeg)?;
            std::fs::rename(&tmp, self.dir.join(name))?;
        }
        self.prune()
    }

    /// The kept frames of `ring_id`, in capture order.
    pub fn frames_of(&self, ring_id: &str) -> io::Result<Vec<Vec<u8>>> {
        list(&self.dir)?.into_iter().filter(|k| k.ring == ring_id).map(|k| std::fs::read(k.path)).collect()
    }

    fn prune(&self) -> io::Result<(usize, u64)> {
        let mut kept = list(&self.dir)?;
        loop {
            let mut rings: Vec<&str> = kept.iter().map(|k| k.ring.as_str()).collect();
            rings.dedup();
            let bytes: u64 = kept.iter().map(|k| k.bytes).sum();
            if (rings.len() <= self.max_rings && bytes <= self.max_bytes) || rings.is_empty() {
                return Ok((rings.len(), bytes));
            }
            let oldest = rings[0].to_string();
            remove_ring(&mut kept, &oldest)?;
        }
    }
}

/// Removes the frames of the oldest ring kept under `data_dir`; returns the bytes freed, or
/// `None` when there are none.
pub fn shed_oldest(data_dir: &Path) -> io::Result<Option<u64>> {
    let mut kept = list(&dir_of(data_dir))?;
    let Some(oldest) = kept.first().map(|k| k.ring.clone()) else { return Ok(None) };
    remove_ring(&mut kept, &oldest).map(Some)
}

fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Removes one ring's frames, from disk and from `kept`; returns their bytes.
fn remove_ring(kept: &mut Vec<Kept>, ring: &str) -> io::Result<u64> {
    let mut bytes = 0;
    for k in kept.iter().filter(|k| k.ring == ring) {
        std::fs::remove_file(&k.path)?;
        bytes += k.bytes;
    }
    kept.retain(|k| k.ring != ring);
    Ok(bytes)
}

/// The frames kept in `dir`, oldest first.
fn list(dir: &Path) -> io::Result<Vec<Kept>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut kept: Vec<Kept> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ring = name.strip_suffix(".jpg")?.split('-').nth(1)?.to_string();
            Some(Kept { bytes: e.metadata().ok()?.len(), path: e.path(), ring })
        })
        .collect();
    // Names start with the zero-padded time: name order is age order.
    kept.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_rings_and_bytes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::new(&SnapshotsConfig { keep: true, max_rings: 2, max_mib: 1 }, dir.path()).unwrap();
        s.keep("aaa", 1, &[vec![1; 10], vec![2; 10]]).unwrap();
        s.keep("bbb", 2, &[vec![3; 10]]).unwrap();
        assert_eq!(s.keep("ccc", 3, &[vec![4; 10]]).unwrap(), (2, 20));
        assert!(s.frames_of("aaa").unwrap().is_empty(), "oldest ring pruned");
        assert_eq!(s.frames_of("bbb").unwrap(), vec![vec![3; 10]]);
        assert_eq!(s.keep("ddd", 4, &[vec![5; 1024 * 1024]]).unwrap(), (1, 1024 * 1024), "byte bound");
        assert!(Snapshots::new(&SnapshotsConfig::default(), dir.path()).is_none(), "off by default");
        assert_eq!(shed_oldest(dir.path()).unwrap(), Some(1024 * 1024), "the space pass sheds ring ddd");
        assert_eq!(shed_oldest(dir.path()).unwrap(), None);
    }
}
