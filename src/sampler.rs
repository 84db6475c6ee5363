//! Resource sampler: device CPU, memory, disk, load, temperature and Pi throttling flags,
//! plus the agent's own RSS, threads and file descriptors (its self-check).
//!
//! sysinfo is refreshed only for what is read (CPU usage, memory, sensors); the agent's own
//! figures come straight from /proc/self, which is cheaper than a sysinfo process refresh.
//! Recent samples are kept in a bounded ring buffer published on a watch channel.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sysinfo::System;
use tokio::sync::{mpsc, watch};

use crate::alerts::Input as AlertInput;
use crate::config::{Config, SamplerConfig};
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Raspberry Pi firmware throttling state (`get_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Throttling {
    /// Raw bit field.
    pub raw: u32,
    /// Supply voltage below 4.63 V now.
    pub under_voltage: bool,
    /// ARM frequency capped now.
    pub freq_capped: bool,
    /// Throttled now.
    pub throttled: bool,
    /// Soft temperature limit active now.
    pub soft_temp_limit: bool,
    /// Under-voltage has happened since boot.
    pub under_voltage_occurred: bool,
    /// Throttling has happened since boot.
    pub throttled_occurred: bool,
}

impl Throttling {
    /// Decodes the firmware bit field.
    pub fn from_raw(raw: u32) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Throttling {
            raw,
            under_voltage: bit(0),
            freq_capped: bit(1),
            throttled: bit(2),
            soft_temp_limit: bit(3),
            under_voltage_occurred: bit(16),
            throttled_occurred: bit(18),
        }
    }
}

/// One resource sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Taken at, Unix ms.
    pub ts_ms: u64,
    /// Whole-device CPU usage.
    pub cpu_percent: f32,
    /// Memory in use.
    pub memory_used_bytes: u64,
    /// Memory available to new work.
    pub memory_available_bytes: u64,
    /// Installed memory.
    pub memory_total_bytes: u64,
    /// Used share of memory.
    pub memory_percent: f32,
    /// Used share of the data directory's filesystem.
    pub disk_used_percent: f32,
    /// Free space of the data directory's filesystem for unprivileged writers.
    pub disk_free_bytes: u64,
    /// 1, 5, 15-minute load averages.
    pub load: [f64; 3],
    /// SoC temperature.
    pub temperature_c: Option<f32>,
    /// Pi firmware flags, when the firmware file exists.
    pub throttling: Option<Throttling>,
    /// The agent's resident memory.
    pub agent_rss_bytes: u64,
    /// The agent's threads.
    pub agent_threads: u64,
    /// The agent's open file descriptors.
    pub agent_fds: u64,
}

impl Sample {
    /// The readings the alert rules look at.
    pub fn readings(&self) -> Vec<(&'static str, f64)> {
        let mut r = vec![
            ("cpu_percent", f64::from(self.cpu_percent)),
            ("memory_percent", f64::from(self.memory_percent)),
            ("disk_percent", f64::from(self.disk_used_percent)),
            ("load1", self.load[0]),
            ("agent_rss_mib", self.agent_rss_bytes as f64 / (1024.0 * 1024.0)),
            ("agent_threads", self.agent_threads as f64),
            ("agent_fds", self.agent_fds as f64),
        ];
        if let Some(t) = self.temperature_c {
            r.push(("temperature_c", f64::from(t)));
        }
        if let Some(t) = self.throttling {
            r.push(("under_voltage", f64::from(u8::from(t.under_voltage))));
            r.push(("throttled", f64::from(u8::from(t.throttled))));
        }
        r
    }
}

/// Owns the sysinfo handles between samples.
pub struct Sampler {
    system: System,
    cfg: SamplerConfig,
    data_dir: PathBuf,
}

impl Sampler {
    /// A sampler; primes CPU usage so the first sample one interval later is meaningful.
    pub fn new(cfg: &SamplerConfig, data_dir: &Path) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Sampler { system, cfg: cfg.clone(), data_dir: data_dir.to_path_buf() }
    }

    /// Takes one sample (blocking file reads; call off the async workers).
    pub fn sample(&mut self) -> Sample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        let used = total.saturating_sub(available);
        let (disk_used_percent, disk_free_bytes) = disk_usage(&self.data_dir).unwrap_or((0.0, 0));
        let load = System::load_average();
        let (rss, threads) = own_status().unwrap_or((0, 0));
        Sample {
            ts_ms: doorbell_base::time::now_ms(),
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: used,
            memory_available_bytes: available,
            memory_total_bytes: total,
            memory_percent: if total > 0 { used as f32 / total as f32 * 100.0 } else { 0.0 },
            disk_used_percent,
            disk_free_bytes,
            load: [load.one, load.five, load.fifteen],
            temperature_c: self.temperature(),
            throttling: read_trimmed(&self.cfg.throttled_path).and_then(|s| {
                let hex = s.trim_start_matches("throttled=").trim_start_matches("0x");
                u32::from_str_radix(hex, 16).ok().map(Throttling::from_raw)
            }),
            agent_rss_bytes: rss,
            agent_threads: threads,
            agent_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64),
        }
    }

    /// The SoC's thermal zone (on a Pi, zone 0 is the CPU/GPU die): read directly rather
    /// than through sysinfo's hwmon scan, which a Pi does not need and the binary pays for.
    fn temperature(&self) -> Option<f32> {
        read_trimmed(&self.cfg.thermal_path).and_then(|s| s.parse::<f32>().ok()).map(|milli| milli / 1000.0).filter(|t| t.is_finite())
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Resident memory of this process (bytes), read fresh (the canary compares it).
pub fn own_rss() -> Option<u64> {
    own_status().map(|(rss, _)| rss)
}

/// VmRSS (bytes) and Threads of this process.
fn own_status() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")? * 1024, field("Threads:")?))
}

/// df-style used percent and bytes free to unprivileged users.
pub fn disk_usage(path: &Path) -> Option<(f32, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct we pass; `c` is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    let frsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64);
    let usable = used + st.f_bavail as u64;
    let percent = if usable > 0 { used as f32 / usable as f32 * 100.0 } else { 0.0 };
    Some((percent, st.f_bavail as u64 * frsize))
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Samples every `sampler.interval` (followed live from `config`) until shutdown.
pub async fn run(
    mut sampler: Sampler,
    history: watch::Sender<VecDeque<Sample>>,
    alerts: mpsc::Sender<AlertInput>,
    metrics: Arc<Metrics>,
    health: Board,
    mut config: watch::Receiver<Config>,
    mut shutdown: Shutdown,
) {
    let mut interval = sampler.cfg.interval;
    let keep = sampler.cfg.history;
    let mut ticks = ticker(interval);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            Ok(()) = config.changed() => {
                let new = config.borrow_and_update().sampler.interval;
                if new != interval {
                    log::info!("sampling every {} from now on", humantime::format_duration(new));
                    (interval, sampler.cfg.interval, ticks) = (new, new, ticker(new));
                }
                continue;
            }
            _ = ticks.tick() => {}
        }
        let Ok((back, sample)) = tokio::task::spawn_blocking(move || {
            let s = sampler.sample();
            (sampler, s)
        })
        .await
        else {
            metrics.errors.inc(&["sampler", "panic"]);
            health.set("sampler", Importance::Degrading, false, "sampler thread failed");
            return;
        };
        sampler = back;
        record(&metrics, &sample);
        health.set("sampler", Importance::Degrading, true, format!("sampling every {}", humantime::format_duration(interval)));
        // Readings are advisory: if the engine is backed up, skip this round.
        if alerts.try_send(AlertInput::Readings(sample.readings())).is_err() {
            metrics.errors.inc(&["sampler", "alerts_queue_full"]);
        }
        history.send_modify(|h| {
            if h.len() == keep {
                h.pop_front();
            }
            h.push_back(sample);
        });
    }
}

fn record(m: &Metrics, s: &Sample) {
    m.samples.inc(&[]);
    m.cpu_percent.set(&[], f64::from(s.cpu_percent));
    m.memory_bytes.set(&["used"], s.memory_used_bytes as f64);
    m.memory_bytes.set(&["available"], s.memory_available_bytes as f64);
    m.memory_bytes.set(&["total"], s.memory_total_bytes as f64);
    m.disk_percent.set(&[], f64::from(s.disk_used_percent));
    for (w, v) in ["1m", "5m", "15m"].iter().zip(s.load) {
        m.load.set(&[w], v);
    }
    if let Some(t) = s.temperature_c {
        m.temperature.set(&[], f64::from(t));
    }
    if let Some(t) = s.throttling {
        for (flag, on) in [
            ("under_voltage", t.under_voltage),
            ("freq_capped", t.freq_capped),
            ("throttled", t.throttled),
            ("soft_temp_limit", t.soft_temp_limit),
        ] {
            m.throttled.set(&[flag], f64::from(u8::from(on)));
        }
    }
    m.agent_rss.set(&[], s.agent_rss_bytes as f64);
    m.agent_threads.set(&[], s.agent_threads as f64);
    m.agent_fds.set(&[], s.agent_fds as f64);
}

/// A sample older than this many intervals means the sampler has stalled.
pub const STALE_AFTER: u32 = 3;

/// Whether the newest sample is fresh enough, and a line of detail.
pub fn freshness(history: &VecDeque<Sample>, interval: Duration, now_ms: u64) -> Option<(bool, String)> {
    let last = history.back()?;
    let age = Duration::from_millis(now_ms.saturating_sub(last.ts_ms));
    let ok = age <= interval * STALE_AFTER;
    Some((ok, format!("last sample {} ago", humantime::format_duration(Duration::from_secs(age.as_secs())))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_bits() {
        let t = Throttling::from_raw(0x50005);
        assert!(t.under_voltage && t.throttled && !t.freq_capped);
        assert!(t.under_voltage_occurred && t.throttled_occurred);
    }

    #[test]
    fn real_sample_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let firmware = dir.path().join("get_throttled");
        std::fs::write(&firmware, "50005\n").unwrap();
        let cfg = SamplerConfig { throttled_path: firmware, ..SamplerConfig::default() };
        let mut s = Sampler::new(&cfg, dir.path());
        std::thread::sleep(Duration::from_millis(250));
        let sample = s.sample();
        assert!(sample.memory_total_bytes > 0);
        assert!(sample.agent_rss_bytes > 0 && sample.agent_threads >= 1 && sample.agent_fds >= 3);
        assert!(sample.disk_used_percent > 0.0 && sample.disk_free_bytes > 0);
        assert_eq!(sample.throttling.map(|t| t.under_voltage), Some(true));
        assert!(sample.readings().contains(&("under_voltage", 1.0)));
    }
}
