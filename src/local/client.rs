//! CLI side of the local control socket: connect (with a clear reason when no agent runs
//! or the caller may not use it), send one request, follow its answers to the final one.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Longest wait for one answer line: a face command waits up to 60 s for the ring thread.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait to hand the request over (a gallery import is one line of megabytes).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command through the local socket did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// No socket at the path: the agent is not running (or another `control.socket`).
    #[error(
        "no agent is running: {0} does not exist (start it with `systemctl start doorbell-agent`, or check control.socket in the config)"
    )]
    Absent(PathBuf),
    /// A socket nobody answers on: the agent stopped without removing it.
    #[error("no agent is running: nothing answers on {0} (check `systemctl status doorbell-agent`)")]
    Refused(PathBuf),
    /// The caller may not use the socket.
    #[error("permission denied on {0}: run as the agent's user or root, or join its group (`sudo usermod -aG doorbell $USER`, then log in again)")]
    Denied(PathBuf),
    /// The exchange failed midway.
    #[error("talking to the agent on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The agent's answer is not the protocol, or it ended before the final answer.
    #[error("bad answer from the agent: {0}")]
    Answer(String),
    /// The command ran and failed, or was refused.
    #[error("{name} failed: {reason}")]
    Failed {
        /// Command name.
        name: String,
        /// The agent's reason.
        reason: String,
    },
}

/// A connection to the running agent.
pub struct Client {
    path: PathBuf,
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the agent's socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, LocalError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LocalError::Absent(path.to_path_buf()),
            io::ErrorKind::ConnectionRefused => LocalError::Refused(path.to_path_buf()),
            io::ErrorKind::PermissionDenied => LocalError::Denied(path.to_path_buf()),
            _ => LocalError::Io { path: path.to_path_buf(), source: e },
        })?;
        let io_err = |source| LocalError::Io { path: path.to_path_buf(), source };
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io_err)?;
        stream.set_write_timeout(Some(SEND_TIMEOUT)).map_err(io_err)?;
        Ok(Client { path: path.to_path_buf(), stream: BufReader::new(stream) })
    }

    /// Runs command `name` with `args` (a JSON object); `progress` sees each answer before
    /// the final one. The final answer's `result` when it is `successful`.
    pub fn call(&mut self, name: &str, args: Value, mut progress: impl FnMut(&str)) -> Result<Value, LocalError> {
        let id = format!("cli-{}", uuid::Uuid::new_v4().simple());
        let mut line = serde_json::json!({"id": id, "name": name, "args": args}).to_string().into_bytes();
        line.push(b'\n');
        let io_err = |source| LocalError::Io { path: self.path.clone(), source };
        self.stream.get_mut().write_all(&line).map_err(io_err)?;
        loop {
            let mut answer = String::new();
            if self.stream.read_line(&mut answer).map_err(|source| LocalError::Io { path: self.path.clone(), source })? == 0 {
                return Err(LocalError::Answer(format!("the agent closed the connection before {name} finished")));
            }
            let answer: Value = serde_json::from_str(&answer).map_err(|e| LocalError::Answer(format!("{e}: {}", answer.trim())))?;
            let status = answer.get("status").and_then(Value::as_str).unwrap_or_default();
            match status {
                "successful" => return Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
                "failed" => {
                    let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("no reason given").to_string();
                    return Err(LocalError::Failed { name: name.into(), reason });
                }
                "accepted" | "executing" => progress(status),
                other => return Err(LocalError::Answer(format!("unknown status {other:?} in {answer}"))),
            }
        }
    }
}
