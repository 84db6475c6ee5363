//! Configuration: the TOML contract of DESIGN.md, its defaults, and validation.
//!
//! Every field has a default that works on a Pi. Unknown keys, wrong types and out-of-range
//! values are rejected with the file, the dotted key and the reason (exit 78 at the edge).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Where the agent looks for its configuration unless `-c` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/doorbell-agent/config.toml";

/// A configuration problem: which file, which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: key `{key}`: {reason}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// Dotted path of the offending key (`gpio.pin`), or `(file)` for whole-file problems.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Device identity used in topics and payloads; discovered when absent.
    pub device_id: Option<String>,
    /// Directory of the sled store and other state.
    pub data_dir: PathBuf,
    /// Doorbell button.
    pub gpio: GpioConfig,
    /// Local HTTP health probe.
    pub probe: ProbeConfig,
    /// Resource sampler.
    pub sampler: SamplerConfig,
    /// Durable store bounds.
    pub store: StoreConfig,
    /// Alert rules.
    pub alerts: AlertsConfig,
    /// Fleet broker link; absent = no fleet link.
    pub mqtt: Option<MqttConfig>,
    /// Camera capture for the face pipeline.
    pub capture: CaptureConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: None,
            data_dir: PathBuf::from("/var/lib/doorbell-agent"),
            gpio: GpioConfig::default(),
            probe: ProbeConfig::default(),
            sampler: SamplerConfig::default(),
            store: StoreConfig::default(),
            alerts: AlertsConfig::default(),
            mqtt: None,
            capture: CaptureConfig::default(),
        }
    }
}

/// Which button implementation drives the agent.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpioBackend {
    /// A real GPIO line through the kernel's character device (rppal).
    Rppal,
    /// Presses come from `POST /simulate/press` and `doorbell-agent press`.
    Simulated,
}

/// Internal pull resistor of the button pin.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Pull-up: the button connects the pin to ground (the usual wiring).
    Up,
    /// Pull-down: the button connects the pin to 3.3 V.
    Down,
    /// No internal resistor (an external one is fitted).
    Off,
}

/// `[gpio]`: the doorbell button and how presses are filtered.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GpioConfig {
    /// `rppal` or `simulated`.
    pub backend: GpioBackend,
    /// BCM pin number.
    pub pin: u8,
    /// Internal pull resistor.
    pub pull: Pull,
    /// True when a pressed button reads low (pull-up wiring).
    pub active_low: bool,
    /// Presses closer together than this are contact bounce.
    #[serde(with = "duration")]
    pub debounce: Duration,
    /// Rings allowed back to back before the rate limit applies.
    pub burst: u32,
    /// Sustained rings per minute once the burst is spent.
    pub rings_per_minute: u32,
}

impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            backend: GpioBackend::Rppal,
            pin: 17,
            pull: Pull::Up,
            active_low: true,
            debounce: Duration::from_millis(50),
            burst: 3,
            rings_per_minute: 12,
        }
    }
}

/// `[probe]`: the local HTTP health probe.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Address to listen on; keep it on loopback.
    pub listen: SocketAddr,
    /// Concurrent connections before the oldest is evicted.
    pub max_connections: usize,
    /// Per-read and per-write socket timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

/// `[sampler]`: device resource sampling.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Time between samples.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Samples kept in memory.
    pub history: usize,
    /// Raspberry Pi firmware throttling flags (absent off a Pi).
    pub throttled_path: PathBuf,
    /// Kernel thermal zone read when sysinfo finds no sensor.
    pub thermal_path: PathBuf,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            interval: Duration::from_secs(5),
            history: 120,
            throttled_path: PathBuf::from("/sys/devices/platform/soc/soc:firmware/get_throttled"),
            thermal_path: PathBuf::from("/sys/class/thermal/thermal_zone0/temp"),
        }
    }
}

