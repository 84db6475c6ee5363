//! The local control socket: operators on the device (`doorbell-agent faces …`) send fleet
//! commands to the running agent over a Unix socket, never over the network.
//!
//! Protocol: one JSON request per line, `{"id", "name", "args"?}`, answered by the same
//! lifecycle responses as `P/cmd/res` (`accepted`, `executing`, `successful`/`failed`), one
//! JSON object per line, ending with a final status. Requests go through the same
//! `cmd::Dispatcher` as MQTT commands (ids, ledger, validation); the socket's file permissions
//! (0660, the agent's group) authorise them, so no fleet signature is asked for, and their
//! answers are never published over MQTT.

pub mod client;
pub mod faces;
pub mod server;

pub use client::{Client, LocalError};
pub use server::{Server, ServerError};
