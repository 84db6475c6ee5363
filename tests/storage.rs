//! Storage faults with the real binary on a real small file system: a tmpfs mounted over the
//! data directory in the agent's own mount namespace (`unshare`), filled from outside
//! through /proc/PID/root.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mqtt::{mqtt_section, Msg, Rumqttd, Watcher};
use common::{config, Agent, NO_CAMERA};

/// Runs its arguments in a new mount namespace (a user namespace too when not root) over
/// which a `size` tmpfs covers `dir`.
fn small_fs(dir: &Path, size: &str) -> Vec<String> {
    let user = if unsafe { libc::geteuid() } == 0 { "-m" } else { "-Urm" };
    let script = format!("mount -t tmpfs -o size={size} tmpfs '{}' && exec \"$@\"", dir.display());
    ["unshare", user, "sh", "-c", &script, "sh"].map(String::from).to_vec()
}

/// Fills the file system under `dir` as the agent sees it (through /proc/PID/root); returns the
/// filler file, whose removal frees the space again.
fn fill(agent: &Agent, dir: &Path) -> PathBuf {
    let path = PathBuf::from(format!("/proc/{}/root{}/fill", agent.pid(), dir.display()));
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

#[test]
fn on_a_full_disk_every_ring_and_the_alert_are_announced_health_fails_and_sigterm_exits_0() {
    let probe = Command::new("unshare").args(if unsafe { libc::geteuid() } == 0 { ["-m", "true"] } else { ["-Urm", "true"] }).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: this machine allows no mount namespace (unshare -m / -Urm), so no small file system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = dir.path().join("config.toml");
    let broker = Rumqttd::start();
    let watcher = Watcher::start(broker.port, &["doorbell/test-door/events/ring", "doorbell/test-door/alerts"]);
    std::fs::write(&cfg, config(&data, &format!("{NO_CAMERA}{}", mqtt_section(broker.port, "")))).unwrap();
    let wrap = small_fs(&data, "16m");
    let mut agent = Agent::start_in(&cfg, &wrap.iter().map(String::as_str).collect::<Vec<_>>());

    for _ in 0..3 {
        agent.post("/simulate/press");
    }
    agent.wait_log(|l| l.contains("ring 3 stored"), Duration::from_secs(5)).expect("ring 3 stored");
    assert_eq!(agent.json("/health")["checks"]["store"]["detail"], "writable");
    assert_eq!(agent.metric("doorbell_store_records{tree=\"rings\"}"), 3.0, "the gauge follows the writes");

    let filler = fill(&agent, &data);
    // Rings until one cannot be written (sled may still have room in a segment it holds).
    let end = Instant::now() + Duration::from_secs(20);
    let mut presses = 3;
    let failed = loop {
        assert!(Instant::now() < end, "no ring failed to store on a full disk; log:\n{}", agent.log());
        agent.post("/simulate/press");
        presses += 1;
        if let Some(line) = agent.wait_log(|l| l.contains("could not be stored"), Duration::from_millis(300)) {
            break line;
        }
    };
    assert!(failed.contains("I/O error: No space left on device (os error 28); announced from memory"), "{failed}");
    for _ in 0..3 {
        agent.post("/simulate/press");
        presses += 1;
    }
    // Every press reaches the fleet: the ones the disk refused marked `stored: false`.
    let events = || -> Vec<serde_json::Value> { watcher.on("doorbell/test-door/events/ring").iter().map(Msg::json).collect() };
    let all = |msgs: &[Msg]| {
        let seqs: std::collections::BTreeSet<u64> = msgs.iter().filter_map(|m| m.json()["seq"].as_u64()).collect();
        seqs.len() as u64 == presses
    };
    assert!(watcher.wait(Duration::from_secs(10), all), "{presses} presses, events: {:?}", events());
    let unstored: Vec<u64> = events().iter().filter(|e| e["stored"] == false).map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(unstored.len() >= 4 && unstored.contains(&presses), "events marked stored: false: {unstored:?}");
    // The store's own critical alert, announced from memory too.
    let raised = |msgs: &[Msg]| {
        msgs.iter().any(|m| {
            let a = m.json();
            a["key"] == "store_unwritable" && a["state"] == "raised" && a["severity"] == "critical" && a["stored"] == false
        })
    };
    assert!(
        watcher.wait(Duration::from_secs(5), raised),
        "no store_unwritable alert: {:?}",
        watcher.on("doorbell/test-door/alerts").iter().map(Msg::json).collect::<Vec<_>>()
    );
    let message = watcher.on("doorbell/test-door/alerts").iter().map(Msg::json).find(|a| a["key"] == "store_unwritable").unwrap();
    assert!(message["message"].as_str().unwrap().contains("No space left on device (os error 28)"), "{message}");
    assert_eq!(agent.json("/health")["checks"]["alerts"]["detail"], "critical: store_unwritable");
    let (code, body) = agent.get("/health");
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let detail = health["checks"]["store"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("not writable: I/O error: No space left on device (os error 28) (") && detail.contains(" MiB free on "),
        "{detail}"
    );
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(agent.get("/ready").0, 503);
    std::fs::remove_file(filler).unwrap();

    let (status, took) = agent.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM with a failing store must still stop cleanly; log:\n{}", agent.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
}
