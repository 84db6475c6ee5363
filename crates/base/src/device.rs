//! Where things are on a device installed by the units: the defaults the agent's
//! configuration starts from and that slotctl, which reads that configuration leniently,
//! falls back to.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The agent's configuration file unless `-c` says otherwise.
pub const CONFIG_PATH: &str = "/etc/doorbell-agent/config.toml";
/// The agent's data directory (the unit's StateDirectory=doorbell-agent).
pub const DATA_DIR: &str = "/var/lib/doorbell-agent";
/// The agent's local HTTP probe.
pub const PROBE_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Largest configuration file (or fleet overlay) read, by the agent and slotctl: a real one
/// is a few KiB.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;
