//! Camera capture for the pipeline worker: a `Capture` trait with three real sources.
//!
//! - `command`: runs a program that prints one JPEG on stdout (`rpicam-still -n -t 1 -o -`,
//!   an ffmpeg RTSP snapshot), killed with its whole process group after `timeout`;
//! - `http`: GETs a camera's JPEG snapshot URL (plain `http://`), bounded in time and bytes;
//! - `files`: a directory of JPEGs replayed in name order (laptops, tests, demos).
//!
//! Every source bounds the bytes it accepts (`capture.max_image_mib`) so a runaway camera
//! cannot grow the worker's memory.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{CaptureConfig, CaptureSource};
use doorbell_base::durable;
use doorbell_base::http::{self, HttpError, Url};

/// Why a frame could not be captured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture ({source_name}): {reason}")]
pub struct CaptureError {
    /// `files`, `command` or `http`.
    pub source_name: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// A camera: one JPEG per call.
pub trait Capture: Send {
    /// Grabs frame `index` (0-based) of the burst for ring `seq`.
    fn grab(&mut self, seq: u64, index: usize) -> Result<Vec<u8>, CaptureError>;
}

/// Builds the configured source.
pub fn from_config(cfg: &CaptureConfig) -> Box<dyn Capture> {
    let max_bytes = cfg.max_image_mib * 1024 * 1024;
    match cfg.source {
        CaptureSource::Files => Box::new(Files { dir: cfg.path.clone().unwrap_or_default(), frames: cfg.frames, max_bytes }),
        CaptureSource::Command => Box::new(CommandCapture { argv: cfg.command.clone(), timeout: cfg.timeout, max_bytes }),
        CaptureSource::Http => Box::new(Http { url: cfg.url.clone().unwrap_or_default(), timeout: cfg.timeout, max_bytes }),
    }
}

fn fail(source_name: &'static str, reason: impl Into<String>) -> CaptureError {
    CaptureError { source_name, reason: reason.into() }
}

/// A directory of JPEGs; ring `seq` shows files `(seq-1)*frames ..` in name order, wrapping.
pub struct Files {
    dir: PathBuf,
    frames: usize,
    max_bytes: u64,
}

impl Capture for Files {
    fn grab(&mut self, seq: u64, index: usize) -> Result<Vec<u8>, CaptureError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| fail("files", format!("cannot list {}: {e}", self.dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
            })
            .collect();
        if files.is_empty() {
            return Err(fail("files", format!("no .jpg or .jpeg files in {}", self.dir.display())));
        }
        files.sort();
        let n = files.len() as u64;
        let pick = &files[((seq.saturating_sub(1) * self.frames as u64 + index as u64) % n) as usize];
        durable::read_limited(pick, self.max_bytes).map_err(|e| fail("files", format!("{}: {e}", pick.display())))
    }
}

/// A program that writes one JPEG to stdout.
pub struct CommandCapture {
    argv: Vec<String>,
    timeout: Duration,
    max_bytes: u64,
}

impl Capture for CommandCapture {
    fn grab(&mut self, _seq: u64, _index: usize) -> Result<Vec<u8>, CaptureError> {
        let (program, args) = self.argv.split_first().ok_or_else(|| fail("command", "capture.command is empty"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| fail("command", format!("cannot start `{program}`: {e}")))?;
        let pid = child.id() as i32;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(fail("command", "no pipes to the camera command"));
        };
        let max = self.max_bytes;
        let reader = std::thread::spawn(move || durable::read_to_end_limited(stdout, max).map_err(|e| e.to_string()));
        let errors = std::thread::spawn(move || {
            let mut tail = Vec::new();
            let _ = (&mut stderr).take(4096).read_to_end(&mut tail);
            String::from_utf8_lossy(&tail).trim().to_string()
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => break None,
            }
        };
        if status.is_none() {
            // SAFETY: kill(2) on the process group we created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
        }
        let output = reader.join().unwrap_or_else(|_| Err("reader thread failed".into()));
        let stderr = errors.join().unwrap_or_default();
        let status = status.ok_or_else(|| {
            fail("command", format!("`{program}` did not finish within {}; killed", humantime::format_duration(self.timeout)))
        })?;
        // An oversized image is the reason even when the command then dies of SIGPIPE.
        let jpeg = output.map_err(|r| fail("command", format!("`{program}` output: {r}")))?;
        if !status.success() {
            let said = if stderr.is_empty() { String::new() } else { format!(": {}", last_line(&stderr)) };
            return Err(fail("command", format!("`{program}` failed ({status}){said}")));
        }
        if jpeg.is_empty() {
            return Err(fail("command", format!("`{program}` printed no image")));
        }
        Ok(jpeg)
    }
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or(text)
}

/// A camera's snapshot URL (`http://host[:port]/path`).
pub struct Http {
    url: String,
    timeout: Duration,
    max_bytes: u64,
}

impl Capture for Http {
    fn grab(&mut self, _seq: u64, _index: usize) -> Result<Vec<u8>, CaptureError> {
        let url = Url::parse(&self.url).map_err(|r| fail("http", r))?;
        let err = |e: HttpError| fail("http", format!("{}: {e}", self.url));
        let deadline = Instant::now() + self.timeout;
        let stream = http::open_plain(&url, self.timeout).map_err(err)?;
        let response = http::send(stream, "GET", &url, &[("Accept", "image/jpeg")], Some(deadline)).map_err(err)?;
        if response.head.status != 200 {
            return Err(fail("http", format!("{} answered {} {}", self.url, response.head.status, response.head.reason)));
        }
        let body = response.read_body(self.max_bytes).map_err(err)?;
        if body.is_empty() {
            return Err(fail("http", format!("{} sent an empty body", self.url)));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_timeout_kills_and_failure_reports_stderr() {
        let mut slow = CommandCapture { argv: vec!["sleep".into(), "30".into()], timeout: Duration::from_millis(200), max_bytes: 1024 };
        let t = Instant::now();
        let e = slow.grab(1, 0).unwrap_err();
        assert!(e.reason.contains("did not finish within 200ms"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut failing = CommandCapture {
            argv: vec!["sh".into(), "-c".into(), "echo no camera >&2; exit 3".into()],
            timeout: Duration::from_secs(5),
            max_bytes: 1024,
        };
        let e = failing.grab(1, 0).unwrap_err();
        assert!(e.reason.contains("exit status: 3") && e.reason.contains("no camera"), "{e}");
        let mut big = CommandCapture {
            argv: vec!["head".into(), "-c".into(), "5000".into(), "/dev/zero".into()],
            timeout: Duration::from_secs(5),
            max_bytes: 1024,
        };
        assert!(big.grab(1, 0).unwrap_err().reason.contains("more than"));
    }

    #[test]
    fn files_replay_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jpg", "a.JPEG", "c.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let mut f = Files { dir: dir.path().to_path_buf(), frames: 3, max_bytes: 1024 };
        assert_eq!(f.grab(1, 0).unwrap(), b"a.JPEG");
        assert_eq!(f.grab(1, 1).unwrap(), b"b.jpg");
        assert_eq!(f.grab(1, 2).unwrap(), b"a.JPEG", "wraps around");
        let mut empty = Files { dir: dir.path().join("missing"), frames: 1, max_bytes: 1024 };
        assert!(empty.grab(1, 0).unwrap_err().reason.contains("cannot list"));
    }
}
