//! Durable store on sled: ring events, alerts, a meta tree and the MQTT outbox.
//!
//! "Stored" means flushed: every write method returns only after `flush()`, so nothing is
//! reported as stored before it is on disk. The store is bounded (record counts and a size
//! budget); pruning drops the oldest rings and the cleared, lowest-severity alerts first.
//! A database that cannot be opened is moved aside and replaced by a fresh one; the caller
//! raises the critical `store_reset` alert. A database that stops taking writes (a full or
//! read-only card) is reopened once the disk takes writes again (`recover`); meanwhile rings
//! are kept and announced from memory.

mod hwm;
mod outbox;
mod records;
mod space;
mod writer;

pub use writer::WRITE_DEADLINE;

pub use records::{decode, encode, AlertState, AlertV1, DecodeError, OutboxV1, Record, RingResult, RingV1, StageMs};

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::{mpsc, Notify};

use crate::config::{Severity, StoreConfig};
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, Stopper, EXIT_RESTART};

const RING_SEQ: &[u8] = b"ring_seq";
/// The key `recover` writes to learn whether sled writes again.
const PROBE: &[u8] = b"write_probe";
/// How long a reopen waits for the calls using the old database, and for sled's file lock.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// The free space a reopen needs: sled writes a new segment buffer at once.
const REOPEN_MIN_FREE: u64 = space::RESERVE_BYTES;
/// What a write on the writer returns: a store key or a count, 0 for a write without one.
type Written = Result<u64, StoreError>;

/// A write handed to the writer, with the store it writes to.
type StoreWrite = Box<dyn FnOnce(&Store, &writer::Call) -> Written + Send>;

/// Alerts remembered as landed late (`Store::late_alerts`): a handful hang at most.
const LATE_ALERTS: usize = 16;
/// Outbox messages dropped (outbox full) and not yet reported over the fleet link.
const OUTBOX_DROPS: &[u8] = b"outbox_unreported_drops";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another doorbell-agent process")]
    Locked(PathBuf),
    /// The data directory cannot be created or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// sled failed.
    #[error("store: {}", sled_message(.0))]
    Sled(#[from] sled::Error),
    /// No database is open: the disk refused it at the start, or it is being reopened after
    /// a write failure (`recover` tries every second).
    #[error("store: the database is not open (the disk refused it; trying again every second)")]
    NotOpen,
    /// A write did not return within `WRITE_DEADLINE` (or one before it still has not):
    /// the card is failing or sled is stuck; the caller goes on without the write.
    #[error("store: a write has not returned for {} s (a failing card, or sled stuck after an I/O error)", .0.as_secs())]
    Stalled(Duration),
}

impl StoreError {
    /// A disk that refuses writes (read-only, full, failing), as opposed to a store or a
    /// configuration that is wrong: the agent runs on from memory through these.
    fn is_disk_fault(&self) -> bool {
        let io = match self {
            StoreError::DataDir { source, .. } => Some(source),
            StoreError::Sled(sled::Error::Io(io)) => Some(io),
            _ => None,
        };
        io.is_some_and(|io| {
            use std::io::ErrorKind::*;
            matches!(io.kind(), ReadOnlyFilesystem | StorageFull | QuotaExceeded)
                || matches!(io.raw_os_error(), Some(libc::EIO | libc::EROFS | libc::ENOSPC | libc::EDQUOT))
        })
    }
}

/// sled's message, with an I/O error as the OS words it ("No space left on device (os error
/// 28)"), not as sled's debug rendering of it.
fn sled_message(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) => {
            // After a failure sled hands out clones of its stored error, whose text is the
            // original's debug rendering (`Os { code: 28, .. }`): the OS code is in there.
            let code = io.raw_os_error().or_else(|| {
                let text = io.to_string();
                text.strip_prefix("Os { code: ")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            });
            match code {
                Some(code) => format!("I/O error: {}", std::io::Error::from_raw_os_error(code)),
                None => format!("I/O error: {io}"),
            }
        }
        other => other.to_string(),
    }
}

/// What the store found wrong at open, for the caller's critical alert.
#[derive(Debug, Clone)]
pub enum Damage {
    /// The database was unreadable: moved aside (kept for forensics, never deleted) and a
    /// fresh one started.
    Reset {
        /// Where the unreadable database went.
        moved_to: PathBuf,
        /// Why it could not be opened.
        reason: String,
        /// The highest ring sequence number it had reported stored (0: none, or no mark).
        stored: u64,
    },
    /// The database came back with fewer rings than it had reported stored (a power cut on
    /// a card that lied about its flushes, damaged or deleted files).
    Lost {
        /// The highest ring sequence number reported stored before.
        stored: u64,
        /// The highest one found now.
        found: u64,
        /// A copy of the database as found, for inspection (when there was room for one).
        copy: Option<PathBuf>,
    },
}

impl Damage {
    /// The key of the critical alert that reports it.
    pub fn alert_key(&self) -> &'static str {
        match self {
            Damage::Reset { .. } => "store_reset",
            Damage::Lost { .. } => "store_data_lost",
        }
    }

    /// The alert's message.
    pub fn message(&self) -> String {
        match self {
            Damage::Reset { moved_to, reason, stored } => {
                let held = match stored {
                    0 => String::new(),
                    n => format!("; rings 1..={n} it had reported stored are only in that copy; numbering continues after them"),
                };
                format!("store was unreadable ({reason}); moved to {} and started fresh{held}", moved_to.display())
            }
            Damage::Lost { stored, found, copy } => {
                let range = if found + 1 == *stored { format!("ring {stored}") } else { format!("rings {}..={stored}", found + 1) };
                let copy = copy.as_ref().map_or("no copy kept (no room)".to_string(), |c| format!("a copy as found is in {}", c.display()));
                format!("the store came back without {range} that it had reported stored; {copy}; numbering continues after them")
            }
        }
    }
}

/// Copies of damaged databases kept for inspection; older ones are deleted.
const DAMAGED_COPIES: usize = 2;

/// What a pruning pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ring events removed.
    pub rings: usize,
    /// Alerts removed.
    pub alerts: usize,
}

/// A ring the store could not write: its outbox messages, and the ids of its announcement
/// from memory (`stored: false`).
struct KeptRing {
    ring: RingV1,
    announce: Vec<OutboxV1>,
    memory: Vec<u64>,
}

/// Messages announced from memory, in the order they were queued.
#[derive(Default)]
struct Unstored {
    next: u64,
    queue: std::collections::VecDeque<Pending>,
}

/// A message only memory holds, and when the link first took it to publish.
struct Pending {
    id: u64,
    message: OutboxV1,
    handed: Option<Instant>,
}

/// How long a kept ring waits to be written while its `stored: false` event is with the
/// broker unacknowledged: a PUBACK normally takes milliseconds, and writing the ring with its
/// announcement meanwhile would announce it twice.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// One opening of the database. Every sled handle the store uses comes from the current one
/// and is held only for the call that needs it: after an I/O error sled fails every later
/// write until the database is opened again, which needs all handles of the old one gone.
struct Gen {
    db: sled::Db,
    rings: sled::Tree,
    alerts: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
}

impl Gen {
    fn open(path: &Path, limits: &StoreConfig) -> sled::Result<Gen> {
        let db = open_db(path, limits)?;
        Ok(Gen {
            rings: db.open_tree("rings")?,
            alerts: db.open_tree("alerts")?,
            meta: db.open_tree("meta")?,
            outbox: db.open_tree("outbox")?,
            db,
        })
    }

    /// The highest ring sequence number this database holds (meta record or newest ring).
    fn last_ring_seq(&self) -> u64 {
        let from_meta = self.meta.get(RING_SEQ).ok().flatten().and_then(|v| match Record::decode(&v) {
            Ok(Record::CounterV1(n)) => Some(n),
            _ => None,
        });
        let from_tree = self.rings.last().ok().flatten().map(|(k, _)| key_u64(&k));
        from_meta.unwrap_or(0).max(from_tree.unwrap_or(0))
    }

