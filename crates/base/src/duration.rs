//! Durations in configuration files as human strings (`"5s"`, `"2m"`, `"150ms"`), for
//! `#[serde(with = "…")]`: `duration` for `Duration`, `opt_duration` for `Option<Duration>`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes a duration as humantime text.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Reads humantime text, naming the text it could not read.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like \"5s\" or \"2m\": {e}")))
}

/// The same for `Option<Duration>` (with `#[serde(default)]`: an absent key is `None`).
pub mod optional {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Writes the duration, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a present duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}
