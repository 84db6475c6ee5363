//! Rollback requests: how the technician's `update rollback` and the fleet `rollback`
//! command ask `doorbell-slotctl` to go back, through the same request file.

use std::io;
use std::path::Path;

use super::stage::hand_to_owner;
use doorbell_slotctl::ctl::{Requests, RollbackRequest};
use doorbell_slotctl::State;

/// Writes a rollback request for slotctl (of the running trial, or to the other slot when
/// none runs); the agent restarts when it sees it, and pre-start acts on it.
pub fn request_rollback(data_dir: &Path, state: &State, reason: &str, request_id: Option<&str>) -> io::Result<()> {
    let requests = Requests::new(data_dir);
    let req = RollbackRequest {
        reason: reason.to_string(),
        trial_id: state.trial.as_ref().map(|t| t.id),
        request_id: request_id.map(String::from),
    };
    std::fs::create_dir_all(&requests.dir)?;
    // Serializing plain data cannot fail.
    doorbell_base::durable::write_file(&requests.rollback(), &serde_json::to_vec(&req).unwrap_or_default(), 0o640)?;
    hand_to_owner(data_dir, &[&requests.dir, &requests.rollback()])
}
