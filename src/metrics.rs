//! Metrics registry: typed counter, gauge and histogram families with labels, rendered in
//! the Prometheus text exposition format 0.0.4.
//!
//! One `Metrics` value is created by `main` and shared (`Arc`) by the components that
//! record; the probe renders it. Label values are bounded sets chosen by the code, never
//! taken from the outside world, so the series count stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets in seconds, tuned for millisecond-scale work on a Pi.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone)]
enum Value {
    Scalar(f64),
    Histogram(Histogram),
}

/// One metric family: a name, its label names, and a series per label-value tuple.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Value>>,
}

impl Family {
    const fn new(name: &'static str, help: &'static str, kind: Kind, labels: &'static [&'static str]) -> Self {
        Family { name, help, kind, labels, series: Mutex::new(BTreeMap::new()) }
    }

    fn with<R>(&self, values: &[&str], f: impl FnOnce(&mut Value) -> R) -> R {
        debug_assert_eq!(values.len(), self.labels.len(), "label count of {}", self.name);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let value = series.entry(key).or_insert_with(|| match self.kind {
            Kind::Histogram => Value::Histogram(Histogram { counts: vec![0; LATENCY_BUCKETS.len()], sum: 0.0, count: 0 }),
            _ => Value::Scalar(0.0),
        });
        f(value)
    }

    /// Adds one to a counter.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// Adds `v` to a counter or gauge.
    pub fn add(&self, labels: &[&str], v: f64) {
        self.with(labels, |value| {
            if let Value::Scalar(x) = value {
                *x += v;
            }
        });
    }

    /// Sets a gauge.
    pub fn set(&self, labels: &[&str], v: f64) {
        self.with(labels, |value| *value = Value::Scalar(v));
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, labels: &[&str], v: f64) {
        self.with(labels, |value| {
            if let Value::Histogram(h) = value {
                if let Some(i) = LATENCY_BUCKETS.iter().position(|b| v <= *b) {
                    h.counts[i] += 1;
                }
                h.sum += v;
                h.count += 1;
            }
        });
    }

    /// Current value of a counter or gauge series (0 when never touched).
    pub fn get(&self, labels: &[&str]) -> f64 {
        self.with(labels, |value| match value {
            Value::Scalar(x) => *x,
            Value::Histogram(h) => h.count as f64,
        })
    }

    /// Sum over every series of a counter or gauge.
    pub fn total(&self) -> f64 {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .values()
            .map(|v| match v {
                Value::Scalar(x) => *x,
                Value::Histogram(h) => h.count as f64,
            })
            .sum()
    }

    /// Every series of a counter or gauge with a non-zero value: label values and value.
    pub fn nonzero(&self) -> Vec<(Vec<String>, f64)> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .iter()
            .filter_map(|(labels, v)| match v {
                Value::Scalar(x) if *x != 0.0 => Some((labels.clone(), *x)),
                _ => None,
            })
            .collect()
    }

    /// Estimated quantile (0..1) of a histogram series, from its buckets.
    pub fn quantile(&self, labels: &[&str], q: f64) -> Option<f64> {
        self.with(labels, |value| {
            let Value::Histogram(h) = value else { return None };
            if h.count == 0 {
                return None;
            }
            let rank = (q * h.count as f64).ceil() as u64;
            let mut seen = 0;
            for (i, c) in h.counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(LATENCY_BUCKETS[i]);
                }
            }
            Some(f64::INFINITY)
        })
    }

    fn render(&self, out: &mut String) {
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", self.name, self.help, self.name, kind);
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (values, value) in series.iter() {
            let labels = |extra: Option<(&str, String)>| {
                let mut pairs: Vec<String> = self.labels.iter().zip(values).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                if let Some((k, v)) = extra {
                    pairs.push(format!("{k}=\"{v}\""));
                }
                if pairs.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", pairs.join(","))
                }
            };
            match value {
                Value::Scalar(x) => {
                    let _ = writeln!(out, "{}{} {}", self.name, labels(None), number(*x));
                }
                Value::Histogram(h) => {
                    let mut cumulative = 0;
                    for (bound, c) in LATENCY_BUCKETS.iter().zip(&h.counts) {
                        cumulative += c;
                        let _ = writeln!(out, "{}_bucket{} {}", self.name, labels(Some(("le", number(*bound)))), cumulative);
                    }
                    let _ = writeln!(out, "{}_bucket{} {}", self.name, labels(Some(("le", "+Inf".into()))), h.count);
                    let _ = writeln!(out, "{}_sum{} {}", self.name, labels(None), number(h.sum));
                    let _ = writeln!(out, "{}_count{} {}", self.name, labels(None), h.count);
                }
            }
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{x}")
    }
}

