//! Home Assistant MQTT discovery (`mqtt.home_assistant = true`): the doorbell appears as a
//! device with a ring event entity, a last-visitor sensor and resource sensors, all bound
//! to the retained `P/status` for availability. Published retained on every connection.

use serde_json::{json, Value};

use super::Topics;

/// `(topic, payload)` of every discovery config for this device.
pub fn configs(topics: &Topics, discovery_prefix: &str) -> Vec<(String, Vec<u8>)> {
    let device = topics.device();
    let common = |name: &str, object: &str| {
        json!({
            "name": name,
            "unique_id": format!("{device}_{object}"),
            "object_id": format!("{device}_{object}"),
            "availability_topic": topics.status(),
            "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [format!("doorbell_{device}")],
                "name": format!("Doorbell {device}"),
                "manufacturer": "doorbell-agent",
                "model": "Raspberry Pi video doorbell",
                "sw_version": crate::VERSION,
            },
        })
    };
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    };
    let sensor = |object: &'static str, name: &str, template: &str, unit: Option<&str>, class: Option<&str>| {
        let mut extra = json!({"state_topic": topics.telemetry(), "value_template": template, "state_class": "measurement"});
        if let Some(unit) = unit {
            extra["unit_of_measurement"] = json!(unit);
        }
        if let Some(class) = class {
            extra["device_class"] = json!(class);
        }
        ("sensor", object, with(common(name, object), extra))
    };
    let entities = vec![
        (
            "event",
            "ring",
            with(
                common("Ring", "ring"),
                json!({
                    "state_topic": topics.ring(),
                    "event_types": ["known", "unknown", "blocked", "no_face", "error"],
                    "value_template": "{{ {'event_type': value_json.result, 'name': value_json.name, 'confidence': value_json.confidence} | tojson }}",
                    "device_class": "doorbell",
                }),
            ),
        ),
        (
            "sensor",
            "last_visitor",
            with(
                common("Last visitor", "last_visitor"),
                json!({
                    "state_topic": topics.ring(),
                    "value_template": "{{ value_json.name if value_json.name else value_json.result }}",
                    "json_attributes_topic": topics.ring(),
                    "icon": "mdi:doorbell-video",
                }),
            ),
        ),
        sensor("cpu", "CPU", "{{ value_json.sample.cpu_percent | round(1) }}", Some("%"), None),
        sensor("memory", "Memory", "{{ value_json.sample.memory_percent | round(1) }}", Some("%"), None),
        sensor("disk", "Disk", "{{ value_json.sample.disk_used_percent | round(1) }}", Some("%"), None),
        sensor("temperature", "SoC temperature", "{{ value_json.sample.temperature_c | round(1) }}", Some("°C"), Some("temperature")),
        sensor("outbox", "Unsent messages", "{{ value_json.outbox.depth }}", None, None),
    ];
    entities
        .into_iter()
        .map(|(component, object, config)| {
            (format!("{discovery_prefix}/{component}/{device}/{object}/config"), config.to_string().into_bytes())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_is_bound_to_the_status_topic_and_one_device() {
        let configs = configs(&Topics::new("doorbell", "door-1"), "homeassistant");
        assert!(configs.iter().any(|(t, _)| t == "homeassistant/event/door-1/ring/config"));
        assert!(configs.iter().any(|(t, _)| t == "homeassistant/sensor/door-1/last_visitor/config"));
        for (topic, payload) in &configs {
            let v: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(v["availability_topic"], "doorbell/door-1/status", "{topic}");
            assert_eq!(v["device"]["identifiers"][0], "doorbell_door-1", "{topic}");
            assert!(v["unique_id"].as_str().unwrap().starts_with("door-1_"), "{topic}");
            assert!(v["state_topic"].as_str().unwrap().starts_with("doorbell/door-1/"), "{topic}");
        }
    }
}
