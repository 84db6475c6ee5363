//! The pipeline worker process and its supervision: the wire protocol both sides speak,
//! the agent-side `Supervisor`, and the worker's request loop (`serve`).

pub mod protocol;
pub mod serve;
pub mod supervisor;
