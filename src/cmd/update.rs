//! `update` and `rollback`: the fleet's side of the A/B self-update. Both go through the
//! same files as the technician's `doorbell-agent update apply|rollback` (`crate::update`):
//! `update` downloads, verifies and stages an artifact with its request id; `rollback`
//! writes a rollback request naming its id. The update task then restarts the agent (exit
//! 75) so that `doorbell-slotctl pre-start` acts, exactly as for the local CLI.
//!
//! Like `restart`, neither finishes in the run that executes it: the outcome is decided by
//! slotctl (install refused, trial committed or rolled back) and recorded in the slot state
//! with the request id, and whichever version runs then answers the command (`settle`).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{Args, Context, Progress, Response, Status};
use crate::update::history::EntryV1;
use crate::update::stage::{self, Source};
use doorbell_artifact::Refusal;
use doorbell_slotctl::ctl::{Requests, StagedOptions};
use doorbell_slotctl::{Outcome, OutcomeKind, State};

/// Progress once the artifact is staged and the agent restarts into its trial.
const STAGED: f64 = 0.9;
/// Progress reported by the new version while it is on trial.
pub(super) const ON_TRIAL: f64 = 0.95;
/// Share of the progress the download takes (verification and staging follow).
const DOWNLOAD_SHARE: f64 = 0.7;

/// `{url | path, force?}`: the artifact (signed manifest and signature inside it).
#[derive(Debug)]
pub struct Update {
    id: String,
    source: Source,
    force: bool,
}

impl Update {
    pub(super) fn parse(id: &str, args: Args) -> Result<Update, String> {
        args.only(&["url", "path", "force"])?;
        let source = match (args.optional_string("url")?, args.optional_string("path")?) {
            (Some(url), None) => {
                crate::update::fetch::parse_url(url).map_err(|e| format!("bad arguments: `url`: {e}"))?;
                Source::Url(url.to_string())
            }
            (None, Some(path)) => Source::File(PathBuf::from(path)),
            _ => return Err("bad arguments: give exactly one of `url` (http:// or https://) and `path` (a file on the device)".into()),
        };
        let force = args.optional_boolean("force")?.unwrap_or(false);
        Ok(Update { id: id.to_string(), source, force })
    }

    /// Stages the artifact; the update task restarts the agent into its trial. A refusal is
    /// recorded in the update history and raised as an alert, and changes nothing.
    pub(super) async fn apply(self, ctx: &Context, progress: Progress) -> Result<Value, String> {
        let _busy = ctx.update_lock.clone().try_lock_owned().map_err(|_| "busy: another update or rollback is in progress".to_string())?;
        let stage_ctx = stage::Context::from_config(&ctx.settings.current())?;
        let options = StagedOptions { force: self.force, request_id: Some(self.id.clone()) };
        let source = self.source.clone();
        let report = progress.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let mut last = -1.0;
            stage::stage(&stage_ctx, &source, &options, &mut |p| {
                let fraction = match p {
                    stage::Progress::Downloading { got, total: Some(total) } => got as f64 / total.max(1) as f64 * DOWNLOAD_SHARE,
                    stage::Progress::Downloading { .. } => 0.0,
                    stage::Progress::Verifying => 0.75,
                    stage::Progress::Unpacking => 0.8,
                    stage::Progress::Staging => 0.85,
                };
                // Every step is a durable outbox write: a few per download, not one per chunk.
                if fraction - last >= 0.05 {
                    last = fraction;
                    report.report(fraction);
                }
            })
        })
        .await
        .map_err(|e| format!("update task failed: {e}"))?;
        match staged {
            Ok(staged) => {
                log::info!(
                    "update {}: staged {} (replacing {}); restarting into its trial",
                    self.id,
                    staged.manifest.version,
                    staged.from_version
                );
                progress.report(STAGED);
                Ok(json!({"version": staged.manifest.version, "from_version": staged.from_version}))
            }
            Err(refusal) => Err(refused(ctx, &self.id, &refusal).await),
        }
    }
}

