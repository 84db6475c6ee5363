//! The thread every record write runs on, and the deadline its callers wait with.
//!
//! After an I/O error sled can hang in a flush for good (a failing card). Were the ring
//! pipeline or the alert engine to make that call, the visitor at the door would never be
//! announced. They hand their write to this thread instead and wait at most
//! `WRITE_DEADLINE`; past it they go on without the write (the ring is kept and announced
//! from memory), and while a write hangs, later ones are refused at once.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a caller waits for its write. Far above an SD card's flush (milliseconds), well
/// below the store's stall (`STALL`) that stops the watchdog.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Writes waiting for the writer; more are refused (the writer is stuck behind one).
pub const WRITER_QUEUE: usize = 16;

/// A write handed to the writer.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs the writes handed over, in order, until every sender is gone. A write must not hand
/// over another: it would wait behind itself.
pub fn run(jobs: Receiver<Job>) {
    for job in jobs {
        job();
    }
}

/// Who decided first whether the caller gets the write's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    GaveUp,
    Done,
}

/// Where a handed-over write stands.
struct State {
    phase: Phase,
    /// The result is in the caller's slot.
    ready: bool,
}

/// Shared by a caller and its write (not generic: one copy of this code for every write).
#[derive(Clone)]
pub struct Call(Arc<(Mutex<State>, Condvar)>);

impl Call {
    fn new() -> Call {
        Call(Arc::new((Mutex::new(State { phase: Phase::Waiting, ready: false }), Condvar::new())))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For the write, once done: true when the caller had already gone on without it (the
    /// write landed late and its effects must be reconciled by whoever repeats it).
    pub fn is_late(&self) -> bool {
        let mut state = self.state();
        if state.phase == Phase::Waiting {
            state.phase = Phase::Done;
        }
        state.phase == Phase::GaveUp
    }

    /// For the write, before it starts: the caller has gone, skip it.
    fn abandoned(&self) -> bool {
        self.state().phase == Phase::GaveUp
    }

    /// For the write: its result is in the slot.
    fn finish(&self) {
        let _ = self.is_late();
        self.state().ready = true;
        self.0 .1.notify_all();
    }

    /// For the caller: waits for the result until `deadline`, then gives up unless the
    /// write has already decided it is in time. True when the result is ready.
    fn wait(&self, deadline: Instant) -> bool {
        let mut state = self.state();
        loop {
            if state.ready {
                return true;
            }
            let now = Instant::now();
            if now >= deadline && state.phase == Phase::Waiting {
                state.phase = Phase::GaveUp;
                return false;
            }
            // Decided in time: the result follows at once.
            let wait = if state.phase == Phase::Done { Duration::from_millis(10) } else { deadline - now };
            state = self.0 .1.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Why the writer did not give a result in time.
pub enum Missed {
    /// The queue is full or the deadline passed.
    Late,
    /// The writer thread is gone.
    Gone,
}

/// Hands `write` to the writer and waits up to `WRITE_DEADLINE` for it to finish. Not
/// generic (the write leaves its result where its caller looks): one copy for every write.
pub fn call(writer: &SyncSender<Job>, write: Box<dyn FnOnce(&Call) + Send>) -> Result<(), Missed> {
    let call = Call::new();
    let mine = call.clone();
    let job: Job = Box::new(move || {
        if !mine.abandoned() {
            write(&mine);
            mine.finish();
        }
    });
    match writer.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(Missed::Late),
        Err(TrySendError::Disconnected(_)) => return Err(Missed::Gone),
    }
    if call.wait(Instant::now() + WRITE_DEADLINE) {
        Ok(())
    } else {
        Err(Missed::Late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> SyncSender<Job> {
        let (tx, rx) = std::sync::mpsc::sync_channel(WRITER_QUEUE);
        std::thread::spawn(move || run(rx));
        tx
    }

    #[test]
    fn a_write_finishes_and_knows_it_was_in_time() {
        let w = writer();
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(call(&w, Box::new(move |c| tx.send(c.is_late()).unwrap())).is_ok());
        assert_eq!(rx.try_recv().ok(), Some(false));
    }

    #[test]
    fn a_hung_write_is_given_up_and_later_writes_are_refused_once_the_queue_fills() {
        let w = writer();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (late_tx, late_rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let first = call(
            &w,
            Box::new(move |c| {
                let _ = hold.recv();
                let _ = late_tx.send(c.is_late());
            }),
        );
        assert!(matches!(first, Err(Missed::Late)));
        assert!(started.elapsed() >= WRITE_DEADLINE);
        // Queued behind the hung write: each waits out its deadline; they are then skipped.
        for _ in 0..WRITER_QUEUE {
            let _ = w.try_send(Box::new(|| {}));
        }
        let refused = Instant::now();
        assert!(matches!(call(&w, Box::new(|_| ())), Err(Missed::Late)));
        assert!(refused.elapsed() < Duration::from_secs(1), "a full queue refuses at once");
        release.send(()).unwrap();
        assert_eq!(late_rx.recv().ok(), Some(true), "the write learns it landed late");
    }
}
