//! The fleet link of the real binary against real brokers (embedded rumqttd and mosquitto):
//! presence and last will, the durable outbox through outages and SIGKILL, commands with
//! their lifecycle, idempotency, validation and signatures, and the operator CLI.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::mqtt::{mqtt_section, Mosquitto, Msg, Proxy, Rumqttd, Watcher};
use common::{config, fleet, Agent};

const P: &str = "doorbell/test-door";

fn statuses(w: &Watcher) -> Vec<serde_json::Value> {
    w.on(&format!("{P}/status")).iter().map(Msg::json).collect()
}

fn responses(w: &Watcher, id: &str) -> Vec<serde_json::Value> {
    w.on(&format!("{P}/cmd/res")).iter().map(Msg::json).filter(|r| r["id"] == id).collect()
}

fn final_response(w: &Watcher, id: &str) -> serde_json::Value {
    let done = |msgs: &[Msg]| {
        msgs.iter().any(|m| {
            m.topic.ends_with("/cmd/res")
                && m.json()["id"] == id
                && ["successful", "failed"].contains(&m.json()["status"].as_str().unwrap_or(""))
        })
    };
    assert!(w.wait(Duration::from_secs(10), done), "no final response to {id}: {:?}", responses(w, id));
    responses(w, id).into_iter().rfind(|r| r["status"] == "successful" || r["status"] == "failed").unwrap()
}

fn presence_and_last_will(port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(port, &[&format!("{P}/status")]);
    let mut agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(port, "")));
    assert!(watcher.wait(Duration::from_secs(10), |_| statuses(&watcher).iter().any(|s| s["online"] == true)), "birth");
    let birth = statuses(&watcher).into_iter().find(|s| s["online"] == true).unwrap();
    for key in ["version", "slot", "state", "boot_id", "started_at", "ts"] {
        assert!(birth.get(key).is_some(), "birth lacks {key}: {birth}");
    }
    // A crash: the broker publishes the last will.
    agent.signal(libc::SIGKILL);
    assert!(watcher.wait(Duration::from_secs(10), |_| statuses(&watcher).last().is_some_and(|s| s["online"] == false)), "last will");
    assert_eq!(statuses(&watcher).last().unwrap()["state"], "connection lost");
    // Retained: a late subscriber sees the device offline.
    let late = Watcher::start(port, &[&format!("{P}/status")]);
    assert!(late.wait(Duration::from_secs(5), |m| m.iter().any(|m| m.retain && m.json()["online"] == false)));

    // A clean stop says goodbye itself.
    let mut agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(port, "")));
    assert!(watcher.wait(Duration::from_secs(10), |_| statuses(&watcher).last().is_some_and(|s| s["online"] == true)));
    let (code, took) = agent.signal(libc::SIGTERM);
    assert_eq!(code.code(), Some(0));
    assert!(took < Duration::from_secs(5));
    assert!(watcher.wait(Duration::from_secs(5), |_| statuses(&watcher).last().is_some_and(|s| s["state"] == "stopped")));
}

#[test]
fn presence_and_last_will_with_rumqttd() {
    presence_and_last_will(Rumqttd::start().port);
}

#[test]
fn presence_and_last_will_with_mosquitto() {
    presence_and_last_will(Mosquitto::start("").port);
}

/// Checks that every ring 1..=n arrived, in order, with duplicates only re-deliveries of the
/// same ring (same id).
fn assert_rings_complete_and_ordered(msgs: &[Msg], n: u64) {
    let mut ids: BTreeMap<u64, String> = BTreeMap::new();
    let mut max_seq = 0;
    let mut duplicates = 0;
    for m in msgs.iter().filter(|m| m.topic.ends_with("/events/ring")) {
        let r = m.json();
        let (seq, id) = (r["seq"].as_u64().unwrap(), r["id"].as_str().unwrap().to_string());
        match ids.get(&seq) {
            Some(known) => {
                assert_eq!(known, &id, "ring {seq} arrived twice with different ids");
                duplicates += 1;
            }
            None => {
                assert_eq!(seq, max_seq + 1, "ring {seq} arrived after ring {max_seq}: out of order or a gap");
                max_seq = seq;
                ids.insert(seq, id);
            }
        }
    }
    assert_eq!(max_seq, n, "rings missing: the last one seen is {max_seq}");
    println!("{n} rings complete and in order ({duplicates} re-deliveries)");
}

