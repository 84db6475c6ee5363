//! The agent's side of a trial, and its view of the update state.
//!
//! Every second it: re-reads the slot state (written by slotctl), imports new outcomes into
//! the history and raises them as alerts, restarts the agent (exit 75) when an update was
//! staged or a rollback requested, and — while this process is the version on trial — runs
//! the trial checks. All checks passing without a break for `update.soak` (monotonic clock)
//! → a commit request for slotctl; a check failing → a rollback request and a restart.
//!
//! The agent only ever *asks*: slotctl (never updated) decides, checks /health itself
//! before it commits, and rolls back on its own when the tries or the deadline run out.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::canary;
use super::history::History;
use crate::alerts::Input as AlertInput;
use crate::config::Severity;
use crate::fleet::LinkState;
use crate::health::{Board, Importance};
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, Stopper, EXIT_RESTART};
use crate::slot::ctl::{CommitRequest, Requests, RollbackRequest};
use crate::slot::{Layout, Outcome, OutcomeKind, Slot, State, Trial};

/// How often the state is looked at and the checks evaluated.
pub const POLL: Duration = Duration::from_secs(1);
/// A commit request slotctl consumed without committing (it found /health failing) is
/// repeated after this long, while the trial lasts.
const COMMIT_RETRY: Duration = Duration::from_secs(10);
/// Consecutive failing evaluations of a check that fail the trial (one blip, such as an
/// RSS spike at one poll, is forgiven; a real failure costs two seconds).
const FAILS_TO_ROLL_BACK: u32 = 2;
/// Longest check summary sent with a commit request (slotctl reads at most 4 KiB).
const MAX_SUMMARY: usize = 2048;

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
/// fleet broker (`BrokerReachable`) and the canary comparison (`super::canary::Canary`).
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

/// Where the update machinery stands, as /status and the STATUS= line show it.
#[derive(Debug, Clone, Default)]
pub struct UpdateView {
    /// The slot this process runs from (None outside the A/B layout).
    pub slot: Option<Slot>,
    /// The slot state, when readable.
    pub state: Option<State>,
    /// Soak progress of this process's trial: (seconds passed, seconds needed).
    pub soak: Option<(u64, u64)>,
    /// This process asked for its commit.
    pub commit_requested: bool,
    /// The latest outcome imported during this run (shown until the next one).
    pub recent: Option<Outcome>,
}

impl UpdateView {
    /// The trial this process is on, if any.
    pub fn own_trial(&self) -> Option<&Trial> {
        self.state.as_ref()?.trial.as_ref().filter(|t| Some(t.slot) == self.slot)
    }

    /// `idle`, `trial`, `committing` or `unmanaged`.
    pub fn phase(&self) -> &'static str {
        match (&self.state, self.own_trial()) {
            (None, _) => "unmanaged",
            (Some(_), Some(_)) if self.commit_requested => "committing",
            (Some(_), Some(_)) => "trial",
            (Some(_), None) => "idle",
        }
    }

    /// The `update` object of /status.
    pub fn json(&self) -> serde_json::Value {
        let state = self.state.as_ref();
        let committed = state.map(|s| serde_json::json!({"slot": s.committed, "version": s.committed_version()}));
        let trial = state.and_then(|s| s.trial.as_ref()).map(|t| {
            serde_json::json!({
                "slot": t.slot, "version": t.version, "from_version": t.from_version,
                "tries": t.tries, "tries_left": t.tries_left, "deadline_s": t.deadline_s,
                "armed_at": crate::time::rfc3339(t.armed_ms),
                "soak_s": self.soak.map(|s| s.0), "soak_needed_s": self.soak.map(|s| s.1),
            })
        });
        let last = state.and_then(|s| s.outcomes.last()).map(|o| {
            serde_json::json!({"outcome": o.kind.as_str(), "version": o.version, "from_version": o.from_version,
                "reason": o.reason, "ts": crate::time::rfc3339(o.ts_ms)})
        });
        serde_json::json!({
            "state": self.phase(),
            "summary": state.map(State::summary),
            "committed": committed,
            "trial": trial,
            "last_outcome": last,
        })
    }

    /// The update part of the STATUS= line, when there is something to say.
    pub fn line(&self) -> Option<String> {
        if self.own_trial().is_some() {
            let mut line = self.state.as_ref().map(State::summary).unwrap_or_default();
            match self.soak {
                _ if self.commit_requested => line.push_str(", committing"),
                Some((done, need)) => line.push_str(&format!(", soak {done}/{need} s")),
                None => line.push_str(", waiting for checks"),
            }
            return Some(line);
        }
        let o = self.recent.as_ref()?;
        Some(match o.kind {
            OutcomeKind::Successful => format!("updated to {} in slot {}", o.version, o.slot),
            OutcomeKind::RolledBack => format!("rolled back {} -> {} in slot {}", o.version, o.from_version, o.slot),
            kind => format!("update {}: {}", kind.as_str(), o.version),
        })
    }
}

