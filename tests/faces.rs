//! The face pipeline as the agent runs it: the real binary, its real `pipeline-worker`
//! child, the real models, rings pressed over HTTP with `capture.source = "files"` (or a
//! camera command), results read back from /status, /metrics, /alerts and the log.
#![cfg(feature = "faces")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, Agent};

/// Agent config with the fetched models, the given camera and quick restarts.
fn faces_config(data: &Path, capture: &str, extra: &str) -> String {
    config(data, &format!("[capture]\n{capture}\n\n[pipeline]\nrestart_backoff = \"10ms\"\nrestart_backoff_max = \"50ms\"\n{extra}"))
}

fn files(dir: &Path) -> String {
    format!("source = \"files\"\npath = \"{}\"\nframes = 1", dir.display())
}

/// Presses once and returns ring `seq` as /status reports it.
fn ring(agent: &Agent, seq: u64) -> serde_json::Value {
    assert_eq!(agent.post("/simulate/press").0, 202);
    agent
        .wait_log(|l| l.contains(&format!("ring {seq} stored")), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("ring {seq} not stored; log:\n{}", agent.log()));
    let last = agent.json("/status")["rings"]["last"].clone();
    assert_eq!(last["seq"], seq);
    last
}

#[test]
fn faces_and_empty_scenes_are_told_apart_by_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let set = common::testset();
    std::fs::copy(set.join("noface/sample5-1.jpg"), frames.join("a.jpg")).unwrap();
    std::fs::copy(set.join("stranger/sample3-2.jpg"), frames.join("b.jpg")).unwrap();
    let agent = Agent::start(dir.path(), &faces_config(&dir.path().join("data"), &files(&frames), ""));
    let first = ring(&agent, 1);
    assert_eq!(first["result"], "no_face", "{first}");
    let second = ring(&agent, 2);
    assert_eq!(second["result"], "unknown", "nobody is enrolled: {second}");
    assert!(second["stage_ms"]["detect"].as_f64().unwrap() > 0.0 && second["stage_ms"]["embed"].as_f64().unwrap() > 0.0);
    assert_eq!(agent.metric("doorbell_pipeline_worker_health"), 1.0);
    assert_eq!(agent.metric("doorbell_pipeline_worker_starts_total"), 1.0, "one warm worker served both rings");
    assert_eq!(agent.metric("doorbell_face_frames_total{faces=\"0\"}"), 1.0);
    assert_eq!(agent.metric("doorbell_face_frames_total{faces=\"1\"}"), 1.0);
    assert_eq!(agent.metric("doorbell_face_decisions_total{result=\"unknown\",confidence=\"0.9-1\"}"), 1.0);
    for stage in ["capture", "decode", "detect", "align", "embed", "match"] {
        assert_eq!(agent.metric(&format!("doorbell_pipeline_stage_seconds_count{{stage=\"{stage}\"}}")), 2.0, "{stage}");
    }
    assert_eq!(agent.json("/health")["checks"]["pipeline"]["ok"], true);
}

#[test]
fn bad_frames_become_error_rings_with_reasons_and_the_agent_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let set = common::testset();
    let photo = std::fs::read(set.join("person/biden/1.jpg")).unwrap();
    std::fs::write(frames.join("a-empty.jpg"), b"").unwrap();
    std::fs::write(frames.join("b-corrupt.jpg"), &photo[..photo.len() / 2]).unwrap();
    std::fs::copy(set.join("big/50mp.jpg"), frames.join("c-50mp.jpg")).unwrap();
    let agent = Agent::start(dir.path(), &faces_config(&dir.path().join("data"), &files(&frames), ""));
    for (seq, reason) in [(1, "0 bytes"), (2, "JPEG"), (3, "50.0 megapixels")] {
        let r = ring(&agent, seq);
        assert_eq!(r["result"], "error", "{r}");
        assert!(r["reason"].as_str().unwrap().contains(reason), "ring {seq}: {r}");
    }
    agent.wait_log(|l| l.contains("alert raised stored: key=pipeline_errors"), Duration::from_secs(5)).expect("pipeline_errors alert");
    assert_eq!(agent.metric("doorbell_pipeline_worker_starts_total"), 1.0, "bad frames never cost the worker");
    assert_eq!(agent.json("/health")["checks"]["pipeline"]["ok"], true);
}

