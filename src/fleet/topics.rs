//! The MQTT topics of the fleet contract (docs/fleet-protocol.md, "Fleet link (MQTT)", v1).

/// Topics of one device: `P = {prefix}/{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    device: String,
}

/// A command topic, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTopic {
    /// The command name (`ping`, `config/set`, ...).
    pub name: String,
    /// Sent to `{prefix}/all/cmd/...` rather than to this device.
    pub broadcast: bool,
}

impl Topics {
    /// Topics of `device` under `prefix`.
    pub fn new(prefix: &str, device: &str) -> Topics {
        Topics { prefix: prefix.into(), device: device.into() }
    }

    /// The device id.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn p(&self, rest: &str) -> String {
        format!("{}/{}/{rest}", self.prefix, self.device)
    }

    /// `P/status` (retained presence, and the last will).
    pub fn status(&self) -> String {
        self.p("status")
    }

    /// `P/telemetry`.
    pub fn telemetry(&self) -> String {
        self.p("telemetry")
    }

    /// `P/events/ring`.
    pub fn ring(&self) -> String {
        self.p("events/ring")
    }

    /// `P/alerts`.
    pub fn alerts(&self) -> String {
        self.p("alerts")
    }

    /// `P/alarms/{key}` (retained mirror of an active alert).
    pub fn alarm(&self, key: &str) -> String {
        self.p(&format!("alarms/{key}"))
    }

    /// `P/cmd/res`.
    pub fn responses(&self) -> String {
        self.p("cmd/res")
    }

    /// The subscriptions for commands: this device's and the whole fleet's.
    pub fn command_filters(&self) -> [String; 2] {
        [self.p("cmd/#"), format!("{}/all/cmd/#", self.prefix)]
    }

    /// Parses an incoming command topic; `None` for anything else, including our own
    /// `P/cmd/res`, which the `P/cmd/#` subscription also delivers.
    pub fn parse_command(&self, topic: &str) -> Option<CommandTopic> {
        let own = format!("{}/{}/cmd/", self.prefix, self.device);
        let all = format!("{}/all/cmd/", self.prefix);
        let (name, broadcast) = match (topic.strip_prefix(&own), topic.strip_prefix(&all)) {
            (Some(name), _) => (name, false),
            (None, Some(name)) => (name, true),
            (None, None) => return None,
        };
        (!name.is_empty() && name != "res").then(|| CommandTopic { name: name.into(), broadcast })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_topics() {
        let t = Topics::new("doorbell", "door-1");
        assert_eq!(t.status(), "doorbell/door-1/status");
        assert_eq!(t.ring(), "doorbell/door-1/events/ring");
        assert_eq!(t.alarm("cpu_high"), "doorbell/door-1/alarms/cpu_high");
        assert_eq!(t.command_filters(), ["doorbell/door-1/cmd/#".to_string(), "doorbell/all/cmd/#".to_string()]);
    }

    #[test]
    fn command_topics_parse_and_our_responses_are_not_commands() {
        let t = Topics::new("doorbell", "door-1");
        let cmd = |name: &str, broadcast| Some(CommandTopic { name: name.into(), broadcast });
        assert_eq!(t.parse_command("doorbell/door-1/cmd/config/set"), cmd("config/set", false));
        assert_eq!(t.parse_command("doorbell/all/cmd/ping"), cmd("ping", true));
        assert_eq!(t.parse_command("doorbell/door-1/cmd/res"), None);
        assert_eq!(t.parse_command("doorbell/door-2/cmd/ping"), None);
        assert_eq!(t.parse_command("doorbell/door-1/cmd/"), None);
    }
}
