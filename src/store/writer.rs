//! The thread every record write runs on, and the deadline its callers wait with.
//!
//! After an I/O error sled can hang in a flush for good (a failing card). Were the ring
//! pipeline or the alert engine to make that call, the visitor at the door would never be
//! announced. They hand their write to this thread instead and wait at most
//! `WRITE_DEADLINE`; past it they go on without the write (the ring is kept and announced
//! from memory), and while a write hangs, later ones are refused at once.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Where a handed-over write stands, as its caller and the writer agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    GaveUp,
    Done,
}

/// Shared by a caller and its write: which of the two decided first whether the caller got
/// the result.
#[derive(Clone)]
pub struct Call(Arc<Mutex<Phase>>);

impl Call {
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For the write, once done: true when the caller had already gone on without it (the
    /// write landed late and its effects must be reconciled by whoever repeats it).
    pub fn is_late(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Waiting {
            *phase = Phase::Done;
        }
        *phase == Phase::GaveUp
    }

    /// For the write, before it starts: the caller has gone, skip it.
    fn abandoned(&self) -> bool {
        *self.phase() == Phase::GaveUp
    }

    /// For the caller at its deadline: gives up unless the write is done. True when given up.
    fn give_up(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Waiting {
            *phase = Phase::GaveUp;
        }
        *phase == Phase::GaveUp
    }
}

/// Why the writer did not give a result in time.
pub enum Missed {
    /// The queue is full or the deadline passed.
    Late,
    /// The writer thread is gone.
    Gone,
}

/// Hands `write` to the writer and waits up to `WRITE_DEADLINE` for its result.
pub fn call<T: Send + 'static>(writer: &SyncSender<Job>, write: impl FnOnce(&Call) -> T + Send + 'static) -> Result<T, Missed> {
    let call = Call(Arc::new(Mutex::new(Phase::Waiting)));
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    let mine = call.clone();
    let job: Job = Box::new(move || {
        if !mine.abandoned() {
            let _ = reply.send(write(&mine));
        }
    });
    match writer.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(Missed::Late),
        Err(TrySendError::Disconnected(_)) => return Err(Missed::Gone),
    }
    match result.recv_timeout(WRITE_DEADLINE) {
        Ok(value) => Ok(value),
        Err(RecvTimeoutError::Timeout) if call.give_up() => Err(Missed::Late),
        // Done at the deadline: its result is on the way.
        Err(RecvTimeoutError::Timeout) => result.recv().map_err(|_| Missed::Gone),
        Err(RecvTimeoutError::Disconnected) => Err(Missed::Gone),
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
    fn a_write_returns_its_result_and_knows_it_was_in_time() {
        let w = writer();
        assert_eq!(call(&w, |c| c.is_late()).ok(), Some(false));
    }

    #[test]
    fn a_hung_write_is_given_up_and_later_writes_are_refused_once_the_queue_fills() {
        let w = writer();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (late_tx, late_rx) = std::sync::mpsc::channel();
        let started = std::time::Instant::now();
        let first = call(&w, move |c| {
            let _ = hold.recv();
            let _ = late_tx.send(c.is_late());
        });
        assert!(matches!(first, Err(Missed::Late)));
        assert!(started.elapsed() >= WRITE_DEADLINE);
        // Queued behind the hung write: each waits out its deadline; they are then skipped.
        for _ in 0..WRITER_QUEUE {
            let _ = w.try_send(Box::new(|| {}));
        }
        let refused = std::time::Instant::now();
        assert!(matches!(call(&w, |_| ()), Err(Missed::Late)));
        assert!(refused.elapsed() < Duration::from_secs(1), "a full queue refuses at once");
        release.send(()).unwrap();
        assert_eq!(late_rx.recv().ok(), Some(true), "the write learns it landed late");
    }
}
