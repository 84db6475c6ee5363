//! End-to-end tests of the real binary: presses in, rings and alerts out through the store,
//! /alerts, /metrics and /status; shutdown; start-up failures.

mod common;

use std::time::Duration;

use common::{config, Agent};

#[test]
fn presses_become_stored_rings_with_continuing_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("data"), "");
    let mut agent = Agent::start(dir.path(), &cfg);
    for _ in 0..3 {
        assert_eq!(agent.post("/simulate/press").0, 202);
    }
    agent.wait_log(|l| l.contains("ring 3 stored"), Duration::from_secs(5)).expect("third ring stored");
    let status = agent.json("/status");
    assert_eq!(status["rings"]["stored"], 3);
    assert_eq!(status["rings"]["last"]["result"], "no_face");
    assert_eq!(status["rings"]["last"]["seq"], 3);
    assert!(status["rings"]["last"]["stage_ms"]["detect"].is_number());
    assert_eq!(agent.metric("doorbell_ring_results_total{result=\"no_face\"}"), 3.0);
    assert_eq!(agent.metric("doorbell_ring_stored_seconds_count"), 3.0);
    let (code, _) = agent.signal(libc::SIGTERM);
    assert_eq!(code.code(), Some(0));

    // The sequence survives a restart: the next ring is #4.
    let agent = Agent::start(dir.path(), &cfg);
    assert_eq!(agent.post("/simulate/press").0, 202);
    agent.wait_log(|l| l.contains("ring 4 stored"), Duration::from_secs(5)).expect("ring 4 after restart");

    // /rings lists what the store holds, newest first, across the restart.
    let rings = agent.json("/rings?limit=3");
    let seqs: Vec<u64> = rings.as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![4, 3, 2], "{rings}");
    assert_eq!(rings[1]["result"], "no_face");
    assert!(rings[1]["id"].as_str().is_some_and(|id| !id.is_empty()), "{rings}");
    assert_eq!(agent.json("/rings").as_array().unwrap().len(), 4);
}

#[test]
fn alert_rules_raise_into_store_alerts_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let rule = r#"
[alerts]
builtin = false

[[alerts.rule]]
name = "ring_storm"
metric = "rings_1m"
op = ">="
threshold = 2.0
severity = "critical"
cooldown = "0s"
"#;
    let agent = Agent::start(dir.path(), &config(&dir.path().join("data"), rule));
    assert_eq!(agent.json("/health")["status"], "healthy");
    agent.post("/simulate/press");
    agent.post("/simulate/press");
    agent.wait_log(|l| l.contains("alert raised stored: key=ring_storm"), Duration::from_secs(5)).expect("alert raised");
    let active = agent.json("/alerts?state=active");
    assert_eq!(active[0]["key"], "ring_storm");
    assert_eq!(active[0]["severity"], "critical");
    assert_eq!(active[0]["state"], "raised");
    assert_eq!(active[0]["value"], 2.0);
    assert!(active[0]["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(agent.metric("doorbell_alerts_total{event=\"raised\",severity=\"critical\"}"), 1.0);
    assert_eq!(agent.metric("doorbell_alerts_active{severity=\"critical\"}"), 1.0);
    // A critical alert degrades health but keeps /health at 200.
    let (code, body) = agent.get("/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"degraded\""), "{body}");
    assert_eq!(agent.json("/status")["active_alerts"][0]["key"], "ring_storm");
    assert_eq!(agent.json("/alerts?state=all&limit=5").as_array().unwrap().len(), 1);
}