/// 50 alert rules that raise as the ring count climbs, one every 100 rings.
fn alert_rules() -> String {
    let mut rules = String::from("[alerts]\nbuiltin = false\n");
    for k in 1..=50 {
        rules.push_str(&format!(
            "[[alerts.rule]]\nname = \"storm_{k}\"\nmetric = \"rings_1m\"\nop = \">=\"\nthreshold = {}.0\nseverity = \"minor\"\ncooldown = \"0s\"\n",
            // storm_50 needs 5,000 rings within a minute: reached even with both cores busy.
            k * 100
        ));
    }
    rules
}

const RINGS: u64 = 10_000;

/// The link is cut while 10,000 rings and 50 alerts are produced; once it is back, every one
/// arrives, in order, only duplicated with the same id.
fn outage_loses_nothing(broker_port: u16, restart: Option<&mut Mosquitto>) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(broker_port);
    let filters = [format!("{P}/events/ring"), format!("{P}/alerts")];
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let watcher = Watcher::start(broker_port, &filters);
    let extra = format!("{}\n[store]\nmax_outbox_messages = 30000\n{}", alert_rules(), common::NO_CAMERA);
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &format!("{}{extra}", mqtt_section(proxy.port, ""))));
    assert!(agent.wait_link_up(Duration::from_secs(10)));

    // Some rings go out live, then the cable is pulled mid-stream.
    agent.ring_until(500);
    proxy.cut();
    if let Some(m) = restart {
        m.stop();
        agent.ring_until(RINGS);
        let before = watcher.subscriptions();
        m.restart();
        // The observer is back on the broker before the agent is (it is not under test).
        watcher.wait_subscribed(before + filters.len());
    } else {
        agent.ring_until(RINGS);
    }
    let status = agent.json("/status");
    assert_eq!(status["mqtt"]["link"], "down", "{status}");
    assert!(status["outbox_depth"].as_u64().unwrap() > 1000, "queued while down: {status}");
    proxy.restore();

    let start = std::time::Instant::now();
    let all_in = |msgs: &[Msg]| {
        let rings = msgs.iter().filter(|m| m.topic.ends_with("/events/ring")).filter_map(|m| m.json()["seq"].as_u64()).max();
        rings == Some(RINGS) && msgs.iter().filter(|m| m.topic.ends_with("/alerts") && m.json()["state"] == "raised").count() >= 50
    };
    if !watcher.wait(Duration::from_secs(120), all_in) {
        let msgs = watcher.messages();
        let seqs: Vec<u64> = msgs.iter().filter_map(|m| m.json()["seq"].as_u64()).collect();
        let alerts = msgs.iter().filter(|m| m.topic.ends_with("/alerts")).count();
        panic!(
            "not everything arrived: {} ring messages (max seq {:?}, first after 500: {:?}), {alerts} alerts; outbox depth {}",
            seqs.len(),
            seqs.iter().max(),
            seqs.iter().find(|s| **s > 500),
            agent.json("/status")["outbox_depth"]
        );
    }
    println!("drained after reconnect in {:?}", start.elapsed());
    let msgs = watcher.messages();
    assert_rings_complete_and_ordered(&msgs, RINGS);
    // The raises: on a loaded machine the ring rate falls before the last rings are pressed,
    // and the first alerts clear while the backlog still drains.
    let alerts: Vec<String> = msgs
        .iter()
        .filter(|m| m.topic.ends_with("/alerts") && m.json()["state"] == "raised")
        .map(|m| m.json()["key"].as_str().unwrap().to_string())
        .collect();
    let mut unique = alerts.clone();
    unique.dedup();
    let want: Vec<String> = (1..=50).map(|k| format!("storm_{k}")).collect();
    assert_eq!(unique, want, "alerts in the order they were raised");
    assert!(agent.wait_log(|_| agent.json("/status")["outbox_depth"] == 0, Duration::from_secs(10)).is_some(), "outbox drained");
}

#[test]
fn cable_pulled_during_10000_rings_and_alerts_with_rumqttd() {
    outage_loses_nothing(Rumqttd::start().port, None);
}

