//! The fleet `update`/`rollback` commands and `doorbell-fleet rollout` with real agent binaries and a
//! real broker (rumqttd), on a slot layout in a temporary directory (`update.install_root`,
//! `update.slot_state_dir`). Without systemd nothing restarts an agent, so these cover what
//! must happen before a restart: every refusal, answered `failed` with its reason, recorded
//! in the update history, raised as an alert, and changing nothing; and a rollout that
//! halts when its failure budget is spent. The whole update → restart → trial → commit or
//! rollback path over MQTT runs under real systemd in `tests/systemd_update.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mqtt::{mqtt_section, Msg, Rumqttd, Watcher};
use common::{config, Agent};
use doorbell_artifact::{self as artifact, Manifest, SecretKey, TARGET};
use doorbell_slotctl::{Slot, SlotInfo, State, Trial};

/// `size` bytes that start like an ELF executable for another machine than this one.
fn foreign_elf(size: usize) -> Vec<u8> {
    elf(size, if TARGET.starts_with("aarch64") { 62 } else { 183 })
}

/// `size` bytes that start like a 64-bit ELF executable for `machine`.
fn elf(size: usize, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; size];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    // Incompressible beyond the header, like a real binary, so the download has a real size.
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in h[64..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    h
}

fn key() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

/// A device's slot layout: slot A committed with 0.1.0, slot B empty, optionally a trial.
fn slot_state(dir: &Path, trial: bool) -> PathBuf {
    let state_dir = dir.join("slotctl");
    std::fs::create_dir_all(&state_dir).unwrap();
    let mut state = State::new(Slot::A);
    state.set_slot(Slot::A, Some(SlotInfo { version: "0.1.0".into(), sha256: "00".into(), size: 1, installed_ms: 0 }));
    if trial {
        state.set_slot(Slot::B, Some(SlotInfo { version: "0.3.0".into(), sha256: "11".into(), size: 1, installed_ms: 0 }));
        state.trial = Some(Trial {
            id: 1,
            slot: Slot::B,
            version: "0.3.0".into(),
            from_version: "0.1.0".into(),
            tries: 3,
            tries_left: 2,
            armed_ms: 0,
            boot_id: String::new(),
            started_mono_ms: 0,
            deadline_s: 600,
            failures: vec![],
            request_id: None,
        });
    }
    state.save(&state_dir.join("state.json")).unwrap();
    state_dir
}

/// An agent named `device` on `broker`, with the slot layout under `dir`.
fn device_config(dir: &Path, device: &str, broker: u16, state_dir: &Path, extra: &str) -> String {
    let update = format!(
        "[update]\npublic_key = \"{}\"\ninstall_root = \"{}\"\nslot_state_dir = \"{}\"\nmax_size_mib = 1\n",
        key().public().to_base64(),
        dir.join("opt").display(),
        state_dir.display()
    );
    config(&dir.join("data"), &format!("{}{update}", mqtt_section(broker, extra)))
        .replace("device_id = \"test-door\"", &format!("device_id = \"{device}\""))
}

fn final_response(w: &Watcher, topic: &str, id: &str) -> serde_json::Value {
    let finals = |msgs: &[Msg]| -> Vec<serde_json::Value> {
        msgs.iter()
            .filter(|m| m.topic == topic)
            .map(Msg::json)
            .filter(|r| r["id"] == id && (r["status"] == "successful" || r["status"] == "failed"))
            .collect()
    };
    assert!(w.wait(Duration::from_secs(15), |m| !finals(m).is_empty()), "no final response to {id}");
    finals(&w.messages()).pop().unwrap()
}

