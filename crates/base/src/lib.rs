//! doorbell-base: what both the root-run slot controller (`doorbell-slotctl`) and the agent
//! stand on, std-only: crash-safe file writes and bounded reads (`durable`), the test-only
//! faults they pass through (`fault`), the device's default paths (`device`), `time`, the
//! journald logger (`logging`), durations in TOML (`duration`), the plain HTTP/1.1 client and
//! URL parser (`http`) and the requests to a running agent's probe (`client`).

pub mod client;
pub mod device;
pub mod durable;
pub mod duration;
pub mod fault;
pub mod http;
pub mod logging;
pub mod time;

/// For command-line use: a closed stdout (`... | head`) ends the process quietly, as with any
/// Unix tool, instead of a panic on the failed write (which `panic = "abort"` turns into
/// SIGABRT). Not for the long-running agent, which must outlive a closed log stream.
pub fn die_on_broken_pipe() {
    // SAFETY: restores the default disposition of one signal; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
