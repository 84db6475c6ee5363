//! What `doorbell-slotctl` reads from the agent's configuration file.
//!
//! slotctl is installed once and never updated, while the configuration grows with the
//! agent: a key that a newer agent added must not make the old slotctl refuse the file. So
//! it reads only the keys it needs (`data_dir`, `probe.listen`, the known `[update]` keys)
//! leniently, and falls back to the defaults for anything it cannot use, saying so in the
//! journal. It never fails: a slot controller that refuses to run leaves a doorbell dead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doorbell_artifact::PublicKey;
use doorbell_base::{device, duration};
use serde::{Deserialize, Serialize};

/// The settings slotctl works with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's data directory (its update requests live in `data_dir/update`).
    pub data_dir: PathBuf,
    /// The agent's probe, asked for /health before a commit.
    pub probe: SocketAddr,
    /// The `[update]` section.
    pub update: UpdateConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { data_dir: PathBuf::from(device::DATA_DIR), probe: device::PROBE_LISTEN, update: UpdateConfig::default() }
    }
}

impl Settings {
    /// Reads the settings from the agent's config file; never fails (see the module doc).
    pub fn load(path: &Path) -> Settings {
        let mut s = Settings::default();
        let text = match doorbell_base::durable::read_text(path, device::MAX_CONFIG_FILE) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{}: cannot read ({e}); using defaults (no update key: updates are refused)", path.display());
                return s;
            }
        };
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{}: not valid TOML ({e}); using defaults", path.display());
                return s;
            }
        };
        if let Some(d) = table.get("data_dir").and_then(|v| v.as_str()) {
            s.data_dir = PathBuf::from(d);
        }
        if let Some(l) = table.get("probe").and_then(|p| p.get("listen")).and_then(|v| v.as_str()) {
            match l.parse() {
                Ok(a) => s.probe = a,
                Err(_) => log::warn!("{}: probe.listen `{l}` is not an address; using {}", path.display(), s.probe),
            }
        }
        if let Some(update) = table.get("update").and_then(|u| u.as_table()) {
            // Only the keys this build knows; a newer agent's keys are ignored, not fatal.
            let known: toml::Table =
                update.iter().filter(|(k, _)| UpdateConfig::KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
            match known
                .try_into::<UpdateConfig>()
                .map_err(|e| e.to_string())
                .and_then(|u| u.validate().map(|()| u).map_err(|(k, r)| format!("update.{k}: {r}")))
            {
                Ok(u) => s.update = u,
                Err(e) => log::warn!("{}: [update] unusable ({e}); using defaults (updates refused)", path.display()),
            }
        }
        s
    }

    /// The key update manifests must be signed with.
    pub fn key(&self) -> Option<PublicKey> {
        self.update.public_key.as_deref().and_then(|k| PublicKey::parse(k).ok())
    }
}

