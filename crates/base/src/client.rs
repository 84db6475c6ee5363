//! The CLI's and slotctl's requests to the local probe (`status`, `press`, `doctor`, the
//! trial's health check), over the one HTTP client in [`crate::http`].
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{self, HttpError, Url};

/// Largest probe answer read (`/status` with its history is a few KiB).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered.
    #[error("no agent answering on {addr}: {source} (is doorbell-agent running? check `systemctl status doorbell-agent`)")]
    Connect {
        /// Probe address.
        addr: SocketAddr,
        /// Socket error.
        source: HttpError,
    },
    /// The exchange failed midway or the answer is not HTTP.
    #[error("bad answer from {addr}: {source}")]
    Answer {
        /// Probe address.
        addr: SocketAddr,
        /// What went wrong.
        source: HttpError,
    },
}

/// Sends `method path` and returns the status code and body.
pub fn request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Result<(u16, String), ClientError> {
    match http::plain_request(method, &Url::local(addr, path), timeout, MAX_ANSWER) {
        Ok((status, body)) => Ok((status, String::from_utf8_lossy(&body).into_owned())),
        Err(source @ HttpError::Connect { .. }) => Err(ClientError::Connect { addr, source }),
        Err(source) => Err(ClientError::Answer { addr, source }),
    }
}
