//! `doorbell-agent doctor`: a readiness report for an installer standing at a device.
//! Each check passes, warns or fails with a one-line recommendation; any fail makes the
//! verdict "not ready" and the exit code non-zero.

use std::ffi::CString;
use std::fmt::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError, GpioBackend};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, but not as it should on a device.
    Warn,
    /// Will not work.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Check name.
    pub name: &'static str,
    /// Outcome.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty on pass).
    pub fix: String,
}

fn finding(name: &'static str, verdict: Verdict, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { name, verdict, detail: detail.into(), fix: fix.into() }
}

/// Where unit files may be installed.
const UNIT_DIRS: &[&str] = &["/etc/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"];

/// Runs every check. `loaded` is the result of loading the config file at `path`.
pub fn run(path: &Path, loaded: Result<Config, ConfigError>) -> Vec<Finding> {
    let mut out = Vec::new();
    let cfg = match loaded {
        Ok(cfg) => {
            let id = cfg.device_id();
            out.push(finding("config", Verdict::Pass, format!("{} is valid (device id {id})", path.display()), ""));
            cfg
        }
        Err(e) => {
            out.push(finding("config", Verdict::Fail, e.to_string(), "fix that key, then run `doorbell-agent check-config`"));
            Config::default()
        }
    };
    out.push(data_dir(&cfg.data_dir));
    out.push(gpio(&cfg));
    out.push(clock());
    out.push(unit());
    out.push(agent(&cfg));
    out.push(control(&cfg));
    out.push(broker(&cfg));
    out.push(camera(&cfg));
    out.push(models(&cfg));
    out
}

fn data_dir(dir: &Path) -> Finding {
    let fix = format!("create it writable for the service user: `install -d -o doorbell -g doorbell {}`", dir.display());
    if let Err(e) = std::fs::create_dir_all(dir) {
        return finding("data_dir", Verdict::Fail, format!("{}: {e}", dir.display()), fix);
    }
    let probe = dir.join(".doctor-write-test");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        std::io::Write::write_all(&mut f, b"ok")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = written {
        let fix = match e.raw_os_error() {
            Some(libc::EROFS) => "the card is read-only (the kernel remounts it so after I/O errors): see `dmesg`, run `fsck` on it at the next boot, and replace it if it happens again".to_string(),
            Some(libc::EIO) => "the card reports I/O errors: see `dmesg`, and replace it".to_string(),
            Some(libc::ENOSPC | libc::EDQUOT) => "free space on the SD card: the agent announces rings from memory meanwhile".to_string(),
            _ => fix,
        };
        return finding("data_dir", Verdict::Fail, format!("{} is not writable: {e}", dir.display()), fix);
    }
    let Some((used, free)) = crate::sampler::disk_usage(dir) else {
        return finding("data_dir", Verdict::Warn, format!("{} is writable; free space unknown", dir.display()), "");
    };
    let mib = free / (1024 * 1024);
    let detail = format!("{} is writable, {mib} MiB free ({used:.0}% used)", dir.display());
    match mib {
        0..50 => finding("data_dir", Verdict::Fail, detail, "free space on the SD card: alerts cannot be stored"),
        50..200 => finding("data_dir", Verdict::Warn, detail, "less than 200 MiB free: the store will prune early"),
        _ => finding("data_dir", Verdict::Pass, detail, ""),
    }
}

fn gpio(cfg: &Config) -> Finding {
    if cfg.gpio.backend == GpioBackend::Simulated {
        return finding(
            "gpio",
            Verdict::Warn,
            "simulated backend: the physical button is not read",
            "set `[gpio] backend = \"rppal\"` on a doorbell",
        );
    }
    let chip = Path::new("/dev/gpiochip0");
    if !chip.exists() {
        return finding(
            "gpio",
            Verdict::Fail,
            "no /dev/gpiochip0",
            "run on a Raspberry Pi with a kernel that has the GPIO character device",
        );
    }
    let Ok(c) = CString::new("/dev/gpiochip0") else {
        return finding("gpio", Verdict::Fail, "bad device path", "");
    };
    // SAFETY: access() only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        return finding(
            "gpio",
            Verdict::Fail,
            "/dev/gpiochip0 is not readable and writable by this user",
            "add the service user to the `gpio` group",
        );
    }
    // Without /dev/gpiomem (Debian's kernels) the agent reads the line through /dev/gpiochip0.
    let path = if crate::gpio::gpiomem_present() { "" } else { " (no /dev/gpiomem: the agent reads the line through /dev/gpiochip0)" };
    finding("gpio", Verdict::Pass, format!("/dev/gpiochip0 accessible, button on BCM {}{path}", cfg.gpio.pin), "")
}

