//! The agent's side of the pipeline worker: starts `doorbell-agent pipeline-worker` as a
//! child, sends it requests with a deadline, kills it when it hangs, restarts it with
//! exponential backoff after failures, and lets it exit when idle (`pipeline.idle_exit`).
//!
//! Nothing here touches a model: the agent process only moves bytes over two pipes. A
//! reader thread turns the worker's stdout into messages on a channel so every wait has a
//! deadline (`recv_timeout`).

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{self, Reply, Request};
use crate::config::PipelineConfig;
use crate::metrics::Metrics;

/// Why a request to the worker got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The worker is down and its next start is not due yet.
    #[error("pipeline worker down ({reason}); next start in {}", humantime::format_duration(*.retry_in))]
    Down {
        /// Why it went down.
        reason: String,
        /// Time until the next start attempt (whole seconds).
        retry_in: Duration,
    },
    /// The worker reports that its models cannot be used.
    #[error("face models unavailable: {0}")]
    Unavailable(String),
    /// No answer within the deadline; the worker was killed.
    #[error("pipeline worker did not answer within {}; killed", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The worker died or could not be started.
    #[error("pipeline worker failed: {0}")]
    Crashed(String),
}

impl WorkerError {
    /// Label for the restarts metric.
    fn kind(&self) -> &'static str {
        match self {
            WorkerError::Down { .. } => "down",
            WorkerError::Unavailable(_) => "models",
            WorkerError::Timeout(_) => "timeout",
            WorkerError::Crashed(_) => "crash",
        }
    }
}

/// The worker's condition, as the health check and the status report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Not started yet, or exited after `idle_exit` (starts on the next request).
    Idle,
    /// Running with its models loaded.
    Up,
    /// Failed; restarts after backoff.
    Failed(WorkerError),
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<io::Result<Option<Reply>>>,
    last_used: Instant,
    last_check: Instant,
}

/// Owns the worker process; used from the ring thread only.
pub struct Supervisor {
    program: PathBuf,
    args: Vec<OsString>,
    cfg: PipelineConfig,
    metrics: Arc<Metrics>,
    running: Option<Running>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<WorkerError>,
}

impl Supervisor {
    /// A supervisor that starts `program args…` (normally this binary with `pipeline-worker`).
    pub fn new(program: PathBuf, args: Vec<OsString>, cfg: PipelineConfig, metrics: Arc<Metrics>) -> Supervisor {
        Supervisor { program, args, cfg, metrics, running: None, failures: 0, retry_at: None, last_error: None }
    }

    /// The worker's condition now.
    pub fn state(&self) -> WorkerState {
        match (&self.running, &self.last_error) {
            (Some(_), _) => WorkerState::Up,
            (None, Some(e)) if self.failures > 0 => WorkerState::Failed(e.clone()),
            _ => WorkerState::Idle,
        }
    }

    /// Sends one request and waits up to `deadline` for its reply, starting the worker first
    /// when needed. A hung worker is killed; every failure schedules a restart with backoff.
    pub fn request(&mut self, request: &Request, deadline: Duration) -> Result<Reply, WorkerError> {
        self.ensure_running()?;
        let Some(run) = self.running.as_mut() else { return Err(WorkerError::Crashed("not running".into())) };
        if let Err(e) = protocol::write(&mut run.stdin, request) {
            return Err(self.fail(WorkerError::Crashed(format!("cannot send the request: {e}"))));
        }
        match run.replies.recv_timeout(deadline) {
            Ok(Ok(Some(reply))) => {
                run.last_used = Instant::now();
                run.last_check = run.last_used;
                self.failures = 0;
                Ok(reply)
            }
            Ok(Ok(None)) | Err(RecvTimeoutError::Disconnected) => {
                let status = self.exit_status();
                Err(self.fail(WorkerError::Crashed(format!("exited while working ({status})"))))
            }
            Ok(Err(e)) => Err(self.fail(WorkerError::Crashed(format!("sent an unreadable reply: {e}")))),
            Err(RecvTimeoutError::Timeout) => Err(self.fail(WorkerError::Timeout(deadline))),
        }
    }

    /// Periodic duties between rings: idle exit, health check, keeping a warm worker up.
    /// Returns how long until it wants to run again.
    pub fn housekeeping(&mut self) -> Duration {
        let now = Instant::now();
        let idle_exit = self.cfg.idle_exit;
        if let Some(run) = &self.running {
            if !idle_exit.is_zero() && now.duration_since(run.last_used) >= idle_exit {
                self.stop();
                log::info!("pipeline worker idle for {}: stopped to free its memory", humantime::format_duration(idle_exit));
                return self.cfg.health_interval;
            }
            if now.duration_since(run.last_check) >= self.cfg.health_interval {
                let _ = self.request(&Request::Ping, self.cfg.health_interval.min(Duration::from_secs(10)));
            }
        } else if idle_exit.is_zero() && self.retry_at.is_none_or(|at| now >= at) {
            // Keep warm: (re)start now rather than on the next ring.
            if let Err(e) = self.ensure_running() {
                log::warn!("{e}");
            }
        }
        let mut next = self.cfg.health_interval;
        if let Some(run) = &self.running {
            if !idle_exit.is_zero() {
                next = next.min(idle_exit.saturating_sub(now.duration_since(run.last_used)));
            }
        } else if let (Some(at), true) = (self.retry_at, idle_exit.is_zero()) {
            next = next.min(at.saturating_duration_since(now));
        }
        next.max(Duration::from_millis(10))
    }

