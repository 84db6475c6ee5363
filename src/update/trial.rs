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
use super::checks::{TrialCheck, Verdict};
use super::history::History;
use crate::alerts::Input as AlertInput;
use crate::config::Severity;
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, Stopper, EXIT_RESTART};
use doorbell_slotctl::ctl::{CommitRequest, Requests, RollbackRequest};
use doorbell_slotctl::{Layout, Outcome, OutcomeKind, Slot, State, Trial};

/// How often the state is looked at and the checks evaluated.
pub const POLL: Duration = Duration::from_secs(1);
/// A commit request slotctl consumed without committing (it found /health failing) is
/// repeated after this long, while the trial lasts.
const COMMIT_RETRY: Duration = Duration::from_secs(10);
/// Longest check summary sent with a commit request (slotctl reads at most 4 KiB).
const MAX_SUMMARY: usize = 2048;

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
                "armed_at": doorbell_base::time::rfc3339(t.armed_ms),
                "soak_s": self.soak.map(|s| s.0), "soak_needed_s": self.soak.map(|s| s.1),
            })
        });
        let last = state.and_then(|s| s.outcomes.last()).map(|o| {
            serde_json::json!({"outcome": o.kind.as_str(), "version": o.version, "from_version": o.from_version,
                "reason": o.reason, "ts": doorbell_base::time::rfc3339(o.ts_ms)})
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
        let slot = doorbell_slotctl::running_slot(&self.layout);
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
                        if since.elapsed() >= self.soak && doorbell_base::fault::active() != Some(doorbell_base::fault::Fault::NoCommit) {
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
        let manifest = doorbell_base::durable::read_limited(
            &self.requests.staged().join(doorbell_slotctl::ctl::staged::MANIFEST),
            doorbell_artifact::MAX_MANIFEST as u64,
        )
        .ok()
        .and_then(|b| serde_json::from_slice::<doorbell_artifact::Manifest>(&b).ok());
        let Some(manifest) = manifest else {
            log::warn!("canary: no readable staged manifest, no baseline recorded");
            return;
        };
        let baseline = canary::Baseline {
            format: canary::FORMAT,
            version: state.committed_version(),
            for_version: manifest.version,
            recorded_ms: doorbell_base::time::now_ms(),
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
        let result = std::fs::create_dir_all(&self.requests.dir).and_then(|()| doorbell_base::durable::write_file(path, &bytes, 0o640));
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
