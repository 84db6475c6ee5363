//! Fleet commands as they arrive over MQTT: the topic (`P/cmd/{name}` or
//! `{prefix}/all/cmd/{name}`), then the payload, plain `{id, ...args}` or signed
//! `{signed, sig}`, then the typed arguments of the named command; a refused payload is
//! answered with the id recovered from it, as the dispatcher does.
//!
//! Input: the topic, a newline, the payload.

use doorbell_agent::cmd::{Request, Response};
use doorbell_agent::fleet::Topics;

/// `mqtt.max_command_bytes`' default.
const MAX_BYTES: usize = 256 * 1024;

fn main() {
    let topics = Topics::new("doorbell", "door-1");
    afl::fuzz!(|data: &[u8]| {
        let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let (topic, payload) = (&data[..split], data.get(split + 1..).unwrap_or_default());
        // rumqttc hands the topic over as a String: UTF-8 only.
        let Ok(topic) = std::str::from_utf8(topic) else { return };
        let Some(topic) = topics.parse_command(topic) else { return };
        let parsed = Request::parse(&topic.name, topic.broadcast, payload, MAX_BYTES);
        doorbell_agent_fuzz::admit(parsed, |reason| Response::rejected(&topic.name, payload, reason));
    });
}
