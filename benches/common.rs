//! Shared by the benches: runs the real release `doorbell-agent` binary (simulated button,
//! data in a temp dir, probe on a free port) and follows its log.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running agent whose log lines arrive on `lines`.
pub struct Agent {
    child: Child,
    /// The probe address.
    pub addr: SocketAddr,
    /// Log lines as they are written.
    pub lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `extra` appended to a bench config and waits for READY.
    pub fn start(extra: &str) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        let text = format!(
            "device_id = \"bench\"\ndata_dir = \"{}\"\n[gpio]\nbackend = \"simulated\"\ndebounce = \"0s\"\nburst = 10000\nrings_per_minute = 600000\n[alerts]\nbuiltin = false\n{extra}\n",
            dir.path().join("data").display()
        );
        let text = if text.contains("[probe]") { text } else { format!("{text}[probe]\nlisten = \"127.0.0.1:0\"\n") };
        std::fs::write(&config, text).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorbell-agent"))
            .args(["-c", config.to_str().expect("utf-8 path"), "run"])
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start doorbell-agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = loop {
            let line = lines.recv_timeout(Duration::from_secs(10)).expect("agent ready line");
            if line.contains(" ready in ") {
                break line;
            }
        };
        let addr = ready.rsplit("probe http://").next().and_then(|a| a.trim().parse().ok()).expect("probe address in ready line");
        Agent { child, addr, lines, _dir: dir }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The q-quantile (0..1) of a set of durations.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// Prints p50/p99/max of `samples` under `name`.
pub fn report(name: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return;
    }
    let (p50, p99) = (quantile(samples, 0.5), quantile(samples, 0.99));
    let max = samples.iter().max().copied().unwrap_or_default();
    println!("{name}: n={} p50={p50:.2?} p99={p99:.2?} max={max:.2?}", samples.len());
}
