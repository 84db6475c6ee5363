//! The on-disk record types and their envelope.
//!
//! postcard has no field names, so a struct can never change once stored. Every value is a
//! variant of a versioned enum; a new shape is a new variant appended at the end, never an
//! edit. `Record` holds the core trees' values; a component with a tree of its own (faces,
//! updates) declares its own enum the same way and uses `encode`/`decode`. An envelope is
//! `[format=1][crc32 of payload, LE][postcard(value)]`: a bad CRC is corruption, a good CRC
//! that does not decode is a value from a newer version, which an older version skips (and
//! keeps) after a rollback.
// Reads bytes from outside the process: no index or slice that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Severity;

const FORMAT: u8 = 1;

/// Every stored value. Append variants only; never reorder or edit one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A ring event, first version.
    RingV1(RingV1),
    /// An alert, first version.
    AlertV1(AlertV1),
    /// A monotonic counter (meta tree).
    CounterV1(u64),
    /// A ready-to-send MQTT message (outbox tree).
    OutboxV1(OutboxV1),
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bytes damaged: wrong length, format byte or checksum.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
    /// Intact, but written by a newer version of the agent.
    #[error("record from a newer version")]
    NewerVersion,
}

/// Wraps a value in an envelope (format byte, CRC, postcard payload).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    let payload = postcard::to_stdvec(value).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(FORMAT);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Opens an envelope, telling corruption from a value written by a newer version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let [format, c0, c1, c2, c3, payload @ ..] = bytes else {
        return Err(DecodeError::Corrupt("too short"));
    };
    if *format != FORMAT {
        // A future envelope format is also "newer", as long as it is not garbage we can see.
        return Err(if *format > FORMAT && *format < 16 { DecodeError::NewerVersion } else { DecodeError::Corrupt("unknown format byte") });
    }
    let crc = u32::from_le_bytes([*c0, *c1, *c2, *c3]);
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError::Corrupt("checksum mismatch"));
    }
    postcard::from_bytes(payload).map_err(|_| DecodeError::NewerVersion)
}

impl Record {
    /// Encodes into an envelope.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an envelope, telling corruption from a newer version.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        decode(bytes)
    }
}

/// Outcome of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingResult {
    /// A known face.
    Known,
    /// A face that matches nobody.
    Unknown,
    /// A face on the blocklist.
    Blocked,
    /// No face in the frames.
    NoFace,
    /// The pipeline failed.
    Error,
}

impl RingResult {
    /// Name used in payloads and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RingResult::Known => "known",
            RingResult::Unknown => "unknown",
            RingResult::Blocked => "blocked",
            RingResult::NoFace => "no_face",
            RingResult::Error => "error",
        }
    }
}

/// Milliseconds spent in each pipeline stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageMs {
    /// Frame capture.
    pub capture: f32,
    /// Face detection.
    pub detect: f32,
    /// Face embedding.
    pub embed: f32,
    /// Gallery matching.
    pub matching: f32,
}

/// A ring event as stored (version 1; frozen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingV1 {
    /// Unique id consumers de-duplicate by.
    pub id: String,
    /// Monotonic per device.
    pub seq: u64,
    /// What triggered it (`button`, `simulated`).
    pub trigger: String,
    /// The decision.
    pub result: RingResult,
    /// Person's name for known/blocked.
    pub name: Option<String>,
    /// Match confidence 0..1.
    pub confidence: Option<f32>,
    /// Stage timings.
    pub stage_ms: StageMs,
    /// Why the result is `error`.
    pub reason: Option<String>,
    /// Wall-clock time of the press, Unix ms.
    pub ts_ms: u64,
}