/// The alert an outcome raises.
pub fn alert_for(o: &Outcome) -> AlertInput {
    alert(o.kind, format!("{} {} (from {}): {}", o.kind.as_str(), o.version, o.from_version, o.reason))
}

/// The alert of an outcome of `kind` (also for refusals the agent decides itself).
pub fn alert(kind: OutcomeKind, message: String) -> AlertInput {
    let (key, severity) = match kind {
        OutcomeKind::Successful => ("update_successful", Severity::Warning),
        OutcomeKind::RolledBack => ("update_rolled_back", Severity::Major),
        OutcomeKind::ManualRollback => ("update_manual_rollback", Severity::Warning),
        OutcomeKind::Refused => ("update_refused", Severity::Minor),
        OutcomeKind::BothSlotsBad => ("update_both_slots_bad", Severity::Critical),
        OutcomeKind::StateRecovered => ("update_state_recovered", Severity::Major),
    };
    AlertInput::Event { key, severity, message }
}

/// The update task's inputs.
pub struct Task {
    /// Slot layout.
    pub layout: Layout,
    /// The agent's request directory.
    pub requests: Requests,
    /// Soak period.
    pub soak: Duration,
    /// The history tree.
    pub history: History,
    /// Checks a trial must pass.
    pub checks: Vec<Box<dyn TrialCheck>>,
    /// With `update.canary`: the metrics the canary baseline is recorded from before a
    /// staged update is installed.
    pub canary: Option<Arc<Metrics>>,
    /// Alert engine input.
    pub alerts: mpsc::Sender<AlertInput>,
    /// Where the view is published.
    pub view: watch::Sender<UpdateView>,
    /// Asks main to stop with exit 75 (restart requested), so that slotctl acts.
    pub stop: Stopper,
}

impl Task {
    /// Stores the outcomes slotctl decided before this start (a rollback, a commit), so that
    /// they are in the history, the alerts and /status by the time the agent is ready.
    pub async fn catch_up(&self) {
        if let Ok(state) = State::load(&self.layout.state_file()) {
            self.import(&state).await;
        }
    }

