//! [limits patch] Resource limits for the accept loop and for request-header parsing.
//!
//! This module is not part of upstream tiny_http 0.12.0; see `PATCHES.md` at the crate root.
//! Everything here is only active for servers built with
//! [`Server::from_listener_with_limits`](crate::Server::from_listener_with_limits), except
//! [`is_fatal_accept_error`], which every server uses to survive transient `accept()` errors.

use std::collections::VecDeque;
use std::io::{Error as IoError, ErrorKind, Result as IoResult};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// Limits that keep a server's threads, memory and responsiveness bounded under hostile or
/// broken clients. Passed to
/// [`Server::from_listener_with_limits`](crate::Server::from_listener_with_limits).
///
/// All durations and sizes must be non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of connections served at once (one thread each). When a new connection
    /// arrives and this many are open, the oldest connection that has had no request in
    /// progress for a moment (idle keep-alive, silent or trickling client) is closed to make
    /// room, so a pile of idle connections can never lock out a fresh client. Connections
    /// whose request is being answered are never closed for this: the new connection waits
    /// (briefly) for a slot instead.
    pub max_connections: usize,
    /// Read timeout of accepted sockets. Bounds how long a keep-alive connection may stay idle
    /// between requests, and any single blocking read (including reads of a request body).
    pub read_timeout: Duration,
    /// Write timeout of accepted sockets (a client that does not read its response).
    pub write_timeout: Duration,
    /// The request line and all headers must have arrived within this time, counted from the
    /// first byte of the request; otherwise the client gets `408` and the connection is closed.
    pub header_deadline: Duration,
    /// Maximum size in bytes of the request line plus all header lines (CRLFs included);
    /// a larger request gets `431 Request Header Fields Too Large` and the connection is closed.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 32,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            header_deadline: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.max_connections == 0 || self.max_header_bytes == 0 {
            return Err("Limits: max_connections and max_header_bytes must be non-zero");
        }
        if self.read_timeout.is_zero()
            || self.write_timeout.is_zero()
            || self.header_deadline.is_zero()
        {
            return Err("Limits: timeouts and header_deadline must be non-zero");
        }
        Ok(())
    }
}

/// Pause of the accept loop after a transient `accept()` error. Without it, an error that
/// repeats immediately (EMFILE: the pending connection stays in the backlog) would spin a core.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Whether an `accept()` error means the listener itself is unusable, so that retrying is
/// pointless. Everything else (EMFILE/ENFILE/ENOBUFS/ENOMEM under a flood, ECONNABORTED,
/// EPROTO, EPERM, EINTR, EAGAIN from SO_RCVTIMEO on the listener, ...) is transient.
pub(crate) fn is_fatal_accept_error(e: &IoError) -> bool {
    // EINVAL: the socket is not (or no longer) listening.
    if e.kind() == ErrorKind::InvalidInput {
        return true;
    }
    // EBADF (9), EFAULT (14): the descriptor is broken. These numbers are the same on Linux
    // (every architecture), the BSDs and macOS; spelled out to avoid a `libc` dependency.
    #[cfg(unix)]
    if let Some(9) | Some(14) = e.raw_os_error() {
        return true;
    }
    false
}

fn set_read_timeout(conn: &Connection, timeout: Duration) -> IoResult<()> {
    match conn {
        Connection::Tcp(s) => s.set_read_timeout(Some(timeout)),
        #[cfg(unix)]
        Connection::Unix(s) => s.set_read_timeout(Some(timeout)),
    }
}

fn set_write_timeout(conn: &Connection, timeout: Duration) -> IoResult<()> {
    match conn {
        Connection::Tcp(s) => s.set_write_timeout(Some(timeout)),
        #[cfg(unix)]
        Connection::Unix(s) => s.set_write_timeout(Some(timeout)),
    }
}

/// How long the accept thread waits for a slot at capacity before it gives up and drops the
/// new connection. A slot frees when an evicted connection's thread ends (microseconds) or
/// when a busy connection's request has been answered and its client closes; waiting longer
/// only happens when the application itself is stuck.
const ADMIT_WAIT: Duration = Duration::from_millis(500);

/// A connection becomes a candidate for eviction only after it has been idle (no request in
/// progress) this long, so that a client that has just connected and is about to send its
/// request is not cut off by the next one. Slow or silent clients stay idle far longer.
const MIN_IDLE_FOR_EVICTION: Duration = Duration::from_millis(50);

/// How often a waiting admission re-checks for connections that have become evictable.
const ADMIT_RECHECK: Duration = Duration::from_millis(20);

