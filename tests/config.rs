//! Every configuration error path of the real binary: exit 78 with the file, key and reason.

mod common;

fn check(dir: &std::path::Path, text: &str) -> (i32, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = common::run(&["-c", path.to_str().unwrap(), "check-config"]);
    (code, err)
}

#[test]
fn each_bad_config_exits_78_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("unknown top-level key", "colour = \"red\"", "`colour`"),
        ("unknown nested key", "[gpio]\npinn = 4", "`gpio.pinn`"),
        ("unknown section", "[camera]\nx = 1", "`camera`"),
        ("wrong type", "[gpio]\npin = \"seventeen\"", "`gpio.pin`"),
        ("pin out of range", "[gpio]\npin = 28", "`gpio.pin`"),
        ("negative pin", "[gpio]\npin = -1", "`gpio.pin`"),
        ("unknown backend", "[gpio]\nbackend = \"wiringpi\"", "`gpio.backend`"),
        ("bad duration", "[sampler]\ninterval = \"soon\"", "`sampler.interval`"),
        ("duration out of range", "[sampler]\ninterval = \"1ms\"", "`sampler.interval`"),
        ("bad listen address", "[probe]\nlisten = \"localhost\"", "`probe.listen`"),
        ("bad device id", "device_id = \"door/1\"", "`device_id`"),
        ("bad broker url", "[mqtt]\nurl = \"http://broker\"", "`mqtt.url`"),
        ("files capture without path", "[capture]\nsource = \"files\"", "`capture.path`"),
        (
            "rule on unknown metric",
            "[[alerts.rule]]\nname = \"x\"\nmetric = \"mood\"\nthreshold = 1.0\nseverity = \"major\"",
            "`alerts.rule[0].metric`",
        ),
        (
            "trend rule without window",
            "[[alerts.rule]]\nname = \"x\"\nmetric = \"agent_rss_mib\"\nkind = \"trend\"\ngrowth_percent = 10.0\nseverity = \"minor\"",
            "`alerts.rule[0].window`",
        ),
        (
            "hysteresis on the wrong side",
            "[[alerts.rule]]\nname = \"x\"\nmetric = \"cpu_percent\"\nthreshold = 80.0\nclear_threshold = 90.0\nseverity = \"minor\"",
            "`alerts.rule[0].clear_threshold`",
        ),
        ("store too small", "[store]\nmax_rings = 1", "`store.max_rings`"),
        ("store cache below 64 KiB", "[store]\ncache_mib = 0.01", "`store.cache_mib`"),
        ("store cache not a number", "[store]\ncache_mib = nan", "`store.cache_mib`"),
        ("http capture without url", "[capture]\nsource = \"http\"", "`capture.url`"),
        ("https capture url", "[capture]\nsource = \"http\"\nurl = \"https://cam/snap.jpg\"", "`capture.url`"),
        ("empty camera command", "[capture]\ncommand = []", "`capture.command`"),
        ("burst too long", "[capture]\nframes = 50", "`capture.frames`"),
        ("capture timeout too short", "[capture]\ntimeout = \"1ms\"", "`capture.timeout`"),
        ("model hash not hex", "[faces]\nembedder_sha256 = \"abc\"", "`faces.embedder_sha256`"),
        ("threshold above 1", "[faces]\nmatch_threshold = 1.5", "`faces.match_threshold`"),
        ("unknown faces key", "[faces]\nthreshold = 0.5", "`faces.threshold`"),
        ("ring deadline too short", "[pipeline]\nring_deadline = \"10ms\"", "`pipeline.ring_deadline`"),
        ("idle exit below a second", "[pipeline]\nidle_exit = \"10ms\"", "`pipeline.idle_exit`"),
        (
            "backoff max below backoff",
            "[pipeline]\nrestart_backoff = \"10s\"\nrestart_backoff_max = \"1s\"",
            "`pipeline.restart_backoff_max`",
        ),
        ("snapshots unbounded", "[snapshots]\nmax_rings = 0", "`snapshots.max_rings`"),
        ("update key not hex", "[update]\npublic_key = \"xyz\"", "`update.public_key`"),
        (
            "update key not a point",
            "[update]\npublic_key = \"0200000000000000000000000000000000000000000000000000000000000000\"",
            "`update.public_key`",
        ),
        ("update tries zero", "[update]\ntries = 0", "`update.tries`"),
        ("update tries above the start limit", "[update]\ntries = 6", "`update.tries`"),
        ("update deadline shorter than soak", "[update]\nsoak = \"5m\"\ndeadline = \"2m\"", "`update.deadline`"),
        ("update max size zero", "[update]\nmax_size_mib = 0", "`update.max_size_mib`"),
        ("update unknown key", "[update]\nchannel = \"beta\"", "`update.channel`"),
        ("not TOML at all", "this is = = not toml", "bad.toml"),
    ];
    for (what, text, key) in cases {
        let (code, err) = check(dir.path(), text);
        assert_eq!(code, 78, "{what}: exit {code}, stderr {err}");
        assert!(err.contains("bad.toml"), "{what}: file not named in {err}");
        assert!(err.contains(key), "{what}: {key} not named in {err}");
    }
}

