//! Rule evaluation: pure logic over readings and a monotonic clock, no I/O.
//!
//! Threshold rules raise after the condition has held for `for`, and clear with hysteresis
//! at `clear_threshold`. Trend rules raise when a reading has grown by `growth_percent`
//! over `window` and clear once growth falls below half of that. After a clear, a new raise
//! of the same rule within `cooldown` is suppressed (and counted) until the cooldown ends.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Comparison, RuleConfig, RuleKind, Severity};

/// What a rule decided on this evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The condition is met: raise.
    Raise {
        /// Reading that triggered it.
        value: f64,
        /// Threshold (threshold rules) or growth limit (trend rules).
        threshold: f64,
        /// Human-readable message.
        message: String,
    },
    /// The condition has gone away: clear.
    Clear {
        /// Reading at the clear.
        value: f64,
    },
    /// The condition is met but the rule is cooling down after its last clear.
    Suppressed,
}

/// A rule with its evaluation state.
#[derive(Debug)]
pub struct Rule {
    /// The rule's configuration.
    pub cfg: RuleConfig,
    active: bool,
    pending_since: Option<Instant>,
    suppressed: bool,
    last_clear: Option<Instant>,
    history: VecDeque<(Instant, f64)>,
}

impl Rule {
    /// A rule that has not seen any reading yet.
    pub fn new(cfg: RuleConfig) -> Self {
        Rule { cfg, active: false, pending_since: None, suppressed: false, last_clear: None, history: VecDeque::new() }
    }

    /// Marks the rule as raised (an active alert restored from the store at start).
    pub fn restore_active(&mut self) {
        self.active = true;
    }

    /// Marks the rule as cleared by an operator, starting its cooldown.
    pub fn cleared_by_operator(&mut self, now: Instant) {
        self.active = false;
        self.pending_since = None;
        self.last_clear = Some(now);
    }

    /// Feeds one reading of the rule's metric.
    pub fn evaluate(&mut self, now: Instant, value: f64) -> Option<Transition> {
        if !value.is_finite() {
            return None;
        }
        let (raise_now, clear_now, limit) = match self.cfg.kind {
            RuleKind::Threshold => {
                let t = self.cfg.threshold.unwrap_or(0.0);
                let clear_at = self.cfg.clear_threshold.unwrap_or(t);
                (compare(self.cfg.op, value, t), !compare(self.cfg.op, value, clear_at), t)
            }
            RuleKind::Trend => {
                let window = self.cfg.window.unwrap_or(Duration::from_secs(3600));
                let limit = self.cfg.growth_percent.unwrap_or(50.0);
                // Keep ~240 points per window, whatever the sampling rate, to bound memory.
                if self.history.back().is_none_or(|(t, _)| now.duration_since(*t) >= window / 240) {
                    self.history.push_back((now, value));
                }
                while self.history.len() > 2 && self.history.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= window) {
                    self.history.pop_front();
                }
                let growth = self.history.front().and_then(|(t, base)| {
                    // Only judge a trend once a whole window has been seen.
                    (now.duration_since(*t) >= window && *base > 0.0).then(|| (value - base) / base * 100.0)
                });
                match growth {
                    Some(g) => (g > limit, g < limit / 2.0, limit),
                    None => (false, false, limit),
                }
            }
        };

        if self.active {
            if clear_now {
                self.active = false;
                self.pending_since = None;
                self.last_clear = Some(now);
                return Some(Transition::Clear { value });
            }
            return None;
        }
        if !raise_now {
            self.pending_since = None;
            self.suppressed = false;
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now.duration_since(since) < self.cfg.for_ {
            return None;
        }
        if self.last_clear.is_some_and(|c| now.duration_since(c) < self.cfg.cooldown) {
            // Count one suppression per episode, not one per reading.
            if self.suppressed {
                return None;
            }
            self.suppressed = true;
            return Some(Transition::Suppressed);
        }
        self.active = true;
        self.suppressed = false;
        Some(Transition::Raise { value, threshold: limit, message: self.message(value, limit) })
    }

    fn message(&self, value: f64, limit: f64) -> String {
        let c = &self.cfg;
        match c.kind {
            RuleKind::Threshold => {
                let op = match c.op {
                    Comparison::Above => ">",
                    Comparison::AtLeast => ">=",
                    Comparison::Below => "<",
                    Comparison::AtMost => "<=",
                };
                let held = if c.for_.is_zero() { String::new() } else { format!(" for {}", humantime::format_duration(c.for_)) };
                format!("{} is {} ({op} {}{held})", c.metric, round(value), round(limit))
            }
            RuleKind::Trend => format!(
                "{} grew by more than {}% over {} (now {})",
                c.metric,
                round(limit),
                humantime::format_duration(c.window.unwrap_or_default()),
                round(value)
            ),
        }
    }
}