/// Records an agent-side refusal (history, alert); the reason for the reply.
async fn refused(ctx: &Context, id: &str, refusal: &Refusal) -> String {
    let reason = format!("refused ({}): {refusal}", refusal.code());
    let state = State::load(&doorbell_slotctl::Layout::from_config(&ctx.settings.current().update).state_file()).ok();
    let committed = state.as_ref().map_or_else(|| crate::VERSION.to_string(), State::committed_version);
    let entry = EntryV1 {
        outcome: OutcomeKind::Refused.as_str().into(),
        version: "unknown".into(),
        from_version: committed.clone(),
        slot: state.as_ref().map_or_else(|| "-".into(), |s| s.committed.to_string()),
        reason: reason.clone(),
        ts_ms: doorbell_base::time::now_ms(),
        trial_ms: None,
        decided_by: "agent".into(),
        request_id: Some(id.to_string()),
    };
    let history = ctx.view.history.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || history.record(&entry)).await {
        log::error!("cannot record the refusal of update {id}: {e}");
    }
    let alert = crate::update::trial::alert(OutcomeKind::Refused, format!("update {id} {reason} (committed {committed})"));
    let _ = ctx.alerts.send(alert).await;
    reason
}

/// No arguments: ends the running trial, or goes back to the other slot.
#[derive(Debug)]
pub struct Rollback {
    id: String,
}

impl Rollback {
    pub(super) fn parse(id: &str, args: Args) -> Result<Rollback, String> {
        args.only(&[])?;
        Ok(Rollback { id: id.to_string() })
    }

    /// Writes the rollback request; the update task restarts the agent so slotctl acts.
    pub(super) async fn apply(self, ctx: &Context) -> Result<Value, String> {
        let _busy = ctx.update_lock.clone().try_lock_owned().map_err(|_| "busy: another update or rollback is in progress".to_string())?;
        let cfg = ctx.settings.current();
        let id = self.id.clone();
        tokio::task::spawn_blocking(move || {
            let layout = doorbell_slotctl::Layout::from_config(&cfg.update);
            let state = State::load(&layout.state_file())
                .map_err(|e| format!("this device has no usable A/B slot state ({}: {e})", layout.state_file().display()))?;
            let other = state.committed.other();
            if state.trial.is_none() && state.slot(other).is_none() {
                // Said now rather than after a pointless restart (slotctl would refuse it too).
                return Err(format!("nothing to roll back to: slot {other} is empty"));
            }
            let reason = format!("fleet rollback command {id}");
            crate::update::request::request_rollback(&cfg.data_dir, &state, &reason, Some(&id))
                .map_err(|e| format!("cannot write the rollback request: {e}"))
        })
        .await
        .map_err(|e| format!("rollback task failed: {e}"))??;
        Ok(Value::Null)
    }
}

/// The final answer to an `update` or `rollback` left unfinished by an earlier run, from
/// the slot state; `None` while its outcome is still to come (staged, on trial, requested).
pub(super) fn settle(id: &str, name: &str, state: Option<&State>, requests: &Requests) -> Option<Response> {
    let outcomes = state.map_or(&[][..], |s| s.outcomes.as_slice());
    let (found, pending) = if name == "update" {
        let found = outcomes.iter().rev().find(|o| o.request_id.as_deref() == Some(id));
        let on_trial = state.and_then(|s| s.trial.as_ref()).is_some_and(|t| t.request_id.as_deref() == Some(id));
        (found, on_trial || staged_for(requests, id))
    } else {
        let found = outcomes.iter().rev().find(|o| o.rollback_request_id.as_deref() == Some(id));
        (found, requests.rollback().exists())
    };
    match found {
        Some(o) => Some(answer(id, name, o)),
        None if pending => None,
        None => Some(Response::failed(
            id,
            name,
            "interrupted: the agent restarted but the slot state records no outcome for this request (see doorbell-slotctl status)",
        )),
    }
}

/// Whether the staged artifact waiting for slotctl carries this request id.
fn staged_for(requests: &Requests, id: &str) -> bool {
    let path = requests.staged().join(doorbell_slotctl::ctl::staged::OPTIONS);
    doorbell_base::durable::read_limited(&path, 4096)
        .ok()
        .and_then(|b| serde_json::from_slice::<StagedOptions>(&b).ok())
        .is_some_and(|o| o.request_id.as_deref() == Some(id))
}