#[test]
fn run_with_bad_config_exits_78_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[gpio]\npin = 99").unwrap();
    let (code, _, err) = common::run(&["-c", path.to_str().unwrap(), "run"]);
    assert_eq!(code, 78);
    assert!(err.contains("gpio.pin") && err.contains("0..=27"), "{err}");
}

/// A file that is not a configuration (a log, a disk image named by mistake, /dev/zero) is
/// refused by its size or kind before it is read into memory.
#[test]
fn huge_or_special_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(&path, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let (code, _, err) = common::run(&["-c", path.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 78);
    assert!(err.contains("huge.toml") && err.contains("more than the 1048576 allowed"), "{err}");
    let (code, _, err) = common::run(&["-c", "/dev/zero", "check-config"]);
    assert_eq!(code, 78);
    assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{err}");
}

#[test]
fn missing_file_exits_78() {
    let (code, _, err) = common::run(&["-c", "/nonexistent/doorbell.toml", "check-config"]);
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent/doorbell.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn valid_config_prints_effective_settings() {
    let (code, out, err) = common::run(&["-c", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.toml"), "check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
    assert!(out.contains("backend = \"simulated\""), "{out}");
    assert!(out.contains("interval = \"1s\""), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = common::run(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = common::run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("doorbell-agent "));
}

#[test]
fn doctor_reports_each_check_and_fails_without_gpio() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, common::config(&dir.path().join("data"), "")).unwrap();
    let (code, out, _) = common::run(&["-c", ok.to_str().unwrap(), "doctor"]);
    for check in ["config", "data_dir", "gpio", "clock", "unit", "agent", "control", "broker", "camera", "models"] {
        assert!(out.contains(check), "{check} missing from:\n{out}");
    }
    assert_eq!(code, 0, "simulated backend only warns:\n{out}");
    assert!(out.contains("verdict: READY"), "{out}");
    // A real frame was taken and decoded, the real models were checked.
    assert!(out.contains("PASS  camera") && out.contains(" JPEG (") && out.contains("from the files source"), "{out}");
    assert!(out.contains("PASS  models    verified: detector"), "{out}");
    assert!(out.contains("WARN  control   no agent is running"), "{out}");

    // A camera command that fails and a model that is not the pinned one.
    let broken = dir.path().join("broken.toml");
    let text = common::config(
        &dir.path().join("data"),
        "[capture]\nsource = \"command\"\ncommand = [\"sh\", \"-c\", \"echo no camera >&2; exit 3\"]\n",
    )
    .replace("[faces]\n", &format!("[faces]\ndetector_sha256 = \"{}\"\n", "0".repeat(64)));
    std::fs::write(&broken, text).unwrap();
    let (code, out, _) = common::run(&["-c", broken.to_str().unwrap(), "doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  camera") && out.contains("no camera"), "the camera's own words are shown:\n{out}");
    assert!(out.contains("FAIL  models") && out.contains("detector model") && out.contains("expected 0000"), "{out}");

    // With the agent running, this user reaches it through the control socket.
    let agent = common::Agent::start(dir.path(), &common::config(&dir.path().join("data"), ""));
    let (_, out, _) = common::run(&["-c", agent.config.to_str().unwrap(), "doctor"]);
    assert!(out.contains("PASS  control") && out.contains("answers this user"), "{out}");

    let rppal = dir.path().join("rppal.toml");
    std::fs::write(&rppal, common::config(&dir.path().join("data"), "").replace("\"simulated\"", "\"rppal\"")).unwrap();
    let (code, out, _) = common::run(&["-c", rppal.to_str().unwrap(), "doctor"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  gpio") && out.contains("verdict: NOT READY"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[gpio]\npin = 99").unwrap();
    let (code, out, _) = common::run(&["-c", bad.to_str().unwrap(), "doctor"]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  config"), "{out}");
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly_not_with_an_abort() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(common::BIN)
        .args(["-c", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dev.toml"), "check-config"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Like `doorbell-agent check-config | head -0`: the reader is gone before the first write.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} (SIGABRT would be a panic on the write)");
}
