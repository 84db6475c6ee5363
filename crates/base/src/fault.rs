//! Fault injection for the systemd and crash-point tests. Compiled in only with the
//! `fault-injection` cargo feature; release builds get the no-op versions below.
//!
//! - Agent faults come from a trailer appended to the agent binary itself
//!   (`\nDOORBELL-FAULT:<name>\n` in its last bytes), so one test build yields many distinct
//!   "versions" that each misbehave in their own way, exactly as a bad release would: the
//!   fault travels inside the artifact, not in the device's environment.
//! - Crash points: with `DOORBELL_CRASH_AFTER_STEP=N` the process SIGKILLs itself right after
//!   its N-th durable step (write, fsync, rename, directory fsync, symlink).
//! - A hung store: with `DOORBELL_STORE_HANG=FILE` every record write hangs while FILE
//!   exists, as sled's flush does on a failing card.

/// A misbehaviour an agent build can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic (and so abort) right at start, before anything else.
    CrashAtStart,
    /// Never send READY (systemd's TimeoutStartSec must catch it).
    HangBeforeReady,
    /// Send READY, then stop the watchdog pings (WatchdogSec must catch it).
    HangAfterReady,
    /// Come up, but with a required health check failing.
    Unhealthy,
    /// Come up healthy, but never ask for the commit (the trial deadline must catch it).
    NoCommit,
    /// Come up, but unable to reach the fleet broker: the link dials a closed loopback port
    /// (the trial's broker check must roll it back).
    NoBroker,
    /// Come up healthy, but holding `BLOAT_MIB` more resident memory (the canary's RSS
    /// comparison must roll it back).
    Bloat,
}

/// Memory a `Bloat` build allocates and touches at start, MiB.
pub const BLOAT_MIB: usize = 256;

impl Fault {
    /// The name used in the binary trailer.
    pub fn name(self) -> &'static str {
        match self {
            Fault::CrashAtStart => "crash-at-start",
            Fault::HangBeforeReady => "hang-before-ready",
            Fault::HangAfterReady => "hang-after-ready",
            Fault::Unhealthy => "unhealthy",
            Fault::NoCommit => "no-commit",
            Fault::NoBroker => "no-broker",
            Fault::Bloat => "bloat",
        }
    }

    /// All faults.
    pub const ALL: [Fault; 7] = [
        Fault::CrashAtStart,
        Fault::HangBeforeReady,
        Fault::HangAfterReady,
        Fault::Unhealthy,
        Fault::NoCommit,
        Fault::NoBroker,
        Fault::Bloat,
    ];
}

#[cfg(feature = "fault-injection")]
mod imp {
    use super::Fault;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The marker that precedes a fault name in a binary's trailer.
    pub const MARKER: &str = "\nDOORBELL-FAULT:";

    pub fn active() -> Option<Fault> {
        static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
        *FAULT.get_or_init(|| {
            let mut f = std::fs::File::open("/proc/self/exe").ok()?;
            let len = f.metadata().ok()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(64))).ok()?;
            let mut tail = Vec::new();
            f.read_to_end(&mut tail).ok()?;
            // The tail starts inside binary data; only what follows the marker matters.
            let tail = String::from_utf8_lossy(&tail);
            let name = tail.rsplit_once(MARKER)?.1.trim_end();
            let fault = Fault::ALL.into_iter().find(|f| f.name() == name)?;
            log::warn!("fault injection: this build carries the fault `{name}`");
            Some(fault)
        })
    }

    pub fn step(label: &str) {
        static STEPS: AtomicU64 = AtomicU64::new(0);
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        let target = std::env::var("DOORBELL_CRASH_AFTER_STEP").ok().and_then(|v| v.parse::<u64>().ok());
        if target == Some(n) {
            eprintln!("fault injection: killed after durable step {n} ({label})");
            // SAFETY: raising SIGKILL on ourselves; nothing after this runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    pub fn store_write() {
        let Some(flag) = std::env::var_os("DOORBELL_STORE_HANG") else { return };
        let flag = std::path::Path::new(&flag);
        if flag.exists() {
            eprintln!("fault injection: a store write hangs while {} exists", flag.display());
            while flag.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use imp::{active, step, store_write, MARKER};

/// The `CrashAtStart` fault: a panic, which the panic hook logs before it aborts.
#[allow(clippy::panic, reason = "the fault is exactly a panic")]
#[track_caller]
pub fn crash() -> ! {
    panic!("fault injection: this build crashes at start");
}

/// The fault this build carries (never any in a release build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn active() -> Option<Fault> {
    None
}

/// A durable step happened (a crash point in test builds; nothing in a release build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn step(_label: &str) {}

/// The store writes a record (a hang point in test builds; nothing in a release build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn store_write() {}