    /// The outbox's index and the record counts, read from the trees (at open).
    fn survey(&self, limits: &StoreConfig) -> (outbox::Index, usize, usize) {
        let mut index = empty_index(limits);
        for (k, v) in self.outbox.iter().filter_map(|kv| kv.ok()) {
            // Messages another version queued in a shape we cannot read are kept, never dropped.
            if let Ok(Record::OutboxV1(m)) = Record::decode(&v) {
                index.add(key_u64(&k), m.severity, v.len());
            }
            index.durable = index.durable.max(key_u64(&k));
        }
        (index, self.rings.len(), self.alerts.len())
    }
}

/// The high-water mark's file, beside the database.
const HWM_FILE: &str = "store.hwm";

/// One opening of the store's files: the database (an unreadable one moved aside), its mark
/// checked against what it holds, and what the outbox and trees hold.
struct Opened {
    gen: Gen,
    hwm: hwm::HighWater,
    damage: Option<Damage>,
    index: outbox::Index,
    rings: usize,
    alerts: usize,
}

impl Opened {
    fn open(data_dir: &Path, limits: &StoreConfig) -> Result<Opened, StoreError> {
        let dir_err = |source| StoreError::DataDir { path: data_dir.to_path_buf(), source };
        let db_path = data_dir.join("db");
        let (gen, mut damage) = match Gen::open(&db_path, limits) {
            Ok(gen) => (gen, None),
            Err(e) if !is_unreadable(&e) => return Err(e.into()),
            Err(e) => {
                let moved_to = data_dir.join(format!("db.unreadable-{}", doorbell_base::time::now_ms()));
                log::error!(
                    "store at {} cannot be opened ({e}); moving it to {} and starting fresh",
                    db_path.display(),
                    moved_to.display()
                );
                std::fs::rename(&db_path, &moved_to).map_err(dir_err)?;
                let gen = Gen::open(&db_path, limits)?;
                (gen, Some(Damage::Reset { moved_to, reason: sled_message(&e), stored: 0 }))
            }
        };
        let hwm_path = data_dir.join(HWM_FILE);
        let hwm_err = |source| StoreError::DataDir { path: hwm_path.clone(), source };
        let (mut hwm, marks) = hwm::HighWater::open(&hwm_path).map_err(hwm_err)?;
        let found = gen.last_ring_seq();
        if let Some(marks) = marks.filter(|m| m.stored > found) {
            match &mut damage {
                Some(Damage::Reset { stored, .. }) => *stored = marks.stored,
                Some(Damage::Lost { .. }) => {}
                None => {
                    let copy = copy_damaged(data_dir, &db_path);
                    log::error!("store: rings up to {} were reported stored, the database holds up to {found}", marks.stored);
                    damage = Some(Damage::Lost { stored: marks.stored, found, copy });
                }
            }
            hwm.accept_loss(found).map_err(hwm_err)?;
        }
        // A store from before the mark (or with the mark lost) starts it from what it holds.
        hwm.raise(hwm::Marks { stored: found, issued: found }, true).map_err(hwm_err)?;
        let (index, rings, alerts) = gen.survey(limits);
        Ok(Opened { gen, hwm, damage, index, rings, alerts })
    }
}

/// An outbox index with the configured bounds and nothing in it.
fn empty_index(limits: &StoreConfig) -> outbox::Index {
    outbox::Index::new(limits.max_outbox_messages, (limits.max_outbox_mib * 1024 * 1024) as usize)
}

