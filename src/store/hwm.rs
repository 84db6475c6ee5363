//! The store's high-water mark: a small file beside the database that remembers the highest
//! ring sequence number the store reported stored and the highest one ever handed out, so
//! that a database which comes back from a power cut or a damaged card with less than it had
//! acknowledged is noticed (never silently accepted), and a sequence number is never reused.
//!
//! Two 64-byte slots at fixed offsets, each with a generation and a CRC, written in turn in
//! place: a torn write spoils at most the slot being written, and writing in place needs no
//! new blocks (they are written once, at creation), so it still works on a full disk.
//!
//! The issued mark on disk is a lease: it runs `LEASE` numbers ahead of the highest one
//! handed out, and is extended (synced) before a number beyond it is used, so that numbers
//! announced from memory by a store that then could write nothing at all, not even this
//! file, are never handed out again after a crash; a clean stop (`settle`) writes the exact
//! number, so only a crash or a power cut skips numbers (at most `LEASE`). The stored mark is
//! synced off the ring's path, within `store::MARK_SYNC_DELAY` (one sync for a burst of
//! rings): a stored mark left in the page cache would lag after a power cut and hide the
//! very loss it is there to show.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const MAGIC: &[u8; 4] = b"DBHW";
const VERSION: u32 = 1;
const SLOT: usize = 64;
/// Where the two slots start: apart, so that they never share a disk sector.
const OFFSETS: [u64; 2] = [0, 512];
const FILE_LEN: u64 = 1024;

/// What the mark says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// The highest ring sequence number the store reported stored (flushed).
    pub stored: u64,
    /// The highest ring sequence number handed out (stored, or announced from memory).
    pub issued: u64,
}

/// The open mark file.
pub struct HighWater {
    // `Err`: read only, from a disk that refused it at the start, and why (see `read_only`).
    file: Result<File, String>,
    generation: u64,
    // The highest numbers stored and handed out by this opening (from the file at open).
    marks: Marks,
    // What the newest slot holds: the stored mark and the lease.
    written: Marks,
    // What the last sync made durable.
    synced: Marks,
}

/// Numbers the issued mark runs ahead of those handed out.
pub const LEASE: u64 = 100;

impl HighWater {
    /// Opens (or creates) the mark file; returns what it held, `None` when it is new or
    /// neither slot is readable (nothing to compare with).
    pub fn open(path: &Path) -> io::Result<(HighWater, Option<Marks>)> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        let best = newest(&file);
        if file.metadata()?.len() < FILE_LEN {
            // Written once, up front (not `set_len`, which leaves a hole): later writes only
            // overwrite these blocks, and need none from a full disk.
            let len = file.metadata()?.len();
            file.write_all_at(&vec![0; (FILE_LEN - len) as usize], len)?;
            file.sync_all()?;
            doorbell_base::durable::sync_parent(path)?;
        }
        let (generation, marks) = best.unwrap_or_default();
        Ok((HighWater { file: Ok(file), generation, marks, written: marks, synced: marks }, best.map(|(_, m)| m)))
    }

    /// The marks as the file holds them, for a store that cannot open its files for writing:
    /// numbering goes on from them, and every raise fails (and is reported) until `open`.
    pub fn read_only(path: &Path) -> HighWater {
        let best = File::open(path).ok().and_then(|f| newest(&f));
        let why = match OpenOptions::new().read(true).write(true).open(path) {
            Err(e) => format!("{}: {e}", path.display()),
            Ok(_) => format!("{}: not opened for writing", path.display()),
        };
        let (generation, marks) = best.unwrap_or_default();
        HighWater { file: Err(why), generation, marks, written: marks, synced: marks }
    }

    /// The highest numbers stored and handed out (after a crash, the lease it left).
    pub fn marks(&self) -> Marks {
        self.marks
    }

    /// Raises the marks to at least `to` (nothing is written when neither grows); `sync`:
    /// durably before returning, else at the next `sync`. A number beyond the lease extends
    /// it, durably, whatever `sync` says.
    pub fn raise(&mut self, to: Marks, sync: bool) -> io::Result<()> {
        let next = Marks { stored: self.marks.stored.max(to.stored), issued: self.marks.issued.max(to.issued).max(to.stored) };
        if next == self.marks {
            return Ok(());
        }
        let extend = next.issued > self.written.issued;
        let lease = if extend { next.issued + LEASE } else { self.written.issued };
        self.write(Marks { stored: next.stored, issued: lease })?;
        if sync || extend {
            self.sync()?;
        }
        self.marks = next;
        Ok(())
    }

    /// Makes the marks written so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.synced == self.written {
            return Ok(());
        }
        self.file()?.sync_data()?;
        self.synced = self.written;
        Ok(())
    }

    /// The stored marks written but not yet durable: (first, last) ring.
    pub fn unsynced_rings(&self) -> Option<(u64, u64)> {
        (self.written.stored > self.synced.stored).then_some((self.synced.stored + 1, self.written.stored))
    }

    /// Writes the marks again, durably: whether the file takes writes.
    pub fn rewrite(&mut self) -> io::Result<()> {
        self.write(self.written)?;
        self.sync()
    }

    /// Ends the lease at the highest number handed out, durably: for a clean stop, after
    /// which numbering goes on without a gap.
    pub fn settle(&mut self) -> io::Result<()> {
        if self.written.issued != self.marks.issued {
            self.write(self.marks)?;
        }
        self.sync()
    }

    /// Lowers the stored mark to what the store holds, once a loss has been reported (the
    /// issued mark stays: those numbers were handed out).
    pub fn accept_loss(&mut self, stored: u64) -> io::Result<()> {
        self.write(Marks { stored, issued: self.written.issued })?;
        self.marks.stored = stored;
        self.sync()
    }

    fn file(&self) -> io::Result<&File> {
        self.file.as_ref().map_err(|why| io::Error::new(io::ErrorKind::ReadOnlyFilesystem, why.clone()))
    }

    /// Writes `next` into the next slot (not synced).
    fn write(&mut self, next: Marks) -> io::Result<()> {
        let file = self.file()?;
        let generation = self.generation + 1;
        let offset = if generation % 2 == 0 { OFFSETS[0] } else { OFFSETS[1] };
        file.write_all_at(&encode(generation, next), offset)?;
        self.generation = generation;
        self.written = next;
        Ok(())
    }
}

