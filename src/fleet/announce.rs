//! Turns what the agent stores (rings, alert transitions, command outcomes) into the
//! ready-to-send messages of the fleet contract, queued in the outbox in the same write as
//! the record itself.

use crate::config::Severity;
use crate::store::{AlertV1, OutboxV1, RingResult, RingV1};

use super::Topics;

/// Builds outbox messages for one device's topics.
#[derive(Debug, Clone)]
pub struct Announcer {
    topics: Topics,
}

impl Announcer {
    /// An announcer for `topics`.
    pub fn new(topics: Topics) -> Announcer {
        Announcer { topics }
    }

    /// The device's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    fn message(topic: String, payload: Vec<u8>, retain: bool, severity: Severity) -> OutboxV1 {
        OutboxV1 { topic, payload, qos: 1, retain, created_ms: doorbell_base::time::now_ms(), severity }
    }

    /// `P/events/ring`. A blocked visitor outranks everything but critical alerts when the
    /// outbox is full; an ordinary ring goes before alerts.
    pub fn ring(&self, ring: &RingV1) -> Vec<OutboxV1> {
        self.ring_event(ring, ring.to_json())
    }

    /// `P/events/ring` for a ring the store could not write: the same event, marked
    /// `"stored": false`, published from memory.
    pub fn ring_unstored(&self, ring: &RingV1) -> Vec<OutboxV1> {
        self.ring_event(ring, unstored(ring.to_json()))
    }

    fn ring_event(&self, ring: &RingV1, json: serde_json::Value) -> Vec<OutboxV1> {
        let severity = match ring.result {
            RingResult::Blocked => Severity::Critical,
            RingResult::Error => Severity::Major,
            _ => Severity::Minor,
        };
        vec![Self::message(self.topics.ring(), json.to_string().into_bytes(), false, severity)]
    }

    /// `P/alerts` for the transition, and the retained `P/alarms/{key}` mirror (its current
    /// state while active, an empty retained payload once cleared).
    pub fn alert(&self, alert: &AlertV1) -> Vec<OutboxV1> {
        self.alert_event(alert, alert.to_json())
    }

    /// `P/alerts` and `P/alarms/{key}` for a transition the store could not write, marked
    /// `"stored": false`, published from memory.
    pub fn alert_unstored(&self, alert: &AlertV1) -> Vec<OutboxV1> {
        self.alert_event(alert, unstored(alert.to_json()))
    }

    fn alert_event(&self, alert: &AlertV1, json: serde_json::Value) -> Vec<OutboxV1> {
        let json = json.to_string().into_bytes();
        let alarm = if alert.is_active() { json.clone() } else { Vec::new() };
        vec![
            Self::message(self.topics.alerts(), json, false, alert.severity),
            Self::message(self.topics.alarm(&alert.key), alarm, true, alert.severity),
        ]
    }

    /// `P/cmd/res` with a command's lifecycle step.
    pub fn response(&self, payload: &serde_json::Value) -> OutboxV1 {
        Self::message(self.topics.responses(), payload.to_string().into_bytes(), false, Severity::Major)
    }
}

/// An event as announced from memory: the store could not write its record.
fn unstored(mut json: serde_json::Value) -> serde_json::Value {
    json["stored"] = false.into();
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AlertState, StageMs};

    #[test]
    fn cleared_alert_empties_its_retained_alarm() {
        let a = Announcer::new(Topics::new("doorbell", "d1"));
        let mut alert = AlertV1 {
            id: "a1".into(),
            key: "cpu_high".into(),
            rule: "cpu_high".into(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            message: "m".into(),
            value: Some(91.0),
            threshold: Some(80.0),
            raised_ms: 1,
            updated_ms: 2,
        };
        let raised = a.alert(&alert);
        assert_eq!(raised[0].topic, "doorbell/d1/alerts");
        assert!(!raised[0].retain);
        assert_eq!((raised[1].topic.as_str(), raised[1].retain), ("doorbell/d1/alarms/cpu_high", true));
        let v: serde_json::Value = serde_json::from_slice(&raised[1].payload).unwrap();
        assert_eq!(v["state"], "raised");
        alert.state = AlertState::Cleared;
        assert!(a.alert(&alert)[1].payload.is_empty());
    }

    #[test]
    fn ring_payload_follows_the_contract() {
        let a = Announcer::new(Topics::new("doorbell", "d1"));
        let ring = RingV1 {
            id: "r1".into(),
            seq: 4,
            trigger: "button".into(),
            result: RingResult::Blocked,
            name: Some("x".into()),
            confidence: Some(0.9),
            stage_ms: StageMs::default(),
            reason: None,
            ts_ms: 1_700_000_000_000,
        };
        let m = &a.ring(&ring)[0];
        assert_eq!((m.topic.as_str(), m.qos, m.severity), ("doorbell/d1/events/ring", 1, Severity::Critical));
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        for key in ["id", "seq", "result", "name", "confidence", "stage_ms", "ts"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["stage_ms"]["match"], 0.0);
    }
}