#[test]
fn camera_commands_that_fail_hang_or_outlive_the_deadline_are_error_rings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let capture = "source = \"command\"\ncommand = [\"sh\", \"-c\", \"echo camera busy >&2; exit 3\"]\nframes = 1";
    let mut agent = Agent::start(dir.path(), &faces_config(&data, capture, ""));
    let r = ring(&agent, 1);
    assert!(r["reason"].as_str().unwrap().contains("exit status: 3") && r["reason"].as_str().unwrap().contains("camera busy"), "{r}");
    // Clean stops: numbering goes on without the gap a crash leaves.
    agent.signal(libc::SIGTERM);

    let capture = "source = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"300ms\"\nframes = 1";
    let mut agent = Agent::start(dir.path(), &faces_config(&data, capture, ""));
    let r = ring(&agent, 2);
    assert!(r["reason"].as_str().unwrap().contains("did not finish within 300ms; killed"), "{r}");
    agent.signal(libc::SIGTERM);

    // The camera outlives the ring's deadline: the worker itself is killed and restarted.
    let capture = "source = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"60s\"\nframes = 1";
    let agent = Agent::start(dir.path(), &faces_config(&data, capture, "ring_deadline = \"1s\""));
    let r = ring(&agent, 3);
    assert!(r["reason"].as_str().unwrap().contains("did not answer within 1s; killed"), "{r}");
    assert_eq!(agent.metric("doorbell_pipeline_worker_failures_total{kind=\"timeout\"}"), 1.0);
    // Kept warm: the worker is restarted after the backoff, before the next ring.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while agent.metric("doorbell_pipeline_worker_starts_total") < 2.0 {
        assert!(std::time::Instant::now() < end, "worker not restarted; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = ring(&agent, 4);
    assert!(r["reason"].as_str().unwrap().contains("did not answer within 1s; killed"), "the camera still hangs: {r}");
}

#[test]
fn missing_model_makes_rings_error_with_an_alert_and_the_agent_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(common::testset().join("person/biden/1.jpg"), frames.join("a.jpg")).unwrap();
    let cfg = faces_config(&dir.path().join("data"), &files(&frames), "").replace("face_detection_short_range.onnx", "no-such-model.onnx");
    let agent = Agent::start(dir.path(), &cfg);
    let r = ring(&agent, 1);
    assert_eq!(r["result"], "error");
    assert!(r["reason"].as_str().unwrap().contains("no-such-model.onnx") && r["reason"].as_str().unwrap().contains("cannot read"), "{r}");
    agent.wait_log(|l| l.contains("key=face_models_unavailable"), Duration::from_secs(5)).expect("models alert");
    let (code, body) = agent.get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("face models unavailable"), "{body}");
    // The rest of the agent is fine: probe, store, sampler, more rings.
    assert_eq!(ring(&agent, 2)["result"], "error");
    assert!(agent.json("/status")["rings"]["stored"].as_u64() == Some(2));
}

#[test]
fn an_idle_worker_exits_and_a_killed_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(common::testset().join("stranger/sample1-1.jpg"), frames.join("a.jpg")).unwrap();
    let agent = Agent::start(dir.path(), &faces_config(&dir.path().join("data"), &files(&frames), "idle_exit = \"1s\""));
    assert_eq!(ring(&agent, 1)["result"], "unknown");
    agent.wait_log(|l| l.contains("pipeline worker idle for 1s"), Duration::from_secs(10)).expect("idle exit");
    assert!(worker_pids(agent.pid()).is_empty(), "the idle worker is gone");
    assert_eq!(ring(&agent, 2)["result"], "unknown", "started again on demand");

    let pids = worker_pids(agent.pid());
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill(2) on the worker child of the agent we started.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    // kill(2) returns before the worker is dead: wait until it is, so that ring 3 meets a
    // worker that died between rings rather than one that dies during the ring.
    assert!(common::wait_until(Duration::from_secs(5), || exited(pids[0])), "the worker outlived SIGKILL");
    let r = ring(&agent, 3);
    assert_eq!(r["result"], "unknown", "a dead worker costs at most a restart: {r}");
    assert!(agent.metric("doorbell_pipeline_worker_failures_total{kind=\"crash\"}") >= 1.0);
}

/// Whether process `pid` has exited: a zombie until its parent reaps it, or gone.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

/// Child processes of `pid` (the pipeline worker).
fn worker_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().filter_map(Result::ok) {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    out
}