/// The newest readable slot of a mark file, with its generation.
fn newest(file: &File) -> Option<(u64, Marks)> {
    let mut best: Option<(u64, Marks)> = None;
    for offset in OFFSETS {
        let mut buf = [0u8; SLOT];
        if file.read_exact_at(&mut buf, offset).is_ok() {
            if let Some(slot) = decode(&buf) {
                if best.is_none_or(|(g, _)| slot.0 > g) {
                    best = Some(slot);
                }
            }
        }
    }
    best
}

fn encode(generation: u64, m: Marks) -> [u8; SLOT] {
    let mut buf = [0u8; SLOT];
    buf[0..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&VERSION.to_le_bytes());
    buf[8..16].copy_from_slice(&generation.to_le_bytes());
    buf[16..24].copy_from_slice(&m.stored.to_le_bytes());
    buf[24..32].copy_from_slice(&m.issued.to_le_bytes());
    let crc = crc32fast::hash(&buf[0..32]);
    buf[32..36].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(buf: &[u8; SLOT]) -> Option<(u64, Marks)> {
    let u64_at = |i: usize| buf.get(i..i + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    let crc = u32::from_le_bytes(buf[32..36].try_into().ok()?);
    let valid = &buf[0..4] == MAGIC && buf[4..8] == VERSION.to_le_bytes() && crc32fast::hash(&buf[0..32]) == crc;
    valid.then(|| (u64_at(8), Marks { stored: u64_at(16), issued: u64_at(24) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopen_and_a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.hwm");
        let (mut hw, before) = HighWater::open(&path).unwrap();
        assert_eq!(before, None);
        hw.raise(Marks { stored: 3, issued: 3 }, false).unwrap();
        hw.raise(Marks { stored: 0, issued: 5 }, true).unwrap();
        hw.raise(Marks { stored: 4, issued: 0 }, false).unwrap();
        assert_eq!(hw.unsynced_rings(), Some((4, 4)));
        hw.sync().unwrap();
        assert_eq!(hw.unsynced_rings(), None);
        assert_eq!(hw.marks(), Marks { stored: 4, issued: 5 });
        // A clean stop ends the lease where numbering is.
        hw.settle().unwrap();
        drop(hw);
        let (mut hw, marks) = HighWater::open(&path).unwrap();
        assert_eq!(marks, Some(Marks { stored: 4, issued: 5 }));
        // A crash leaves the lease: numbers up to it may have been announced.
        hw.raise(Marks { stored: 6, issued: 6 }, false).unwrap();
        drop(hw);
        let (hw, marks) = HighWater::open(&path).unwrap();
        assert_eq!(marks, Some(Marks { stored: 6, issued: 6 + LEASE }));
        assert_eq!(hw.marks(), Marks { stored: 6, issued: 6 + LEASE });
        drop(hw);

        // The newest slot torn by a power cut: the one before it stands.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let newest = OFFSETS[(5 % 2) as usize];
        file.write_all_at(&[0xAB; 20], newest + 10).unwrap();
        drop(file);
        let (_, marks) = HighWater::open(&path).unwrap();
        assert_eq!(marks, Some(Marks { stored: 4, issued: 5 }));

        // Read only: the marks are there, raising them fails.
        let mut ro = HighWater::read_only(&path);
        assert_eq!(ro.marks(), Marks { stored: 4, issued: 5 });
        assert_eq!(ro.raise(Marks { stored: 9, issued: 9 }, true).unwrap_err().kind(), io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(HighWater::read_only(&dir.path().join("missing")).marks(), Marks::default());

        // Both unreadable: nothing to compare with.
        std::fs::write(&path, [0u8; 1024]).unwrap();
        assert_eq!(HighWater::open(&path).unwrap().1, None);
    }
}