/// `[store]`: bounds of the durable store.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Ring events kept; older ones are pruned.
    pub max_rings: usize,
    /// Alerts kept; cleared and low-severity ones go first.
    pub max_alerts: usize,
    /// On-disk size budget in MiB; above it the store is pruned harder.
    pub max_size_mib: u64,
    /// sled page cache in MiB (sled's default of 1 GiB would eat a Pi Zero).
    pub cache_mib: u64,
    /// Time between pruning passes.
    #[serde(with = "duration")]
    pub maintenance_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_rings: 10_000,
            max_alerts: 2_000,
            max_size_mib: 64,
            cache_mib: 2,
            maintenance_interval: Duration::from_secs(600),
        }
    }
}

/// `[alerts]`: built-in rules and the operator's own.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Keep the built-in rules; a rule of the same name below replaces one.
    pub builtin: bool,
    /// Operator rules (`[[alerts.rule]]`).
    pub rule: Vec<RuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            builtin: true,
            rule: Vec::new(),
        }
    }
}

/// Alert severities, most severe first.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs action now.
    Critical,
    /// Needs action soon.
    Major,
    /// Worth a look.
    Minor,
    /// Informational.
    Warning,
}

impl Severity {
    /// Lowercase name as used in payloads and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
        }
    }
}

/// Comparison of a threshold rule.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Comparison {
    /// value > threshold
    #[serde(rename = ">")]
    Above,
    /// value >= threshold
    #[serde(rename = ">=")]
    AtLeast,
    /// value < threshold
    #[serde(rename = "<")]
    Below,
    /// value <= threshold
    #[serde(rename = "<=")]
    AtMost,
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// The value crosses a threshold.
    Threshold,
    /// The value grows by more than `growth_percent` over `window`.
    Trend,
}

/// One alert rule (`[[alerts.rule]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name; also the alert key.
    pub name: String,
    /// A reading name (see `alerts::READINGS`).
    pub metric: String,
    /// `threshold` (default) or `trend`.
    #[serde(default = "RuleConfig::default_kind")]
    pub kind: RuleKind,
    /// Comparison for threshold rules.
    #[serde(default = "RuleConfig::default_op")]
    pub op: Comparison,
    /// Threshold for threshold rules.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// A raised alert clears once `value op clear_threshold` stops holding (hysteresis);
    /// defaults to the threshold.
    #[serde(default)]
    pub clear_threshold: Option<f64>,
    /// Growth that raises a trend rule, in percent over `window`.
    #[serde(default)]
    pub growth_percent: Option<f64>,
    /// Time span a trend rule compares over.
    #[serde(default, with = "opt_duration")]
    pub window: Option<Duration>,
    /// Severity of the alert.
    pub severity: Severity,
    /// How long the condition must hold before the alert is raised.
    #[serde(default, rename = "for", with = "duration")]
    pub for_: Duration,
    /// After a clear, how long a new raise of this rule is suppressed.
    #[serde(default = "RuleConfig::default_cooldown", with = "duration")]
    pub cooldown: Duration,
}

impl RuleConfig {
    fn default_kind() -> RuleKind {
        RuleKind::Threshold
    }
    fn default_op() -> Comparison {
        Comparison::Above
    }
    fn default_cooldown() -> Duration {
        Duration::from_secs(300)
    }
}

/// `[mqtt]`: the fleet broker.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// First topic level; `P = {topic_prefix}/{device_id}`.
    #[serde(default = "MqttConfig::default_prefix")]
    pub topic_prefix: String,
}

impl MqttConfig {
    fn default_prefix() -> String {
        "doorbell".into()
    }

    /// The broker's `host:port`, with the scheme's default port when none is given.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (rest, default_port) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (r, 8883)
        } else if let Some(r) = self.url.strip_prefix("mqtt://") {
            (r, 1883)
        } else {
            return Err("must start with mqtt:// or mqtts://".into());
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err("must be scheme://host[:port] with no path".into());
        }
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("port `{port}` is not a number from 1 to 65535"))?;
                Ok((host.trim_matches(['[', ']']).to_string(), port))
            }
            _ => Ok((rest.to_string(), default_port)),
        }
    }
}

/// Where frames come from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CaptureSource {
    /// A directory of JPEG files (laptops and tests).
    Files,
    /// A command printing one JPEG to stdout (`rpicam-still -n -t 1 -o -`).
    Command,
    /// A camera's JPEG snapshot URL.
    Http,
}

