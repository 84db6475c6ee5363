//! The broker client every operator command shares: how to reach the broker (`Broker`,
//! the command line's connection options), connecting, subscribing with the broker's
//! confirmation, the devices' retained presence, and command requests (signed with a fleet
//! key when one is given).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Publish, QoS, SubAck, TlsConfiguration, Transport};
use serde_json::{Map, Value};

/// How to reach the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct Broker {
    /// Broker URL, `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[arg(long, env = "DOORBELL_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// CA certificates (PEM) of the broker (mqtts; default: the system's).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Broker user name.
    #[arg(long, env = "DOORBELL_BROKER_USER")]
    pub username: Option<String>,
    /// Broker password.
    #[arg(long, env = "DOORBELL_BROKER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The fleet's topic prefix.
    #[arg(long, default_value = "doorbell")]
    pub prefix: String,
}

impl Broker {
    pub fn url(&self) -> &str {
        self.broker.as_deref().unwrap_or_default()
    }
}

/// Reads a fleet key written by `doorbell-fleet keygen`.
pub fn signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = doorbell_base::durable::read_text(path, 4096).with_context(|| format!("reading {}", path.display()))?;
    let seed = base64::engine::general_purpose::STANDARD.decode(text.trim()).with_context(|| format!("{}: not base64", path.display()))?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| anyhow::anyhow!("{}: not a 32-byte ed25519 key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh client with a clean session.
pub fn connect(broker: &Broker) -> anyhow::Result<(AsyncClient, EventLoop)> {
    connect_as(broker, None)
}

/// With `session`, the broker keeps the subscriptions and queues messages for this client id
/// while it is away; without, a fresh client id and a clean session.
pub fn connect_as(broker: &Broker, session: Option<&str>) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let url = broker.url();
    let (host, port) = doorbell_agent::config::parse_broker_url(url).map_err(anyhow::Error::msg)?;
    let id = session.map_or_else(|| format!("doorbell-cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]), String::from);
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30)).set_clean_session(session.is_none()).set_max_packet_size(8 << 20, 8 << 20);
    if let Some(user) = &broker.username {
        o.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
    }
    if url.starts_with("mqtts://") {
        let config = doorbell_agent::tls::client_config(broker.ca.as_deref(), broker.cert.as_deref(), broker.key.as_deref(), "--ca")?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(AsyncClient::new(o, 64))
}

/// The next event, or an error that names the broker.
pub async fn next(events: &mut EventLoop, broker: &Broker) -> anyhow::Result<Event> {
    events.poll().await.with_context(|| format!("broker {}", broker.url()))
}

/// Subscribes and waits for the broker to confirm; returns the messages (retained ones of
/// the first filters) that arrived meanwhile.
pub async fn subscribe(client: &AsyncClient, events: &mut EventLoop, broker: &Broker, filters: &[String]) -> anyhow::Result<Vec<Publish>> {
    for filter in filters {
        client.subscribe(filter.as_str(), QoS::AtLeastOnce).await?;
    }
    let (mut acked, mut early) = (0, Vec::new());
    while acked < filters.len() {
        match next(events, broker).await? {
            Event::Incoming(Incoming::SubAck(ack)) => {
                granted(&ack, filters)?;
                acked += 1;
            }
            Event::Incoming(Incoming::Publish(m)) => early.push(m),
            _ => {}
        }
    }
    Ok(early)
}

/// An error naming `filters` when the broker refused any of them (its ACL, usually).
pub fn granted(ack: &SubAck, filters: &[String]) -> anyhow::Result<()> {
    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
        bail!("the broker refused the subscription to {filters:?} (ACL?)");
    }
    Ok(())
}

/// The device id of `{prefix}/{device}/...`.
pub fn device_of<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    topic.strip_prefix(prefix)?.strip_prefix('/')?.split('/').next()
}

/// Retained presence of every device: `device -> (status, active alarm keys)`.
pub async fn roster(broker: &Broker) -> anyhow::Result<BTreeMap<String, (Value, Vec<String>)>> {
    let (client, mut events) = connect(broker)?;
    let p = &broker.prefix;
    let mut messages = subscribe(&client, &mut events, broker, &[format!("{p}/+/status"), format!("{p}/+/alarms/+")]).await?;
    // Retained messages arrive right after the subscription; a quiet gap means all are in.
    let quiet = Duration::from_millis(400);
    while let Ok(event) = tokio::time::timeout(quiet, next(&mut events, broker)).await {
        if let Event::Incoming(Incoming::Publish(m)) = event? {
            messages.push(m);
        }
    }
    let mut devices: BTreeMap<String, (Value, Vec<String>)> = BTreeMap::new();
    for m in messages {
        let Some(device) = device_of(&m.topic, p) else { continue };
        let entry = devices.entry(device.to_string()).or_insert((Value::Null, Vec::new()));
        if m.topic.ends_with("/status") {
            entry.0 = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        } else if !m.payload.is_empty() {
            entry.1.push(m.topic.rsplit('/').next().unwrap_or_default().to_string());
        }
    }
    let _ = client.disconnect().await;
    Ok(devices)
}

/// How long a command signature stays valid: enough for a slow broker, short for replays.
const SIGNATURE_VALIDITY_MS: u64 = 5 * 60 * 1000;

/// The request for `target` (a device id or `all`): `{id, ...args}`, or signed with the
/// key, `{signed, sig}`.
pub fn command_payload(id: &str, target: &str, command: &str, args: &Map<String, Value>, key: Option<&SigningKey>) -> Value {
    if let Some(key) = key {
        let expires = doorbell_base::time::rfc3339(doorbell_base::time::now_ms() + SIGNATURE_VALIDITY_MS);
        let text = doorbell_agent::cmd::command_text(id, command, target, &expires, args);
        let sig = doorbell_agent::cmd::sign(key, &text);
        return serde_json::json!({"signed": text, "sig": sig});
    }
    let mut payload = args.clone();
    payload.insert("id".into(), Value::from(id));
    Value::Object(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_come_from_topics() {
        assert_eq!(device_of("doorbell/door-1/cmd/res", "doorbell"), Some("door-1"));
        assert_eq!(device_of("other/door-1/status", "doorbell"), None);
    }
}
