//! The checks a new version must pass throughout its trial's soak (`TrialCheck`): the
//! required health checks (`RequiredHealth`) and the fleet broker (`BrokerReachable`) here,
//! the canary comparison in `canary`. `trial` runs them.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fleet::LinkState;
use crate::health::{Board, Importance};
use doorbell_slotctl::Trial;

/// Consecutive failing evaluations of a check that fail the trial (one blip, such as an
/// RSS spike at one poll, is forgiven; a real failure costs two seconds).
const FAILS_TO_ROLL_BACK: u32 = 2;

/// What one trial check says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passing.
    Pass,
    /// Not decided yet (e.g. not ready): the soak clock waits.
    Pending(String),
    /// Failed: the trial is rolled back.
    Fail(String),
}

/// A check a new version must pass throughout its soak: the required health checks, the
/// fleet broker (`BrokerReachable`) and the canary comparison (`canary::Canary`).
pub trait TrialCheck: Send + Sync {
    /// Name for logs and the rollback reason.
    fn name(&self) -> &'static str;
    /// Evaluates once (called every `POLL`) for the trial this process is on.
    fn evaluate(&mut self, trial: &Trial) -> Verdict;
    /// What it found, for the commit's reason in the history (None: nothing worth saying).
    fn summary(&mut self) -> Option<String> {
        None
    }
}

/// Consecutive failing evaluations of one check: the first is forgiven (`Pending`), a
/// repeat fails the trial.
#[derive(Debug, Default)]
pub struct Strikes(u32);

impl Strikes {
    /// The check passed: the count starts again.
    pub fn clear(&mut self) {
        self.0 = 0;
    }

    /// The check failed with `what`: pending at first, failed from `FAILS_TO_ROLL_BACK` on.
    pub fn strike(&mut self, what: String) -> Verdict {
        self.0 += 1;
        if self.0 >= FAILS_TO_ROLL_BACK {
            Verdict::Fail(what)
        } else {
            Verdict::Pending(what)
        }
    }
}

/// The required health checks (store, button, pipeline self-test) must pass.
pub struct RequiredHealth {
    board: Board,
    failing: Strikes,
}

impl RequiredHealth {
    /// Watches a health board.
    pub fn new(board: Board) -> RequiredHealth {
        RequiredHealth { board, failing: Strikes::default() }
    }
}

impl TrialCheck for RequiredHealth {
    fn name(&self) -> &'static str {
        "required health checks"
    }

    fn evaluate(&mut self, _trial: &Trial) -> Verdict {
        let report = self.board.report();
        let failing: Vec<String> = report
            .checks
            .iter()
            .filter(|(_, c)| c.importance == Importance::Required && !c.ok)
            .map(|(name, c)| format!("{name} ({})", c.detail))
            .collect();
        if failing.is_empty() {
            self.failing.clear();
            return if self.board.ready() { Verdict::Pass } else { Verdict::Pending("not ready yet".into()) };
        }
        self.failing.strike(format!("required check failing: {}", failing.join(", ")))
    }
}

/// With `[mqtt]` configured, the new version must get a ConnAck from the fleet broker: a
/// version that cannot reach it cannot be managed any more, so it is rolled back (as Mender
/// does). Pending until the first ConnAck; failed when none came within `timeout` of the
/// agent's start. A connection lost later is the link's business, not the trial's.
pub struct BrokerReachable {
    url: Option<String>,
    link: watch::Receiver<LinkState>,
    timeout: Duration,
    started: Instant,
}

impl BrokerReachable {
    /// Follows the link state; `url` None (no `[mqtt]`) always passes.
    pub fn new(url: Option<String>, link: watch::Receiver<LinkState>, timeout: Duration) -> BrokerReachable {
        BrokerReachable { url, link, timeout, started: Instant::now() }
    }
}

impl TrialCheck for BrokerReachable {
    fn name(&self) -> &'static str {
        "fleet broker reachable"
    }

    fn evaluate(&mut self, _trial: &Trial) -> Verdict {
        let Some(url) = &self.url else { return Verdict::Pass };
        let link = self.link.borrow();
        if link.connects > 0 {
            return Verdict::Pass;
        }
        let waited = self.started.elapsed();
        let last = link.last_error.as_deref().unwrap_or("no answer yet");
        if waited >= self.timeout {
            Verdict::Fail(format!("no ConnAck from the broker {url} within {} s (last error: {last})", self.timeout.as_secs()))
        } else {
            Verdict::Pending(format!("waiting for a ConnAck from {url} ({} of {} s; {last})", waited.as_secs(), self.timeout.as_secs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial() -> Trial {
        serde_json::from_value(serde_json::json!({
            "id": 1, "slot": "b", "version": "0.2.0", "from_version": "0.1.0", "tries": 3, "tries_left": 2,
            "armed_ms": 0, "boot_id": "x", "started_mono_ms": 0, "deadline_s": 60, "failures": [],
        }))
        .expect("a trial")
    }

    const URL: &str = "mqtt://broker.example:1883";

    #[test]
    fn broker_check_passes_without_mqtt() {
        let (_tx, rx) = watch::channel(LinkState::default());
        assert_eq!(BrokerReachable::new(None, rx, Duration::ZERO).evaluate(&trial()), Verdict::Pass);
    }

    #[test]
    fn broker_check_waits_for_a_connack_then_passes_for_good() {
        let (tx, rx) = watch::channel(LinkState::default());
        let mut check = BrokerReachable::new(Some(URL.into()), rx, Duration::from_secs(60));
        assert!(matches!(check.evaluate(&trial()), Verdict::Pending(why) if why.contains(URL)));
        tx.send_modify(|s| {
            s.connected = true;
            s.connects = 1;
        });
        assert_eq!(check.evaluate(&trial()), Verdict::Pass);
        // Lost again later: the link reconnects on its own; the trial does not care.
        tx.send_modify(|s| s.connected = false);
        assert_eq!(check.evaluate(&trial()), Verdict::Pass);
    }

    #[test]
    fn broker_check_fails_with_url_and_last_error_after_the_timeout() {
        let (tx, rx) = watch::channel(LinkState::default());
        tx.send_modify(|s| s.last_error = Some("Connection refused (os error 111)".into()));
        let mut check = BrokerReachable::new(Some(URL.into()), rx, Duration::ZERO);
        match check.evaluate(&trial()) {
            Verdict::Fail(why) => assert!(why.contains(URL) && why.contains("Connection refused"), "{why}"),
            v => panic!("expected a failure, got {v:?}"),
        }
    }
}