/// `[capture]`: camera frames for the face pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// `files`, `command` or `http`.
    pub source: CaptureSource,
    /// Directory of JPEGs for `files`.
    pub path: Option<PathBuf>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: CaptureSource::Command,
            path: None,
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let message = inner.message().to_string();
            let mut key = e.path().to_string();
            if key == "." {
                key = "(file)".into();
            }
            let line = inner
                .span()
                .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
                .unwrap_or_default();
            ConfigError {
                file: path.to_path_buf(),
                key,
                reason: format!("{message}{line}"),
            }
        })?;
        config.validate().map_err(|(key, reason)| ConfigError {
            file: path.to_path_buf(),
            key,
            reason,
        })?;
        Ok(config)
    }

    /// Range and consistency checks that serde's types cannot express.
    fn validate(&self) -> Result<(), (String, String)> {
        fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
            Err((key.to_string(), reason.into()))
        }
        fn within(key: &str, d: Duration, min: Duration, max: Duration) -> Result<(), (String, String)> {
            if d < min || d > max {
                return bad(
                    key,
                    format!(
                        "{} is out of range {}..={}",
                        humantime::format_duration(d),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
            }
            Ok(())
        }
        let ms = Duration::from_millis;
        let s = Duration::from_secs;

        if let Some(id) = &self.device_id {
            validate_device_id(id).or_else(|r| bad("device_id", r))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.gpio.pin > 27 {
            return bad("gpio.pin", format!("BCM pin {} does not exist on a Pi header (0..=27)", self.gpio.pin));
        }
        within("gpio.debounce", self.gpio.debounce, ms(0), ms(1000))?;
        if self.gpio.burst == 0 || self.gpio.burst > 10_000 {
            return bad("gpio.burst", format!("{} is out of range 1..=10000", self.gpio.burst));
        }
        if self.gpio.rings_per_minute == 0 || self.gpio.rings_per_minute > 600_000 {
            return bad("gpio.rings_per_minute", format!("{} is out of range 1..=600000", self.gpio.rings_per_minute));
        }
        if !(1..=1024).contains(&self.probe.max_connections) {
            return bad("probe.max_connections", format!("{} is out of range 1..=1024", self.probe.max_connections));
        }
        within("probe.timeout", self.probe.timeout, ms(100), s(60))?;
        within("sampler.interval", self.sampler.interval, ms(100), s(3600))?;
        if !(1..=10_000).contains(&self.sampler.history) {
            return bad("sampler.history", format!("{} is out of range 1..=10000", self.sampler.history));
        }
        if !(10..=10_000_000).contains(&self.store.max_rings) {
            return bad("store.max_rings", format!("{} is out of range 10..=10000000", self.store.max_rings));
        }
        if !(10..=1_000_000).contains(&self.store.max_alerts) {
            return bad("store.max_alerts", format!("{} is out of range 10..=1000000", self.store.max_alerts));
        }
        if !(4..=65_536).contains(&self.store.max_size_mib) {
            return bad("store.max_size_mib", format!("{} is out of range 4..=65536", self.store.max_size_mib));
        }
        if !(1..=1024).contains(&self.store.cache_mib) {
            return bad("store.cache_mib", format!("{} is out of range 1..=1024", self.store.cache_mib));
        }
        within("store.maintenance_interval", self.store.maintenance_interval, s(1), s(86_400))?;
        for (i, rule) in self.alerts.rule.iter().enumerate() {
            rule.validate().or_else(|(field, reason)| bad(&format!("alerts.rule[{i}].{field}"), reason))?;
        }
        if let Some(mqtt) = &self.mqtt {
            mqtt.host_port().or_else(|r| bad("mqtt.url", r))?;
            if mqtt.topic_prefix.is_empty() || mqtt.topic_prefix.contains(['+', '#', '/']) {
                return bad("mqtt.topic_prefix", "must be one non-empty topic level without + # /");
            }
        }
        if self.capture.source == CaptureSource::Files && self.capture.path.is_none() {
            return bad("capture.path", "is required when capture.source = \"files\"");
        }
        Ok(())
    }

    /// The configured device id, or the one discovered on this machine.
    pub fn device_id(&self) -> String {
        self.device_id.clone().unwrap_or_else(discover_device_id)
    }
}

impl RuleConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !crate::alerts::READINGS.contains(&self.metric.as_str()) {
            return Err((
                "metric",
                format!("unknown metric `{}`; known: {}", self.metric, crate::alerts::READINGS.join(", ")),
            ));
        }
        validate_device_id(&self.name).map_err(|r| ("name", r))?;
        match self.kind {
            RuleKind::Threshold => {
                let Some(t) = self.threshold else {
                    return Err(("threshold", "is required for a threshold rule".into()));
                };
                if let Some(c) = self.clear_threshold {
                    let safe_side = match self.op {
                        Comparison::Above | Comparison::AtLeast => c <= t,
                        Comparison::Below | Comparison::AtMost => c >= t,
                    };
                    if !safe_side {
                        return Err(("clear_threshold", format!("{c} is not on the safe side of threshold {t}")));
                    }
                }
            }
            RuleKind::Trend => {
                match self.growth_percent {
                    Some(g) if g > 0.0 && g.is_finite() => {}
                    _ => return Err(("growth_percent", "a positive percentage is required for a trend rule".into())),
                }
                match self.window {
                    Some(w) if w >= Duration::from_secs(10) => {}
                    _ => return Err(("window", "a window of at least 10s is required for a trend rule".into())),
                }
            }
        }
        if self.cooldown > Duration::from_secs(7 * 86_400) {
            return Err(("cooldown", "is longer than 7 days".into()));
        }
        Ok(())
    }
}

