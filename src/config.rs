//! Configuration: the TOML contract of docs/configuration.md, its defaults, and validation.
//!
//! Every field has a default that works on a Pi. Unknown keys, wrong types and out-of-range
//! values are rejected with the file, the dotted key and the reason (exit 78 at the edge).
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doorbell_base::{device, duration};
use doorbell_slotctl::settings::UpdateConfig;
use serde::{Deserialize, Serialize};

/// Reading names alert rules may refer to (`metric`): what the sampler and the ring flow
/// report to the alert engine.
pub const READINGS: &[&str] = &[
    "cpu_percent",
    "memory_percent",
    "disk_percent",
    "temperature_c",
    "load1",
    "under_voltage",
    "throttled",
    "agent_rss_mib",
    "agent_threads",
    "agent_fds",
    "rings_1m",
    "pipeline_errors_5m",
    "pipeline_worker_up",
    "pipeline_budget_ratio",
    "face_recognition_accuracy",
];

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
    /// Local control socket (`doorbell-agent faces …`).
    pub control: ControlConfig,
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
    /// Face detection, embedding and matching.
    pub faces: FacesConfig,
    /// The supervised pipeline worker process.
    pub pipeline: PipelineConfig,
    /// Snapshots of unknown and blocked visitors (privacy: off by default).
    pub snapshots: SnapshotsConfig,
    /// A/B self-update: signing key, trial tries, soak and deadline.
    pub update: UpdateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: None,
            data_dir: PathBuf::from(device::DATA_DIR),
            gpio: GpioConfig::default(),
            probe: ProbeConfig::default(),
            control: ControlConfig::default(),
            sampler: SamplerConfig::default(),
            store: StoreConfig::default(),
            alerts: AlertsConfig::default(),
            mqtt: None,
            capture: CaptureConfig::default(),
            faces: FacesConfig::default(),
            pipeline: PipelineConfig::default(),
            snapshots: SnapshotsConfig::default(),
            update: UpdateConfig::default(),
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

/// How the `rppal` backend notices that the button changed.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Detect {
    /// Edge interrupts from the kernel: no work between presses.
    Interrupt,
    /// Read the level every `poll_interval`: for GPIO controllers that raise no edge
    /// interrupts (emulated boards, some expanders).
    Poll,
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
    /// Edge interrupts or level polling.
    pub detect: Detect,
    /// How often the level is read with `detect = "poll"`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
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
            detect: Detect::Interrupt,
            poll_interval: Duration::from_millis(10),
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
    /// Connections served at once; beyond this the oldest idle one is closed.
    pub max_connections: usize,
    /// Per-read and per-write socket timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { listen: device::PROBE_LISTEN, max_connections: 64, timeout: Duration::from_secs(5) }
    }
}

/// The control socket of such a device, in the unit's RuntimeDirectory=doorbell-agent.
pub const DEVICE_CONTROL_SOCKET: &str = "/run/doorbell-agent/control.sock";

/// `[control]`: the local control socket. Fleet-shaped commands from operators on the device
/// (`doorbell-agent faces …`), authorised by the socket's file permissions (0660, the
/// agent's group), never reachable from the network.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path; default: `/run/doorbell-agent/control.sock` with the default
    /// `data_dir` (a device), else `{data_dir}/control.sock` (a laptop, tests).
    pub socket: Option<PathBuf>,
    /// Largest request line, and largest answer, in MiB (a gallery import is one line).
    pub max_request_mib: u64,
    /// Connections served at once; more are answered `failed` (busy) and closed.
    pub max_connections: usize,
    /// Time a client has to send a whole request line, and for each write of the answers.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { socket: None, max_request_mib: 16, max_connections: 4, timeout: Duration::from_secs(10) }
    }
}

