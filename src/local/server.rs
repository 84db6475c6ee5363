//! Agent side of the local control socket: binding (a stale socket left by a crash is
//! replaced, a live one or any other file never is), mode 0660, a bounded number of
//! connections, request lines bounded in size and time, and the relay of each request's
//! lifecycle answers from the `cmd::Dispatcher` back to its connection.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::cmd::{Inbound, Origin, Response, LOCAL_STEPS};
use crate::config::ControlConfig;
use crate::shutdown::Shutdown;

/// Who may connect: the agent's user and group (operators are added to the group).
const MODE: u32 = 0o660;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A running agent answers on it (two agents configured with the same `control.socket`).
    #[error("{0}: another agent is answering on this socket (control.socket must differ per agent)")]
    InUse(PathBuf),
    /// Something else is at the path.
    #[error("{0} exists and is not a socket; refusing to replace it (control.socket)")]
    NotASocket(PathBuf),
    /// A file-system or socket call failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The bound socket and its limits.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    max_bytes: usize,
    max_connections: usize,
    timeout: Duration,
}

/// One request line as read.
enum Line {
    /// A complete line (without its newline).
    Request(Vec<u8>),
    /// More than the limit without a newline; the rest is not read.
    TooLarge,
}

impl Server {
    /// Binds `path` with mode 0660, creating its directory. Runs inside the runtime.
    pub fn bind(path: &Path, cfg: &ControlConfig) -> Result<Server, ServerError> {
        let io_err = |action| move |source| ServerError::Io { path: path.to_path_buf(), action, source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err("creating its directory"))?;
        }
        match fs::symlink_metadata(path) {
            // One agent per data directory holds agent.lock, but two data directories may
            // name one socket: only a socket nobody answers on is stale.
            Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ServerError::InUse(path.to_path_buf())),
                Err(_) => fs::remove_file(path).map_err(io_err("removing the stale socket"))?,
            },
            Ok(_) => return Err(ServerError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading")(e)),
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err("binding"))?;
        // bind(2) applies the umask (0027 under the unit: no group write yet), so until this
        // chmod the socket is narrower than intended, never wider.
        fs::set_permissions(path, fs::Permissions::from_mode(MODE)).map_err(io_err("setting its mode"))?;
        listener.set_nonblocking(true).map_err(io_err("configuring"))?;
        let listener = UnixListener::from_std(listener).map_err(io_err("registering"))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            max_bytes: cfg.max_request_bytes(),
            max_connections: cfg.max_connections,
            timeout: cfg.timeout,
        })
    }

    /// Serves connections until shutdown, then removes the socket file.
    pub async fn run(self, commands: mpsc::Sender<Inbound>, mut shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let this = Arc::new(self);
        loop {
            let stream = tokio::select! {
                _ = shutdown.recv() => break,
                accepted = this.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning on accept.
                        log::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                let busy =
                    Response::rejected("", b"", format!("busy: {} connections are open (control.max_connections)", this.max_connections));
                // A fresh socket's buffer takes one short line; never wait for this client.
                let _ = stream.try_write(&line_of(&busy.to_json()));
                continue;
            };
            let (this, commands, shutdown) = (this.clone(), commands.clone(), shutdown.clone());
            tokio::spawn(async move { this.connection(stream, slot, commands, shutdown).await });
        }
        if let Err(e) = fs::remove_file(&this.path) {
            log::warn!("control socket: removing {}: {e}", this.path.display());
        }
    }

    /// Serves the requests of one connection, one after the other.
    async fn connection(&self, stream: UnixStream, slot: OwnedSemaphorePermit, commands: mpsc::Sender<Inbound>, mut shutdown: Shutdown) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        // Declared after the stream's halves, so dropped before them: the slot is free by the
        // time the client sees its connection close and may connect again at once.
        let _slot = slot;
        loop {
            let read = tokio::select! {
                _ = shutdown.recv() => return,
                read = tokio::time::timeout(self.timeout, read_line(&mut reader, self.max_bytes)) => read,
            };
            let payload = match read {
                Ok(Ok(Some(Line::Request(line)))) => line,
                Ok(Ok(None)) => return,
                Ok(Ok(Some(Line::TooLarge))) => {
                    let reason = format!("too large: a request line is at most {} bytes (control.max_request_mib)", self.max_bytes);
                    log::warn!("control socket: request refused: {reason}");
                    self.send(&mut write, &Response::rejected("", b"", reason).to_json()).await;
                    return;
                }
                Ok(Err(e)) => {
                    log::debug!("control socket: reading a request: {e}");
                    return;
                }
                Err(_) => {
                    let reason = format!("timeout: no complete request line within {}", humantime::format_duration(self.timeout));
                    self.send(&mut write, &Response::rejected("", b"", reason).to_json()).await;
                    return;
                }
            };
            if payload.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let (reply, mut answers) = mpsc::channel(LOCAL_STEPS);
            if let Err(e) = commands.try_send(Inbound { origin: Origin::Local(reply), payload }) {
                let busy = Response::rejected_local(&e.into_inner().payload, "busy: too many commands in progress");
                if !self.send(&mut write, &busy.to_json()).await {
                    return;
                }
                continue;
            }
            // The dispatcher drops its end once it is done with the request.
            let mut finished = false;
            while let Some(answer) = answers.recv().await {
                finished = matches!(answer.get("status").and_then(Value::as_str), Some("successful" | "failed"));
                if !self.send(&mut write, &answer).await {
                    return;
                }
            }
            if !finished {
                // No final answer will come (a repeated id still running, or `restart`):
                // closing tells the client so instead of leaving it waiting.
                return;
            }
        }
    }

    /// Writes one answer line within the timeout; false if the client is gone or too slow.
    async fn send(&self, write: &mut OwnedWriteHalf, answer: &Value) -> bool {
        matches!(tokio::time::timeout(self.timeout, write.write_all(&line_of(answer))).await, Ok(Ok(())))
    }
}

/// Reads one line of at most `max` bytes; `None` at the end of the stream. A last line
/// without a newline counts (a client may shut its sending side instead).
async fn read_line(reader: &mut BufReader<OwnedReadHalf>, max: usize) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(max as u64 + 1).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > max {
        return Ok(Some(Line::TooLarge));
    }
    Ok(Some(Line::Request(line)))
}

fn line_of(answer: &Value) -> Vec<u8> {
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    line
}