fn compare(op: Comparison, value: f64, threshold: f64) -> bool {
    match op {
        Comparison::Above => value > threshold,
        Comparison::AtLeast => value >= threshold,
        Comparison::Below => value < threshold,
        Comparison::AtMost => value <= threshold,
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The rules every agent starts with (`alerts.builtin = true`).
pub fn builtin() -> Vec<RuleConfig> {
    let m = |s: u64| Duration::from_secs(s * 60);
    let threshold = |name: &str, metric: &str, op, t: f64, clear: f64, severity, for_: Duration| RuleConfig {
        name: name.into(),
        metric: metric.into(),
        kind: RuleKind::Threshold,
        op,
        threshold: Some(t),
        clear_threshold: Some(clear),
        growth_percent: None,
        window: None,
        severity,
        for_,
        cooldown: m(10),
    };
    use Comparison::*;
    use Severity::*;
    vec![
        threshold("cpu_high", "cpu_percent", Above, 80.0, 70.0, Warning, m(2)),
        threshold("cpu_critical", "cpu_percent", Above, 95.0, 85.0, Critical, m(1)),
        threshold("memory_high", "memory_percent", Above, 85.0, 80.0, Major, m(3)),
        threshold("disk_full", "disk_percent", Above, 90.0, 85.0, Major, Duration::ZERO),
        threshold("temperature_high", "temperature_c", Above, 80.0, 75.0, Major, Duration::ZERO),
        threshold("under_voltage", "under_voltage", AtLeast, 1.0, 1.0, Critical, Duration::ZERO),
        threshold("pipeline_errors", "pipeline_errors_5m", AtLeast, 3.0, 1.0, Major, Duration::ZERO),
        threshold("agent_fds_high", "agent_fds", Above, 512.0, 384.0, Major, m(1)),
        threshold("agent_memory_high", "agent_rss_mib", Above, 48.0, 40.0, Major, m(5)),
        threshold("pipeline_worker_down", "pipeline_worker_up", Below, 1.0, 1.0, Major, Duration::from_secs(30)),
        threshold("pipeline_slow", "pipeline_budget_ratio", Above, 1.0, 0.8, Warning, Duration::ZERO),
        threshold("face_accuracy_low", "face_recognition_accuracy", Below, 0.8, 0.85, Minor, Duration::ZERO),
        RuleConfig {
            name: "agent_memory_leak".into(),
            metric: "agent_rss_mib".into(),
            kind: RuleKind::Trend,
            op: Above,
            threshold: None,
            clear_threshold: None,
            growth_percent: Some(50.0),
            window: Some(m(60)),
            severity: Minor,
            for_: Duration::ZERO,
            cooldown: m(60),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: f64, clear: f64, for_s: u64, cooldown_s: u64) -> Rule {
        Rule::new(RuleConfig {
            name: "r".into(),
            metric: "cpu_percent".into(),
            kind: RuleKind::Threshold,
            op: Comparison::Above,
            threshold: Some(t),
            clear_threshold: Some(clear),
            growth_percent: None,
            window: None,
            severity: Severity::Warning,
            for_: Duration::from_secs(for_s),
            cooldown: Duration::from_secs(cooldown_s),
        })
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn raises_only_after_for_duration() {
        let mut r = rule(80.0, 70.0, 120, 0);
        let t0 = Instant::now();
        assert_eq!(r.evaluate(t0, 90.0), None);
        assert_eq!(r.evaluate(secs(t0, 60), 90.0), None);
        assert!(matches!(r.evaluate(secs(t0, 120), 91.0), Some(Transition::Raise { .. })));
        assert_eq!(r.evaluate(secs(t0, 121), 91.0), None, "raised once, not again");
    }

    #[test]
    fn dip_resets_the_for_timer() {
        let mut r = rule(80.0, 70.0, 120, 0);
        let t0 = Instant::now();
        r.evaluate(t0, 90.0);
        r.evaluate(secs(t0, 100), 50.0);
        assert_eq!(r.evaluate(secs(t0, 130), 90.0), None);
        assert!(r.evaluate(secs(t0, 250), 90.0).is_some());
    }

    #[test]
    fn hysteresis_holds_between_clear_and_raise_thresholds() {
        let mut r = rule(80.0, 70.0, 0, 0);
        let t0 = Instant::now();
        assert!(matches!(r.evaluate(t0, 85.0), Some(Transition::Raise { .. })));
        assert_eq!(r.evaluate(secs(t0, 1), 75.0), None, "75 is inside the hysteresis band");
        assert_eq!(r.evaluate(secs(t0, 2), 70.0), Some(Transition::Clear { value: 70.0 }));
    }

    #[test]
    fn cooldown_suppresses_repeats_once_per_episode() {
        let mut r = rule(80.0, 70.0, 0, 600);
        let t0 = Instant::now();
        assert!(matches!(r.evaluate(t0, 85.0), Some(Transition::Raise { .. })));
        assert!(matches!(r.evaluate(secs(t0, 10), 60.0), Some(Transition::Clear { .. })));
        assert_eq!(r.evaluate(secs(t0, 20), 90.0), Some(Transition::Suppressed));
        assert_eq!(r.evaluate(secs(t0, 30), 90.0), None);
        assert!(matches!(r.evaluate(secs(t0, 611), 90.0), Some(Transition::Raise { .. })), "cooldown over");
    }

    #[test]
    fn trend_rule_sees_growth_over_window() {
        let mut r = Rule::new(builtin().into_iter().find(|r| r.name == "agent_memory_leak").unwrap());
        let t0 = Instant::now();
        let mut raised = None;
        for minute in 0..=120u64 {
            // 10 MiB growing by 1% a minute: +50 % is crossed within the second hour.
            let value = 10.0 * 1.01f64.powi(minute as i32);
            if let Some(Transition::Raise { .. }) = r.evaluate(t0 + Duration::from_secs(minute * 60), value) {
                raised = Some(minute);
                break;
            }
        }
        let minute = raised.expect("a steady 1 %/min leak must raise");
        assert!((60..=120).contains(&minute), "raised at minute {minute}");
    }

    #[test]
    fn flat_trend_never_raises() {
        let mut r = Rule::new(builtin().into_iter().find(|r| r.name == "agent_memory_leak").unwrap());
        let t0 = Instant::now();
        for minute in 0..300u64 {
            assert_eq!(r.evaluate(t0 + Duration::from_secs(minute * 60), 10.0 + (minute % 3) as f64 * 0.1), None);
        }
    }
}