impl ControlConfig {
    /// The size limit in bytes.
    pub fn max_request_bytes(&self) -> usize {
        (self.max_request_mib * 1024 * 1024) as usize
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
    /// Kernel thermal zone of the SoC (zone 0 on a Pi), read for the temperature.
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
    /// sled page cache in MiB, fractions allowed (sled's default of 1 GiB would eat a Pi
    /// Zero). Rings are written once and rarely read back, so a small cache costs little.
    pub cache_mib: f64,
    /// Messages the MQTT outbox keeps while the broker is unreachable; beyond it the least
    /// severe, oldest ones are dropped (and counted).
    pub max_outbox_messages: usize,
    /// Bytes the MQTT outbox keeps, in MiB.
    pub max_outbox_mib: u64,
    /// Time between pruning passes.
    #[serde(with = "duration")]
    pub maintenance_interval: Duration,
    /// Free space (MiB) kept on the data directory's file system: below it, kept snapshots
    /// and then the oldest rings are removed.
    pub min_free_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_rings: 10_000,
            max_alerts: 2_000,
            max_size_mib: 64,
            cache_mib: 0.0625,
            max_outbox_messages: 10_000,
            max_outbox_mib: 16,
            maintenance_interval: Duration::from_secs(600),
            min_free_mib: 32,
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
        AlertsConfig { builtin: true, rule: Vec::new() }
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
    /// A reading name (one of `READINGS`).
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
    #[serde(default, with = "duration::optional")]
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
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (required).
    pub url: String,
    /// First topic level; `P = {topic_prefix}/{device_id}`.
    pub topic_prefix: String,
    /// MQTT client id; defaults to the device id.
    pub client_id: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password (keep the config file readable by root and the service only).
    pub password: Option<String>,
    /// CA certificates (PEM) that sign the broker's certificate; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(with = "duration")]
    pub keepalive: Duration,
    /// Time between telemetry messages.
    #[serde(with = "duration")]
    pub telemetry_interval: Duration,
    /// First reconnect delay; doubles (with jitter) up to `reconnect_max`.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// Largest command payload accepted; larger ones are answered `failed`.
    pub max_command_bytes: usize,
    /// Fleet public key (ed25519, base64); when set, every MQTT command but `ping` and
    /// `config/get` must be signed with it.
    pub command_key: Option<String>,
    /// Publish Home Assistant MQTT discovery for this doorbell.
    pub home_assistant: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            topic_prefix: "doorbell".into(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keepalive: Duration::from_secs(30),
            telemetry_interval: Duration::from_secs(60),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            max_command_bytes: 256 * 1024,
            command_key: None,
            home_assistant: false,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

impl MqttConfig {
    /// Whether the url asks for TLS.
    pub fn tls(&self) -> bool {
        self.url.starts_with("mqtts://")
    }

    /// The broker's `host:port`, with the scheme's default port when none is given.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        parse_broker_url(&self.url)
    }

    /// The decoded `command_key`, if one is configured.
    pub fn command_key(&self) -> Result<Option<[u8; 32]>, String> {
        use base64::Engine;
        let Some(text) = &self.command_key else { return Ok(None) };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("is not base64: {e}"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| format!("is {} bytes; an ed25519 public key is 32", b.len()))?;
        Ok(Some(key))
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.url.is_empty() {
            return Err(("url", "is required in [mqtt] (or remove the section for no fleet link)".into()));
        }
        self.host_port().map_err(|r| ("url", r))?;
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['+', '#', '/']) || self.topic_prefix == "all" {
            return Err(("topic_prefix", "must be one non-empty topic level without + # /".into()));
        }
        if let Some(id) = &self.client_id {
            validate_device_id(id).map_err(|r| ("client_id", r))?;
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(("password", "needs a username".into()));
        }
        for (key, file) in [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if let Some(file) = file {
                if !self.tls() {
                    return Err((key, "TLS files need an mqtts:// url".into()));
                }
                std::fs::metadata(file).map_err(|e| (key, format!("{}: {e}", file.display())))?;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("key_file", "cert_file and key_file go together (mutual TLS)".into()));
        }
        let s = Duration::from_secs;
        for (key, d, min, max) in [
            ("keepalive", self.keepalive, s(5), s(3600)),
            ("telemetry_interval", self.telemetry_interval, s(1), s(86_400)),
            ("reconnect_min", self.reconnect_min, Duration::from_millis(100), s(60)),
            ("reconnect_max", self.reconnect_max, self.reconnect_min, s(3600)),
        ] {
            out_of_range(d, min, max).map_err(|r| (key, r))?;
        }
        if !(1024..=4 * 1024 * 1024).contains(&self.max_command_bytes) {
            return Err(("max_command_bytes", format!("{} is out of range 1024..=4194304", self.max_command_bytes)));
        }
        self.command_key().map_err(|r| ("command_key", r))?;
        if self.discovery_prefix.is_empty() || self.discovery_prefix.contains(['+', '#']) {
            return Err(("discovery_prefix", "must be a topic without + #".into()));
        }
        Ok(())
    }
}

/// Splits `mqtt[s]://host[:port]` into host and port (1883 / 8883 by default).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, 1883)
    } else {
        return Err(format!("`{url}` must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("`{url}` must be scheme://host[:port] with no path"));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            let port =
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("port `{port}` is not a number from 1 to 65535"))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        _ => Ok((rest.to_string(), default_port)),
    }
}