#[test]
fn update_and_rollback_commands_refuse_with_a_reason_and_change_nothing() {
    let broker = Rumqttd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key_file, public) = common::fleet_keygen(d);
    let state_dir = slot_state(d, false);
    let agent = Agent::start(d, &device_config(d, "door-u", broker.port, &state_dir, &format!("command_key = \"{public}\"")));
    let res = "doorbell/door-u/cmd/res";
    let watcher = Watcher::start(broker.port, &[res, "doorbell/door-u/alerts"]);
    assert!(agent.wait_link_up(Duration::from_secs(10)));
    let state_before = std::fs::read(state_dir.join("state.json")).unwrap();

    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let small = foreign_elf(64 * 1024);
    let signed = |version: &str, binary: &[u8], key: &SecretKey| artifact::build(key, version, TARGET, binary, &common::zstd(binary)).1;
    let mut tampered = signed("0.2.0", &small, &key());
    tampered[20] ^= 1; // inside the manifest: the signature no longer matches
    let other_target = Manifest {
        target: "riscv64gc-unknown-linux-gnu".into(),
        ..artifact::build(&key(), "0.2.0", TARGET, &small, &common::zstd(&small)).0
    };
    let other_target_bytes = {
        let m = serde_json::to_vec(&other_target).unwrap();
        let mut out = artifact::header_bytes(&m, &key().sign(&m));
        out.extend_from_slice(&common::zstd(&small));
        out
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("not-an-artifact", write("plain.bin", b"just bytes"), "not_an_artifact"),
        ("wrong-key", write("wrong-key.dbu", &signed("0.2.0", &small, &SecretKey::from_seed([43; 32]))), "wrong_key"),
        ("bad-signature", write("tampered.dbu", &tampered), "bad_signature"),
        ("wrong-target", write("target.dbu", &other_target_bytes), "wrong_target"),
        ("downgrade", write("old.dbu", &signed("0.0.9", &small, &key())), "downgrade"),
        ("too-large", write("big.dbu", &signed("0.2.0", &foreign_elf(2 << 20), &key())), "too_large"),
        ("wrong-arch", write("arch.dbu", &signed("0.2.0", &small, &key())), "wrong_arch"),
    ];
    let key_arg = key_file.to_str().unwrap();
    for (name, path, code) in &cases {
        let (exit, out, err) = common::fleet(
            broker.port,
            &["send", "door-u", "update", "--arg", &format!("path={path}"), "--sign-key", key_arg, "--wait", "--json"],
        );
        assert_eq!(exit, 1, "{name}: the operator sees a failure\n{out}{err}");
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let reason = last["response"]["reason"].as_str().unwrap_or_default().to_string();
        assert_eq!(last["response"]["status"], "failed", "{name}: {last}");
        assert!(reason.starts_with(&format!("refused ({code})")), "{name}: {reason}");
        println!("{name}: {reason}");
    }
    // Unsigned: not authorised before anything is downloaded or read.
    watcher.publish("doorbell/door-u/cmd/update", format!(r#"{{"id":"unsigned","path":"{}"}}"#, cases[6].1));
    assert!(final_response(&watcher, res, "unsigned")["reason"].as_str().unwrap().starts_with("not authorised"));
    // Bad arguments.
    let (exit, out, _) =
        common::fleet(broker.port, &["send", "door-u", "update", "--arg", "url=ftp://x/a", "--sign-key", key_arg, "--wait"]);
    assert!(exit == 1 && out.contains("bad arguments: `url`"), "{out}");
    // Nothing to roll back to: said at once, without a restart.
    let (exit, out, _) = common::fleet(broker.port, &["send", "door-u", "rollback", "--sign-key", key_arg, "--wait"]);
    assert!(exit == 1 && out.contains("nothing to roll back to: slot b is empty"), "{out}");

    // A trial running (slotctl's state says so): refused before any download.
    let trial_dir = slot_state(d, true);
    assert_eq!(trial_dir, state_dir);
    let trial_state = std::fs::read(state_dir.join("state.json")).unwrap();
    let url = "http://127.0.0.1:9/never-fetched.dbu";
    let (exit, out, _) =
        common::fleet(broker.port, &["send", "door-u", "update", "--arg", &format!("url={url}"), "--sign-key", key_arg, "--wait"]);
    assert!(exit == 1 && out.contains("refused (trial_running)"), "{out}");

    // Nothing changed: the slot state, no staged artifact, the agent still up.
    assert_eq!(std::fs::read(state_dir.join("state.json")).unwrap(), trial_state);
    assert_ne!(state_before, trial_state);
    assert!(!d.join("data/update/staged").exists());
    assert_eq!(agent.get("/health").0, 200);
    // Every refusal is in the history, with the command's id, and raised as an alert.
    let history = agent.json("/updates?limit=50");
    let refused = history.as_array().unwrap().iter().filter(|e| e["outcome"] == "refused" && e["decided_by"] == "agent").count();
    assert_eq!(refused, cases.len() + 1, "{history}");
    assert!(history[0]["request_id"].is_string());
    let alerts = |m: &[Msg]| m.iter().filter(|m| m.topic.ends_with("/alerts") && m.json()["key"] == "update_refused").count();
    assert!(watcher.wait(Duration::from_secs(10), |m| alerts(m) >= 1), "no update_refused alert");
}

fn start_fleet(broker: u16, n: usize, root: &Path) -> Vec<Agent> {
    (1..=n)
        .map(|i| {
            let dir = root.join(format!("d{i:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            let state_dir = slot_state(&dir, false);
            Agent::start(&dir, &device_config(&dir, &format!("door-{i:02}"), broker, &state_dir, ""))
        })
        .collect()
}

fn rollout(broker: u16, artifact: &str, extra: &[&str]) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut args = vec!["rollout", artifact, "--serve", "127.0.0.1:0", "--timeout", "60s"];
    args.extend_from_slice(extra);
    let (code, out, err) = common::fleet(broker, &args);
    (code, out, err, start.elapsed())
}

/// Devices refuse the artifact (built for another architecture, found only once downloaded,
/// verified and decompressed): the rollout halts once the failures exceed the budget and
/// leaves the remaining devices alone.
#[test]
fn rollout_halts_when_the_failure_budget_is_spent() {
    let broker = Rumqttd::start();
    let root = tempfile::tempdir().unwrap();
    let n: usize = std::env::var("DOORBELL_ROLLOUT_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let agents = start_fleet(broker.port, n, root.path());
    let watcher = Watcher::start(broker.port, &["doorbell/+/status", "doorbell/+/cmd/res"]);
    let online = |m: &[Msg]| m.iter().filter(|m| m.topic.ends_with("/status") && m.json()["online"] == true).count();
    assert!(watcher.wait(Duration::from_secs(20), |m| online(m) >= n), "not all {n} agents online");
    let binary = foreign_elf(512 * 1024);
    let art = root.path().join("v0.2.0.dbu");
    std::fs::write(&art, artifact::build(&key(), "0.2.0", TARGET, &binary, &common::zstd(&binary)).1).unwrap();

    // Waves 20,40,100 with a budget of the first wave's size: the first wave's failures are
    // within it, the second's are not.
    let budget = (n * 20).div_ceil(100);
    let waves_run = (n * 40).div_ceil(100);
    let (code, out, err, took) =
        rollout(broker.port, art.to_str().unwrap(), &["--waves", "20,40,100", "--max-failures", &budget.to_string()]);
    println!("{out}{err}");
    assert_eq!(code, 1, "a halted rollout exits 1");
    assert!(err.contains(&format!("halting: {waves_run} failures exceed the budget of {budget}")), "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("door-")).collect();
    assert_eq!(rows.len(), n);
    let failed: Vec<&&str> = rows.iter().filter(|r| r.contains(" failed ")).collect();
    assert_eq!(failed.len(), waves_run, "{out}");
    assert!(failed.iter().all(|r| r.contains("0.1.0") && r.contains("0.2.0") && r.contains("refused (wrong_arch)")), "{out}");
    assert_eq!(rows.iter().filter(|r| r.contains(" not_started ")).count(), n - waves_run);
    // The devices of the waves that never ran got no command. The watcher is a client of its
    // own: the answers the rollout saw may still be on their way to it.
    let commanded = |m: &[Msg]| m.iter().filter(|m| m.topic.ends_with("/cmd/res") && m.json()["status"] == "accepted").count();
    watcher.wait(Duration::from_secs(10), |m| commanded(m) >= waves_run);
    // A fixed moment more for an answer that must not come.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(commanded(&watcher.messages()), waves_run);
    println!("halted rollout over {n} agents: {:.2} s", took.as_secs_f64());

    // Unlimited budget: every wave runs, every device answers; this is the timing reported.
    let (code, out, err, took) = rollout(broker.port, art.to_str().unwrap(), &["--max-failures", "1000"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("door-") && l.contains(" failed ")).count(), n, "{out}");
    println!("full rollout (waves 10,25,50,100) over {n} agents, 512 KiB artifact: {:.2} s", took.as_secs_f64());
    for agent in &agents {
        assert_eq!(agent.get("/health").0, 200, "agents stay up");
    }
}

/// An HTTPS artifact server on loopback with a certificate of the test's own CA. It answers
/// each connection by `script` in turn: `Some(n)` sends only the first `n` bytes of what was
/// asked for, then drops the TCP connection (no TLS close); `None` sends the whole rest.
/// Honours `Range: bytes=N-`. Returns the port, the CA file, and the `Range` each request
/// carried (`-` for none, `handshake failed` when the client refused the certificate).
fn https_server(dir: &Path, data: Vec<u8>, script: Vec<Option<usize>>) -> (u16, PathBuf, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::io::{BufRead, BufReader, Write};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    let ca_file = dir.join("artifacts-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()))
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for cut in script {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut handshake = Ok((0, 0));
            while conn.is_handshaking() && handshake.is_ok() {
                handshake = conn.complete_io(&mut tcp);
            }
            if handshake.is_err() {
                log.lock().unwrap().push("handshake failed".to_string());
                continue;
            }
            let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
            let mut range = "-".to_string();
            loop {
                let mut line = String::new();
                tls.read_line(&mut line).unwrap();
                if let Some(r) = line.strip_prefix("Range: bytes=") {
                    range = r.trim().trim_end_matches('-').to_string();
                }
                if line.trim().is_empty() {
                    break;
                }
            }
            let from = range.parse::<usize>().unwrap_or(0);
            log.lock().unwrap().push(range);
            let stream = tls.get_mut();
            stream.write_all(&doorbell_base::http::testing::ranged_answer(&data, from, cut)).unwrap();
            stream.flush().unwrap();
            match cut {
                // A pulled cable: the TCP connection goes, no TLS close_notify.
                Some(_) => stream.sock.shutdown(std::net::Shutdown::Both).unwrap(),
                None => stream.conn.send_close_notify(),
            }
            let _ = stream.flush();
        }
    });
    (port, ca_file, seen)
}

/// `update apply https://…`: a server whose certificate the device does not trust is
/// refused at once (no retry: the signature is not even looked at); with `update.ca_file`
/// the download that breaks off midway resumes from its last byte with a Range request and
/// the artifact is verified and staged.
#[test]
fn an_https_download_refuses_an_unknown_ca_and_resumes_a_cut_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state_dir = slot_state(d, false);
    let binary = elf(900 * 1024, artifact::elf_kind_for(TARGET).machine);
    let (manifest, data) = artifact::build(&key(), "0.2.0", TARGET, &binary, &common::zstd(&binary));
    let cut = 300_000;
    let (port, ca_file, seen) = https_server(d, data.clone(), vec![None, Some(cut), None]);
    let url = format!("https://localhost:{port}/v0.2.0.dbu");
    let update = |ca: &str| {
        format!(
            "[update]\npublic_key = \"{}\"\ninstall_root = \"{}\"\nslot_state_dir = \"{}\"\nmax_size_mib = 1\n{ca}",
            key().public().to_base64(),
            d.join("opt").display(),
            state_dir.display()
        )
    };
    let untrusting = d.join("untrusting.toml");
    std::fs::write(&untrusting, config(&d.join("data"), &update(""))).unwrap();
    let (code, out, err) = common::run(&["-c", untrusting.to_str().unwrap(), "update", "apply", "--no-wait", &url]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("update refused (io)") && err.contains("TLS with localhost") && err.contains("certificate"), "{err}");
    assert!(!d.join("data/update/staged").exists());

    let trusting = d.join("trusting.toml");
    std::fs::write(&trusting, config(&d.join("data"), &update(&format!("ca_file = \"{}\"\n", ca_file.display())))).unwrap();
    let (code, out, err) = common::run(&["-c", trusting.to_str().unwrap(), "update", "apply", "--no-wait", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("staged 0.2.0 (replacing 0.1.0)"), "{out}{err}");
    assert!(err.contains(&format!("attempt 2 in 1s, from byte {cut}")), "{err}");
    assert_eq!(*seen.lock().unwrap(), ["handshake failed".to_string(), "-".to_string(), cut.to_string()]);
    let staged = std::fs::read_to_string(d.join("data/update/staged/manifest.json")).unwrap();
    assert_eq!(serde_json::from_str::<Manifest>(&staged).unwrap(), manifest);
}