/// Whether a connection has a request in the application's hands, and since when it has not.
/// Shared by the tracker (which reads it to pick an eviction victim) and the connection's
/// thread (which marks requests as they are handed over and answered).
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` at which the connection last became idle; `BUSY` while a
    /// request is being answered.
    idle_since_ms: AtomicU64,
}

const BUSY: u64 = u64::MAX;

impl Activity {
    fn new(epoch: Instant) -> Arc<Activity> {
        let activity = Arc::new(Activity { epoch, idle_since_ms: AtomicU64::new(0) });
        activity.set_idle();
        activity
    }

    fn set_idle(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms.min(BUSY - 1), Ordering::Release);
    }

    /// How long the connection has been idle at `now`; `None` while it is busy.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        match self.idle_since_ms.load(Ordering::Acquire) {
            BUSY => None,
            ms => Some(now.saturating_duration_since(self.epoch + Duration::from_millis(ms))),
        }
    }
}

/// Marks its connection busy while a request is in the application's hands; held by the
/// `Request` and dropped once it has been answered (or dropped unanswered).
pub(crate) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set_idle();
    }
}

/// Tracks the live connection threads of one server and enforces `max_connections`.
pub(crate) struct ConnTracker {
    limits: Limits,
    /// Time origin of every connection's `Activity`.
    epoch: Instant,
    state: Mutex<TrackerState>,
    /// Notified whenever a connection slot is freed.
    slot_freed: Condvar,
}

struct TrackerState {
    next_id: u64,
    /// Live connection threads, oldest first, each with a clone of its socket that is used to
    /// shut it down (`None` once the connection has been evicted but its thread has not ended
    /// yet) and its activity.
    live: VecDeque<LiveConn>,
}

struct LiveConn {
    id: u64,
    handle: Option<Connection>,
    activity: Arc<Activity>,
}

/// What a connection gets when it is admitted by [`ConnTracker::admit`].
pub(crate) struct Admission {
    /// Must live as long as the connection's task: it is owned by the task, which the pool
    /// drops once its thread is idle again (see `TaskPool`).
    pub(crate) guard: ConnGuard,
    /// To be handed to the `ClientConnection`.
    pub(crate) header_limits: HeaderLimits,
}

/// Frees the connection's slot in the tracker when dropped (also when its thread panics).
pub(crate) struct ConnGuard {
    tracker: Arc<ConnTracker>,
    id: u64,
}

impl ConnTracker {
    pub(crate) fn new(limits: Limits) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            limits,
            epoch: Instant::now(),
            state: Mutex::new(TrackerState {
                next_id: 0,
                live: VecDeque::new(),
            }),
            slot_freed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // nothing in here can be left inconsistent by a panic, so ignore poisoning
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prepares a freshly accepted connection: sets its socket timeouts and takes one of the
    /// `max_connections` slots. At capacity it evicts the oldest connection that has been idle
    /// for `MIN_IDLE_FOR_EVICTION`; if there is none (every connection is answering a request
    /// or has only just arrived), it waits up to `ADMIT_WAIT` for a slot to free.
    ///
    /// Returns `None` if the connection must be dropped instead of being served.
    pub(crate) fn admit(self: &Arc<Self>, conn: &Connection) -> Option<Admission> {
        let prepared = set_read_timeout(conn, self.limits.read_timeout)
            .and_then(|_| set_write_timeout(conn, self.limits.write_timeout))
            .and_then(|_| Ok((conn.try_clone()?, conn.try_clone()?)));
        let (evict_handle, timeout_handle) = match prepared {
            Ok(handles) => handles,
            Err(e) => {
                log::warn!("Dropping new client, cannot set up its socket: {}", e);
                return None;
            }
        };

        let mut state = self.lock();
        let deadline = Instant::now() + ADMIT_WAIT;
        // There are never more than `max_connections` connection threads: evicted ones count
        // until their thread has really ended.
        while state.live.len() >= self.limits.max_connections {
            let now = Instant::now();
            let not_evicted = state.live.iter().filter(|c| c.handle.is_some()).count();
            if not_evicted >= self.limits.max_connections {
                let victim = state
                    .live
                    .iter_mut()
                    .filter(|c| c.handle.is_some())
                    .find(|c| c.activity.idle_for(now).map_or(false, |idle| idle >= MIN_IDLE_FOR_EVICTION));
                if let Some(victim) = victim {
                    log::debug!("Connection limit reached, closing the oldest idle connection");
                    // Its blocked read returns at once, so its thread ends and frees its slot.
                    if let Some(handle) = victim.handle.take() {
                        let _ = handle.shutdown(Shutdown::Both);
                    }
                }
            }
            if now >= deadline {
                log::warn!("Connection limit reached and no connection ended, dropping new client");
                return None;
            }
            state = self
                .slot_freed
                .wait_timeout(state, (deadline - now).min(ADMIT_RECHECK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }

        let id = state.next_id;
        state.next_id += 1;
        let activity = Activity::new(self.epoch);
        state.live.push_back(LiveConn { id, handle: Some(evict_handle), activity: Arc::clone(&activity) });

        Some(Admission {
            guard: ConnGuard {
                tracker: Arc::clone(self),
                id,
            },
            header_limits: HeaderLimits {
                socket: timeout_handle,
                activity,
                read_timeout: self.limits.read_timeout,
                header_deadline: self.limits.header_deadline,
                max_header_bytes: self.limits.max_header_bytes,
            },
        })
    }

    /// Shuts down the reading half of every live connection, so that their threads end.
    /// Used when the server is dropped; responses still in progress can be completed.
    pub(crate) fn shutdown_reads(&self) {
        for conn in self.lock().live.iter() {
            if let Some(ref handle) = conn.handle {
                let _ = handle.shutdown(Shutdown::Read);
            }
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        if let Some(pos) = state.live.iter().position(|c| c.id == self.id) {
            state.live.remove(pos);
        }
        drop(state);
        self.tracker.slot_freed.notify_all();
    }
}

/// While the headers of a request are being read, the socket read timeout is lowered to the
/// time left until the header deadline. It is refreshed at most this often (one `setsockopt`
/// per refresh), so the deadline is enforced to within this much.
const REARM_INTERVAL: Duration = Duration::from_millis(50);

/// Header limits of one connection; used by `ClientConnection`.
pub(crate) struct HeaderLimits {
    /// A clone of the connection's socket, only used to change its read timeout.
    socket: Connection,
    /// Marked busy while a request of this connection is in the application's hands.
    activity: Arc<Activity>,
    read_timeout: Duration,
    header_deadline: Duration,
    max_header_bytes: usize,
}

/// Progress of reading the head (request line + headers) of one request.
#[derive(Default)]
pub(crate) struct HeaderProgress {
    /// When the first byte of the request arrived.
    started: Option<Instant>,
    /// When the socket read timeout was last lowered.
    armed_at: Option<Instant>,
    /// Bytes of the request line and headers read so far.
    bytes: usize,
}

impl HeaderLimits {
    /// To call before reading the next header byte: fails with `TimedOut` once the header
    /// deadline has passed, and makes sure a blocking read cannot outlast the deadline.
    /// Before the first byte of a request only the normal read timeout applies (idle
    /// keep-alive connection).
    pub(crate) fn before_read(&self, progress: &mut HeaderProgress) -> IoResult<()> {
        let started = match progress.started {
            Some(started) => started,
            None => return Ok(()),
        };
        let left = self.header_deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(deadline_exceeded());
        }
        if !matches!(progress.armed_at, Some(at) if at.elapsed() < REARM_INTERVAL) {
            set_read_timeout(&self.socket, left.min(self.read_timeout))?;
            progress.armed_at = Some(Instant::now());
        }
        Ok(())
    }

    /// To call on a read error while reading headers: a read that timed out because of the
    /// lowered timeout becomes `TimedOut` (answered with 408) once the deadline has passed.
    /// (On Unix a socket read timeout shows up as `WouldBlock`.)
    pub(crate) fn map_read_error(&self, progress: &HeaderProgress, e: IoError) -> IoError {
        let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
        match progress.started {
            Some(started) if timed_out && started.elapsed() >= self.header_deadline => {
                deadline_exceeded()
            }
            _ => e,
        }
    }

    /// To call after a header byte was read. Returns `false` if the head of the request is now
    /// larger than `max_header_bytes`.
    pub(crate) fn count_byte(&self, progress: &mut HeaderProgress) -> bool {
        progress.started.get_or_insert_with(Instant::now);
        progress.bytes += 1;
        progress.bytes <= self.max_header_bytes
    }

    /// To call once all headers were read: restores the normal read timeout for the body and
    /// for waiting on the next request, and marks the connection busy until the returned
    /// guard (to be held by the `Request`) is dropped.
    pub(crate) fn finish(&self, progress: &HeaderProgress) -> IoResult<BusyGuard> {
        if progress.armed_at.is_some() {
            set_read_timeout(&self.socket, self.read_timeout)?;
        }
        self.activity.idle_since_ms.store(BUSY, Ordering::Release);
        Ok(BusyGuard(Arc::clone(&self.activity)))
    }
}

fn deadline_exceeded() -> IoError {
    IoError::new(ErrorKind::TimedOut, "request header deadline exceeded")
}
