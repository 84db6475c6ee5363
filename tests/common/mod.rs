//! Test harness: runs the real `doorbell-agent` binary with a config in a temp dir and
//! talks to it over real HTTP. The probe listens on port 0; the harness reads the bound
//! address from the agent's "ready" log line, so tests never race for ports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod mqtt;

pub const BIN: &str = env!("CARGO_BIN_EXE_doorbell-agent");

/// The `doorbell-slotctl` binary of this build (see [`workspace_bin`]).
pub fn slotctl_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| workspace_bin("doorbell-slotctl", "doorbell-slotctl")).clone()
}

/// The operator's `doorbell-fleet` binary (see [`workspace_bin`]).
pub fn fleet_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| workspace_bin("doorbell-fleet", "doorbell-fleet")).clone()
}

/// Builds binary `bin` of the workspace's `package` with this test build's profile and
/// features into the same target directory, and returns its path: cargo hands a test only
/// its own package's binaries, and slotctl and the fleet tool are crates of their own.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let profile_dir = Path::new(BIN).parent().expect("target/PROFILE");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--quiet", "--locked", "--package", package, "--bin", bin, "--target-dir"])
        .arg(profile_dir.parent().expect("target dir"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    if cfg!(feature = "fault-injection") && package == "doorbell-slotctl" {
        cargo.args(["--features", "fault-injection"]);
    }
    assert!(cargo.status().expect("run cargo").success(), "cargo could not build {bin}");
    profile_dir.join(bin)
}

/// A config for tests: simulated button with no debounce or rate limit, fast sampling, the
/// fetched face models, and (unless `extra` has its own `[capture]`) a camera that only ever
/// sees empty scenes, so rings are `no_face`.
pub fn config(data_dir: &Path, extra: &str) -> String {
    let faces = faces_config();
    let camera = if extra.contains("[capture]") {
        String::new()
    } else {
        format!("[capture]\nsource = \"files\"\npath = \"{}\"\nframes = 1\n", testset().join("noface").display())
    };
    format!(
        r#"device_id = "test-door"
data_dir = "{}"

[gpio]
backend = "simulated"
debounce = "0s"
burst = 10000
rings_per_minute = 600000

[probe]
listen = "127.0.0.1:0"

[sampler]
interval = "200ms"

[faces]
detector_model = "{}"
embedder_model = "{}"

{camera}
{extra}
"#,
        data_dir.display(),
        faces.detector_model.display(),
        faces.embedder_model.display()
    )
}

/// A running agent process.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread that reads stderr into `lines`; it ends when the pipe closes.
    reader: std::thread::JoinHandle<()>,
}

