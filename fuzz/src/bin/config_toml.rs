//! The configuration file (`/etc/doorbell-agent/config.toml`, and the fleet overlay merged
//! into it): TOML, serde with the path of a bad key, then every range and consistency check
//! (URLs, keys, device ids, durations). The agent reads the file with `read_to_string`, so
//! only UTF-8 reaches the parser.

use std::path::Path;

use doorbell_agent::config::Config;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        match Config::parse(Path::new("/etc/doorbell-agent/config.toml"), text) {
            Ok(cfg) => {
                let _ = cfg.control_socket();
                let _ = cfg.control.max_request_bytes();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
