//! The operator's side of the fleet contract, in the same binary: `doorbell-agent fleet
//! devices | send | watch | rollout | keygen`. Talks to the broker like any MQTT client would.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Publish, QoS, SubAck, TlsConfiguration, Transport};
use serde_json::{Map, Value};
use tokio::time::Instant;

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
    fn url(&self) -> &str {
        self.broker.as_deref().unwrap_or_default()
    }
}

/// `fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List the devices that reported in (from their retained status and alarms).
    Devices {
        /// One JSON object per device.
        #[arg(long)]
        json: bool,
    },
    /// Send a command to a device or to `all`; with --wait, print its lifecycle and exit 0 only
    /// if every answer is `successful`.
    Send {
        /// Device id, or `all`.
        target: String,
        /// Command name (`ping`, `status`, `config/set`, `alert/ack`, `restart`, ...).
        command: String,
        /// Argument `key=value` (repeatable); values are JSON when they parse as JSON.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Wait for the final status (of every online device for `all`).
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Sign with this fleet key (see `fleet keygen`); needed when devices set `mqtt.command_key`.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Print the responses as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Follow rings, alerts, presence and command responses live (Ctrl-C to stop); broker
    /// outages are waited out.
    Watch {
        /// Only this device.
        device: Option<String>,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
        /// Use a persistent session under this client id: the broker queues what arrives
        /// while the watcher is away (QoS 1), so nothing is missed across reconnections.
        #[arg(long, value_name = "CLIENT_ID")]
        session: Option<String>,
    },
    /// Update devices in waves with a signed artifact; halts (exit 1) once the failures
    /// exceed the budget, and prints a per-device table.
    Rollout(super::rollout::Options),
    /// Create a fleet signing key; prints the public key for the devices' `mqtt.command_key`.
    Keygen {
        /// Where to write the private key (mode 0600; keep it off the devices).
        file: PathBuf,
    },
}

/// Runs a `fleet` subcommand; the exit code.
pub fn run(broker: Broker, action: Action) -> anyhow::Result<u8> {
    if let Action::Keygen { file } = &action {
        return keygen(file);
    }
    anyhow::ensure!(broker.broker.is_some(), "--broker URL (or DOORBELL_BROKER) is required");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match action {
            Action::Devices { json } => devices(&broker, json).await,
            Action::Send { target, command, args, wait, timeout, sign_key, json } => {
                send(&broker, &target, &command, &args, wait, timeout, sign_key.as_deref(), json).await
            }
            Action::Watch { device, json, session } => watch(&broker, device.as_deref(), json, session.as_deref()).await,
            Action::Rollout(options) => super::rollout::run(&broker, options).await,
            Action::Keygen { .. } => unreachable!("handled above"),
        }
    })
}

fn keygen(file: &Path) -> anyhow::Result<u8> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    writeln!(f, "{}", b64.encode(seed))?;
    println!("private key written to {} (keep it off the devices)", file.display());
    println!("public key, for the devices' config:\n\n[mqtt]\ncommand_key = \"{}\"", b64.encode(key.verifying_key().to_bytes()));
    Ok(0)
}

/// Reads a fleet key written by `fleet keygen`.
pub(super) fn signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = crate::durable::read_text(path, 4096).with_context(|| format!("reading {}", path.display()))?;
    let seed = base64::engine::general_purpose::STANDARD.decode(text.trim()).with_context(|| format!("{}: not base64", path.display()))?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| anyhow::anyhow!("{}: not a 32-byte ed25519 key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh client with a clean session.
pub(super) fn connect(broker: &Broker) -> anyhow::Result<(AsyncClient, EventLoop)> {
    connect_as(broker, None)
}

/// With `session`, the broker keeps the subscriptions and queues messages for this client id
/// while it is away; without, a fresh client id and a clean session.
fn connect_as(broker: &Broker, session: Option<&str>) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let url = broker.url();
    let (host, port) = crate::config::parse_broker_url(url).map_err(anyhow::Error::msg)?;
    let id = session.map_or_else(|| format!("doorbell-cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]), String::from);
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30)).set_clean_session(session.is_none()).set_max_packet_size(8 << 20, 8 << 20);
    if let Some(user) = &broker.username {
        o.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
    }
    if url.starts_with("mqtts://") {
        let config = crate::tls::client_config(broker.ca.as_deref(), broker.cert.as_deref(), broker.key.as_deref(), "--ca")?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(AsyncClient::new(o, 64))
}

/// The next event, or an error that names the broker.
async fn next(events: &mut EventLoop, broker: &Broker) -> anyhow::Result<Event> {
    events.poll().await.with_context(|| format!("broker {}", broker.url()))
}

/// Subscribes and waits for the broker to confirm; returns the messages (retained ones of
/// the first filters) that arrived meanwhile.
pub(super) async fn subscribe(
    client: &AsyncClient,
    events: &mut EventLoop,
    broker: &Broker,
    filters: &[String],
) -> anyhow::Result<Vec<Publish>> {
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
fn granted(ack: &SubAck, filters: &[String]) -> anyhow::Result<()> {
    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
        bail!("the broker refused the subscription to {filters:?} (ACL?)");
    }
    Ok(())
}

/// The device id of `{prefix}/{device}/...`.
fn device_of<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    topic.strip_prefix(prefix)?.strip_prefix('/')?.split('/').next()
}