/// Handle on the open store; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    // The current opening; `None` while it is being replaced (see `recover`).
    gen: Arc<RwLock<Option<Arc<Gen>>>>,
    limits: StoreConfig,
    metrics: Arc<Metrics>,
    // Outbox size and drop order; also serializes every write that queues messages, through
    // its flush, so that readers never see a message before it is durable.
    outbox_index: Arc<Mutex<outbox::Index>>,
    outbox_changed: Arc<Notify>,
    // Records in `rings` and `alerts`, counted once at open and kept up to date by every
    // write: sled's `len()` reads the whole tree, which /status and the gauges must not do.
    counts: Arc<Counts>,
    // The last write failure, until a write succeeds again (feeds the `store` check).
    write_error: Arc<Mutex<Option<String>>>,
    // Woken by a failed write or a kept ring: `maintain` starts recovering at once.
    trouble: Arc<Notify>,
    // Where the store lives: the `store` check names its file system's free space.
    data_dir: Arc<Path>,
    // Messages of records the store could not write, announced from memory.
    unstored: Arc<Mutex<Unstored>>,
    // Rings the store could not write, written once it can (`recover`), oldest first.
    kept: Arc<Mutex<std::collections::VecDeque<KeptRing>>>,
    // The highest ring numbers stored and handed out, outside the database.
    hwm: Arc<Mutex<hwm::HighWater>>,
    // What an opening after the start found wrong, until `maintain` reports it.
    damage: Arc<Mutex<Option<Damage>>>,
    // Writes in progress, to tell a wedged store (see `stalled`).
    writes: Arc<InFlight>,
    // The thread record writes run on (`on_writer`).
    writer: std::sync::mpsc::SyncSender<writer::Job>,
    // Alerts whose first write landed after its caller had given up: their store keys,
    // so that the engine's next write of them replaces that record instead of adding one.
    late_alerts: Arc<Mutex<Vec<(String, u64)>>>,
    // Wakes the thread that syncs the stored mark after rings (`sync_marks`).
    mark_sync: std::sync::mpsc::SyncSender<()>,
    // The disk refused the database at the start: what other components read from the
    // store then (gallery, command ledger) is only read at a start, so the agent restarts
    // once the database opens.
    started_without_db: bool,
    // Space set aside for when the disk fills.
    reserve: Arc<space::Reserve>,
    // Held for the life of the store: one agent per data directory.
    _lock: Arc<File>,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, replacing an unreadable database. A
    /// disk that refuses (read-only, full, failing) does not stop the agent: the store starts
    /// without its database, failing its check, and `recover` opens it once the disk takes
    /// writes again; meanwhile rings and alerts are announced from memory.
    pub fn open(data_dir: &Path, limits: &StoreConfig, metrics: Arc<Metrics>) -> Result<(Store, Option<Damage>), StoreError> {
        let dir_err = |source| StoreError::DataDir { path: data_dir.to_path_buf(), source };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        let lock = lock_dir(data_dir)?;
        let (opened, write_error) = match Opened::open(data_dir, limits) {
            Ok(opened) => (Some(opened), None),
            Err(e) if e.is_disk_fault() => {
                log::error!("store: cannot open the database in {}: {e}; rings are announced from memory until it can", data_dir.display());
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };
        let (mark_sync, mark_syncs) = std::sync::mpsc::sync_channel(1);
        let (writer, jobs) = std::sync::mpsc::sync_channel(writer::WRITER_QUEUE);
        let store = Store {
            gen: Arc::new(RwLock::new(None)),
            limits: limits.clone(),
            metrics,
            outbox_index: Arc::new(Mutex::new(empty_index(limits))),
            outbox_changed: Arc::new(Notify::new()),
            counts: Arc::new(Counts::default()),
            write_error: Arc::new(Mutex::new(write_error)),
            trouble: Arc::new(Notify::new()),
            data_dir: Arc::from(data_dir),
            unstored: Arc::new(Mutex::new(Unstored::default())),
            kept: Arc::new(Mutex::new(std::collections::VecDeque::new())),
            // Replaced by the opening's own (`attach`); read only until there is one.
            hwm: Arc::new(Mutex::new(hwm::HighWater::read_only(&data_dir.join(HWM_FILE)))),
            reserve: Arc::new(space::Reserve::new(data_dir)),
            damage: Arc::new(Mutex::new(None)),
            writes: Arc::new(InFlight::default()),
            writer,
            late_alerts: Arc::new(Mutex::new(Vec::new())),
            mark_sync,
            started_without_db: opened.is_none(),
            _lock: Arc::new(lock),
        };
        let damage = match opened {
            Some(opened) => store.attach(opened),
            None => None,
        };
        let syncer = MarkSyncer {
            hwm: Arc::downgrade(&store.hwm),
            metrics: store.metrics.clone(),
            write_error: store.write_error.clone(),
            trouble: store.trouble.clone(),
        };
        std::thread::Builder::new()
            .name("store-mark".into())
            .spawn(move || sync_marks(syncer, mark_syncs))
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        std::thread::Builder::new()
            .name("store-write".into())
            .spawn(move || writer::run(jobs))
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        if store.write_error().is_none() {
            if let Err(e) = store.keep_free() {
                log::warn!("store: keeping free space at open: {e}");
            }
        }
        store.update_gauges();
        Ok((store, damage))
    }

    /// Makes a fresh opening the current one: its mark, outbox index and counts with it.
    /// Returns what the opening found wrong.
    fn attach(&self, opened: Opened) -> Option<Damage> {
        let mut index = self.lock_outbox();
        *index = opened.index;
        self.mirror_depth(&index);
        self.counts.rings.store(opened.rings, Ordering::Relaxed);
        self.counts.alerts.store(opened.alerts, Ordering::Relaxed);
        *self.lock_hwm() = opened.hwm;
        *self.gen.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(opened.gen));
        drop(index);
        // Whatever the outbox holds now is what the link may send.
        self.outbox_changed.notify_one();
        opened.damage
    }

    /// Whether the agent should restart to read what the store holds: it started without
    /// its database, which is now open and holds every ring kept meanwhile.
    pub fn restart_needed(&self) -> bool {
        self.started_without_db && self.gen().is_ok() && self.kept_rings() == 0
    }

    /// What an opening after the start (see `recover`) found wrong, for the caller's alert.
    pub fn take_damage(&self) -> Option<Damage> {
        self.damage.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The current opening of the database.
    fn gen(&self) -> Result<Arc<Gen>, StoreError> {
        self.gen.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(StoreError::NotOpen)
    }

    /// Makes every write so far durable, the high-water mark's too.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.on_writer(|s, _| s.flush_now().map(|()| 0)).map(drop)
    }

    fn flush_now(&self) -> Result<(), StoreError> {
        let g = self.gen()?;
        self.write_here(|| g.db.flush().map(drop))?;
        self.lock_hwm().sync().map_err(|source| self.mark_error(source))
    }

    /// Runs a record write on the writer thread and waits at most `WRITE_DEADLINE` for it:
    /// past it, or at once while an earlier write still hangs, the caller gets `Stalled` and
    /// goes on without it (the store counts as failing). A write that returns after its
    /// caller gave up lands late (`Call::is_late`).
    fn on_writer(&self, write: impl FnOnce(&Store, &writer::Call) -> Written + Send + 'static) -> Written {
        self.on_writer_boxed(Box::new(write))
    }

    /// `on_writer`, one copy for every write.
    fn on_writer_boxed(&self, write: StoreWrite) -> Written {
        let slot = Arc::new(Mutex::new(None));
        let (store, result) = (self.clone(), slot.clone());
        self.hand_over(Box::new(move |call: &writer::Call| {
            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(write(&store, call));
        }))?;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.unwrap_or(Err(StoreError::NotOpen))
    }

    /// `on_writer` without its result: whether the write finished in time.
    fn hand_over(&self, write: Box<dyn FnOnce(&writer::Call) + Send>) -> Result<(), StoreError> {
        if let Some(hung) = self.writes.stalled().filter(|d| *d >= WRITE_DEADLINE) {
            return Err(StoreError::Stalled(hung));
        }
        match writer::call(&self.writer, write) {
            Ok(()) => Ok(()),
            Err(writer::Missed::Late) => {
                let e = StoreError::Stalled(self.writes.stalled().unwrap_or(WRITE_DEADLINE));
                self.failing(e.to_string());
                Err(e)
            }
            Err(writer::Missed::Gone) => Err(StoreError::NotOpen),
        }
    }

    /// The mark file's I/O error, named with its path.
    fn mark_error(&self, source: std::io::Error) -> StoreError {
        StoreError::DataDir { path: self.data_dir.join(HWM_FILE), source }
    }

    /// For a clean stop: flushes, and ends the ring numbers' lease where numbering is, so
    /// that the next start goes on without a gap.
    pub fn close(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.lock_hwm().settle().map_err(|source| self.mark_error(source))
    }

    /// Rings `first..=last` are in the database without a durable mark: a loss of them
    /// would go unnoticed, so the store stops until the mark can be written (`recover`).
    fn mark_failed(&self, first: u64, last: u64, error: String) {
        markless(first, last);
        self.failing(error);
    }

    /// A component's own tree (created when missing); its values should be that component's
    /// versioned enum, wrapped with `encode`/`decode`. Use it for one call and let it go: a
    /// reopen after a write failure waits for every handle of the old database.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.gen()?.db.open_tree(name)?)
    }

    /// Runs a write ending in a flush (on the writer, within `WRITE_DEADLINE`: see
    /// `on_writer`) and remembers whether the store is currently writable, for the `store`
    /// health check.
    pub fn write(&self, f: impl FnOnce() -> sled::Result<()> + Send + 'static) -> Result<(), StoreError> {
        self.on_writer(move |s, _| s.write_here(f).map(|()| 0)).map(drop)
    }

    /// `write` on the calling thread: the writer's own writes.
    fn write_here<T>(&self, f: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
        let result = self.write_unflushed(f);
        if result.is_ok() {
            *self.write_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    /// Runs a write that is not flushed here. A failure marks the store failing like any
    /// other; a success proves nothing (sled takes writes into memory after a failed flush),
    /// so it leaves a failure standing.
    pub fn write_unflushed<T>(&self, f: impl FnOnce() -> sled::Result<T>) -> Result<T, StoreError> {
        let _writing = self.writes.start();
        f().map_err(|e| {
            self.failing(sled_message(&e));
            e.into()
        })
    }

    /// Marks the store failing (the `store` check, `store_unwritable`) until a write works.
    fn failing(&self, error: String) {
        fail(&self.write_error, &self.trouble, error);
    }

    /// The last write failure, if the store has not been written successfully since.
    pub fn write_error(&self) -> Option<String> {
        self.write_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Gets the store writing again after a failed write, without a restart. A probe write
    /// first; if sled still refuses (it keeps an I/O error until the database is opened
    /// again) and the data directory takes a write again (space is back, the file system is
    /// writable again), the database is reopened. Returns whether the store writes.
    pub fn recover(&self) -> bool {
        if self.writes.stalled().is_some_and(|d| d >= WRITE_DEADLINE) {
            // A write hangs: nothing here can help (not even a reopen, which needs that
            // write's handles gone). It returns, or the watchdog restarts the agent (`STALL`).
            return false;
        }
        if self.write_error().is_none() {
            return self.write_kept().is_ok();
        }
        // The mark written again, then a tiny flushed write (which alone clears the failure):
        // whether both take writes again.
        let writes = || {
            if self.gen().is_err() {
                return false;
            }
            let mark = self.lock_hwm().rewrite().map_err(|e| self.failing(format!("the high-water mark cannot be written: {e}")));
            let probe = |s: &Store, _: &writer::Call| {
                let g = s.gen()?;
                s.write_here(|| {
                    g.meta.insert(PROBE, &b"1"[..])?;
                    g.db.flush().map(|_| 0)
                })
            };
            mark.is_ok() && self.on_writer(probe).is_ok()
        };
        if writes() {
            return self.write_kept().is_ok();
        }
        self.release_reserve_if_full();
        // Reopening while the disk still refuses would trade a working read side for nothing.
        let room = self.free().is_some_and(|free| free >= REOPEN_MIN_FREE);
        let dir_probe = self.data_dir.join("store.probe");
        if !room || doorbell_base::durable::write_file(&dir_probe, b"probe", 0o600).is_err() {
            let _ = std::fs::remove_file(doorbell_base::durable::sibling(&dir_probe, ".tmp"));
            return false;
        }
        let _ = std::fs::remove_file(&dir_probe);
        let t = Instant::now();
        if let Err(e) = self.reopen() {
            log::warn!("store: reopening the database failed: {e}; trying again");
            return false;
        }
        if !writes() {
            return false;
        }
        log::info!("store: writable again (database reopened in {:.0} ms)", t.elapsed().as_secs_f64() * 1000.0);
        self.write_kept().is_ok()
    }

    /// Replaces the database handle with a fresh opening (the first one, after a start on a
    /// disk that refused): waits for the calls using the old one, drops it (sled's file lock
    /// with it), opens again, checks the mark and recounts.
    fn reopen(&self) -> Result<(), StoreError> {
        // No write queues messages while the old opening goes: `attach` rebuilds the index.
        let index = self.lock_outbox();
        let old = self.gen.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(gen) => break drop(gen),
                    Err(busy) if Instant::now() < deadline => {
                        old = busy;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(busy) => {
                        *self.gen.write().unwrap_or_else(|p| p.into_inner()) = Some(busy);
                        return Err(StoreError::NotOpen);
                    }
                }
            }
        }
        drop(index);
        // sled's own threads can hold its file lock a moment after the last handle is gone.
        let deadline = Instant::now() + REOPEN_WAIT;
        let opened = loop {
            match Opened::open(&self.data_dir, &self.limits) {
                Ok(opened) => break opened,
                Err(StoreError::Sled(e)) if Instant::now() < deadline && lock_busy(&e) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e),
            }
        };
        if let Some(damage) = self.attach(opened) {
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(damage);
        }
        Ok(())
    }

    /// How long writes have been waiting without any finishing, past `STALL`: sled can hang
    /// in a flush after a failed write; only a restart ends that.
    pub fn stalled(&self) -> Option<Duration> {
        self.writes.stalled().filter(|d| *d >= STALL)
    }

    /// Sets the required `store` check from the last write: a failing one names the error and
    /// the free space left where the store lives, the two things an operator acts on.
    pub fn report_health(&self, health: &Board) {
        let kept = match self.kept_rings() {
            0 => String::new(),
            n => format!("; {n} ring{} kept in memory", if n == 1 { "" } else { "s" }),
        };
        if let Some(stalled) = self.stalled() {
            let detail = format!(
                "not writable: a write has not returned for {} s (a failing card, or sled stuck after an I/O error); the watchdog is withheld so that systemd restarts the agent{kept}",
                stalled.as_secs()
            );
            return health.set("store", Importance::Required, false, detail);
        }
        match self.write_error() {
            None => {
                let detail = self.low_space().map_or_else(|| "writable".to_string(), |low| format!("writable; {low}"));
                health.set("store", Importance::Required, true, detail)
            }
            Some(e) => {
                let free = match doorbell_base::durable::free_space(&self.data_dir) {
                    Ok(bytes) => format!("{:.1} MiB free", bytes as f64 / (1024.0 * 1024.0)),
                    Err(e) => format!("free space unknown: {e}"),
                };
                let detail = format!("not writable: {e} ({free} on {}){kept}", self.data_dir.display());
                health.set("store", Importance::Required, false, detail);
            }
        }
    }

    fn decode(&self, bytes: &[u8]) -> Option<Record> {
        match Record::decode(bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                let reason = match e {
                    DecodeError::Corrupt(_) => "corrupt",
                    DecodeError::NewerVersion => "newer_version",
                };
                self.metrics.store_skipped.inc(&[reason]);
                None
            }
        }
    }

    /// The highest ring sequence number in use: stored, or handed out to a ring announced
    /// from memory (0 when none). The next ring takes the one after it.
    pub fn last_ring_seq(&self) -> u64 {
        let stored = self.gen().map_or(0, |g| g.last_ring_seq());
        stored.max(self.lock_hwm().marks().issued)
    }

    fn lock_hwm(&self) -> std::sync::MutexGuard<'_, hwm::HighWater> {
        self.hwm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises the high-water mark (`sync`: durably now, else by the mark's syncer); a failure
    /// to write it loses the check, not data.
    fn raise_mark(&self, marks: hwm::Marks, sync: bool) -> Result<(), String> {
        self.lock_hwm().raise(marks, sync).map_err(|e| {
            self.metrics.errors.inc(&["store", "high_water_mark"]);
            let error = format!("the high-water mark cannot be written: {e}");
            log::warn!("store: {error}");
            error
        })
    }

    /// Stores a ring event durably, with the messages announcing it queued in the same write.
    pub fn put_ring(&self, ring: &RingV1, announce: &[OutboxV1]) -> Result<(), StoreError> {
        let (ring, announce) = (ring.clone(), announce.to_vec());
        self.on_writer(move |s, call| s.put_ring_now(call, &ring, &announce).map(|()| 0)).map(drop)
    }

    fn put_ring_now(&self, call: &writer::Call, ring: &RingV1, announce: &[OutboxV1]) -> Result<(), StoreError> {
        let record = Record::RingV1(ring.clone()).encode();
        let seq = Record::CounterV1(ring.seq).encode();
        let added = self.transact(call, announce, |t| {
            t.meta.insert(RING_SEQ, seq.clone())?;
            Ok(t.rings.insert(&ring.seq.to_be_bytes(), record.clone())?.is_none())
        })?;
        self.counts.rings.fetch_add(usize::from(added), Ordering::Relaxed);
        // After the flush: the mark never runs ahead of what the database holds.
        match self.raise_mark(hwm::Marks { stored: ring.seq, issued: ring.seq }, false) {
            Ok(()) => {
                let _ = self.mark_sync.try_send(());
            }
            Err(error) => self.mark_failed(ring.seq, ring.seq, error),
        }
        Ok(())
    }

    /// Ring `seq`, if it is still stored.
    pub fn ring(&self, seq: u64) -> Option<RingV1> {
        match self.decode(&self.gen().ok()?.rings.get(seq.to_be_bytes()).ok()??)? {
            Record::RingV1(r) => Some(r),
            _ => None,
        }
    }

    /// The newest ring events, newest first.
    pub fn rings(&self, limit: usize) -> Vec<RingV1> {
        let Ok(g) = self.gen() else { return Vec::new() };
        g.rings
            .iter()
            .rev()
            .filter_map(|kv| kv.ok())
            .filter_map(|(_, v)| match self.decode(&v) {
                Some(Record::RingV1(r)) => Some(r),
                _ => None,
            })
            .take(limit)
            .collect()
    }

    /// Stores a new alert durably, with its announcements; returns its store key.
    pub fn insert_alert(&self, alert: &AlertV1, announce: &[OutboxV1]) -> Result<u64, StoreError> {
        let (alert, announce) = (alert.clone(), announce.to_vec());
        self.on_writer(move |s, gave_up| {
            let late = {
                let mut late = s.lock_late_alerts();
                late.iter().position(|(id, _)| *id == alert.id).map(|i| late.remove(i).1)
            };
            if let Some(key) = late {
                // An earlier try landed after all: this write replaces it.
                s.update_alert_now(gave_up, key, &alert, &announce)?;
                return Ok(key);
            }
            let record = Record::AlertV1(alert.clone()).encode();
            let key = s.transact(gave_up, &announce, |t| {
                let key = t.alerts.generate_id()?;
                t.alerts.insert(&key.to_be_bytes(), record.clone())?;
                Ok(key)
            })?;
            s.counts.alerts.fetch_add(1, Ordering::Relaxed);
            if gave_up.is_late() {
                let mut late = s.lock_late_alerts();
                if late.len() >= LATE_ALERTS {
                    late.remove(0);
                }
                late.push((alert.id.clone(), key));
            }
            Ok(key)
        })
    }

    fn lock_late_alerts(&self) -> std::sync::MutexGuard<'_, Vec<(String, u64)>> {
        self.late_alerts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces a stored alert durably (a lifecycle transition), with its announcements.
    pub fn update_alert(&self, key: u64, alert: &AlertV1, announce: &[OutboxV1]) -> Result<(), StoreError> {
        let (alert, announce) = (alert.clone(), announce.to_vec());
        self.on_writer(move |s, call| s.update_alert_now(call, key, &alert, &announce).map(|()| 0)).map(drop)
    }

    fn update_alert_now(&self, call: &writer::Call, key: u64, alert: &AlertV1, announce: &[OutboxV1]) -> Result<(), StoreError> {
        let record = Record::AlertV1(alert.clone()).encode();
        self.transact(call, announce, |t| {
            t.alerts.insert(&key.to_be_bytes(), record.clone())?;
            Ok(())
        })
    }

    /// Alerts with their store keys, newest first.
    pub fn alerts(&self, active_only: bool, limit: usize) -> Vec<(u64, AlertV1)> {
        let Ok(g) = self.gen() else { return Vec::new() };
        g.alerts
            .iter()
            .rev()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| match self.decode(&v) {
                Some(Record::AlertV1(a)) if !active_only || a.is_active() => Some((key_u64(&k), a)),
                _ => None,
            })
            .take(limit)
            .collect()
    }

    /// Queues ready-to-send messages durably.
    pub fn outbox_push(&self, messages: &[OutboxV1]) -> Result<(), StoreError> {
        let messages = messages.to_vec();
        self.on_writer(move |s, call| s.transact(call, &messages, |_| Ok(())).map(|()| 0)).map(drop)
    }

    /// Up to `limit` queued messages after key `after` (from the oldest when `None`), in send
    /// order; only messages whose write has been flushed.
    pub fn outbox_after(&self, after: Option<u64>, limit: usize) -> Vec<(u64, OutboxV1)> {
        let durable = self.lock_outbox().durable;
        let from = after.map_or(0, |k| k.saturating_add(1));
        if from > durable {
            return Vec::new();
        }
        let Ok(g) = self.gen() else { return Vec::new() };
        g.outbox
            .range(from.to_be_bytes()..=durable.to_be_bytes())
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| match Record::decode(&v) {
                Ok(Record::OutboxV1(m)) => Some((key_u64(&k), m)),
                Ok(_) | Err(DecodeError::NewerVersion) => None,
                Err(DecodeError::Corrupt(_)) => {
                    // Unsendable: count it and let it go rather than block the queue.
                    self.metrics.store_skipped.inc(&["corrupt"]);
                    let _ = g.outbox.remove(&k);
                    None
                }
            })
            .take(limit)
            .collect()
    }

    /// Removes a message the broker has acknowledged. Not flushed here: a removal lost in a
    /// crash only means the message is sent again (consumers de-duplicate by id).
    pub fn outbox_acked(&self, key: u64) -> Result<(), StoreError> {
        let mut index = self.lock_outbox();
        index.remove(key);
        self.mirror_depth(&index);
        drop(index);
        let g = self.gen()?;
        self.write_unflushed(|| g.outbox.remove(key.to_be_bytes()).map(drop))
    }

    /// Queued messages and their bytes; never waits for a write in progress.
    pub fn outbox_depth(&self) -> (usize, usize) {
        (self.counts.outbox.load(Ordering::Relaxed), self.counts.outbox_bytes.load(Ordering::Relaxed))
    }

    /// Publishes the index's depth to `outbox_depth`; called with the lock held, after a change.
    fn mirror_depth(&self, index: &outbox::Index) {
        let (messages, bytes) = index.depth();
        self.counts.outbox.store(messages, Ordering::Relaxed);
        self.counts.outbox_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Queues the messages of a record the store could not write, to be published from
    /// memory after what the outbox holds: the announcement must not wait for a disk that is
    /// full or read-only. Bounded like the outbox (the oldest go first); a restart or a power
    /// cut loses them.
    pub fn announce_unstored(&self, messages: Vec<OutboxV1>) -> Vec<u64> {
        let mut u = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids = Vec::with_capacity(messages.len());
        for m in messages {
            if u.queue.len() >= self.limits.max_outbox_messages {
                if let Some(dropped) = u.queue.pop_front() {
                    self.metrics.outbox_dropped.inc(&[dropped.message.severity.as_str()]);
                }
            }
            let id = u.next;
            u.next += 1;
            u.queue.push_back(Pending { id, message: m, handed: None });
            ids.push(id);
        }
        drop(u);
        self.outbox_changed.notify_one();
        ids
    }

    /// Keeps a ring the store could not write: `unstored` (its event marked `stored: false`)
    /// is announced from memory now, the ring is written with `announce` once the store
    /// writes again, under the same id and sequence number (`recover`). At most
    /// `store.max_rings` are kept; a restart or a power cut loses them.
    pub fn keep_ring(&self, ring: RingV1, announce: Vec<OutboxV1>, unstored: Vec<OutboxV1>) {
        // Its number is taken, whatever happens to the ring (the mark is written in place).
        let _ = self.raise_mark(hwm::Marks { stored: 0, issued: ring.seq }, true);
        let memory = self.announce_unstored(unstored);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= self.limits.max_rings {
            if let Some(lost) = kept.pop_front() {
                self.metrics.errors.inc(&["store", "kept_ring_dropped"]);
                log::error!("ring {} ({}) dropped from memory: too many rings wait for the store", lost.ring.seq, lost.ring.id);
            }
        }
        kept.push_back(KeptRing { ring, announce, memory });
        self.trouble.notify_one();
    }

    /// Rings kept in memory, waiting for the store.
    pub fn kept_rings(&self) -> usize {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writes the kept rings, oldest first; stops at the first failure. A ring whose
    /// announcement from memory the broker already has is written without announcing it
    /// again; one whose announcement is with the broker unacknowledged waits (up to
    /// `IN_FLIGHT_WAIT`) for the PUBACK; one whose announcement has not left (no link) is
    /// announced from the outbox instead, durably.
    fn write_kept(&self) -> Result<(), StoreError> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(k) = kept.front() {
            // Deciding and taking the announcement happen under one lock: the link must not
            // take it to publish in between.
            let claimed = {
                let mut u = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
                let mine = |p: &Pending| k.memory.contains(&p.id);
                if u.queue.iter().any(|p| mine(p) && p.handed.is_some_and(|t| t.elapsed() < IN_FLIGHT_WAIT)) {
                    // `maintain` comes back within a second while rings are kept.
                    return Ok(());
                }
                let (claimed, rest): (std::collections::VecDeque<Pending>, _) =
                    std::mem::take(&mut u.queue).into_iter().partition(|p| mine(p));
                u.queue = rest;
                claimed
            };
            if let Err(e) = self.put_ring(&k.ring, if claimed.is_empty() { &[] } else { &k.announce }) {
                let mut u = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
                u.queue.extend(claimed);
                u.queue.make_contiguous().sort_by_key(|p| p.id);
                return Err(e);
            }
            log::info!("ring {} stored: id={} (kept in memory while the store could not write)", k.ring.seq, k.ring.id);
            kept.pop_front();
        }
        Ok(())
    }

    /// Unstored messages after `after` (their ids grow), oldest first, at most `limit`, for
    /// the link to publish: each is noted as handed over.
    pub fn unstored_after(&self, after: Option<u64>, limit: usize) -> Vec<(u64, OutboxV1)> {
        let mut u = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let batch = u.queue.iter_mut().filter(|p| after.is_none_or(|a| p.id > a)).take(limit);
        batch
            .map(|p| {
                p.handed.get_or_insert(now);
                (p.id, p.message.clone())
            })
            .collect()
    }

    /// Forgets an unstored message the broker has acknowledged.
    pub fn unstored_acked(&self, id: u64) {
        let mut u = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = u.queue.iter().position(|p| p.id == id) {
            u.queue.remove(i);
        }
    }

    /// Woken whenever new messages are durably queued (or queued from memory).
    pub fn outbox_changed(&self) -> Arc<Notify> {
        self.outbox_changed.clone()
    }

    /// Takes the count of messages dropped from a full outbox since the last call (durable
    /// across restarts, so a drop while offline is reported once the link is back).
    pub fn take_outbox_drops(&self) -> Result<u64, StoreError> {
        // On the writer: the count is read and reset between the writes that raise it.
        self.on_writer(|s, _| s.take_outbox_drops_now())
    }

    fn take_outbox_drops_now(&self) -> Result<u64, StoreError> {
        let g = self.gen()?;
        let n = match g.meta.get(OUTBOX_DROPS)? {
            Some(v) => match self.decode(&v) {
                Some(Record::CounterV1(n)) => n,
                _ => 0,
            },
            None => 0,
        };
        if n > 0 {
            self.write_here(|| {
                g.meta.remove(OUTBOX_DROPS)?;
                g.db.flush().map(drop)
            })?;
        }
        Ok(n)
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, outbox::Index> {
        self.outbox_index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One durable write: `body` on the core trees plus `announce` queued in the outbox (the
    /// least severe queued messages dropped to make room), atomically, then flushed. Runs on
    /// the writer only, which orders these writes; the outbox lock is not held across the
    /// write, so that the link can still read and publish while a flush hangs. A write that
    /// lands after its caller gave up (`call`) queues nothing: the caller has announced the
    /// record from memory, and writes it again with its announcement if that did not go out.
    fn transact<T>(
        &self,
        call: &writer::Call,
        announce: &[OutboxV1],
        body: impl Fn(&Trees<'_>) -> Result<T, ConflictableTransactionError<()>>,
    ) -> Result<T, StoreError> {
        let encoded: Vec<Vec<u8>> = announce.iter().map(|m| Record::OutboxV1(m.clone()).encode()).collect();
        // The opening is held through the write: a reopen cannot swap the index meanwhile.
        let g = self.gen()?;
        let plan = self.lock_outbox().plan(&announce.iter().zip(&encoded).map(|(m, bytes)| (m.severity, bytes.len())).collect::<Vec<_>>());
        let dropped = plan.evict.len() + plan.admit.iter().filter(|a| !**a).count();
        let (value, keys) = self.write_here(|| {
            doorbell_base::fault::store_write();
            let committed = (&g.rings, &g.alerts, &g.meta, &g.outbox).transaction(|(rings, alerts, meta, outbox)| {
                let value = body(&Trees { rings, alerts, meta })?;
                for key in &plan.evict {
                    outbox.remove(&key.to_be_bytes())?;
                }
                let mut keys = Vec::with_capacity(encoded.len());
                for (bytes, admit) in encoded.iter().zip(&plan.admit) {
                    if *admit {
                        let key = outbox.generate_id()?;
                        outbox.insert(&key.to_be_bytes(), bytes.clone())?;
                        keys.push(key);
                    }
                }
                if dropped > 0 {
                    let before = match meta.get(OUTBOX_DROPS)?.map(|v| Record::decode(&v)) {
                        Some(Ok(Record::CounterV1(n))) => n,
                        _ => 0,
                    };
                    meta.insert(OUTBOX_DROPS, Record::CounterV1(before + dropped as u64).encode())?;
                }
                Ok((value, keys))
            });
            let committed = committed.map_err(|e| match e {
                TransactionError::Storage(e) => e,
                TransactionError::Abort(()) => sled::Error::Unsupported("store transaction aborted".into()),
            })?;
            g.db.flush()?;
            Ok(committed)
        })?;
        let queued = if call.is_late() {
            self.write_unflushed(|| keys.iter().try_for_each(|k| g.outbox.remove(k.to_be_bytes()).map(drop)))?;
            &[][..]
        } else {
            &keys[..]
        };
        let mut index = self.lock_outbox();
        let evicted: Vec<Severity> = plan.evict.iter().filter_map(|key| index.remove(*key)).collect();
        let admitted = announce.iter().zip(&encoded).zip(&plan.admit).filter(|(_, admit)| **admit).map(|(m, _)| m);
        for ((m, bytes), key) in admitted.zip(queued) {
            index.add(*key, m.severity, bytes.len());
        }
        if let Some(last) = queued.last() {
            index.durable = index.durable.max(*last);
        }
        self.mirror_depth(&index);
        drop(index);
        let refused = announce.iter().zip(&plan.admit).filter(|(_, admit)| !**admit).map(|(m, _)| m.severity);
        for severity in evicted.into_iter().chain(refused) {
            self.metrics.outbox_dropped.inc(&[severity.as_str()]);
        }
        if !queued.is_empty() {
            self.outbox_changed.notify_one();
        }
        Ok(value)
    }

    /// Number of (rings, alerts, outbox) records.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.counts.rings.load(Ordering::Relaxed), self.counts.alerts.load(Ordering::Relaxed), self.outbox_depth().0)
    }

    /// On-disk size in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.gen().map_or(0, |g| g.db.size_on_disk().unwrap_or(0))
    }

    /// Brings the store back within its bounds.
    pub fn prune(&self) -> Result<Pruned, StoreError> {
        let over_budget = self.size_on_disk() > self.limits.max_size_mib * 1024 * 1024;
        // Over the size budget, keep only three quarters of the ring allowance this pass.
        let max_rings = if over_budget { self.limits.max_rings * 3 / 4 } else { self.limits.max_rings };
        let (rings, alerts, _) = self.counts();
        let mut pruned = Pruned { rings: self.remove_oldest_rings(rings.saturating_sub(max_rings))?, alerts: 0 };
        let g = self.gen()?;

        let excess = alerts.saturating_sub(self.limits.max_alerts);
        if excess > 0 {
            // Cleared before active, lowest severity before highest, oldest before newest.
            // Records of a newer version are never candidates: they are not ours to drop.
            let mut candidates: Vec<(bool, crate::config::Severity, u64)> = g
                .alerts
                .iter()
                .filter_map(|kv| kv.ok())
                .filter_map(|(k, v)| match Record::decode(&v) {
                    Ok(Record::AlertV1(a)) => Some((a.is_active(), a.severity, key_u64(&k))),
                    Err(DecodeError::Corrupt(_)) => Some((false, crate::config::Severity::Warning, key_u64(&k))),
                    _ => None,
                })
                .collect();
            candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
            for (_, _, key) in candidates.into_iter().take(excess) {
                if g.alerts.remove(key.to_be_bytes())?.is_some() {
                    self.counts.alerts.fetch_sub(1, Ordering::Relaxed);
                    pruned.alerts += 1;
                }
            }
        }
        drop(g);
        if pruned != Pruned::default() {
            self.flush()?;
            self.metrics.store_pruned.add(&["rings"], pruned.rings as f64);
            self.metrics.store_pruned.add(&["alerts"], pruned.alerts as f64);
        }
        self.update_gauges();
        Ok(pruned)
    }

    /// Removes the `n` oldest rings (not flushed); returns how many were removed.
    fn remove_oldest_rings(&self, n: usize) -> Result<usize, StoreError> {
        let g = self.gen()?;
        let mut removed = 0;
        for kv in g.rings.iter().keys().take(n) {
            if g.rings.remove(kv?)?.is_some() {
                self.counts.rings.fetch_sub(1, Ordering::Relaxed);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Refreshes the store size and record gauges.
    pub fn update_gauges(&self) {
        let (rings, alerts, outbox) = self.counts();
        self.metrics.store_records.set(&["rings"], rings as f64);
        self.metrics.store_records.set(&["alerts"], alerts as f64);
        self.metrics.store_records.set(&["outbox"], outbox as f64);
        self.metrics.store_bytes.set(&[], self.size_on_disk() as f64);
    }
}

/// How long writes may wait without one finishing before the store counts as stuck.
pub const STALL: Duration = Duration::from_secs(10);

/// Writes in progress, and when the store last made progress (a write started on an idle
/// store, or one finished).
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    progress: Mutex<Option<Instant>>,
}

impl InFlight {
    fn start(&self) -> Writing<'_> {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        Writing(self)
    }

    /// How long writes have waited without progress; `None` when none waits.
    fn stalled(&self) -> Option<Duration> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }
}

/// One write in progress; its end is progress.
struct Writing<'a>(&'a InFlight);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        *self.0.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long the mark's syncer waits after a ring before it syncs: rings of a burst share it.
pub const MARK_SYNC_DELAY: Duration = Duration::from_millis(20);

/// What the mark's syncer needs of the store: nothing that holds its files open.
struct MarkSyncer {
    hwm: std::sync::Weak<Mutex<hwm::HighWater>>,
    metrics: Arc<Metrics>,
    write_error: Arc<Mutex<Option<String>>>,
    trouble: Arc<Notify>,
}

/// Syncs the stored mark after rings, off their path; ends with the store (its last sender).
fn sync_marks(syncer: MarkSyncer, wakes: std::sync::mpsc::Receiver<()>) {
    while wakes.recv().is_ok() {
        std::thread::sleep(MARK_SYNC_DELAY);
        let Some(hwm) = syncer.hwm.upgrade() else { return };
        let mut hwm = hwm.lock().unwrap_or_else(|p| p.into_inner());
        let unsynced = hwm.unsynced_rings();
        if let (Err(e), Some((first, last))) = (hwm.sync(), unsynced) {
            drop(hwm);
            syncer.metrics.errors.inc(&["store", "high_water_mark"]);
            markless(first, last);
            fail(&syncer.write_error, &syncer.trouble, format!("the high-water mark cannot be synced: {e}"));
        }
    }
}

/// Says that rings `first..=last` are stored without a durable mark.
fn markless(first: u64, last: u64) {
    let rings = if first == last { format!("ring {first} is") } else { format!("rings {first}..={last} are") };
    log::warn!("{rings} stored without a durable high-water mark: the store stops until the mark can be written");
}

/// Marks the store failing until a write works (see `Store::failing`).
fn fail(write_error: &Mutex<Option<String>>, trouble: &Notify, error: String) {
    *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    trouble.notify_one();
}

/// How often the store's gauges and health check are refreshed between pruning passes.
const GAUGE_INTERVAL: Duration = Duration::from_secs(30);
/// How often a store that cannot write tries to recover.
const RECOVER_INTERVAL: Duration = Duration::from_secs(1);

/// Periodic maintenance: refreshes gauges and the `store` check, prunes every `interval`,
/// and — woken by a failed write, then every second until it works — gets the store writing
/// again, sending the `Damage` the new opening found to `alerts` (the alert engine's queue,
/// whose input is made from a `Damage`: the store does not depend on the engine). Idle, it
/// wakes only every `GAUGE_INTERVAL` (an idle doorbell must cost nothing).
pub async fn maintain<A: From<Damage>>(
    store: Store,
    interval: Duration,
    health: Board,
    alerts: mpsc::Sender<A>,
    stopper: Stopper,
    mut shutdown: Shutdown,
) {
    let trouble = store.trouble.clone();
    let mut last_prune = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let failing = store.write_error().is_some() || store.kept_rings() > 0;
        if !first {
            let wait = if failing { RECOVER_INTERVAL } else { GAUGE_INTERVAL.min(interval) };
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = trouble.notified(), if !failing => {}
            }
        }
        first = false;
        let failing = store.write_error().is_some() || store.kept_rings() > 0;
        let prune = last_prune.elapsed() >= interval;
        let s = store.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if failing && !s.recover() {
                return Ok(None);
            }
            if let Err(e) = s.keep_free() {
                log::error!("store: keeping free space failed: {e}");
            }
            // sled frees its page buffers in bursts; hand what the heap keeps back.
            crate::memory::release_free_heap();
            if prune {
                s.prune().map(Some)
            } else {
                s.update_gauges();
                Ok(None)
            }
        })
        .await;
        match outcome {
            Ok(Ok(Some(p))) => {
                last_prune = tokio::time::Instant::now();
                if p != Pruned::default() {
                    log::info!("store pruned: {} rings, {} alerts", p.rings, p.alerts);
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => log::error!("store pruning failed: {e}"),
            Err(e) => log::error!("store maintenance task failed: {e}"),
        }
        if let Some(damage) = store.take_damage() {
            if alerts.send(A::from(damage)).await.is_err() {
                return;
            }
        }
        store.report_health(&health);
        if store.restart_needed() {
            let reason = "the store opened after a start without it: restarting to read the gallery and the command ledger from it";
            let _ = stopper.request(EXIT_RESTART, reason).await;
            return;
        }
    }
}