#[test]
fn face_commands_over_mqtt_enroll_from_a_kept_ring_and_the_person_is_then_known() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut broker = std::process::Command::new("/usr/sbin/mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/test-deps.sh installs it)");
    let url = format!("mqtt://127.0.0.1:{port}");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let set = common::testset();
    std::fs::copy(set.join("person/obama/1.jpg"), frames.join("1.jpg")).unwrap();
    std::fs::copy(set.join("person/obama/2.jpg"), frames.join("2.jpg")).unwrap();
    let extra = format!("[snapshots]\nkeep = true\n\n[mqtt]\nurl = \"{url}\"");
    let agent = Agent::start(dir.path(), &faces_config(&dir.path().join("data"), &files(&frames), &extra));

    assert!(agent.wait_link_up(Duration::from_secs(20)), "link up");
    let first = ring(&agent, 1);
    assert_eq!(first["result"], "unknown", "{first}");
    let send = |args: &[&str]| {
        let mut argv = vec!["--broker", &url, "send", "test-door"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--wait", "--timeout", "20s", "--json"]);
        common::run_fleet(&argv)
    };
    // The agent's subscription may lag its connection: the first command is retried until answered.
    let ring_arg = format!("ring={}", first["id"].as_str().unwrap());
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let (code, out, err) = loop {
        let (code, out, err) = send(&["face/enroll", "--arg", "name=Barack", "--arg", &ring_arg]);
        if code == 0 || std::time::Instant::now() > end {
            break (code, out, err);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 0, "{out}{err}\nagent log:\n{}", agent.log());
    assert!(out.contains("\"successful\"") && out.contains("\"Barack\""), "{out}");

    let second = ring(&agent, 2);
    assert_eq!((second["result"].as_str(), second["name"].as_str()), (Some("known"), Some("Barack")), "{second}");

    let (code, out, _) = send(&["face/list"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"known\"") && out.contains("\"samples\":1"), "{out}");
    let correct = format!("ring={}", second["id"].as_str().unwrap());
    let (code, out, _) = send(&["face/feedback", "--arg", &correct, "--arg", "correct=true"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = send(&["face/enroll", "--arg", "name=Nobody", "--arg", "jpeg=bm90IGEganBlZw=="]);
    assert_ne!(code, 0);
    assert!(out.contains("\"failed\"") && out.contains("JPEG"), "a non-JPEG is refused with a reason: {out}");
    let (code, out, _) = send(&["face/remove", "--arg", "name=Barack"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(ring(&agent, 3)["result"], "unknown");
    let _ = broker.kill();
    let _ = broker.wait();
}

#[test]
fn faces_cli_enrolls_and_restores_a_backup_on_a_fresh_agent_through_the_local_socket() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let set = common::testset();
    std::fs::copy(set.join("person/obama/2.jpg"), frames.join("a.jpg")).unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir(&old).unwrap();
    std::fs::create_dir(&new).unwrap();
    let agent = Agent::start(&old, &faces_config(&old.join("data"), &files(&frames), ""));
    let faces = |agent: &Agent, args: &[&str]| {
        let mut argv = vec!["-c", agent.config.to_str().unwrap(), "faces"];
        argv.extend_from_slice(args);
        common::run(&argv)
    };
    let photo = set.join("person/obama/1.jpg");
    let (code, out, err) = faces(&agent, &["enroll", "Barack", "--image", photo.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, "enrolled Barack on the known list (1 sample)\n"), "{err}");
    let known = ring(&agent, 1);
    assert_eq!((known["result"].as_str(), known["name"].as_str()), (Some("known"), Some("Barack")), "{known}");
    let (code, out, _) = faces(&agent, &["list"]);
    assert!(code == 0 && out.lines().nth(1).is_some_and(|l| l.starts_with("Barack") && l.contains("known")), "{out}");
    let (code, out, err) = faces(&agent, &["feedback", "1", "right"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accuracy 100 %"), "{out}");
    let noface = set.join("noface/sample5-1.jpg");
    let (code, _, err) = faces(&agent, &["enroll", "Nobody", "--image", noface.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("face/enroll failed") && err.contains("no usable face"), "{err}");

    let backup = dir.path().join("gallery.bin");
    let (code, out, err) = faces(&agent, &["export", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("exported 1 person(s)"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600, "descriptors are personal data");
    let (code, list_before, _) = faces(&agent, &["list", "--json"]);
    assert_eq!(code, 0);
    drop(agent);

    // An SD card replaced: a fresh agent knows nobody until the backup is imported.
    let agent = Agent::start(&new, &faces_config(&new.join("data"), &files(&frames), ""));
    assert_eq!(ring(&agent, 1)["result"], "unknown");
    let bytes = std::fs::read(&backup).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    for (name, damaged) in [("flipped.bin", flipped), ("truncated.bin", bytes[..bytes.len() - 7].to_vec())] {
        let path = dir.path().join(name);
        std::fs::write(&path, damaged).unwrap();
        let (code, _, err) = faces(&agent, &["import", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}");
        assert!(err.contains("face/import failed: not a usable gallery file: damaged"), "{name}: {err}");
    }
    assert_eq!(faces(&agent, &["list"]).1, "nobody is enrolled\n", "a refused file changes nothing");
    let (code, out, err) = faces(&agent, &["import", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("imported {}: 1 added, 0 replaced (exported on test-door)\n", backup.display()));
    assert_eq!(faces(&agent, &["list", "--json"]).1, list_before, "the same people, samples and dates");
    let restored = ring(&agent, 2);
    assert_eq!((restored["result"].as_str(), restored["name"].as_str()), (Some("known"), Some("Barack")), "{restored}");
}
