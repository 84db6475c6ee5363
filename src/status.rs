//! What the agent is doing, in one place: the /status JSON and the systemd STATUS= line
//! are both built from the same `View`, so they never disagree.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::watch;

use crate::fleet::LinkState;
use crate::health::Board;
use crate::pipeline::RingStats;
use crate::sampler::Sample;
use crate::store::{AlertV1, RingV1, Store};
use crate::update::history::History;
use crate::update::trial::UpdateView;

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct Info {
    /// Device id.
    pub device_id: String,
    /// Kernel boot id, so consumers can tell a reboot from a restart.
    pub boot_id: String,
    /// Wall-clock start, Unix ms.
    pub started_ms: u64,
    /// Monotonic start.
    pub started: Instant,
    /// Button backend description.
    pub gpio: String,
    /// Probe address.
    pub listen: String,
}

/// Live sources the view reads.
#[derive(Clone)]
pub struct View {
    /// Start facts.
    pub info: Info,
    /// Named checks.
    pub health: Board,
    /// Durable store.
    pub store: Store,
    /// Recent resource samples.
    pub samples: watch::Receiver<VecDeque<Sample>>,
    /// Ring counters.
    pub rings: watch::Receiver<RingStats>,
    /// Active alerts.
    pub alerts: watch::Receiver<Vec<AlertV1>>,
    /// The fleet link, when a broker is configured.
    pub link: Option<watch::Receiver<LinkState>>,
    /// Slot and update state.
    pub update: watch::Receiver<UpdateView>,
    /// Update history.
    pub history: History,
}

/// Reads the kernel's boot id (empty off Linux).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl View {
    /// The /status document.
    pub fn json(&self) -> serde_json::Value {
        let report = self.health.report();
        let rings = self.rings.borrow().clone();
        let alerts: Vec<serde_json::Value> = self.alerts.borrow().iter().map(AlertV1::to_json).collect();
        let last_sample = self.samples.borrow().back().cloned();
        let (stored_rings, stored_alerts, outbox) = self.store.counts();
        let update = self.update.borrow();
        serde_json::json!({
            "device_id": self.info.device_id,
            "version": crate::VERSION,
            "slot": update.slot,
            "update": update.json(),
            "state": if self.health.ready() { "running" } else { "starting" },
            "boot_id": self.info.boot_id,
            "started_at": doorbell_base::time::rfc3339(self.info.started_ms),
            "uptime_s": self.info.started.elapsed().as_secs(),
            "health": {"status": report.status, "score": report.score},
            "gpio": self.info.gpio,
            "probe": self.info.listen,
            "mqtt": self.link_json(),
            "outbox_depth": outbox,
            "rings": {
                "since_start": rings.rings,
                "stored": stored_rings,
                "last": rings.last.as_ref().map(RingV1::to_json),
            },
            "store": {"size_bytes": self.store.size_on_disk(), "alerts": stored_alerts},
            "last_sample": last_sample,
            "active_alerts": alerts,
        })
    }

    fn link_json(&self) -> serde_json::Value {
        let Some(link) = &self.link else { return serde_json::json!({"configured": false}) };
        let l = link.borrow();
        serde_json::json!({
            "configured": true,
            "link": if l.connected { "up" } else { "down" },
            "since": (l.since_ms > 0).then(|| doorbell_base::time::rfc3339(l.since_ms)),
            "reconnects": l.reconnects,
            "last_error": l.last_error,
            "retry_at": l.retry_at_ms.map(doorbell_base::time::rfc3339),
        })
    }

    /// The one-line summary for `systemctl status`.
    pub fn line(&self) -> String {
        let rings = self.rings.borrow().rings;
        let alerts = self.alerts.borrow();
        let critical = alerts.iter().filter(|a| a.severity == crate::config::Severity::Critical).count();
        let report = self.health.report();
        let health = serde_json::to_value(report.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let mut line = format!(
            "{health}: {rings} ring{} since start, {} active alert{}",
            if rings == 1 { "" } else { "s" },
            alerts.len(),
            if alerts.len() == 1 { "" } else { "s" }
        );
        if critical > 0 {
            line.push_str(&format!(" ({critical} critical)"));
        }
        if let Some(store) = report.checks.get("store").filter(|c| !c.ok) {
            line.push_str(&format!(", store {}", store.detail));
        }
        if let Some(link) = &self.link {
            line.push_str(if link.borrow().connected { ", fleet link up" } else { ", fleet link down" });
        }
        line.push_str(&format!(", probe {}", self.info.listen));
        match self.update.borrow().line() {
            Some(update) => format!("{update}; {line}"),
            None => line,
        }
    }
}