fn open_db(path: &Path, limits: &StoreConfig) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(path)
        .cache_capacity((limits.cache_mib * 1024.0 * 1024.0) as u64)
        .mode(sled::Mode::LowSpace)
        // We flush explicitly after every write that must be durable; no background flusher.
        .flush_every_ms(None)
        .open()
}

/// sled could not take its database's file lock: another handle (or sled's own I/O threads,
/// a moment after the last handle went) still holds it.
fn lock_busy(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Errors that mean the database content is unreadable (as opposed to the disk or the
/// permissions being wrong, where moving the data aside would not help).
fn is_unreadable(e: &sled::Error) -> bool {
    match e {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) | sled::Error::Unsupported(_) => true,
        sled::Error::Io(io) => matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof),
        sled::Error::CollectionNotFound(_) => false,
    }
}

/// Copies the database as found to `db.damaged-<ms>` for inspection, keeping the newest
/// `DAMAGED_COPIES`; `None` when it could not be copied (no room, say).
fn copy_damaged(data_dir: &Path, db: &Path) -> Option<PathBuf> {
    let to = data_dir.join(format!("db.damaged-{}", doorbell_base::time::now_ms()));
    let copied = (|| -> std::io::Result<()> {
        std::fs::create_dir(&to)?;
        for entry in walk(db)? {
            let rel = entry.strip_prefix(db).unwrap_or(&entry);
            if entry.is_dir() {
                std::fs::create_dir_all(to.join(rel))?;
            } else {
                std::fs::copy(&entry, to.join(rel))?;
            }
        }
        doorbell_base::durable::sync_dir(data_dir)
    })();
    if let Err(e) = copied {
        log::warn!("store: no copy of the damaged database kept: {e}");
        let _ = std::fs::remove_dir_all(&to);
        return None;
    }
    let mut copies: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("db.damaged-")))
        .collect();
    copies.sort();
    for old in copies.iter().take(copies.len().saturating_sub(DAMAGED_COPIES)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Some(to)
}