#[test]
fn press_storm_is_debounced_and_rate_limited_with_every_drop_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("data"), "")
        .replace("burst = 10000", "burst = 3")
        .replace("rings_per_minute = 600000", "rings_per_minute = 12");
    let agent = Agent::start(dir.path(), &cfg);
    let presses = 1000;
    let start = std::time::Instant::now();
    for _ in 0..presses {
        let (code, _) = agent.post("/simulate/press");
        assert!(code == 202 || code == 503, "press answered {code}");
    }
    let took = start.elapsed();
    let stored = || agent.json("/status")["rings"]["stored"].as_u64().unwrap();
    let dropped = || -> f64 {
        ["debounce", "rate_limit", "queue_full", "busy"]
            .iter()
            .map(|r| agent.metric(&format!("doorbell_presses_dropped_total{{reason=\"{r}\"}}")))
            .sum()
    };
    // The filter and the pipeline are still working through the storm: wait until every press
    // is accounted for, after which no further ring can come.
    common::wait_until(Duration::from_secs(30), || dropped() + stored() as f64 == presses as f64);
    let stored = stored();
    // Three in the burst, plus one token per 5 s of storm.
    let allowed = 3 + (took.as_secs_f64() / 5.0).ceil() as u64;
    assert!((1..=allowed).contains(&stored), "{stored} rings from {presses} presses in {took:?}");
    let seen = agent.metric("doorbell_presses_total{trigger=\"simulated\"}");
    assert_eq!(seen, presses as f64);
    assert_eq!(dropped() + stored as f64, presses as f64, "every press is a ring or a counted drop");
}

#[test]
fn sigterm_stops_cleanly_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &config(&dir.path().join("data"), ""));
    for _ in 0..5 {
        agent.post("/simulate/press");
    }
    let (status, took) = agent.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(agent.log().contains("stopped cleanly"));
}

/// systemd may stop the agent the moment it reports READY: the stop is still a clean one.
#[test]
fn sigterm_right_after_ready_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        let mut agent = Agent::start(dir.path(), &config(&dir.path().join("data"), ""));
        let (status, _) = agent.signal(libc::SIGTERM);
        assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    }
}

#[test]
fn unreadable_store_is_moved_aside_and_raises_critical_store_reset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::write(data.join("db/conf"), b"\xff\xfe not a sled config").unwrap();
    std::fs::write(data.join("db/db"), vec![0xA5u8; 64 * 1024]).unwrap();
    let agent = Agent::start(dir.path(), &config(&data, ""));
    agent.wait_log(|l| l.contains("key=store_reset"), Duration::from_secs(5)).expect("store_reset alert");
    let active = agent.json("/alerts");
    assert_eq!(active[0]["key"], "store_reset");
    assert_eq!(active[0]["severity"], "critical");
    let moved: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("db.unreadable-"))
        .collect();
    assert_eq!(moved.len(), 1, "the unreadable database is kept aside");
    assert_eq!(agent.post("/simulate/press").0, 202, "the agent keeps working on a fresh store");
    agent.wait_log(|l| l.contains("ring 1 stored"), Duration::from_secs(5)).expect("ring on fresh store");
}

/// Five rings stored and a clean stop; then `damage` is done to the data directory while the
/// agent is down. After the restart nothing may be missing without a critical alert that
/// says so, and ring numbers continue after 5.
fn damaged_between_runs(damage: impl Fn(&std::path::Path)) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(&data, "");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.ring_until(5);
    assert_eq!(agent.signal(libc::SIGTERM).0.code(), Some(0));
    damage(&data);
    let agent = Agent::start(dir.path(), &cfg);
    let stored: Vec<u64> = agent.json("/rings").as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let alerts = agent.json("/alerts");
    let reported = alerts.as_array().unwrap().iter().find(|a| a["key"] == "store_data_lost" || a["key"] == "store_reset").cloned();
    if stored != vec![5, 4, 3, 2, 1] {
        let alert = reported.clone().unwrap_or_else(|| panic!("rings {stored:?} after the damage, and no alert: {alerts}"));
        assert_eq!(alert["severity"], "critical", "{alert}");
    }
    agent.post("/simulate/press");
    agent.wait_log(|l| l.contains("ring 6 stored"), Duration::from_secs(5)).unwrap_or_else(|| panic!("ring 6; log:\n{}", agent.log()));
    reported.unwrap_or_default()
}