impl RingV1 {
    /// The JSON view of the ring event, as on the `events/ring` topic, /rings and the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        // Milliseconds to the microsecond, without the noise of widening an f32.
        let ms = |v: f32| (f64::from(v) * 1000.0).round() / 1000.0;
        serde_json::json!({
            "id": self.id,
            "seq": self.seq,
            "trigger": self.trigger,
            "result": self.result.as_str(),
            "name": self.name,
            "confidence": self.confidence,
            "reason": self.reason,
            "stage_ms": {
                "capture": ms(self.stage_ms.capture),
                "detect": ms(self.stage_ms.detect),
                "embed": ms(self.stage_ms.embed),
                "match": ms(self.stage_ms.matching),
            },
            "ts": doorbell_base::time::rfc3339(self.ts_ms),
        })
    }
}

/// Alert lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertState {
    /// Condition holds.
    Raised,
    /// An operator has seen it; still active.
    Acknowledged,
    /// Resolved.
    Cleared,
}

impl AlertState {
    /// Name used in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Cleared => "cleared",
        }
    }
}

/// An alert as stored (version 1; frozen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertV1 {
    /// Unique id of this occurrence.
    pub id: String,
    /// Stable key (rule name or event name), used for `P/alarms/{key}`.
    pub key: String,
    /// The rule that raised it.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Lifecycle state.
    pub state: AlertState,
    /// Human-readable message.
    pub message: String,
    /// The reading that triggered it.
    pub value: Option<f64>,
    /// The threshold it crossed.
    pub threshold: Option<f64>,
    /// Raised at, Unix ms.
    pub raised_ms: u64,
    /// Last transition, Unix ms.
    pub updated_ms: u64,
}

impl AlertV1 {
    /// Still needs attention (raised or acknowledged).
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Cleared
    }

    /// The JSON view of the alert, as served on /alerts and published over MQTT.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "key": self.key,
            "rule": self.rule,
            "severity": self.severity.as_str(),
            "state": self.state.as_str(),
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "raised_at": doorbell_base::time::rfc3339(self.raised_ms),
            "ts": doorbell_base::time::rfc3339(self.updated_ms),
        })
    }
}

/// A ready-to-send MQTT message (version 1; frozen), so any version can drain any outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxV1 {
    /// Full topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// 0 or 1.
    pub qos: u8,
    /// Retained flag.
    pub retain: bool,
    /// Queued at, Unix ms.
    pub created_ms: u64,
    /// Drop priority: lower severity goes first when the outbox is full.
    pub severity: Severity,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Record {
        Record::RingV1(RingV1 {
            id: "r1".into(),
            seq: 7,
            trigger: "button".into(),
            result: RingResult::NoFace,
            name: None,
            confidence: None,
            stage_ms: StageMs::default(),
            reason: None,
            ts_ms: 1,
        })
    }

    #[test]
    fn roundtrip() {
        let r = ring();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let mut bytes = ring().encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(Record::decode(&bytes), Err(DecodeError::Corrupt(_))));
        assert!(matches!(Record::decode(&[1, 2]), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn unknown_variant_with_good_crc_is_newer_version() {
        // What a future version's `Record::RingV2` (variant index 4) looks like to us.
        let payload = [4u8, 1, 2, 3];
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert_eq!(Record::decode(&bytes), Err(DecodeError::NewerVersion));
    }

    #[test]
    fn a_record_dated_past_the_year_9999_renders() {
        // Found by fuzzing (fuzz/, store_record): a ring with a good checksum whose ts_ms is
        // past the year 9999. Rendering it (/rings, /status, MQTT) panicked in time::rfc3339.
        let payload = [
            0, 0, 48, 0, 0, 0, 0, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 0, 171, 171, 171, 171, 170, 171, 171, 48,
        ];
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let Record::RingV1(ring) = Record::decode(&bytes).unwrap() else { panic!("a ring") };
        assert!(ring.ts_ms > 253_402_300_799_999);
        assert_eq!(ring.to_json()["ts"], "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn variant_indices_are_frozen() {
        // Reordering variants would silently reinterpret old data: pin the indices.
        assert_eq!(ring().encode()[5], 0);
        assert_eq!(Record::CounterV1(1).encode()[5], 2);
    }
}
