//! What the command targets share: a request as the dispatcher meets it.

use doorbell_agent::cmd::{Command, Request, Response};

/// A parsed request's typed arguments, or the `failed` answer naming why not; a refused one
/// answered by `rejected`, as the dispatcher does.
pub fn admit(parsed: Result<Request, String>, rejected: impl FnOnce(String) -> Response) {
    match parsed {
        Ok(request) => match Command::parse(&request) {
            Ok(command) => {
                let _ = (command.needs_signature(), command.finishes_after_restart());
            }
            Err(reason) => {
                let _ = Response::failed(&request.id, &request.name, reason).to_json();
            }
        },
        Err(reason) => {
            let _ = rejected(reason).to_json();
        }
    }
}