fn clock() -> Finding {
    // SAFETY: adjtimex with modes = 0 only reads the kernel clock state into `tx`.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx.status)
    };
    if doorbell_base::time::now_ms() < 1_704_067_200_000 {
        return finding(
            "clock",
            Verdict::Fail,
            "the clock is before 2024",
            "a Pi has no RTC: enable systemd-timesyncd and give it network",
        );
    }
    if state == libc::TIME_ERROR || status & libc::STA_UNSYNC != 0 {
        return finding(
            "clock",
            Verdict::Warn,
            "not synchronised by NTP",
            "enable systemd-timesyncd (timestamps of rings and alerts depend on it)",
        );
    }
    finding("clock", Verdict::Pass, "synchronised", "")
}

fn unit() -> Finding {
    match UNIT_DIRS.iter().map(|d| Path::new(d).join("doorbell-agent.service")).find(|p| p.exists()) {
        Some(p) => finding("unit", Verdict::Pass, format!("{} installed", p.display()), ""),
        None => finding(
            "unit",
            Verdict::Warn,
            "doorbell-agent.service is not installed",
            "copy systemd/doorbell-agent.service to /etc/systemd/system and `systemctl enable --now doorbell-agent`",
        ),
    }
}

fn agent(cfg: &Config) -> Finding {
    match doorbell_base::client::request(cfg.probe.listen, "GET", "/health", Duration::from_secs(2)) {
        Ok((200, body)) => finding("agent", Verdict::Pass, format!("running, /health: {}", summary(&body)), ""),
        Ok((code, body)) => finding(
            "agent",
            Verdict::Fail,
            format!("running but unhealthy ({code}): {}", summary(&body)),
            "see `doorbell-agent status` and `journalctl -u doorbell-agent`",
        ),
        Err(_) => {
            finding("agent", Verdict::Warn, format!("not answering on {}", cfg.probe.listen), "start it: `systemctl start doorbell-agent`")
        }
    }
}

/// Whether this user can drive the agent through its control socket (`faces`, `update`).
fn control(cfg: &Config) -> Finding {
    let path = cfg.control_socket();
    match crate::local::Client::connect(&path).and_then(|mut c| c.call("ping", serde_json::json!({}), |_| {})) {
        Ok(_) => finding("control", Verdict::Pass, format!("{} answers this user", path.display()), ""),
        Err(crate::local::LocalError::Denied(_)) => finding(
            "control",
            Verdict::Warn,
            format!("{} refuses this user", path.display()),
            "run as root or the agent's user, or join its group: `sudo usermod -aG doorbell $USER`, then log in again",
        ),
        Err(e) => finding("control", Verdict::Warn, e.to_string(), "the `faces` and `update` commands need the running agent"),
    }
}

/// Takes one real frame from the configured source and decodes it as the worker would.
#[cfg(feature = "faces")]
fn camera(cfg: &Config) -> Finding {
    use crate::config::CaptureSource;
    let (source, fix) = match cfg.capture.source {
        CaptureSource::Command => ("command", "check the camera cable and `[capture] command` (try it by hand: it must print one JPEG)"),
        CaptureSource::Http => ("http", "check the camera's snapshot URL `[capture] url` (it must answer with one JPEG)"),
        CaptureSource::Files => ("files", "`[capture] path` must be a directory of JPEG files"),
    };
    let start = std::time::Instant::now();
    let jpeg = match crate::capture::from_config(&cfg.capture).grab(1, 0) {
        Ok(jpeg) => jpeg,
        Err(e) => return finding("camera", Verdict::Fail, e.to_string(), fix),
    };
    let took = start.elapsed().as_millis();
    match crate::vision::image::decode(&jpeg, (cfg.capture.max_megapixels * 1e6) as u64) {
        Ok(frame) => finding(
            "camera",
            Verdict::Pass,
            format!("{}x{} JPEG ({} KiB) from the {source} source in {took} ms", frame.width, frame.height, jpeg.len() / 1024),
            "",
        ),
        Err(e) => finding("camera", Verdict::Fail, format!("the frame is unusable: {e}"), fix),
    }
}

