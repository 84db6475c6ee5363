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

/// The configuration reference, docs/configuration.md, is the real configuration (issue 17):
/// every ```toml block on the page parses, and its commented reference matches
/// `Config::default()` key by key.
///
/// The reference's convention, which this test reads it by:
/// - `key = value` (not commented out) shows the key's default: it must equal the default.
/// - `# key = value` is a key that is absent by default (an `Option`), or whose default the
///   comment names ("default: …", on the line or on the comment lines right after a run of such
///   keys: the models' paths and hashes).
/// - `# [table]` / `# [[table]]` is a section absent by default. In `# [mqtt]` a key shows the
///   section's default (`MqttConfig::default()`) where it has one; the `[[alerts.rule]]` keys
///   are an example rule.
/// - `# a / b = value` documents two keys at once.
///
/// Every key of the configuration, `Option`s and the two absent sections included, must be
/// on the page, commented or not. Values are compared as JSON of the parsed configuration
/// (serde_json keeps `None` as `null`, so optional keys are part of the key set; durations
/// compare as what they parse to: "60s" and "1m" are the same).
#[test]
fn the_documented_configuration_is_the_real_one() {
    use doorbell_agent::config::{Config, MqttConfig};
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::path::Path;

    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();

    // The ```toml blocks, with the line of their opening fence.
    let mut blocks: Vec<(usize, String)> = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match open.take() {
            None if line.trim_end() == "```toml" => open = Some((i + 1, String::new())),
            None => {}
            Some(block) if line.trim_end() == "```" => blocks.push(block),
            Some((at, mut text)) => {
                text.push_str(line);
                text.push('\n');
                open = Some((at, text));
            }
        }
    }
    assert!(open.is_none(), "{doc_path}: a ```toml block is not closed");
    assert!(!blocks.is_empty(), "{doc_path}: no ```toml block");

    // (a) Every block, as written, is a valid configuration.
    for (at, text) in &blocks {
        if let Err(e) = Config::parse(Path::new(doc_path), text) {
            panic!("{doc_path}: the ```toml block at line {at} is not a valid configuration: {e}");
        }
    }

    /// `# key = value` or `# a / b = value`: the keys and `= value…`.
    fn commented_key(line: &str) -> Option<(Vec<String>, &str)> {
        let (keys, value) = line.strip_prefix("# ")?.split_once('=')?;
        let keys: Vec<String> = keys.split('/').map(|k| k.trim().to_string()).collect();
        let key_like = |k: &String| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        (keys.iter().all(key_like) && !value.trim().is_empty()).then_some((keys, value))
    }
    /// `[table]` / `[[table]]` (after an optional `# `): the table's dotted name.
    fn header(line: &str) -> Option<String> {
        let line = line.trim_start();
        let name = line.strip_prefix("[[").and_then(|r| r.split_once("]]")).or_else(|| line.strip_prefix('[')?.split_once(']'))?.0;
        Some(name.trim().to_string())
    }
    let path = |table: &str, key: &str| if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };

    // (b) The reference: the one block with commented-out keys.
    let references: Vec<&(usize, String)> = blocks.iter().filter(|(_, t)| t.lines().any(|l| commented_key(l).is_some())).collect();
    assert_eq!(references.len(), 1, "{doc_path}: expected one commented reference block, found {}", references.len());
    let (at, reference) = references[0];

    let mut uncommented = String::new(); // the reference with every commented key and section put back
    let mut documented = BTreeSet::new(); // every key on the page, commented or not
    let mut shown = Vec::new(); // keys not commented out: (path, line)
    let mut commented = Vec::new(); // keys commented out in a section that is there: (path, line, explained)
    let mut mqtt_keys = Vec::new(); // keys of `# [mqtt]`
    let (mut table, mut table_commented) = (String::new(), false);
    let mut run: Vec<usize> = Vec::new(); // indexes into `commented` of the current run of commented keys
    for (i, line) in reference.lines().enumerate() {
        let line_no = at + 1 + i;
        let trimmed = line.trim_start();
        if let Some(name) = header(line) {
            (table, table_commented) = (name, false);
            run.clear();
            uncommented.push_str(line);
        } else if let Some(name) = line.strip_prefix("# ").and_then(header) {
            (table, table_commented) = (name, true);
            run.clear();
            uncommented.push_str(&line[2..]);
        } else if let Some((keys, value)) = commented_key(line) {
            let explained = value.contains("default:");
            for key in keys {
                let p = path(&table, &key);
                documented.insert(p.clone());
                if table_commented {
                    if table == "mqtt" {
                        mqtt_keys.push((key.clone(), line_no));
                    }
                } else {
                    run.push(commented.len());
                    commented.push((p, line_no, explained));
                }
                uncommented.push_str(&format!("{key} ={value}\n"));
            }
            continue;
        } else if trimmed.starts_with('#') || trimmed.is_empty() {
            // A comment line of its own: a "default: …" on it explains the run of keys above.
            if trimmed.contains("default:") {
                for &k in &run {
                    commented[k].2 = true;
                }
            } else {
                run.clear();
            }
            uncommented.push_str(line);
        } else {
            let (key, _) = line.split_once('=').unwrap_or_else(|| panic!("{doc_path}:{line_no}: not `key = value`: {line}"));
            let p = path(&table, key.trim());
            assert!(!table_commented, "{doc_path}:{line_no}: `{p}` is not commented out in a commented-out section");
            documented.insert(p.clone());
            shown.push((p, line_no));
            run.clear();
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }

    // Every commented key is a real key with a value of the right type (serde only: the
    // examples, such as `public_key = "base64"`, need not pass validation).
    let full: Config = toml::from_str(&uncommented)
        .unwrap_or_else(|e| panic!("{doc_path}: the reference (block at line {at}) with its keys uncommented is not a configuration: {e}"));

    fn json<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }
    let default = json(&Config::default());
    let written = json(&Config::parse(Path::new(doc_path), reference).unwrap());
    let at_path = |v: &Value, p: &str| -> Option<Value> {
        p.split('.').try_fold(v.clone(), |v, k| match v {
            Value::Array(a) => a.first().and_then(|v| v.get(k)).cloned(),
            v => v.get(k).cloned(),
        })
    };
    let mut wrong = Vec::new();

    // Keys shown uncommented are the defaults.
    for (p, line) in &shown {
        let (doc_value, default_value) = (at_path(&written, p), at_path(&default, p));
        if doc_value != default_value || doc_value.is_none() {
            wrong.push(format!("line {line}: `{p}` shows {doc_value:?}, the default is {default_value:?}"));
        }
    }
    // Keys commented out where their section is there: absent by default, or explained.
    for (p, line, explained) in &commented {
        let default_value = at_path(&default, p);
        if !explained && default_value != Some(Value::Null) {
            wrong.push(format!(
                "line {line}: `{p}` is commented out but has the default {default_value:?}: show it uncommented, or say \"default: …\""
            ));
        }
    }
    // `# [mqtt]`: a key shows the section's default where it has one.
    let mqtt_default = json(&MqttConfig::default());
    let mqtt_doc = json(full.mqtt.as_ref().expect("the reference documents [mqtt]"));
    for (key, line) in &mqtt_keys {
        let default_value = mqtt_default.get(key).cloned();
        // No default to show: an `Option` (client_id, …) or the required url.
        let none = matches!(&default_value, Some(Value::Null)) || default_value == Some(Value::String(String::new()));
        if !none && mqtt_doc.get(key).cloned() != default_value {
            wrong.push(format!("line {line}: `mqtt.{key}` shows {:?}, the default is {default_value:?}", mqtt_doc.get(key)));
        }
    }
    // Every key of the configuration is on the page: the defaults, with the absent sections
    // filled in (an `[mqtt]` of defaults, the reference's example rule).
    let mut every = Config { mqtt: Some(MqttConfig::default()), ..Config::default() };
    every.alerts.rule = full.alerts.rule.clone();
    assert!(!every.alerts.rule.is_empty(), "{doc_path}: the reference shows no [[alerts.rule]]");
    let mut keys = BTreeSet::new();
    fn leaves(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    leaves(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
                }
            }
            Value::Array(items) if items.first().is_some_and(Value::is_object) => leaves(prefix, &items[0], out),
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }
    leaves("", &json(&every), &mut keys);
    for key in keys.difference(&documented) {
        wrong.push(format!("`{key}` is a key of the configuration that the reference does not list"));
    }
    assert!(wrong.is_empty(), "{doc_path} (reference block at line {at}) disagrees with the code:\n{}", wrong.join("\n"));
}
