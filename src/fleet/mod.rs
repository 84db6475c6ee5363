//! The fleet link: MQTT presence, telemetry, the durable outbox of ring events, alerts and
//! command responses, and command intake, exactly per the MQTT contract of
//! docs/fleet-protocol.md. The operator's side is the `doorbell-fleet` crate.

mod announce;
mod discovery;
mod link;
mod topics;

pub use announce::Announcer;
pub use link::Link;
pub use topics::{CommandTopic, Topics};

use serde::Serialize;

/// The state of the link, for /status, the STATUS= line and health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkState {
    /// Connected to the broker now.
    pub connected: bool,
    /// Since when (Unix ms) it has been in the current state; 0 before the first attempt.
    pub since_ms: u64,
    /// Reconnections after a lost connection.
    pub reconnects: u64,
    /// ConnAcks received since the agent started (the trial's broker check needs one).
    pub connects: u64,
    /// The last connection error.
    pub last_error: Option<String>,
    /// When the next connection attempt is due (Unix ms), while down.
    pub retry_at_ms: Option<u64>,
}
