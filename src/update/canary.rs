//! Canary analysis on the device: the running version records a baseline of itself right
//! before it restarts into a staged update (ring pipeline p95 latency, error classes, own
//! RSS), durably in the update directory; the new version, on trial, compares itself with
//! it during the soak and fails its trial on a regression beyond `update.canary_*`.
//!
//! The probe has no latency histogram (only request counts), so probe latency is not part of
//! the baseline. A missing, unreadable or stale baseline (a first install, an update from a
//! version without canary) passes with a logged note: the canary can only judge what it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::checks::{Strikes, TrialCheck, Verdict};
use crate::metrics::Metrics;
use doorbell_slotctl::Trial;

/// The baseline's file in the update directory (beside `staged`).
pub const FILE: &str = "canary-baseline.json";
/// Format of the baseline file this build writes and reads.
pub const FORMAT: u32 = 1;
/// Rings each side needs before their p95 latencies are compared (a doorbell may not ring
/// at all during a one-minute soak; a p95 of two rings says nothing).
pub const MIN_RINGS: u64 = 5;
/// Error classes the canary leaves to other checks: broker connection errors belong to the
/// broker check (with its own timeout), and a flaky Wi-Fi link is no regression of a version.
const IGNORED_ERRORS: &[&str] = &["fleet/connection"];

/// What the canary measures of one running version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Resident memory of the agent process, bytes.
    pub rss_bytes: Option<u64>,
    /// Rings in the ring latency histogram (since that process started).
    pub rings: u64,
    /// p95 of press → ring stored, seconds (bucket bound); None before the first ring.
    pub ring_p95_s: Option<f64>,
    /// Non-zero error counters, `component/kind` → count.
    pub errors: BTreeMap<String, u64>,
}

impl Snapshot {
    /// This process, now.
    pub fn take(metrics: &Metrics) -> Snapshot {
        Snapshot {
            rss_bytes: crate::sampler::own_rss(),
            rings: metrics.ring_latency.get(&[]) as u64,
            ring_p95_s: metrics.ring_latency.quantile(&[], 0.95),
            errors: metrics.errors.nonzero().into_iter().map(|(labels, n)| (labels.join("/"), n as u64)).collect(),
        }
    }
}

/// The baseline file: who recorded it, for which update, and the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// File format (`FORMAT`).
    pub format: u32,
    /// The version that recorded it (the trial's `from_version`).
    pub version: String,
    /// The staged version it is the baseline for (the trial's `version`).
    pub for_version: String,
    /// Recorded at, Unix ms.
    pub recorded_ms: u64,
    /// The running version's figures.
    pub snapshot: Snapshot,
}

/// Why there is no usable baseline.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// No file: a first install, or the previous version has no canary.
    #[error("no baseline recorded (the previous version may predate the canary)")]
    Missing,
    /// Could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a baseline of a format this build knows.
    #[error("unusable baseline {path}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Recorded for another update.
    #[error("the baseline was recorded by {version} for {for_version}, not for this trial ({from} -> {to})")]
    Stale {
        /// Recorder.
        version: String,
        /// Its target.
        for_version: String,
        /// This trial's from_version.
        from: String,
        /// This trial's version.
        to: String,
    },
}

/// The baseline's path in an update directory.
pub fn path(update_dir: &Path) -> PathBuf {
    update_dir.join(FILE)
}

/// Writes the baseline durably (temporary file, fsync, rename).
pub fn record(update_dir: &Path, baseline: &Baseline) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(baseline).map_err(std::io::Error::other)?;
    doorbell_base::durable::write_file(&path(update_dir), &bytes, 0o640)
}