/// Without the `faces` feature no frame is ever taken.
#[cfg(not(feature = "faces"))]
fn camera(_: &Config) -> Finding {
    finding("camera", Verdict::Pass, "not used: face recognition is not built into this binary", "")
}

/// Both face models present and matching their pinned sha256, as the worker demands.
#[cfg(feature = "faces")]
fn models(cfg: &Config) -> Finding {
    let f = &cfg.faces;
    let checks = [("detector", &f.detector_model, &f.detector_sha256), ("embedder", &f.embedder_model, &f.embedder_sha256)];
    let mut sizes = Vec::new();
    for (what, path, sha256) in checks {
        match crate::vision::model::verified(what, path, sha256) {
            Ok(bytes) => sizes.push(format!("{what} {:.1} MiB", bytes.len() as f64 / 1048576.0)),
            Err(e) => {
                return finding(
                    "models",
                    Verdict::Fail,
                    e.to_string(),
                    "reinstall the models (install.sh or the .deb ship them; `scripts/fetch-models.sh --install /usr/local/share/doorbell-agent/models` from a checkout)",
                );
            }
        }
    }
    finding("models", Verdict::Pass, format!("verified: {}", sizes.join(", ")), "")
}

/// Without the `faces` feature no model is loaded.
#[cfg(not(feature = "faces"))]
fn models(_: &Config) -> Finding {
    finding("models", Verdict::Pass, "not used: face recognition is not built into this binary", "")
}

fn summary(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from))
        .unwrap_or_else(|| body.chars().take(80).collect())
}

fn broker(cfg: &Config) -> Finding {
    let Some(mqtt) = &cfg.mqtt else {
        return finding(
            "broker",
            Verdict::Warn,
            "no [mqtt] section: the device reports to no fleet",
            "add `[mqtt] url = \"mqtts://broker:8883\"`",
        );
    };
    let Ok((host, port)) = mqtt.host_port() else {
        return finding("broker", Verdict::Fail, format!("bad url {}", mqtt.url), "");
    };
    let addrs: Vec<_> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return finding("broker", Verdict::Fail, format!("cannot resolve {host}: {e}"), "check DNS and the broker name"),
    };
    let reachable = addrs.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok());
    if reachable {
        finding("broker", Verdict::Pass, format!("{host}:{port} accepts TCP connections"), "")
    } else {
        finding("broker", Verdict::Fail, format!("{host}:{port} does not accept connections"), "check the network, firewall and broker")
    }
}

/// Renders the report and returns it with the overall verdict.
pub fn render(findings: &[Finding]) -> (String, Verdict) {
    let mut out = String::new();
    for f in findings {
        let tag = match f.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        let _ = writeln!(out, "{tag}  {:<9} {}", f.name, f.detail);
        if !f.fix.is_empty() && f.verdict != Verdict::Pass {
            let _ = writeln!(out, "      {:<9} → {}", "", f.fix);
        }
    }
    let fails = findings.iter().filter(|f| f.verdict == Verdict::Fail).count();
    let warns = findings.iter().filter(|f| f.verdict == Verdict::Warn).count();
    let overall = if fails > 0 {
        Verdict::Fail
    } else if warns > 0 {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let verdict = match overall {
        Verdict::Fail => "NOT READY",
        Verdict::Warn => "READY with warnings",
        Verdict::Pass => "READY",
    };
    let _ = writeln!(out, "\nverdict: {verdict} ({fails} fail, {warns} warn)");
    (out, overall)
}