/// A duration outside `min..=max`, as a reason.
fn out_of_range(d: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if d < min || d > max {
        return Err(format!(
            "{} is out of range {}..={}",
            humantime::format_duration(d),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(())
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
    /// Program and arguments printing one JPEG on stdout, for `command`.
    pub command: Vec<String>,
    /// Snapshot URL (`http://host[:port]/path`) for `http`.
    pub url: Option<String>,
    /// Longest a single frame may take (the command is killed after it).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Frames per ring (a burst, decided by vote).
    pub frames: usize,
    /// Largest accepted JPEG, in MiB.
    pub max_image_mib: u64,
    /// Largest accepted image, in megapixels (checked before decoding).
    pub max_megapixels: f64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: CaptureSource::Command,
            path: None,
            command: ["rpicam-still", "-n", "-t", "1", "--width", "1280", "--height", "960", "-e", "jpg", "-o", "-"]
                .map(String::from)
                .to_vec(),
            url: None,
            timeout: Duration::from_secs(5),
            frames: 3,
            max_image_mib: 16,
            max_megapixels: 16.0,
        }
    }
}

/// Where the models are looked for when the config names none, in order: `install.sh` (and
/// `scripts/fetch-models.sh --install`) put them in the first, the .deb in the second.
pub const MODELS_DIRS: [&str; 2] = ["/usr/local/share/doorbell-agent/models", "/usr/share/doorbell-agent/models"];

/// The default path of a model file: in the first of `MODELS_DIRS` that has it (the first
/// when none has, so that the error names where it is expected).
fn default_model(file: &str) -> PathBuf {
    let candidates = MODELS_DIRS.map(|dir| Path::new(dir).join(file));
    candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[0]).clone()
}
/// sha256 of the BlazeFace short-range ONNX that `scripts/fetch-models.sh` produces.
pub const DETECTOR_SHA256: &str = "2d83bf713a7bf67b1d8d65b3d4eb297a4f1029bce51cf0d9f7723046648f10a7";
/// sha256 of the dlib ResNet ONNX that `scripts/fetch-models.sh` produces.
pub const EMBEDDER_SHA256: &str = "60ce67a7972ba8f1c7019bffbe48383deeef88921dd7b48beecc9b84970b1771";

