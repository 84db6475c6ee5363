//! The live configuration: the configuration file plus the fleet's changes to it.
//!
//! `config/set` may change only keys the running agent can apply without a restart
//! (`LIVE_KEYS`). A change is validated as part of the whole configuration, persisted to an
//! overlay file in the data directory (the service cannot write /etc, and the installer's
//! file stays as the installer wrote it), and published on a watch channel that the
//! components holding those settings follow. At start the overlay is applied on top of the
//! file; an overlay that no longer validates (written by a newer version before a
//! rollback) is ignored with a warning rather than stopping the agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};

/// The overlay file under `data_dir`.
pub const OVERLAY: &str = "config.fleet.toml";

/// Keys `config/set` may change, because their owners apply them live.
pub const LIVE_KEYS: &[&str] = &[
    "sampler.interval",
    "gpio.debounce",
    "gpio.burst",
    "gpio.rings_per_minute",
    "mqtt.telemetry_interval",
    "alerts.builtin",
    "alerts.rule",
];

/// The effective configuration and what went into it.
#[derive(Debug)]
pub struct Loaded {
    /// File plus overlay.
    pub config: Config,
    /// The overlay file, when one was applied.
    pub overlay: Option<PathBuf>,
    /// Why an overlay was ignored.
    pub warning: Option<String>,
}

/// Loads the configuration file (validated: file, key and reason on error) and applies the
/// fleet overlay, if any.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = doorbell_base::durable::read_text(path, doorbell_base::device::MAX_CONFIG_FILE).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: "(file)".into(),
        reason: format!("cannot read: {e}"),
    })?;
    let base = Config::parse(path, &text)?;
    let overlay_path = base.data_dir.join(OVERLAY);
    let overlay = match doorbell_base::durable::read_text(&overlay_path, doorbell_base::device::MAX_CONFIG_FILE) {
        Ok(overlay) => overlay,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded { config: base, overlay: None, warning: None }),
        Err(e) => {
            let warning = Some(format!("{}: cannot read ({e}); fleet changes not applied", overlay_path.display()));
            return Ok(Loaded { config: base, overlay: None, warning });
        }
    };
    match merged(&text, &overlay).and_then(|merged| Config::parse(&overlay_path, &merged).map_err(|e| e.to_string())) {
        Ok(config) => Ok(Loaded { config, overlay: Some(overlay_path), warning: None }),
        Err(reason) => Ok(Loaded { config: base, overlay: None, warning: Some(format!("fleet changes ignored: {reason}")) }),
    }
}

