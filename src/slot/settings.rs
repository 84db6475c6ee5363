//! What `doorbell-slotctl` reads from the agent's configuration file.
//!
//! slotctl is installed once and never updated, while the configuration grows with the
//! agent: a key that a newer agent added must not make the old slotctl refuse the file. So
//! it reads only the keys it needs (`data_dir`, `probe.listen`, the known `[update]` keys)
//! leniently, and falls back to the defaults for anything it cannot use, saying so in the
//! journal. It never fails: a slot controller that refuses to run leaves a doorbell dead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, UpdateConfig};
use crate::update::artifact::PublicKey;

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
        let c = Config::default();
        Settings { data_dir: c.data_dir, probe: c.probe.listen, update: c.update }
    }
}

impl Settings {
    /// Reads the settings from the agent's config file; never fails (see the module doc).
    pub fn load(path: &Path) -> Settings {
        let mut s = Settings::default();
        let text = match crate::durable::read_text(path, crate::config::MAX_FILE) {
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