/// `[faces]`: models, detection gates and matching thresholds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// BlazeFace short-range ONNX.
    pub detector_model: PathBuf,
    /// Its expected sha256 (a different file is refused).
    pub detector_sha256: String,
    /// dlib face recognition ResNet ONNX.
    pub embedder_model: PathBuf,
    /// Its expected sha256.
    pub embedder_sha256: String,
    /// Minimum detector score (0..1).
    pub detect_threshold: f32,
    /// Non-maximum suppression overlap (IoU).
    pub nms_iou: f32,
    /// Faces narrower than this (source pixels) are ignored.
    pub min_face_px: u32,
    /// Blur gate: minimum variance of the Laplacian of the aligned face.
    pub min_sharpness: f32,
    /// Faces embedded per frame at most (largest scores first).
    pub max_faces_per_frame: usize,
    /// Cosine similarity at which a face is a known person.
    pub match_threshold: f32,
    /// Cosine similarity at which a face is a blocked person (checked first).
    pub block_threshold: f32,
    /// Descriptors kept per person (each enrollment adds one; the oldest go first).
    pub max_samples_per_person: usize,
    /// People in the gallery, both lists together.
    pub max_people: usize,
    /// Operator feedbacks the rolling accuracy is computed over.
    pub accuracy_window: usize,
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            detector_model: default_model("face_detection_short_range.onnx"),
            detector_sha256: DETECTOR_SHA256.into(),
            embedder_model: default_model("dlib_face_recognition_resnet_v1.onnx"),
            embedder_sha256: EMBEDDER_SHA256.into(),
            detect_threshold: 0.6,
            nms_iou: 0.3,
            min_face_px: 40,
            min_sharpness: 15.0,
            max_faces_per_frame: 3,
            match_threshold: 0.9,
            block_threshold: 0.88,
            max_samples_per_person: 10,
            max_people: 500,
            accuracy_window: 50,
        }
    }
}

/// `[pipeline]`: the supervised `pipeline-worker` process.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// A ring whose worker has not answered by then is `error`; the worker is killed.
    #[serde(with = "duration")]
    pub ring_deadline: Duration,
    /// Longest a worker may take to load its models and report ready.
    #[serde(with = "duration")]
    pub start_timeout: Duration,
    /// Exit the worker after this long without work to give its memory back; 0 = keep warm.
    #[serde(with = "duration")]
    pub idle_exit: Duration,
    /// First restart delay after a failure; doubles per consecutive failure.
    #[serde(with = "duration")]
    pub restart_backoff: Duration,
    /// Longest restart delay.
    #[serde(with = "duration")]
    pub restart_backoff_max: Duration,
    /// Time between health checks of a running worker.
    #[serde(with = "duration")]
    pub health_interval: Duration,
    /// Press to decision above this raises `pipeline_slow`.
    #[serde(with = "duration")]
    pub budget: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ring_deadline: Duration::from_secs(15),
            start_timeout: Duration::from_secs(30),
            idle_exit: Duration::ZERO,
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            health_interval: Duration::from_secs(30),
            budget: Duration::from_secs(5),
        }
    }
}

/// `[snapshots]`: frames of unknown and blocked visitors kept on the device.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotsConfig {
    /// Keep the frames of `unknown` and `blocked` rings (needed to enroll from a ring).
    pub keep: bool,
    /// Rings whose frames are kept at most (oldest removed first).
    pub max_rings: usize,
    /// Total size of kept frames at most, in MiB.
    pub max_mib: u64,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig { keep: false, max_rings: 20, max_mib: 16 }
    }
}

