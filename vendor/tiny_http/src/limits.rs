//! [limits patch] Resource limits for the accept loop and for request-header parsing.
//!
//! This module is not part of upstream tiny_http 0.12.0; see `PATCHES.md` at the crate root.
//! Everything here is only active for servers built with
//! [`Server::from_listener_with_limits`](crate::Server::from_listener_with_limits), except
//! [`is_fatal_accept_error`], which every server uses to survive transient `accept()` errors.

use std::collections::VecDeque;
use std::io::{Error as IoError, ErrorKind, Result as IoResult};
use std::net::Shutdown;
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
    /// arrives and this many are open, the oldest one is closed to make room, so a pile of idle
    /// connections can never lock out a fresh client.
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

/// How long the accept thread waits for an evicted connection's thread to end before it gives
/// up and drops the new connection instead. An evicted connection normally ends within
/// microseconds (its blocked read returns); it only lingers while the application still holds
/// its previous request, i.e. when the application itself is stuck.
const EVICTION_GRACE: Duration = Duration::from_millis(250);

/// Tracks the live connection threads of one server and enforces `max_connections`.
pub(crate) struct ConnTracker {
    limits: Limits,
    state: Mutex<TrackerState>,
    /// Notified whenever a connection thread ends.
    slot_freed: Condvar,
}

struct TrackerState {
    next_id: u64,
    /// Live connection threads, oldest first, each with a clone of its socket that is used to
    /// shut it down. The clone is `None` once the connection has been evicted (shut down) but
    /// its thread has not ended yet.
    live: VecDeque<(u64, Option<Connection>)>,
}

/// What a connection gets when it is admitted by [`ConnTracker::admit`].
pub(crate) struct Admission {
    /// Must live as long as the connection's thread serves it.
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
    /// `max_connections` slots, evicting the oldest connection if all are taken.
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

        // At capacity: shut down the oldest connection that is not already being evicted.
        // Its blocked read returns at once, so its thread ends and frees its slot.
        let not_evicted = state.live.iter().filter(|(_, h)| h.is_some()).count();
        if not_evicted >= self.limits.max_connections {
            if let Some(oldest) = state.live.iter_mut().find_map(|(_, h)| h.take()) {
                log::debug!("Connection limit reached, closing the oldest connection");
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }

        // Wait (bounded) until an evicted thread has really ended, so that there are never
        // more than `max_connections` connection threads.
        let deadline = Instant::now() + EVICTION_GRACE;
        while state.live.len() >= self.limits.max_connections {
            let now = Instant::now();
            if now >= deadline {
                log::warn!("Connection limit reached and no connection ended, dropping new client");
                return None;
            }
            state = self
                .slot_freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }

        let id = state.next_id;
        state.next_id += 1;
        state.live.push_back((id, Some(evict_handle)));

        Some(Admission {
            guard: ConnGuard {
                tracker: Arc::clone(self),
                id,
            },
            header_limits: HeaderLimits {
                socket: timeout_handle,
                read_timeout: self.limits.read_timeout,
                header_deadline: self.limits.header_deadline,
                max_header_bytes: self.limits.max_header_bytes,
            },
        })
    }

    /// Shuts down the reading half of every live connection, so that their threads end.
    /// Used when the server is dropped; responses still in progress can be completed.
    pub(crate) fn shutdown_reads(&self) {
        for (_, handle) in self.lock().live.iter() {
            if let Some(handle) = handle {
                let _ = handle.shutdown(Shutdown::Read);
            }
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut state = self.tracker.lock();
        if let Some(pos) = state.live.iter().position(|(id, _)| *id == self.id) {
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
        if progress
            .armed_at
            .map_or(true, |at| at.elapsed() >= REARM_INTERVAL)
        {
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
    /// for waiting on the next request.
    pub(crate) fn finish(&self, progress: &HeaderProgress) -> IoResult<()> {
        if progress.armed_at.is_some() {
            set_read_timeout(&self.socket, self.read_timeout)?;
        }
        Ok(())
    }
}

fn deadline_exceeded() -> IoError {
    IoError::new(ErrorKind::TimedOut, "request header deadline exceeded")
}