macro_rules! families {
    ($( $(#[$doc:meta])* $field:ident: $kind:ident $name:literal [$($label:literal),*] $help:literal; )*) => {
        /// Every metric the agent exports.
        #[derive(Debug)]
        pub struct Metrics {
            $( $(#[$doc])* pub $field: Family, )*
        }

        impl Default for Metrics {
            fn default() -> Self {
                Metrics {
                    $( $field: Family::new($name, $help, Kind::$kind, &[$($label),*]), )*
                }
            }
        }

        impl Metrics {
            /// Renders every family as Prometheus text exposition format 0.0.4.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(8 * 1024);
                $( self.$field.render(&mut out); )*
                out
            }
        }
    };
}

families! {
    /// Build information (value 1).
    build_info: Gauge "doorbell_build_info" ["version"] "Agent build information.";
    /// Seconds since the agent started.
    uptime: Gauge "doorbell_uptime_seconds" [] "Seconds since the agent started.";
    /// Raw button edges seen, before filtering.
    presses: Counter "doorbell_presses_total" ["trigger"] "Button presses seen before debounce and rate limiting.";
    /// Presses not turned into a ring, by reason.
    presses_dropped: Counter "doorbell_presses_dropped_total" ["reason"] "Presses dropped (debounce, rate_limit, queue_full, busy).";
    /// Rings by trigger and time of day.
    rings: Counter "doorbell_rings_total" ["trigger", "period"] "Rings processed, by trigger source and local time of day.";
    /// Ring results.
    ring_results: Counter "doorbell_ring_results_total" ["result"] "Ring results by type.";
    /// Pipeline stage latency.
    stage_seconds: Histogram "doorbell_pipeline_stage_seconds" ["stage"] "Pipeline stage latency in seconds.";
    /// Press to durably stored.
    ring_latency: Histogram "doorbell_ring_stored_seconds" [] "Time from press to ring event flushed to disk.";
    /// Resource samples taken.
    samples: Counter "doorbell_samples_total" [] "Resource samples taken.";
    /// CPU usage.
    cpu_percent: Gauge "doorbell_cpu_usage_percent" [] "Whole-device CPU usage in percent.";
    /// Memory figures.
    memory_bytes: Gauge "doorbell_memory_bytes" ["kind"] "Device memory in bytes (used, available, total).";
    /// Disk usage of the data directory's filesystem.
    disk_percent: Gauge "doorbell_disk_used_percent" [] "Used space of the data directory's filesystem in percent.";
    /// Load averages.
    load: Gauge "doorbell_load_average" ["window"] "System load average.";
    /// SoC temperature.
    temperature: Gauge "doorbell_temperature_celsius" [] "SoC temperature in degrees Celsius.";
    /// Firmware throttling flags.
    throttled: Gauge "doorbell_throttled" ["flag"] "Raspberry Pi firmware throttling flags (1 = active now).";
    /// Agent resident memory.
    agent_rss: Gauge "doorbell_agent_resident_bytes" [] "Resident memory of the agent process.";
    /// Agent thread count.
    agent_threads: Gauge "doorbell_agent_threads" [] "Threads of the agent process.";
    /// Agent open file descriptors.
    agent_fds: Gauge "doorbell_agent_open_fds" [] "Open file descriptors of the agent process.";
    /// Alert lifecycle transitions.
    alerts: Counter "doorbell_alerts_total" ["event", "severity"] "Alert transitions (raised, cleared, acknowledged) by severity.";
    /// Active alerts.
    alerts_active: Gauge "doorbell_alerts_active" ["severity"] "Alerts currently raised, by severity.";
    /// Raises suppressed by cooldown.
    alerts_suppressed: Counter "doorbell_alerts_suppressed_total" ["rule"] "Alert raises suppressed by the rule's cooldown.";
    /// Errors by component and kind.
    errors: Counter "doorbell_errors_total" ["component", "kind"] "Errors by component and kind.";
    /// Security events.
    security_events: Counter "doorbell_security_events_total" ["kind"] "Rejected or suspicious requests.";
    /// Store size.
    store_bytes: Gauge "doorbell_store_size_bytes" [] "On-disk size of the store.";
    /// Records per tree.
    store_records: Gauge "doorbell_store_records" ["tree"] "Records per store tree.";
    /// Pruned records.
    store_pruned: Counter "doorbell_store_pruned_total" ["tree"] "Records pruned to keep the store within its bounds and the disk's free space (tree: rings, alerts; snapshots: rings whose kept frames were removed).";
    /// Records skipped when reading.
    store_skipped: Counter "doorbell_store_skipped_records_total" ["reason"] "Stored records skipped on read (corrupt, newer_version).";
    /// Outbox messages dropped because the outbox was full.
    outbox_dropped: Counter "doorbell_outbox_dropped_total" ["severity"] "Outbox messages dropped because the outbox was full, by severity.";
    /// Fleet link state.
    mqtt_connected: Gauge "doorbell_mqtt_connected" [] "1 while connected to the fleet broker.";
    /// Fleet link connections.
    mqtt_connects: Counter "doorbell_mqtt_connects_total" [] "Connections to the fleet broker (the first one and every reconnection).";
    /// Outbox messages handed to the broker.
    mqtt_published: Counter "doorbell_mqtt_published_total" [] "Outbox messages published (re-sends included).";
    /// Outbox messages acknowledged.
    mqtt_acked: Counter "doorbell_mqtt_acked_total" [] "Outbox messages acknowledged by the broker (PUBACK); removed from the store within 200 ms.";
    /// Fleet commands.
    commands: Counter "doorbell_commands_total" ["event"] "Fleet commands: received, busy, repeated, and each lifecycle step.";
    /// HTTP requests by code.
    http_requests: Counter "doorbell_http_requests_total" ["code"] "Probe HTTP requests by status code.";
    /// Health check state.
    health_check: Gauge "doorbell_health_check" ["check"] "Health check state (1 = passing).";
    /// Health score.
    health_score: Gauge "doorbell_health_score" [] "Composite health score from 0 to 1.";
    /// Presses waiting for the ring thread.
    pipeline_queue: Gauge "doorbell_pipeline_queue_depth" [] "Accepted presses waiting for the pipeline.";
    /// Worker health.
    worker_health: Gauge "doorbell_pipeline_worker_health" [] "Pipeline worker health (1 = up or idle by design, 0 = failed).";
    /// Worker starts.
    worker_starts: Counter "doorbell_pipeline_worker_starts_total" [] "Pipeline worker processes started.";
    /// Worker failures by kind.
    worker_failures: Counter "doorbell_pipeline_worker_failures_total" ["kind"] "Pipeline worker failures (crash, timeout, models).";
    /// Worker cold start.
    worker_start_seconds: Histogram "doorbell_pipeline_worker_start_seconds" [] "Time from starting the worker to its models being loaded.";
    /// Gallery size.
    gallery_size: Gauge "doorbell_face_gallery_size" ["list"] "Enrolled people by list (known, blocked).";
    /// Faces per frame.
    frame_faces: Counter "doorbell_face_frames_total" ["faces"] "Frames analysed, by number of usable faces (0, 1, 2, 3+).";
    /// Decisions by result and confidence.
    face_decisions: Counter "doorbell_face_decisions_total" ["result", "confidence"] "Recognition decisions by result and confidence bucket.";
    /// Rolling accuracy from feedback.
    face_accuracy: Gauge "doorbell_face_recognition_accuracy" [] "Share of ring results operators marked right, over the feedback window.";
    /// Kept snapshots.
    snapshots: Gauge "doorbell_face_snapshots" ["kind"] "Kept visitor snapshots (rings, bytes).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.rings.inc(&["button", "night"]);
        m.rings.inc(&["button", "night"]);
        m.stage_seconds.observe(&["detect"], 0.003);
        m.cpu_percent.set(&[], 12.5);
        let text = m.render();
        assert!(text.contains("# TYPE doorbell_rings_total counter\n"));
        assert!(text.contains("doorbell_rings_total{trigger=\"button\",period=\"night\"} 2\n"));
        assert!(text.contains("doorbell_pipeline_stage_seconds_bucket{stage=\"detect\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("doorbell_pipeline_stage_seconds_bucket{stage=\"detect\",le=\"0.005\"} 1\n"));
        assert!(text.contains("doorbell_pipeline_stage_seconds_bucket{stage=\"detect\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("doorbell_pipeline_stage_seconds_count{stage=\"detect\"} 1\n"));
        assert!(text.contains("doorbell_cpu_usage_percent 12.5\n"));
    }

    #[test]
    fn quantile_reads_buckets() {
        let m = Metrics::default();
        for _ in 0..99 {
            m.ring_latency.observe(&[], 0.002);
        }
        m.ring_latency.observe(&[], 0.2);
        assert_eq!(m.ring_latency.quantile(&[], 0.5), Some(0.0025));
        assert_eq!(m.ring_latency.quantile(&[], 1.0), Some(0.25));
    }
}