impl Config {
    /// Parses and validates configuration text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let error = |key: String, e: toml::de::Error| {
            let line = e.span().map(|s| format!(" (line {})", text.get(..s.start).unwrap_or_default().matches('\n').count() + 1));
            ConfigError { file: path.to_path_buf(), key, reason: format!("{}{}", e.message(), line.unwrap_or_default()) }
        };
        // Syntax first, so that an error of the typed pass below is one of a key.
        text.parse::<toml::Table>().map_err(|e| error("(file)".into(), e))?;
        let config: Config = toml::from_str(text).map_err(|e| {
            let key = e.span().map_or_else(|| "(file)".to_string(), |s| key_at(text, s.start));
            error(key, e)
        })?;
        config.validate().map_err(|(key, reason)| ConfigError { file: path.to_path_buf(), key, reason })?;
        Ok(config)
    }

    /// Range and consistency checks that serde's types cannot express.
    fn validate(&self) -> Result<(), (String, String)> {
        fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
            Err((key.to_string(), reason.into()))
        }
        fn within(key: &str, d: Duration, min: Duration, max: Duration) -> Result<(), (String, String)> {
            out_of_range(d, min, max).or_else(|r| bad(key, r))
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
        within("gpio.poll_interval", self.gpio.poll_interval, ms(1), s(1))?;
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
        if self.control.socket.as_ref().is_some_and(|p| p.as_os_str().is_empty() || p.as_os_str().len() > 107) {
            return bad("control.socket", "must be a path of 1 to 107 bytes (the limit of a Unix socket address)");
        }
        if !(1..=256).contains(&self.control.max_request_mib) {
            return bad("control.max_request_mib", format!("{} is out of range 1..=256", self.control.max_request_mib));
        }
        if !(1..=64).contains(&self.control.max_connections) {
            return bad("control.max_connections", format!("{} is out of range 1..=64", self.control.max_connections));
        }
        within("control.timeout", self.control.timeout, ms(100), s(600))?;
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
        if !(0.0625..=1024.0).contains(&self.store.cache_mib) {
            return bad("store.cache_mib", format!("{} is out of range 0.0625..=1024", self.store.cache_mib));
        }
        if !(10..=1_000_000).contains(&self.store.max_outbox_messages) {
            return bad("store.max_outbox_messages", format!("{} is out of range 10..=1000000", self.store.max_outbox_messages));
        }
        if !(1..=1024).contains(&self.store.max_outbox_mib) {
            return bad("store.max_outbox_mib", format!("{} is out of range 1..=1024", self.store.max_outbox_mib));
        }
        within("store.maintenance_interval", self.store.maintenance_interval, s(1), s(86_400))?;
        if self.store.min_free_mib > 65_536 {
            return bad("store.min_free_mib", format!("{} is out of range 0..=65536", self.store.min_free_mib));
        }
        for (i, rule) in self.alerts.rule.iter().enumerate() {
            rule.validate().or_else(|(field, reason)| bad(&format!("alerts.rule[{i}].{field}"), reason))?;
        }
        if let Some(mqtt) = &self.mqtt {
            mqtt.validate().or_else(|(key, reason)| bad(&format!("mqtt.{key}"), reason))?;
        }
        self.update.validate().or_else(|(key, reason)| bad(&format!("update.{key}"), reason))?;
        self.validate_faces()
    }

    /// Ranges of `[capture]`, `[faces]`, `[pipeline]` and `[snapshots]`.
    fn validate_faces(&self) -> Result<(), (String, String)> {
        fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
            Err((key.to_string(), reason.into()))
        }
        fn within(key: &str, d: Duration, min: Duration, max: Duration) -> Result<(), (String, String)> {
            if d < min || d > max {
                let f = humantime::format_duration;
                return bad(key, format!("{} is out of range {}..={}", f(d), f(min), f(max)));
            }
            Ok(())
        }
        fn unit(key: &str, v: f32, min: f32, max: f32) -> Result<(), (String, String)> {
            if !(min..=max).contains(&v) {
                return bad(key, format!("{v} is out of range {min}..={max}"));
            }
            Ok(())
        }
        fn count(key: &str, v: usize, min: usize, max: usize) -> Result<(), (String, String)> {
            if !(min..=max).contains(&v) {
                return bad(key, format!("{v} is out of range {min}..={max}"));
            }
            Ok(())
        }
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        let c = &self.capture;
        match c.source {
            CaptureSource::Files if c.path.is_none() => return bad("capture.path", "is required when capture.source = \"files\""),
            CaptureSource::Command if c.command.first().is_none_or(|p| p.is_empty()) => {
                return bad("capture.command", "needs a program (and its arguments) when capture.source = \"command\"")
            }
            CaptureSource::Http => match &c.url {
                None => return bad("capture.url", "is required when capture.source = \"http\""),
                Some(url) => match doorbell_base::http::Url::parse(url) {
                    Ok(u) if u.scheme == doorbell_base::http::Scheme::Http => {}
                    // A camera on the doorbell's own network: no CA setting for it.
                    Ok(_) => return bad("capture.url", format!("`{url}`: a camera snapshot URL must be http://")),
                    Err(r) => return bad("capture.url", r),
                },
            },
            _ => {}
        }
        within("capture.timeout", c.timeout, ms(100), s(120))?;
        count("capture.frames", c.frames, 1, 10)?;
        if !(1..=256).contains(&c.max_image_mib) {
            return bad("capture.max_image_mib", format!("{} is out of range 1..=256", c.max_image_mib));
        }
        if !(0.01..=100.0).contains(&c.max_megapixels) {
            return bad("capture.max_megapixels", format!("{} is out of range 0.01..=100", c.max_megapixels));
        }
        let f = &self.faces;
        for (key, hash) in [("faces.detector_sha256", &f.detector_sha256), ("faces.embedder_sha256", &f.embedder_sha256)] {
            if hash.len() != 64 || !hash.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return bad(key, format!("`{hash}` is not 64 hex digits"));
            }
        }
        unit("faces.detect_threshold", f.detect_threshold, 0.05, 1.0)?;
        unit("faces.nms_iou", f.nms_iou, 0.0, 1.0)?;
        if !(8..=4096).contains(&f.min_face_px) {
            return bad("faces.min_face_px", format!("{} is out of range 8..=4096", f.min_face_px));
        }
        unit("faces.min_sharpness", f.min_sharpness, 0.0, 10_000.0)?;
        count("faces.max_faces_per_frame", f.max_faces_per_frame, 1, 10)?;
        unit("faces.match_threshold", f.match_threshold, 0.0, 1.0)?;
        unit("faces.block_threshold", f.block_threshold, 0.0, 1.0)?;
        count("faces.max_samples_per_person", f.max_samples_per_person, 1, 100)?;
        count("faces.max_people", f.max_people, 1, 100_000)?;
        count("faces.accuracy_window", f.accuracy_window, 10, 10_000)?;
        let p = &self.pipeline;
        within("pipeline.ring_deadline", p.ring_deadline, ms(200), s(300))?;
        within("pipeline.start_timeout", p.start_timeout, ms(500), s(600))?;
        if !p.idle_exit.is_zero() {
            within("pipeline.idle_exit", p.idle_exit, s(1), s(86_400))?;
        }
        within("pipeline.restart_backoff", p.restart_backoff, ms(10), s(600))?;
        within("pipeline.restart_backoff_max", p.restart_backoff_max, p.restart_backoff, s(3600))?;
        within("pipeline.health_interval", p.health_interval, ms(100), s(3600))?;
        within("pipeline.budget", p.budget, ms(10), s(300))?;
        count("snapshots.max_rings", self.snapshots.max_rings, 1, 10_000)?;
        if !(1..=4096).contains(&self.snapshots.max_mib) {
            return bad("snapshots.max_mib", format!("{} is out of range 1..=4096", self.snapshots.max_mib));
        }
        Ok(())
    }

    /// Where the local control socket is (see `ControlConfig::socket`).
    pub fn control_socket(&self) -> PathBuf {
        match &self.control.socket {
            Some(path) => path.clone(),
            None if self.data_dir == Path::new(device::DATA_DIR) => PathBuf::from(DEVICE_CONTROL_SOCKET),
            None => self.data_dir.join("control.sock"),
        }
    }

    /// The configured device id, or the one discovered on this machine.
    pub fn device_id(&self) -> String {
        self.device_id.clone().unwrap_or_else(discover_device_id)
    }
}