#[test]
fn broker_restarted_during_10000_rings_and_alerts_with_mosquitto() {
    let mut mosquitto = Mosquitto::start("");
    let port = mosquitto.port;
    outage_loses_nothing(port, Some(&mut mosquitto));
}

#[test]
fn sigkill_while_the_broker_is_unreachable_loses_nothing() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(broker.port);
    let watcher = Watcher::start(broker.port, &[&format!("{P}/events/ring")]);
    let cfg = config(&dir.path().join("data"), &mqtt_section(proxy.port, ""));
    let mut agent = Agent::start(dir.path(), &cfg);
    proxy.cut();
    agent.ring_until(300);
    agent.signal(libc::SIGKILL);
    let agent = Agent::start(dir.path(), &cfg);
    assert_eq!(agent.json("/status")["outbox_depth"], 300, "the outbox survived the kill");
    proxy.restore();
    assert!(watcher.wait(Duration::from_secs(30), |m| m.iter().filter_map(|m| m.json()["seq"].as_u64()).max() == Some(300)));
    assert_rings_complete_and_ordered(&watcher.messages(), 300);
}

#[test]
fn every_malformed_command_is_answered_failed_and_the_agent_stays_up() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res")]);
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, "")));
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    let big = format!(r#"{{"id":"big","pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let cases: &[(&str, String, &str)] = &[
        ("ping", "this is not json".into(), "malformed JSON"),
        ("ping", "[1,2,3]".into(), "malformed request"),
        ("ping", r#"{"nope": 1}"#.into(), "missing `id`"),
        ("ping", r#"{"id": 42}"#.into(), "`id` must be a string"),
        ("frobnicate", r#"{"id": "c-unknown"}"#.into(), "unknown command"),
        ("logs", r#"{"id": "c-type", "lines": "all"}"#.into(), "`lines` must be a whole number"),
        ("alert/ack", r#"{"id": "c-missing"}"#.into(), "missing `alert`"),
        ("config/set", r#"{"id": "c-live", "gpio.pin": 4}"#.into(), "cannot be changed at run time"),
        ("config/set", r#"{"id": "c-range", "gpio.burst": 0}"#.into(), "gpio.burst"),
        ("update", r#"{"id": "c-update"}"#.into(), "give exactly one of `url`"),
        ("face/enroll", r#"{"id": "c-face", "name": "x"}"#.into(), "give exactly one of `jpeg`"),
        ("ping", big, "too large"),
    ];
    for (name, payload, _) in cases {
        watcher.publish(&format!("{P}/cmd/{name}"), payload.as_bytes().to_vec());
    }
    let answered = |msgs: &[Msg], name: &str, reason: &str| {
        msgs.iter()
            .map(Msg::json)
            .any(|a| a["status"] == "failed" && a["name"] == name && a["reason"].as_str().unwrap_or("").contains(reason))
    };
    watcher.wait(Duration::from_secs(15), |m| cases.iter().all(|(name, _, reason)| answered(m, name, reason)));
    let msgs = watcher.messages();
    for (name, _, reason) in cases {
        assert!(
            answered(&msgs, name, reason),
            "{name}: no `failed` with reason containing {reason:?} in {:#?}",
            msgs.iter().map(Msg::json).collect::<Vec<_>>()
        );
    }
    assert_eq!(agent.get("/health").0, 200, "the agent is still up");
    watcher.publish(&format!("{P}/cmd/ping"), r#"{"id":"after"}"#);
    assert_eq!(final_response(&watcher, "after")["status"], "successful");
}

#[test]
fn a_repeated_command_id_is_answered_but_not_executed_twice() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("data"), &mqtt_section(broker.port, ""));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res")]);
    let mut agent = Agent::start(dir.path(), &cfg);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    for _ in 0..3 {
        watcher.publish(&format!("{P}/cmd/press"), r#"{"id":"press-once"}"#);
    }
    assert_eq!(final_response(&watcher, "press-once")["status"], "successful");
    assert!(watcher.wait(Duration::from_secs(5), |_| responses(&watcher, "press-once").len() >= 5));
    // Ring 1 is stored and every delivery answered; a second execution has no event to wait
    // for, so a fixed moment gives it the chance to show.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.json("/status")["rings"]["stored"], 1, "one ring for three deliveries of the same id");
    // Also after a restart: the ledger is durable.
    agent.signal(libc::SIGTERM);
    let agent = Agent::start(dir.path(), &cfg);
    // Commands reach the agent once it has subscribed: a clean session does not keep them.
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    let before = responses(&watcher, "press-once").len();
    watcher.publish(&format!("{P}/cmd/press"), r#"{"id":"press-once"}"#);
    assert!(watcher.wait(Duration::from_secs(10), |_| responses(&watcher, "press-once").len() > before));
    assert_eq!(responses(&watcher, "press-once").last().unwrap()["status"], "successful");
    assert!(agent.wait_log(|l| l.contains("id=press-once repeated"), Duration::from_secs(5)).is_some(), "{}", agent.log());
    // As above: a fixed moment for a ring that must not come.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.json("/status")["rings"]["stored"], 1);
}

#[test]
fn restart_command_reports_successful_after_coming_back() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("data"), &mqtt_section(broker.port, ""));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res")]);
    let mut agent = Agent::start(dir.path(), &cfg);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    watcher.publish(&format!("{P}/cmd/restart"), r#"{"id":"r1"}"#);
    // The agent exits with 75 (systemd's RestartForceExitStatus); we play systemd.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < end, "the agent did not exit after `restart`");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(75));
    assert!(responses(&watcher, "r1").iter().all(|r| r["status"] != "successful"), "not successful before the restart");
    let _agent = Agent::start(dir.path(), &cfg);
    let done = final_response(&watcher, "r1");
    assert_eq!(done["status"], "successful", "{done}");
    assert!(done["result"]["started_at"].is_string());
}

#[test]
fn operator_cli_lists_devices_sends_commands_and_changes_config_live() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, "telemetry_interval = \"1s\"")));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/telemetry")]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));

    let (code, out, err) = fleet(broker.port, &["devices"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test-door") && out.contains("yes") && out.contains("1 online"), "{out}");

    let (code, out, err) = fleet(broker.port, &["send", "test-door", "ping", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accepted") && out.contains("executing") && out.contains("successful"), "{out}");

    let (code, out, _) = fleet(broker.port, &["send", "all", "config/get", "--arg", "key=sampler.interval", "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"200ms\""), "{out}");

    let (code, out, _) =
        fleet(broker.port, &["send", "test-door", "config/set", "--arg", "sampler.interval=1s", "--arg", "gpio.burst=5", "--wait"]);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = fleet(broker.port, &["send", "test-door", "config/get", "--arg", "key=gpio", "--wait", "--json"]);
    assert!(out.contains("\"burst\":5"), "{out}");
    // Persisted: check-config shows the fleet's change on top of the file.
    let (code, out, _) = common::run(&["-c", agent.config.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("burst = 5") && out.contains("fleet's changes"), "{out}");

    let (code, out, _) = fleet(broker.port, &["send", "test-door", "config/set", "--arg", "gpio.pin=3", "--wait"]);
    assert_eq!(code, 1, "a failed command fails the CLI: {out}");
    assert!(out.contains("failed: `gpio.pin` cannot be changed at run time"), "{out}");

    // Telemetry comes every second, QoS 0, with the outbox depth.
    assert!(watcher.wait(Duration::from_secs(5), |m| m.len() >= 2));
    let t = watcher.messages()[0].json();
    assert!(t["outbox"]["depth"].is_u64() && t["pipeline"]["rings_since_start"].is_u64(), "{t}");
}

fn alerts_mirrored(port: u16) {
    let dir = tempfile::tempdir().unwrap();
    // The cooldown keeps an operator's clear from being undone at once by the condition
    // that still holds (with "0s" the rule would raise a new alarm right away).
    let rule = "[alerts]\nbuiltin = false\n[[alerts.rule]]\nname = \"ring_storm\"\nmetric = \"rings_1m\"\nop = \">=\"\nthreshold = 2.0\nseverity = \"critical\"\ncooldown = \"10m\"\n";
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &format!("{}{rule}", mqtt_section(port, ""))));
    let watcher = Watcher::start(port, &[&format!("{P}/alerts"), &format!("{P}/alarms/+"), &format!("{P}/cmd/res")]);
    agent.post("/simulate/press");
    agent.post("/simulate/press");
    let alarm = format!("{P}/alarms/ring_storm");
    assert!(watcher.wait(Duration::from_secs(10), |_| !watcher.on(&alarm).is_empty()), "retained alarm");
    assert_eq!(watcher.on(&alarm)[0].json()["state"], "raised");
    assert!(watcher.on(&format!("{P}/alerts"))[0].json()["severity"] == "critical");
    watcher.publish(&format!("{P}/cmd/alert/ack"), r#"{"id":"ack1","alert":"ring_storm"}"#);
    assert_eq!(final_response(&watcher, "ack1")["result"]["state"], "acknowledged");
    watcher.publish(&format!("{P}/cmd/alert/clear"), r#"{"id":"clr1","alert":"ring_storm"}"#);
    assert_eq!(final_response(&watcher, "clr1")["result"]["state"], "cleared");
    assert!(
        watcher.wait(Duration::from_secs(5), |_| watcher.on(&alarm).last().is_some_and(|m| m.payload.is_empty())),
        "alarm not emptied: {:?}",
        watcher.messages().iter().map(|m| (m.topic.clone(), String::from_utf8_lossy(&m.payload).into_owned())).collect::<Vec<_>>()
    );
    // A late subscriber sees no retained alarm any more.
    let late = Watcher::start(port, &[&format!("{P}/alarms/+")]);
    // Subscribed: a retained alarm would follow at once. Its absence has no event to wait for.
    std::thread::sleep(Duration::from_millis(500));
    assert!(late.messages().iter().all(|m| m.payload.is_empty()), "{:?}", late.messages());
}

#[test]
fn alerts_are_mirrored_retained_and_acknowledged_with_rumqttd() {
    alerts_mirrored(Rumqttd::start().port);
}

#[test]
fn alerts_are_mirrored_retained_and_acknowledged_with_mosquitto() {
    alerts_mirrored(Mosquitto::start("").port);
}

#[test]
fn signed_commands_are_required_when_a_fleet_key_is_set() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = common::fleet_keygen(dir.path());
    let extra = format!("command_key = \"{public}\"");
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, &extra)));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res")]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));

    // Unsigned device-changing command: refused.
    watcher.publish(&format!("{P}/cmd/config/set"), r#"{"id":"unsigned","gpio.burst":4}"#);
    let r = final_response(&watcher, "unsigned");
    assert_eq!(r["status"], "failed");
    assert!(r["reason"].as_str().unwrap().starts_with("not authorised"), "{r}");
    // Forged: a signature that is not the fleet key's.
    let text = r#"{"id":"forged","name":"config/set","target":"test-door","expires":"2099-01-01T00:00:00Z","args":{"gpio.burst":4}}"#;
    let forged = serde_json::json!({"signed": text, "sig": "A".repeat(86) + "=="});
    watcher.publish(&format!("{P}/cmd/config/set"), forged.to_string());
    assert_eq!(final_response(&watcher, "forged")["reason"], "not authorised: bad signature");
    // The signature fields beside the arguments (not how a signed command looks): named.
    watcher.publish(&format!("{P}/cmd/config/set"), r#"{"id":"flat","gpio.burst":4,"expires":"2099-01-01T00:00:00Z","sig":"AAAA"}"#);
    assert!(final_response(&watcher, "flat")["reason"].as_str().unwrap().contains("a signed command is {\"signed\": TEXT"));
    // Read-only commands need no signature.
    watcher.publish(&format!("{P}/cmd/ping"), r#"{"id":"p"}"#);
    assert_eq!(final_response(&watcher, "p")["status"], "successful");
    // The gallery is biometric data: reading it needs the key too.
    watcher.publish(&format!("{P}/cmd/face/export"), r#"{"id":"export"}"#);
    assert!(final_response(&watcher, "export")["reason"].as_str().unwrap().starts_with("not authorised"));
    // Signed by the CLI with the fleet key: executed.
    let key = key_file.to_str().unwrap();
    let (code, out, _) = fleet(broker.port, &["send", "test-door", "config/set", "--arg", "gpio.burst=4", "--sign-key", key, "--wait"]);
    assert_eq!(code, 0, "{out}");
    // Signed by another language's library (Python's `cryptography`, its own JSON layout):
    // the agent checks the bytes as sent, so it accepts them, and refuses them changed.
    let python = |id: &str, tamper: &str| {
        let out = Command::new("python3").args(["-c", PYTHON_SIGNER, key, "test-door", id, tamper]).output().expect("python3");
        assert!(
            out.status.success(),
            "the Python signer failed (scripts/test-deps.sh installs python3-cryptography): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    watcher.publish(&format!("{P}/cmd/status"), python("py-signed", ""));
    let r = final_response(&watcher, "py-signed");
    assert_eq!(r["status"], "successful", "{r}");
    watcher.publish(&format!("{P}/cmd/status"), python("py-tampered", "tamper"));
    assert_eq!(final_response(&watcher, "py-tampered-x")["reason"], "not authorised: bad signature");
    assert!(agent.metric("doorbell_security_events_total{kind=\"command_not_authorised\"}") >= 4.0);
}

/// Signs `status` for device argv[2] with the key file argv[1] as a fleet tool in Python
/// would; with argv[4] set, changes the id after signing.
const PYTHON_SIGNER: &str = r#"
import base64, datetime, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key_file, target, cid, tamper = sys.argv[1:5]
key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(open(key_file).read().strip()))
expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
text = json.dumps({"name": "status", "id": cid, "target": target, "expires": expires, "args": {}}, indent=1)
sig = base64.b64encode(key.sign(text.encode())).decode()
if tamper:
    text = text.replace(cid, cid + "-x")
print(json.dumps({"signed": text, "sig": sig}))
"#;

#[test]
fn config_set_is_applied_live_by_the_components_that_own_the_keys() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, "")));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/cmd/res"), &format!("{P}/alerts")]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    // One ring a minute at most, a new alert rule, slower sampling and telemetry: all at once.
    let set = serde_json::json!({
        "id": "live",
        "gpio.burst": 1,
        "gpio.rings_per_minute": 1,
        "sampler.interval": "2s",
        "mqtt.telemetry_interval": "5s",
        "alerts.rule": [{"name": "ring_seen", "metric": "rings_1m", "op": ">=", "threshold": 1.0, "severity": "major", "cooldown": "0s"}],
    });
    watcher.publish(&format!("{P}/cmd/config/set"), set.to_string());
    assert_eq!(final_response(&watcher, "live")["status"], "successful");
    for what in [
        "button filter now: debounce 0s, burst 1, 1 rings/min",
        "sampling every 2s from now on",
        "telemetry every 5s",
        "alert rules reconfigured",
    ] {
        assert!(agent.wait_log(|l| l.contains(what), Duration::from_secs(5)).is_some(), "not applied: {what}\n{}", agent.log());
    }
    for _ in 0..3 {
        assert_eq!(agent.post("/simulate/press").0, 202);
    }
    // The first ring waits for the worker's models (seconds on a loaded machine), the other
    // two are dropped; once both drops are counted no press is left to make a second ring.
    agent.wait_log(|l| l.contains("ring 1 stored"), Duration::from_secs(15)).expect("the one ring the limit allows");
    let rate_limited = || agent.metric("doorbell_presses_dropped_total{reason=\"rate_limit\"}");
    common::wait_until(Duration::from_secs(5), || rate_limited() == 2.0);
    assert_eq!(rate_limited(), 2.0);
    assert_eq!(agent.json("/status")["rings"]["stored"], 1, "the new rate limit applies");
    assert!(
        watcher.wait(Duration::from_secs(5), |m| m.iter().any(|m| m.topic.ends_with("/alerts") && m.json()["key"] == "ring_seen")),
        "the new rule raised"
    );
}

#[test]
fn home_assistant_discovery_announces_the_doorbell() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let watcher = Watcher::start(broker.port, &["homeassistant/#"]);
    let _agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, "home_assistant = true")));
    assert!(
        watcher.wait(Duration::from_secs(10), |m| m.len() >= 7),
        "{:?}",
        watcher.messages().iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    // Retained: Home Assistant starting later still finds the doorbell (live subscribers get
    // the flag cleared, as the MQTT spec says).
    let late = Watcher::start(broker.port, &["homeassistant/#"]);
    assert!(late.wait(Duration::from_secs(5), |m| m.len() >= 7 && m.iter().all(|m| m.retain)));
    let ring = watcher.on("homeassistant/event/test-door/ring/config")[0].json();
    assert_eq!(ring["state_topic"], format!("{P}/events/ring"));
    assert_eq!(ring["availability_topic"], format!("{P}/status"));
    assert!(ring["event_types"].as_array().unwrap().contains(&serde_json::json!("blocked")));
    assert_eq!(watcher.on("homeassistant/sensor/test-door/temperature/config")[0].json()["device_class"], "temperature");
}

#[test]
fn a_full_outbox_drops_the_least_severe_and_reports_it_once_the_link_is_back() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(broker.port);
    let rule = "[alerts]\nbuiltin = false\n[[alerts.rule]]\nname = \"ring_storm\"\nmetric = \"rings_1m\"\nop = \">=\"\nthreshold = 5.0\nseverity = \"critical\"\ncooldown = \"10m\"\n";
    let extra = format!("{}[store]\nmax_outbox_messages = 10\n{rule}", mqtt_section(proxy.port, ""));
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &extra));
    let watcher = Watcher::start(broker.port, &[&format!("{P}/events/ring"), &format!("{P}/alerts")]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    proxy.cut();
    // 30 rings (minor) and, on the 5th, a critical alert (two messages) into a 10-message outbox.
    agent.ring_until(30);
    let status = agent.json("/status");
    assert_eq!(status["outbox_depth"], 10, "bounded: {status}");
    assert!(agent.metric("doorbell_outbox_dropped_total{severity=\"minor\"}") >= 20.0);
    assert_eq!(agent.metric("doorbell_outbox_dropped_total{severity=\"critical\"}"), 0.0, "critical messages are kept");
    proxy.restore();
    let overflow = |m: &[Msg]| m.iter().any(|m| m.json()["key"] == "outbox_overflow");
    assert!(watcher.wait(Duration::from_secs(15), overflow), "drops reported once the link is back");
    let msgs = watcher.messages();
    let report = msgs.iter().map(Msg::json).find(|a| a["key"] == "outbox_overflow").unwrap();
    assert!(report["message"].as_str().unwrap().contains("dropped while the broker was unreachable"), "{report}");
    assert!(msgs.iter().any(|m| m.json()["key"] == "ring_storm" && m.json()["severity"] == "critical"), "the critical alert got through");
    let rings: Vec<u64> = msgs.iter().filter_map(|m| m.json()["seq"].as_u64()).collect();
    assert!(rings.contains(&30) && !rings.contains(&1), "the newest rings were kept, the oldest dropped: {rings:?}");
}

#[test]
fn fleet_watch_waits_out_a_broker_down_at_start_and_a_restart_and_misses_nothing_with_a_session() {
    use std::io::BufRead;
    let mut broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), &mqtt_section(broker.port, "")));
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    // The operator starts watching while the broker is down: the watch waits for it.
    broker.stop();
    let mut watch = std::process::Command::new(common::fleet_bin())
        .args(["--broker", &url, "watch", "test-door", "--json", "--session", "test-watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, errors) = std::sync::mpsc::channel();
    let err = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let seen = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while let Ok(line) = lines.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
            if pred(&serde_json::from_str(&line).unwrap()) {
                return true;
            }
        }
        false
    };
    let ring = |seq: u64| seen(&|v| v["topic"] == format!("{P}/events/ring") && v["payload"]["seq"] == seq);
    // Two failed attempts reported (not a fixed time, which a loaded machine may spend before
    // the first one), and the watch is still there.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut failed = 0;
    while failed < 2 {
        let line = errors
            .recv_timeout(end.saturating_duration_since(std::time::Instant::now()))
            .expect("the watch exited or reported no failed connection");
        failed += usize::from(line.contains("unreachable"));
    }
    assert!(watch.try_wait().unwrap().is_none(), "the watch gave up on a broker that was down");
    broker.restart();
    // Subscribed once the agent's retained (or fresh) presence comes through.
    assert!(seen(&|v| v["topic"] == format!("{P}/status") && v["payload"]["online"] == true), "presence watched");
    agent.ring_until(1);
    assert!(ring(1), "ring 1 watched");
    broker.stop();
    agent.ring_until(2);
    broker.restart();
    assert!(ring(2), "ring 2, queued by the agent while the broker was down, reaches the watcher after both reconnect");
    let _ = watch.kill();
    let _ = watch.wait();
}
