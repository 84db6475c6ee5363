//! doorbell-agent: the on-device agent of a fleet of Raspberry Pi video doorbells.
//!
//! The binary (`src/main.rs`) only wires these modules together; see ARCHITECTURE.md for
//! the map of what each one owns and how a ring flows from the GPIO pin to the store.

pub mod alerts;
pub mod client;
pub mod config;
pub mod doctor;
pub mod gpio;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod probe;
pub mod sampler;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod systemd;
pub mod time;

/// The agent's version, as reported on /status, in metrics and by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