/// Retained presence of every device: `device -> (status, active alarm keys)`.
pub(super) async fn roster(broker: &Broker) -> anyhow::Result<BTreeMap<String, (Value, Vec<String>)>> {
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

async fn devices(broker: &Broker, json: bool) -> anyhow::Result<u8> {
    let devices = roster(broker).await?;
    if json {
        for (device, (status, alarms)) in &devices {
            println!("{}", serde_json::json!({"device": device, "status": status, "alarms": alarms}));
        }
        return Ok(0);
    }
    println!("{:<24} {:<7} {:<10} {:<5} {:<9} {:<25} ALARMS", "DEVICE", "ONLINE", "VERSION", "SLOT", "STATE", "SINCE");
    let text = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    let online = devices.values().filter(|(s, _)| s["online"] == true).count();
    for (device, (status, alarms)) in &devices {
        let up = if status["online"] == true { "yes" } else { "no" };
        let since = if status["online"] == true { text(status, "started_at") } else { text(status, "ts") };
        println!(
            "{device:<24} {up:<7} {:<10} {:<5} {:<9} {since:<25} {}",
            text(status, "version"),
            text(status, "slot"),
            text(status, "state"),
            if alarms.is_empty() { "-".into() } else { alarms.join(",") }
        );
    }
    println!("\n{} devices, {online} online", devices.len());
    Ok(0)
}

/// `--arg key=value` → JSON arguments (values that parse as JSON are JSON).
fn parse_args(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for arg in args {
        let (k, v) = arg.split_once('=').with_context(|| format!("--arg {arg}: expected KEY=VALUE"))?;
        if ["id", "sig", "expires", "signed"].contains(&k) {
            bail!("--arg {k}: set by `fleet send` itself");
        }
        map.insert(k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::from(v)));
    }
    Ok(map)
}

#[allow(clippy::too_many_arguments)]
async fn send(
    broker: &Broker,
    target: &str,
    command: &str,
    args: &[String],
    wait: bool,
    timeout: Duration,
    sign_key: Option<&Path>,
    json: bool,
) -> anyhow::Result<u8> {
    let p = &broker.prefix;
    let args = parse_args(args)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = sign_key.map(signing_key).transpose()?;
    let payload = command_payload(&id, target, command, &args, key.as_ref());
    // For `all`, the devices expected to answer are those online now.
    let expected: Vec<String> = if target == "all" && wait {
        roster(broker).await?.into_iter().filter(|(_, (s, _))| s["online"] == true).map(|(d, _)| d).collect()
    } else {
        vec![target.to_string()]
    };
    let (client, mut events) = connect(broker)?;
    let responses = if target == "all" { format!("{p}/+/cmd/res") } else { format!("{p}/{target}/cmd/res") };
    if wait {
        // Responses are never retained: nothing can arrive before the command is sent.
        subscribe(&client, &mut events, broker, &[responses]).await?;
    }
    client.publish(format!("{p}/{target}/cmd/{command}"), QoS::AtLeastOnce, false, payload.to_string()).await?;
    let deadline = Instant::now() + timeout;
    // Wait for the broker's PUBACK at least, so the command is really out.
    loop {
        match tokio::time::timeout_at(deadline, next(&mut events, broker)).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the broker did not acknowledge the command within {timeout:?}"),
        }
    }
    if !wait {
        println!("sent {command} to {target}: id {id}");
        return Ok(0);
    }
    let mut finals: BTreeMap<String, String> = BTreeMap::new();
    while finals.len() < expected.len() {
        let event = match tokio::time::timeout_at(deadline, next(&mut events, broker)).await {
            Ok(event) => event?,
            Err(_) => break,
        };
        let Event::Incoming(Incoming::Publish(m)) = event else { continue };
        let Ok(response) = serde_json::from_slice::<Value>(&m.payload) else { continue };
        if response["id"] != id.as_str() {
            continue;
        }
        let device = device_of(&m.topic, p).unwrap_or("?").to_string();
        let status = response["status"].as_str().unwrap_or("?").to_string();
        if json {
            println!("{}", serde_json::json!({"device": device, "response": response}));
        } else {
            let detail = match (&response.get("reason"), &response.get("result")) {
                (Some(reason), _) => format!(": {}", reason.as_str().unwrap_or_default()),
                (None, Some(result)) if !result.is_null() => format!(": {result}"),
                _ => String::new(),
            };
            println!("{device:<24} {status}{detail}");
        }
        if status == "successful" || status == "failed" {
            finals.insert(device, status);
        }
    }
    let _ = client.disconnect().await;
    let ok = finals.values().filter(|s| *s == "successful").count();
    let missing: Vec<&String> = expected.iter().filter(|d| !finals.contains_key(*d)).collect();
    if !json {
        println!("{ok} successful, {} failed, {} without answer", finals.len() - ok, missing.len());
        if !missing.is_empty() && missing.len() <= 20 {
            println!("no final answer from: {}", missing.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", "));
        }
    }
    Ok(u8::from(ok != expected.len() || finals.len() != expected.len()))
}

