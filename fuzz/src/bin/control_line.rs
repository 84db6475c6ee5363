//! Lines on the local control socket (`{"id", "name", "args"?}`, one request per line, the
//! line bounded by `control.max_request_mib` before it is parsed): the request, then the
//! typed arguments of the named command; a refused line is answered with the id and name
//! recovered from it. Blank lines are skipped, as the server does.
//!
//! Input: the bytes a client sends on one connection (any number of lines).

use doorbell_agent::cmd::{Request, Response};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        for line in data.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            doorbell_agent_fuzz::admit(Request::parse_local(line), |reason| Response::rejected_local(line, reason));
        }
    });
}
