//! Self-update, agent side: download (`fetch`), verification and staging (`stage`), the trial that decides whether
//! the running version asks for its commit (`trial`) on the checks it runs (`checks`), the canary comparison with the
//! previous version's baseline (`canary`), the durable update history
//! (`history`), and rollback requests (`request`). The artifact and its checks are the
//! `doorbell-artifact` crate; the privileged half is `doorbell-slotctl`.

pub mod canary;
pub mod checks;
pub mod cli;
pub mod fetch;
pub mod history;
pub mod request;
pub mod stage;
pub mod trial;