/// The file's TOML with the overlay's tables merged in (overlay wins; arrays are replaced).
fn merged(base: &str, overlay: &str) -> Result<String, String> {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (key, value) in from {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, value) => {
                    into.insert(key, value);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().map_err(|e| format!("{e}"))?;
    let overlay: toml::Table = overlay.parse().map_err(|e| format!("overlay is not TOML: {e}"))?;
    merge(&mut table, overlay);
    toml::to_string(&table).map_err(|e| e.to_string())
}

/// Owns the live configuration; cheap to clone.
#[derive(Clone)]
pub struct Settings {
    path: PathBuf,
    tx: Arc<watch::Sender<Config>>,
    // Serializes changes (read overlay, validate, write, publish).
    lock: Arc<Mutex<()>>,
}

impl Settings {
    /// Settings for the file at `path`, starting from `config`.
    pub fn new(path: &Path, config: Config) -> Settings {
        Settings { path: path.to_path_buf(), tx: Arc::new(watch::channel(config).0), lock: Arc::new(Mutex::new(())) }
    }

    /// Follows the configuration as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Config> {
        self.tx.subscribe()
    }

    /// The current configuration.
    pub fn current(&self) -> Config {
        self.tx.borrow().clone()
    }

    /// Validates, persists and publishes changes of dotted keys; the error is the reason.
    pub fn set(&self, values: &Map<String, Value>) -> Result<Vec<String>, String> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = values.keys().find(|k| !LIVE_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "`{key}` cannot be changed at run time (settable: {}); edit {} and restart",
                LIVE_KEYS.join(", "),
                self.path.display()
            ));
        }
        let current = self.current();
        let overlay_path = current.data_dir.join(OVERLAY);
        let mut overlay: toml::Table = match doorbell_base::durable::read_text(&overlay_path, doorbell_base::device::MAX_CONFIG_FILE) {
            Ok(text) => text.parse().unwrap_or_default(),
            Err(_) => toml::Table::new(),
        };
        for (dotted, value) in values {
            let value = to_toml(value).ok_or_else(|| format!("`{dotted}`: null is not a value"))?;
            let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
            let table = overlay.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(table) = table else { return Err(format!("`{section}` is not a section")) };
            table.insert(key.to_string(), value);
        }
        let overlay_text = toml::to_string(&overlay).map_err(|e| e.to_string())?;
        let base = doorbell_base::durable::read_text(&self.path, doorbell_base::device::MAX_CONFIG_FILE)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let config = merged(&base, &overlay_text)
            .and_then(|text| Config::parse(&overlay_path, &text).map_err(|e| format!("key `{}`: {}", e.key, e.reason)))?;
        write_atomically(&overlay_path, overlay_text.as_bytes()).map_err(|e| format!("cannot persist {}: {e}", overlay_path.display()))?;
        self.tx.send_replace(config);
        Ok(values.keys().cloned().collect())
    }
}

fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().map(to_toml).collect::<Option<_>>()?),
        Value::Object(map) => toml::Value::Table(map.iter().map(|(k, v)| Some((k.clone(), to_toml(v)?))).collect::<Option<_>>()?),
    })
}

/// temp file + fsync + rename + directory fsync: the file is either the old or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(base: &str) -> (tempfile::TempDir, PathBuf, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = format!("data_dir = \"{}\"\n{base}", dir.path().join("data").display());
        std::fs::write(&path, text).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = load(&path).unwrap().config;
        let settings = Settings::new(&path, config);
        (dir, path, settings)
    }

    fn values(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn live_change_is_validated_persisted_and_published() {
        let (_dir, path, settings) = setup("[sampler]\ninterval = \"5s\"\n");
        let mut rx = settings.subscribe();
        assert_eq!(settings.set(&values(r#"{"sampler.interval": "10s", "gpio.burst": 5}"#)).unwrap().len(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().sampler.interval, std::time::Duration::from_secs(10));
        // Survives a restart: the overlay is applied on top of the file.
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.config.sampler.interval.as_secs(), loaded.config.gpio.burst), (10, 5));
        assert!(loaded.overlay.is_some() && loaded.warning.is_none());
    }

    #[test]
    fn bad_or_non_live_changes_are_refused_and_change_nothing() {
        let (_dir, path, settings) = setup("");
        let err = settings.set(&values(r#"{"sampler.interval": "soon"}"#)).unwrap_err();
        assert!(err.contains("sampler.interval") && err.contains("not a duration"), "{err}");
        let err = settings.set(&values(r#"{"gpio.pin": 4}"#)).unwrap_err();
        assert!(err.contains("cannot be changed at run time"), "{err}");
        assert!(settings.set(&values(r#"{"gpio.burst": 0}"#)).unwrap_err().contains("gpio.burst"));
        assert!(load(&path).unwrap().overlay.is_none(), "nothing persisted");
    }

    #[test]
    fn an_overlay_this_version_cannot_read_is_ignored_not_fatal() {
        let (dir, path, _settings) = setup("");
        std::fs::write(dir.path().join("data").join(OVERLAY), "[sampler]\nnew_key_of_a_later_version = 1\n").unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.overlay.is_none());
        assert!(loaded.warning.unwrap().contains("new_key_of_a_later_version"));
    }
}