    /// Stops the worker: closes its stdin (it exits on its own), kills it if it lingers.
    pub fn stop(&mut self) {
        if let Some(mut run) = self.running.take() {
            drop(run.stdin);
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                if let Ok(Some(_)) = run.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
    }

    fn ensure_running(&mut self) -> Result<(), WorkerError> {
        if let Some(run) = self.running.as_mut() {
            if let Ok(None) = run.child.try_wait() {
                return Ok(());
            }
            let status = self.exit_status();
            let e = self.fail(WorkerError::Crashed(format!("exited between requests ({status})")));
            // One death between rings costs no ring: start again at once. Repeated ones back off.
            if self.failures > 1 {
                return Err(e);
            }
            self.retry_at = None;
        }
        if let (Some(at), Some(last)) = (self.retry_at, &self.last_error) {
            let now = Instant::now();
            if now < at {
                let retry_in = Duration::from_secs(at.duration_since(now).as_secs_f64().ceil() as u64);
                return Err(match last {
                    // Broken models stay broken until someone fixes the files: say so.
                    WorkerError::Unavailable(_) => last.clone(),
                    _ => WorkerError::Down { reason: last.to_string(), retry_in },
                });
            }
        }
        self.start()
    }

    fn start(&mut self) -> Result<(), WorkerError> {
        let started = Instant::now();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| self.fail(WorkerError::Crashed(format!("cannot start {}: {e}", self.program.display()))))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.fail(WorkerError::Crashed("no pipes to the worker".into())));
        };
        // Replies are awaited one at a time; two slots let an EOF follow a last reply.
        let (tx, replies) = mpsc::sync_channel(2);
        let reader = std::thread::Builder::new().name("worker-out".into()).spawn(move || {
            let mut stdout = io::BufReader::new(stdout);
            loop {
                let message = protocol::read::<Reply>(&mut stdout);
                let end = !matches!(message, Ok(Some(_)));
                if tx.send(message).is_err() || end {
                    return;
                }
            }
        });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.fail(WorkerError::Crashed(format!("cannot start the reader thread: {e}"))));
        }
        let now = Instant::now();
        self.running = Some(Running { child, stdin, replies, last_used: now, last_check: now });
        self.metrics.worker_starts.inc(&[]);
        let first = self.running.as_ref().map(|r| r.replies.recv_timeout(self.cfg.start_timeout));
        match first {
            Some(Ok(Ok(Some(Reply::Ready { load_ms })))) => {
                let took = started.elapsed();
                self.metrics.worker_start_seconds.observe(&[], took.as_secs_f64());
                log::info!("pipeline worker started in {} ms (models loaded in {load_ms:.0} ms)", took.as_millis());
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                Ok(())
            }
            Some(Ok(Ok(Some(Reply::Unavailable(reason))))) => Err(self.fail(WorkerError::Unavailable(reason))),
            Some(Err(RecvTimeoutError::Timeout)) => {
                Err(self
                    .fail(WorkerError::Crashed(format!("not ready within {}; killed", humantime::format_duration(self.cfg.start_timeout)))))
            }
            Some(Ok(Ok(Some(other)))) => Err(self.fail(WorkerError::Crashed(format!("said {other:?} instead of ready")))),
            _ => {
                let status = self.exit_status();
                Err(self.fail(WorkerError::Crashed(format!("exited during start ({status})"))))
            }
        }
    }

    /// Kills the worker and schedules the next start: backoff doubles per consecutive failure.
    fn fail(&mut self, e: WorkerError) -> WorkerError {
        if let Some(mut run) = self.running.take() {
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
        self.failures += 1;
        let factor = 2u32.saturating_pow(self.failures.saturating_sub(1).min(16));
        let backoff = self.cfg.restart_backoff.saturating_mul(factor).min(self.cfg.restart_backoff_max);
        self.retry_at = Some(Instant::now() + backoff);
        self.last_error = Some(e.clone());
        self.metrics.worker_failures.inc(&[e.kind()]);
        log::error!("{e}; next start in {}", humantime::format_duration(backoff));
        e
    }

    fn exit_status(&mut self) -> String {
        let Some(run) = self.running.as_mut() else { return "not running".into() };
        // The worker has closed its stdout; give it a moment to be reaped.
        let end = Instant::now() + Duration::from_millis(200);
        loop {
            match run.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => return "still running".into(),
                Err(e) => return format!("status unknown: {e}"),
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}