impl Agent {
    /// Writes `config_text` next to the data and starts `doorbell-agent run`, waiting for ready.
    pub fn start(dir: &Path, config_text: &str) -> Agent {
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text).unwrap();
        Agent::start_with(&config)
    }

    /// Starts the agent on an existing config file and waits until it is ready.
    pub fn start_with(config: &Path) -> Agent {
        Agent::start_in(config, &[])
    }

    /// Starts the agent through `prefix` (a command that ends by exec'ing its arguments, so
    /// that the child is the agent itself) and waits until it is ready.
    pub fn start_in(config: &Path, prefix: &[&str]) -> Agent {
        let (program, args) = match prefix.split_first() {
            Some((program, args)) => (*program, [args, &[BIN]].concat()),
            None => (BIN, Vec::new()),
        };
        let mut child = Command::new(program)
            .args(args)
            .args(["-c", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn doorbell-agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut agent = Agent { child, addr: "127.0.0.1:1".parse().unwrap(), config: config.to_path_buf(), lines, reader };
        let ready = agent
            .wait_log(|l| l.contains(" ready in "), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("agent did not become ready; log:\n{}", agent.log()));
        let addr = ready.rsplit("probe http://").next().unwrap().trim();
        agent.addr = addr.parse().unwrap_or_else(|_| panic!("no probe address in {ready:?}"));
        agent
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a log line matching `pred`.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits for a log line matching `pred` at index `from` or later; returns its index.
    /// Waits until the fleet link reports itself up (the broker confirmed the command
    /// subscription: commands published from here on reach the agent).
    pub fn wait_link_up(&self, timeout: Duration) -> bool {
        self.wait_log(|l| l.contains("fleet link to") && l.contains(" up"), timeout).is_some()
    }

    pub fn wait_log_after(&self, from: usize, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<usize> {
        let end = Instant::now() + timeout;
        let mut next = from;
        while Instant::now() < end {
            let lines = self.lines.lock().unwrap();
            if let Some(i) = lines[next.min(lines.len())..].iter().position(|l| pred(l)) {
                return Some(next + i);
            }
            next = lines.len();
            drop(lines);
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Presses the simulated button until ring `to` is stored, never running more than two
    /// rings ahead of the store (presses beyond the pipeline's queue are dropped as `busy`).
    pub fn ring_until(&self, to: u64) {
        let mut seq = self.log_lines().iter().rev().find_map(|l| stored_ring(l)).unwrap_or(0);
        let mut at = 0;
        while seq < to {
            let batch = (to - seq).min(2);
            for _ in 0..batch {
                assert_eq!(self.post("/simulate/press").0, 202);
            }
            seq += batch;
            at = self.wait_log_after(at, |l| stored_ring(l) == Some(seq), Duration::from_secs(10)).unwrap_or_else(|| {
                panic!(
                    "ring {seq} not stored; log tail:\n{}",
                    self.log_lines().iter().rev().take(20).cloned().collect::<Vec<_>>().join("\n")
                )
            });
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        doorbell_base::client::request(self.addr, "GET", path, Duration::from_secs(5)).expect("GET")
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        doorbell_base::client::request(self.addr, "POST", path, Duration::from_secs(5)).expect("POST")
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert!(code == 200 || code == 503, "{path}: {code} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Value of one Prometheus series (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' '))).map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Sends `signal` and waits for the exit, returning the status and how long it took.
    pub fn signal(&mut self, signal: i32) -> (ExitStatus, Duration) {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("agent did not exit within 10 s of signal {signal}"));
        (status, t.elapsed())
    }

    /// Waits up to `timeout` for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last lines may still be in the pipe: read them all before anyone looks
                // (the pipe closes once its worker, which shares it, has exited too).
                wait_until(Duration::from_secs(5), || self.reader.is_finished());
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held. For waiting on
/// an outcome instead of sleeping a fixed time and hoping it came.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sequence number of a `ring N stored: ...` log line.
pub fn stored_ring(line: &str) -> Option<u64> {
    let (n, rest) = line.split_once("] ring ")?.1.split_once(' ')?;
    rest.starts_with("stored:").then(|| n.parse().ok()).flatten()
}

/// Runs the binary to completion with arguments; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_remove("NOTIFY_SOCKET").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A camera that has no frames: every ring is decided at once as `error`. For tests of
/// everything but recognition that need thousands of rings quickly.
pub const NO_CAMERA: &str = "[capture]\nsource = \"files\"\npath = \"/nonexistent/camera\"\n";

/// Directory of the converted models and labelled photos (`scripts/fetch-models.sh`).
pub fn models_dir() -> PathBuf {
    std::env::var_os("DOORBELL_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/doorbell-agent/models-v1"))
}

/// The labelled test photos.
pub fn testset() -> PathBuf {
    models_dir().join("testset")
}

/// Face settings pointing at the fetched models.
pub fn faces_config() -> doorbell_agent::config::FacesConfig {
    let dir = models_dir();
    doorbell_agent::config::FacesConfig {
        detector_model: dir.join("face_detection_short_range.onnx"),
        embedder_model: dir.join("dlib_face_recognition_resnet_v1.onnx"),
        ..Default::default()
    }
}

/// The JPEGs of a directory, in name order.
pub fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "jpg")).collect();
    files.sort();
    files
}

/// Runs `doorbell-fleet --broker ... ARGS`; (exit code, stdout, stderr).
pub fn fleet(port: u16, args: &[&str]) -> (i32, String, String) {
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut all = vec!["--broker", &url];
    all.extend_from_slice(args);
    run_fleet(&all)
}

/// Runs `doorbell-fleet ARGS` to completion; (exit code, stdout, stderr).
pub fn run_fleet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(fleet_bin()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `binary` compressed with the `zstd` tool (as `scripts/sign-release.sh` does), for artifacts.
pub fn zstd(binary: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut child = Command::new("zstd")
        .args(["-3", "-q", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd (scripts/test-deps.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = binary.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    out
}

/// A fleet signing key made by `doorbell-fleet keygen` in `dir`: its file and the
/// public key (base64) for `mqtt.command_key`.
pub fn fleet_keygen(dir: &Path) -> (PathBuf, String) {
    let key_file = dir.join("fleet.key");
    let (code, out, err) = run_fleet(&["keygen", key_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let public = out.lines().find_map(|l| l.strip_prefix("command_key = ")).unwrap().trim_matches('"').to_string();
    (key_file, public)
}