/// Human-readable rendering of a /status document for `doorbell-agent status`.
pub fn pretty(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    let n = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap_or(0.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "doorbell-agent {} on {}: {}, {} (score {:.2})",
        s("/version"),
        s("/device_id"),
        s("/state"),
        s("/health/status"),
        n("/health/score")
    );
    let up = std::time::Duration::from_secs(n("/uptime_s") as u64);
    let _ = writeln!(out, "  uptime     {} (since {})", humantime::format_duration(up), s("/started_at"));
    let _ = writeln!(out, "  button     {}", s("/gpio"));
    let last = match v.pointer("/rings/last") {
        Some(r) if !r.is_null() => {
            format!("; last #{} {} at {}", r["seq"], r["result"].as_str().unwrap_or("?"), r["ts"].as_str().unwrap_or("?"))
        }
        _ => String::new(),
    };
    let _ = writeln!(out, "  rings      {} since start, {} stored{last}", n("/rings/since_start"), n("/rings/stored"));
    let alerts = v["active_alerts"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "  alerts     {} active", alerts.len());
    for a in &alerts {
        let _ = writeln!(
            out,
            "             [{}] {}: {}",
            a["severity"].as_str().unwrap_or("?"),
            a["key"].as_str().unwrap_or("?"),
            a["message"].as_str().unwrap_or("")
        );
    }
    if let Some(x) = v.get("last_sample").filter(|x| !x.is_null()) {
        let temp = x["temperature_c"].as_f64().map_or("n/a".into(), |t| format!("{t:.1} °C"));
        let _ = writeln!(
            out,
            "  device     cpu {:.1}%, memory {:.0}%, disk {:.0}%, load {:.2}, temp {temp}",
            x["cpu_percent"].as_f64().unwrap_or(0.0),
            x["memory_percent"].as_f64().unwrap_or(0.0),
            x["disk_used_percent"].as_f64().unwrap_or(0.0),
            x["load"][0].as_f64().unwrap_or(0.0)
        );
        let _ = writeln!(
            out,
            "  agent      rss {:.1} MiB, {} threads, {} open fds",
            x["agent_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            x["agent_threads"],
            x["agent_fds"]
        );
    }
    if let Some(summary) = v.pointer("/update/summary").and_then(|x| x.as_str()) {
        let slot = v.get("slot").and_then(|x| x.as_str()).unwrap_or("-");
        let _ = writeln!(out, "  update     {summary}; running from slot {slot} ({})", s("/update/state"));
    }
    let mqtt = match v.pointer("/mqtt/link").and_then(|l| l.as_str()) {
        Some("up") => format!("link up since {}, {} reconnects", s("/mqtt/since"), n("/mqtt/reconnects")),
        Some(_) => format!("link DOWN ({})", v.pointer("/mqtt/last_error").and_then(|e| e.as_str()).unwrap_or("connecting")),
        None => "not configured".into(),
    };
    let _ = writeln!(out, "  fleet      {mqtt}, outbox {}", n("/outbox_depth"));
    let _ = writeln!(out, "  store      {:.1} MiB, {} alerts", n("/store/size_bytes") / 1048576.0, n("/store/alerts"));
    out
}