#[test]
fn a_deleted_database_is_reported_lost_with_the_rings_it_held() {
    let alert = damaged_between_runs(|data| std::fs::remove_dir_all(data.join("db")).unwrap());
    assert_eq!(alert["key"], "store_data_lost", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.starts_with("the store came back without rings 1..=5 that it had reported stored; a copy as found is in "),
        "{message}"
    );
}

#[test]
fn a_truncated_or_overwritten_database_never_loses_rings_silently() {
    damaged_between_runs(|data| {
        let db = data.join("db/db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    });
    damaged_between_runs(|data| {
        use std::os::unix::fs::FileExt;
        let db = data.join("db/db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&db).unwrap().write_all_at(&vec![0x5A; 4096], len / 3).unwrap();
    });
}

#[test]
fn missing_gpio_leaves_agent_running_but_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    // This machine has no GPIO character device for the rppal backend to open.
    let cfg = config(&dir.path().join("data"), "").replace("backend = \"simulated\"", "backend = \"rppal\"");
    let agent = Agent::start(dir.path(), &cfg);
    let (code, body) = agent.get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"unhealthy\""));
    assert_eq!(agent.get("/ready").0, 503);
    assert_eq!(agent.post("/simulate/press").0, 404, "no simulator with a real button");
    agent.wait_log(|l| l.contains("key=gpio_unavailable"), Duration::from_secs(5)).expect("gpio alert");
}

#[test]
fn second_agent_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = Agent::start(dir.path(), &config(&data, ""));
    let other = dir.path().join("other.toml");
    std::fs::write(&other, config(&data, "")).unwrap();
    let (code, _, err) = common::run(&["-c", other.to_str().unwrap(), "run"]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by another doorbell-agent process"), "{err}");
}

#[test]
fn cli_status_and_press_talk_to_the_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(dir.path(), &config(&data, ""));
    // The CLI reads the probe address from the config: point it at the bound port.
    let cli_cfg = dir.path().join("cli.toml");
    std::fs::write(&cli_cfg, config(&data, "").replace("127.0.0.1:0", &agent.addr.to_string())).unwrap();
    let c = cli_cfg.to_str().unwrap();
    let (code, out, err) = common::run(&["-c", c, "press"]);
    assert_eq!(code, 0, "{out}{err}");
    agent.wait_log(|l| l.contains("ring 1 stored"), Duration::from_secs(5)).expect("ring");
    let (code, out, _) = common::run(&["-c", c, "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("on test-door: running, healthy"), "{out}");
    assert!(out.contains("1 since start, 1 stored; last #1 no_face"), "{out}");
    let (code, out, _) = common::run(&["-c", c, "status", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["device_id"], "test-door");
}

/// A panic, in any thread, is one `crit` line naming the thread, the place and the message
/// (`<2>` when stderr is the journal), and the process aborts for systemd to restart it:
/// shown with the build fault that panics at start.
#[cfg(feature = "fault-injection")]
#[test]
fn a_panic_is_logged_at_crit_and_aborts_the_process() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("doorbell-agent");
    let mut image = std::fs::read(common::BIN).unwrap();
    image.extend_from_slice(b"\nDOORBELL-FAULT:crash-at-start\n");
    std::fs::write(&bin, image).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config(&dir.path().join("data"), "")).unwrap();
    for (journal, prefix) in [(false, "CRIT "), (true, "<2>")] {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["-c", cfg.to_str().unwrap(), "run"]).env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
        if journal {
            cmd.env("JOURNAL_STREAM", "8:1");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().find(|l| l.contains("panic in thread")).unwrap_or_else(|| panic!("no panic line:\n{stderr}"));
        assert!(line.starts_with(&format!("{prefix}panic in thread 'main' at src/main.rs:")), "{line}");
        assert!(line.ends_with(": fault injection: this build crashes at start; aborting"), "{line}");
    }
}
