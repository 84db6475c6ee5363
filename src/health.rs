//! Health composed from named checks. A required check that fails makes the agent
//! `unhealthy` (503); a degrading one makes it `degraded` (still 200).
//!
//! Components report their own checks; the probe and the systemd STATUS line read the
//! composite. The board is a small shared table, not a channel, because the probe thread
//! answers synchronously and needs the latest state of every check at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How much a failing check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// Failing → unhealthy.
    Required,
    /// Failing → degraded.
    Degrading,
}

/// The latest result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Required or degrading.
    pub importance: Importance,
    /// Passing?
    pub ok: bool,
    /// One line of detail for humans.
    pub detail: String,
}

/// Overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything passes.
    Healthy,
    /// A degrading check fails.
    Degraded,
    /// A required check fails.
    Unhealthy,
}

/// A point-in-time view of all checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Overall verdict.
    pub status: Status,
    /// 0..1: required checks weigh twice as much as degrading ones.
    pub score: f64,
    /// Every check by name.
    pub checks: BTreeMap<&'static str, Check>,
}

/// Names of the checks that gate readiness.
pub const READINESS: &[&str] = &["store", "gpio", "pipeline"];

/// Shared table of named checks.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<&'static str, Check>>>);

impl Board {
    /// Records the latest result of a check.
    pub fn set(&self, name: &'static str, importance: Importance, ok: bool, detail: impl Into<String>) {
        let check = Check { importance, ok, detail: detail.into() };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name, check);
    }

    /// The composite view.
    pub fn report(&self) -> Report {
        let checks = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (mut got, mut max) = (0.0, 0.0);
        let mut status = Status::Healthy;
        for check in checks.values() {
            let weight = match check.importance {
                Importance::Required => 2.0,
                Importance::Degrading => 1.0,
            };
            max += weight;
            if check.ok {
                got += weight;
            } else if check.importance == Importance::Required {
                status = Status::Unhealthy;
            } else if status == Status::Healthy {
                status = Status::Degraded;
            }
        }
        let score = if max > 0.0 { got / max } else { 0.0 };
        Report { status, score, checks }
    }

    /// True once every readiness check has reported and passes.
    pub fn ready(&self) -> bool {
        let checks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        READINESS.iter().all(|name| checks.get(name).is_some_and(|c| c.ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_failure_is_unhealthy_degrading_is_degraded() {
        let b = Board::default();
        b.set("store", Importance::Required, true, "ok");
        b.set("sampler", Importance::Degrading, true, "ok");
        assert_eq!(b.report().status, Status::Healthy);
        assert_eq!(b.report().score, 1.0);
        b.set("sampler", Importance::Degrading, false, "stale");
        assert_eq!(b.report().status, Status::Degraded);
        assert!((b.report().score - 2.0 / 3.0).abs() < 1e-9);
        b.set("store", Importance::Required, false, "gone");
        assert_eq!(b.report().status, Status::Unhealthy);
    }

    #[test]
    fn ready_needs_every_readiness_check() {
        let b = Board::default();
        b.set("store", Importance::Required, true, "");
        b.set("gpio", Importance::Required, true, "");
        assert!(!b.ready());
        b.set("pipeline", Importance::Required, true, "");
        assert!(b.ready());
    }
}