/// Reads the baseline recorded for `trial`.
pub fn load(update_dir: &Path, trial: &Trial) -> Result<Baseline, BaselineError> {
    let file = path(update_dir);
    let shown = file.display().to_string();
    let bytes = match doorbell_base::durable::read_bounded(&file, 64 * 1024) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BaselineError::Missing),
        Err(source) => return Err(BaselineError::Io { path: shown, source }),
    };
    let b: Baseline =
        serde_json::from_slice(&bytes).map_err(|e| BaselineError::Malformed { path: shown.clone(), reason: e.to_string() })?;
    if b.format != FORMAT {
        return Err(BaselineError::Malformed { path: shown, reason: format!("format {} (this build reads {FORMAT})", b.format) });
    }
    if b.version != trial.from_version || b.for_version != trial.version {
        return Err(BaselineError::Stale {
            version: b.version,
            for_version: b.for_version,
            from: trial.from_version.clone(),
            to: trial.version.clone(),
        });
    }
    Ok(b)
}

/// The configured regression limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RSS may grow by this many percent over the baseline.
    pub rss_growth_percent: u32,
    /// Ring p95 latency may grow by this many percent over the baseline.
    pub latency_growth_percent: u32,
}

impl Limits {
    /// The limits of an `[update]` section.
    pub fn from_config(cfg: &doorbell_slotctl::settings::UpdateConfig) -> Limits {
        Limits { rss_growth_percent: cfg.canary_max_rss_growth_percent, latency_growth_percent: cfg.canary_max_latency_growth_percent }
    }
}

/// The outcome of one comparison: regressions (any fails the check) and the figures that
/// passed, both as text for the trial's reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Regressions beyond the limits.
    pub failures: Vec<String>,
    /// What was compared and passed, or why it was not compared.
    pub notes: Vec<String>,
}

impl Comparison {
    /// Every part, regressions first, for a reason or a log line.
    pub fn summary(&self) -> String {
        self.failures.iter().chain(&self.notes).cloned().collect::<Vec<_>>().join("; ")
    }

