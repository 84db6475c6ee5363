//! The operator's everyday commands: `devices` (the fleet's retained presence), `send` (a
//! command, optionally signed, and its lifecycle), `watch` (everything live) and `keygen`
//! (the fleet's command signing key).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine;
use ed25519_dalek::SigningKey;
use rumqttc::{Event, Incoming, QoS};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::broker::{command_payload, connect, connect_as, device_of, granted, next, roster, signing_key, subscribe, Broker};

/// `keygen FILE`: a new fleet signing key, private half to FILE (0600), public half printed.
pub fn keygen(file: &Path) -> anyhow::Result<u8> {
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

/// `devices`: one line (or JSON object) per device that reported in.
pub async fn devices(broker: &Broker, json: bool) -> anyhow::Result<u8> {
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
            bail!("--arg {k}: set by `send` itself");
        }
        map.insert(k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::from(v)));
    }
    Ok(map)
}

/// `send`: one command to a device or `all`; with `wait`, its lifecycle until the end.
#[allow(clippy::too_many_arguments)]
pub async fn send(
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

/// `watch`: rings, alerts, presence and responses as they arrive, until Ctrl-C.
pub async fn watch(broker: &Broker, device: Option<&str>, json: bool, session: Option<&str>) -> anyhow::Result<u8> {
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
}
