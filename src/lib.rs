//! doorbell-agent: the on-device agent of a fleet of Raspberry Pi video doorbells.
//!
//! The binary (`src/main.rs`) only wires these modules together; see ARCHITECTURE.md for
//! the map of what each one owns and how a ring flows from the GPIO pin to the store.

pub mod alerts;
#[cfg(feature = "faces")]
pub mod capture;
pub mod cmd;
pub mod config;
pub mod doctor;
#[cfg(feature = "faces")]
pub mod faces;
pub mod fleet;
pub mod gpio;
pub mod health;
pub mod local;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod probe;
pub mod sampler;
pub mod settings;
pub mod shutdown;
pub mod snapshots;
pub mod status;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod update;
#[cfg(feature = "faces")]
pub mod vision;
#[cfg(feature = "faces")]
pub mod worker;

/// The agent's version, as reported on /status, in metrics and by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