    /// Runs until shutdown or until it asked for a restart.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let slot = crate::slot::running_slot(&self.layout);
        let mut soak_since: Option<Instant> = None;
        let mut requested_at: Option<Instant> = None;
        let mut ticks = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = ticks.tick() => {}
            }
            let state = State::load(&self.layout.state_file()).ok();
            if let Some(s) = &state {
                self.import(s).await;
            }
            if let Some(reason) = self.pending_request() {
                if self.requests.staged().exists() {
                    self.record_baseline(state.as_ref());
                }
                let _ = self.stop.request(EXIT_RESTART, &reason).await;
                return;
            }
            let own = state.as_ref().and_then(|s| s.trial.clone()).filter(|t| Some(t.slot) == slot);
            let pending = self.requests.commit().exists();
            let mut commit_requested = requested_at.is_some_and(|at| pending || at.elapsed() < COMMIT_RETRY);
            let mut soak = None;
            if let (Some(trial), false) = (&own, commit_requested) {
                match self.evaluate(trial) {
                    Verdict::Fail(why) => {
                        log::error!("trial of {} failed: {why}; asking for a rollback", trial.version);
                        let req =
                            RollbackRequest { reason: format!("trial check failed: {why}"), trial_id: Some(trial.id), request_id: None };
                        self.write_request(&self.requests.rollback(), &req);
                        let _ = self.stop.request(EXIT_RESTART, &format!("trial of {} failed: rolling back", trial.version)).await;
                        return;
                    }
                    Verdict::Pending(why) => {
                        if soak_since.take().is_some() {
                            log::warn!("trial soak restarts: {why}");
                        }
                    }
                    Verdict::Pass => {
                        let since = *soak_since.get_or_insert_with(Instant::now);
                        soak = Some((since.elapsed().as_secs(), self.soak.as_secs()));
                        if since.elapsed() >= self.soak && crate::fault::active() != Some(crate::fault::Fault::NoCommit) {
                            let req = CommitRequest {
                                trial_id: trial.id,
                                version: trial.version.clone(),
                                soak_ms: since.elapsed().as_millis() as u64,
                                checks: self.summaries(),
                            };
                            log::info!("trial of {} passed its checks for {} s: asking for the commit", trial.version, self.soak.as_secs());
                            commit_requested = self.write_request(&self.requests.commit(), &req);
                            requested_at = commit_requested.then(Instant::now);
                        }
                    }
                }
            }
            self.view.send_modify(|v| {
                v.slot = slot;
                v.state = state;
                v.soak = soak;
                v.commit_requested = commit_requested && v.own_trial().is_some();
            });
        }
    }

    fn evaluate(&mut self, trial: &Trial) -> Verdict {
        let mut overall = Verdict::Pass;
        for check in &mut self.checks {
            match check.evaluate(trial) {
                Verdict::Pass => {}
                Verdict::Fail(why) => return Verdict::Fail(format!("{}: {why}", check.name())),
                Verdict::Pending(why) => overall = Verdict::Pending(format!("{}: {why}", check.name())),
            }
        }
        overall
    }

    /// What the checks found, for the commit's reason; kept well within slotctl's 4 KiB
    /// request limit.
    fn summaries(&mut self) -> Option<String> {
        let all: Vec<String> = self.checks.iter_mut().filter_map(|c| c.summary()).collect();
        let mut text = all.join("; ");
        if text.len() > MAX_SUMMARY {
            let cut = (0..=MAX_SUMMARY).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        (!text.is_empty()).then_some(text)
    }

    /// The running (committed) version's canary baseline, recorded right before it restarts
    /// into a staged update, whoever staged it (fleet command or local CLI): this process is
    /// the one whose figures the new version is compared with.
    fn record_baseline(&self, state: Option<&State>) {
        let Some(metrics) = &self.canary else { return };
        let Some(state) = state else { return };
        let manifest = crate::durable::read_limited(
            &self.requests.staged().join(crate::slot::ctl::staged::MANIFEST),
            super::artifact::MAX_MANIFEST as u64,
        )
        .ok()
        .and_then(|b| serde_json::from_slice::<super::artifact::Manifest>(&b).ok());
        let Some(manifest) = manifest else {
            log::warn!("canary: no readable staged manifest, no baseline recorded");
            return;
        };
        let baseline = canary::Baseline {
            format: canary::FORMAT,
            version: state.committed_version(),
            for_version: manifest.version,
            recorded_ms: crate::time::now_ms(),
            snapshot: canary::Snapshot::take(metrics),
        };
        match canary::record(&self.requests.dir, &baseline) {
            Ok(()) => log::info!("canary: baseline of {} for {} recorded: {:?}", baseline.version, baseline.for_version, baseline.snapshot),
            Err(e) => log::error!("canary: cannot record the baseline: {e}"),
        }
    }

    /// An update staged or a rollback requested (by the CLI, or by us): time to restart
    /// so that slotctl pre-start acts on it.
    fn pending_request(&self) -> Option<String> {
        if self.requests.staged().exists() {
            return Some("update staged: restarting so that slotctl installs it".into());
        }
        if self.requests.rollback().exists() {
            return Some("rollback requested: restarting so that slotctl rolls back".into());
        }
        None
    }

    fn write_request<T: serde::Serialize>(&self, path: &Path, req: &T) -> bool {
        let bytes = serde_json::to_vec(req).unwrap_or_default();
        let result = std::fs::create_dir_all(&self.requests.dir).and_then(|()| crate::durable::write_file(path, &bytes, 0o640));
        match result {
            Ok(()) => true,
            Err(e) => {
                log::error!("cannot write {}: {e}", path.display());
                false
            }
        }
    }

    /// Stores outcomes slotctl recorded since the last import and raises their alerts.
    async fn import(&self, state: &State) {
        let (history, snapshot) = (self.history.clone(), state.clone());
        let imported = tokio::task::spawn_blocking(move || history.import(&snapshot)).await;
        let new = match imported {
            Ok(Ok(new)) => new,
            Ok(Err(e)) => {
                log::error!("cannot store update outcomes: {e}");
                return;
            }
            Err(e) => {
                log::error!("update history task failed: {e}");
                return;
            }
        };
        for o in new {
            log::warn!("update outcome: {} {} (from {}): {}", o.kind.as_str(), o.version, o.from_version, o.reason);
            let _ = self.alerts.send(alert_for(&o)).await;
            self.view.send_modify(|v| v.recent = Some(o));
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