/// The reply an outcome gives: committed or rolled back as asked is `successful`.
fn answer(id: &str, name: &str, o: &Outcome) -> Response {
    let ok = match name {
        "update" => o.kind == OutcomeKind::Successful,
        _ => matches!(o.kind, OutcomeKind::ManualRollback | OutcomeKind::RolledBack),
    };
    if !ok {
        return Response::failed(id, name, format!("{}: {} (from {}): {}", o.kind.as_str(), o.version, o.from_version, o.reason));
    }
    let result = json!({
        "outcome": o.kind.as_str(),
        "version": o.version,
        "from_version": o.from_version,
        "slot": o.slot,
        "running": crate::VERSION,
        "reason": o.reason,
        "trial_ms": o.trial_ms,
    });
    Response { result: Some(result), ..Response::new(id, name, Status::Successful) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorbell_slotctl::{Slot, Trial};

    fn outcome(kind: OutcomeKind, request: Option<&str>, rollback: Option<&str>) -> Outcome {
        Outcome {
            id: 1,
            kind,
            version: "0.2.0".into(),
            from_version: "0.1.0".into(),
            slot: Slot::A,
            reason: "why".into(),
            ts_ms: 1,
            trial_ms: Some(3),
            request_id: request.map(String::from),
            rollback_request_id: rollback.map(String::from),
        }
    }

    #[test]
    fn outcomes_settle_the_command_that_asked_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let requests = Requests::new(dir.path());
        let mut state = State::new(Slot::A);
        state.trial = Some(Trial {
            id: 5,
            slot: Slot::B,
            version: "0.2.0".into(),
            from_version: "0.1.0".into(),
            tries: 3,
            tries_left: 2,
            armed_ms: 0,
            boot_id: String::new(),
            started_mono_ms: 0,
            deadline_s: 60,
            failures: vec![],
            request_id: Some("u1".into()),
        });
        assert_eq!(settle("u1", "update", Some(&state), &requests), None, "on trial: still pending");
        state.trial = None;
        state.record(outcome(OutcomeKind::RolledBack, Some("u1"), Some("r1")));
        let failed = settle("u1", "update", Some(&state), &requests).unwrap();
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.reason.as_deref(), Some("rolled_back: 0.2.0 (from 0.1.0): why"));
        let rolled = settle("r1", "rollback", Some(&state), &requests).unwrap();
        assert_eq!(rolled.status, Status::Successful);
        state.record(outcome(OutcomeKind::Successful, Some("u2"), None));
        assert_eq!(settle("u2", "update", Some(&state), &requests).unwrap().status, Status::Successful);
        let lost = settle("u3", "update", Some(&state), &requests).unwrap();
        assert!(lost.reason.unwrap().starts_with("interrupted"));
        assert!(settle("u3", "update", None, &requests).is_some(), "no slot state: nothing will come");
    }

    #[test]
    fn arguments_name_one_source() {
        let parse = |args: &str| Update::parse("1", Args(&serde_json::from_str(args).unwrap()));
        assert!(matches!(parse(r#"{"url":"http://h/a.dbu"}"#), Ok(Update { source: Source::Url(_), force: false, .. })));
        assert!(matches!(parse(r#"{"path":"/tmp/a.dbu","force":true}"#), Ok(Update { source: Source::File(_), force: true, .. })));
        assert!(parse(r#"{}"#).unwrap_err().contains("exactly one of"));
        assert!(parse(r#"{"url":"http://h/a","path":"/a"}"#).unwrap_err().contains("exactly one of"));
        assert!(parse(r#"{"url":"ftp://h/a"}"#).unwrap_err().contains("`url`"));
        assert!(parse(r#"{"url":"http://h/a","force":"yes"}"#).unwrap_err().contains("true or false"));
        assert!(parse(r#"{"url":"http://h/a","manifest":"x"}"#).unwrap_err().contains("unknown argument"));
    }
}