impl RuleConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !READINGS.contains(&self.metric.as_str()) {
            return Err(("metric", format!("unknown metric `{}`; known: {}", self.metric, READINGS.join(", "))));
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

/// The dotted path (`gpio.pin`, `alerts.rule[1].metric`) of the key whose key or value is
/// at byte `offset` of `text`: the table header above it, then the key of its line or, for a
/// value spread over lines, of the nearest line above that has one.
fn key_at(text: &str, offset: usize) -> String {
    let line_start = text.get(..offset).and_then(|b| b.rfind('\n')).map_or(0, |i| i + 1);
    let key_of = |line: &str| {
        let line = line.trim();
        line.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string()).filter(|k| !k.is_empty() && !line.starts_with(['#', '[']))
    };
    let mut table = String::new();
    let mut key = None;
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for line in text.get(..line_start).unwrap_or_default().lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("[[").and_then(|l| l.split_once("]]")).map(|(n, _)| n.trim()) {
            let index = match arrays.iter_mut().find(|(n, _)| n == name) {
                Some((_, i)) => {
                    *i += 1;
                    *i
                }
                None => {
                    arrays.push((name.to_string(), 0));
                    0
                }
            };
            (table, key) = (format!("{name}[{index}]"), None);
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(n, _)| n.trim()) {
            (table, key) = (name.to_string(), None);
        } else if let Some(k) = key_of(line) {
            key = Some(k);
        }
    }
    match (key_of(text.get(line_start..).unwrap_or_default().lines().next().unwrap_or_default()).or(key), table.is_empty()) {
        (Some(k), true) => k,
        (Some(k), false) => format!("{table}.{k}"),
        (None, true) => "(file)".into(),
        (None, false) => table,
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
        info.lines().find_map(|l| l.strip_prefix("Serial").map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()))
    });
    let machine_id = || std::fs::read_to_string("/etc/machine-id").ok().map(|s| s.trim().to_string());
    let hostname = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string());
    [serial, machine_id(), hostname()]
        .into_iter()
        .flatten()
        .find(|id| validate_device_id(id).is_ok() && !id.trim_matches('0').is_empty())
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
        assert_eq!(err("[gpio]\ndetect = \"edge\"").key, "gpio.detect");
        assert_eq!(err("[gpio]\npoll_interval = \"0ms\"").key, "gpio.poll_interval");
        assert_eq!(err("[gpio]\npoll_interval = \"2s\"").key, "gpio.poll_interval");
        assert_eq!(err("[sampler]\ninterval = \"fast\"").key, "sampler.interval");
        assert_eq!(err("[probe]\nlisten = \"nowhere\"").key, "probe.listen");
        assert_eq!(err("device_id = \"a/b\"").key, "device_id");
        assert_eq!(err("[mqtt]\nurl = \"http://x\"").key, "mqtt.url");
        let e = err("[[alerts.rule]]\nname = \"x\"\nmetric = \"nope\"\nseverity = \"major\"\nthreshold = 1.0");
        assert_eq!(e.key, "alerts.rule[0].metric");
        assert_eq!(err("[gpio]\npin = 3\n\n[mqtt]\nurl = \"mqtt://b\"\nkeepalive = 5").key, "mqtt.keepalive");
        assert_eq!(err("[capture]\ncommand = [\n  \"a\",\n  7,\n]").key, "capture.command");
        assert_eq!(err("gpio.pin = \"x\"").key, "gpio.pin");
        let rule = "name = \"x\"\nmetric = \"cpu_percent\"\nthreshold = 1.0\nseverity = \"minor\"\n";
        assert_eq!(err(&format!("[[alerts.rule]]\n{rule}[[alerts.rule]]\n{rule}sverity = 1")).key, "alerts.rule[1].sverity");
        assert_eq!(err("this is = = not toml").key, "(file)");
    }

    #[test]
    fn gpio_polling_keys() {
        let c = Config::parse(Path::new("t.toml"), "[gpio]\ndetect = \"poll\"\npoll_interval = \"5ms\"").unwrap();
        assert_eq!((c.gpio.detect, c.gpio.poll_interval), (Detect::Poll, Duration::from_millis(5)));
        assert_eq!(GpioConfig::default().detect, Detect::Interrupt);
        let e = err("[gpio]\npoll_interval = \"500us\"");
        assert!(e.reason.contains("out of range 1ms..=1s"), "{}", e.reason);
    }

    #[test]
    fn broker_url_defaults_port_by_scheme() {
        let m = |url: &str| MqttConfig { url: url.into(), ..MqttConfig::default() }.host_port();
        assert_eq!(m("mqtt://b").unwrap(), ("b".into(), 1883));
        assert_eq!(m("mqtts://b.example:9000").unwrap(), ("b.example".into(), 9000));
        assert!(m("mqtt://b:x").is_err());
    }
}