/// `[update]` of the agent's configuration: the A/B self-update. Owned here because
/// slotctl, which enforces tries and deadline, reads it too (leniently: only `KEYS`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// ed25519 public key (base64, or 64 hex digits) artifacts must be signed with; absent = every
    /// update is refused.
    pub public_key: Option<String>,
    /// Starts a new version gets to commit (crashes and hangs before its commit use them up).
    pub tries: u32,
    /// How long a new version must stay healthy (monotonic clock) before it commits.
    #[serde(with = "duration")]
    pub soak: Duration,
    /// A trial that has not committed this long after its start is rolled back.
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// Largest agent binary accepted, MiB (decompressed).
    pub max_size_mib: u64,
    /// Whole-download time limit for `update apply URL`, retries included.
    #[serde(with = "duration")]
    pub download_timeout: Duration,
    /// CA certificates (PEM) an `https://` artifact server must chain to; absent = the
    /// system's roots. Trust in the artifact comes from its signature either way.
    pub ca_file: Option<PathBuf>,
    /// Install root of the A/B slots; must match `doorbell-slotctl --root` (a non-default
    /// install, or a test rig in a temporary directory).
    pub install_root: PathBuf,
    /// Directory of slotctl's slot state file; must match `doorbell-slotctl --state-dir`.
    pub slot_state_dir: PathBuf,
    /// With `[mqtt]`: a new version that gets no ConnAck from the broker this long after its
    /// start fails its trial. The soak starts only once it is connected; the wait is cut to
    /// `deadline - soak` so that the reason names the broker, not the deadline.
    #[serde(with = "duration")]
    pub broker_timeout: Duration,
    /// Compare the new version with the previous one's baseline during the soak.
    pub canary: bool,
    /// Canary: RSS above the baseline by more than this many percent fails the trial.
    pub canary_max_rss_growth_percent: u32,
    /// Canary: ring p95 latency above the baseline by more than this many percent fails the
    /// trial (compared only with enough rings on both sides).
    pub canary_max_latency_growth_percent: u32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            public_key: None,
            tries: 3,
            soak: Duration::from_secs(60),
            deadline: Duration::from_secs(600),
            max_size_mib: 32,
            download_timeout: Duration::from_secs(300),
            ca_file: None,
            install_root: PathBuf::from(crate::INSTALL_ROOT),
            slot_state_dir: PathBuf::from(crate::STATE_DIR),
            // Pi links (Wi-Fi, a broker behind a slow uplink) can take tens of seconds.
            broker_timeout: Duration::from_secs(60),
            canary: true,
            canary_max_rss_growth_percent: 50,
            canary_max_latency_growth_percent: 20,
        }
    }
}

impl UpdateConfig {
    /// The keys of `[update]`, for readers that must skip keys of newer versions.
    pub const KEYS: &'static [&'static str] = &[
        "public_key",
        "tries",
        "soak",
        "deadline",
        "max_size_mib",
        "download_timeout",
        "ca_file",
        "install_root",
        "slot_state_dir",
        "broker_timeout",
        "canary",
        "canary_max_rss_growth_percent",
        "canary_max_latency_growth_percent",
    ];

    /// The decompressed size limit in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size_mib * 1024 * 1024
    }

    /// Range checks; the key (without `update.`) and the reason on failure.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(k) = &self.public_key {
            PublicKey::parse(k).map_err(|r| ("public_key", r))?;
        }
        if !(1..=5).contains(&self.tries) {
            return Err((
                "tries",
                format!("{} is out of range 1..=5 (the unit's StartLimitBurst=8 must stay above tries + 2)", self.tries),
            ));
        }
        let range = |key, d: Duration, min: u64, max: u64| {
            if d < Duration::from_secs(min) || d > Duration::from_secs(max) {
                return Err((key, format!("{} is out of range {min}s..={max}s", humantime::format_duration(d))));
            }
            Ok(())
        };
        range("soak", self.soak, 1, 3600)?;
        range("deadline", self.deadline, 10, 86_400)?;
        range("download_timeout", self.download_timeout, 5, 86_400)?;
        if let Some(file) = &self.ca_file {
            std::fs::metadata(file).map_err(|e| ("ca_file", format!("{}: {e}", file.display())))?;
        }
        if self.deadline < self.soak + Duration::from_secs(5) {
            return Err(("deadline", format!("must exceed soak ({}) by at least 5s", humantime::format_duration(self.soak))));
        }
        if !(1..=512).contains(&self.max_size_mib) {
            return Err(("max_size_mib", format!("{} is out of range 1..=512", self.max_size_mib)));
        }
        range("broker_timeout", self.broker_timeout, 1, 3600)?;
        for (key, percent) in [
            ("canary_max_rss_growth_percent", self.canary_max_rss_growth_percent),
            ("canary_max_latency_growth_percent", self.canary_max_latency_growth_percent),
        ] {
            if !(1..=1000).contains(&percent) {
                return Err((key, format!("{percent} is out of range 1..=1000")));
            }
        }
        Ok(())
    }
}