/// A device id must be one MQTT topic level: 1–64 of `[A-Za-z0-9_.-]`.
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("`{id}` must be 1 to 64 characters"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("`{id}` contains `{c}`; use letters, digits, - _ ."));
    }
    Ok(())
}

/// Pi serial from /proc/cpuinfo, then /etc/machine-id, then the hostname.
pub fn discover_device_id() -> String {
    let serial = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("Serial").map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()))
    });
    let machine_id = || std::fs::read_to_string("/etc/machine-id").ok().map(|s| s.trim().to_string());
    let hostname = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string());
    [serial, machine_id(), hostname()]
        .into_iter()
        .flatten()
        .find(|id| validate_device_id(id).is_ok() && id.trim_matches('0') != "")
        .unwrap_or_else(|| "doorbell".into())
}

impl fmt::Display for GpioBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpioBackend::Rppal => "rppal",
            GpioBackend::Simulated => "simulated",
        })
    }
}

/// Durations as human strings (`"5s"`, `"2m"`, `"150ms"`).
mod duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like \"5s\" or \"2m\": {e}")))
    }
}

/// Optional durations as human strings.
mod opt_duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::parse(Path::new("t.toml"), text).expect_err("config should be rejected")
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(err("[gpio]\npinn = 3").key, "gpio.pinn");
        assert_eq!(err("bogus = 1").key, "bogus");
        assert_eq!(err("[gpio]\npin = \"x\"").key, "gpio.pin");
        assert_eq!(err("[gpio]\npin = 40").key, "gpio.pin");
        assert_eq!(err("[sampler]\ninterval = \"fast\"").key, "sampler.interval");
        assert_eq!(err("[probe]\nlisten = \"nowhere\"").key, "probe.listen");
        assert_eq!(err("device_id = \"a/b\"").key, "device_id");
        assert_eq!(err("[mqtt]\nurl = \"http://x\"").key, "mqtt.url");
        let e = err("[[alerts.rule]]\nname = \"x\"\nmetric = \"nope\"\nseverity = \"major\"\nthreshold = 1.0");
        assert_eq!(e.key, "alerts.rule[0].metric");
    }

    #[test]
    fn broker_url_defaults_port_by_scheme() {
        let m = |url: &str| MqttConfig { url: url.into(), topic_prefix: "d".into() }.host_port();
        assert_eq!(m("mqtt://b").unwrap(), ("b".into(), 1883));
        assert_eq!(m("mqtts://b.example:9000").unwrap(), ("b.example".into(), 9000));
        assert!(m("mqtt://b:x").is_err());
    }
}