    /// Files one figure: a regression, or a note; `text` gets the comparison operator.
    fn judge(&mut self, regressed: bool, text: impl Fn(&str) -> String) {
        if regressed {
            self.failures.push(text(">"));
        } else {
            self.notes.push(text("≤"));
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

/// Compares the version on trial (`now`) with the baseline: RSS, ring p95 latency (when
/// both sides have `MIN_RINGS` rings), and error classes the baseline did not have.
pub fn compare(base: &Snapshot, now: &Snapshot, limits: Limits) -> Comparison {
    let mut c = Comparison::default();
    match (base.rss_bytes, now.rss_bytes) {
        (Some(b), Some(n)) => {
            let factor = 1.0 + f64::from(limits.rss_growth_percent) / 100.0;
            c.judge(n as f64 > b as f64 * factor, |op| format!("RSS {} {op} {factor:.2} × baseline {}", mib(n), mib(b)));
        }
        _ => c.notes.push("RSS not compared (unknown on one side)".into()),
    }
    match (base.ring_p95_s, now.ring_p95_s) {
        (Some(b), Some(n)) if base.rings >= MIN_RINGS && now.rings >= MIN_RINGS => {
            let factor = 1.0 + f64::from(limits.latency_growth_percent) / 100.0;
            c.judge(n > b * factor, |op| {
                format!("ring p95 {} {op} {factor:.2} × baseline {} ({} vs {} rings)", ms(n), ms(b), now.rings, base.rings)
            });
        }
        _ => c.notes.push(format!("ring latency not compared ({} vs {} rings, {MIN_RINGS} needed on each side)", now.rings, base.rings)),
    }
    let new: Vec<String> = now
        .errors
        .iter()
        .filter(|(class, n)| **n > 0 && !base.errors.contains_key(*class) && !IGNORED_ERRORS.contains(&class.as_str()))
        .map(|(class, n)| format!("{class} ({n})"))
        .collect();
    if new.is_empty() {
        c.notes.push(format!("no new error class ({} in the baseline)", base.errors.len()));
    } else {
        c.failures.push(format!("new error class: {}", new.join(", ")));
    }
    c
}

/// Where the canary check stands.
#[derive(Debug)]
enum Loaded {
    /// Not looked for yet (first evaluation).
    NotYet,
    /// Comparing with this.
    Baseline(Box<Baseline>),
    /// Nothing to compare with: passes.
    Unusable,
}

/// The trial check: the version on trial against the previous version's baseline.
pub struct Canary {
    metrics: Arc<Metrics>,
    update_dir: PathBuf,
    limits: Limits,
    loaded: Loaded,
    failing: Strikes,
}

impl Canary {
    /// A canary reading the baseline from `update_dir` at its first evaluation.
    pub fn new(metrics: Arc<Metrics>, update_dir: PathBuf, limits: Limits) -> Canary {
        Canary { metrics, update_dir, limits, loaded: Loaded::NotYet, failing: Strikes::default() }
    }
}

impl TrialCheck for Canary {
    fn name(&self) -> &'static str {
        "canary"
    }

    fn evaluate(&mut self, trial: &Trial) -> Verdict {
        if let Loaded::NotYet = self.loaded {
            self.loaded = match load(&self.update_dir, trial) {
                Ok(b) => {
                    log::info!("canary: comparing {} with the baseline of {}: {:?}", trial.version, b.version, b.snapshot);
                    Loaded::Baseline(Box::new(b))
                }
                Err(e) => {
                    log::warn!("canary: not compared: {e}");
                    Loaded::Unusable
                }
            };
        }
        let Loaded::Baseline(baseline) = &self.loaded else { return Verdict::Pass };
        let c = compare(&baseline.snapshot, &Snapshot::take(&self.metrics), self.limits);
        if c.failures.is_empty() {
            self.failing.clear();
            return Verdict::Pass;
        }
        self.failing.strike(format!("{} (vs {})", c.summary(), baseline.version))
    }

    fn summary(&mut self) -> Option<String> {
        let Loaded::Baseline(baseline) = &self.loaded else { return Some("canary: no baseline".into()) };
        Some(format!(
            "canary vs {}: {}",
            baseline.version,
            compare(&baseline.snapshot, &Snapshot::take(&self.metrics), self.limits).summary()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const LIMITS: Limits = Limits { rss_growth_percent: 50, latency_growth_percent: 20 };

    fn snap(rss_mib: u64, rings: u64, p95: Option<f64>, errors: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            rss_bytes: Some(rss_mib * MIB),
            rings,
            ring_p95_s: p95,
            errors: errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn same_figures_pass() {
        let base = snap(10, 20, Some(0.1), &[("pipeline/frame", 2)]);
        let c = compare(&base, &base.clone(), LIMITS);
        assert!(c.failures.is_empty(), "{c:?}");
        assert!(c.summary().contains("RSS 10.0 MiB ≤ 1.50 × baseline 10.0 MiB"), "{}", c.summary());
    }

    #[test]
    fn rss_growth_beyond_the_limit_fails() {
        let base = snap(8, 0, None, &[]);
        assert!(compare(&base, &snap(12, 0, None, &[]), LIMITS).failures.is_empty(), "exactly +50 % passes");
        let c = compare(&base, &snap(13, 0, None, &[]), LIMITS);
        assert_eq!(c.failures, vec!["RSS 13.0 MiB > 1.50 × baseline 8.0 MiB".to_string()]);
    }

    #[test]
    fn latency_compared_only_with_enough_rings() {
        let base = snap(10, 10, Some(0.1), &[]);
        let slow = snap(10, MIN_RINGS, Some(0.25), &[]);
        let c = compare(&base, &slow, LIMITS);
        assert_eq!(c.failures.len(), 1, "{c:?}");
        assert!(c.failures[0].starts_with("ring p95 250.0 ms > 1.20 × baseline 100.0 ms"), "{c:?}");
        assert!(compare(&base, &snap(10, 6, Some(0.1), &[]), LIMITS).failures.is_empty());
        // Too few rings on either side: not compared, and said so.
        let c = compare(&base, &snap(10, MIN_RINGS - 1, Some(5.0), &[]), LIMITS);
        assert!(c.failures.is_empty() && c.summary().contains("ring latency not compared (4 vs 10 rings"), "{c:?}");
        let c = compare(&snap(10, 2, Some(0.001), &[]), &slow, LIMITS);
        assert!(c.failures.is_empty(), "{c:?}");
    }

    #[test]
    fn a_new_error_class_fails_a_known_one_does_not() {
        let base = snap(10, 0, None, &[("pipeline/frame", 3)]);
        let c = compare(&base, &snap(10, 0, None, &[("pipeline/frame", 9)]), LIMITS);
        assert!(c.failures.is_empty(), "more of a known class is no new class: {c:?}");
        let c = compare(&base, &snap(10, 0, None, &[("pipeline/frame", 1), ("store/ring_write", 2)]), LIMITS);
        assert_eq!(c.failures, vec!["new error class: store/ring_write (2)".to_string()]);
        let c = compare(&base, &snap(10, 0, None, &[("fleet/connection", 5)]), LIMITS);
        assert!(c.failures.is_empty(), "connection errors are the broker check's: {c:?}");
    }

    fn trial(from: &str, to: &str) -> Trial {
        serde_json::from_value(serde_json::json!({
            "id": 1, "slot": "b", "version": to, "from_version": from, "tries": 3, "tries_left": 2,
            "armed_ms": 0, "boot_id": "x", "started_mono_ms": 0, "deadline_s": 60, "failures": [],
        }))
        .expect("a trial")
    }

    #[test]
    fn baseline_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let t = trial("0.1.0", "0.2.0");
        assert!(matches!(load(dir.path(), &t), Err(BaselineError::Missing)));
        let b = Baseline {
            format: FORMAT,
            version: "0.1.0".into(),
            for_version: "0.2.0".into(),
            recorded_ms: 1,
            snapshot: snap(8, 0, None, &[]),
        };
        record(dir.path(), &b).unwrap();
        assert_eq!(load(dir.path(), &t).unwrap(), b);
        assert!(matches!(load(dir.path(), &trial("0.1.0", "0.3.0")), Err(BaselineError::Stale { .. })));
        record(dir.path(), &Baseline { format: 99, ..b }).unwrap();
        assert!(matches!(load(dir.path(), &t), Err(BaselineError::Malformed { .. })));
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(matches!(load(dir.path(), &t), Err(BaselineError::Malformed { .. })));
    }

    #[test]
    fn missing_baseline_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Canary::new(Arc::new(Metrics::default()), dir.path().to_path_buf(), LIMITS);
        assert_eq!(c.evaluate(&trial("0.1.0", "0.2.0")), Verdict::Pass);
        assert_eq!(c.summary().as_deref(), Some("canary: no baseline"));
    }

    #[test]
    fn regression_fails_on_the_second_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let t = trial("0.1.0", "0.2.0");
        let base = Snapshot { rss_bytes: Some(1), rings: 0, ring_p95_s: None, errors: BTreeMap::new() };
        record(
            dir.path(),
            &Baseline { format: FORMAT, version: "0.1.0".into(), for_version: "0.2.0".into(), recorded_ms: 1, snapshot: base },
        )
        .unwrap();
        let mut c = Canary::new(Arc::new(Metrics::default()), dir.path().to_path_buf(), LIMITS);
        assert!(matches!(c.evaluate(&t), Verdict::Pending(_)));
        match c.evaluate(&t) {
            Verdict::Fail(why) => assert!(why.starts_with("RSS ") && why.ends_with("(vs 0.1.0)"), "{why}"),
            v => panic!("expected a failure, got {v:?}"),
        }
    }
}