/// How long a command signature stays valid: enough for a slow broker, short for replays.
const SIGNATURE_VALIDITY_MS: u64 = 5 * 60 * 1000;

/// The request for `target` (a device id or `all`): `{id, ...args}`, or signed with the
/// key, `{signed, sig}`.
pub(super) fn command_payload(id: &str, target: &str, command: &str, args: &Map<String, Value>, key: Option<&SigningKey>) -> Value {
    if let Some(key) = key {
        let expires = crate::time::rfc3339(crate::time::now_ms() + SIGNATURE_VALIDITY_MS);
        let text = crate::cmd::command_text(id, command, target, &expires, args);
        let sig = crate::cmd::sign(key, &text);
        return serde_json::json!({"signed": text, "sig": sig});
    }
    let mut payload = args.clone();
    payload.insert("id".into(), Value::from(id));
    Value::Object(payload)
}

async fn watch(broker: &Broker, device: Option<&str>, json: bool, session: Option<&str>) -> anyhow::Result<u8> {
    let p = &broker.prefix;
    let d = device.unwrap_or("+");
    let (client, mut events) = connect_as(broker, session)?;
    let filters = ["events/ring", "alerts", "status", "cmd/res"].map(|t| format!("{p}/{d}/{t}"));
    // Watching is for as long as the operator wants: a broker that is down at the start or
    // goes away later is waited out, and every ConnAck subscribes again (a persistent session
    // keeps the subscriptions anyway).
    let (mut retry, mut outage) = (Duration::from_millis(500), false);
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let m = match event {
            Ok(Event::Incoming(Incoming::Publish(m))) => m,
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                if outage {
                    eprintln!("watch: broker {} reachable again", broker.url());
                }
                (retry, outage) = (Duration::from_millis(500), false);
                for filter in &filters {
                    client.subscribe(filter.as_str(), QoS::AtLeastOnce).await?;
                }
                continue;
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                granted(&ack, &filters)?;
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("watch: broker {} unreachable ({e}); retrying in {retry:?}", broker.url());
                outage = true;
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(0),
                }
                retry = (retry * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let device = device_of(&m.topic, p).unwrap_or("?");
        let body: Value =
            serde_json::from_slice(&m.payload).unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&m.payload).into_owned()));
        if json {
            println!("{}", serde_json::json!({"topic": m.topic, "retained": m.retain, "payload": body}));
            continue;
        }
        let s = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let line = match m.topic.rsplit_once(&format!("{device}/")).map(|(_, kind)| kind).unwrap_or("") {
            "events/ring" => format!(
                "ring #{} {}{}",
                body["seq"],
                s("result"),
                body.get("name").and_then(|n| n.as_str()).map(|n| format!(" ({n})")).unwrap_or_default()
            ),
            "alerts" => format!("alert {} {} [{}] {}", s("state"), s("key"), s("severity"), s("message")),
            "status" => format!("{} {} {}", if body["online"] == true { "online" } else { "OFFLINE" }, s("version"), s("state")),
            "cmd/res" => format!(
                "command {} {} {}{}",
                s("name"),
                s("id"),
                s("status"),
                body.get("reason").and_then(|r| r.as_str()).map(|r| format!(": {r}")).unwrap_or_default()
            ),
            other => other.to_string(),
        };
        let ts = body.get("ts").and_then(|t| t.as_str()).unwrap_or("");
        println!("{ts:<25} {device:<20} {line}{}", if m.retain { " (retained)" } else { "" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_become_json_where_they_parse() {
        let a = parse_args(&["gpio.burst=5".into(), "sampler.interval=10s".into(), "on=true".into(), "x={\"a\":1}".into()]).unwrap();
        assert_eq!(Value::Object(a), serde_json::json!({"gpio.burst": 5, "sampler.interval": "10s", "on": true, "x": {"a": 1}}));
        assert!(parse_args(&["novalue".into()]).is_err());
        assert!(parse_args(&["id=1".into()]).is_err());
    }

    #[test]
    fn device_ids_come_from_topics() {
        assert_eq!(device_of("doorbell/door-1/cmd/res", "doorbell"), Some("door-1"));
        assert_eq!(device_of("other/door-1/status", "doorbell"), None);
    }
}