/// Every path under `dir` (directories before what they hold).
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        out.push(path.clone());
        if path.is_dir() {
            out.extend(walk(&path)?);
        }
    }
    Ok(out)
}

/// Takes an exclusive lock on `data_dir/agent.lock` so two agents never share a store.
fn lock_dir(data_dir: &Path) -> Result<File, StoreError> {
    let path = data_dir.join("agent.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        // A read-only disk: the lock works on a read-only descriptor of the file as well.
        .or_else(|e| if e.raw_os_error() == Some(libc::EROFS) { File::open(&path) } else { Err(e) })
        .map_err(|source| StoreError::DataDir { path: path.clone(), source })?;
    // A lock just released can still be held for a moment by a child process between its
    // fork and exec (the lock belongs to the open file, which the child shares until exec
    // closes it): wait that out before concluding another agent has the directory.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Locked(data_dir.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(file)
}

/// How long `Store::open` waits for the data directory's lock.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Records in the `rings` and `alerts` trees, and the outbox's depth as the index last had
/// it: readers (status, telemetry) never wait for the outbox lock, held across each flush.
#[derive(Default)]
struct Counts {
    rings: AtomicUsize,
    alerts: AtomicUsize,
    outbox: AtomicUsize,
    outbox_bytes: AtomicUsize,
}

/// The core trees inside a `Store::transact` write.
struct Trees<'a> {
    rings: &'a TransactionalTree,
    alerts: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

fn key_u64(k: &[u8]) -> u64 {
    k.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    pub(super) fn open(dir: &Path, limits: &StoreConfig) -> (Store, Option<Damage>) {
        // A reopen right after a drop in the same process: sled's background I/O threads can
        // hold the database's file lock a moment longer (seen once on a loaded machine).
        let end = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Store::open(dir, limits, Arc::new(Metrics::default())) {
                Err(e)
                    if std::time::Instant::now() < end
                        && (matches!(e, StoreError::Locked(_)) || matches!(&e, StoreError::Sled(s) if lock_busy(s))) =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
    }

    fn alert(key: &str, severity: Severity, state: AlertState) -> AlertV1 {
        AlertV1 {
            id: format!("id-{key}"),
            key: key.into(),
            rule: key.into(),
            severity,
            state,
            message: "m".into(),
            value: None,
            threshold: None,
            raised_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn reverse_iteration_sees_keys_up_to_the_patched_bound() {
        // vendor/sled shrank the "above every key" bound of unbounded reverse iteration
        // from 1 MiB to 4 KiB of 0xFF; keys up to that length are still all seen.
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), &StoreConfig::default());
        let tree = s.tree("bound").unwrap();
        // Enough keys for many tree nodes, the longest 0xFF runs last.
        let mut keys: Vec<Vec<u8>> = (0u32..5000).map(|i| [&[0xFF][..], &i.to_be_bytes()].concat()).collect();
        keys.extend([1, 8, 128, 1000, 2000, 3000, 4095, 4096].iter().map(|n| vec![0xFF; *n]));
        for k in &keys {
            tree.insert(k, b"v").unwrap();
        }
        let mut want = keys.clone();
        want.sort();
        want.reverse();
        let got: Vec<Vec<u8>> = tree.iter().keys().rev().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn writes_flushed_across_segments_read_back_after_reopen() {
        // vendor/sled gives the pages of its 512 KiB segment write buffer back to the kernel
        // once they are on disk ([buffer patch]); a page given back too early would reach the
        // disk as zeros and fail its checksum. ~1.4 MB in groups of 1-5 writes per flush
        // crosses two segment boundaries and many page boundaries mid-group.
        let dir = tempfile::tempdir().unwrap();
        let value = |i: u32| vec![(i % 251) as u8; 1500 + (i as usize % 13) * 97];
        let written = 640u32;
        {
            let (s, _) = open(dir.path(), &StoreConfig::default());
            let tree = s.tree("segments").unwrap();
            let mut i = 0;
            while i < written {
                for _ in 0..=(i % 5) {
                    if i < written {
                        tree.insert(i.to_be_bytes(), value(i)).unwrap();
                        i += 1;
                    }
                }
                s.flush().unwrap();
            }
            assert!(std::fs::metadata(dir.path().join("db/db")).unwrap().len() > 2 * 512 * 1024);
        }
        let (s, reset) = open(dir.path(), &StoreConfig::default());
        assert!(reset.is_none(), "the store was reset on reopen");
        let tree = s.tree("segments").unwrap();
        for i in 0..written {
            assert_eq!(tree.get(i.to_be_bytes()).unwrap().as_deref(), Some(&value(i)[..]), "record {i}");
        }
    }

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _) = open(dir.path(), &StoreConfig::default());
        let e = Store::open(dir.path(), &StoreConfig::default(), Arc::new(Metrics::default()));
        assert!(matches!(e, Err(StoreError::Locked(_))));
    }

    #[test]
    fn prune_drops_cleared_low_severity_first() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreConfig { max_alerts: 10, ..StoreConfig::default() };
        let (s, _) = open(dir.path(), &limits);
        let critical = s.insert_alert(&alert("c", Severity::Critical, AlertState::Cleared), &[]).unwrap();
        let active = s.insert_alert(&alert("a", Severity::Warning, AlertState::Raised), &[]).unwrap();
        for i in 0..10 {
            s.insert_alert(&alert(&format!("w{i}"), Severity::Warning, AlertState::Cleared), &[]).unwrap();
        }
        assert_eq!(s.prune().unwrap(), Pruned { rings: 0, alerts: 2 });
        let keys: Vec<u64> = s.alerts(false, 100).into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&critical) && keys.contains(&active));
        assert_eq!(keys.len(), 10);
    }

    #[test]
    fn counts_follow_writes_pruning_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreConfig { max_rings: 5, max_alerts: 10, ..StoreConfig::default() };
        let ring = |seq| RingV1 {
            id: format!("r{seq}"),
            seq,
            trigger: "button".into(),
            result: RingResult::NoFace,
            name: None,
            confidence: None,
            stage_ms: Default::default(),
            reason: None,
            ts_ms: seq,
        };
        {
            let (s, _) = open(dir.path(), &limits);
            for seq in 1..=8 {
                s.put_ring(&ring(seq), &[]).unwrap();
            }
            // Writing the same ring again (a retried write) must not count it twice.
            s.put_ring(&ring(8), &[]).unwrap();
            let key = s.insert_alert(&alert("a", Severity::Major, AlertState::Raised), &[]).unwrap();
            s.update_alert(key, &alert("a", Severity::Major, AlertState::Cleared), &[]).unwrap();
            assert_eq!(s.counts(), (8, 1, 0));
            assert_eq!(s.prune().unwrap(), Pruned { rings: 3, alerts: 0 });
            assert_eq!(s.counts(), (5, 1, 0));
            assert_eq!(s.rings(100).len(), 5);
        }
        let (s, _) = open(dir.path(), &limits);
        assert_eq!(s.counts(), (5, 1, 0));
        assert_eq!(s.rings(100).iter().map(|r| r.seq).collect::<Vec<_>>(), vec![8, 7, 6, 5, 4]);
    }

    #[test]
    fn sled_io_errors_read_as_the_os_words_them() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let direct = StoreError::from(sled::Error::Io(std::io::Error::from_raw_os_error(libc::EROFS)));
        assert_eq!(direct.to_string(), "store: I/O error: Read-only file system (os error 30)");
        // What sled hands out after a failure: a clone carrying the original's debug text.
        let cloned = sled::Error::Io(std::io::Error::new(enospc.kind(), format!("{enospc:?}")));
        assert_eq!(sled_message(&cloned), "I/O error: No space left on device (os error 28)");
        // sled's own messages that merely mention an OS error stay whole.
        let lock = sled::Error::Io(std::io::Error::other(format!("could not acquire lock on \"db\": {enospc:?}")));
        assert!(sled_message(&lock).starts_with("I/O error: could not acquire lock on"));
        assert!(lock_busy(&lock) && !lock_busy(&cloned));
    }

    #[test]
    fn unreadable_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(dir.path().join("db/db"), vec![0xA5; 4096]).unwrap();
        let (s, damage) = open(dir.path(), &StoreConfig::default());
        let Some(Damage::Reset { moved_to, .. }) = damage else { panic!("garbage must trigger a reset: {damage:?}") };
        assert!(moved_to.exists());
        assert_eq!(s.counts(), (0, 0, 0));
    }

    pub(super) fn ring(seq: u64) -> RingV1 {
        RingV1 {
            id: format!("r{seq}"),
            seq,
            ts_ms: 1,
            trigger: "button".into(),
            result: RingResult::NoFace,
            name: None,
            confidence: None,
            reason: None,
            stage_ms: StageMs::default(),
        }
    }

    #[test]
    fn a_database_back_with_fewer_rings_is_reported_copied_and_numbers_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = open(dir.path(), &StoreConfig::default());
            for seq in 1..=8 {
                s.put_ring(&ring(seq), &[]).unwrap();
            }
            // A ring announced from memory while the store could not write, then lost.
            s.keep_ring(ring(9), Vec::new(), Vec::new());
            s.close().unwrap();
        }
        std::fs::remove_dir_all(dir.path().join("db")).unwrap();
        let (s, damage) = open(dir.path(), &StoreConfig::default());
        let Some(Damage::Lost { stored: 8, found: 0, copy: Some(copy) }) = &damage else { panic!("{damage:?}") };
        assert!(copy.exists());
        assert_eq!(damage.as_ref().unwrap().alert_key(), "store_data_lost");
        assert!(damage.unwrap().message().starts_with("the store came back without rings 1..=8 that it had reported stored"));
        assert_eq!(s.last_ring_seq(), 9, "numbers handed out are never handed out again");
        s.put_ring(&ring(10), &[]).unwrap();
        s.close().unwrap();
        drop(s);
        // Reported once: the next start finds what the mark says.
        let (s, damage) = open(dir.path(), &StoreConfig::default());
        assert!(damage.is_none(), "{damage:?}");
        assert_eq!(s.last_ring_seq(), 10);
        // After a crash, numbering skips what the lease covered: nothing announced from
        // memory before it is numbered again.
        s.keep_ring(ring(11), Vec::new(), Vec::new());
        drop(s);
        let (s, _) = open(dir.path(), &StoreConfig::default());
        assert_eq!(s.last_ring_seq(), 11 + hwm::LEASE);
    }

    #[test]
    fn newer_records_are_skipped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), &StoreConfig { max_alerts: 10, ..StoreConfig::default() });
        let payload = [9u8, 0];
        let mut future = vec![1u8];
        future.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        future.extend_from_slice(&payload);
        // Far above the ids sled hands out here, like a record another version wrote.
        let far = u64::MAX / 2;
        s.gen().unwrap().alerts.insert(far.to_be_bytes(), future).unwrap();
        for i in 0..12 {
            s.insert_alert(&alert(&format!("w{i}"), Severity::Warning, AlertState::Cleared), &[]).unwrap();
        }
        assert_eq!(s.alerts(false, 100).len(), 12);
        s.prune().unwrap();
        assert!(s.gen().unwrap().alerts.get(far.to_be_bytes()).unwrap().is_some(), "newer record must survive pruning");
        assert!(s.metrics.store_skipped.get(&["newer_version"]) >= 1.0);
    }
}
