//! Self-update, agent side: artifacts and their checks (`artifact`, shared with slotctl),
//! download (`fetch`), verification and staging (`stage`), the trial that decides whether
//! the running version asks for its commit (`trial`), the canary comparison with the
//! previous version's baseline (`canary`), the durable update history
//! (`history`), and rollback requests (`request`). The privileged half is `crate::slot`.

pub mod artifact;
pub mod canary;
pub mod cli;
pub mod fetch;
pub mod history;
pub mod request;
pub mod stage;
pub mod trial;
