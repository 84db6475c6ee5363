//! A minimal HTTP/1.1 client for talking to the local probe (`status`, `press`, `doctor`).
//! The probe is on loopback and answers small bodies, so a blocking socket with timeouts
//! is all that is needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered.
    #[error("no agent answering on {addr}: {source} (is doorbell-agent running? check `systemctl status doorbell-agent`)")]
    Connect {
        /// Probe address.
        addr: SocketAddr,
        /// Socket error.
        source: std::io::Error,
    },
    /// The exchange failed midway or the answer is not HTTP.
    #[error("bad answer from {addr}: {reason}")]
    Answer {
        /// Probe address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// Sends `method path` and returns the status code and body.
pub fn request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Result<(u16, String), ClientError> {
    let bad = |reason: String| ClientError::Answer { addr, reason };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|source| ClientError::Connect { addr, source })?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| bad(e.to_string()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| bad(e.to_string()))?;
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let mut raw = Vec::new();
    stream.take(16 * 1024 * 1024).read_to_end(&mut raw).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no end of headers".into()))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("no status line in {:?}", head.lines().next().unwrap_or(""))))?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let body = if chunked { String::from_utf8_lossy(&dechunk(body.as_bytes())).into_owned() } else { body.to_string() };
    Ok((code, body))
}

/// Decodes a chunked HTTP/1.1 body (stops at the last chunk or at the first malformed one).
pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
